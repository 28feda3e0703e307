//! 2-D toy distributions, the standard test of mode collapse (unrolled GAN, VEEGAN, PacGAN):
//! a ring of 8 Gaussians (radius 2, std 0.02) and a 5x5 grid of Gaussians (spacing 2, std 0.05).
//! A generated point is "high quality" when it lies within 3 standard deviations of a mode; a
//! mode is "covered" when it has at least [`MIN_POINTS_PER_MODE`] high-quality points.

use crate::error::Result;
use crate::tensor::{Rng, Tensor};
use crate::Device;

/// A high-quality-point count below which a mode is not counted as covered (out of however
/// many points are evaluated; 2,500 in the papers above).
pub const MIN_POINTS_PER_MODE: usize = 20;

/// A mixture of isotropic Gaussians with equal weights.
#[derive(Clone, Debug, PartialEq)]
pub struct GaussianMixture {
    /// Mode centres.
    pub centres: Vec<[f32; 2]>,
    /// Standard deviation of every mode.
    pub std: f32,
}

/// How well a set of points covers a mixture.
#[derive(Clone, Debug, PartialEq)]
pub struct ModeCoverage {
    /// High-quality points per mode.
    pub per_mode: Vec<usize>,
    /// Modes with at least [`MIN_POINTS_PER_MODE`] high-quality points.
    pub modes_covered: usize,
    /// Fraction of points within 3 std of some mode.
    pub high_quality: f64,
}

impl GaussianMixture {
    /// 8 modes evenly spaced on a circle of radius 2, std 0.02.
    pub fn ring8() -> Self {
        let centres = (0..8)
            .map(|i| {
                let a = i as f32 * std::f32::consts::TAU / 8.0;
                [2.0 * a.cos(), 2.0 * a.sin()]
            })
            .collect();
        GaussianMixture { centres, std: 0.02 }
    }

    /// 25 modes on the grid {-4, -2, 0, 2, 4}^2, std 0.05.
    pub fn grid25() -> Self {
        let mut centres = Vec::new();
        for i in -2..=2 {
            for j in -2..=2 {
                centres.push([2.0 * i as f32, 2.0 * j as f32]);
            }
        }
        GaussianMixture { centres, std: 0.05 }
    }

    /// `n` points as a `[n, 2]` tensor: a uniformly chosen mode plus Gaussian noise.
    pub fn sample(&self, n: usize, rng: &mut Rng, device: &Device) -> Result<Tensor> {
        let mut data = Vec::with_capacity(2 * n);
        for _ in 0..n {
            let c = self.centres[rng.below(self.centres.len())];
            data.push(c[0] + self.std * rng.normal());
            data.push(c[1] + self.std * rng.normal());
        }
        Tensor::from_vec_on(data, [n, 2], device)
    }

    /// Mode coverage and sample quality of `points` (`[n, 2]`, row-major pairs).
    pub fn coverage(&self, points: &[f32]) -> ModeCoverage {
        let mut per_mode = vec![0usize; self.centres.len()];
        let mut good = 0usize;
        let n = points.len() / 2;
        let radius2 = (3.0 * self.std).powi(2);
        for p in points.chunks_exact(2) {
            let nearest = self
                .centres
                .iter()
                .enumerate()
                .map(|(i, c)| (i, (p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2)))
                .min_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((i, d2)) = nearest {
                if d2 <= radius2 {
                    per_mode[i] += 1;
                    good += 1;
                }
            }
        }
        ModeCoverage {
            modes_covered: per_mode
                .iter()
                .filter(|&&c| c >= MIN_POINTS_PER_MODE)
                .count(),
            per_mode,
            high_quality: good as f64 / n.max(1) as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_samples_cover_every_mode_with_high_quality() {
        for mix in [GaussianMixture::ring8(), GaussianMixture::grid25()] {
            let mut rng = Rng::new(3);
            let pts = mix.sample(2500, &mut rng, &Device::Cpu).unwrap().to_vec();
            let cov = mix.coverage(&pts);
            assert_eq!(cov.modes_covered, mix.centres.len());
            // 3 std of a 2-D Gaussian holds 1 - exp(-4.5) = 98.9% of its mass.
            assert!(cov.high_quality > 0.97, "{cov:?}");
        }
    }

    #[test]
    fn collapsed_samples_cover_one_mode() {
        let mix = GaussianMixture::ring8();
        let pts: Vec<f32> = (0..500).flat_map(|_| [2.0f32, 0.0]).collect();
        let cov = mix.coverage(&pts);
        assert_eq!(cov.modes_covered, 1);
        assert_eq!(cov.per_mode[0], 500);
        let far: Vec<f32> = (0..500).flat_map(|_| [0.0f32, 0.0]).collect();
        assert_eq!(mix.coverage(&far).high_quality, 0.0);
    }
}
