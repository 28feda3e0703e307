//! conv2d: PyTorch's 2-D cross-correlation (`torch.nn.functional.conv2d`, no dilation or
//! groups), and its weight gradient as an op of its own.
//!
//! Shapes: `x: [N, C_in, H, W]`, `weight: [C_out, C_in, KH, KW]`, `out: [N, C_out, OH, OW]`,
//! `OH = (H + 2*padding - KH) / stride + 1` (floor), likewise OW.
//! Index formula (zero outside the image):
//! `out[n, co, oh, ow] = sum_{ci, kh, kw} w[co, ci, kh, kw] * x[n, ci, oh*s - p + kh, ow*s - p + kw]`
//!
//! Backward (autograd/rules.rs), each itself a differentiable op:
//! - `dx = conv_transpose2d(g, w)` with the same stride/padding and the output_padding that
//!   restores H and W (the floor in OH can drop up to `stride - 1` rows);
//! - `dw = conv2d_weight_grad(x, g)` (this file).
//!
//! Bias is not part of the op: it is a broadcast add of a `[1, C_out, 1, 1]` view.
//!
//! GPU kernels: `shaders/conv2d.wgsl`, both as implicit GEMMs (the matmul tiling, with each
//! tile load computing its input pixel; no im2col buffer exists on the GPU).

use super::conv_transpose2d::ConvTranspose2dParams;
use crate::backend::cpu::conv_direct;
use crate::backend::cpu::gemm::{gemm, MatRef};
use crate::backend::cpu::{pool, swap_outer_dims};
use crate::backend::gpu::params::ConvParams;
use crate::backend::gpu::{Access, KernelSpec, Shader};
use crate::backend::{GpuBuffer, Storage};
use crate::error::{Error, Result};
use crate::ops::Op;
use crate::profile::{self, OpCost};
use crate::tensor::{Shape, Tensor};
use rayon::prelude::*;

static CONV2D_WGSL: Shader = Shader {
    name: "conv2d",
    source: include_str!("../../shaders/conv2d.wgsl"),
};
const CONV2D_FORWARD: KernelSpec = KernelSpec {
    shader: &CONV2D_WGSL,
    entry: "conv2d_forward",
    storage: &[(0, Access::Read), (1, Access::Read), (2, Access::ReadWrite)],
    uniform: 3,
};
const CONV2D_WEIGHT_GRAD: KernelSpec = KernelSpec {
    shader: &CONV2D_WGSL,
    entry: "conv2d_weight_grad",
    storage: &[(0, Access::Read), (1, Access::Read), (2, Access::ReadWrite)],
    uniform: 3,
};
/// Rows and columns of the implicit GEMM per workgroup (as in `matmul.wgsl`).
pub(crate) const GEMM_TILE: usize = 64;

/// conv2d on the GPU: GEMM `[C_out, C_in*KH*KW] x [C_in*KH*KW, N*OH*OW]`, dispatched as
/// `(ceil(N*OH*OW / 64), ceil(C_out / 64))` workgroups.
fn conv2d_gpu(x: &GpuBuffer, w: &GpuBuffer, geo: ConvParams) -> Result<GpuBuffer> {
    let dev = x.device();
    if geo.padding == 0 && geo.kh == geo.h && geo.kw == geo.w {
        // The kernel covers the whole image (a DCGAN critic's last layer, and the input
        // gradient of a generator's first layer): out[n, co] = x[n, :] . w[co, :], one matmul
        // `[N, C_in*H*W] x [C_out, C_in*H*W]^T`, which suits skinny shapes better.
        let k = (geo.c_in * geo.h * geo.w) as usize;
        return crate::ops::matmul::matmul_gpu(
            x,
            w,
            crate::ops::MatmulLayout::new(false, true),
            &Shape::from(()),
            &[],
            &[],
            geo.n as usize,
            k,
            geo.c_out as usize,
        );
    }
    let (m, n) = (geo.c_out as usize, (geo.n * geo.oh * geo.ow) as usize);
    let out = dev.alloc("conv2d", m * n);
    dev.dispatch(
        "conv2d",
        &CONV2D_FORWARD,
        &[],
        &geo,
        &[w, x, &out],
        [
            n.div_ceil(GEMM_TILE) as u32,
            m.div_ceil(GEMM_TILE) as u32,
            1,
        ],
    );
    dev.check("conv2d")?;
    Ok(out)
}

/// conv2d's weight gradient on the GPU: GEMM `[C_out, N*OH*OW] x [N*OH*OW, C_in*KH*KW]`.
fn conv2d_weight_grad_gpu(x: &GpuBuffer, gy: &GpuBuffer, geo: ConvParams) -> Result<GpuBuffer> {
    let dev = x.device();
    let (m, n) = (geo.c_out as usize, (geo.c_in * geo.kh * geo.kw) as usize);
    let depth = (geo.n * geo.oh * geo.ow) as usize;
    let tiles = n.div_ceil(GEMM_TILE) * m.div_ceil(GEMM_TILE);
    // Split-K: enough workgroups to fill a large GPU (~256), each slice at least 4 depth tiles
    // of 16. A 1-channel layer's weight gradient is one output tile over 12,544 positions: as
    // one workgroup it took 50 ms on an H200.
    let slices = (256 / tiles).clamp(1, (depth / (4 * 16)).max(1));
    let geo = ConvParams {
        k_split: slices as u32,
        ..geo
    };
    let partial = dev.alloc("conv2d_weight_grad", slices * m * n);
    dev.dispatch(
        "conv2d_weight_grad",
        &CONV2D_WEIGHT_GRAD,
        &[],
        &geo,
        &[gy, x, &partial],
        [
            n.div_ceil(GEMM_TILE) as u32,
            m.div_ceil(GEMM_TILE) as u32,
            slices as u32,
        ],
    );
    dev.check("conv2d_weight_grad")?;
    if slices == 1 {
        return Ok(partial);
    }
    // The slices' blocks, [slices, C_out * C_in*KH*KW], summed over the first dim.
    super::reduce::sum_gpu(&partial, &Shape::from([slices, m * n]), &[0])
}

/// The geometry block shared by the convolution kernels.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_geometry(
    (n, c_in, h, w): (usize, usize, usize, usize),
    c_out: usize,
    (kh, kw): (usize, usize),
    stride: usize,
    padding: usize,
    (oh, ow): (usize, usize),
) -> ConvParams {
    ConvParams {
        n: n as u32,
        c_in: c_in as u32,
        h: h as u32,
        w: w as u32,
        c_out: c_out as u32,
        kh: kh as u32,
        kw: kw as u32,
        stride: stride as u32,
        padding: padding as u32,
        oh: oh as u32,
        ow: ow as u32,
        k_split: 1,
    }
}

/// Stride and zero padding of a convolution (the same on both axes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dParams {
    /// Step between output positions, >= 1.
    pub stride: usize,
    /// Zeros added on every side of the input.
    pub padding: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams {
            stride: 1,
            padding: 0,
        }
    }
}

impl Conv2dParams {
    /// Validated parameters (stride must be at least 1).
    pub fn new(stride: usize, padding: usize) -> Result<Self> {
        if stride == 0 {
            return Err(Error::invalid("conv2d", "stride must be at least 1"));
        }
        Ok(Conv2dParams { stride, padding })
    }

    /// `(in + 2p - k) / s + 1`, or `None` when the kernel is larger than the padded input.
    pub fn out_size(&self, input: usize, kernel: usize) -> Option<usize> {
        (input + 2 * self.padding)
            .checked_sub(kernel)
            .map(|r| r / self.stride.max(1) + 1)
    }
}

/// What conv2d_weight_grad needs beyond the convolution: the kernel size it must produce
/// (the input and output sizes alone do not determine it, because of the floor in OH).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Conv2dWeightGradParams {
    /// The forward convolution's stride and padding.
    pub conv: Conv2dParams,
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
}

// ---- cost (profiler) -------------------------------------------------------------------------

/// FLOPs of conv2d: `2 * N * C_out * OH * OW * C_in * KH * KW` (a multiply-add is 2; every
/// tap counts, padding included, as PyTorch's FLOP counter does).
pub fn conv2d_flops(
    n: usize,
    c_in: usize,
    c_out: usize,
    (oh, ow): (usize, usize),
    (kh, kw): (usize, usize),
) -> f64 {
    2.0 * (n * c_out * oh * ow) as f64 * (c_in * kh * kw) as f64
}

/// Cost of conv2d, `x: [N, C_in, H, W]`, `w: [C_out, C_in, KH, KW]`, `out: [N, C_out, OH, OW]`:
/// [`conv2d_flops`]; input and weight read, output written.
pub fn conv2d_cost(x: &Shape, w: &Shape, out: &Shape) -> OpCost {
    let (n, c_in, kh, kw) = (x.dims()[0], x.dims()[1], w.dims()[2], w.dims()[3]);
    let (c_out, oh, ow) = (out.dims()[1], out.dims()[2], out.dims()[3]);
    OpCost::copy(&[x, w], out).with_flops(conv2d_flops(n, c_in, c_out, (oh, ow), (kh, kw)))
}

/// Cost of conv2d_weight_grad, `x: [N, C_in, H, W]`, `gy: [N, C_out, OH, OW]`,
/// `out: [C_out, C_in, KH, KW]`: the same multiply-adds as the forward conv2d
/// ([`conv2d_flops`]); `x` and `gy` read, the weight gradient written.
pub fn conv2d_weight_grad_cost(x: &Shape, gy: &Shape, out: &Shape) -> OpCost {
    let (n, c_out, oh, ow) = (gy.dims()[0], gy.dims()[1], gy.dims()[2], gy.dims()[3]);
    let (c_in, kh, kw) = (out.dims()[1], out.dims()[2], out.dims()[3]);
    OpCost::copy(&[x, gy], out).with_flops(conv2d_flops(n, c_in, c_out, (oh, ow), (kh, kw)))
}

/// The output positions `o` in `0..out_len` with `0 <= o*stride + offset < in_len`, as a range
/// (offset = `k - padding`, possibly negative). Lets the kernels skip the padding without a
/// branch in the innermost loop.
pub(crate) fn valid_range(
    out_len: usize,
    in_len: usize,
    stride: usize,
    offset: isize,
) -> std::ops::Range<usize> {
    let s = stride as isize;
    // smallest o with o*s + offset >= 0
    let lo = if offset >= 0 {
        0
    } else {
        ((-offset) + s - 1) / s
    };
    // largest o with o*s + offset <= in_len - 1, plus one
    let hi_num = in_len as isize - 1 - offset;
    let hi = if hi_num < 0 { 0 } else { hi_num / s + 1 };
    let lo = lo.clamp(0, out_len as isize) as usize;
    let hi = hi.clamp(0, out_len as isize) as usize;
    lo..hi.max(lo)
}

/// Direct convolution, one `(n, co)` output plane per task.
// The plain loop is the reference the GEMM path is tested against (see `tests` below).
#[cfg_attr(not(test), allow(dead_code))]
fn conv2d_cpu_naive(
    x: &[f32],
    xs: (usize, usize, usize, usize),
    w: &[f32],
    ws: (usize, usize, usize, usize),
    p: Conv2dParams,
    oh_n: usize,
    ow_n: usize,
) -> Vec<f32> {
    let (n_n, ci_n, h, wd) = xs;
    let (co_n, _, kh_n, kw_n) = ws;
    let (s, pad) = (p.stride, p.padding as isize);
    let mut out = vec![0.0f32; n_n * co_n * oh_n * ow_n];
    out.par_chunks_mut((oh_n * ow_n).max(1))
        .enumerate()
        .for_each(|(plane, out_plane)| {
            let (n, co) = (plane / co_n, plane % co_n);
            for ci in 0..ci_n {
                let x_plane = &x[(n * ci_n + ci) * h * wd..][..h * wd];
                for kh in 0..kh_n {
                    let oh_range = valid_range(oh_n, h, s, kh as isize - pad);
                    for kw in 0..kw_n {
                        let wv = w[((co * ci_n + ci) * kh_n + kh) * kw_n + kw];
                        let ow_range = valid_range(ow_n, wd, s, kw as isize - pad);
                        for oh in oh_range.clone() {
                            let ih = (oh * s + kh) as isize - pad;
                            let x_row = &x_plane[ih as usize * wd..][..wd];
                            let out_row = &mut out_plane[oh * ow_n..][..ow_n];
                            for ow in ow_range.clone() {
                                let iw = ((ow * s + kw) as isize - pad) as usize;
                                out_row[ow] += wv * x_row[iw];
                            }
                        }
                    }
                }
            }
        });
    out
}

/// `dw[co, ci, kh, kw] = sum_{n, oh, ow} gy[n, co, oh, ow] * x[n, ci, oh*s - p + kh, ow*s - p + kw]`,
/// one `(co, ci)` kernel plane per task.
// The plain loop is the reference the GEMM path is tested against (see `tests` below).
#[cfg_attr(not(test), allow(dead_code))]
fn conv2d_weight_grad_cpu_naive(
    x: &[f32],
    xs: (usize, usize, usize, usize),
    gy: &[f32],
    gs: (usize, usize, usize, usize),
    p: Conv2dWeightGradParams,
) -> Vec<f32> {
    let (n_n, ci_n, h, wd) = xs;
    let (_, co_n, oh_n, ow_n) = gs;
    let (kh_n, kw_n) = (p.kernel_h, p.kernel_w);
    let (s, pad) = (p.conv.stride, p.conv.padding as isize);
    let mut dw = vec![0.0f32; co_n * ci_n * kh_n * kw_n];
    dw.par_chunks_mut((kh_n * kw_n).max(1))
        .enumerate()
        .for_each(|(plane, dw_plane)| {
            let (co, ci) = (plane / ci_n, plane % ci_n);
            for kh in 0..kh_n {
                let oh_range = valid_range(oh_n, h, s, kh as isize - pad);
                for kw in 0..kw_n {
                    let ow_range = valid_range(ow_n, wd, s, kw as isize - pad);
                    let mut acc = 0.0f32;
                    for n in 0..n_n {
                        let x_plane = &x[(n * ci_n + ci) * h * wd..][..h * wd];
                        let g_plane = &gy[(n * co_n + co) * oh_n * ow_n..][..oh_n * ow_n];
                        for oh in oh_range.clone() {
                            let ih = ((oh * s + kh) as isize - pad) as usize;
                            for ow in ow_range.clone() {
                                let iw = ((ow * s + kw) as isize - pad) as usize;
                                acc += g_plane[oh * ow_n + ow] * x_plane[ih * wd + iw];
                            }
                        }
                    }
                    dw_plane[kh * kw_n + kw] = acc;
                }
            }
        });
    dw
}

/// im2col over the whole batch, the lowering that turns a convolution into one GEMM:
/// `cols[(ci*KH + kh)*KW + kw][n*OH*OW + oh*OW + ow] = x[n, ci, oh*s - p + kh, ow*s - p + kw]`
/// (0 where that position is padding). Shape `[C_in*KH*KW, N*OH*OW]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn im2col(
    x: &[f32],
    (n_n, ci_n, h, wd): (usize, usize, usize, usize),
    kh_n: usize,
    kw_n: usize,
    p: Conv2dParams,
    oh_n: usize,
    ow_n: usize,
) -> Vec<f32> {
    let (s, pad) = (p.stride, p.padding as isize);
    let plane = oh_n * ow_n;
    let row_len = n_n * plane;
    // Every value is written below (padding positions as 0), so the buffer is not pre-zeroed.
    let mut cols = pool::take(ci_n * kh_n * kw_n * row_len);
    crate::backend::cpu::for_each_row(&mut cols, row_len, |r, row| {
        let (ci, kh, kw) = (r / (kh_n * kw_n), (r / kw_n) % kh_n, r % kw_n);
        let oh_range = valid_range(oh_n, h, s, kh as isize - pad);
        let ow_range = valid_range(ow_n, wd, s, kw as isize - pad);
        // The first valid ow reads input column iw0; later ones step by the stride.
        let iw0 = (ow_range.start * s + kw) as isize - pad;
        for n in 0..n_n {
            let x_plane = &x[(n * ci_n + ci) * h * wd..][..h * wd];
            let dst = &mut row[n * plane..][..plane];
            for (oh, dst_row) in dst.chunks_exact_mut(ow_n).enumerate() {
                if !oh_range.contains(&oh) || ow_range.is_empty() {
                    dst_row.fill(0.0);
                    continue;
                }
                let ih = ((oh * s + kh) as isize - pad) as usize;
                dst_row[..ow_range.start].fill(0.0);
                dst_row[ow_range.end..].fill(0.0);
                let src = x_plane[ih * wd + iw0 as usize..ih * wd + wd]
                    .iter()
                    .step_by(s);
                for (d, &v) in dst_row[ow_range.clone()].iter_mut().zip(src) {
                    *d = v;
                }
            }
        }
    });
    cols
}

/// im2col results kept from a convolution's forward pass for its backward pass.
///
/// `dw = conv2d_weight_grad(x, g)` lowers the same `x` with the same geometry as the forward
/// `conv2d(x, w)` did, and a transposed convolution's backward computes `dx = conv2d(g, w)`
/// and `dw = conv2d_weight_grad(g, x)` from the same im2col of `g`. Rather than lower twice,
/// the first user stores its buffer here (only when the weight gradient will follow) and the
/// weight gradient takes it. Keys name the tensor by its id (never reused) and the count of
/// in-place writes to its data, so a hit is always the very same data. Entries nobody takes (a forward whose backward never runs) are dropped
/// oldest first beyond a size cap; a taken buffer returns to the pool after its GEMM.
mod cols_cache {
    use super::Conv2dParams;
    use crate::backend::cpu::pool;
    use crate::tensor::TensorId;
    use std::sync::Mutex;

    /// What an im2col buffer is a lowering of.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) struct Key {
        pub tensor: TensorId,
        pub writes: u64,
        pub dims: (usize, usize, usize, usize),
        pub kernel: (usize, usize),
        pub params: Conv2dParams,
        pub out: (usize, usize),
    }

    /// At most this many f32 values are kept (256 MiB): W1 keeps about 30 MiB between its
    /// forward and backward passes, W2 about 170 MiB.
    const MAX_VALUES: usize = 64 << 20;

    static ENTRIES: Mutex<Vec<(Key, Vec<f32>)>> = Mutex::new(Vec::new());

    /// Keeps `cols` for a later [`take`] with the same key.
    pub(crate) fn put(key: Key, cols: Vec<f32>) {
        let mut entries = ENTRIES.lock().unwrap();
        entries.push((key, cols));
        while entries.iter().map(|(_, c)| c.len()).sum::<usize>() > MAX_VALUES {
            let (_, oldest) = entries.remove(0);
            pool::recycle(oldest);
        }
    }

    /// Whether a buffer is kept under `key` (tests).
    #[cfg(test)]
    pub(crate) fn contains(key: &Key) -> bool {
        ENTRIES.lock().unwrap().iter().any(|(k, _)| k == key)
    }

    /// The buffer kept under `key`, removed from the cache.
    pub(crate) fn take(key: &Key) -> Option<Vec<f32>> {
        let mut entries = ENTRIES.lock().unwrap();
        let at = entries.iter().position(|(k, _)| k == key)?;
        Some(entries.swap_remove(at).1)
    }
}

/// How a CPU convolution treats its im2col buffer: look it up under `key` first, and when
/// `keep` is set, store it under `key` afterwards instead of recycling it.
#[derive(Clone, Copy)]
struct ColsReuse {
    key: Option<cols_cache::Key>,
    keep: bool,
}

impl ColsReuse {
    /// Lower afresh and recycle (the kernels' unit tests).
    #[cfg(test)]
    const NONE: ColsReuse = ColsReuse {
        key: None,
        keep: false,
    };

    /// For a lowering of tensor `x` with kernel `kernel`, `params` and output `out`.
    fn of(
        x: &Tensor,
        kernel: (usize, usize),
        params: Conv2dParams,
        out: (usize, usize),
        keep: bool,
    ) -> Self {
        let key = x.shape().dims4("conv2d").ok().map(|dims| cols_cache::Key {
            tensor: x.id(),
            writes: x.storage_writes(),
            dims,
            kernel,
            params,
            out,
        });
        ColsReuse { key, keep }
    }

    /// The kept im2col for this key, or a fresh one from `lower`.
    fn cols(&self, lower: impl FnOnce() -> Vec<f32>) -> Vec<f32> {
        self.key
            .as_ref()
            .and_then(cols_cache::take)
            .unwrap_or_else(lower)
    }

    /// Hands the buffer back: into the cache when `keep`, else to the pool.
    fn done(&self, cols: Vec<f32>) {
        match (self.keep, self.key) {
            (true, Some(key)) => cols_cache::put(key, cols),
            _ => pool::recycle(cols),
        }
    }
}

/// True when the kernel covers the whole unpadded input, so the output is 1x1 and conv2d is a
/// plain matmul over `C_in*KH*KW` (a DCGAN discriminator's last layer, and the backward of a
/// generator's first layer, a transposed convolution of the 1x1 noise).
fn kernel_covers_input(
    (_, _, h, w): (usize, usize, usize, usize),
    (kh, kw): (usize, usize),
    p: Conv2dParams,
) -> bool {
    p.padding == 0 && h == kh && w == kw
}

/// conv2d as one GEMM: `out'[C_out, N*OH*OW] = W[C_out, C_in*KH*KW] @ im2col(x)`, then
/// `[C_out, N, P] -> [N, C_out, P]`. Same result as [`conv2d_cpu_naive`] (the reference).
#[allow(clippy::too_many_arguments)]
fn conv2d_cpu_gemm(
    x: &[f32],
    xs: (usize, usize, usize, usize),
    w: &[f32],
    ws: (usize, usize, usize, usize),
    p: Conv2dParams,
    oh_n: usize,
    ow_n: usize,
    reuse: ColsReuse,
) -> Vec<f32> {
    let (n_n, ci_n, _, _) = xs;
    let (co_n, _, kh_n, kw_n) = ws;
    if kernel_covers_input(xs, (kh_n, kw_n), p) {
        // out[n, co] = sum_t x[n, t] * w[co, t] over the C_in*KH*KW taps: one matmul, x
        // and w as they are stored (im2col would only transpose x).
        let k = ci_n * kh_n * kw_n;
        let mut out = pool::take(n_n * co_n);
        gemm(
            n_n,
            co_n,
            k,
            MatRef::row_major(x, k),
            MatRef::row_major(w, k).t(),
            &mut out,
            co_n,
            false,
        );
        return out;
    }
    let direct = conv_direct::DirectConv {
        x: xs,
        c_out: co_n,
        kernel: (kh_n, kw_n),
        stride: p.stride,
        padding: p.padding,
        out: (oh_n, ow_n),
    };
    if let Some(out) = conv_direct::conv2d(x, w, direct) {
        return out;
    }
    // Keep the lowering only for a weight gradient that will read it.
    let reuse = ColsReuse {
        keep: reuse.keep && !conv_direct::weight_grad_runs_direct(&direct),
        ..reuse
    };
    let cols = reuse.cols(|| im2col(x, xs, kh_n, kw_n, p, oh_n, ow_n));
    let (k, np) = (ci_n * kh_n * kw_n, n_n * oh_n * ow_n);
    let mut out_cn = pool::take(co_n * np);
    gemm(
        co_n,
        np,
        k,
        MatRef::row_major(w, k),
        MatRef::row_major(&cols, np),
        &mut out_cn,
        np,
        false,
    );
    let out = swap_outer_dims(&out_cn, co_n, n_n, oh_n * ow_n);
    reuse.done(cols);
    pool::recycle(out_cn);
    out
}

/// conv2d's weight gradient as one GEMM: `dW[C_out, C_in*KH*KW] = gy'[C_out, N*P] @ im2col(x)^T`
/// (the transpose is a strided view, not a copy). Same result as
/// [`conv2d_weight_grad_cpu_naive`] (the reference).
fn conv2d_weight_grad_cpu_gemm(
    x: &[f32],
    xs: (usize, usize, usize, usize),
    gy: &[f32],
    gs: (usize, usize, usize, usize),
    p: Conv2dWeightGradParams,
    reuse: ColsReuse,
) -> Vec<f32> {
    let (n_n, ci_n, _, _) = xs;
    let (_, co_n, oh_n, ow_n) = gs;
    if kernel_covers_input(xs, (p.kernel_h, p.kernel_w), p.conv) {
        // dw[co, t] = sum_n gy[n, co] * x[n, t]: one matmul over the batch (gy read
        // transposed), no im2col.
        let k = ci_n * p.kernel_h * p.kernel_w;
        let mut dw = pool::take(co_n * k);
        gemm(
            co_n,
            k,
            n_n,
            MatRef::row_major(gy, co_n).t(),
            MatRef::row_major(x, k),
            &mut dw,
            k,
            false,
        );
        return dw;
    }
    let direct = conv_direct::DirectConv {
        x: xs,
        c_out: co_n,
        kernel: (p.kernel_h, p.kernel_w),
        stride: p.conv.stride,
        padding: p.conv.padding,
        out: (oh_n, ow_n),
    };
    if let Some(dw) = conv_direct::conv2d_weight_grad(x, gy, direct) {
        return dw;
    }
    let cols = reuse.cols(|| im2col(x, xs, p.kernel_h, p.kernel_w, p.conv, oh_n, ow_n));
    let gy_cn = swap_outer_dims(gy, n_n, co_n, oh_n * ow_n);
    let (k, np) = (ci_n * p.kernel_h * p.kernel_w, n_n * oh_n * ow_n);
    let mut dw = pool::take(co_n * k);
    gemm(
        co_n,
        k,
        np,
        MatRef::row_major(&gy_cn, np),
        MatRef::row_major(&cols, np).t(),
        &mut dw,
        k,
        false,
    );
    reuse.done(cols);
    pool::recycle(gy_cn);
    dw
}

impl Tensor {
    /// 2-D convolution (cross-correlation) with PyTorch's semantics; no bias.
    pub fn conv2d(&self, weight: &Tensor, params: Conv2dParams) -> Result<Tensor> {
        // The weight gradient of a recorded op lowers this same input: keep the lowering.
        let keep = crate::autograd::is_grad_enabled() && weight.is_tracked();
        self.conv2d_keeping(weight, params, keep)
    }

    /// [`Tensor::conv2d`], keeping the CPU im2col of `self` for a `conv2d_weight_grad` of the
    /// same input and geometry when `keep_cols` (see `cols_cache`).
    pub(crate) fn conv2d_keeping(
        &self,
        weight: &Tensor,
        params: Conv2dParams,
        keep_cols: bool,
    ) -> Result<Tensor> {
        self.check_same_device("conv2d", weight)?;
        if params.stride == 0 {
            return Err(Error::invalid(
                "conv2d",
                format!(
                    "stride must be at least 1 (input {:?}, weight {:?})",
                    self.shape(),
                    weight.shape()
                ),
            ));
        }
        let (n, ci, h, w) = self.shape().dims4("conv2d")?;
        let (co, wci, kh, kw) = weight.shape().dims4("conv2d")?;
        if wci != ci {
            return Err(Error::ShapeMismatch {
                op: "conv2d",
                lhs: self.shape().clone(),
                rhs: weight.shape().clone(),
                hint: format!("input has {ci} channels but the weight expects {wci} (weight is [C_out, C_in, KH, KW])"),
            });
        }
        let (Some(oh), Some(ow)) = (params.out_size(h, kh), params.out_size(w, kw)) else {
            return Err(Error::ShapeMismatch {
                op: "conv2d",
                lhs: self.shape().clone(),
                rhs: weight.shape().clone(),
                hint: format!(
                    "kernel {kh}x{kw} is larger than the padded input {}x{}",
                    h + 2 * params.padding,
                    w + 2 * params.padding
                ),
            });
        };
        let _t = profile::op("conv2d");
        let storage = match (&*self.storage(), &*weight.storage()) {
            (Storage::Cpu(x), Storage::Cpu(wt)) => Storage::Cpu(conv2d_cpu_gemm(
                x,
                (n, ci, h, w),
                wt,
                (co, ci, kh, kw),
                params,
                oh,
                ow,
                ColsReuse::of(self, (kh, kw), params, (oh, ow), keep_cols),
            )),
            (Storage::Gpu(x), Storage::Gpu(wt)) => {
                let geo = conv_geometry(
                    (n, ci, h, w),
                    co,
                    (kh, kw),
                    params.stride,
                    params.padding,
                    (oh, ow),
                );
                Storage::Gpu(conv2d_gpu(x, wt, geo)?)
            }
            (a, b) => return Err(Error::device_mismatch("conv2d", a, b)),
        };
        Ok(Tensor::from_op(
            storage,
            Shape::from([n, co, oh, ow]),
            Op::Conv2d {
                input: self.clone(),
                weight: weight.clone(),
                params,
            },
        ))
    }

    /// conv2d followed by a per-channel bias (`bias: [C_out]`).
    pub fn conv2d_bias(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        params: Conv2dParams,
    ) -> Result<Tensor> {
        let y = self.conv2d(weight, params)?;
        add_channel_bias(y, bias)
    }

    /// The gradient of `sum(conv2d(self, w) * grad_output)` with respect to `w`, for a kernel of
    /// `params.kernel_h x params.kernel_w`. Differentiable in both `self` and `grad_output`.
    pub fn conv2d_weight_grad(
        &self,
        grad_output: &Tensor,
        params: Conv2dWeightGradParams,
    ) -> Result<Tensor> {
        self.check_same_device("conv2d_weight_grad", grad_output)?;
        if params.conv.stride == 0 {
            return Err(Error::invalid(
                "conv2d_weight_grad",
                format!(
                    "stride must be at least 1 (input {:?}, grad_output {:?})",
                    self.shape(),
                    grad_output.shape()
                ),
            ));
        }
        let (n, ci, h, w) = self.shape().dims4("conv2d_weight_grad")?;
        let (gn, co, oh, ow) = grad_output.shape().dims4("conv2d_weight_grad")?;
        let expect = (
            params.conv.out_size(h, params.kernel_h),
            params.conv.out_size(w, params.kernel_w),
        );
        if gn != n || expect != (Some(oh), Some(ow)) {
            return Err(Error::ShapeMismatch {
                op: "conv2d_weight_grad",
                lhs: self.shape().clone(),
                rhs: grad_output.shape().clone(),
                hint: format!(
                    "grad_output must be [{n}, C_out, {:?}, {:?}]",
                    expect.0, expect.1
                ),
            });
        }
        let _t = profile::op("conv2d_weight_grad");
        let storage = match (&*self.storage(), &*grad_output.storage()) {
            (Storage::Cpu(x), Storage::Cpu(g)) => Storage::Cpu(conv2d_weight_grad_cpu_gemm(
                x,
                (n, ci, h, w),
                g,
                (n, co, oh, ow),
                params,
                ColsReuse::of(
                    self,
                    (params.kernel_h, params.kernel_w),
                    params.conv,
                    (oh, ow),
                    false,
                ),
            )),
            (Storage::Gpu(x), Storage::Gpu(g)) => {
                let geo = conv_geometry(
                    (n, ci, h, w),
                    co,
                    (params.kernel_h, params.kernel_w),
                    params.conv.stride,
                    params.conv.padding,
                    (oh, ow),
                );
                Storage::Gpu(conv2d_weight_grad_gpu(x, g, geo)?)
            }
            (a, b) => return Err(Error::device_mismatch("conv2d_weight_grad", a, b)),
        };
        Ok(Tensor::from_op(
            storage,
            Shape::from([co, ci, params.kernel_h, params.kernel_w]),
            Op::Conv2dWeightGrad {
                input: self.clone(),
                grad_output: grad_output.clone(),
                params,
            },
        ))
    }
}

/// Adds `bias: [C]` to `y: [N, C, H, W]` (broadcast over N, H, W).
pub(crate) fn add_channel_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    match bias {
        None => Ok(y),
        Some(b) => {
            let c = b.elem_count();
            y.add(&b.reshape([1, c, 1, 1])?)
        }
    }
}

/// Backward of `y = conv2d(x, w)`: returns `(dx, dw)` for the output gradient `g`, each only
/// for an operand autodiff tracks (the data batch fed to a critic needs no gradient).
pub(crate) fn conv2d_backward(
    x: &Tensor,
    w: &Tensor,
    params: Conv2dParams,
    g: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let (_, _, kh, kw) = w.shape().dims4("conv2d backward")?;
    let dx = match x.is_tracked() {
        true => Some(conv2d_input_grad(x.shape(), w, params, g)?),
        false => None,
    };
    let dw = match w.is_tracked() {
        true => Some(x.conv2d_weight_grad(
            g,
            Conv2dWeightGradParams {
                conv: params,
                kernel_h: kh,
                kernel_w: kw,
            },
        )?),
        false => None,
    };
    Ok((dx, dw))
}

/// `dx` of `y = conv2d(x, w)` for an input of shape `x_shape`: a transposed convolution.
fn conv2d_input_grad(
    x_shape: &Shape,
    w: &Tensor,
    params: Conv2dParams,
    g: &Tensor,
) -> Result<Tensor> {
    let (_, _, h, wd) = x_shape.dims4("conv2d backward")?;
    let (_, _, kh, kw) = w.shape().dims4("conv2d backward")?;
    let (_, _, oh, ow) = g.shape().dims4("conv2d backward")?;
    // conv_transpose2d would produce (OH-1)*s - 2p + K rows; the rest (< stride) come from
    // the floor in conv2d's output size, and output_padding adds them back as zeros' adjoint.
    // (written so no intermediate goes negative: the base size itself can be below zero when
    // the padding exceeds the image, e.g. H = 1, K = 1, p = 3, s = 4)
    let extra_h = (h + 2 * params.padding) - ((oh - 1) * params.stride + kh);
    let extra_w = (wd + 2 * params.padding) - ((ow - 1) * params.stride + kw);
    let t_params = ConvTranspose2dParams {
        stride: params.stride,
        padding: params.padding,
        output_padding: [extra_h, extra_w],
    };
    g.conv_transpose2d(w, t_params)
}

/// Backward of `dw = conv2d_weight_grad(x, gy)` for the incoming gradient `gg` (shaped like
/// dw). `dw` is bilinear in `(x, gy)`, so each gradient is the op with the other held fixed:
/// `d x = conv_transpose2d(gy, gg)` (restoring x's size), `d gy = conv2d(x, gg)`.
pub(crate) fn conv2d_weight_grad_backward(
    x: &Tensor,
    gy: &Tensor,
    params: Conv2dWeightGradParams,
    gg: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let dx = match x.is_tracked() {
        true => Some(conv2d_input_grad(x.shape(), gg, params.conv, gy)?),
        false => None,
    };
    let dgy = match gy.is_tracked() {
        true => Some(x.conv2d(gg, params.conv)?),
        false => None,
    };
    Ok((dx, dgy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::conv_rows;
    use crate::tensor::Rng;

    fn rand(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()
    }

    fn close(what: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{what}[{i}]: fast path {g}, naive {w}"
            );
        }
    }

    /// Every fast path (im2col + GEMM, the AVX-512 direct kernel, the single matmul) against
    /// the naive loops, on odd shapes.
    #[test]
    fn gemm_kernels_match_naive_kernels() {
        let mut rng = Rng::new(7);
        let (mut direct_forward, mut direct_weight_grad) = (0, 0);
        let (mut row_forward, mut row_weight_grad) = (0, 0);
        // (n, ci, h, w, co, k, stride, padding)
        for (n, ci, h, w, co, k, s, pad) in [
            (3, 5, 7, 9, 4, 3, 2, 1),
            (1, 1, 28, 28, 6, 4, 2, 1),
            (2, 7, 5, 5, 3, 5, 1, 2),
            (3, 2, 9, 7, 5, 1, 3, 0),
            // At least MIN_TAPS taps: the direct kernel where the CPU has AVX-512 (a partial
            // last group of 8 positions, a partial last panel of 32 channels, stride 3).
            (3, 9, 11, 10, 37, 3, 2, 1),
            (2, 16, 9, 9, 33, 4, 3, 0),
            // More taps than a tap block (256): partial sums kept between blocks, a partial
            // last block; and more position groups than one task takes (128).
            (3, 21, 9, 8, 35, 4, 2, 1),
            (2, 17, 130, 129, 18, 4, 1, 2),
            // 256+ output positions and 16+ channels: the direct weight gradient (odd sizes,
            // a partial channel panel, 81 and 72 taps).
            (2, 9, 30, 27, 20, 3, 2, 1),
            (1, 8, 20, 19, 40, 3, 1, 1),
            // Few taps over rows at least 8 wide: the row kernels (conv_rows) of the forward
            // (under 64 taps) and the weight gradient (at most 64): masked row tails (OW 18,
            // 29, 17), a full row of 16, stride 1 and 3, channels not a multiple of their
            // tiles' 6 and 3, taps not a multiple of 8, one channel, one image, more images
            // than tasks, a partial last group of 4 row vectors.
            (2, 3, 40, 37, 20, 4, 2, 1),
            (3, 1, 61, 58, 17, 4, 2, 1),
            (1, 3, 18, 16, 5, 3, 1, 1),
            (9, 2, 27, 50, 1, 4, 3, 2),
            (5, 7, 19, 33, 2, 3, 2, 0),
            // Few taps over rows narrower than 8: the weight gradient split over the positions
            // (partial sums added in order).
            (40, 3, 12, 12, 20, 4, 2, 1),
            // The kernel covers the whole input (1x1 output): the single-matmul path, and a
            // padded neighbour that must not take it.
            (3, 5, 4, 4, 7, 4, 1, 0),
            (2, 6, 3, 3, 5, 3, 2, 0),
            (2, 6, 3, 3, 5, 3, 2, 1),
        ] {
            let p = Conv2dParams {
                stride: s,
                padding: pad,
            };
            let (oh, ow) = (p.out_size(h, k).unwrap(), p.out_size(w, k).unwrap());
            let geometry = conv_direct::DirectConv {
                x: (n, ci, h, w),
                c_out: co,
                kernel: (k, k),
                stride: s,
                padding: pad,
                out: (oh, ow),
            };
            direct_forward += conv_direct::conv2d_runs_direct(&geometry) as usize;
            direct_weight_grad += conv_direct::weight_grad_runs_direct(&geometry) as usize;
            row_weight_grad += conv_rows::weight_grad_runs(&geometry) as usize;
            row_forward += conv_rows::conv2d_runs(&geometry) as usize;
            let x = rand(&mut rng, n * ci * h * w);
            let wt = rand(&mut rng, co * ci * k * k);
            let what = format!("conv2d n{n} ci{ci} {h}x{w} co{co} k{k} s{s} p{pad}");
            close(
                &what,
                &conv2d_cpu_gemm(
                    &x,
                    (n, ci, h, w),
                    &wt,
                    (co, ci, k, k),
                    p,
                    oh,
                    ow,
                    ColsReuse::NONE,
                ),
                &conv2d_cpu_naive(&x, (n, ci, h, w), &wt, (co, ci, k, k), p, oh, ow),
            );
            let gy = rand(&mut rng, n * co * oh * ow);
            let wp = Conv2dWeightGradParams {
                conv: p,
                kernel_h: k,
                kernel_w: k,
            };
            close(
                &format!("weight grad {what}"),
                &conv2d_weight_grad_cpu_gemm(
                    &x,
                    (n, ci, h, w),
                    &gy,
                    (n, co, oh, ow),
                    wp,
                    ColsReuse::NONE,
                ),
                &conv2d_weight_grad_cpu_naive(&x, (n, ci, h, w), &gy, (n, co, oh, ow), wp),
            );
        }
        // The table must keep exercising the direct kernels where this CPU runs them.
        assert!(
            !conv_direct::available()
                || (direct_forward >= row_forward + 2
                    && row_forward >= 5
                    && direct_weight_grad >= row_weight_grad + 3
                    && row_weight_grad >= 5),
            "direct kernel cases: forward {direct_forward} (by rows {row_forward}), weight \
             gradient {direct_weight_grad} (by rows {row_weight_grad})"
        );
    }

    /// A recorded forward keeps its im2col, the weight gradient takes it and matches the
    /// naive loops; after an in-place write to the input the weight gradient lowers afresh
    /// (and still matches); with grad mode off nothing is kept.
    #[test]
    fn kept_im2col_is_taken_by_the_weight_gradient_and_not_used_after_a_write() {
        use crate::backend::Device;
        let mut rng = Rng::new(11);
        let (n, ci, h, co, k) = (3, 5, 9, 4, 3);
        let p = Conv2dParams {
            stride: 2,
            padding: 1,
        };
        let wp = Conv2dWeightGradParams {
            conv: p,
            kernel_h: k,
            kernel_w: k,
        };
        let oh = p.out_size(h, k).unwrap();
        let dev = Device::Cpu;
        let x = Tensor::randn(0.0, 1.0, [n, ci, h, h], &mut rng, &dev);
        let w = Tensor::randn(0.0, 1.0, [co, ci, k, k], &mut rng, &dev);
        w.set_requires_grad(true);
        let gy = Tensor::randn(0.0, 1.0, [n, co, oh, oh], &mut rng, &dev);
        let naive = |x: &Tensor| {
            conv2d_weight_grad_cpu_naive(
                &x.to_vec(),
                (n, ci, h, h),
                &gy.to_vec(),
                (n, co, oh, oh),
                wp,
            )
        };
        let key = |x: &Tensor| ColsReuse::of(x, (k, k), p, (oh, oh), false).key.unwrap();

        let _y = x.conv2d(&w, p).unwrap();
        assert!(
            cols_cache::contains(&key(&x)),
            "a recorded forward keeps its im2col"
        );
        let dw = x.conv2d_weight_grad(&gy, wp).unwrap();
        assert!(
            !cols_cache::contains(&key(&x)),
            "the weight gradient took it"
        );
        close("dw from the kept im2col", &dw.to_vec(), &naive(&x));

        let _y = x.conv2d(&w, p).unwrap();
        let before_write = key(&x);
        assert!(cols_cache::contains(&before_write));
        x.write_storage(|s| {
            if let Storage::Cpu(v) = s {
                v.iter_mut().for_each(|v| *v = 2.0 * *v + 1.0);
            }
        })
        .unwrap();
        assert_ne!(key(&x), before_write, "a write changes the key");
        let dw = x.conv2d_weight_grad(&gy, wp).unwrap();
        close("dw after an in-place write", &dw.to_vec(), &naive(&x));
        assert!(
            cols_cache::take(&before_write).is_some(),
            "the stale entry was not used"
        );

        {
            let _guard = crate::autograd::no_grad();
            x.conv2d(&w, p).unwrap();
        }
        assert!(
            !cols_cache::contains(&key(&x)),
            "nothing is kept without grad mode"
        );
    }
}
