//! The small dense linear algebra the metrics need, in f64: a symmetric eigendecomposition by
//! cyclic Jacobi rotations, the square root of a positive semi-definite matrix built on it,
//! matrix products, and a tiled kernel for Gram matrices / pairwise distances of feature rows.
//!
//! Matrices are row-major `Vec<f64>` of `n * n` values.
//!
//! **Accuracy of [`sym_eigen`].** Cyclic Jacobi applies plane rotations `A <- J^T A J` until
//! every off-diagonal entry is negligible; each rotation is orthogonal to working precision, so
//! the computed eigenvalues are those of a matrix within about `c * n * eps * ||A||_F` of `A`
//! (`eps` = 2.2e-16) and, by Weyl's inequality, each eigenvalue is off by at most that much.
//! We sweep until the off-diagonal Frobenius norm is below `1e-15 * ||A||_F` (about 6 to 10
//! sweeps for n = 128), so eigenvalues are accurate to roughly `1e-14 * ||A||_F` and the
//! eigenvector matrix is orthogonal to about `1e-14` (the tests check both on known matrices).
//! Jacobi is slower than Householder + QR (`O(n^3)` per sweep) but simple and robust, and the
//! metrics use `n <= 256` (a 128-d feature covariance takes a few milliseconds).

use crate::error::{Error, Result};
use rayon::prelude::*;

/// Eigenvalues and eigenvectors of a symmetric matrix: `A = V diag(values) V^T`.
#[derive(Clone, Debug)]
pub struct SymEigen {
    /// The eigenvalues, in ascending order.
    pub values: Vec<f64>,
    /// Row-major `n x n`; column `j` is the unit eigenvector of `values[j]`.
    pub vectors: Vec<f64>,
    /// The order of the matrix.
    pub n: usize,
    /// Jacobi sweeps it took (each sweep visits every off-diagonal pair once).
    pub sweeps: usize,
}

/// Sweeps after which [`sym_eigen`] gives up (convergence is quadratic: 6-12 are typical).
pub const MAX_SWEEPS: usize = 60;

/// Sum of squares of the strictly upper triangle.
fn off_diagonal_sq(a: &[f64], n: usize) -> f64 {
    let mut s = 0.0;
    for p in 0..n {
        for q in p + 1..n {
            s += a[p * n + q] * a[p * n + q];
        }
    }
    s
}

/// The symmetric eigendecomposition of `a` (`n x n`, row-major) by cyclic Jacobi rotations.
///
/// Only the symmetric part of `a` matters: the input is symmetrised as `(A + A^T) / 2` first.
/// Each rotation zeroes one off-diagonal pair `(p, q)` with the numerically stable formulas of
/// Rutishauser (Numerical Recipes' `jacobi`):
///
/// ```text
/// theta = (a_qq - a_pp) / (2 a_pq);  t = sgn(theta) / (|theta| + sqrt(theta^2 + 1))
/// c = 1 / sqrt(t^2 + 1);  s = t c;  tau = s / (1 + c)
/// a_pp -= t a_pq;  a_qq += t a_pq;  a_pq = 0
/// for r != p, q:  a_rp -= s (a_rq + tau a_rp);  a_rq += s (a_rp_old - tau a_rq)
/// V <- V J  (the same update on V's columns p and q)
/// ```
///
/// `t` is the smaller root of `t^2 + 2 theta t - 1 = 0`, so the rotation angle is at most
/// pi/4 and the off-diagonal mass `sum a_pq^2` strictly decreases. Stops when it is below
/// `(1e-15 ||A||_F)^2`. Errors on a non-finite entry or on no convergence in
/// [`MAX_SWEEPS`] sweeps (which does not happen for finite input).
pub fn sym_eigen(a: &[f64], n: usize) -> Result<SymEigen> {
    if a.len() != n * n {
        return Err(Error::invalid(
            "sym_eigen",
            format!("{} values for a {n}x{n} matrix", a.len()),
        ));
    }
    if let Some(bad) = a.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(
            "sym_eigen",
            format!("the matrix has a non-finite entry ({bad})"),
        ));
    }
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            m[i * n + j] = 0.5 * (a[i * n + j] + a[j * n + i]);
        }
    }
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let norm_sq: f64 = m.iter().map(|x| x * x).sum();
    let tol_sq = (1e-15f64).powi(2) * norm_sq;
    let mut sweeps = 0;
    while off_diagonal_sq(&m, n) > tol_sq && norm_sq > 0.0 {
        if sweeps == MAX_SWEEPS {
            return Err(Error::invalid(
                "sym_eigen",
                format!("Jacobi did not converge in {MAX_SWEEPS} sweeps"),
            ));
        }
        sweeps += 1;
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (m[p * n + p], m[q * n + q]);
                let theta = (aqq - app) / (2.0 * apq);
                let t = if theta.is_finite() {
                    theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt())
                } else {
                    // |theta| overflowed: the pair is already negligible; t ~ 1 / (2 theta).
                    0.0
                };
                if t == 0.0 {
                    m[p * n + q] = 0.0;
                    m[q * n + p] = 0.0;
                    continue;
                }
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                let tau = s / (1.0 + c);
                m[p * n + p] = app - t * apq;
                m[q * n + q] = aqq + t * apq;
                m[p * n + q] = 0.0;
                m[q * n + p] = 0.0;
                for r in 0..n {
                    if r == p || r == q {
                        continue;
                    }
                    let g = m[r * n + p];
                    let h = m[r * n + q];
                    let rp = g - s * (h + g * tau);
                    let rq = h + s * (g - h * tau);
                    m[r * n + p] = rp;
                    m[p * n + r] = rp;
                    m[r * n + q] = rq;
                    m[q * n + r] = rq;
                }
                for r in 0..n {
                    let g = v[r * n + p];
                    let h = v[r * n + q];
                    v[r * n + p] = g - s * (h + g * tau);
                    v[r * n + q] = h + s * (g - h * tau);
                }
            }
        }
    }
    // Sort ascending, permuting the eigenvector columns along.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| m[i * n + i].total_cmp(&m[j * n + j]));
    let values: Vec<f64> = order.iter().map(|&i| m[i * n + i]).collect();
    let mut vectors = vec![0.0; n * n];
    for (new_col, &old_col) in order.iter().enumerate() {
        for r in 0..n {
            vectors[r * n + new_col] = v[r * n + old_col];
        }
    }
    Ok(SymEigen {
        values,
        vectors,
        n,
        sweeps,
    })
}

/// The principal square root of a symmetric positive semi-definite matrix:
/// `A^(1/2) = V diag(sqrt(max(lambda_i, 0))) V^T`.
///
/// Eigenvalues that come out slightly negative through rounding (a rank-deficient covariance
/// gives eigenvalues of size `~1e-16 ||A||` of either sign) are clamped to 0. A clearly
/// negative eigenvalue (below `-1e-8 * max |lambda|`) means the input is not PSD: an error.
pub fn sqrtm_psd(a: &[f64], n: usize) -> Result<Vec<f64>> {
    let e = sym_eigen(a, n)?;
    let scale = e.values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if let Some(&worst) = e.values.first() {
        if worst < -1e-8 * scale {
            return Err(Error::invalid(
                "sqrtm_psd",
                format!(
                    "the matrix is not positive semi-definite (eigenvalue {worst:e}, largest \
                     magnitude {scale:e})"
                ),
            ));
        }
    }
    let roots: Vec<f64> = e.values.iter().map(|&l| l.max(0.0).sqrt()).collect();
    // out[i][j] = sum_k V[i][k] * roots[k] * V[j][k]
    let mut out = vec![0.0; n * n];
    out.par_chunks_mut(n.max(1))
        .enumerate()
        .for_each(|(i, row)| {
            let vi = &e.vectors[i * n..(i + 1) * n];
            for (j, o) in row.iter_mut().enumerate() {
                let vj = &e.vectors[j * n..(j + 1) * n];
                *o = (0..n).map(|k| vi[k] * roots[k] * vj[k]).sum();
            }
        });
    Ok(out)
}

/// `A B` for row-major `n x n` matrices.
pub fn matmul_square(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * n];
    out.par_chunks_mut(n.max(1))
        .enumerate()
        .for_each(|(i, row)| {
            for k in 0..n {
                let aik = a[i * n + k];
                if aik != 0.0 {
                    for (o, &bkj) in row.iter_mut().zip(&b[k * n..(k + 1) * n]) {
                        *o += aik * bkj;
                    }
                }
            }
        });
    out
}

/// The trace of a row-major `n x n` matrix.
pub fn trace(a: &[f64], n: usize) -> f64 {
    (0..n).map(|i| a[i * n + i]).sum()
}

/// Rows per tile of [`gram`] (rows of `a` and of `b` share the same tile size).
const TILE: usize = 64;

/// Four-lane dot product of two equal-length rows (independent lanes let the compiler use
/// SIMD without reordering a single f64 sum).
#[inline(always)]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ac, ar) = a.split_at(a.len() / 4 * 4);
    let (bc, br) = b.split_at(ac.len());
    for (x, y) in ac.chunks_exact(4).zip(bc.chunks_exact(4)) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (x, y) in ar.iter().zip(br) {
        s += x * y;
    }
    s
}

/// One tile of the Gram matrix: `out[i][j] = f(a_i . b_j, i0 + i, j0 + j)` for the rows given.
#[inline(always)]
fn gram_tile_generic(
    a: &[f64],
    b: &[f64],
    d: usize,
    out: &mut [f64],
    out_stride: usize,
    j0: usize,
) {
    let na = a.len() / d.max(1);
    let nb = b.len() / d.max(1);
    for i in 0..na {
        let ai = &a[i * d..(i + 1) * d];
        let row = &mut out[i * out_stride + j0..i * out_stride + j0 + nb];
        for (j, o) in row.iter_mut().enumerate() {
            *o = dot(ai, &b[j * d..(j + 1) * d]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gram_tile_avx2(
    a: &[f64],
    b: &[f64],
    d: usize,
    out: &mut [f64],
    out_stride: usize,
    j0: usize,
) {
    gram_tile_generic(a, b, d, out, out_stride, j0)
}

fn gram_tile(a: &[f64], b: &[f64], d: usize, out: &mut [f64], out_stride: usize, j0: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            unsafe { gram_tile_avx2(a, b, d, out, out_stride, j0) };
            return;
        }
    }
    gram_tile_generic(a, b, d, out, out_stride, j0)
}

/// The Gram matrix `G[i][j] = a_i . b_j` of the rows of `a` (`na x d`) and `b` (`nb x d`),
/// row-major `na x nb`, in f64, parallel over blocks of rows of `a`.
pub fn gram(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let na = a.len().checked_div(d).unwrap_or(0);
    let nb = b.len().checked_div(d).unwrap_or(0);
    let mut out = vec![0.0; na * nb];
    if na == 0 || nb == 0 {
        return out;
    }
    out.par_chunks_mut(TILE * nb)
        .enumerate()
        .for_each(|(bi, block)| {
            let rows = block.len() / nb;
            let a_blk = &a[bi * TILE * d..(bi * TILE + rows) * d];
            for j0 in (0..nb).step_by(TILE) {
                let cols = TILE.min(nb - j0);
                gram_tile(a_blk, &b[j0 * d..(j0 + cols) * d], d, block, nb, j0);
            }
        });
    out
}

/// Squared Euclidean distances `D[i][j] = |a_i - b_j|^2 = |a_i|^2 + |b_j|^2 - 2 a_i . b_j`,
/// row-major `na x nb`, clamped at 0 (the expansion can round a tiny distance below zero).
pub fn sq_distances(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let norms = |x: &[f64]| -> Vec<f64> { x.chunks_exact(d.max(1)).map(|r| dot(r, r)).collect() };
    let (na2, nb2) = (norms(a), norms(b));
    let mut g = gram(a, b, d);
    let nb = nb2.len();
    if nb == 0 {
        return g;
    }
    g.par_chunks_mut(nb).enumerate().for_each(|(i, row)| {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (na2[i] + nb2[j] - 2.0 * *v).max(0.0);
        }
    });
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_by_two_and_diagonal() {
        let e = sym_eigen(&[2.0, 1.0, 1.0, 2.0], 2).unwrap();
        assert!((e.values[0] - 1.0).abs() < 1e-15 && (e.values[1] - 3.0).abs() < 1e-15);
        let d = sym_eigen(&[3.0, 0.0, 0.0, -1.0], 2).unwrap();
        assert_eq!(d.values, vec![-1.0, 3.0]);
        assert_eq!(d.sweeps, 0);
    }

    #[test]
    fn gram_and_distances_match_naive() {
        let d = 7;
        let a: Vec<f64> = (0..130 * d)
            .map(|i| ((i * 37 % 101) as f64) / 50.0 - 1.0)
            .collect();
        let b: Vec<f64> = (0..70 * d)
            .map(|i| ((i * 53 % 97) as f64) / 40.0 - 1.2)
            .collect();
        let g = gram(&a, &b, d);
        let dist = sq_distances(&a, &b, d);
        for i in 0..130 {
            for j in 0..70 {
                let (ai, bj) = (&a[i * d..(i + 1) * d], &b[j * d..(j + 1) * d]);
                let want: f64 = ai.iter().zip(bj).map(|(x, y)| x * y).sum();
                assert!((g[i * 70 + j] - want).abs() < 1e-12);
                let want: f64 = ai.iter().zip(bj).map(|(x, y)| (x - y) * (x - y)).sum();
                assert!((dist[i * 70 + j] - want).abs() < 1e-11);
            }
        }
    }

    #[test]
    fn sqrtm_squares_back() {
        // A = B B^T is PSD; sqrt(A)^2 = A.
        let n = 9;
        let b: Vec<f64> = (0..n * n)
            .map(|i| ((i * 31 % 17) as f64) / 8.0 - 1.0)
            .collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| b[i * n + k] * b[j * n + k]).sum();
            }
        }
        let r = sqrtm_psd(&a, n).unwrap();
        let rr = matmul_square(&r, &r, n);
        for (x, y) in rr.iter().zip(&a) {
            assert!((x - y).abs() < 1e-10 * trace(&a, n), "{x} vs {y}");
        }
        assert!(sqrtm_psd(&[-1.0, 0.0, 0.0, 1.0], 2).is_err());
    }
}
