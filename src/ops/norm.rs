//! Normalisation: batch norm (training and eval), layer norm, instance norm, and dropout.
//!
//! These are composed from primitive ops, so their backward passes (and second-order passes)
//! come from autodiff and need no rule of their own. Batch norm in training mode, as PyTorch:
//! `mean = E[x]`, `var = E[(x - mean)^2]` (biased) over every dim but the channel dim 1,
//! `y = (x - mean) / sqrt(var + eps) * gamma + beta`; the running statistics are updated with
//! `r = (1 - momentum) * r + momentum * stat`, using the *unbiased* variance `var * n/(n-1)`.

use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::tensor::{Rng, Tensor};

/// Options of batch norm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormParams {
    /// Added to the variance before the square root.
    pub eps: f32,
    /// Weight of the new batch statistic in the running average.
    pub momentum: f32,
}

impl Default for BatchNormParams {
    fn default() -> Self {
        BatchNormParams {
            eps: 1e-5,
            momentum: 0.1,
        }
    }
}

/// Running statistics of batch norm, updated in place in training mode.
pub struct RunningStats<'a> {
    /// Running mean, `[C]`.
    pub mean: &'a Tensor,
    /// Running (unbiased) variance, `[C]`.
    pub var: &'a Tensor,
}

/// `[1, C, 1, ...]`: the shape that broadcasts a per-channel vector against `x`.
fn channel_view(x: &Tensor, v: &Tensor) -> Result<Tensor> {
    let mut dims = vec![1; x.rank()];
    dims[1] = x.dims()[1];
    v.reshape(dims)
}

impl Tensor {
    /// Batch norm over dim 1 of `[N, C]`, `[N, C, L]` or `[N, C, H, W]`.
    ///
    /// In training mode the batch statistics normalise and, when `running` is given, the
    /// running statistics are updated in place. In eval mode `running` must be given and is
    /// used instead.
    pub fn batch_norm(
        &self,
        running: Option<RunningStats<'_>>,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        training: bool,
        params: BatchNormParams,
    ) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::bad_shape(
                "batch_norm",
                self.shape(),
                "expected [N, C, ...]",
            ));
        }
        let c = self.dims()[1];
        for (name, t) in [("weight", weight), ("bias", bias)] {
            if let Some(t) = t {
                if t.dims() != [c] {
                    return Err(Error::ShapeMismatch {
                        op: "batch_norm",
                        lhs: self.shape().clone(),
                        rhs: t.shape().clone(),
                        hint: format!("{name} must be [{c}]"),
                    });
                }
            }
        }
        let dims: Vec<usize> = (0..self.rank()).filter(|&d| d != 1).collect();
        let n: usize = dims.iter().map(|&d| self.dims()[d]).product();
        let normalized = if training {
            if n < 2 {
                return Err(Error::bad_shape(
                    "batch_norm",
                    self.shape(),
                    "training mode needs more than one value per channel",
                ));
            }
            let mean = self.mean(&dims, true)?;
            let centred = self.sub(&mean)?;
            let var = centred.sqr()?.mean(&dims, true)?;
            if let Some(r) = &running {
                let _guard = no_grad();
                let m = params.momentum;
                let unbiased = var.mul_scalar(n as f32 / (n - 1) as f32).reshape(c)?;
                let new_mean = r
                    .mean
                    .mul_scalar(1.0 - m)
                    .add(&mean.reshape(c)?.mul_scalar(m))?;
                let new_var = r.var.mul_scalar(1.0 - m).add(&unbiased.mul_scalar(m))?;
                copy_into(r.mean, &new_mean)?;
                copy_into(r.var, &new_var)?;
            }
            centred.mul(&var.add_scalar(params.eps).powf(-0.5))?
        } else {
            let r = running.ok_or_else(|| {
                Error::invalid("batch_norm", "eval mode needs running statistics")
            })?;
            let mean = channel_view(self, r.mean)?;
            let invstd = channel_view(self, &r.var.add_scalar(params.eps).powf(-0.5))?;
            self.sub(&mean)?.mul(&invstd)?
        };
        let scaled = match weight {
            Some(w) => normalized.mul(&channel_view(self, w)?)?,
            None => normalized,
        };
        match bias {
            Some(b) => scaled.add(&channel_view(self, b)?),
            None => Ok(scaled),
        }
    }

    /// Layer norm over the last `normalized_dims` dims (biased variance), with optional
    /// elementwise affine parameters shaped like those dims.
    pub fn layer_norm(
        &self,
        normalized_dims: usize,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> Result<Tensor> {
        if normalized_dims == 0 || normalized_dims > self.rank() {
            return Err(Error::invalid(
                "layer_norm",
                format!(
                    "cannot normalise the last {normalized_dims} dims of {:?}",
                    self.shape()
                ),
            ));
        }
        let dims: Vec<usize> = (self.rank() - normalized_dims..self.rank()).collect();
        let centred = self.sub(&self.mean(&dims, true)?)?;
        let var = centred.sqr()?.mean(&dims, true)?;
        let y = centred.mul(&var.add_scalar(eps).powf(-0.5))?;
        let y = match weight {
            Some(w) => y.mul(w)?,
            None => y,
        };
        match bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }

    /// Instance norm: each `(n, c)` plane of `[N, C, H, W]` normalised over H and W, with
    /// optional per-channel affine parameters.
    pub fn instance_norm(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
    ) -> Result<Tensor> {
        self.shape().dims4("instance_norm")?;
        let centred = self.sub(&self.mean(&[2, 3], true)?)?;
        let var = centred.sqr()?.mean(&[2, 3], true)?;
        let y = centred.mul(&var.add_scalar(eps).powf(-0.5))?;
        let y = match weight {
            Some(w) => y.mul(&channel_view(self, w)?)?,
            None => y,
        };
        match bias {
            Some(b) => y.add(&channel_view(self, b)?),
            None => Ok(y),
        }
    }

    /// Inverted dropout: in training, zeroes each element with probability `p` (mask drawn
    /// from `rng`) and scales the rest by `1 / (1 - p)`; in eval, the identity.
    pub fn dropout(&self, p: f32, training: bool, rng: &mut Rng) -> Result<Tensor> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid(
                "dropout",
                format!("p = {p} must be in [0, 1)"),
            ));
        }
        if !training || p == 0.0 {
            return Ok(self.clone());
        }
        let scale = 1.0 / (1.0 - p);
        let mask: Vec<f32> = (0..self.elem_count())
            .map(|_| {
                if rng.next_f64() < p as f64 {
                    0.0
                } else {
                    scale
                }
            })
            .collect();
        self.mul(&Tensor::from_vec_on(
            mask,
            self.shape().clone(),
            &self.device(),
        )?)
    }
}

/// Overwrites `dst`'s data with `src`'s (same shape).
pub(crate) fn copy_into(dst: &Tensor, src: &Tensor) -> Result<()> {
    if dst.shape() != src.shape() {
        return Err(Error::shape_mismatch("copy_into", dst.shape(), src.shape()));
    }
    let data = src.storage();
    dst.write_storage(|s| s.as_cpu_mut().copy_from_slice(data.as_cpu()))
}
