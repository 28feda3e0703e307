//! conv2d as a direct convolution on AVX-512: no im2col buffer, no packing of the input.
//!
//! Shapes: `x: [N, C_in, H, W]`, `w: [C_out, C_in, KH, KW]`, `out: [N, C_out, OH, OW]`.
//! Index formula (zero outside the image):
//! `out[n, co, oh, ow] = sum_{ci, kh, kw} w[co, ci, kh, kw] * x[n, ci, oh*s - p + kh, ow*s - p + kw]`
//!
//! Seen as a GEMM, `out^T[(n, oh, ow), co] = X[(n, oh, ow), t] * W^T[t, co]` over the taps
//! `t = (ci, kh, kw)`. The im2col path (`ops/conv2d.rs`) writes X out (C_in*KH*KW values per
//! output position: 12.8 MiB for W1's D.c2) and the GEMM then packs it again. Here X is never
//! formed: the input is copied once with its zero border (`x_pad`, `[N, C_in, H+2p, W+2p]`),
//! and `X[q, t] = x_pad[base(q) + offset(t)]` with
//! `base(q) = ((n*C_in)*Hp + oh*s)*Wp + ow*s` and `offset(t) = (ci*Hp + kh)*Wp + kw`.
//!
//! The microkernel is the GEMM's 8 x 32 AVX-512 tile with its A operand read through those
//! addresses: 8 output positions (rows) x 32 output channels (columns), 16 zmm accumulators;
//! per tap, 2 loads of the packed weights `w_packed[panel][t][32]`, 8 broadcasts from `x_pad`,
//! 16 FMAs. All taps run with the tile in registers, so each output value is written once,
//! straight into the NCHW output. Tasks take ranges of 8-position groups and run every
//! 32-channel weight panel over them (a panel, `taps * 128` bytes, stays in L2).
//!
//! The naive loop it must equal is `conv2d_cpu_direct` in `ops/conv2d.rs` (tests there).

use super::{pool, SendPtr};
use rayon::prelude::*;

/// Output positions per tile (rows of the microkernel).
const MR: usize = 8;
/// Output channels per tile (columns: two zmm registers).
const NR: usize = 32;

/// True when this CPU runs the direct kernel (AVX-512F, detected once).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX512.get_or_init(|| {
            std::env::var_os("GANFORGE_GEMM_PORTABLE").is_none()
                && is_x86_feature_detected!("avx512f")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Geometry of one convolution.
#[derive(Clone, Copy, Debug)]
pub struct DirectConv {
    /// Input `(N, C_in, H, W)`.
    pub x: (usize, usize, usize, usize),
    /// Output channels.
    pub c_out: usize,
    /// Kernel `(KH, KW)`.
    pub kernel: (usize, usize),
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding (both axes).
    pub padding: usize,
    /// Output `(OH, OW)`.
    pub out: (usize, usize),
}

/// Below this many taps (`C_in*KH*KW`) a tile's 8 x 32 results cost more to write than to
/// compute, and im2col + GEMM is faster (a first layer on 1-channel images: 16 taps, 0.57 ms
/// direct against 0.29 ms for W1's D.c1).
pub const MIN_TAPS: usize = 64;

/// `conv2d(x, w)` by the direct kernel; `None` when the CPU lacks AVX-512 or the convolution
/// has fewer than [`MIN_TAPS`] taps (the caller then takes the im2col path).
pub fn conv2d(x: &[f32], w: &[f32], g: DirectConv) -> Option<Vec<f32>> {
    if !available() || g.x.1 * g.kernel.0 * g.kernel.1 < MIN_TAPS {
        return None;
    }
    let (n_n, ci_n, h, wd) = g.x;
    let (kh_n, kw_n) = g.kernel;
    let (oh_n, ow_n) = g.out;
    let (s, p) = (g.stride, g.padding);
    let (hp, wp) = (h + 2 * p, wd + 2 * p);
    assert!(
        (oh_n - 1) * s + kh_n <= hp && (ow_n - 1) * s + kw_n <= wp,
        "conv_direct: output larger than the padded input"
    );
    assert_eq!(x.len(), n_n * ci_n * h * wd, "conv_direct: x");
    let taps = ci_n * kh_n * kw_n;
    assert_eq!(w.len(), g.c_out * taps, "conv_direct: w");

    // The input with its zero border, so every tap of every position is a plain read.
    let x_pad = if p == 0 {
        None
    } else {
        let mut buf = pool::take(n_n * ci_n * hp * wp);
        super::for_each_row(&mut buf, hp * wp, |plane, dst| {
            dst.fill(0.0);
            let src = &x[plane * h * wd..][..h * wd];
            for (ih, row) in src.chunks_exact(wd).enumerate() {
                dst[(ih + p) * wp + p..][..wd].copy_from_slice(row);
            }
        });
        Some(buf)
    };
    let xp: &[f32] = x_pad.as_deref().unwrap_or(x);

    // Weights as panels of 32 output channels: w_packed[panel][t][j] = w[panel*32 + j][t],
    // zero for channels past C_out.
    let panels = g.c_out.div_ceil(NR);
    let mut w_packed = pool::take(panels * taps * NR);
    w_packed
        .par_chunks_mut(taps * NR)
        .enumerate()
        .for_each(|(panel, dst)| {
            for j in 0..NR {
                let co = panel * NR + j;
                if co < g.c_out {
                    for (t, &v) in w[co * taps..][..taps].iter().enumerate() {
                        dst[t * NR + j] = v;
                    }
                } else {
                    for t in 0..taps {
                        dst[t * NR + j] = 0.0;
                    }
                }
            }
        });

    // offset(t) for every tap, in the order of w's rows.
    let mut offsets = Vec::with_capacity(taps);
    for ci in 0..ci_n {
        for kh in 0..kh_n {
            for kw in 0..kw_n {
                offsets.push((ci * hp + kh) * wp + kw);
            }
        }
    }

    let plane = oh_n * ow_n;
    let positions = n_n * plane;
    let groups = positions.div_ceil(MR);
    let mut out = pool::take(n_n * g.c_out * plane);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let per_task = groups.div_ceil(4 * rayon::current_num_threads()).max(1);
    let w_packed_ref = &w_packed[..];
    let offsets_ref = &offsets[..];
    (0..groups.div_ceil(per_task))
        .into_par_iter()
        .for_each(|task| {
            let first = task * per_task;
            let last = (first + per_task).min(groups);
            let mut tile = [0.0f32; MR * NR];
            for panel in 0..panels {
                let wpanel = &w_packed_ref[panel * taps * NR..][..taps * NR];
                for group in first..last {
                    // The group's positions; the last group repeats its final position to fill
                    // the tile and writes only the real ones.
                    let mut bases = [0usize; MR];
                    let mut slots = [(0usize, 0usize); MR];
                    let valid = MR.min(positions - group * MR);
                    for (i, (base, slot)) in bases.iter_mut().zip(&mut slots).enumerate() {
                        let q = (group * MR + i).min(positions - 1);
                        let (n, rest) = (q / plane, q % plane);
                        let (oh, ow) = (rest / ow_n, rest % ow_n);
                        *base = (n * ci_n * hp + oh * s) * wp + ow * s;
                        *slot = (n, rest);
                    }
                    // SAFETY: available() checked AVX-512F; every base + offset(t) is inside
                    // x_pad (the assertion on the output size above bounds oh*s + kh and
                    // ow*s + kw by the padded size), wpanel holds taps * NR values, tile MR * NR.
                    unsafe {
                        tile_8x32(xp, &bases, offsets_ref, wpanel, &mut tile);
                    }
                    let channels = NR.min(g.c_out - panel * NR);
                    for (i, &(n, rest)) in slots.iter().enumerate().take(valid) {
                        for j in 0..channels {
                            let co = panel * NR + j;
                            // SAFETY: (n, co, rest) is inside out; positions are owned by one
                            // task (disjoint group ranges), so no two tasks write one value.
                            unsafe {
                                *out_ptr.get().add((n * g.c_out + co) * plane + rest) =
                                    tile[i * NR + j];
                            }
                        }
                    }
                }
            }
        });
    if let Some(buf) = x_pad {
        pool::recycle(buf);
    }
    pool::recycle(w_packed);
    Some(out)
}

/// One 8 x 32 tile over every tap: `tile[i][j] = sum_t x[bases[i] + offsets[t]] *
/// wpanel[t * 32 + j]`.
///
/// # Safety
/// AVX-512F must be available; every `bases[i] + offsets[t]` must index `x`; `wpanel` must
/// hold `offsets.len() * 32` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_8x32(
    x: &[f32],
    bases: &[usize; MR],
    offsets: &[usize],
    wpanel: &[f32],
    tile: &mut [f32; MR * NR],
) {
    use std::arch::x86_64::*;
    debug_assert!(wpanel.len() >= offsets.len() * NR);
    let xp = x.as_ptr();
    let rows: [*const f32; MR] = std::array::from_fn(|i| xp.add(bases[i]));
    let wp = wpanel.as_ptr();
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for (t, &off) in offsets.iter().enumerate() {
        let b0 = _mm512_loadu_ps(wp.add(t * NR));
        let b1 = _mm512_loadu_ps(wp.add(t * NR + 16));
        for (row, &src) in acc.iter_mut().zip(&rows) {
            let a = _mm512_set1_ps(*src.add(off));
            row[0] = _mm512_fmadd_ps(a, b0, row[0]);
            row[1] = _mm512_fmadd_ps(a, b1, row[1]);
        }
    }
    let out = tile.as_mut_ptr();
    for (i, row) in acc.iter().enumerate() {
        _mm512_storeu_ps(out.add(i * NR), row[0]);
        _mm512_storeu_ps(out.add(i * NR + 16), row[1]);
    }
}

/// Never called: [`available`] is false off x86-64.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile_8x32(
    _x: &[f32],
    _bases: &[usize; MR],
    _offsets: &[usize],
    _wpanel: &[f32],
    _tile: &mut [f32; MR * NR],
) {
    unreachable!("conv_direct::available() is false off x86-64")
}
