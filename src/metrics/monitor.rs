//! Watching a GAN while it trains: every N steps, draw a few hundred samples, embed them with
//! the feature network and log the Fréchet distance to the real data, the class histogram, and
//! the fraction of near-duplicate samples — with warnings when a class disappears or the
//! samples collapse onto each other, so mode collapse shows up early rather than in the final
//! grid.
//!
//! ```no_run
//! # use ganforge::metrics::monitor::{Monitor, MonitorConfig};
//! # use ganforge::metrics::classifier::Classifier;
//! # fn demo(g: &ganforge::gan::Generator, real: &ganforge::data::Dataset) -> ganforge::Result<()> {
//! let clf = Classifier::load("assets/classifiers/lenet_mnist.safetensors".as_ref())?;
//! let monitor = Monitor::new(clf, real, MonitorConfig::default())?;
//! let report = monitor.check_generator(g)?;
//! for (name, value) in &report.values { println!("{name} {value}"); } // -> MetricsLog::log
//! for w in &report.warnings { eprintln!("warning: {w}"); }
//! # Ok(()) }
//! ```
//!
//! The Fréchet distance here uses `n` samples (500 by default) and is biased upwards at that
//! size: compare it only within a run, not with `ganforge eval` figures at n = 10,000.

use super::classes::{class_stats, conditional_accuracy, frequencies};
use super::classifier::{Embedding, LoadedClassifier};
use super::frechet::{frechet_distance, GaussianStats};
use super::linalg::sq_distances;
use super::{metric_key, sample_without_replacement, Features};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gan::Generator;
use crate::tensor::{Rng, Tensor};
use crate::Device;

/// Settings of a [`Monitor`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MonitorConfig {
    /// Samples drawn per check (and real images in the reference).
    pub n: usize,
    /// A sample is a near-duplicate when its nearest other sample is closer than this
    /// fraction of the real images' median nearest-neighbour distance (in feature space).
    pub duplicate_ratio: f64,
    /// Warn when more than this fraction of the samples are near-duplicates.
    pub duplicate_warn_fraction: f64,
    /// Warn when a class gets less than this fraction of its share in the real data.
    pub missing_class_ratio: f64,
    /// Seed of the choice of real images.
    pub seed: u64,
}

impl Default for MonitorConfig {
    /// 500 samples; near-duplicate below 0.1x the real median NN distance, warning above 5%
    /// of samples; a class "disappears" below 20% of its real share.
    fn default() -> Self {
        MonitorConfig {
            n: 500,
            duplicate_ratio: 0.1,
            duplicate_warn_fraction: 0.05,
            missing_class_ratio: 0.2,
            seed: 0,
        }
    }
}

/// The result of one check.
#[derive(Clone, Debug, PartialEq)]
pub struct MonitorReport {
    /// Values for the metrics log, named `{metric}_{net}`: `fd_*`, `classes_covered_*`,
    /// `class_kl_*`, `near_duplicates_*`, and `cond_acc_*` for conditional generators.
    pub values: Vec<(String, f64)>,
    /// Samples per predicted class.
    pub histogram: Vec<usize>,
    /// Human-readable warnings (empty when all looks healthy).
    pub warnings: Vec<String>,
}

/// A sampler `(z, labels) -> images`, as [`Monitor::check_with`] takes it.
pub type SampleFn<'a> = dyn FnMut(&Tensor, Option<&[usize]>) -> Result<Tensor> + 'a;

/// Reference statistics of the real data and the feature network, ready to check samples.
pub struct Monitor {
    classifier: LoadedClassifier,
    reference: GaussianStats,
    real_freq: Vec<f64>,
    real_nn_median: f64,
    cfg: MonitorConfig,
}

/// Converts images `[c, h, w]` to the shape `target` (colour, then size; see
/// [`Dataset::to_color`] and [`Dataset::resized`]); a no-op when they already match.
pub fn to_shape(images: Vec<f32>, shape: [usize; 3], target: [usize; 3]) -> Result<Vec<f32>> {
    if shape == target {
        return Ok(images);
    }
    if target[1] != target[2] {
        return Err(Error::invalid(
            "metrics",
            "the feature network's input must be square",
        ));
    }
    let ds = Dataset::new("samples", images, shape, None, 0, Vec::new())?;
    let mode = if target[0] == 1 {
        crate::data::ColorMode::Gray
    } else {
        crate::data::ColorMode::Rgb
    };
    Ok(ds.to_color(mode).resized(target[1])?.images)
}

/// Each row's distance to its nearest other row.
pub fn nearest_neighbour_distances(f: &Features) -> Vec<f64> {
    let d = sq_distances(&f.data, &f.data, f.dim);
    (0..f.n)
        .map(|i| {
            (0..f.n)
                .filter(|&j| j != i)
                .map(|j| d[i * f.n + j])
                .fold(f64::INFINITY, f64::min)
                .sqrt()
        })
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        0.0
    } else {
        s[s.len() / 2]
    }
}

impl Monitor {
    /// Embeds `cfg.n` images drawn from `real` (converted to the network's input shape) as
    /// the reference.
    pub fn new(classifier: LoadedClassifier, real: &Dataset, cfg: MonitorConfig) -> Result<Self> {
        if cfg.n < 3 {
            return Err(Error::invalid("monitor", "n must be at least 3"));
        }
        let idx = sample_without_replacement(real.len(), cfg.n, &mut Rng::new(cfg.seed));
        let sub = real.subset(&idx)?;
        let target = classifier.net.arch().input_shape();
        let images = to_shape(sub.images, real.image_shape(), target)?;
        let emb = classifier.net.embed(&images, 250)?;
        let k = classifier.net.num_classes();
        let real_freq = match &sub.labels {
            Some(l) if real.num_classes == k => frequencies(l, k),
            _ => frequencies(&emb.predictions(), k),
        };
        Ok(Monitor {
            reference: GaussianStats::from_features(&emb.features)?,
            real_nn_median: median(&nearest_neighbour_distances(&emb.features)),
            real_freq,
            classifier,
            cfg,
        })
    }

    /// The network's name in metric keys (`lenet_mnist`).
    pub fn net_name(&self) -> String {
        self.classifier.net_name()
    }

    /// The feature network's hash.
    pub fn feature_net(&self) -> &str {
        &self.classifier.hash
    }

    /// Checks generated images (`[c, h, w]` each, converted to the network's input), with the
    /// classes they were asked for when the generator is conditional.
    pub fn check_samples(
        &self,
        images: Vec<f32>,
        shape: [usize; 3],
        asked: Option<&[usize]>,
    ) -> Result<MonitorReport> {
        let target = self.classifier.net.arch().input_shape();
        let images = to_shape(images, shape, target)?;
        let emb = self.classifier.net.embed(&images, 250)?;
        self.report(&emb, asked)
    }

    fn report(&self, emb: &Embedding, asked: Option<&[usize]>) -> Result<MonitorReport> {
        let net = self.net_name();
        let k = emb.num_classes;
        let fd = frechet_distance(
            &self.reference,
            &GaussianStats::from_features(&emb.features)?,
        )?;
        let stats = class_stats(&emb.probs, k, Some(&self.real_freq))?;
        let nn = nearest_neighbour_distances(&emb.features);
        let limit = self.cfg.duplicate_ratio * self.real_nn_median;
        let dups = nn.iter().filter(|&&d| d < limit).count() as f64 / nn.len().max(1) as f64;
        let mut values = vec![
            (metric_key("fd", &net), fd),
            (metric_key("classes_covered", &net), stats.covered as f64),
            (
                metric_key("class_kl", &net),
                stats.kl_to_reference.unwrap_or(f64::NAN),
            ),
            (metric_key("near_duplicates", &net), dups),
        ];
        let mut warnings = Vec::new();
        if let Some(asked) = asked {
            let acc = conditional_accuracy(&emb.predictions(), asked)?;
            values.push((metric_key("cond_acc", &net), acc));
        }
        let mut missing = Vec::new();
        for (c, (&got, &want)) in stats.fractions.iter().zip(&self.real_freq).enumerate() {
            if want > 0.0 && got < self.cfg.missing_class_ratio * want {
                let name = self
                    .classifier
                    .info
                    .class_names
                    .get(c)
                    .cloned()
                    .unwrap_or_else(|| c.to_string());
                missing.push(format!(
                    "{name} ({:.1}% of samples, {:.1}% of the data)",
                    100.0 * got,
                    100.0 * want
                ));
            }
        }
        if !missing.is_empty() {
            warnings.push(format!(
                "class{} disappearing: {}",
                if missing.len() > 1 { "es" } else { "" },
                missing.join(", ")
            ));
        }
        if dups > self.cfg.duplicate_warn_fraction {
            warnings.push(format!(
                "{:.1}% of samples are near-duplicates of another sample (feature distance \
                 < {:.2}x the real data's median): possible mode collapse",
                100.0 * dups,
                self.cfg.duplicate_ratio
            ));
        }
        Ok(MonitorReport {
            values,
            histogram: stats.histogram,
            warnings,
        })
    }

    /// Draws `cfg.n` samples with `sample(z, labels)` (`z`: `[b, latent_dim]`; labels: the
    /// classes `i % num_classes` in turn when `num_classes > 0`) and checks them. The noise is
    /// the same at every check (its own stream, seeded by `cfg.seed`), so the logged curve
    /// follows the generator, not the noise, and the training's random streams are untouched
    /// (a resumed run stays bit-identical).
    ///
    /// In a training loop, with the EMA generator when there is one:
    ///
    /// ```ignore
    /// let report = monitor.check_with(gan.latent_dim(), classes, &mut |z, y| gan.generate(z, y, use_ema))?;
    /// let values: Vec<(&str, f64)> = report.values.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    /// metrics_log.log(step, &values)?;
    /// ```
    pub fn check_with(
        &self,
        latent_dim: usize,
        num_classes: usize,
        sample: &mut SampleFn<'_>,
    ) -> Result<MonitorReport> {
        let n = self.cfg.n;
        let mut rng = Rng::new(self.cfg.seed ^ NOISE_STREAM);
        let asked: Option<Vec<usize>> =
            (num_classes > 0).then(|| (0..n).map(|i| i % num_classes).collect());
        let mut images = Vec::new();
        let mut shape = None;
        for start in (0..n).step_by(250) {
            let b = 250.min(n - start);
            let z = Tensor::randn(0.0, 1.0, [b, latent_dim], &mut rng, &Device::Cpu);
            let labels = asked.as_ref().map(|a| &a[start..start + b]);
            let x = sample(&z, labels)?;
            shape = match x.dims() {
                [_, c, h, w] => Some([*c, *h, *w]),
                _ => {
                    return Err(Error::invalid(
                        "monitor",
                        "the generator makes 2-D points; use the toy mode coverage instead",
                    ))
                }
            };
            images.extend(x.to_vec());
        }
        let shape = shape.ok_or_else(|| Error::invalid("monitor", "n must be at least 1"))?;
        self.check_samples(images, shape, asked.as_deref())
    }

    /// [`Monitor::check_with`] on a [`Generator`] (sampled in eval mode).
    pub fn check_generator(&self, g: &Generator) -> Result<MonitorReport> {
        self.check_with(g.latent_dim(), g.num_classes(), &mut |z, y| {
            g.generate(z, y)
        })
    }
}

/// Seed offset of the monitor's noise stream.
const NOISE_STREAM: u64 = 0x006D_6F6E_6974_6F72;

/// True for the metrics-log names a [`RunMonitor`] writes (`fd_*`, `classes_covered_*`,
/// `class_kl_*`, `near_duplicates_*`, `cond_acc_*`; `modes_covered_*`, `high_quality_*`),
/// e.g. to keep them out of a loss plot.
pub fn is_monitor_metric(name: &str) -> bool {
    [
        "fd_",
        "classes_covered_",
        "class_kl_",
        "near_duplicates_",
        "cond_acc_",
        "modes_covered_",
        "high_quality_",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// Draws the Fréchet-distance curve of a run (e.g. `OUT/fd.png`) from the `fd_*` entries of
/// its metrics log, as [`crate::io::read_metrics`] returns them; nothing when there are none.
pub fn plot_fd(
    rows: &[(u64, std::collections::BTreeMap<String, f64>)],
    png: &std::path::Path,
) -> Result<()> {
    let mut series: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for (step, values) in rows {
        for (k, v) in values {
            if k.starts_with("fd_") {
                series
                    .entry(k.clone())
                    .or_default()
                    .push((*step as f64, *v));
            }
        }
    }
    if series.is_empty() {
        return Ok(());
    }
    let series: Vec<(String, Vec<(f64, f64)>)> = series.into_iter().collect();
    crate::io::plot_lines(
        png,
        "Fréchet distance to the real data (own feature network)",
        "step",
        "distance",
        &series,
        0,
    )
}

/// Points drawn per check of a 2-D model (the papers' 2,500).
pub const POINTS_PER_CHECK: usize = 2500;

/// What `ganforge train --eval-every N` runs every N steps: a [`Monitor`] for images, or the
/// mode coverage of a 2-D mixture (`modes_covered_*`, `high_quality_*`, a warning when modes
/// are missing).
pub enum RunMonitor {
    /// Images: the feature-network monitor.
    Images(Box<Monitor>),
    /// 2-D points: coverage of the mixture's modes.
    Points {
        /// The mixture the run learns.
        mixture: crate::data::toy::GaussianMixture,
        /// Its name in metric keys (`ring8`, `grid25`).
        name: String,
    },
}

impl RunMonitor {
    /// The monitor of a run on `spec`: for images, the classifier at `classifier` (default:
    /// [`super::cli::default_classifier_path`]; an error says how to train it when missing)
    /// with `real` as the reference; for 2-D data, the mixture.
    pub fn for_run(
        spec: &crate::data::DataSpec,
        real: Option<&Dataset>,
        classifier: Option<&std::path::Path>,
    ) -> Result<RunMonitor> {
        use crate::data::{toy::GaussianMixture, DataSpec};
        let name = super::cli::dataset_name(spec).to_string();
        match spec {
            DataSpec::Ring8 => {
                return Ok(RunMonitor::Points {
                    mixture: GaussianMixture::ring8(),
                    name,
                })
            }
            DataSpec::Grid25 => {
                return Ok(RunMonitor::Points {
                    mixture: GaussianMixture::grid25(),
                    name,
                })
            }
            _ => {}
        }
        let path = match classifier {
            Some(p) => p.to_path_buf(),
            None => super::cli::default_classifier_path(spec).ok_or_else(|| {
                Error::invalid(
                    "eval_every",
                    format!(
                        "{spec} has no default feature network: set eval_classifier \
                         (--eval-classifier FILE)"
                    ),
                )
            })?,
        };
        if !path.exists() {
            return Err(Error::data(
                &path,
                format!(
                    "no feature network for eval_every; train it with `ganforge \
                     train-classifier --data {spec} --out {}` or set eval_classifier \
                     (--eval-classifier FILE)",
                    path.display()
                ),
            ));
        }
        let real = real.ok_or_else(|| Error::invalid("eval_every", "no real images"))?;
        let clf = super::classifier::Classifier::load(&path)?;
        Ok(RunMonitor::Images(Box::new(Monitor::new(
            clf,
            real,
            MonitorConfig::default(),
        )?)))
    }

    /// Checks the GAN's generator (its EMA copy when `use_ema` and it has one).
    pub fn check(&self, gan: &crate::gan::Gan, use_ema: bool) -> Result<MonitorReport> {
        let classes = if gan.config().is_conditional() {
            gan.data_shape().num_classes
        } else {
            0
        };
        match self {
            RunMonitor::Images(m) => m.check_with(gan.latent_dim(), classes, &mut |z, y| {
                gan.generate(z, y, use_ema)
            }),
            RunMonitor::Points { mixture, name } => {
                let n = POINTS_PER_CHECK;
                let mut rng = Rng::new(NOISE_STREAM);
                let z = Tensor::randn(0.0, 1.0, [n, gan.latent_dim()], &mut rng, &Device::Cpu);
                let labels: Option<Vec<usize>> =
                    (classes > 0).then(|| (0..n).map(|i| i % classes).collect());
                let pts = gan.generate(&z, labels.as_deref(), use_ema)?.to_vec();
                let cov = mixture.coverage(&pts);
                let total = mixture.centres.len();
                let mut warnings = Vec::new();
                if cov.modes_covered < total {
                    warnings.push(format!(
                        "{}/{total} modes covered: the generator is missing modes",
                        cov.modes_covered
                    ));
                }
                Ok(MonitorReport {
                    values: vec![
                        (metric_key("modes_covered", name), cov.modes_covered as f64),
                        (metric_key("high_quality", name), cov.high_quality),
                    ],
                    histogram: cov.per_mode,
                    warnings,
                })
            }
        }
    }
}
