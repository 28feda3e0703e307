//! The kernel distance of Bińkowski et al. 2018 ("KID" when the features are Inception's; here
//! they are this project's own, so it is reported as `kid_{net}`).
//!
//! With the cubic polynomial kernel `k(x, y) = (x . y / d + 1)^3` (`d` the feature dimension),
//! the squared maximum mean discrepancy between samples `X = {x_i}` and `Y = {y_j}` of equal
//! size `m` is estimated without bias as
//!
//! ```text
//! MMD^2 = 1/(m(m-1)) sum_{i != j} k(x_i, x_j) + 1/(m(m-1)) sum_{i != j} k(y_i, y_j)
//!         - 2/m^2 sum_{i, j} k(x_i, y_j)
//! ```
//!
//! (the estimator of their reference code, `mmd_est = "unbiased"`, also used by
//! torch-fidelity). As in the paper the estimate is averaged over `subsets` random pairs of
//! subsets of size `m` (100 subsets of 1,000 by default, fewer points when the sets are
//! smaller), and reported with the spread over subsets: `std` (population standard deviation,
//! as their code and torch-fidelity's `kernel_inception_distance_std`) and `stderr`
//! (`std_{n-1} / sqrt(subsets)`, the standard error of the mean if subsets were independent;
//! they overlap, so it is optimistic).
//!
//! Subsets are drawn deterministically from a seed ([`kid_subsets`]), and
//! [`kid_with_subsets`] takes them explicitly, so the fixture script and the tests use the very
//! same subsets. Sums are in f64.

use super::linalg::gram;
use super::{sample_without_replacement, Features};
use crate::error::{Error, Result};
use crate::tensor::Rng;

/// How [`kid`] draws its subsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KidOptions {
    /// Number of subset pairs (100 in Bińkowski et al.).
    pub subsets: usize,
    /// Points per subset (1,000 in Bińkowski et al.); capped at the smaller set's size.
    pub subset_size: usize,
    /// Seed of the subset draws.
    pub seed: u64,
}

impl Default for KidOptions {
    /// 100 subsets of 1,000, seed 0.
    fn default() -> Self {
        KidOptions {
            subsets: 100,
            subset_size: 1000,
            seed: 0,
        }
    }
}

/// The kernel distance over subsets.
#[derive(Clone, Debug, PartialEq)]
pub struct KidResult {
    /// Mean of the per-subset MMD^2 estimates: the reported figure.
    pub mean: f64,
    /// Population standard deviation of the per-subset estimates.
    pub std: f64,
    /// `std_{n-1} / sqrt(subsets)` (0 for a single subset).
    pub stderr: f64,
    /// Points per subset actually used.
    pub subset_size: usize,
    /// The per-subset estimates.
    pub values: Vec<f64>,
}

/// The subset pairs [`kid`] uses: for each of `opts.subsets`, `m` distinct indices into `X`
/// then `m` into `Y` (partial Fisher-Yates with [`Rng`] seeded by `opts.seed`), where
/// `m = min(subset_size, nx, ny)`.
pub fn kid_subsets(nx: usize, ny: usize, opts: &KidOptions) -> Vec<(Vec<usize>, Vec<usize>)> {
    let m = opts.subset_size.min(nx).min(ny);
    let mut rng = Rng::new(opts.seed);
    (0..opts.subsets)
        .map(|_| {
            let a = sample_without_replacement(nx, m, &mut rng);
            let b = sample_without_replacement(ny, m, &mut rng);
            (a, b)
        })
        .collect()
}

/// `(x . y / d + 1)^3`.
#[inline]
fn poly(dot: f64, d: f64) -> f64 {
    let t = dot / d + 1.0;
    t * t * t
}

/// The unbiased MMD^2 estimate (module docs) between two equal-size sets of rows.
pub fn mmd2_unbiased_poly(x: &Features, y: &Features) -> Result<f64> {
    if x.dim != y.dim || x.n != y.n || x.n < 2 {
        return Err(Error::invalid(
            "kid",
            format!(
                "MMD needs two sets of the same size (>= 2) and dim, got {}x{} and {}x{}",
                x.n, x.dim, y.n, y.dim
            ),
        ));
    }
    let (m, d) = (x.n as f64, x.dim as f64);
    let sum_off_diag = |g: &[f64], n: usize| -> f64 {
        let mut s = 0.0;
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    s += poly(g[i * n + j], d);
                }
            }
        }
        s
    };
    let kxx = sum_off_diag(&gram(&x.data, &x.data, x.dim), x.n);
    let kyy = sum_off_diag(&gram(&y.data, &y.data, y.dim), y.n);
    let kxy: f64 = gram(&x.data, &y.data, x.dim)
        .iter()
        .map(|&g| poly(g, d))
        .sum();
    Ok(kxx / (m * (m - 1.0)) + kyy / (m * (m - 1.0)) - 2.0 * kxy / (m * m))
}

/// The kernel distance over the given subset pairs (indices into `x` and `y`; all subsets the
/// same size).
pub fn kid_with_subsets(
    x: &Features,
    y: &Features,
    subsets: &[(Vec<usize>, Vec<usize>)],
) -> Result<KidResult> {
    if subsets.is_empty() {
        return Err(Error::invalid("kid", "at least one subset is needed"));
    }
    let m = subsets[0].0.len();
    let mut values = Vec::with_capacity(subsets.len());
    for (a, b) in subsets {
        if a.len() != m || b.len() != m {
            return Err(Error::invalid(
                "kid",
                "every subset must have the same size",
            ));
        }
        if let Some(&bad) = a
            .iter()
            .find(|&&i| i >= x.n)
            .or(b.iter().find(|&&i| i >= y.n))
        {
            return Err(Error::invalid(
                "kid",
                format!("subset index {bad} out of range"),
            ));
        }
        values.push(mmd2_unbiased_poly(&x.select(a), &y.select(b))?);
    }
    let k = values.len() as f64;
    let mean = values.iter().sum::<f64>() / k;
    let ss: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
    let std = (ss / k).sqrt();
    let stderr = if values.len() > 1 {
        (ss / (k - 1.0)).sqrt() / k.sqrt()
    } else {
        0.0
    };
    Ok(KidResult {
        mean,
        std,
        stderr,
        subset_size: m,
        values,
    })
}

/// The kernel distance between feature sets `x` and `y` over subsets drawn as `opts` says.
pub fn kid(x: &Features, y: &Features, opts: &KidOptions) -> Result<KidResult> {
    if x.n < 2 || y.n < 2 {
        return Err(Error::invalid(
            "kid",
            format!("needs at least 2 vectors per set, got {} and {}", x.n, y.n),
        ));
    }
    kid_with_subsets(x, y, &kid_subsets(x.n, y.n, opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_are_deterministic_and_distinct() {
        let o = KidOptions {
            subsets: 3,
            subset_size: 5,
            seed: 9,
        };
        let s = kid_subsets(20, 8, &o);
        assert_eq!(s, kid_subsets(20, 8, &o));
        for (a, b) in &s {
            let mut a2 = a.clone();
            a2.sort();
            a2.dedup();
            assert_eq!(a2.len(), 5);
            assert!(b.iter().all(|&i| i < 8));
        }
    }

    #[test]
    fn same_set_has_mmd_near_zero_and_shift_is_positive() {
        let mut rng = Rng::new(1);
        let x: Vec<f64> = (0..200 * 4).map(|_| rng.normal() as f64).collect();
        let fx = Features::new(x.clone(), 4).unwrap();
        let shifted = Features::new(x.iter().map(|v| v + 1.0).collect(), 4).unwrap();
        let same = mmd2_unbiased_poly(&fx, &fx).unwrap();
        // With X = Y the estimate is -2/m^2 sum_i k(x_i, x_i) + O(1/m): small.
        assert!(same.abs() < 0.1, "{same}");
        assert!(mmd2_unbiased_poly(&fx, &shifted).unwrap() > 0.5);
    }
}
