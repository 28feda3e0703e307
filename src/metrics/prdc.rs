//! Improved precision and recall (Kynkäänniemi et al. 2019), with density and coverage (Naeem
//! et al. 2020) from the same k-nearest-neighbour balls.
//!
//! Each set's manifold is approximated by balls around its points: the ball of `x` has radius
//! `r_k(x)`, the distance from `x` to its `k`-th nearest neighbour in its own set (`k = 3`).
//!
//! ```text
//! precision = 1/M sum_j 1[ exists i: |f_j - r_i| <= r_k(r_i) ]   (fakes inside the real manifold)
//! recall    = 1/N sum_i 1[ exists j: |r_i - f_j| <= r_k(f_j) ]   (reals inside the fake manifold)
//! density   = 1/(k M) sum_j sum_i 1[ |f_j - r_i| <= r_k(r_i) ]   (Naeem et al.; 1 when alike)
//! coverage  = 1/N sum_i 1[ exists j: |f_j - r_i| <= r_k(r_i) ]   (real balls that hold a fake)
//! ```
//!
//! As in the authors' code, the `k`-th neighbour is the `(k+1)`-th smallest distance counting
//! the point itself (distance 0), and a point on a ball's boundary is inside (`<=`). Distances
//! are Euclidean, computed in f64 with blocked Gram matrices (no `N x N` matrix is kept).

use super::linalg::sq_distances;
use super::Features;
use crate::error::{Error, Result};
use rayon::prelude::*;

/// The neighbour count of Kynkäänniemi et al.
pub const DEFAULT_K: usize = 3;

/// Rows of the distance matrix computed at a time (bounds memory at `BLOCK * N` f64).
const BLOCK: usize = 512;

/// Precision, recall, density and coverage of a generated feature set against a real one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prdc {
    /// Fraction of generated points inside the real manifold.
    pub precision: f64,
    /// Fraction of real points inside the generated manifold.
    pub recall: f64,
    /// Mean count of real balls holding each generated point, over `k`.
    pub density: f64,
    /// Fraction of real balls that hold at least one generated point.
    pub coverage: f64,
    /// The neighbour count used.
    pub k: usize,
}

/// Calls `f(i0, block)` for each block of rows of the squared distances from `a` to `b`
/// (`block` is `rows x b.n`, row-major, starting at row `i0` of `a`).
fn for_distance_blocks(
    a: &Features,
    b: &Features,
    mut f: impl FnMut(usize, &[f64]) -> Result<()>,
) -> Result<()> {
    for i0 in (0..a.n).step_by(BLOCK) {
        let rows = BLOCK.min(a.n - i0);
        let blk = sq_distances(&a.data[i0 * a.dim..(i0 + rows) * a.dim], &b.data, a.dim);
        f(i0, &blk)?;
    }
    Ok(())
}

/// The radius of each point's k-NN ball within its own set: the `(k+1)`-th smallest distance
/// from it (itself included, at distance 0). Needs more than `k` points.
pub fn knn_radii(x: &Features, k: usize) -> Result<Vec<f64>> {
    if x.n <= k || k == 0 {
        return Err(Error::invalid(
            "prdc",
            format!(
                "k-NN radii with k = {k} need k >= 1 and more than k points, got {}",
                x.n
            ),
        ));
    }
    let mut radii = vec![0.0; x.n];
    for_distance_blocks(x, x, |i0, blk| {
        let out = &mut radii[i0..i0 + blk.len() / x.n];
        out.par_iter_mut()
            .zip(blk.par_chunks(x.n))
            .for_each(|(r, row)| {
                let mut row = row.to_vec();
                let (_, kth, _) = row.select_nth_unstable_by(k, |a, b| a.total_cmp(b));
                *r = kth.sqrt();
            });
        Ok(())
    })?;
    Ok(radii)
}

/// Precision, recall, density and coverage (module docs) of `fake` against `real` with
/// k-NN balls of `k` neighbours.
pub fn prdc(real: &Features, fake: &Features, k: usize) -> Result<Prdc> {
    if real.dim != fake.dim {
        return Err(Error::invalid(
            "prdc",
            format!("feature dims differ: {} vs {}", real.dim, fake.dim),
        ));
    }
    let r_real = knn_radii(real, k)?;
    let r_fake = knn_radii(fake, k)?;
    // Squared radii, compared with squared distances.
    let r2_real: Vec<f64> = r_real.iter().map(|r| r * r).collect();
    let r2_fake: Vec<f64> = r_fake.iter().map(|r| r * r).collect();
    let mut in_real = vec![false; fake.n]; // precision
    let mut in_real_count = vec![0usize; fake.n]; // density
    let mut real_in_fake = vec![false; real.n]; // recall
    let mut real_ball_hit = vec![false; real.n]; // coverage
                                                 // Rows: fakes; columns: reals.
    for_distance_blocks(fake, real, |j0, blk| {
        let rows = blk.len() / real.n;
        let per_row: Vec<(bool, usize)> = blk
            .par_chunks(real.n)
            .map(|row| {
                let c = row.iter().zip(&r2_real).filter(|(d, r)| **d <= **r).count();
                (c > 0, c)
            })
            .collect();
        for (t, (hit, c)) in per_row.into_iter().enumerate() {
            in_real[j0 + t] = hit;
            in_real_count[j0 + t] = c;
        }
        for t in 0..rows {
            let row = &blk[t * real.n..(t + 1) * real.n];
            let rf = r2_fake[j0 + t];
            for (i, &d) in row.iter().enumerate() {
                if d <= rf {
                    real_in_fake[i] = true;
                }
                if d <= r2_real[i] {
                    real_ball_hit[i] = true;
                }
            }
        }
        Ok(())
    })?;
    let frac = |v: &[bool]| v.iter().filter(|&&b| b).count() as f64 / v.len() as f64;
    Ok(Prdc {
        precision: frac(&in_real),
        recall: frac(&real_in_fake),
        density: in_real_count.iter().sum::<usize>() as f64 / (k as f64 * fake.n as f64),
        coverage: frac(&real_ball_hit),
        k,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radii_of_points_on_a_line() {
        // 0, 1, 2, 3, 10: with k = 1 the nearest other point.
        let f = Features::new(vec![0.0, 1.0, 2.0, 3.0, 10.0], 1).unwrap();
        assert_eq!(knn_radii(&f, 1).unwrap(), vec![1.0, 1.0, 1.0, 1.0, 7.0]);
        assert_eq!(knn_radii(&f, 2).unwrap(), vec![2.0, 1.0, 1.0, 2.0, 8.0]);
        assert!(knn_radii(&f, 5).is_err());
    }
}
