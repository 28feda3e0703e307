//! Offline GAN metrics on the project's own feature networks.
//!
//! Inception weights cannot be downloaded here, so (as MNIST GAN papers do) the project trains
//! its own small classifier per data set ([`classifier`]: a LeNet-style CNN for 28x28 images,
//! a slightly larger CNN for 32x32 CIFAR-10) and measures generated images in the space of its
//! penultimate layer:
//!
//! - [`frechet`]: the Fréchet distance between Gaussian fits of two feature sets (the FID
//!   formula, with the matrix square root done in f64 by [`linalg::sym_eigen`]);
//! - [`kid`]: the kernel distance (unbiased MMD^2, cubic polynomial kernel) over subsets, with
//!   its standard deviation and standard error;
//! - [`prdc`]: improved precision and recall (Kynkäänniemi et al. 2019, k-NN balls, k = 3),
//!   plus density and coverage (Naeem et al. 2020) from the same balls;
//! - [`classes`]: the classifier's class histogram of samples (mode coverage over the classes),
//!   the KL divergence to the data's class frequencies, the "Inception score" computed with
//!   this classifier, and the accuracy of conditional samples on the class asked for;
//! - [`swd`]: for label-free data (a folder of faces), the sliced Wasserstein distance on
//!   Laplacian-pyramid 7x7 patches (ProGAN's metric), which needs no trained network;
//! - [`monitor`]: the checks a training loop runs every N steps (Fréchet distance, class
//!   histogram, warnings when a class disappears or samples become near-duplicates);
//! - [`cli`]: `ganforge train-classifier` and `ganforge eval`.
//!
//! **Names.** These numbers are *not* FID/KID: the feature network is ours, trained on one
//! data set. Every figure is reported under a name saying so — `fd_lenet_mnist`,
//! `kid_lenet_mnist`, `precision_lenet_mnist`, ... (`{metric}_{architecture}_{dataset}`) — next
//! to `feature_net`, a short hash of the network's weights ([`classifier::weights_hash`]). Two
//! figures are comparable only when their `feature_net` hashes match.

pub mod classes;
pub mod classifier;
pub mod cli;
pub mod frechet;
pub mod kid;
pub mod linalg;
pub mod monitor;
pub mod prdc;
pub mod swd;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// A set of feature vectors: `n` rows of `dim` values, row-major, in f64 (the statistics are
/// computed in f64; the network itself runs in f32).
#[derive(Clone, Debug, PartialEq)]
pub struct Features {
    /// Number of vectors.
    pub n: usize,
    /// Values per vector.
    pub dim: usize,
    /// `n * dim` values, row `i` at `data[i * dim..(i + 1) * dim]`.
    pub data: Vec<f64>,
}

impl Features {
    /// Wraps `data` as `n = data.len() / dim` rows; errors when it does not divide.
    pub fn new(data: Vec<f64>, dim: usize) -> Result<Features> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(Error::invalid(
                "features",
                format!("{} values do not make rows of {dim}", data.len()),
            ));
        }
        if let Some(bad) = data.iter().find(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "features",
                format!("a feature is not finite ({bad}): the images or the network diverged"),
            ));
        }
        Ok(Features {
            n: data.len() / dim,
            dim,
            data,
        })
    }

    /// From f32 values (`n * dim`).
    pub fn from_f32(data: &[f32], dim: usize) -> Result<Features> {
        Features::new(data.iter().map(|&v| v as f64).collect(), dim)
    }

    /// From a `[N, F]` tensor.
    pub fn from_tensor(t: &Tensor) -> Result<Features> {
        let (_, f) = t.shape().dims2("features")?;
        Features::from_f32(&t.to_vec(), f)
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The rows at `indices`, in that order (indices must be `< n`).
    pub fn select(&self, indices: &[usize]) -> Features {
        let mut data = Vec::with_capacity(indices.len() * self.dim);
        for &i in indices {
            data.extend_from_slice(self.row(i));
        }
        Features {
            n: indices.len(),
            dim: self.dim,
            data,
        }
    }

    /// The first `n` rows (all when `n >= self.n`).
    pub fn head(&self, n: usize) -> Features {
        let n = n.min(self.n);
        Features {
            n,
            dim: self.dim,
            data: self.data[..n * self.dim].to_vec(),
        }
    }
}

/// The metric key `{metric}_{net}`, e.g. `metric_key("fd", "lenet_mnist")` is
/// `"fd_lenet_mnist"`.
pub fn metric_key(metric: &str, net: &str) -> String {
    format!("{metric}_{net}")
}

/// `k` distinct indices drawn uniformly from `0..n` (a partial Fisher-Yates shuffle), in the
/// order drawn. Deterministic for a given `rng` state. `k` is capped at `n`.
pub fn sample_without_replacement(n: usize, k: usize, rng: &mut crate::Rng) -> Vec<usize> {
    let k = k.min(n);
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..k {
        let j = i + rng.below(n - i);
        idx.swap(i, j);
    }
    idx.truncate(k);
    idx
}
