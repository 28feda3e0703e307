//! conv2d and its weight gradient for few taps (a first layer's 1-3 input channels),
//! vectorised along the output rows: 16 neighbouring output columns share a vector, so the
//! output (forward) and gy (weight gradient) are read or written where they lie, in whole
//! vectors, and never packed.
//!
//! Shapes: `x: [N, C_in, H, W]`, `w, dw: [C_out, C_in, KH, KW]`, `out, gy: [N, C_out, OH, OW]`.
//! Index formulas, over the taps `t = (ci, kh, kw)` (x zero outside the image):
//! - forward: `out[n, co, oh, ow] = sum_t w[co, t] * x[n, ci, oh*s - p + kh, ow*s - p + kw]`
//! - weight gradient: `dw[co, t] = sum_{n, oh, ow} gy[n, co, oh, ow] * x[n, ci, oh*s - p + kh, ow*s - p + kw]`
//!
//! The direct kernels (`conv_direct`) put 32 channels in a vector; with a first layer's 16 or
//! 48 taps their 8 x 32 tiles cost more to scatter into NCHW (forward), or gy more to pack
//! channel-minor (weight gradient: 16 MiB in W2's D.c1), than the arithmetic. Here the input
//! (small: 1-3 channels) is copied once into stride phases with its zero border,
//! `x_phase[n, ci, h', r, c] = x_pad[n, ci, h', c*s + r]` (`h'` in `0..Hp`, `r` in `0..s`,
//! `c` in `0..ceil(Wp/s)`), so that the 16 inputs one tap meets along `ow` are contiguous:
//! `x_pad[n, ci, oh*s + kh, (ow + j)*s + kw] = x_phase[n, ci, oh*s + kh, kw % s, ow + j + kw / s]`.
//! A row's last `OW % 16` columns use masked loads and stores.
//!
//! - Forward tile: 6 channels x 4 row vectors (24 zmm sums); per tap 4 vector loads of
//!   x_phase, 6 broadcasts of the packed weights `w_t[t][co]`, 24 FMAs; each sum is stored
//!   once as a (masked) vector into its output row.
//! - Weight-gradient tile: 3 channels x 8 taps of 16-lane partial sums (24 zmm); per 16
//!   positions 3 vector loads of gy and 8 of x_phase, 24 FMAs. Tasks own ranges of images,
//!   each with its own partial sums `[C_out][taps][16]`; the lanes and the tasks are summed at
//!   the end in a fixed order, so the result does not depend on scheduling.
//!
//! The naive loops they must equal are `conv2d_cpu_naive` and `conv2d_weight_grad_cpu_naive`
//! in `ops/conv2d.rs` (tests there).

use super::conv_direct::{self, DirectConv};
use super::{pool, SendPtr};
use rayon::prelude::*;

/// Weight gradient: output channels per tile.
const CB: usize = 3;
/// Weight gradient: taps per tile.
const TB: usize = 8;
/// Forward: output channels per tile.
const FWD_CO: usize = 6;
/// Forward: row vectors (16 output columns each) per tile.
const FWD_UNITS: usize = 4;
/// f32 lanes in a vector (AVX-512).
const LANES: usize = 16;

/// At most this many taps (`C_in*KH*KW`) take the weight-gradient kernel; beyond, packing gy
/// once pays for itself over the taps and the channel-vector kernel is faster.
pub const MAX_TAPS: usize = 64;
/// At least this many output columns: a narrower row would leave most of a vector empty.
pub const MIN_WIDTH: usize = 8;

/// Whether [`conv2d_weight_grad`] takes this geometry: AVX-512, at most [`MAX_TAPS`] taps
/// and output rows at least [`MIN_WIDTH`] wide.
pub fn weight_grad_runs(g: &DirectConv) -> bool {
    conv_direct::available()
        && g.x.1 * g.kernel.0 * g.kernel.1 <= MAX_TAPS
        && g.out.1 >= MIN_WIDTH
        && g.stride >= 1
}

/// Whether [`conv2d`] takes this geometry: AVX-512, fewer taps than the direct kernel takes
/// (`conv_direct::MIN_TAPS`) and output rows at least [`MIN_WIDTH`] wide.
pub fn conv2d_runs(g: &DirectConv) -> bool {
    conv_direct::available()
        && g.x.1 * g.kernel.0 * g.kernel.1 < conv_direct::MIN_TAPS
        && g.out.1 >= MIN_WIDTH
        && g.stride >= 1
}

/// x copied into stride phases (see the module docs), and where things are in it.
struct XPhase {
    data: Vec<f32>,
    /// Start of tap t in an image (output row 0, column 0).
    offsets: Vec<usize>,
    /// Values per image.
    image_stride: usize,
    /// One output row further down is s input rows further down.
    row_stride: usize,
}

impl XPhase {
    /// Builds `x_phase` for geometry `g` and checks that every read of a tap at an output
    /// position stays inside its image.
    fn new(x: &[f32], g: &DirectConv) -> XPhase {
        let (n_n, ci_n, h, wd) = g.x;
        let (kh_n, kw_n) = g.kernel;
        let (oh_n, ow_n) = g.out;
        let (s, p) = (g.stride, g.padding);
        let (hp, wp) = g.padded_size("conv_rows", x);
        let wq = wp.div_ceil(s);
        let phase_plane = hp * s * wq;
        let mut data = pool::take(n_n * ci_n * phase_plane);
        super::for_each_row(&mut data, phase_plane, |plane_index, dst| {
            dst.fill(0.0);
            let src = &x[plane_index * h * wd..][..h * wd];
            for (ih, row) in src.chunks_exact(wd).enumerate() {
                let hrow = (ih + p) * s * wq;
                for (iw, &v) in row.iter().enumerate() {
                    let col = iw + p;
                    dst[hrow + (col % s) * wq + col / s] = v;
                }
            }
        });
        let offsets: Vec<usize> = (0..ci_n * kh_n * kw_n)
            .map(|t| {
                let (ci, kh, kw) = (t / (kh_n * kw_n), (t / kw_n) % kh_n, t % kw_n);
                ((ci * hp + kh) * s + kw % s) * wq + kw / s
            })
            .collect();
        let image_stride = ci_n * phase_plane;
        let row_stride = s * s * wq;
        let max_read = (oh_n - 1) * row_stride + ow_n - 1;
        assert!(
            offsets.iter().all(|&o| o + max_read < image_stride),
            "conv_rows: read past an image of x_phase"
        );
        XPhase {
            data,
            offsets,
            image_stride,
            row_stride,
        }
    }
}

/// `conv2d(x, w)` by the row kernel; `None` when [`conv2d_runs`] is false (the caller takes
/// another path).
pub fn conv2d(x: &[f32], w: &[f32], g: DirectConv) -> Option<Vec<f32>> {
    if !conv2d_runs(&g) {
        return None;
    }
    let (n_n, ci_n, _, _) = g.x;
    let (oh_n, ow_n) = g.out;
    let co_n = g.c_out;
    let taps = ci_n * g.kernel.0 * g.kernel.1;
    assert_eq!(w.len(), co_n * taps, "conv_rows: w");
    let xp = XPhase::new(x, &g);
    // w_t[t][co], channels padded with zeros to whole tiles.
    let co_blocks = co_n.div_ceil(FWD_CO);
    let co_pad = co_blocks * FWD_CO;
    let mut w_t = pool::take(taps * co_pad);
    for (t, row) in w_t.chunks_exact_mut(co_pad).enumerate() {
        for (co, v) in row.iter_mut().enumerate() {
            *v = if co < co_n { w[co * taps + t] } else { 0.0 };
        }
    }
    // Units: 16 output columns of one row, u = (n, oh, v); the last of a row may be partial.
    let per_row = ow_n.div_ceil(LANES);
    let units = n_n * oh_n * per_row;
    let plane = oh_n * ow_n;
    let mut out = pool::take(n_n * co_n * plane);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let groups = units.div_ceil(FWD_UNITS);
    let per_task = groups.div_ceil(4 * rayon::current_num_threads()).max(1);
    let (xq, w_tq) = (&xp.data[..], &w_t[..]);
    (0..groups.div_ceil(per_task))
        .into_par_iter()
        .for_each(|task| {
            for group in task * per_task..((task + 1) * per_task).min(groups) {
                // A partial last group repeats its final unit (the same values stored twice).
                let mut x_units = [std::ptr::null::<f32>(); FWD_UNITS];
                let mut out_units = [0usize; FWD_UNITS];
                let mut widths = [0usize; FWD_UNITS];
                for k in 0..FWD_UNITS {
                    let u = (group * FWD_UNITS + k).min(units - 1);
                    let (n, rest) = (u / (oh_n * per_row), u % (oh_n * per_row));
                    let (oh, v) = (rest / per_row, rest % per_row);
                    x_units[k] =
                        xq[n * xp.image_stride + oh * xp.row_stride + v * LANES..].as_ptr();
                    out_units[k] = n * co_n * plane + oh * ow_n + v * LANES;
                    widths[k] = LANES.min(ow_n - v * LANES);
                }
                for cb in 0..co_blocks {
                    let channels = FWD_CO.min(co_n - cb * FWD_CO);
                    let out_at: [usize; FWD_UNITS] =
                        std::array::from_fn(|k| out_units[k] + cb * FWD_CO * plane);
                    // SAFETY: available() was checked by conv2d_runs(); each unit reads at most
                    // `widths[k]` values from `offsets[t]` on, inside its image (asserted by
                    // XPhase::new); w_t holds taps * co_pad values; the unit's output row holds
                    // widths[k] values for each of the block's `channels` channels, and units
                    // belong to one task (a repeated unit stores the same values).
                    unsafe {
                        forward_tile(
                            &x_units,
                            &widths,
                            &xp.offsets,
                            w_tq[cb * FWD_CO..].as_ptr(),
                            co_pad,
                            ForwardOut {
                                out: out_ptr,
                                at: out_at,
                                channels,
                                channel_stride: plane,
                            },
                        );
                    }
                }
            }
        });
    pool::recycle(w_t);
    pool::recycle(xp.data);
    Some(out)
}

/// Where a forward tile's sums go: unit k's row of channel i at `out + at[k] + i *
/// channel_stride`, for the first `channels` of the tile's channels.
struct ForwardOut {
    out: SendPtr,
    at: [usize; FWD_UNITS],
    channels: usize,
    channel_stride: usize,
}

/// One 6-channel x 4-unit forward tile over every tap: for unit k and channel i,
/// `out[k][i][lane] = sum_t w_t[t * co_stride + i] * x_units[k][offsets[t] + lane]` for the
/// first `widths[k]` lanes.
///
/// # Safety
/// AVX-512F must be available; each unit must be readable for `widths[k]` values from
/// `offsets[t]`, `w` for `offsets.len() * co_stride` values, and each output row writable for
/// `widths[k]` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn forward_tile(
    x_units: &[*const f32; FWD_UNITS],
    widths: &[usize; FWD_UNITS],
    offsets: &[usize],
    w: *const f32,
    co_stride: usize,
    out: ForwardOut,
) {
    use std::arch::x86_64::*;
    let masks: [__mmask16; FWD_UNITS] =
        std::array::from_fn(|k| ((1u32 << widths[k]) - 1) as __mmask16);
    let mut sums = [[_mm512_setzero_ps(); FWD_UNITS]; FWD_CO];
    for (t, &off) in offsets.iter().enumerate() {
        let xv: [__m512; FWD_UNITS] =
            std::array::from_fn(|k| _mm512_maskz_loadu_ps(masks[k], x_units[k].add(off)));
        for (i, row) in sums.iter_mut().enumerate() {
            let wv = _mm512_set1_ps(*w.add(t * co_stride + i));
            for (acc, &x) in row.iter_mut().zip(&xv) {
                *acc = _mm512_fmadd_ps(wv, x, *acc);
            }
        }
    }
    for (i, row) in sums.iter().enumerate().take(out.channels) {
        for (k, acc) in row.iter().enumerate() {
            let dst = out.out.get().add(out.at[k] + i * out.channel_stride);
            _mm512_mask_storeu_ps(dst, masks[k], *acc);
        }
    }
}

/// Never called: `conv_direct::available()` is false off x86-64.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn forward_tile(
    _x_units: &[*const f32; FWD_UNITS],
    _widths: &[usize; FWD_UNITS],
    _offsets: &[usize],
    _w: *const f32,
    _co_stride: usize,
    _out: ForwardOut,
) {
    unreachable!("conv_direct::available() is false off x86-64")
}

/// `dw` by the row kernel; `None` when [`weight_grad_runs`] is false (the caller takes another
/// path).
pub fn conv2d_weight_grad(x: &[f32], gy: &[f32], g: DirectConv) -> Option<Vec<f32>> {
    if !weight_grad_runs(&g) {
        return None;
    }
    let (n_n, ci_n, _, _) = g.x;
    let (kh_n, kw_n) = g.kernel;
    let (oh_n, ow_n) = g.out;
    let co_n = g.c_out;
    let plane = oh_n * ow_n;
    assert_eq!(gy.len(), n_n * co_n * plane, "conv_rows: gy");
    let taps = ci_n * kh_n * kw_n;
    let xp = XPhase::new(x, &g);

    // Partial sums per task: [co_pad][taps_pad][16], padded to whole tiles.
    let (co_blocks, tap_blocks) = (co_n.div_ceil(CB), taps.div_ceil(TB));
    let (co_pad, taps_pad) = (co_blocks * CB, tap_blocks * TB);
    let block = co_pad * taps_pad * LANES;
    let threads = rayon::current_num_threads();
    let per_task = n_n.div_ceil((4 * threads).min(n_n).max(1));
    let tasks = n_n.div_ceil(per_task);
    // Taken before the parallel region (a steady-state step must not miss the pool).
    let mut partials = pool::take(tasks * block);
    let partial_ptr = SendPtr(partials.as_mut_ptr());
    let xq: &[f32] = &xp.data;
    (0..tasks).into_par_iter().for_each(|task| {
        // SAFETY: task < tasks, so the block lies inside `partials`; tasks write disjoint blocks.
        let acc = unsafe { partial_ptr.get().add(task * block) };
        let (n0, n1) = (task * per_task, ((task + 1) * per_task).min(n_n));
        for n in n0..n1 {
            for cb in 0..co_blocks {
                // A partial last block repeats its final channel (computed, never read).
                let gy_rows: [*const f32; CB] = std::array::from_fn(|i| {
                    let co = (cb * CB + i).min(co_n - 1);
                    gy[(n * co_n + co) * plane..][..plane].as_ptr()
                });
                for tb in 0..tap_blocks {
                    let x_rows: [*const f32; TB] = std::array::from_fn(|j| {
                        let t = (tb * TB + j).min(taps - 1);
                        xq[n * xp.image_stride + xp.offsets[t]..].as_ptr()
                    });
                    // SAFETY: available() was checked by weight_grad_runs(); every gy row
                    // holds `plane` values, every x row reads inside its image (asserted by
                    // XPhase::new); the tile's partial sums lie inside this task's block.
                    unsafe {
                        tile(
                            &gy_rows,
                            &x_rows,
                            Rows {
                                count: oh_n,
                                width: ow_n,
                                x_stride: xp.row_stride,
                            },
                            acc.add((cb * CB * taps_pad + tb * TB) * LANES),
                            taps_pad * LANES,
                            n > n0,
                        );
                    }
                }
            }
        }
    });
    // dw[co, t] = sum over tasks (in order) of the lanes (in order).
    let mut dw = pool::take(co_n * taps);
    for (co, row) in dw.chunks_exact_mut(taps).enumerate() {
        for (t, d) in row.iter_mut().enumerate() {
            let at = (co * taps_pad + t) * LANES;
            *d = partials
                .chunks_exact(block)
                .take(tasks)
                .map(|part| part[at..at + LANES].iter().sum::<f32>())
                .sum();
        }
    }
    pool::recycle(partials);
    pool::recycle(xp.data);
    Some(dw)
}

/// The rows a tile runs over: `count` output rows of `width` positions; gy's rows follow each
/// other (`width` apart), x_phase's are `x_stride` apart.
#[derive(Clone, Copy)]
struct Rows {
    count: usize,
    width: usize,
    x_stride: usize,
}

/// One 3-channel x 8-tap weight-gradient tile of 16-lane partial sums over every position of
/// one image:
/// `acc[i][j][lane] (+)= sum_{oh, ow = lane mod 16} gy_rows[i][oh*width + ow] *
/// x_rows[j][oh*x_stride + ow]`, the tile's row i at `acc + i*acc_stride`, adding to the
/// values there when `accumulate`, else replacing them.
///
/// # Safety
/// AVX-512F must be available; every gy row must hold `count*width` values, every x row
/// `(count-1)*x_stride + width`; `acc` must hold the tile.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile(
    gy_rows: &[*const f32; CB],
    x_rows: &[*const f32; TB],
    rows: Rows,
    acc: *mut f32,
    acc_stride: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mut sums = [[_mm512_setzero_ps(); TB]; CB];
    if accumulate {
        for (i, row) in sums.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(acc.add(i * acc_stride + j * LANES));
            }
        }
    }
    let full = rows.width / LANES;
    let tail = rows.width % LANES;
    let mask: __mmask16 = ((1u32 << tail) - 1) as __mmask16;
    for oh in 0..rows.count {
        let (g_at, x_at) = (oh * rows.width, oh * rows.x_stride);
        for v in 0..full {
            let at = v * LANES;
            let g: [__m512; CB] =
                std::array::from_fn(|i| _mm512_loadu_ps(gy_rows[i].add(g_at + at)));
            for (j, &xr) in x_rows.iter().enumerate() {
                let xv = _mm512_loadu_ps(xr.add(x_at + at));
                for (row, &gv) in sums.iter_mut().zip(&g) {
                    row[j] = _mm512_fmadd_ps(gv, xv, row[j]);
                }
            }
        }
        if tail > 0 {
            let at = full * LANES;
            let g: [__m512; CB] =
                std::array::from_fn(|i| _mm512_maskz_loadu_ps(mask, gy_rows[i].add(g_at + at)));
            for (j, &xr) in x_rows.iter().enumerate() {
                let xv = _mm512_maskz_loadu_ps(mask, xr.add(x_at + at));
                for (row, &gv) in sums.iter_mut().zip(&g) {
                    row[j] = _mm512_fmadd_ps(gv, xv, row[j]);
                }
            }
        }
    }
    for (i, row) in sums.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            _mm512_storeu_ps(acc.add(i * acc_stride + j * LANES), *v);
        }
    }
}

/// Never called: `conv_direct::available()` is false off x86-64.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile(
    _gy_rows: &[*const f32; CB],
    _x_rows: &[*const f32; TB],
    _rows: Rows,
    _acc: *mut f32,
    _acc_stride: usize,
    _accumulate: bool,
) {
    unreachable!("conv_direct::available() is false off x86-64")
}
