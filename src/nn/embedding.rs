//! `Embedding`: PyTorch's `nn.Embedding`, a lookup table `weight: [num_embeddings, dim]`;
//! row `i` is the vector of index `i` (the class embedding of a conditional GAN).

use super::{param, Module};
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::tensor::{Rng, Tensor};

/// A table of learned vectors, one per index.
pub struct Embedding {
    /// `[num_embeddings, dim]`, initialised `~ N(0, 1)` like PyTorch.
    pub weight: Tensor,
}

impl Embedding {
    /// A table of `num_embeddings` vectors of size `dim`, drawn from `N(0, 1)`. Cannot fail
    /// today; a `Result` like every layer constructor.
    pub fn new(num_embeddings: usize, dim: usize, rng: &mut Rng, device: &Device) -> Result<Self> {
        Ok(Embedding {
            weight: param(Tensor::randn(0.0, 1.0, [num_embeddings, dim], rng, device)),
        })
    }

    /// Rows `indices` of the table: `[indices.len(), dim]`. The gradient flows back to the
    /// rows picked (repeated indices accumulate).
    pub fn forward_indices(&self, indices: &[usize]) -> Result<Tensor> {
        self.weight.index_select(0, indices)
    }
}

impl Module for Embedding {
    /// `x` holds indices stored as f32 (any shape); the output has shape `x.dims() + [dim]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let n = self.weight.dims()[0];
        let indices = x
            .to_vec()
            .into_iter()
            .map(|v| {
                if v >= 0.0 && v.fract() == 0.0 && (v as usize) < n {
                    Ok(v as usize)
                } else {
                    Err(Error::invalid(
                        "embedding",
                        format!("index {v} is not an integer in [0, {n})"),
                    ))
                }
            })
            .collect::<Result<Vec<usize>>>()?;
        let mut dims = x.dims().to_vec();
        dims.push(self.weight.dims()[1]);
        self.forward_indices(&indices)?.reshape(dims)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("weight".to_string(), self.weight.clone())]
    }
}
