//! `Sequential`: layers applied in order (PyTorch's `nn.Sequential`). Child `i` is named
//! `"i"`, so its parameters read `"0.weight"`, `"3.running_mean"`, ...

use super::{prefixed, Module};
use crate::error::Result;
use crate::tensor::Tensor;

/// A chain of modules: `y = layer_n(... layer_1(layer_0(x)))`.
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Module>>,
}

impl Sequential {
    /// An empty chain (the identity).
    pub fn new() -> Self {
        Sequential { layers: Vec::new() }
    }

    /// Appends a layer (builder style): `Sequential::new().push(a).push(b)`.
    pub fn push(mut self, layer: impl Module + 'static) -> Self {
        self.layers.push(Box::new(layer));
        self
    }

    /// Appends an already boxed layer.
    pub fn push_boxed(mut self, layer: Box<dyn Module>) -> Self {
        self.layers.push(layer);
        self
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// True when there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layers in order.
    pub fn layers(&self) -> &[Box<dyn Module>] {
        &self.layers
    }
}

impl Module for Sequential {
    /// A layer followed by an activation that the layer fuses (batch norm, then ReLU or
    /// LeakyReLU) runs as one step ([`Module::forward_activated`]), profiled as the first of
    /// the two layers; names and parameters are those of the separate layers.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        let mut i = 0;
        while i < self.layers.len() {
            let layer = &self.layers[i];
            let _scope = crate::profile::layer_scope(i, || layer.layer_type());
            let next = self.layers.get(i + 1).and_then(|l| l.as_activation());
            if let Some(fused) = next.and_then(|act| layer.forward_activated(&y, act)) {
                y = fused?;
                i += 2;
            } else {
                y = layer.forward(&y)?;
                i += 1;
            }
        }
        Ok(y)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| prefixed(&i.to_string(), l.named_parameters()))
            .collect()
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| prefixed(&i.to_string(), l.named_buffers()))
            .collect()
    }
    fn set_training(&self, training: bool) {
        for l in &self.layers {
            l.set_training(training);
        }
    }
    fn set_cumulative_stats(&self, on: bool) -> Result<()> {
        for l in &self.layers {
            l.set_cumulative_stats(on)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{BatchNorm, LeakyRelu, Relu, Tanh};
    use crate::ops::norm::Activation;
    use crate::ops::{BatchNormParams, Op};
    use crate::{Device, Rng};

    /// `BatchNorm -> ReLU` and `BatchNorm -> LeakyReLU` run as one fused op (the activation is
    /// in the op), with the values of the two layers run one by one; a batch norm followed by
    /// another layer stays alone.
    #[test]
    fn batch_norm_then_activation_runs_fused() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0.5, 1.5, [6, 3, 4, 5], &mut Rng::new(1), &dev);
        let bn = || BatchNorm::new(3, BatchNormParams::default(), &dev).unwrap();
        for (act, layer) in [
            (Activation::Relu, Box::new(Relu) as Box<dyn Module>),
            (Activation::LeakyRelu(0.2), Box::new(LeakyRelu(0.2))),
        ] {
            let seq = Sequential::new().push(bn()).push_boxed(layer);
            let y = seq.forward(&x).unwrap();
            assert!(
                matches!(y.op(), Some(Op::BatchNormAffine { activation, .. }) if *activation == act),
                "{act:?}: not fused"
            );
            let one_by_one = seq.layers()[1].forward(&bn().forward(&x).unwrap()).unwrap();
            assert_eq!(y.to_vec(), one_by_one.to_vec(), "{act:?}");
        }
        let y = Sequential::new().push(bn()).push(Tanh).forward(&x).unwrap();
        assert!(!matches!(y.op(), Some(Op::BatchNormAffine { .. })));
    }
}
