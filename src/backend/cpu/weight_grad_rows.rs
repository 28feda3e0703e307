//! conv2d's weight gradient for few taps (a first layer's 1-3 input channels), vectorised
//! along the output rows, so that `gy` is read where it lies and never packed.
//!
//! Shapes: `x: [N, C_in, H, W]`, `gy: [N, C_out, OH, OW]`, `dw: [C_out, C_in, KH, KW]`.
//! Index formula, over the taps `t = (ci, kh, kw)` (zero outside the image):
//! `dw[co, t] = sum_{n, oh, ow} gy[n, co, oh, ow] * x[n, ci, oh*s - p + kh, ow*s - p + kw]`
//!
//! The direct weight gradient (`conv_direct::conv2d_weight_grad`) puts 32 channels in a
//! vector, so it first copies gy into channel-minor panels. With a first layer's 16 or 48 taps
//! that copy of a large gy (16 MiB in W2's D.c1) costs more than the arithmetic. Here the
//! vector runs along `ow`, where gy is contiguous already. The input (small: 1-3 channels) is
//! copied once into stride phases with its zero border,
//! `x_phase[n, ci, h', r, c] = x_pad[n, ci, h', c*s + r]` (`h'` in `0..Hp`, `r` in `0..s`,
//! `c` in `0..ceil(Wp/s)`), so that the 16 inputs one tap meets along `ow` are contiguous too:
//! `x_pad[n, ci, oh*s + kh, (ow + j)*s + kw] = x_phase[n, ci, oh*s + kh, kw % s, ow + j + kw / s]`.
//!
//! The microkernel holds 3 channels x 8 taps of 16-lane partial sums (24 zmm registers); per
//! 16 positions of a row it loads 3 vectors of gy and 8 of x_phase for 24 FMAs. A row's last
//! `OW % 16` positions use masked loads. Tasks own ranges of images, each with its own
//! partial sums `[C_out][taps][16]`; the lanes and the tasks are summed at the end in a fixed
//! order, so the result does not depend on scheduling.
//!
//! The naive loop it must equal is `conv2d_weight_grad_cpu_naive` in `ops/conv2d.rs` (tests
//! there).

use super::conv_direct::{self, DirectConv};
use super::{pool, SendPtr};
use rayon::prelude::*;

/// Output channels per tile.
const CB: usize = 3;
/// Taps per tile.
const TB: usize = 8;
/// f32 lanes in a vector (AVX-512).
const LANES: usize = 16;

/// At most this many taps (`C_in*KH*KW`) take this kernel; beyond, packing gy once pays for
/// itself over the taps and the channel-vector kernel is faster.
pub const MAX_TAPS: usize = 64;
/// At least this many output columns: a narrower row would leave most of a vector empty.
pub const MIN_WIDTH: usize = 8;

/// Whether [`conv2d_weight_grad`] takes this geometry: AVX-512, at most [`MAX_TAPS`] taps and
/// output rows at least [`MIN_WIDTH`] wide.
pub fn runs(g: &DirectConv) -> bool {
    conv_direct::available()
        && g.x.1 * g.kernel.0 * g.kernel.1 <= MAX_TAPS
        && g.out.1 >= MIN_WIDTH
        && g.stride >= 1
}

/// `dw` by the row kernel; `None` when [`runs`] is false (the caller takes another path).
pub fn conv2d_weight_grad(x: &[f32], gy: &[f32], g: DirectConv) -> Option<Vec<f32>> {
    if !runs(&g) {
        return None;
    }
    let (n_n, ci_n, h, wd) = g.x;
    let (kh_n, kw_n) = g.kernel;
    let (oh_n, ow_n) = g.out;
    let (s, p) = (g.stride, g.padding);
    let co_n = g.c_out;
    let (hp, wp) = (h + 2 * p, wd + 2 * p);
    assert!(
        (oh_n - 1) * s + kh_n <= hp && (ow_n - 1) * s + kw_n <= wp,
        "weight_grad_rows: output larger than the padded input"
    );
    assert_eq!(x.len(), n_n * ci_n * h * wd, "weight_grad_rows: x");
    let plane = oh_n * ow_n;
    assert_eq!(gy.len(), n_n * co_n * plane, "weight_grad_rows: gy");
    let taps = ci_n * kh_n * kw_n;

    // x_phase[n, ci, h', r, c] = x_pad[n, ci, h', c*s + r]: one plane per (n, ci).
    let wq = wp.div_ceil(s);
    let phase_plane = hp * s * wq;
    let mut x_phase = pool::take(n_n * ci_n * phase_plane);
    super::for_each_row(&mut x_phase, phase_plane, |plane_index, dst| {
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
    // Where tap t starts in an image's x_phase (output row 0, column 0).
    let offsets: Vec<usize> = (0..taps)
        .map(|t| {
            let (ci, kh, kw) = (t / (kh_n * kw_n), (t / kw_n) % kh_n, t % kw_n);
            ((ci * hp + kh) * s + kw % s) * wq + kw / s
        })
        .collect();
    let image_stride = ci_n * phase_plane;
    // One output row further down is s input rows further down.
    let x_row_stride = s * s * wq;
    let max_read = (oh_n - 1) * x_row_stride + ow_n - 1;
    assert!(
        offsets.iter().all(|&o| o + max_read < image_stride),
        "weight_grad_rows: read past an image of x_phase"
    );

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
    let xq: &[f32] = &x_phase;
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
                        xq[n * image_stride + offsets[t]..].as_ptr()
                    });
                    // SAFETY: available() was checked by runs(); every gy row holds `plane`
                    // values, every x row reads at most max_read past its start (asserted
                    // inside its image); the tile's partial sums lie inside this task's block.
                    unsafe {
                        tile(
                            &gy_rows,
                            &x_rows,
                            Rows {
                                count: oh_n,
                                width: ow_n,
                                x_stride: x_row_stride,
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
    pool::recycle(x_phase);
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

/// One 3 x 8 tile of 16-lane partial sums over every position of one image:
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
