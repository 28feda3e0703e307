//! conv_transpose2d: PyTorch's transposed convolution (`torch.nn.functional.conv_transpose2d`,
//! no dilation or groups), the adjoint of conv2d with respect to its input.
//!
//! Shapes: `x: [N, C_in, H, W]`, `weight: [C_in, C_out, KH, KW]` (PyTorch's layout for
//! transposed convs), `out: [N, C_out, OH, OW]` with
//! `OH = (H - 1)*stride - 2*padding + KH + output_padding[0]`, likewise OW.
//! Index formula (scatter form; positions outside the output are dropped):
//! `out[n, co, ih*s - p + kh, iw*s - p + kw] += x[n, ci, ih, iw] * w[ci, co, kh, kw]`
//!
//! Backward (autograd/rules.rs):
//! - `dx = conv2d(g, w)` with the same stride and padding. output_padding needs no term: the
//!   extra rows it adds are exactly the ones conv2d's floor division ignores.
//! - `dw = conv2d_weight_grad(g, x)`: with the roles of input and output swapped, conv2d's
//!   weight gradient `[C_out', C_in', ..]` is `[C_in, C_out, ..]` here, the transposed layout.
//!
//! GPU kernel: `shaders/conv_transpose2d.wgsl`, an implicit GEMM in gather form (each output
//! pixel collects the input pixels the scatter form would send it), split by stride phase so
//! no multiply-add is by a structural zero.

use super::conv2d::{conv_geometry, valid_range, Conv2dParams, Conv2dWeightGradParams, GEMM_TILE};
use crate::backend::cpu::conv_direct;
use crate::backend::cpu::gemm::{gemm, MatRef};
use crate::backend::cpu::{pool, swap_outer_dims, SendPtr};
use crate::backend::gpu::params::ConvParams;
use crate::backend::gpu::{groups_for, Access, KernelSpec, Shader, WORKGROUP};
use crate::backend::{GpuBuffer, Storage};
use crate::error::{Error, Result};
use crate::ops::Op;
use crate::profile::{self, OpCost};
use crate::tensor::{Shape, Tensor};
use rayon::prelude::*;

static CONV_TRANSPOSE2D_WGSL: Shader = Shader {
    name: "conv_transpose2d",
    source: include_str!("../../shaders/conv_transpose2d.wgsl"),
};
const CONV_TRANSPOSE2D_FORWARD: KernelSpec = KernelSpec {
    shader: &CONV_TRANSPOSE2D_WGSL,
    entry: "conv_transpose2d_forward",
    storage: &[(0, Access::Read), (1, Access::Read), (2, Access::ReadWrite)],
    uniform: 3,
};

const CONV_TRANSPOSE2D_THREAD: KernelSpec = KernelSpec {
    shader: &CONV_TRANSPOSE2D_WGSL,
    entry: "conv_transpose2d_thread",
    storage: &[(0, Access::Read), (1, Access::Read), (2, Access::ReadWrite)],
    uniform: 3,
};
/// Below this many output channels, one thread per output element beats 64-row GEMM tiles.
const FEW_CHANNELS: u32 = 16;

/// conv_transpose2d on the GPU: one implicit GEMM per stride phase (see the shader), each
/// `[C_out, C_in*|taps|] x [C_in*|taps|, N*|pixels of the phase|]`, all in one dispatch of
/// `(ceil(N*ceil(OH/s)*ceil(OW/s) / 64), ceil(C_out / 64), s*s)` workgroups.
fn conv_transpose2d_gpu(
    x: &GpuBuffer,
    w: &GpuBuffer,
    geo: ConvParams,
    output_padding: [usize; 2],
) -> Result<GpuBuffer> {
    let dev = x.device();
    if geo.h == 1 && geo.w == 1 && geo.padding == 0 && output_padding == [0, 0] {
        // A 1x1 input (a DCGAN generator's first layer, from z): each input pixel meets each
        // tap once, so out[n, (co, kh, kw)] = x[n, :] @ w[:, (co, kh, kw)], one matmul. (The
        // gather form would skip all but one tap per output pixel.)
        let (k, cols) = (geo.c_in as usize, (geo.c_out * geo.kh * geo.kw) as usize);
        return crate::ops::matmul::matmul_gpu(
            x,
            w,
            crate::ops::MatmulLayout::default(),
            &Shape::from(()),
            &[],
            &[],
            geo.n as usize,
            k,
            cols,
        );
    }
    if geo.c_out < FEW_CHANNELS {
        let total = (geo.n * geo.c_out * geo.oh * geo.ow) as usize;
        let out = dev.alloc("conv_transpose2d", total);
        let groups = groups_for(total, WORKGROUP);
        let spec = &CONV_TRANSPOSE2D_THREAD;
        dev.dispatch("conv_transpose2d", spec, &[], &geo, &[w, x, &out], groups);
        dev.check("conv_transpose2d")?;
        return Ok(out);
    }
    let s = geo.stride as usize;
    let m = geo.c_out as usize;
    let n = geo.n as usize * (geo.oh as usize).div_ceil(s) * (geo.ow as usize).div_ceil(s);
    let out = dev.alloc("conv_transpose2d", m * (geo.n * geo.oh * geo.ow) as usize);
    dev.dispatch(
        "conv_transpose2d",
        &CONV_TRANSPOSE2D_FORWARD,
        &[],
        &geo,
        &[w, x, &out],
        [
            n.div_ceil(GEMM_TILE) as u32,
            m.div_ceil(GEMM_TILE) as u32,
            (s * s) as u32,
        ],
    );
    dev.check("conv_transpose2d")?;
    Ok(out)
}

/// Stride, padding and output padding of a transposed convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvTranspose2dParams {
    /// Step between input positions in the output, >= 1.
    pub stride: usize,
    /// Rows/columns removed from every side of the full output.
    pub padding: usize,
    /// Extra rows and columns `[h, w]` added at the bottom/right; each must be < stride.
    pub output_padding: [usize; 2],
}

impl Default for ConvTranspose2dParams {
    fn default() -> Self {
        ConvTranspose2dParams {
            stride: 1,
            padding: 0,
            output_padding: [0, 0],
        }
    }
}

impl ConvTranspose2dParams {
    /// Validated parameters with the same output padding on both axes.
    pub fn new(stride: usize, padding: usize, output_padding: usize) -> Result<Self> {
        let p = ConvTranspose2dParams {
            stride,
            padding,
            output_padding: [output_padding, output_padding],
        };
        p.validate()?;
        Ok(p)
    }

    fn validate(&self) -> Result<()> {
        if self.stride == 0 {
            return Err(Error::invalid(
                "conv_transpose2d",
                "stride must be at least 1",
            ));
        }
        if self.output_padding.iter().any(|&o| o >= self.stride) {
            return Err(Error::invalid(
                "conv_transpose2d",
                format!(
                    "output_padding {:?} must be smaller than stride {}",
                    self.output_padding, self.stride
                ),
            ));
        }
        Ok(())
    }

    /// `(in - 1)*s - 2p + k + output_padding[axis]`, or `None` if that is not positive.
    pub fn out_size(&self, input: usize, kernel: usize, axis: usize) -> Option<usize> {
        ((input.max(1) - 1) * self.stride + kernel + self.output_padding[axis])
            .checked_sub(2 * self.padding)
            .filter(|&o| o > 0)
    }

    /// The conv2d this op is the adjoint of.
    pub fn as_conv(&self) -> Conv2dParams {
        Conv2dParams {
            stride: self.stride,
            padding: self.padding,
        }
    }
}

// ---- cost (profiler) -------------------------------------------------------------------------

/// FLOPs of conv_transpose2d: `2 * N * C_in * H * W * C_out * KH * KW` (every input pixel
/// times every tap; a multiply-add is 2), the count of the conv2d it is the adjoint of.
pub fn conv_transpose2d_flops(
    n: usize,
    c_in: usize,
    (h, w): (usize, usize),
    c_out: usize,
    (kh, kw): (usize, usize),
) -> f64 {
    2.0 * (n * c_in * h * w) as f64 * (c_out * kh * kw) as f64
}

/// Cost of conv_transpose2d, `x: [N, C_in, H, W]`, `w: [C_in, C_out, KH, KW]`:
/// [`conv_transpose2d_flops`]; input and weight read, output written.
pub fn conv_transpose2d_cost(x: &Shape, w: &Shape, out: &Shape) -> OpCost {
    let d = x.dims();
    let (c_out, kh, kw) = (w.dims()[1], w.dims()[2], w.dims()[3]);
    OpCost::copy(&[x, w], out).with_flops(conv_transpose2d_flops(
        d[0],
        d[1],
        (d[2], d[3]),
        c_out,
        (kh, kw),
    ))
}

/// Scatter form, one `(n, co)` output plane per task so no two tasks write the same memory.
#[allow(clippy::too_many_arguments)]
// The plain loop is the reference the GEMM path is tested against (see `tests` below).
#[cfg_attr(not(test), allow(dead_code))]
fn conv_transpose2d_cpu_naive(
    x: &[f32],
    xs: (usize, usize, usize, usize),
    w: &[f32],
    ws: (usize, usize, usize, usize),
    p: ConvTranspose2dParams,
    oh_n: usize,
    ow_n: usize,
) -> Vec<f32> {
    let (n_n, ci_n, h, wd) = xs;
    let (_, co_n, kh_n, kw_n) = ws;
    let (s, pad) = (p.stride, p.padding as isize);
    let mut out = vec![0.0f32; n_n * co_n * oh_n * ow_n];
    out.par_chunks_mut((oh_n * ow_n).max(1))
        .enumerate()
        .for_each(|(plane, out_plane)| {
            let (n, co) = (plane / co_n, plane % co_n);
            for ci in 0..ci_n {
                let x_plane = &x[(n * ci_n + ci) * h * wd..][..h * wd];
                for kh in 0..kh_n {
                    // input rows ih whose output row ih*s - p + kh lands inside [0, OH)
                    let ih_range = valid_range(h, oh_n, s, kh as isize - pad);
                    for kw in 0..kw_n {
                        let wv = w[((ci * co_n + co) * kh_n + kh) * kw_n + kw];
                        let iw_range = valid_range(wd, ow_n, s, kw as isize - pad);
                        for ih in ih_range.clone() {
                            let oh = ((ih * s + kh) as isize - pad) as usize;
                            let x_row = &x_plane[ih * wd..][..wd];
                            let out_row = &mut out_plane[oh * ow_n..][..ow_n];
                            for iw in iw_range.clone() {
                                let ow = ((iw * s + kw) as isize - pad) as usize;
                                out_row[ow] += wv * x_row[iw];
                            }
                        }
                    }
                }
            }
        });
    out
}

/// conv_transpose2d as one GEMM plus col2im:
/// `cols[C_out*KH*KW, N*H*W] = W^T @ x'` with `W: [C_in, C_out*KH*KW]` (read transposed, no
/// copy) and `x' = x` as `[C_in, N*H*W]`; then the scatter
/// `out[n, co, ih*s - p + kh, iw*s - p + kw] += cols[(co*KH + kh)*KW + kw][n*H*W + ih*W + iw]`,
/// ([`col2im`]). Same result as [`conv_transpose2d_cpu_naive`].
#[allow(clippy::too_many_arguments)]
fn conv_transpose2d_cpu_gemm(
    x: &[f32],
    xs: (usize, usize, usize, usize),
    w: &[f32],
    ws: (usize, usize, usize, usize),
    p: ConvTranspose2dParams,
    oh_n: usize,
    ow_n: usize,
) -> Vec<f32> {
    let (n_n, ci_n, h, wd) = xs;
    let (_, co_n, kh_n, kw_n) = ws;
    let (s, pad) = (p.stride, p.padding as isize);
    let (k, nhw) = (co_n * kh_n * kw_n, n_n * h * wd);
    if h == 1 && wd == 1 && p.padding == 0 && (oh_n, ow_n) == (kh_n, kw_n) {
        // A 1x1 input (a generator's noise) without padding or extra output: every tap lands
        // on its own output pixel, out[n, (co, kh, kw)] = sum_ci x[n, ci] * w[ci, (co, kh, kw)],
        // one matmul straight into the output layout (no col2im).
        let mut out = pool::take(n_n * k);
        gemm(
            n_n,
            k,
            ci_n,
            MatRef::row_major(x, ci_n),
            MatRef::row_major(w, k),
            &mut out,
            k,
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
    if let Some(out) = conv_direct::conv_transpose2d(x, w, direct) {
        return out;
    }
    let x_cn = swap_outer_dims(x, n_n, ci_n, h * wd);
    let mut cols = pool::take(k * nhw);
    gemm(
        k,
        nhw,
        ci_n,
        MatRef::row_major(w, k).t(),
        MatRef::row_major(&x_cn, nhw),
        &mut cols,
        nhw,
        false,
    );
    let out = col2im(
        &cols,
        (n_n, co_n, h, wd),
        (kh_n, kw_n),
        s,
        pad,
        (oh_n, ow_n),
    );
    pool::recycle(cols);
    pool::recycle(x_cn);
    out
}

/// col2im, the scatter half of [`conv_transpose2d_cpu_gemm`]:
/// `out[n, co, ih*s - p + kh, iw*s - p + kw] += cols[(co*KH + kh)*KW + kw][n*H*W + ih*W + iw]`
/// with `cols: [C_out*KH*KW, N*H*W]`, `out: [N, C_out, OH, OW]`.
///
/// Tasks take ranges of output channels; for each `co` a task walks the images in order, so
/// each of its `KH*KW` rows of `cols` is read front to back (plane after plane in the output's
/// own order would jump `N*H*W` values between consecutive planes: one TLB miss per run when
/// `cols` is tens of MiB). Each plane is zeroed and summed while it sits in L1.
fn col2im(
    cols: &[f32],
    (n_n, co_n, h, wd): (usize, usize, usize, usize),
    (kh_n, kw_n): (usize, usize),
    s: usize,
    pad: isize,
    (oh_n, ow_n): (usize, usize),
) -> Vec<f32> {
    let (plane, nhw) = (oh_n * ow_n, n_n * h * wd);
    let mut out = pool::take(n_n * co_n * plane);
    // Which input rows (columns) each kernel row (column) maps inside the output: the same
    // for every plane. For columns also the first output column hit; later ones step by s.
    let ih_ranges: Vec<_> = (0..kh_n)
        .map(|kh| valid_range(h, oh_n, s, kh as isize - pad))
        .collect();
    let iw_ranges: Vec<_> = (0..kw_n)
        .map(|kw| {
            let r = valid_range(wd, ow_n, s, kw as isize - pad);
            let ow0 = ((r.start * s + kw) as isize - pad).max(0) as usize;
            (r, ow0)
        })
        .collect();
    let out_ptr = SendPtr(out.as_mut_ptr());
    let per_task = co_n.div_ceil(4 * rayon::current_num_threads()).max(1);
    (0..co_n)
        .into_par_iter()
        .with_min_len(per_task)
        .for_each(|co| {
            for n in 0..n_n {
                // SAFETY: plane (n, co) lies inside `out` and is written only by the one task
                // that owns this co; no other reference to `out` exists while tasks run.
                let out_plane = unsafe {
                    std::slice::from_raw_parts_mut(
                        out_ptr.get().add((n * co_n + co) * plane),
                        plane,
                    )
                };
                out_plane.fill(0.0);
                for (kh, ih_range) in ih_ranges.iter().enumerate() {
                    for (kw, (iw_range, ow0)) in iw_ranges.iter().enumerate() {
                        if iw_range.is_empty() {
                            continue;
                        }
                        let col =
                            &cols[((co * kh_n + kh) * kw_n + kw) * nhw + n * h * wd..][..h * wd];
                        for ih in ih_range.clone() {
                            let oh = ((ih * s + kh) as isize - pad) as usize;
                            let out_row = out_plane[oh * ow_n + ow0..oh * ow_n + ow_n].iter_mut();
                            let col_row = &col[ih * wd..][iw_range.clone()];
                            for (o, &v) in out_row.step_by(s).zip(col_row) {
                                *o += v;
                            }
                        }
                    }
                }
            }
        });
    out
}

impl Tensor {
    /// Transposed 2-D convolution with PyTorch's semantics and weight layout; no bias.
    pub fn conv_transpose2d(
        &self,
        weight: &Tensor,
        params: ConvTranspose2dParams,
    ) -> Result<Tensor> {
        self.check_same_device("conv_transpose2d", weight)?;
        if let Err(Error::InvalidParam { op, msg }) = params.validate() {
            return Err(Error::InvalidParam {
                op,
                msg: format!(
                    "{msg} (input {:?}, weight {:?})",
                    self.shape(),
                    weight.shape()
                ),
            });
        }
        let (n, ci, h, w) = self.shape().dims4("conv_transpose2d")?;
        let (wci, co, kh, kw) = weight.shape().dims4("conv_transpose2d")?;
        if wci != ci {
            return Err(Error::ShapeMismatch {
                op: "conv_transpose2d",
                lhs: self.shape().clone(),
                rhs: weight.shape().clone(),
                hint: format!("input has {ci} channels but the weight expects {wci} (weight is [C_in, C_out, KH, KW])"),
            });
        }
        let (Some(oh), Some(ow)) = (params.out_size(h, kh, 0), params.out_size(w, kw, 1)) else {
            return Err(Error::ShapeMismatch {
                op: "conv_transpose2d",
                lhs: self.shape().clone(),
                rhs: weight.shape().clone(),
                hint: format!("padding {} leaves no output", params.padding),
            });
        };
        let _t = profile::op("conv_transpose2d");
        let storage = match (&*self.storage(), &*weight.storage()) {
            (Storage::Cpu(x), Storage::Cpu(wt)) => Storage::Cpu(conv_transpose2d_cpu_gemm(
                x,
                (n, ci, h, w),
                wt,
                (ci, co, kh, kw),
                params,
                oh,
                ow,
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
                Storage::Gpu(conv_transpose2d_gpu(x, wt, geo, params.output_padding)?)
            }
            (a, b) => return Err(Error::device_mismatch("conv_transpose2d", a, b)),
        };
        Ok(Tensor::from_op(
            storage,
            Shape::from([n, co, oh, ow]),
            Op::ConvTranspose2d {
                input: self.clone(),
                weight: weight.clone(),
                params,
            },
        ))
    }

    /// conv_transpose2d followed by a per-channel bias (`bias: [C_out]`).
    pub fn conv_transpose2d_bias(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        params: ConvTranspose2dParams,
    ) -> Result<Tensor> {
        let y = self.conv_transpose2d(weight, params)?;
        super::conv2d::add_channel_bias(y, bias)
    }
}

/// Backward of `y = conv_transpose2d(x, w)`: returns `(dx, dw)` for the output gradient `g`,
/// each only for an operand autodiff tracks.
pub(crate) fn conv_transpose2d_backward(
    x: &Tensor,
    w: &Tensor,
    params: ConvTranspose2dParams,
    g: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let (_, _, kh, kw) = w.shape().dims4("conv_transpose2d backward")?;
    let conv = params.as_conv();
    // dw lowers g exactly as dx's conv2d does: keep that im2col for it.
    let dx = match x.is_tracked() {
        true => Some(g.conv2d_keeping(w, conv, w.is_tracked())?),
        false => None,
    };
    let dw = match w.is_tracked() {
        true => Some(g.conv2d_weight_grad(
            x,
            Conv2dWeightGradParams {
                conv,
                kernel_h: kh,
                kernel_w: kw,
            },
        )?),
        false => None,
    };
    Ok((dx, dw))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Rng;

    /// Every fast path (GEMM + col2im, the direct kernel by stride phase, the single matmul)
    /// against the naive scatter loops, on odd shapes.
    #[test]
    fn gemm_kernel_matches_naive_kernel() {
        let mut rng = Rng::new(11);
        let mut direct_cases = 0;
        // (n, ci, h, w, co, k, stride, padding, output_padding)
        for (n, ci, h, w, co, k, s, pad, op) in [
            (3, 5, 7, 9, 4, 3, 2, 1, 1),
            // A 1x1 input without padding: the single-matmul path (and its neighbours that
            // must not take it: padding, output padding).
            (2, 6, 1, 1, 7, 7, 1, 0, 0),
            (3, 5, 1, 1, 4, 4, 2, 0, 0),
            (2, 5, 1, 1, 3, 4, 2, 1, 0),
            (2, 5, 1, 1, 3, 3, 2, 0, 1),
            (1, 4, 7, 7, 1, 4, 2, 1, 0),
            // Direct kernel by stride phase (AVX-512): at least MIN_TAPS taps per phase and
            // 16 output channels; odd sizes, partial tiles, output padding, stride 3, k < 2s.
            (3, 33, 7, 6, 37, 4, 2, 1, 0),
            (2, 17, 5, 5, 19, 4, 2, 1, 1),
            (2, 64, 4, 3, 16, 5, 3, 2, 2),
            (2, 70, 3, 4, 18, 3, 2, 0, 1),
            // More taps per phase (80 * 2 * 2) than a tap block (256).
            (2, 80, 5, 6, 20, 4, 2, 1, 0),
            (2, 3, 5, 4, 2, 5, 3, 2, 2),
        ] {
            let p = ConvTranspose2dParams {
                stride: s,
                padding: pad,
                output_padding: [op, op],
            };
            let (oh, ow) = (p.out_size(h, k, 0).unwrap(), p.out_size(w, k, 1).unwrap());
            direct_cases += conv_direct::conv_transpose2d_runs_direct(&conv_direct::DirectConv {
                x: (n, ci, h, w),
                c_out: co,
                kernel: (k, k),
                stride: s,
                padding: pad,
                out: (oh, ow),
            }) as usize;
            let x: Vec<f32> = (0..n * ci * h * w)
                .map(|_| rng.uniform(-1.0, 1.0))
                .collect();
            let wt: Vec<f32> = (0..ci * co * k * k)
                .map(|_| rng.uniform(-1.0, 1.0))
                .collect();
            let got = conv_transpose2d_cpu_gemm(&x, (n, ci, h, w), &wt, (ci, co, k, k), p, oh, ow);
            let want =
                conv_transpose2d_cpu_naive(&x, (n, ci, h, w), &wt, (ci, co, k, k), p, oh, ow);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "case n{n} ci{ci} {h}x{w} k{k} s{s}: [{i}] fast path {g} naive {w}"
                );
            }
        }
        // The table must keep exercising the direct kernel where this CPU runs it.
        assert!(
            !conv_direct::available() || direct_cases >= 4,
            "only {direct_cases} cases took the direct kernel"
        );
    }
}
