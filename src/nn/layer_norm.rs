//! `LayerNorm`: PyTorch's `nn.LayerNorm`: each sample normalised over its last dims
//! (`normalized_shape`), `y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias` with the
//! biased variance and `weight`, `bias` shaped like `normalized_shape`.

use super::{param, Module};
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};

/// Layer normalisation with elementwise affine parameters.
pub struct LayerNorm {
    /// The trailing dims normalised over.
    pub normalized_shape: Vec<usize>,
    /// Added to the variance before the square root.
    pub eps: f32,
    /// Scale, shaped like `normalized_shape`, initialised to 1.
    pub weight: Tensor,
    /// Shift, shaped like `normalized_shape`, initialised to 0.
    pub bias: Tensor,
}

impl LayerNorm {
    /// A layer norm over trailing dims `normalized_shape` (at least one dim).
    pub fn new(normalized_shape: Vec<usize>, eps: f32, device: &Device) -> Result<Self> {
        if normalized_shape.is_empty() {
            return Err(Error::invalid(
                "layer_norm",
                "normalized_shape needs at least one dim",
            ));
        }
        Ok(LayerNorm {
            weight: param(Tensor::ones(normalized_shape.clone(), device)),
            bias: param(Tensor::zeros(normalized_shape.clone(), device)),
            normalized_shape,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let k = self.normalized_shape.len();
        if x.rank() < k || x.dims()[x.rank() - k..] != self.normalized_shape[..] {
            return Err(Error::ShapeMismatch {
                op: "layer_norm",
                lhs: x.shape().clone(),
                rhs: Shape::from(self.normalized_shape.clone()),
                hint: "the input's trailing dims must equal normalized_shape".into(),
            });
        }
        x.layer_norm(k, Some(&self.weight), Some(&self.bias), self.eps)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("weight".to_string(), self.weight.clone()),
            ("bias".to_string(), self.bias.clone()),
        ]
    }
}
