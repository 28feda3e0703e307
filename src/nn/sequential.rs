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
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            let _scope = crate::profile::layer_scope(i, || layer.layer_type());
            y = layer.forward(&y)?;
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
