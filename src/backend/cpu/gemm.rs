//! GEMM, the engine's own: `C[M, N] (+)= A[M, K] · B[K, N]` in f32, no BLAS.
//!
//! Operands are read through strides ([`MatRef`]), so a transposed A or B costs nothing: the
//! packing step below reads it in whatever order it is stored.
//!
//! The structure is the classic Goto/BLIS one:
//! - loop `jc` over column blocks of width `NC`, loop `pc` over depth blocks of `KC`;
//! - pack `B[pc.., jc..]` into panels of `NR` columns, `[panel][p][NR]`, zero-padded;
//! - in parallel tasks (an `MC`-row block of A times a range of B panels), pack
//!   `A[ic.., pc..]` into panels of `MR` rows, `[panel][p][MR]`, then for each pair of panels
//!   run the microkernel, which keeps an `MR x NR` tile of C in registers for all `kc` steps:
//!   `C[i, j] += sum_p Apanel[p][i] * Bpanel[p][j]`.
//!
//! Microkernels, picked once at run time: AVX-512F (8 x 32), AVX2+FMA (6 x 16), and a
//! portable one (4 x 16, plain Rust that the compiler vectorises) that is correct everywhere.
//! Edge tiles (M or N not a multiple of the tile) run the same kernel into a scratch tile.

use super::SendPtr;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Depth of a packed block: `MR * KC` and `KC * NR` panels stay in L1/L2.
const KC: usize = 256;
/// Rows of A per task block (a multiple of every MR below: 8, 6, 4). GEMMs with at most this
/// many rows (conv weights up to 144 output channels, a batch of 64) take [`gemm_small_m`].
const MC: usize = 144;
// Task blocks must start on a panel boundary of every microkernel (MR = 8, 6 or 4).
const _: () = assert!(MC.is_multiple_of(8) && MC.is_multiple_of(6) && MC.is_multiple_of(4));
/// Columns of B per packed block.
const NC: usize = 4096;
/// The largest microkernel tile below (AVX-512's 8 x 32): sizes the per-task scratch buffers.
const MAX_MR: usize = 8;
/// See [`MAX_MR`].
const MAX_NR: usize = 32;

/// A read-only strided view of a matrix: element `(i, j)` is at `i * row_stride + j * col_stride`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// The backing data.
    pub data: &'a [f32],
    /// Distance between rows, in elements.
    pub row_stride: usize,
    /// Distance between columns, in elements.
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major matrix with `cols` columns.
    pub fn row_major(data: &'a [f32], cols: usize) -> Self {
        MatRef {
            data,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose, as a view (no copy).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.row_stride + j * self.col_stride]
    }
}

/// A microkernel: `C[0..MR, 0..NR] (+)= Apanel · Bpanel` over `kc` steps.
/// `a` holds `kc * mr` values (`[p][i]`), `b` holds `kc * nr` (`[p][j]`), `c` is row-major with
/// row stride `ldc`. Unsafe: pointers must cover those extents and the CPU must support it.
type KernelFn =
    unsafe fn(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, accumulate: bool);

/// A microkernel and its tile size.
#[derive(Clone, Copy)]
pub struct Microkernel {
    /// Name for benches and traces.
    pub name: &'static str,
    mr: usize,
    nr: usize,
    run: KernelFn,
}

/// The fastest microkernel this CPU supports (detected once).
pub fn microkernel() -> Microkernel {
    static CHOICE: OnceLock<Microkernel> = OnceLock::new();
    *CHOICE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::env::var_os("GANFORGE_GEMM_PORTABLE").is_none() {
                if is_x86_feature_detected!("avx512f") {
                    return Microkernel {
                        name: "avx512 8x32",
                        mr: 8,
                        nr: 32,
                        run: x86::kernel_8x32_avx512,
                    };
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    return Microkernel {
                        name: "avx2+fma 6x16",
                        mr: 6,
                        nr: 16,
                        run: x86::kernel_6x16_avx2,
                    };
                }
            }
        }
        Microkernel {
            name: "portable 4x16",
            mr: 4,
            nr: 16,
            run: kernel_4x16_portable,
        }
    })
}

/// `c[i * ldc + j] = (accumulate ? c : 0) + sum_p a(i, p) * b(p, j)` for `i < m`, `j < n`.
///
/// `c` must hold at least `(m - 1) * ldc + n` values.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    if gemv(m, n, k, a, b, c, ldc, accumulate) {
        return;
    }
    gemm_with(microkernel(), m, n, k, a, b, c, ldc, accumulate)
}

/// Values per task of a matrix-vector product (below this, one thread).
const GEMV_TASK: usize = 1 << 16;

/// A matrix-vector product where its operands allow one: `N = 1` with A's rows and B's column
/// contiguous (`c[i] = dot(A[i, :], B[:, 0])`), `K = 1` with B's row contiguous (an outer
/// product, `c[i, :] = a(i, 0) * B[0, :]`), or `M = 1` with B's rows contiguous (`c[0, :]
/// = sum_p a(0, p) * B[p, :]`, row updates). The tiled kernels would fill one of their 32
/// columns or 8 rows and pack both operands first; here each is read once (W1's last layer,
/// `[64, 6272] x [6272, 1]`: 0.32 -> 0.05 ms). Returns false (nothing done) otherwise.
#[allow(clippy::too_many_arguments)]
fn gemv(
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) -> bool {
    if m == 0 || n == 0 || k == 0 {
        return false;
    }
    if n == 1 && a.col_stride == 1 && b.row_stride == 1 {
        assert!(c.len() > (m - 1) * ldc, "gemv: C too small");
        let x = &b.data[..k];
        let rows_per_task = (GEMV_TASK / k).max(1);
        let c_ptr = SendPtr(c.as_mut_ptr());
        (0..m.div_ceil(rows_per_task))
            .into_par_iter()
            .for_each(|task| {
                for i in task * rows_per_task..((task + 1) * rows_per_task).min(m) {
                    let v = dot(&a.data[i * a.row_stride..][..k], x);
                    // SAFETY: i < m and c holds (m - 1) * ldc + 1 values (asserted); each row i
                    // belongs to one task.
                    unsafe {
                        let out = c_ptr.get().add(i * ldc);
                        *out = if accumulate { *out + v } else { v };
                    }
                }
            });
        return true;
    }
    if k == 1 && b.col_stride == 1 {
        // An outer product: c[i, :] (+)= a(i, 0) * B[0, :].
        assert!(c.len() >= (m - 1) * ldc + n, "gemv: C too small");
        let row = &b.data[..n];
        super::for_each_row(&mut c[..(m - 1) * ldc + n], ldc, |i, c_row| {
            let ai = a.at(i, 0);
            for (o, &v) in c_row.iter_mut().zip(row) {
                *o = if accumulate { *o + ai * v } else { ai * v };
            }
        });
        return true;
    }
    if m == 1 && b.col_stride == 1 {
        assert!(c.len() >= n, "gemv: C too small");
        let cols_per_task = (GEMV_TASK / k).max(64).min(n);
        c[..n]
            .par_chunks_mut(cols_per_task)
            .enumerate()
            .for_each(|(task, out)| {
                let j0 = task * cols_per_task;
                if !accumulate {
                    out.fill(0.0);
                }
                for p in 0..k {
                    let (ap, row) = (a.at(0, p), &b.data[p * b.row_stride + j0..][..out.len()]);
                    for (o, &v) in out.iter_mut().zip(row) {
                        *o += ap * v;
                    }
                }
            });
        return true;
    }
    false
}

/// `sum_p x[p] * y[p]` in 16 f32 lanes (vectorised by the compiler), lanes added in order.
fn dot(x: &[f32], y: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0.0f32; LANES];
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (xs, ys) in xc.zip(yc) {
        for l in 0..LANES {
            acc[l] += xs[l] * ys[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// [`gemm`] with an explicit microkernel (tests check every one the CPU supports).
#[allow(clippy::too_many_arguments)]
pub fn gemm_with(
    uk: Microkernel,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= (m - 1) * ldc + n, "gemm: C too small");
    assert!(
        uk.mr <= MAX_MR && uk.nr <= MAX_NR,
        "gemm: tile larger than the scratch"
    );
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(0.0);
            }
        }
        return;
    }
    let threads = rayon::current_num_threads();
    if m <= MC && n.div_ceil(uk.nr) < threads && k >= 2 * KC {
        return gemm_split_depth(uk, m, n, k, a, b, c, ldc, accumulate, threads);
    }
    if m <= MC {
        let mut packed_a = super::pool::take(m.div_ceil(uk.mr) * uk.mr * k);
        gemm_small_m(uk, m, n, k, a, b, c, ldc, accumulate, &mut packed_a);
        super::pool::recycle(packed_a);
        return;
    }
    let (mr, nr) = (uk.mr, uk.nr);
    let c_ptr = SendPtr(c.as_mut_ptr());
    // Sized for the largest block; reused across blocks and returned to the pool at the end.
    let mut packed_b = super::pool::take(n.min(NC).div_ceil(nr) * nr * k.min(KC));
    let mut packed_a = super::pool::take(m.div_ceil(mr) * mr * k.min(KC));
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        let b_panels = nc.div_ceil(nr);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            // Pack B[pc..pc+kc, jc..jc+nc] into NR-column panels.
            packed_b[..b_panels * kc * nr]
                .par_chunks_mut(kc * nr)
                .enumerate()
                .for_each(|(panel, dst)| {
                    let j0 = jc + panel * nr;
                    pack_b_panel(b, pc, kc, j0, nr.min(jc + nc - j0), nr, dst);
                });
            let acc = accumulate || pc > 0;
            // Tasks: row blocks of A x ranges of B panels, enough for every thread.
            let mc_rows = block_rows(m, mr, threads);
            let m_blocks = m.div_ceil(mc_rows);
            let n_chunks = (2 * threads).div_ceil(m_blocks).clamp(1, b_panels);
            let panels_per_chunk = b_panels.div_ceil(n_chunks);
            let packed_b = &packed_b[..b_panels * kc * nr];
            // Pack all of A[.., pc..pc+kc] into MR-row panels once, shared by every task (the
            // block height is a multiple of MR, so block `mb` starts at panel `mb * mc_rows / MR`).
            let a_panels_total = m.div_ceil(mr);
            packed_a[..a_panels_total * kc * mr]
                .par_chunks_mut(kc * mr)
                .enumerate()
                .for_each(|(panel, dst)| {
                    let i0 = panel * mr;
                    pack_a_panel(a, i0, mr.min(m - i0), pc, kc, mr, dst);
                });
            let packed_a = &packed_a[..a_panels_total * kc * mr];
            (0..m_blocks * n_chunks).into_par_iter().for_each(|task| {
                let (mb, nb) = (task / n_chunks, task % n_chunks);
                let ic = mb * mc_rows;
                let mc = mc_rows.min(m - ic);
                let a_panels = mc.div_ceil(mr);
                let block_a = &packed_a[(ic / mr) * kc * mr..];
                {
                    let first = nb * panels_per_chunk;
                    let last = ((nb + 1) * panels_per_chunk).min(b_panels);
                    let mut scratch = [0.0f32; MAX_MR * MAX_NR];
                    for jp in first..last {
                        let j0 = jc + jp * nr;
                        let cols = nr.min(n - j0);
                        let b_panel = packed_b[jp * kc * nr..].as_ptr();
                        for ip in 0..a_panels {
                            let i0 = ic + ip * mr;
                            let a_panel = block_a[ip * kc * mr..].as_ptr();
                            // SAFETY: every task writes only rows [ic, ic+mc) x cols of its own B
                            // panels, so writes never overlap; extents were checked above; the
                            // kernel was selected for this CPU.
                            unsafe {
                                run_tile(
                                    uk,
                                    kc,
                                    a_panel,
                                    b_panel,
                                    c_ptr.get().add(i0 * ldc + j0),
                                    ldc,
                                    (mr.min(m - i0), cols),
                                    acc,
                                    &mut scratch,
                                );
                            }
                        }
                    }
                }
            });
        }
    }
    super::pool::recycle(packed_b);
    super::pool::recycle(packed_a);
}

/// Height of the row blocks the blocked path splits A into: at most `MC`, a multiple of `mr`,
/// and as even as possible over a multiple of `threads` blocks, so that no thread is left with
/// one extra block at the end (M = 1024 in blocks of 144 gave 7 full blocks and a 16-row one:
/// one thread ran 4 blocks while the other ran 3.1).
fn block_rows(m: usize, mr: usize, threads: usize) -> usize {
    let blocks = m.div_ceil(MC).next_multiple_of(threads.max(1));
    m.div_ceil(blocks).next_multiple_of(mr).min(MC)
}

/// [`gemm_with`] for a short, narrow C with a long depth, fewer B panels than threads (a
/// weight gradient with one input channel: `dW[64, 16]` summed over 12,544 positions): the
/// depth is cut into one range per thread, each range's product goes to its own partial C,
/// and the partials are summed in a fixed order (so results do not depend on scheduling).
#[allow(clippy::too_many_arguments)]
fn gemm_split_depth(
    uk: Microkernel,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    threads: usize,
) {
    let parts = threads.min(k / KC).max(1);
    let per = k.div_ceil(parts);
    // Every part's buffers are taken here, before the parallel region: taken inside it, how
    // many exist at once would depend on scheduling (two parts in flight need two; one thread
    // running both needs one), and a steady-state step could miss the pool.
    let mut work: Vec<(Vec<f32>, Vec<f32>)> = (0..parts)
        .map(|t| {
            let depth = per.min(k - (t * per).min(k));
            let packed_a = super::pool::take(m.div_ceil(uk.mr) * uk.mr * depth.max(1));
            (super::pool::take(m * n), packed_a)
        })
        .collect();
    work.par_iter_mut()
        .enumerate()
        .for_each(|(t, (part, packed_a))| {
            let (k0, k1) = ((t * per).min(k), ((t + 1) * per).min(k));
            // A's columns and B's rows from k0 on: the same strides, a later start.
            let a_part = MatRef {
                data: &a.data[k0 * a.col_stride..],
                ..a
            };
            let b_part = MatRef {
                data: &b.data[k0 * b.row_stride..],
                ..b
            };
            gemm_small_m(uk, m, n, k1 - k0, a_part, b_part, part, n, false, packed_a);
        });
    let partials: Vec<&Vec<f32>> = work.iter().map(|(part, _)| part).collect();
    for i in 0..m {
        for j in 0..n {
            let sum: f32 = partials.iter().map(|p| p[i * n + j]).sum();
            let dst = &mut c[i * ldc + j];
            *dst = if accumulate { *dst + sum } else { sum };
        }
    }
    for (part, packed_a) in work {
        super::pool::recycle(part);
        super::pool::recycle(packed_a);
    }
}

/// [`gemm_with`] when all of A fits one `MC` block (a batch of 64 rows through a linear
/// layer, the weight of a conv): A is packed once for every depth block, then ONE parallel
/// region over ranges of B panels; each task packs one `KC x NR` B panel at a time into its
/// own scratch and runs it against every A panel. One fork-join per GEMM instead of three per
/// depth block, which is what small GEMMs (W3's MLP) paid for.
#[allow(clippy::too_many_arguments)]
fn gemm_small_m(
    uk: Microkernel,
    m: usize,
    n: usize,
    k: usize,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    packed_a_buf: &mut [f32],
) {
    let (mr, nr) = (uk.mr, uk.nr);
    let a_panels = m.div_ceil(mr);
    let k_blocks = k.div_ceil(KC);
    // packed_a (the caller's buffer of a_panels * mr * k values): for depth block `kb` (depth
    // kc), panel `ip` at `(kb * KC * a_panels + ip * kc) * mr`.
    for kb in 0..k_blocks {
        let (pc, kc) = (kb * KC, KC.min(k - kb * KC));
        let block = &mut packed_a_buf[kb * KC * a_panels * mr..][..a_panels * kc * mr];
        for (ip, dst) in block.chunks_exact_mut(kc * mr).enumerate() {
            let i0 = ip * mr;
            pack_a_panel(a, i0, mr.min(m - i0), pc, kc, mr, dst);
        }
    }
    let packed_a = &packed_a_buf[..];
    let c_ptr = SendPtr(c.as_mut_ptr());
    let b_panels = n.div_ceil(nr);
    // A few tasks per thread, for balance when one thread is descheduled.
    let tasks = (4 * rayon::current_num_threads()).clamp(1, b_panels);
    let per_task = b_panels.div_ceil(tasks);
    let work = |t: usize| {
        let mut b_panel = [0.0f32; KC * MAX_NR];
        let mut scratch = [0.0f32; MAX_MR * MAX_NR];
        // Depth blocks outermost: A's block for `kb` (at most MC x KC, in L2) serves all of
        // this task's panels before the next block is read.
        for kb in 0..k_blocks {
            let (pc, kc) = (kb * KC, KC.min(k - kb * KC));
            for jp in t * per_task..((t + 1) * per_task).min(b_panels) {
                let j0 = jp * nr;
                let cols = nr.min(n - j0);
                pack_b_panel(b, pc, kc, j0, cols, nr, &mut b_panel[..kc * nr]);
                let acc = accumulate || kb > 0;
                for ip in 0..a_panels {
                    let i0 = ip * mr;
                    let a_panel = &packed_a[(kb * KC * a_panels + ip * kc) * mr..][..kc * mr];
                    // SAFETY: task t writes only the columns of its own B panels; extents
                    // were checked by gemm_with; the kernel was selected for this CPU.
                    unsafe {
                        run_tile(
                            uk,
                            kc,
                            a_panel.as_ptr(),
                            b_panel.as_ptr(),
                            c_ptr.get().add(i0 * ldc + j0),
                            ldc,
                            (mr.min(m - i0), cols),
                            acc,
                            &mut scratch,
                        );
                    }
                }
            }
        }
    };
    if tasks == 1 {
        work(0);
    } else {
        (0..tasks).into_par_iter().for_each(work);
    }
}

/// One microkernel call on the C tile at `c_tile` (`rows x cols` valid, at most `MR x NR`):
/// straight into C when the tile is whole, else into `scratch` and then the valid part.
///
/// # Safety
/// `a`/`b` must hold `kc * mr` / `kc * nr` values, `c_tile` must cover `rows` rows of `cols`
/// at stride `ldc`, and the kernel must be supported by this CPU.
#[allow(clippy::too_many_arguments)]
unsafe fn run_tile(
    uk: Microkernel,
    kc: usize,
    a: *const f32,
    b: *const f32,
    c_tile: *mut f32,
    ldc: usize,
    (rows, cols): (usize, usize),
    acc: bool,
    scratch: &mut [f32],
) {
    let (mr, nr) = (uk.mr, uk.nr);
    if rows == mr && cols == nr {
        (uk.run)(kc, a, b, c_tile, ldc, acc);
    } else {
        (uk.run)(kc, a, b, scratch.as_mut_ptr(), nr, false);
        for i in 0..rows {
            for j in 0..cols {
                let dst = c_tile.add(i * ldc + j);
                let v = scratch[i * nr + j];
                *dst = if acc { *dst + v } else { v };
            }
        }
    }
}

/// Packs `B[pc..pc+kc, j0..j0+cols]` as `dst[p * nr + j]`, zero-filling columns `cols..nr`.
/// Reads whole contiguous runs of the source: rows when B is row-major, columns when it is a
/// transposed view (so the weight-gradient GEMM's `im2col^T` operand packs at memory speed).
fn pack_b_panel(
    b: MatRef,
    pc: usize,
    kc: usize,
    j0: usize,
    cols: usize,
    nr: usize,
    dst: &mut [f32],
) {
    if cols < nr {
        dst.fill(0.0);
    }
    if b.col_stride == 1 {
        for p in 0..kc {
            let src = &b.data[(pc + p) * b.row_stride + j0..][..cols];
            dst[p * nr..p * nr + cols].copy_from_slice(src);
        }
    } else if b.row_stride == 1 {
        // A transposed view: column j of B is contiguous. Walk p outermost so the writes are
        // contiguous and the `cols` source lines being read stay in L1 across consecutive p
        // (the other order writes a 128-byte stride across the whole panel per column).
        // Blocks of 16 p x all columns: the 16-float runs read (one cache line per column)
        // and the 16 destination rows written both stay in L1.
        const PB: usize = 16;
        let cs = b.col_stride;
        let last = (j0 + cols - 1) * cs + pc + kc;
        assert!(
            last <= b.data.len() && dst.len() >= kc * nr,
            "pack_b_panel: bounds"
        );
        // Whole 8 x 8 blocks go through the SIMD transpose; what is left (a ragged panel, the
        // last kc % 8 rows) through the scalar loop below.
        let simd_p = if cols == nr && nr.is_multiple_of(8) {
            pack_b_transposed_simd(b.data, cs, pc, kc - kc % 8, j0, nr, dst)
        } else {
            0
        };
        for p0 in (simd_p..kc).step_by(PB) {
            let pn = PB.min(kc - p0);
            for j in 0..cols {
                let src = (j0 + j) * cs + pc + p0;
                for p in 0..pn {
                    // SAFETY: src + p < (j0 + cols - 1) * cs + pc + kc <= len (checked above),
                    // (p0 + p) * nr + j < kc * nr <= dst.len().
                    unsafe {
                        *dst.get_unchecked_mut((p0 + p) * nr + j) = *b.data.get_unchecked(src + p);
                    }
                }
            }
        }
    } else {
        for p in 0..kc {
            for j in 0..cols {
                dst[p * nr + j] = b.at(pc + p, j0 + j);
            }
        }
    }
}

/// Packs the first `kc` (a multiple of 8) depths of a whole transposed panel with the 8 x 8
/// SIMD transpose when the CPU has AVX (detected once); returns how many depths it packed
/// (0 when it could not run, and the caller's scalar loop does all of them).
#[allow(clippy::too_many_arguments)]
fn pack_b_transposed_simd(
    data: &[f32],
    cs: usize,
    pc: usize,
    kc: usize,
    j0: usize,
    nr: usize,
    dst: &mut [f32],
) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX: OnceLock<bool> = OnceLock::new();
        if *AVX.get_or_init(|| is_x86_feature_detected!("avx")) {
            assert!(
                kc == 0 || ((j0 + nr - 1) * cs + pc + kc <= data.len() && dst.len() >= kc * nr)
            );
            // SAFETY: AVX is available (checked); the extents were checked just above.
            unsafe { x86_pack::pack_b_transposed_8x8(data, cs, pc, kc, j0, nr, dst) };
            return kc;
        }
    }
    let _ = (data, cs, pc, kc, j0, nr, dst);
    0
}

/// Packs `A[i0..i0+rows, pc..pc+kc]` as `dst[p * mr + i]`, zero-filling rows `rows..mr`;
/// reads contiguous runs: rows of a row-major A, columns of a transposed one.
fn pack_a_panel(
    a: MatRef,
    i0: usize,
    rows: usize,
    pc: usize,
    kc: usize,
    mr: usize,
    dst: &mut [f32],
) {
    if rows < mr {
        dst.fill(0.0);
    }
    if a.col_stride == 1 {
        for i in 0..rows {
            let src = &a.data[(i0 + i) * a.row_stride + pc..][..kc];
            for (p, &v) in src.iter().enumerate() {
                dst[p * mr + i] = v;
            }
        }
    } else if a.row_stride == 1 {
        for p in 0..kc {
            let src = &a.data[(pc + p) * a.col_stride + i0..][..rows];
            dst[p * mr..p * mr + rows].copy_from_slice(src);
        }
    } else {
        for p in 0..kc {
            for i in 0..rows {
                dst[p * mr + i] = a.at(i0 + i, pc + p);
            }
        }
    }
}

/// Portable microkernel: a 4 x 16 tile in a local array, which LLVM keeps in vector
/// registers on any target.
unsafe fn kernel_4x16_portable(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    const MR: usize = 4;
    const NR: usize = 16;
    let mut acc = [[0.0f32; NR]; MR];
    let a = std::slice::from_raw_parts(a, kc * MR);
    let b = std::slice::from_raw_parts(b, kc * NR);
    for p in 0..kc {
        let bp = &b[p * NR..(p + 1) * NR];
        for i in 0..MR {
            let ai = a[p * MR + i];
            for j in 0..NR {
                acc[i][j] += ai * bp[j];
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        let dst = std::slice::from_raw_parts_mut(c.add(i * ldc), NR);
        for j in 0..NR {
            dst[j] = if accumulate { dst[j] + row[j] } else { row[j] };
        }
    }
}

/// The transposing copy of [`pack_b_panel`] in 8 x 8 register blocks.
#[cfg(target_arch = "x86_64")]
mod x86_pack {
    use std::arch::x86_64::*;

    /// `dst[p * nr + j] = data[(j0 + j) * cs + pc + p]` for `p < kc`, `j < nr` (both multiples
    /// of 8): each block loads 8 source columns' runs of 8 depths, transposes the 8 x 8 block
    /// in registers (unpack, shuffle, then swap 128-bit halves) and stores 8 rows of the panel.
    ///
    /// # Safety
    /// AVX must be available; `data` must hold `(j0 + nr - 1) * cs + pc + kc` values and `dst`
    /// `kc * nr`.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn pack_b_transposed_8x8(
        data: &[f32],
        cs: usize,
        pc: usize,
        kc: usize,
        j0: usize,
        nr: usize,
        dst: &mut [f32],
    ) {
        debug_assert!(kc.is_multiple_of(8) && nr.is_multiple_of(8));
        debug_assert!(kc == 0 || (j0 + nr - 1) * cs + pc + kc <= data.len());
        debug_assert!(dst.len() >= kc * nr);
        let (src, out) = (data.as_ptr(), dst.as_mut_ptr());
        for p0 in (0..kc).step_by(8) {
            for jb in (0..nr).step_by(8) {
                let col = |j: usize| _mm256_loadu_ps(src.add((j0 + jb + j) * cs + pc + p0));
                let (r0, r1, r2, r3) = (col(0), col(1), col(2), col(3));
                let (r4, r5, r6, r7) = (col(4), col(5), col(6), col(7));
                // Interleave pairs of columns, then pairs of pairs: each 128-bit half of
                // u_k then holds 4 depths' worth of 4 columns.
                let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
                let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
                let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
                let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                // Low halves give depths 0-3, high halves depths 4-7.
                let rows = [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ];
                for (p, row) in rows.into_iter().enumerate() {
                    _mm256_storeu_ps(out.add((p0 + p) * nr + jb), row);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// AVX2+FMA: 6 rows x 16 columns = 12 ymm accumulators; per step 2 loads of B, 6
    /// broadcasts of A, 12 FMAs.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn kernel_6x16_avx2(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        const MR: usize = 6;
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        for p in 0..kc {
            let b0 = _mm256_loadu_ps(b.add(p * 16));
            let b1 = _mm256_loadu_ps(b.add(p * 16 + 8));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*a.add(p * MR + i));
                row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            let dst = c.add(i * ldc);
            for (h, &v) in row.iter().enumerate() {
                let out = if accumulate {
                    _mm256_add_ps(_mm256_loadu_ps(dst.add(8 * h)), v)
                } else {
                    v
                };
                _mm256_storeu_ps(dst.add(8 * h), out);
            }
        }
    }

    /// AVX-512F: 8 rows x 32 columns = 16 zmm accumulators; per step 2 loads of B, 8
    /// broadcasts of A, 16 FMAs.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn kernel_8x32_avx512(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        const MR: usize = 8;
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for p in 0..kc {
            let b0 = _mm512_loadu_ps(b.add(p * 32));
            let b1 = _mm512_loadu_ps(b.add(p * 32 + 16));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(p * MR + i));
                row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            let dst = c.add(i * ldc);
            for (h, &v) in row.iter().enumerate() {
                let out = if accumulate {
                    _mm512_add_ps(_mm512_loadu_ps(dst.add(16 * h)), v)
                } else {
                    v
                };
                _mm512_storeu_ps(dst.add(16 * h), out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Rng;

    /// Every microkernel this CPU can run.
    fn kernels() -> Vec<Microkernel> {
        let mut ks = vec![Microkernel {
            name: "portable 4x16",
            mr: 4,
            nr: 16,
            run: kernel_4x16_portable,
        }];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                ks.push(Microkernel {
                    name: "avx2",
                    mr: 6,
                    nr: 16,
                    run: x86::kernel_6x16_avx2,
                });
            }
            if is_x86_feature_detected!("avx512f") {
                ks.push(Microkernel {
                    name: "avx512",
                    mr: 8,
                    nr: 32,
                    run: x86::kernel_8x32_avx512,
                });
            }
        }
        ks
    }

    /// The reference: a naive triple loop in f64.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        m: usize,
        n: usize,
        k: usize,
        a: MatRef,
        b: MatRef,
        c0: &[f32],
        ldc: usize,
        accumulate: bool,
    ) -> Vec<f64> {
        let mut out = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = if accumulate {
                    c0[i * ldc + j] as f64
                } else {
                    0.0
                };
                for p in 0..k {
                    s += a.at(i, p) as f64 * b.at(p, j) as f64;
                }
                out[i * n + j] = s;
            }
        }
        out
    }

    /// Runs `run(a, b, c, ldc)` on fresh random operands of `m x k` and `k x n` (stored
    /// transposed when `ta` / `tb`, the view undoing it) and a C with padding between rows, and
    /// checks C against [`reference`] within `tol * (1 + |want|) * sqrt(k)`, and that the
    /// padding is untouched.
    #[allow(clippy::too_many_arguments)]
    fn check_against_reference(
        what: &str,
        rng: &mut Rng,
        (m, n, k): (usize, usize, usize),
        (ta, tb): (bool, bool),
        accumulate: bool,
        tol: f64,
        run: impl FnOnce(MatRef, MatRef, &mut [f32], usize),
    ) {
        let a_data: Vec<f32> = (0..m * k).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let b_data: Vec<f32> = (0..k * n).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let a = if ta {
            MatRef::row_major(&a_data, m).t()
        } else {
            MatRef::row_major(&a_data, k)
        };
        let b = if tb {
            MatRef::row_major(&b_data, k).t()
        } else {
            MatRef::row_major(&b_data, n)
        };
        let ldc = n + 3;
        let c0: Vec<f32> = (0..m * ldc).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let mut c = c0.clone();
        run(a, b, &mut c, ldc);
        let want = reference(m, n, k, a, b, &c0, ldc, accumulate);
        let what = format!("{what} m{m} n{n} k{k} ta{ta} tb{tb} acc{accumulate}");
        for i in 0..m {
            for j in 0..n {
                let (g, w) = (c[i * ldc + j] as f64, want[i * n + j]);
                assert!(
                    (g - w).abs() <= tol * (1.0 + w.abs()) * (k as f64).sqrt(),
                    "{what}: C[{i},{j}] = {g}, want {w}"
                );
            }
            for j in n..ldc.min(c.len() - i * ldc) {
                assert_eq!(
                    c[i * ldc + j],
                    c0[i * ldc + j],
                    "{what}: wrote past column n"
                );
            }
        }
    }

    /// The matrix-vector paths of [`gemm`] (N = 1 as dot products, K = 1 as an outer product,
    /// M = 1 as row updates) against the f64 loop: each size must take one with untransposed
    /// operands; the other layouts either take one too or fall through to the tiled kernels.
    #[test]
    fn gemv_paths_match_naive_f64() {
        let mut rng = Rng::new(5);
        // (m, n, k): tails of 16 lanes, one task and several (GEMV_TASK values per task).
        for (m, n, k) in [
            (1, 1, 1),
            (5, 1, 17),
            (64, 1, 6272),
            (33, 1, 70_001),
            (1, 7, 3),
            (1, 6272, 64),
            (1, 3001, 40),
            // K = 1: outer products (one row, many rows, parallel rows).
            (1, 9, 1),
            (64, 6272, 1),
            (7, 33, 1),
        ] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                for accumulate in [false, true] {
                    check_against_reference(
                        "gemv",
                        &mut rng,
                        (m, n, k),
                        (ta, tb),
                        accumulate,
                        1e-5,
                        |a, b, c, ldc| {
                            let took = gemv(m, n, k, a, b, c, ldc, accumulate);
                            assert!(took || ta || tb, "m{m} n{n} k{k}: no matrix-vector path");
                            if !took {
                                gemm(m, n, k, a, b, c, ldc, accumulate);
                            }
                        },
                    );
                }
            }
        }
    }

    #[test]
    fn gemm_matches_naive_f64_on_odd_sizes_every_kernel_and_layout() {
        let mut rng = Rng::new(42);
        // Sizes straddle the tile (MR, NR), block (MC, KC) and edge cases.
        let sizes = [
            (1, 1, 1),
            (3, 5, 7),
            (7, 33, 9),
            (13, 17, 300),
            (97, 65, 257),
            (100, 40, 3),
            (9, 600, 31),
            // Small-M path (M <= MC): several depth blocks and many B panels per task.
            (64, 130, 600),
            (144, 70, 513),
            // Depth split over threads (narrow N, long K), with and without a ragged end.
            (64, 16, 1030),
            (9, 3, 777),
            // The blocked path (M > MC): an MC block and a ragged one.
            (150, 65, 257),
            (301, 37, 300),
        ];
        for uk in kernels() {
            for &(m, n, k) in &sizes {
                for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                    for accumulate in [false, true] {
                        check_against_reference(
                            uk.name,
                            &mut rng,
                            (m, n, k),
                            (ta, tb),
                            accumulate,
                            1e-4,
                            |a, b, c, ldc| gemm_with(uk, m, n, k, a, b, c, ldc, accumulate),
                        );
                    }
                }
            }
        }
    }
}
