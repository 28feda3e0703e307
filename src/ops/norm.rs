//! Normalisation: batch norm (training and eval), layer norm, instance norm, and dropout.
//!
//! Batch norm's normalisation is one primitive op with a fused two-pass kernel
//! ([`Tensor::batch_normalize`]); its scale and shift, and layer/instance norm, are composed
//! from primitive ops, so their backward passes come from autodiff. Batch norm in training mode, as PyTorch:
//! `mean = E[x]`, `var = E[(x - mean)^2]` (biased) over every dim but the channel dim 1,
//! `y = (x - mean) / sqrt(var + eps) * gamma + beta`; the running statistics are updated with
//! `r = (1 - momentum) * r + momentum * stat`, using the *unbiased* variance `var * n/(n-1)`.

use crate::backend::gpu::params::BnParams;
use crate::backend::gpu::{groups_for, Access, KernelSpec, Shader, WORKGROUP};
use crate::backend::{cpu, GpuBuffer, Storage};
use crate::error::{Error, Result};
use crate::ops::elementwise::MaskOp;
use crate::ops::Op;
use crate::profile::{self, OpCost, OpInfo};
use crate::tensor::{Rng, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

static BATCH_NORM_WGSL: Shader = Shader {
    name: "batch_norm",
    source: include_str!("../../shaders/batch_norm.wgsl"),
};
const BN_STATS: KernelSpec = KernelSpec {
    shader: &BATCH_NORM_WGSL,
    entry: "bn_stats",
    storage: &[
        (0, Access::Read),
        (1, Access::ReadWrite),
        (2, Access::ReadWrite),
        (3, Access::ReadWrite),
    ],
    uniform: 10,
};
const BN_NORMALIZE: KernelSpec = KernelSpec {
    shader: &BATCH_NORM_WGSL,
    entry: "bn_normalize",
    storage: &[
        (0, Access::Read),
        (4, Access::Read),
        (5, Access::Read),
        (6, Access::ReadWrite),
    ],
    uniform: 10,
};
const BN_BACKWARD_SUMS: KernelSpec = KernelSpec {
    shader: &BATCH_NORM_WGSL,
    entry: "bn_backward_sums",
    storage: &[(0, Access::Read), (7, Access::Read), (8, Access::ReadWrite)],
    uniform: 10,
};
const BN_BACKWARD_APPLY: KernelSpec = KernelSpec {
    shader: &BATCH_NORM_WGSL,
    entry: "bn_backward_apply",
    storage: &[
        (0, Access::Read),
        (7, Access::Read),
        (5, Access::Read),
        (9, Access::Read),
        (6, Access::ReadWrite),
    ],
    uniform: 10,
};

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

/// The activation applied to batch norm's output inside the same op ([`Tensor::batch_norm_activated`]):
/// a generator's `BatchNorm2d -> ReLU` or a discriminator's `BatchNorm2d -> LeakyReLU` as one
/// pass forward, and the activation's mask folded into batch norm's two backward passes.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Activation {
    /// None: batch norm alone.
    #[default]
    Identity,
    /// `max(v, 0)`.
    Relu,
    /// `v` for `v > 0`, else `slope * v`.
    LeakyRelu(f32),
}

impl Activation {
    /// The factor of `v` (the derivative): 1 where `v > 0`, else 0 (relu), the slope (leaky
    /// relu), 1 (identity).
    fn slope_below(self) -> f32 {
        match self {
            Activation::Identity => 1.0,
            Activation::Relu => 0.0,
            Activation::LeakyRelu(slope) => slope,
        }
    }

    /// The activation as a separate op, for the paths that do not fuse it.
    fn apply_to(self, y: Tensor) -> Tensor {
        match self {
            Activation::Identity => y,
            Activation::Relu => y.relu(),
            Activation::LeakyRelu(slope) => y.leaky_relu(slope),
        }
    }
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
        self.batch_norm_activated(
            running,
            weight,
            bias,
            training,
            params,
            Activation::Identity,
        )
    }

    /// [`Tensor::batch_norm`] followed by `activation`: the same values; in training mode on
    /// the CPU one fused op (the activation applied in the normalising pass, its mask inside
    /// the backward passes), elsewhere batch norm then the activation's own op.
    pub fn batch_norm_activated(
        &self,
        running: Option<RunningStats<'_>>,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        training: bool,
        params: BatchNormParams,
        activation: Activation,
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
        if training && n < 2 {
            return Err(Error::bad_shape(
                "batch_norm",
                self.shape(),
                "training mode needs more than one value per channel",
            ));
        }
        let on_cpu = matches!(&*self.storage(), Storage::Cpu(_))
            && [weight, bias]
                .iter()
                .flatten()
                .all(|t| matches!(&*t.storage(), Storage::Cpu(_)));
        if training && on_cpu {
            // One op for normalisation and affine: two passes forward, two backward.
            let (y, stats) = self.batch_norm_affine(weight, bias, params.eps, activation)?;
            if let Some(r) = &running {
                let m = params.momentum;
                let unbias = n as f32 / (n - 1) as f32;
                r.mean.axpby_in_place(1.0 - m, &stats.mean, m, 1.0)?;
                r.var.axpby_in_place(1.0 - m, &stats.var, m, unbias)?;
            }
            return Ok(y);
        }
        let normalized = if training {
            let (xhat, stats) = self.batch_normalize(params.eps)?;
            if let Some(r) = &running {
                // r = (1 - momentum) * r + momentum * batch_stat, with the unbiased variance.
                let m = params.momentum;
                let unbias = n as f32 / (n - 1) as f32;
                r.mean.axpby_in_place(1.0 - m, &stats.mean, m, 1.0)?;
                r.var.axpby_in_place(1.0 - m, &stats.var, m, unbias)?;
            }
            xhat
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
        let shifted = match bias {
            Some(b) => scaled.add(&channel_view(self, b)?)?,
            None => scaled,
        };
        Ok(activation.apply_to(shifted))
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
    dst.copy_from(src)
}

// ---- the fused normalisation primitive of batch norm ------------------------------------------

/// Per-channel batch statistics saved by the forward pass (biased variance, as used to
/// normalise, and `invstd = 1 / sqrt(var + eps)`), each a `[C]` tensor on the input's device.
#[derive(Clone, Debug)]
pub struct ChannelStats {
    /// Batch mean per channel.
    pub mean: Tensor,
    /// Biased batch variance per channel.
    pub var: Tensor,
    /// `1 / sqrt(var + eps)` per channel.
    pub invstd: Tensor,
    /// Values per channel (`N * H * W`).
    pub count: usize,
}

/// Host statistics of [`batch_normalize_cpu`].
struct HostStats {
    mean: Vec<f32>,
    var: Vec<f32>,
    invstd: Vec<f32>,
}

/// `x: [N, C, S]` (S = product of the dims after C). Pass 1 per channel: mean, then the
/// variance of the centred values (two passes over the data, accumulated in f64, so a large
/// mean does not cancel the variance away). Pass 2 per `(n, c)` plane:
/// `out[n, c, s] = (x[n, c, s] - mean[c]) * invstd[c]`.
fn batch_normalize_cpu(
    x: &[f32],
    (n_n, c_n, s_n): (usize, usize, usize),
    eps: f32,
) -> (Vec<f32>, HostStats) {
    let stats = channel_stats_cpu(x, (n_n, c_n, s_n), eps);
    let (mean, invstd) = (&stats.mean, &stats.invstd);
    let mut out = cpu::pool::take(x.len());
    cpu::for_each_row(&mut out, s_n, |plane, out_plane| {
        let c = plane % c_n;
        let (m, is) = (mean[c], invstd[c]);
        for (o, &v) in out_plane.iter_mut().zip(&x[plane * s_n..(plane + 1) * s_n]) {
            *o = (v - m) * is;
        }
    });
    (out, stats)
}

/// Pass 1 of [`batch_normalize_cpu`] and [`batch_norm_affine_cpu`]: per channel, the mean and
/// then the variance of the centred values, accumulated in f64.
fn channel_stats_cpu(x: &[f32], (n_n, c_n, s_n): (usize, usize, usize), eps: f32) -> HostStats {
    let count = n_n * s_n;
    let stats: Vec<(f32, f32)> = (0..c_n)
        .into_par_iter()
        .map(|c| {
            let planes = || (0..n_n).map(move |n| &x[(n * c_n + c) * s_n..][..s_n]);
            let sum: f64 = planes().map(cpu::sum_f64).sum();
            let mean = sum / count as f64;
            let sq: f64 = planes().map(|p| cpu::sum_sq_dev_f64(p, mean)).sum();
            (mean as f32, (sq / count as f64) as f32)
        })
        .collect();
    let mean: Vec<f32> = stats.iter().map(|s| s.0).collect();
    let var: Vec<f32> = stats.iter().map(|s| s.1).collect();
    let invstd: Vec<f32> = var.iter().map(|&v| 1.0 / (v + eps).sqrt()).collect();
    HostStats { mean, var, invstd }
}

// ---- batch norm in training mode as one op: normalisation and affine fused (CPU) -----------

/// `x: [N, C, S]`. Pass 1: [`channel_stats_cpu`]. Pass 2 per `(n, c)` plane:
/// `y[n, c, s] = (x[n, c, s] - mean[c]) * a[c] + b[c]` with `a[c] = invstd[c] * w[c]`
/// (`w` = 1 and `b` = 0 when absent).
/// With an activation, `act(y)` in the same pass.
fn batch_norm_affine_cpu(
    x: &[f32],
    (n_n, c_n, s_n): (usize, usize, usize),
    eps: f32,
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    activation: Activation,
) -> (Vec<f32>, HostStats) {
    let stats = channel_stats_cpu(x, (n_n, c_n, s_n), eps);
    let (mean, invstd) = (&stats.mean, &stats.invstd);
    let mut y = cpu::pool::take(x.len());
    // One loop per case, the activation's factor below 0 copied into the loop's closure (a
    // value reached through a reference is reloaded per element and the loop stays scalar),
    // and written without a branch (`max(v, 0) + below * min(v, 0)`: half the values are
    // negative, in no predictable order).
    let below = activation.slope_below();
    let activate = activation != Activation::Identity;
    cpu::for_each_row(&mut y, s_n, move |plane, y_plane| {
        let c = plane % c_n;
        let a = invstd[c] * w.map_or(1.0, |w| w[c]);
        let (m, shift) = (mean[c], b.map_or(0.0, |b| b[c]));
        let x_plane = &x[plane * s_n..(plane + 1) * s_n];
        if activate {
            for (o, &v) in y_plane.iter_mut().zip(x_plane) {
                let v = (v - m) * a + shift;
                *o = v.max(0.0) + below * v.min(0.0);
            }
        } else {
            for (o, &v) in y_plane.iter_mut().zip(x_plane) {
                *o = (v - m) * a + shift;
            }
        }
    });
    (y, stats)
}

/// The activation's gradient mask for one `(n, c)` plane: `g` where the recomputed
/// pre-activation `y = (x - mu) * a + shift` (the forward pass's values, so the same
/// comparisons with 0) is positive, else `below * g`. The masked plane goes through a
/// per-thread scratch buffer, so neither backward pass stores the masked gradient and the
/// masking loop, kept apart from the f64 sums, vectorises (inside them it did not).
#[derive(Clone, Copy)]
struct PlaneMask {
    a: f32,
    mu: f32,
    shift: f32,
    below: f32,
}

thread_local! {
    /// [`PlaneMask::with_masked`]'s scratch, grown to the largest plane and kept.
    static MASKED_PLANE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl PlaneMask {
    /// `f(masked g)` for the plane `g` with inputs `x`.
    fn with_masked<R>(self, g: &[f32], x: &[f32], f: impl FnOnce(&[f32]) -> R) -> R {
        MASKED_PLANE.with(|cell| {
            let mut buf = cell.borrow_mut();
            if buf.len() < g.len() {
                buf.resize(g.len(), 0.0);
            }
            let out = &mut buf[..g.len()];
            let PlaneMask {
                a,
                mu,
                shift,
                below,
            } = self;
            for ((o, &gv), &xv) in out.iter_mut().zip(g).zip(x) {
                let y = (xv - mu) * a + shift;
                *o = if y > 0.0 { gv } else { below * gv };
            }
            f(out)
        })
    }
}

/// Per channel of `[N, C, S]` buffers `g` and `x`: `(sum g, sum g * x)` in f64 (the first pass
/// of both batch-norm backward kernels), channels in parallel; with `mask(c)`, of the masked
/// `g` instead.
fn channel_sum_and_dot(
    g: &[f32],
    x: &[f32],
    (n_n, c_n, s_n): (usize, usize, usize),
    mask: Option<&(dyn Fn(usize) -> PlaneMask + Sync)>,
) -> Vec<(f64, f64)> {
    (0..c_n)
        .into_par_iter()
        .map(|c| {
            (0..n_n)
                .map(|n| {
                    let off = (n * c_n + c) * s_n;
                    let (gp, xp) = (&g[off..off + s_n], &x[off..off + s_n]);
                    match mask {
                        None => cpu::sum_and_dot_f64(gp, xp),
                        Some(mask) => {
                            mask(c).with_masked(gp, xp, |gm| cpu::sum_and_dot_f64(gm, xp))
                        }
                    }
                })
                .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y))
        })
        .collect()
}

/// Backward of [`batch_norm_affine_cpu`] in two passes. With `x_hat = (x - mean) * invstd`,
/// `m = N * S` and per channel `sg = sum g`, `sgx = sum g * x_hat` (pass 1, f64; `sgx` from
/// `sum g * x` and `sg` so that x_hat is not stored):
///
/// ```text
/// db = sg      dw = sgx      dx = w * invstd * (g - sg / m - x_hat * sgx / m)     (pass 2)
/// ```
///
/// (the derivation is the one of [`batch_normalize_backward`] with `g * w` as the gradient of
/// x_hat). Returns `(dx, dw, db)`. With an activation, both passes read `g` times the
/// activation's mask ([`PlaneMask`]), computed on the fly.
#[allow(clippy::too_many_arguments)]
fn batch_norm_affine_backward_cpu(
    g: &[f32],
    x: &[f32],
    (n_n, c_n, s_n): (usize, usize, usize),
    mean: &[f32],
    invstd: &[f32],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    activation: Activation,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let plane_mask = |c: usize| PlaneMask {
        a: invstd[c] * w.map_or(1.0, |w| w[c]),
        mu: mean[c],
        shift: b.map_or(0.0, |b| b[c]),
        below: activation.slope_below(),
    };
    let mask: Option<&(dyn Fn(usize) -> PlaneMask + Sync)> =
        (activation != Activation::Identity).then_some(&plane_mask);
    let m = (n_n * s_n) as f64;
    let sums: Vec<(f64, f64)> = channel_sum_and_dot(g, x, (n_n, c_n, s_n), mask)
        .into_iter()
        .enumerate()
        // sum g * x_hat = invstd * (sum g * x - mean * sum g)
        .map(|(c, (sg, sgx))| (sg, invstd[c] as f64 * (sgx - mean[c] as f64 * sg)))
        .collect();
    let db: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
    let dw: Vec<f32> = sums.iter().map(|s| s.1 as f32).collect();
    let mut dx = cpu::pool::take(g.len());
    cpu::for_each_row(&mut dx, s_n, |plane, out| {
        let c = plane % c_n;
        let (is, mu) = (invstd[c] as f64, mean[c]);
        let a = w.map_or(1.0, |w| w[c] as f64) * is;
        // dx = a * g - a * sg/m - a * (sgx/m) * invstd * (x - mean)
        let (ga, gb, gc) = (
            a as f32,
            (-a * sums[c].1 / m * is) as f32,
            (-a * sums[c].0 / m) as f32,
        );
        let range = plane * s_n..(plane + 1) * s_n;
        let (gp, xp) = (&g[range.clone()], &x[range]);
        match mask {
            None => {
                for ((o, &gv), &xv) in out.iter_mut().zip(gp).zip(xp) {
                    *o = ga * gv + gb * (xv - mu) + gc;
                }
            }
            Some(mask) => mask(c).with_masked(gp, xp, |gm| {
                for ((o, &gv), &xv) in out.iter_mut().zip(gm).zip(xp) {
                    *o = ga * gv + gb * (xv - mu) + gc;
                }
            }),
        }
    });
    (dx, dw, db)
}

/// Backward rule of [`Tensor::batch_norm_affine`]: gradients of `x`, then of `weight` and
/// `bias` when present. When the backward pass is recorded (second order) it is written with
/// differentiable ops, recomputing the statistics from `x` as
/// [`batch_normalize_backward`] does; otherwise one fused two-pass CPU kernel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_norm_affine_backward(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
    activation: Activation,
    stats: &ChannelStats,
    g: &Tensor,
) -> Result<Vec<Option<Tensor>>> {
    let recorded = crate::autograd::is_grad_enabled()
        && (x.is_tracked()
            || g.is_tracked()
            || weight.is_some_and(|w| w.is_tracked())
            || bias.is_some_and(|b| b.is_tracked() && activation != Activation::Identity));
    let dims: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
    if recorded {
        let centred = x.sub(&x.mean(&dims, true)?)?;
        let invstd = centred.sqr()?.mean(&dims, true)?.add_scalar(eps).powf(-0.5);
        let xhat = centred.mul(&invstd)?;
        // The activation's mask, from the recomputed pre-activation (piecewise constant: no
        // gradient flows through it).
        let g = &match activation {
            Activation::Identity => g.clone(),
            act => {
                let mut y = xhat.clone();
                if let Some(w) = weight {
                    y = y.mul(&channel_view(x, w)?)?;
                }
                if let Some(b) = bias {
                    y = y.add(&channel_view(x, b)?)?;
                }
                let kind = match act {
                    Activation::LeakyRelu(slope) => MaskOp::LeakySlope(slope),
                    _ => MaskOp::Relu,
                };
                g.mul_mask(&y.detach(), kind)?
            }
        };
        let gx = match weight {
            Some(w) => g.mul(&channel_view(x, w)?)?,
            None => g.clone(),
        };
        let mean_g = gx.mean(&dims, true)?;
        let mean_gx = gx.mul(&xhat)?.mean(&dims, true)?;
        let dx = invstd.mul(&gx.sub(&mean_g)?.sub(&xhat.mul(&mean_gx)?)?)?;
        let mut out = vec![Some(dx)];
        if weight.is_some() {
            out.push(Some(g.mul(&xhat)?.sum(&dims, false)?));
        }
        if bias.is_some() {
            out.push(Some(g.sum(&dims, false)?));
        }
        return Ok(out);
    }
    let (n, c, s) = ncs(x.shape());
    let _t = profile::op("batch_norm_backward");
    profile::describe(|| {
        OpInfo::new(
            "batch_norm_backward",
            &[g.shape(), x.shape()],
            x.shape(),
            batch_norm_affine_backward_cost(x.shape()),
        )
    });
    let (mean, invstd) = (stats.mean.storage(), stats.invstd.storage());
    let (w_storage, b_storage) = (weight.map(|w| w.storage()), bias.map(|b| b.storage()));
    let (gs, xs) = (g.storage(), x.storage());
    fn host<'a>(t: Option<&'a Storage>, gs: &Storage) -> Result<Option<&'a [f32]>> {
        match t {
            Some(Storage::Cpu(v)) => Ok(Some(v.as_slice())),
            Some(other) => Err(Error::device_mismatch("batch_norm backward", gs, other)),
            None => Ok(None),
        }
    }
    let (wd, bd) = (
        host(w_storage.as_deref(), &gs)?,
        host(b_storage.as_deref(), &gs)?,
    );
    let (dx, dw, db) = match (&*gs, &*xs, &*mean, &*invstd) {
        (Storage::Cpu(gd), Storage::Cpu(xd), Storage::Cpu(md), Storage::Cpu(isd)) => {
            batch_norm_affine_backward_cpu(gd, xd, (n, c, s), md, isd, wd, bd, activation)
        }
        (a, b, _, _) => return Err(Error::device_mismatch("batch_norm backward", a, b)),
    };
    let mut out = vec![Some(Tensor::from_storage(
        Storage::Cpu(dx),
        x.shape().clone(),
    )?)];
    if weight.is_some() {
        out.push(Some(Tensor::from_vec(dw, c)?));
    }
    if bias.is_some() {
        out.push(Some(Tensor::from_vec(db, c)?));
    }
    Ok(out)
}

/// GPU version of [`batch_normalize_cpu`]: `bn_stats` (one workgroup per channel), then
/// `bn_normalize` (one thread per element). Returns `(x_hat, mean, var, invstd)`.
fn batch_normalize_gpu(
    x: &GpuBuffer,
    (n_n, c_n, s_n): (usize, usize, usize),
    eps: f32,
) -> Result<(GpuBuffer, GpuBuffer, GpuBuffer, GpuBuffer)> {
    let dev = x.device();
    let op = "batch_normalize";
    let params = BnParams {
        n: n_n as u32,
        c: c_n as u32,
        s: s_n as u32,
        eps,
    };
    let (mean, var, invstd) = (dev.alloc(op, c_n), dev.alloc(op, c_n), dev.alloc(op, c_n));
    dev.dispatch(
        op,
        &BN_STATS,
        &[],
        &params,
        &[x, &mean, &var, &invstd],
        [c_n as u32, 1, 1],
    );
    let out = dev.alloc(op, x.len());
    dev.dispatch(
        op,
        &BN_NORMALIZE,
        &[],
        &params,
        &[x, &mean, &invstd, &out],
        groups_for(x.len(), WORKGROUP),
    );
    dev.check(op)?;
    Ok((out, mean, var, invstd))
}

/// GPU version of [`batch_normalize_backward_cpu`]: per-channel means of `g` and `g * x_hat`
/// (one workgroup per channel), then `dx` (one thread per element).
fn batch_normalize_backward_gpu(
    g: &GpuBuffer,
    xhat: &GpuBuffer,
    invstd: &GpuBuffer,
    (n_n, c_n, s_n): (usize, usize, usize),
) -> Result<GpuBuffer> {
    let dev = g.device();
    let op = "batch_normalize backward";
    let params = BnParams {
        n: n_n as u32,
        c: c_n as u32,
        s: s_n as u32,
        eps: 0.0,
    };
    let sums = dev.alloc(op, 2 * c_n);
    dev.dispatch(
        op,
        &BN_BACKWARD_SUMS,
        &[],
        &params,
        &[g, xhat, &sums],
        [c_n as u32, 1, 1],
    );
    let dx = dev.alloc(op, g.len());
    dev.dispatch(
        op,
        &BN_BACKWARD_APPLY,
        &[],
        &params,
        &[g, xhat, invstd, &sums, &dx],
        groups_for(g.len(), WORKGROUP),
    );
    dev.check(op)?;
    Ok(dx)
}

/// The backward of `x_hat = (x - mean) * invstd` (mean and var from the batch), derived:
/// with `M` values per channel and `g = dL/dx_hat`,
/// `dL/dx = invstd * (g - mean(g) - x_hat * mean(g * x_hat))`, the means per channel.
/// Fused: pass 1 per channel sums `g` and `g * x_hat`; pass 2 writes `dx` per plane.
fn batch_normalize_backward_cpu(
    g: &[f32],
    xhat: &[f32],
    (n_n, c_n, s_n): (usize, usize, usize),
    invstd: &[f32],
) -> Vec<f32> {
    let m = (n_n * s_n) as f64;
    let sums: Vec<(f32, f32)> = channel_sum_and_dot(g, xhat, (n_n, c_n, s_n), None)
        .into_iter()
        .map(|(sg, sgx)| ((sg / m) as f32, (sgx / m) as f32))
        .collect();
    let mut dx = cpu::pool::take(g.len());
    cpu::for_each_row(&mut dx, s_n, |plane, out| {
        let c = plane % c_n;
        let (mg, mgx, is) = (sums[c].0, sums[c].1, invstd[c]);
        let range = plane * s_n..(plane + 1) * s_n;
        for ((o, &gv), &xv) in out.iter_mut().zip(&g[range.clone()]).zip(&xhat[range]) {
            *o = is * (gv - mg - xv * mgx);
        }
    });
    dx
}

// ---- cost (profiler) -------------------------------------------------------------------------

/// Cost of batch_normalize on `x`: 6 FLOPs per element (the mean's add; the variance's
/// subtract, square and add; the normalisation's subtract and multiply); `x` read, `x_hat`
/// written (the `[C]` statistics are negligible and not counted).
pub fn batch_normalize_cost(x: &Shape) -> OpCost {
    OpCost::pointwise(6.0, &[x], x)
}

/// Cost of the fused backward of batch_normalize: 7 FLOPs per element (the sums of `g` and
/// `g * x_hat`: 3; `invstd * (g - mean_g - x_hat * mean_gx)`: 4); `g` and `x_hat` read, `dx`
/// written.
pub fn batch_normalize_backward_cost(x: &Shape) -> OpCost {
    OpCost::pointwise(7.0, &[x, x], x)
}

/// Cost of the fused training batch norm ([`Tensor::batch_norm_affine`]): 8 FLOPs per element
/// (the statistics' 4, then subtract, multiply, add and the scale folded into one multiply:
/// counted as 4); `x` read, `y` written (the `[C]` vectors are negligible).
pub fn batch_norm_affine_cost(x: &Shape) -> OpCost {
    OpCost::pointwise(8.0, &[x], x)
}

/// Cost of its fused backward: 9 FLOPs per element (the sums of `g` and `g * x`: 3; `dx =
/// a g + b (x - mean) + c`: 6); `g` and `x` read, `dx` written.
pub fn batch_norm_affine_backward_cost(x: &Shape) -> OpCost {
    OpCost::pointwise(9.0, &[x, x], x)
}

/// `[N, C, S]` view of an `[N, C, ...]` shape.
fn ncs(shape: &crate::tensor::Shape) -> (usize, usize, usize) {
    let d = shape.dims();
    (d[0], d[1], d[2..].iter().product())
}

impl Tensor {
    /// Batch norm in training mode as one recorded op (CPU tensors): each channel (dim 1)
    /// normalised with the batch's mean and biased variance, then scaled by `weight` and
    /// shifted by `bias` (`[C]` each, optional). Same values as `batch_normalize` followed by
    /// the broadcast `mul` and `add`, in two passes forward and two backward instead of six or
    /// more. Returns the result and the statistics (for the running averages).
    ///
    /// With an `activation` other than [`Activation::Identity`], the result is the activation
    /// of that, in the same pass (and its mask inside the backward passes).
    pub fn batch_norm_affine(
        &self,
        weight: Option<&Tensor>,
        bias: Option<&Tensor>,
        eps: f32,
        activation: Activation,
    ) -> Result<(Tensor, Arc<ChannelStats>)> {
        if self.rank() < 2 {
            return Err(Error::bad_shape(
                "batch_norm",
                self.shape(),
                "expected [N, C, ...]",
            ));
        }
        let (n, c, s) = ncs(self.shape());
        let _t = profile::op("batch_norm");
        let (y, h) = {
            let xs = self.storage();
            let Storage::Cpu(x) = &*xs else {
                return Err(Error::invalid(
                    "batch_norm",
                    "the fused training kernel runs on the CPU; GPU tensors take batch_norm's composite path",
                ));
            };
            let (ws, bs) = (weight.map(|w| w.storage()), bias.map(|b| b.storage()));
            let host = |t: &Option<std::sync::RwLockReadGuard<'_, Storage>>| match t.as_deref() {
                Some(Storage::Cpu(v)) => Ok(Some(v.clone())),
                Some(other) => Err(Error::device_mismatch("batch_norm", &xs, other)),
                None => Ok(None),
            };
            let (w, b) = (host(&ws)?, host(&bs)?);
            batch_norm_affine_cpu(x, (n, c, s), eps, w.as_deref(), b.as_deref(), activation)
        };
        let stats = Arc::new(ChannelStats {
            mean: Tensor::from_vec(h.mean, c)?,
            var: Tensor::from_vec(h.var, c)?,
            invstd: Tensor::from_vec(h.invstd, c)?,
            count: n * s,
        });
        let t = Tensor::from_op(
            Storage::Cpu(y),
            self.shape().clone(),
            Op::BatchNormAffine {
                input: self.clone(),
                weight: weight.cloned(),
                bias: bias.cloned(),
                eps,
                activation,
                stats: stats.clone(),
            },
        );
        Ok((t, stats))
    }

    /// Normalises each channel (dim 1) with the batch's own mean and biased variance:
    /// `(x - mean_c) / sqrt(var_c + eps)`. Returns the result and the statistics.
    pub fn batch_normalize(&self, eps: f32) -> Result<(Tensor, Arc<ChannelStats>)> {
        if self.rank() < 2 {
            return Err(Error::bad_shape(
                "batch_normalize",
                self.shape(),
                "expected [N, C, ...]",
            ));
        }
        let (n, c, s) = ncs(self.shape());
        let _t = profile::op("batch_normalize");
        let (out, stats) = match &*self.storage() {
            Storage::Cpu(x) => {
                let (out, h) = batch_normalize_cpu(x, (n, c, s), eps);
                let stats = ChannelStats {
                    mean: Tensor::from_vec(h.mean, c)?,
                    var: Tensor::from_vec(h.var, c)?,
                    invstd: Tensor::from_vec(h.invstd, c)?,
                    count: n * s,
                };
                (Storage::Cpu(out), stats)
            }
            Storage::Gpu(x) => {
                let (out, mean, var, invstd) = batch_normalize_gpu(x, (n, c, s), eps)?;
                let stats = ChannelStats {
                    mean: Tensor::from_storage(Storage::Gpu(mean), c)?,
                    var: Tensor::from_storage(Storage::Gpu(var), c)?,
                    invstd: Tensor::from_storage(Storage::Gpu(invstd), c)?,
                    count: n * s,
                };
                (Storage::Gpu(out), stats)
            }
        };
        let stats = Arc::new(stats);
        let t = Tensor::from_op(
            out,
            self.shape().clone(),
            Op::BatchNormalize {
                input: self.clone(),
                eps,
                stats: stats.clone(),
            },
        );
        Ok((t, stats))
    }
}

/// Backward rule of [`Tensor::batch_normalize`] (`out` is its output `x_hat`, `g` the
/// incoming gradient). When the backward pass is itself recorded (second order), the rule
/// recomputes the statistics from `x` with differentiable ops, so that the gradient's own
/// gradient through mean and var is exact; otherwise one fused kernel computes the same values.
pub(crate) fn batch_normalize_backward(
    x: &Tensor,
    out: &Tensor,
    eps: f32,
    stats: &ChannelStats,
    g: &Tensor,
) -> Result<Tensor> {
    if crate::autograd::is_grad_enabled() && (x.is_tracked() || g.is_tracked()) {
        let dims: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
        let centred = x.sub(&x.mean(&dims, true)?)?;
        let invstd = centred.sqr()?.mean(&dims, true)?.add_scalar(eps).powf(-0.5);
        let xhat = centred.mul(&invstd)?;
        let mean_g = g.mean(&dims, true)?;
        let mean_gx = g.mul(&xhat)?.mean(&dims, true)?;
        return invstd.mul(&g.sub(&mean_g)?.sub(&xhat.mul(&mean_gx)?)?);
    }
    let _t = profile::op("batch_normalize_backward");
    profile::describe(|| {
        OpInfo::new(
            "batch_normalize_backward",
            &[g.shape(), out.shape()],
            x.shape(),
            batch_normalize_backward_cost(x.shape()),
        )
    });
    let invstd = stats.invstd.storage();
    let storage = match (&*g.storage(), &*out.storage(), &*invstd) {
        (Storage::Cpu(gd), Storage::Cpu(xh), Storage::Cpu(is)) => {
            Storage::Cpu(batch_normalize_backward_cpu(gd, xh, ncs(x.shape()), is))
        }
        (Storage::Gpu(gd), Storage::Gpu(xh), Storage::Gpu(is)) => {
            Storage::Gpu(batch_normalize_backward_gpu(gd, xh, is, ncs(x.shape()))?)
        }
        (a, b, _) => return Err(Error::device_mismatch("batch_normalize backward", a, b)),
    };
    Tensor::from_storage(storage, x.shape().clone())
}
