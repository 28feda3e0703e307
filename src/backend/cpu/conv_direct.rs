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
//! The naive loop it must equal is `conv2d_cpu_naive` in `ops/conv2d.rs` (tests there).

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

/// Geometry of one convolution, or of one transposed convolution (then `x` is its input,
/// `c_out` its output channels, `out` its output size with output padding included, and the
/// weight is in PyTorch's `[C_in, C_out, KH, KW]` layout).
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

impl DirectConv {
    /// The zero-bordered input's size `(H + 2p, W + 2p)`, after checking that `x` holds the
    /// input and that every output position's window lies inside the bordered input (`op`
    /// names the kernel in the panic).
    pub(super) fn padded_size(&self, op: &str, x: &[f32]) -> (usize, usize) {
        let (n_n, ci_n, h, wd) = self.x;
        let (s, p) = (self.stride, self.padding);
        let (hp, wp) = (h + 2 * p, wd + 2 * p);
        assert!(
            (self.out.0 - 1) * s + self.kernel.0 <= hp
                && (self.out.1 - 1) * s + self.kernel.1 <= wp,
            "{op}: output larger than the padded input"
        );
        assert_eq!(x.len(), n_n * ci_n * h * wd, "{op}: x");
        (hp, wp)
    }
}

/// Below this many taps (`C_in*KH*KW`) a tile's 8 x 32 results cost more to write than to
/// compute (a first layer on 1-channel images: 16 taps, 0.57 ms direct against 0.29 ms by
/// im2col + GEMM for W1's D.c1); the row kernel (`conv_rows`) or im2col + GEMM serve those.
pub const MIN_TAPS: usize = 64;

/// `conv2d(x, w)` by a direct kernel: the row kernel of `conv_rows` for fewer than
/// [`MIN_TAPS`] taps over rows at least 8 wide, else the 8 x 32 tile below; `None` when the
/// CPU lacks AVX-512 or neither applies (the caller then takes the im2col path).
pub fn conv2d(x: &[f32], w: &[f32], g: DirectConv) -> Option<Vec<f32>> {
    if !conv2d_runs_direct(&g) {
        return None;
    }
    if let Some(out) = super::conv_rows::conv2d(x, w, g) {
        return Some(out);
    }
    let (n_n, ci_n, _, _) = g.x;
    let (kh_n, kw_n) = g.kernel;
    let (oh_n, ow_n) = g.out;
    let (s, p) = (g.stride, g.padding);
    let (hp, wp) = g.padded_size("conv_direct", x);
    let taps = ci_n * kh_n * kw_n;
    assert_eq!(w.len(), g.c_out * taps, "conv_direct: w");

    // The input with its zero border, so every tap of every position is a plain read.
    let x_pad = pad_input(x, g.x, p);
    let xp: &[f32] = x_pad.as_deref().unwrap_or(x);

    // Weights as panels of 32 output channels: w_packed[panel][t][j] = w[co][t], co = panel*32 + j.
    let mut w_bases = address_table();
    w_bases.extend(0..taps);
    let w_packed = pack_panels(w, g.c_out, taps, &w_bases);
    return_address_table(w_bases);

    // offset(t) for every tap, in the order of w's rows.
    let mut offsets = address_table();
    for ci in 0..ci_n {
        for kh in 0..kh_n {
            for kw in 0..kw_n {
                offsets.push((ci * hp + kh) * wp + kw);
            }
        }
    }

    let plane = oh_n * ow_n;
    let mut out = pool::take(n_n * g.c_out * plane);
    let tiles = Tiles {
        x: xp,
        offsets: &offsets,
        w_packed: &w_packed,
        panel_stride: taps * NR,
        c_out: g.c_out,
        channel_stride: plane,
    };
    // Position q = (n, oh, ow) reads from base(q) and writes out[n, 0, oh, ow] + co * plane.
    tiles.run(n_n * plane, SendPtr(out.as_mut_ptr()), |q| {
        let (n, rest) = (q / plane, q % plane);
        let (oh, ow) = (rest / ow_n, rest % ow_n);
        (
            (n * ci_n * hp + oh * s) * wp + ow * s,
            n * g.c_out * plane + rest,
        )
    });
    if let Some(buf) = x_pad {
        pool::recycle(buf);
    }
    pool::recycle(w_packed);
    return_address_table(offsets);
    Some(out)
}

/// Whether [`conv2d`] takes this geometry: AVX-512, and either at least [`MIN_TAPS`] taps or
/// fewer over rows wide enough for the row kernel
/// ([`conv_rows::conv2d_runs`](super::conv_rows::conv2d_runs)).
pub fn conv2d_runs_direct(g: &DirectConv) -> bool {
    available() && (g.x.1 * g.kernel.0 * g.kernel.1 >= MIN_TAPS || super::conv_rows::conv2d_runs(g))
}

/// Whether [`conv_transpose2d`] takes this geometry: AVX-512, a kernel at least the stride,
/// 16+ output channels and at least [`MIN_TAPS`] taps in its smallest stride phase.
pub fn conv_transpose2d_runs_direct(g: &DirectConv) -> bool {
    let s = g.stride;
    let (kh, kw) = g.kernel;
    let smallest_phase = |k: usize| (k + 1 - s).div_ceil(s);
    available()
        && s >= 1
        && kh >= s
        && kw >= s
        && g.c_out >= 16
        && g.x.1 * smallest_phase(kh) * smallest_phase(kw) >= MIN_TAPS
}

/// Whether [`conv2d_weight_grad`] takes this geometry (the forward then keeps no im2col for
/// it): AVX-512, and either few taps over rows wide enough for the row kernel
/// ([`conv_rows::weight_grad_runs`](super::conv_rows::weight_grad_runs)) or at least 16 output channels
/// and 256 output positions.
pub fn weight_grad_runs_direct(g: &DirectConv) -> bool {
    available()
        && (super::conv_rows::weight_grad_runs(g)
            || (g.c_out >= 16 && g.x.0 * g.out.0 * g.out.1 >= 256))
}

/// conv2d's weight gradient by the direct kernel:
/// `dw[co, t] = sum_q gy[n, co, oh, ow] * x_pad[base(q) + offset(t)]` over the output positions
/// `q = (n, oh, ow)`, with the tap offsets and position bases of [`conv2d`]. The tile's rows
/// are now 8 taps (fixed addresses `offset(t)`) and its depth runs over the positions (the
/// address steps by `base(q)`): the same kernel with the two address tables swapped. `gy`
/// is packed once as panels of 32 channels, `[panel][q][32]`. `None` when the CPU lacks
/// AVX-512, there are fewer than 16 output channels or fewer than 256 positions.
pub fn conv2d_weight_grad(x: &[f32], gy: &[f32], g: DirectConv) -> Option<Vec<f32>> {
    let (n_n, ci_n, _, _) = g.x;
    let (kh_n, kw_n) = g.kernel;
    let (oh_n, ow_n) = g.out;
    let (s, p) = (g.stride, g.padding);
    let plane = oh_n * ow_n;
    let positions = n_n * plane;
    if !weight_grad_runs_direct(&g) {
        return None;
    }
    if let Some(dw) = super::conv_rows::conv2d_weight_grad(x, gy, g) {
        return Some(dw);
    }
    let (hp, wp) = g.padded_size("conv_direct", x);
    assert_eq!(gy.len(), n_n * g.c_out * plane, "conv_direct: gy");
    let x_pad = pad_input(x, g.x, p);
    let xp: &[f32] = x_pad.as_deref().unwrap_or(x);
    let taps = ci_n * kh_n * kw_n;
    // gy[n, co, p] for position q = (n, p): base n*C_out*P + p, channel stride P.
    let mut gy_bases = address_table();
    for n in 0..n_n {
        gy_bases.extend((0..plane).map(|p| n * g.c_out * plane + p));
    }
    let gy_packed = pack_panels(gy, g.c_out, plane, &gy_bases);
    return_address_table(gy_bases);
    let mut bases = address_table();
    bases.extend((0..positions).map(|q| {
        let (n, rest) = (q / plane, q % plane);
        (n * ci_n * hp + (rest / ow_n) * s) * wp + (rest % ow_n) * s
    }));
    let mut dw = pool::take(g.c_out * taps);
    // "Position" t is a tap: it reads from offset(t) and writes dw[0, t] + co * taps.
    let locate = |t: usize| {
        let (ci, kh, kw) = (t / (kh_n * kw_n), (t / kw_n) % kh_n, t % kw_n);
        ((ci * hp + kh) * wp + kw, t)
    };
    let threads = rayon::current_num_threads();
    let tap_groups = taps.div_ceil(MR);
    // A first layer's few taps (16 or 48) make too few groups to share out, and each group's
    // task would stream every panel of gy from memory. Split the positions instead: each part
    // runs every tap group over its slice of the positions, a block at a time (so a block of
    // gy serves all the groups from L1), into a partial dw; the partials are summed in a fixed
    // order (the result does not depend on scheduling).
    let per_part = positions.div_ceil((4 * threads).min(positions / TAP_BLOCK).max(1));
    let parts = positions.div_ceil(per_part);
    if tap_groups >= 4 * threads || parts < 2 {
        let tiles = Tiles {
            x: xp,
            offsets: &bases,
            w_packed: &gy_packed,
            panel_stride: positions * NR,
            c_out: g.c_out,
            channel_stride: taps,
        };
        tiles.run(taps, SendPtr(dw.as_mut_ptr()), locate);
    } else {
        let block = g.c_out * taps;
        // Taken before the parallel region (a steady-state step must not miss the pool).
        let mut partials = pool::take(parts * block);
        let partial_ptr = SendPtr(partials.as_mut_ptr());
        (0..parts).into_par_iter().for_each(|part| {
            let (q0, q1) = (part * per_part, ((part + 1) * per_part).min(positions));
            let tiles = Tiles {
                x: xp,
                offsets: &bases[q0..q1],
                w_packed: &gy_packed[q0 * NR..],
                panel_stride: positions * NR,
                c_out: g.c_out,
                channel_stride: taps,
            };
            let max_offset = bases[q0..q1].iter().copied().max().unwrap_or(0);
            // SAFETY: part < parts, so the partial block lies inside `partials`.
            let out = SendPtr(unsafe { partial_ptr.get().add(part * block) });
            tiles.run_groups(0..tap_groups, taps, out, &locate, max_offset);
        });
        dw.copy_from_slice(&partials[..block]);
        for partial in partials.chunks_exact(block).skip(1) {
            for (d, p) in dw.iter_mut().zip(partial) {
                *d += p;
            }
        }
        pool::recycle(partials);
    }
    if let Some(buf) = x_pad {
        pool::recycle(buf);
    }
    pool::recycle(gy_packed);
    return_address_table(bases);
    Some(dw)
}

/// `x` with a zero border of `p` on every side (`None` when `p` is 0: use `x` itself).
fn pad_input(
    x: &[f32],
    (n_n, ci_n, h, wd): (usize, usize, usize, usize),
    p: usize,
) -> Option<Vec<f32>> {
    if p == 0 {
        return None;
    }
    let (hp, wp) = (h + 2 * p, wd + 2 * p);
    let mut buf = pool::take(n_n * ci_n * hp * wp);
    super::for_each_row(&mut buf, hp * wp, |plane, dst| {
        dst.fill(0.0);
        let src = &x[plane * h * wd..][..h * wd];
        for (ih, row) in src.chunks_exact(wd).enumerate() {
            dst[(ih + p) * wp + p..][..wd].copy_from_slice(row);
        }
    });
    Some(buf)
}

/// `conv_transpose2d(x, w)` by the direct kernel, one stride phase at a time; `None` when the
/// CPU lacks AVX-512, the kernel is smaller than the stride, a phase has fewer than
/// [`MIN_TAPS`] taps or there are fewer than 16 output channels (a 32-channel tile would be
/// mostly empty; the GEMM + col2im path serves those).
///
/// `out[n, co, oh, ow] = sum x[n, ci, ih, iw] * w[ci, co, kh, kw]` over `oh = ih*s - p + kh`,
/// `ow = iw*s - p + kw`. The output rows with `(oh + p) % s == r` (phase r) receive exactly
/// the kernel rows `kh = r + s*a`, from input row `ih = T - a` where `oh = s*T + r - p`; the
/// same for columns. So each phase `(r, r')` is a stride-1 direct convolution over the input
/// with taps `(ci, a, b)`, `offset = (ci*Hp + PT - a)*Wp + PL - b` into a copy of x with a
/// zero border (PT/PL rows/columns before, enough after), weights `w[ci, co, r+s*a, r'+s*b]`,
/// and its results land on every s-th output row and column. No col2im, no accumulation:
/// each output value is written once.
pub fn conv_transpose2d(x: &[f32], w: &[f32], g: DirectConv) -> Option<Vec<f32>> {
    let (n_n, ci_n, h, wd) = g.x;
    let (kh_n, kw_n) = g.kernel;
    let (oh_n, ow_n) = g.out;
    let (s, p) = (g.stride, g.padding);
    let phase_taps = |k: usize, r: usize| (k - r).div_ceil(s);
    if !conv_transpose2d_runs_direct(&g) {
        return None;
    }
    assert_eq!(x.len(), n_n * ci_n * h * wd, "conv_transpose_direct: x");
    assert_eq!(
        w.len(),
        ci_n * g.c_out * kh_n * kw_n,
        "conv_transpose_direct: w"
    );
    // The rows T of phase r: oh = s*T + r - p in [0, OH). T_min <= 0 can be negative only as
    // far as p allows; we keep T >= t_first(r) = ceil((p - r) / s) clipped at 0 from below.
    let t_range = |r: usize, out_len: usize| -> std::ops::Range<usize> {
        let first = (p.saturating_sub(r)).div_ceil(s);
        let end = (out_len + p).saturating_sub(r).div_ceil(s);
        first..end.max(first)
    };
    // Border: before, the largest a (reads T - a); after, rows up to the largest T.
    let (pt, pl) = (kh_n.div_ceil(s) - 1, kw_n.div_ceil(s) - 1);
    let t_end = (0..s).map(|r| t_range(r, oh_n).end).max().unwrap_or(0);
    let u_end = (0..s).map(|r| t_range(r, ow_n).end).max().unwrap_or(0);
    let (hp, wp) = (pt + t_end.max(h), pl + u_end.max(wd));
    let mut x_pad = pool::take(n_n * ci_n * hp * wp);
    super::for_each_row(&mut x_pad, hp * wp, |plane, dst| {
        dst.fill(0.0);
        let src = &x[plane * h * wd..][..h * wd];
        for (ih, row) in src.chunks_exact(wd).enumerate() {
            dst[(ih + pt) * wp + pl..][..wd].copy_from_slice(row);
        }
    });
    let mut out = pool::take(n_n * g.c_out * oh_n * ow_n);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let plane = oh_n * ow_n;
    // Every phase's tap offsets and packed weights first; then one parallel pass in which
    // each task runs all the phases over the same stretch of the batch, so the input it reads
    // and the output lines it fills (each phase writes every s-th value of them) are still
    // in cache for the next phase. Phase by phase, each would stream all of x_pad and every
    // output line again (W2's D.c2 input gradient ran 40% slower per FLOP than a forward).
    struct Phase {
        r: usize,
        rc: usize,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
        offsets: Vec<usize>,
        w_packed: Vec<f32>,
    }
    let mut phases = Vec::with_capacity(s * s);
    for r in 0..s {
        for rc in 0..s {
            let (rows, cols) = (t_range(r, oh_n), t_range(rc, ow_n));
            let (a_n, b_n) = (phase_taps(kh_n, r), phase_taps(kw_n, rc));
            if rows.is_empty() || cols.is_empty() {
                continue;
            }
            let mut offsets = address_table();
            for ci in 0..ci_n {
                for a in 0..a_n {
                    for b in 0..b_n {
                        offsets.push((ci * hp + pt - a) * wp + pl - b);
                    }
                }
            }
            // w[ci, co, r + s*a, rc + s*b]: base at co = 0, channel stride KH*KW.
            let mut w_bases = address_table();
            for ci in 0..ci_n {
                for a in 0..a_n {
                    for b in 0..b_n {
                        w_bases.push((ci * g.c_out * kh_n + r + s * a) * kw_n + rc + s * b);
                    }
                }
            }
            let w_packed = pack_panels(w, g.c_out, kh_n * kw_n, &w_bases);
            return_address_table(w_bases);
            phases.push(Phase {
                r,
                rc,
                rows,
                cols,
                offsets,
                w_packed,
            });
        }
    }
    let positions = |ph: &Phase| n_n * ph.rows.len() * ph.cols.len();
    let most_groups = phases
        .iter()
        .map(|ph| positions(ph).div_ceil(MR))
        .max()
        .unwrap_or(0);
    let per_task = most_groups
        .div_ceil(4 * rayon::current_num_threads())
        .clamp(1, MAX_TASK_GROUPS);
    let tasks = most_groups.div_ceil(per_task);
    (0..tasks).into_par_iter().for_each(|task| {
        for ph in &phases {
            let tiles = Tiles {
                x: &x_pad,
                offsets: &ph.offsets,
                w_packed: &ph.w_packed,
                panel_stride: ph.offsets.len() * NR,
                c_out: g.c_out,
                channel_stride: plane,
            };
            let (t_n, u_n) = (ph.rows.len(), ph.cols.len());
            let (r, rc, t0, u0) = (ph.r, ph.rc, ph.rows.start, ph.cols.start);
            // Position q = (n, T, U) reads from (n, T, U) of the bordered input (its taps
            // step back from there) and writes out[n, 0, s*T + r - p, s*U + r' - p].
            let locate = |q: usize| {
                let (n, rest) = (q / (t_n * u_n), q % (t_n * u_n));
                let (t, u) = (t0 + rest / u_n, u0 + rest % u_n);
                let (oh, ow) = (s * t + r - p, s * u + rc - p);
                (
                    (n * ci_n * hp + t) * wp + u,
                    n * g.c_out * plane + oh * ow_n + ow,
                )
            };
            // This phase's share of the batch: the same fraction of its groups as the task's
            // fraction of the largest phase's.
            let groups = positions(ph).div_ceil(MR);
            let (first, last) = (task * groups / tasks, (task + 1) * groups / tasks);
            if first < last {
                let max_offset = ph.offsets.iter().copied().max().unwrap_or(0);
                tiles.run_groups(first..last, positions(ph), out_ptr, &locate, max_offset);
            }
        }
    });
    for ph in phases {
        pool::recycle(ph.w_packed);
        return_address_table(ph.offsets);
    }
    pool::recycle(x_pad);
    Some(out)
}

thread_local! {
    /// Address tables (tap offsets, position bases) kept for reuse, so a steady-state training
    /// step allocates none (W2's position table is 128 KiB).
    static ADDRESS_TABLES: std::cell::RefCell<Vec<Vec<usize>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty address table: the largest one given back on this thread, if any (so in a
/// steady state it has grown to the largest table needed and never grows again).
fn address_table() -> Vec<usize> {
    ADDRESS_TABLES.with(|t| {
        let mut tables = t.borrow_mut();
        let largest = (0..tables.len()).max_by_key(|&i| tables[i].capacity());
        largest.map(|i| tables.swap_remove(i)).unwrap_or_default()
    })
}

/// Keeps `table` for the next [`address_table`] on this thread.
fn return_address_table(mut table: Vec<usize>) {
    table.clear();
    ADDRESS_TABLES.with(|t| t.borrow_mut().push(table));
}

/// The 32-channel panels the tile's columns read: `packed[panel][t][j] =
/// src[bases[t] + (panel*32 + j) * channel_stride]`, zero for channels past `c_out` (weights
/// for the forward passes, the output gradient for the weight gradient). Tasks take runs of
/// rows `t` of one panel; the address arithmetic is one add per value.
fn pack_panels(src: &[f32], c_out: usize, channel_stride: usize, bases: &[usize]) -> Vec<f32> {
    let rows = bases.len();
    let panels = c_out.div_ceil(NR);
    let mut packed = pool::take(panels * rows * NR);
    if rows == 0 {
        return packed;
    }
    let rows_per_task = rows.div_ceil(2 * rayon::current_num_threads()).max(64);
    packed
        .par_chunks_mut(rows_per_task * NR)
        .enumerate()
        .for_each(|(chunk, dst)| {
            // Rows are numbered panel-major (row = panel * rows + t), so a chunk may span
            // the end of one panel and the start of the next.
            let first = chunk * rows_per_task;
            for (i, out) in dst.chunks_exact_mut(NR).enumerate() {
                let row = first + i;
                let (panel, t) = (row / rows, row % rows);
                let base = bases[t];
                for (j, o) in out.iter_mut().enumerate() {
                    let co = panel * NR + j;
                    *o = if co < c_out {
                        src[base + co * channel_stride]
                    } else {
                        0.0
                    };
                }
            }
        });
    packed
}

/// What the tiles of one direct convolution share.
struct Tiles<'a> {
    /// The input, zero-bordered so every tap of every position is a plain read.
    x: &'a [f32],
    /// `offset(t)` of every tap, added to a position's base.
    offsets: &'a [usize],
    /// [`pack_panels`]' panels, the first tap's row of each at `panel * panel_stride`.
    w_packed: &'a [f32],
    /// Distance between panels in `w_packed` (`taps * 32` unless the taps are a slice of the
    /// packed rows).
    panel_stride: usize,
    c_out: usize,
    /// Distance in the output between consecutive channels of one position.
    channel_stride: usize,
}

/// Taps per block of the tile loop: a tile runs a block of taps over a range of position
/// groups before the next block, so the input values a block reads (8 positions x the block's
/// taps) stay in L1 while the next groups reuse them. The partial sums wait in a per-task
/// buffer in between (GEMM's K blocking).
const TAP_BLOCK: usize = 256;
/// Position groups per task at most (their partial sums: 128 KiB).
const MAX_TASK_GROUPS: usize = 128;

/// One task's scratch in [`Tiles::run`], kept per thread for reuse so that a steady-state
/// step allocates none.
struct TaskTiles {
    /// Partial sums, `[group][8 x 32]`.
    sums: Vec<f32>,
    /// Input bases of each group's 8 positions.
    bases: Vec<[usize; MR]>,
    /// Output indices (channel 0) of each group's 8 positions.
    dsts: Vec<[usize; MR]>,
}

thread_local! {
    static TASK_TILES: std::cell::RefCell<TaskTiles> = const {
        std::cell::RefCell::new(TaskTiles { sums: Vec::new(), bases: Vec::new(), dsts: Vec::new() })
    };
}

impl Tiles<'_> {
    /// Runs every tile: `positions` output positions in groups of 8, each against every weight
    /// panel. `locate(q)` gives position q's base in `x` and its output index for channel 0.
    /// Tasks own disjoint ranges of groups; a panel (`taps * 128` bytes) serves a whole range
    /// from L2 before the next, one block of [`TAP_BLOCK`] taps at a time.
    fn run(&self, positions: usize, out: SendPtr, locate: impl Fn(usize) -> (usize, usize) + Sync) {
        if positions == 0 {
            return;
        }
        let max_offset = self.offsets.iter().copied().max().unwrap_or(0);
        let groups = positions.div_ceil(MR);
        // At least 4 tasks per thread, and at most MAX_TASK_GROUPS groups per task, so that
        // a task's partial sums (1 KiB a group) stay in L2 between tap blocks.
        let per_task = groups
            .div_ceil(4 * rayon::current_num_threads())
            .clamp(1, MAX_TASK_GROUPS);
        (0..groups.div_ceil(per_task))
            .into_par_iter()
            .for_each(|task| {
                let first = task * per_task;
                let last = (first + per_task).min(groups);
                self.run_groups(first..last, positions, out, &locate, max_offset);
            });
    }

    /// The groups `groups` (of 8 positions) against every panel, on this thread.
    fn run_groups(
        &self,
        groups: std::ops::Range<usize>,
        positions: usize,
        out: SendPtr,
        locate: &impl Fn(usize) -> (usize, usize),
        max_offset: usize,
    ) {
        let (first, last) = (groups.start, groups.end);
        let taps = self.offsets.len();
        let panels = self.c_out.div_ceil(NR);
        TASK_TILES.with(|cell| {
            let TaskTiles { sums, bases, dsts } = &mut *cell.borrow_mut();
            sums.resize(sums.len().max((last - first) * MR * NR), 0.0);
            bases.clear();
            dsts.clear();
            // The last group repeats its final position to fill the tile and writes only the
            // real ones.
            for group in first..last {
                let (mut b, mut d) = ([0usize; MR], [0usize; MR]);
                for i in 0..MR {
                    (b[i], d[i]) = locate((group * MR + i).min(positions - 1));
                    assert!(b[i] + max_offset < self.x.len(), "conv_direct: read past x");
                }
                bases.push(b);
                dsts.push(d);
            }
            for panel in 0..panels {
                let wpanel = &self.w_packed[panel * self.panel_stride..][..taps * NR];
                for k0 in (0..taps).step_by(TAP_BLOCK) {
                    let k1 = (k0 + TAP_BLOCK).min(taps);
                    for (g, tile) in sums
                        .chunks_exact_mut(MR * NR)
                        .take(last - first)
                        .enumerate()
                    {
                        let tile: &mut [f32; MR * NR] = tile.try_into().expect("tile");
                        // SAFETY: available() was checked by the caller; every base + offset is
                        // inside x (asserted above), the panel slice holds (k1 - k0) * NR values.
                        unsafe {
                            tile_8x32(
                                self.x,
                                &bases[g],
                                &self.offsets[k0..k1],
                                &wpanel[k0 * NR..k1 * NR],
                                tile,
                                k0 > 0,
                            );
                        }
                    }
                }
                let channels = NR.min(self.c_out - panel * NR);
                for (g, tile) in sums.chunks_exact(MR * NR).take(last - first).enumerate() {
                    let valid = MR.min(positions - (first + g) * MR);
                    // Channel by channel: a channel's 8 values share one or two cache lines,
                    // while consecutive channels lie a plane apart, often a multiple of 4 KiB
                    // (W2's 32x32 planes), where all 32 map to one L1 set and evict each
                    // other if visited position by position.
                    for j in 0..channels {
                        let channel = (panel * NR + j) * self.channel_stride;
                        for (i, &dst) in dsts[g].iter().enumerate().take(valid) {
                            // SAFETY: locate() maps positions to distinct output values of
                            // channel 0 inside out, and co * channel_stride stays inside it;
                            // each position belongs to one task, so no value is written twice.
                            unsafe {
                                *out.get().add(dst + channel) = tile[i * NR + j];
                            }
                        }
                    }
                }
            }
        });
    }
}

/// One 8 x 32 tile over the taps `offsets`: `tile[i][j] (+)= sum_t x[bases[i] + offsets[t]] *
/// wpanel[t * 32 + j]`, adding to the tile's values when `accumulate`, else replacing them.
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
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    debug_assert!(wpanel.len() >= offsets.len() * NR);
    let xp = x.as_ptr();
    let rows: [*const f32; MR] = std::array::from_fn(|i| xp.add(bases[i]));
    let wp = wpanel.as_ptr();
    let out = tile.as_mut_ptr();
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    if accumulate {
        for (i, row) in acc.iter_mut().enumerate() {
            row[0] = _mm512_loadu_ps(out.add(i * NR));
            row[1] = _mm512_loadu_ps(out.add(i * NR + 16));
        }
    }
    for (t, &off) in offsets.iter().enumerate() {
        let b0 = _mm512_loadu_ps(wp.add(t * NR));
        let b1 = _mm512_loadu_ps(wp.add(t * NR + 16));
        for (row, &src) in acc.iter_mut().zip(&rows) {
            let a = _mm512_set1_ps(*src.add(off));
            row[0] = _mm512_fmadd_ps(a, b0, row[0]);
            row[1] = _mm512_fmadd_ps(a, b1, row[1]);
        }
    }
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
    _accumulate: bool,
) {
    unreachable!("conv_direct::available() is false off x86-64")
}
