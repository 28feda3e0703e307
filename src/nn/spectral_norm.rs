//! Spectral normalisation (Miyato et al. 2018), as PyTorch's `torch.nn.utils.spectral_norm`.
//!
//! The wrapped layer's weight `W` (PyTorch name `weight_orig`) is divided by an estimate of
//! its largest singular value before every use: `weight = weight_orig / sigma`. With `W`
//! viewed as a matrix `Wm: [out, -1]` (the output-channel dim first), the estimate comes from
//! power iteration with persistent vectors `u: [out]`, `v: [-1]` (buffers `weight_u`,
//! `weight_v`). In training mode each forward first runs, without recording a graph,
//! `n_power_iterations` times:
//!
//! ```text
//! v = normalize(Wm^T u)        normalize(x) = x / max(||x||_2, eps)
//! u = normalize(Wm v)
//! ```
//!
//! and then computes `sigma = u . (Wm v)` *with* the gradient through `Wm` (u and v are
//! constants), so `d weight / d weight_orig` includes the `-W/sigma^2 * d sigma` term exactly as
//! in PyTorch. In eval mode `u` and `v` are used as they are.

use super::Module;
use crate::autograd::no_grad;
use crate::error::{Error, Result};
use crate::ops::norm::copy_into;
use crate::tensor::{Rng, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

/// A layer whose weight spectral normalisation can take over.
pub trait HasWeight: Module {
    /// The layer's own weight (the tensor that becomes `weight_orig`).
    fn weight(&self) -> &Tensor;
    /// The dim of the weight that indexes output channels (0 for Linear and Conv2d, 1 for
    /// ConvTranspose2d, as PyTorch's `spectral_norm` chooses).
    fn output_dim(&self) -> usize {
        0
    }
    /// The layer's forward pass with `weight` in place of its own weight (bias unchanged).
    fn forward_with_weight(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor>;
}

/// Options of [`SpectralNorm`]; the defaults are PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SpectralNormConfig {
    /// Power-iteration steps per training forward (PyTorch: 1).
    pub n_power_iterations: usize,
    /// Lower bound of a norm before division (PyTorch: 1e-12).
    pub eps: f32,
}

impl Default for SpectralNormConfig {
    fn default() -> Self {
        SpectralNormConfig {
            n_power_iterations: 1,
            eps: 1e-12,
        }
    }
}

/// A layer with a spectrally normalised weight. Parameters: the layer's own except `weight`,
/// then `weight_orig`; buffers: the layer's own, then `weight_u`, `weight_v` (PyTorch's names
/// and order).
pub struct SpectralNorm<L: HasWeight> {
    /// The wrapped layer; its `weight` tensor is `weight_orig`.
    pub layer: L,
    /// Buffer `weight_u`: `[out]`, unit norm.
    pub weight_u: Tensor,
    /// Buffer `weight_v`: `[in * k * k]` (the other dims of the weight), unit norm.
    pub weight_v: Tensor,
    /// Iteration count and eps.
    pub config: SpectralNormConfig,
    training: AtomicBool,
}

/// `x / max(||x||_2, eps)`, on the device of `x`.
fn normalize(x: &Tensor, eps: f32) -> Result<Tensor> {
    let norm = x.sqr()?.sum_all()?.sqrt().clamp(eps, f32::MAX);
    x.div(&norm)
}

impl<L: HasWeight> SpectralNorm<L> {
    /// Wraps `layer` with PyTorch's defaults (one power iteration per forward, eps 1e-12).
    pub fn new(layer: L, rng: &mut Rng) -> Result<Self> {
        Self::with_config(layer, SpectralNormConfig::default(), rng)
    }

    /// Wraps `layer`; `u` and `v` start as normalised `N(0, 1)` draws from `rng`, as in
    /// PyTorch. Starts in training mode. Errors on a weight of rank < 2 or with no
    /// elements.
    pub fn with_config(layer: L, config: SpectralNormConfig, rng: &mut Rng) -> Result<Self> {
        let w = layer.weight();
        let d = layer.output_dim();
        if w.rank() < 2 || d >= w.rank() || w.elem_count() == 0 {
            return Err(Error::bad_shape(
                "spectral_norm",
                w.shape(),
                format!("needs a non-empty weight of rank >= 2 with output dim {d}"),
            ));
        }
        let dev = w.device();
        let h = w.dims()[d];
        let cols = w.elem_count() / h;
        let u = Tensor::randn(0.0, 1.0, h, rng, &dev);
        let v = Tensor::randn(0.0, 1.0, cols, rng, &dev);
        let (weight_u, weight_v) = {
            let _g = no_grad();
            (normalize(&u, config.eps)?, normalize(&v, config.eps)?)
        };
        Ok(SpectralNorm {
            layer,
            weight_u,
            weight_v,
            config,
            training: AtomicBool::new(true),
        })
    }

    /// True in training mode (power iteration on every forward).
    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }

    /// `weight_orig` as the matrix `Wm: [out, -1]` (output-channel dim moved first).
    fn weight_mat(&self) -> Result<Tensor> {
        let w = self.layer.weight();
        let d = self.layer.output_dim();
        if d >= w.rank() {
            return Err(Error::DimOutOfRange {
                op: "spectral_norm",
                dim: d,
                rank: w.rank(),
            });
        }
        let moved = if d == 0 {
            w.clone()
        } else {
            let mut perm: Vec<usize> = (0..w.rank()).collect();
            perm.remove(d);
            perm.insert(0, d);
            w.permute(&perm)?
        };
        let h = w.dims()[d];
        moved.reshape([h, w.elem_count() / h])
    }

    /// `sigma = u . (Wm v)` and the normalised weight `weight_orig / sigma`, after the power
    /// iteration when training (which updates `weight_u`, `weight_v` in place). Differentiable
    /// with respect to `weight_orig`.
    pub fn normalized_weight(&self) -> Result<Tensor> {
        let wm = self.weight_mat()?;
        let (h, cols) = (wm.dims()[0], wm.dims()[1]);
        // Fresh copies: a graph built now keeps its own u and v even if a later forward
        // overwrites the buffers (PyTorch clones them for the same reason).
        let (u, v) = {
            let _g = no_grad();
            let mut u = self.weight_u.to_device(&wm.device())?;
            let mut v = self.weight_v.to_device(&wm.device())?;
            if self.is_training() && self.config.n_power_iterations > 0 {
                let wc = wm.detach();
                for _ in 0..self.config.n_power_iterations {
                    // v = normalize(Wm^T u), computed as (u^T Wm)^T.
                    v = normalize(
                        &u.reshape([1, h])?.matmul(&wc)?.reshape(cols)?,
                        self.config.eps,
                    )?;
                    // u = normalize(Wm v).
                    u = normalize(
                        &wc.matmul(&v.reshape([cols, 1])?)?.reshape(h)?,
                        self.config.eps,
                    )?;
                }
                copy_into(&self.weight_u, &u)?;
                copy_into(&self.weight_v, &v)?;
            }
            (u, v)
        };
        // sigma = u^T Wm v, recorded through Wm.
        let sigma = u
            .reshape([1, h])?
            .matmul(&wm.matmul(&v.reshape([cols, 1])?)?)?
            .reshape(())?;
        self.layer.weight().div(&sigma)
    }

    /// The current estimate `sigma = u . (Wm v)` from the buffers, without iterating.
    pub fn sigma(&self) -> Result<f32> {
        let _g = no_grad();
        let wm = self.weight_mat()?;
        let (h, cols) = (wm.dims()[0], wm.dims()[1]);
        self.weight_u
            .reshape([1, h])?
            .matmul(&wm.matmul(&self.weight_v.reshape([cols, 1])?)?)?
            .to_scalar()
    }
}

impl<L: HasWeight> Module for SpectralNorm<L> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.normalized_weight()?;
        self.layer.forward_with_weight(x, &w)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self
            .layer
            .named_parameters()
            .into_iter()
            .filter(|(n, _)| n != "weight")
            .collect();
        v.push(("weight_orig".to_string(), self.layer.weight().clone()));
        v
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        let mut b = self.layer.named_buffers();
        b.push(("weight_u".to_string(), self.weight_u.clone()));
        b.push(("weight_v".to_string(), self.weight_v.clone()));
        b
    }
    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
        self.layer.set_training(training);
    }
    fn set_cumulative_stats(&self, on: bool) -> Result<()> {
        self.layer.set_cumulative_stats(on)
    }
}
