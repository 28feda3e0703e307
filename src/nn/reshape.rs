//! Shape-only modules: [`Flatten`] and [`Reshape`], both keeping the batch dim 0.

use super::Module;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// `[N, d1, d2, ...] -> [N, d1 * d2 * ...]` (PyTorch's `nn.Flatten()`, start dim 1).
#[derive(Clone, Copy, Debug, Default)]
pub struct Flatten;

/// `[N, ...] -> [N, dims...]` with the same element count per sample (e.g. the generator's
/// `[N, 128 * 7 * 7] -> [N, 128, 7, 7]`).
#[derive(Clone, Debug)]
pub struct Reshape(pub Vec<usize>);

impl Module for Flatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.flatten(1)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

impl Module for Reshape {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() == 0 {
            return Err(Error::bad_shape(
                "reshape module",
                x.shape(),
                "expected a batch dim",
            ));
        }
        let mut dims = vec![x.dims()[0]];
        dims.extend(&self.0);
        x.reshape(dims)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}
