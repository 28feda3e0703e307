//! CPU kernel helpers shared by the ops: the parallel loops every kernel is built from.
//!
//! Each op's own CPU kernel lives in its op file (`src/ops/<op>.rs`), next to its shape rule
//! and backward rule. What is here is the machinery they share. Work is split with rayon only
//! when it is large enough to pay for the split.

pub mod conv_direct;
pub mod conv_rows;
pub mod gemm;
pub mod pool;

use rayon::prelude::*;

/// A raw pointer that rayon tasks may share, for kernels whose tasks write disjoint parts of
/// one buffer that are not contiguous chunks (soundness is argued at each use site).
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    /// The pointer.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Below this many elements an elementwise loop runs on one thread.
pub const PAR_THRESHOLD: usize = 1 << 15;

/// Elements per parallel task for a loop over `len` elements: a few tasks per thread (for
/// balance when one thread is descheduled), never fewer than `PAR_THRESHOLD / 4` elements, so a
/// 3-million-element activation is 8 tasks on 2 threads, not 400 tasks of 32 KiB each.
pub fn chunk_len(len: usize) -> usize {
    len.div_ceil(4 * rayon::current_num_threads())
        .max(PAR_THRESHOLD / 4)
}

/// `out[i] = f(i)` for every i, in parallel chunks when large.
pub fn fill_indexed(out: &mut [f32], f: impl Fn(usize) -> f32 + Sync) {
    if out.len() < PAR_THRESHOLD {
        for (i, o) in out.iter_mut().enumerate() {
            *o = f(i);
        }
    } else {
        let chunk = chunk_len(out.len());
        out.par_chunks_mut(chunk).enumerate().for_each(|(c, part)| {
            let base = c * chunk;
            for (i, o) in part.iter_mut().enumerate() {
                *o = f(base + i);
            }
        });
    }
}

/// `out[i] = f(a[i])`, in parallel chunks when large. The inner loop is a plain zip (no index
/// arithmetic or bounds checks), so the compiler vectorises it.
pub fn map_unary(a: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = pool::take(a.len());
    let body = |(o, a): (&mut [f32], &[f32])| {
        for (o, &a) in o.iter_mut().zip(a) {
            *o = f(a);
        }
    };
    if a.len() < PAR_THRESHOLD {
        body((&mut out, a));
    } else {
        let chunk = chunk_len(a.len());
        out.par_chunks_mut(chunk)
            .zip(a.par_chunks(chunk))
            .for_each(body);
    }
    out
}

/// Runs `f(row_index, row)` over the rows of `out` (rows of `row_len` elements), in parallel
/// when there is enough work in total. A parallel task takes a block of whole rows of about
/// [`chunk_len`] elements, so short rows (a 7x7 feature map) do not become one rayon
/// task each.
pub fn for_each_row(out: &mut [f32], row_len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if row_len == 0 {
        return;
    }
    if out.len() < PAR_THRESHOLD {
        for (r, row) in out.chunks_mut(row_len).enumerate() {
            f(r, row);
        }
    } else {
        let rows_per_task = (chunk_len(out.len()) / row_len).max(1);
        out.par_chunks_mut(rows_per_task * row_len)
            .enumerate()
            .for_each(|(task, block)| {
                for (r, row) in block.chunks_mut(row_len).enumerate() {
                    f(task * rows_per_task + r, row);
                }
            });
    }
}

/// `out[i] = f(a[i], b[i])` for equal-length slices, in parallel chunks when large. The inner
/// loop is a plain zip, so the compiler vectorises it.
pub fn zip_map(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    debug_assert!(a.len() == out.len() && b.len() == out.len());
    let chunk = chunk_len(out.len());
    let body = |(o, (a, b)): (&mut [f32], (&[f32], &[f32]))| {
        for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
            *o = f(a, b);
        }
    };
    if out.len() < PAR_THRESHOLD {
        body((out, (a, b)));
    } else {
        out.par_chunks_mut(chunk)
            .zip(a.par_chunks(chunk).zip(b.par_chunks(chunk)))
            .for_each(body);
    }
}

/// Lanes of the f64 accumulators in [`sum_f64`] and friends: independent partial sums, so the
/// loop is not one long dependency chain of additions and the compiler vectorises it.
const LANES: usize = 8;

/// `sum_i x[i]`, accumulated in f64 over 8 independent lanes.
pub fn sum_f64(x: &[f32]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f64 = chunks.remainder().iter().map(|&v| v as f64).sum();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += c[l] as f64;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `sum_i (x[i] - mean)^2` in f64 over 8 lanes (the second pass of a two-pass variance).
pub fn sum_sq_dev_f64(x: &[f32], mean: f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum();
    for c in chunks {
        for l in 0..LANES {
            let d = c[l] as f64 - mean;
            acc[l] += d * d;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// `(sum_i a[i], sum_i a[i] * b[i])` in f64 over 8 lanes (batch norm's backward sums).
pub fn sum_and_dot_f64(a: &[f32], b: &[f32]) -> (f64, f64) {
    debug_assert_eq!(a.len(), b.len());
    let (mut sa, mut sab) = ([0.0f64; LANES], [0.0f64; LANES]);
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (mut ta, mut tab) = (0.0f64, 0.0f64);
    for (&x, &y) in ca.remainder().iter().zip(cb.remainder()) {
        ta += x as f64;
        tab += x as f64 * y as f64;
    }
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            sa[l] += x[l] as f64;
            sab[l] += x[l] as f64 * y[l] as f64;
        }
    }
    (sa.iter().sum::<f64>() + ta, sab.iter().sum::<f64>() + tab)
}

/// `[a, b, inner] -> [b, a, inner]`: swaps the two outer dims of a row-major buffer with
/// contiguous block copies (e.g. conv's `[N, C, H*W]` <-> `[C, N, H*W]` around a GEMM).
pub fn swap_outer_dims(x: &[f32], a: usize, b: usize, inner: usize) -> Vec<f32> {
    let mut out = pool::take(x.len());
    for_each_row(&mut out, (a * inner).max(1), |j, out_block| {
        for i in 0..a {
            out_block[i * inner..(i + 1) * inner]
                .copy_from_slice(&x[(i * b + j) * inner..][..inner]);
        }
    });
    out
}
