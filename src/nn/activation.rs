//! Pointwise activations as parameter-free modules (for use in [`Sequential`](super::Sequential)).

use super::Module;
use crate::error::Result;
use crate::ops::norm::Activation;
use crate::tensor::Tensor;

/// `max(x, 0)` (PyTorch's `nn.ReLU`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Relu;

/// `x` for `x > 0`, else `slope * x` (PyTorch's `nn.LeakyReLU(slope)`; DCGAN uses 0.2).
#[derive(Clone, Copy, Debug)]
pub struct LeakyRelu(pub f32);

/// `tanh(x)` (the generator's output layer).
#[derive(Clone, Copy, Debug, Default)]
pub struct Tanh;

/// `1 / (1 + e^-x)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sigmoid;

impl Module for Relu {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.relu())
    }
    fn as_activation(&self) -> Option<Activation> {
        Some(Activation::Relu)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

impl Module for LeakyRelu {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.leaky_relu(self.0))
    }
    fn as_activation(&self) -> Option<Activation> {
        Some(Activation::LeakyRelu(self.0))
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

impl Module for Tanh {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.tanh())
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

impl Module for Sigmoid {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.sigmoid())
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}
