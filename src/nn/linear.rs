//! `Linear`: `y = x W^T + b` with `W: [out_features, in_features]`, `b: [out_features]`
//! (PyTorch's `nn.Linear`).

use super::init::default_bound;
use super::spectral_norm::HasWeight;
use super::{param, Module};
use crate::backend::Device;
use crate::error::Result;
use crate::tensor::{Rng, Tensor};

/// Sizes of a [`Linear`] layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearConfig {
    /// Size of the last input dim.
    pub in_features: usize,
    /// Size of the last output dim.
    pub out_features: usize,
    /// Whether to add a learned bias.
    pub bias: bool,
}

/// A fully connected layer: `y[.., o] = sum_i x[.., i] * weight[o, i] + bias[o]`.
///
/// ```
/// use ganforge::nn::{Linear, LinearConfig, Module};
/// use ganforge::{Device, Rng, Tensor};
/// let cfg = LinearConfig { in_features: 3, out_features: 2, bias: true };
/// let layer = Linear::new(cfg, &mut Rng::new(0), &Device::Cpu).unwrap();
/// let x = Tensor::ones([4, 3], &Device::Cpu);
/// let y = layer.forward(&x).unwrap();
/// assert_eq!(y.dims(), &[4, 2]);
/// // Every row is sum_i weight[o, i] + bias[o] for an input of ones.
/// let (w, b) = (layer.weight.to_vec(), layer.bias.as_ref().unwrap().to_vec());
/// let want0 = w[0] + w[1] + w[2] + b[0];
/// assert!((y.to_vec()[0] - want0).abs() < 1e-6);
/// // PyTorch's parameter names, in PyTorch's order.
/// let names: Vec<String> = layer.named_parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["weight", "bias"]);
/// ```
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Tensor,
    /// `[out_features]`, when the config asks for one.
    pub bias: Option<Tensor>,
    /// The sizes it was built with.
    pub config: LinearConfig,
}

impl Linear {
    /// `nn.Linear(in_features, out_features)` with a bias and PyTorch's default init (see
    /// [`Linear::new`]).
    pub fn with_bias(
        in_features: usize,
        out_features: usize,
        rng: &mut Rng,
        device: &Device,
    ) -> Result<Self> {
        let config = LinearConfig {
            in_features,
            out_features,
            bias: true,
        };
        Linear::new(config, rng, device)
    }

    /// PyTorch's default init: weight and bias `~ U(-1/sqrt(in), 1/sqrt(in))`. Cannot fail
    /// today; a `Result` like every layer constructor.
    pub fn new(config: LinearConfig, rng: &mut Rng, device: &Device) -> Result<Self> {
        let b = default_bound(config.in_features);
        let weight = param(Tensor::rand_uniform(
            -b,
            b,
            [config.out_features, config.in_features],
            rng,
            device,
        ));
        let bias = config.bias.then(|| {
            param(Tensor::rand_uniform(
                -b,
                b,
                config.out_features,
                rng,
                device,
            ))
        });
        Ok(Linear {
            weight,
            bias,
            config,
        })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.linear(&self.weight, self.bias.as_ref())
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v = vec![("weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }
}

impl HasWeight for Linear {
    fn weight(&self) -> &Tensor {
        &self.weight
    }
    fn forward_with_weight(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        x.linear(weight, self.bias.as_ref())
    }
}
