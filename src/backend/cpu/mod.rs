//! CPU kernel helpers shared by the ops: the parallel loops every kernel is built from.
//!
//! Each op's own CPU kernel lives in its op file (`src/ops/<op>.rs`), next to its shape rule
//! and backward rule. What is here is the machinery they share. Work is split with rayon only
//! when it is large enough to pay for the split.

pub mod gemm;
pub mod pool;

use rayon::prelude::*;

/// Below this many elements an elementwise loop runs on one thread.
pub const PAR_THRESHOLD: usize = 1 << 15;

/// `out[i] = f(i)` for every i, in parallel chunks when large.
pub fn fill_indexed(out: &mut [f32], f: impl Fn(usize) -> f32 + Sync) {
    if out.len() < PAR_THRESHOLD {
        for (i, o) in out.iter_mut().enumerate() {
            *o = f(i);
        }
    } else {
        out.par_chunks_mut(PAR_THRESHOLD / 4)
            .enumerate()
            .for_each(|(c, chunk)| {
                let base = c * (PAR_THRESHOLD / 4);
                for (i, o) in chunk.iter_mut().enumerate() {
                    *o = f(base + i);
                }
            });
    }
}

/// `out[i] = f(a[i])`, in parallel chunks when large.
pub fn map_unary(a: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = pool::take(a.len());
    fill_indexed(&mut out, |i| f(a[i]));
    out
}

/// Runs `f(row_index, row)` over the rows of `out` (rows of `row_len` elements), in parallel
/// when there is enough work in total.
pub fn for_each_row(out: &mut [f32], row_len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if row_len == 0 {
        return;
    }
    if out.len() < PAR_THRESHOLD {
        for (r, row) in out.chunks_mut(row_len).enumerate() {
            f(r, row);
        }
    } else {
        out.par_chunks_mut(row_len)
            .enumerate()
            .for_each(|(r, row)| f(r, row));
    }
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
