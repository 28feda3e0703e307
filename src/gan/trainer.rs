//! Training runs: the loop, the run folder, checkpoints, resume, and sampling from a checkpoint.
//!
//! A run lives in one folder (`--out`):
//!
//! ```text
//! OUT/
//!   config.toml               the fully resolved TrainConfig (rewritten on resume)
//!   metrics.jsonl             one JSON line per step: {"step":N,"epoch":E,"loss_d":..,...}
//!   loss.png                  loss curves, redrawn at every sample, checkpoint and the end
//!   fd.png                    with eval_every: the Fréchet distance to the data over steps
//!   checkpoint.safetensors    G, D, G's EMA, both optimizers, counters and RNG state (atomic)
//!   samples/step_000500.png   grids from fixed noise (conditional: one row per class)
//!   samples/latest.png        the newest grid
//!   samples/scatter_step_000500.png   (2-D toy data: real vs generated points instead)
//! ```
//!
//! **Checkpoints** hold [`Gan::state_dict`] (PyTorch names under `generator.`, `discriminator.`,
//! `generator_ema.`, `optimizer_g.`, `optimizer_d.`) and, as string metadata, everything needed
//! to continue or sample without any other file: the resolved config (TOML), the data shape,
//! the class names, the step, the data position (epoch and batch within it) and the state of
//! every random stream the loop draws from.
//!
//! **Resume** rebuilds the models from the config, loads the state dict, restores the RNG
//! streams, seeks the batcher to the saved position (each epoch's order is a permutation drawn
//! from `(seed, epoch)` alone, see [`Batcher`]), truncates `metrics.jsonl` after the checkpoint
//! step and goes on. Nothing else carries state from one step to the next, so on the CPU a run
//! stopped and resumed gives bit-identical weights and losses to one run straight through.
//!
//! **Non-finite losses** stop the run with [`TrainError::NonFinite`] before anything of that
//! step is saved: the last checkpoint stays the last good one.

use super::config::{DataShape, GanConfig, ModelKind};
use super::{Gan, Generator};
use crate::backend::Device;
use crate::data::toy::GaussianMixture;
use crate::data::{Batcher, Data, DataSpec, LoadOptions};
use crate::error::Error;
use crate::io::{self, Checkpoint, MetricsLog};
use crate::metrics::monitor::RunMonitor;
use crate::tensor::{Rng, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The checkpoint file in a run folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The resolved config in a run folder.
pub const CONFIG_FILE: &str = "config.toml";
/// The per-step metrics log in a run folder.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The loss-curve plot in a run folder.
pub const LOSS_PLOT_FILE: &str = "loss.png";
/// The Fréchet-distance plot in a run folder (with `eval_every`).
pub const FD_PLOT_FILE: &str = "fd.png";
/// The folder of sample grids in a run folder.
pub const SAMPLES_DIR: &str = "samples";
/// The `format` metadata value of a ganforge checkpoint.
pub const CHECKPOINT_FORMAT: &str = "ganforge-gan-checkpoint/1";

/// Training steps when neither `steps` nor `epochs` is given.
pub const DEFAULT_STEPS: u64 = 1500;
/// On 2-D toy data (sampled afresh every batch) an "epoch" is this many points.
pub const POINTS_PER_EPOCH: u64 = 25_600;
/// Columns of the fixed-noise sample grid (and of each class row of a conditional model).
pub const GRID_COLUMNS: usize = 8;
/// Points drawn for the scatter plots of 2-D models.
pub const SCATTER_POINTS: usize = 2000;

// Seeds of the streams that must not disturb the training stream (xor-ed with the run seed).
const FIXED_NOISE_STREAM: u64 = 0x6669_7865_645F_6E7A;
const REAL_POINTS_STREAM: u64 = 0x7265_616C_5F70_7473;
const DATA_STREAM: u64 = 0x6461_7461_5F72_6E67;

/// Result of training and sampling.
pub type Result<T> = std::result::Result<T, TrainError>;

/// What can stop a run or a sampling command.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// An error of the engine, a loader or a writer (these name their file where there is one).
    #[error(transparent)]
    Engine(#[from] Error),
    /// A config file or setting that cannot be used.
    #[error("{}{msg}", .path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Config {
        /// The config file, when the problem is in one.
        path: Option<PathBuf>,
        /// What is wrong and what to change.
        msg: String,
    },
    /// `--device` asks for something this build cannot do.
    #[error("{0}")]
    Device(String),
    /// A fresh run into a folder that already holds one.
    #[error(
        "{} already holds a run ({what}); pass --resume to continue it, --overwrite to start \
         it over, or choose another --out",
        .out.display()
    )]
    RunExists {
        /// The run folder.
        out: PathBuf,
        /// What was found there.
        what: String,
    },
    /// A resume that cannot go ahead (no checkpoint, or a setting the checkpoint fixes).
    #[error("cannot resume {}: {msg}", .out.display())]
    Resume {
        /// The run folder.
        out: PathBuf,
        /// Why, and what to do.
        msg: String,
    },
    /// A checkpoint that is not a usable ganforge checkpoint.
    #[error("{}: {msg}", .path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A loss that came out NaN or infinite; the run stopped before saving anything of it.
    #[error(
        "non-finite loss, training stopped: {detail} {}",
        match (.checkpoint, .checkpoint_step) {
            (Some(p), Some(s)) => format!("The last good checkpoint, {} (step {s}), is untouched.", p.display()),
            _ => "No checkpoint had been written yet.".to_string(),
        }
    )]
    NonFinite {
        /// The step (from 1) whose loss was not finite.
        step: u64,
        /// Which value was not finite, and what to change.
        detail: String,
        /// The last good checkpoint, if any was written.
        checkpoint: Option<PathBuf>,
        /// Its step.
        checkpoint_step: Option<u64>,
    },
    /// A sampling request that does not fit the checkpoint's model.
    #[error("{0}")]
    Sample(String),
}

// ---- config ----------------------------------------------------------------------------------

/// Where to train: `--device`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceChoice {
    /// A hardware GPU when wgpu finds one, otherwise the CPU (the choice is printed).
    #[default]
    Auto,
    /// The CPU (rayon kernels).
    Cpu,
    /// The GPU (WGSL kernels through wgpu; any adapter, software ones included); an error
    /// with wgpu's reason when there is none.
    Gpu,
}

impl DeviceChoice {
    /// The device to use, and a line to show the user when the choice was made for them.
    pub fn resolve(self) -> Result<(Device, Option<String>)> {
        match self {
            DeviceChoice::Cpu => Ok((Device::Cpu, None)),
            DeviceChoice::Auto => {
                let (device, line) = Device::auto();
                Ok((device, Some(format!("device: {line}"))))
            }
            DeviceChoice::Gpu => match Device::gpu() {
                Ok(device) => {
                    let line = match &device {
                        Device::Gpu(g) => format!("device: gpu: {}", g.info()),
                        Device::Cpu => "device: cpu".to_string(),
                    };
                    Ok((device, Some(line)))
                }
                Err(e) => Err(TrainError::Device(format!(
                    "--device gpu: {e}; use --device cpu or --device auto"
                ))),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceChoice::Auto => "auto",
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Gpu => "gpu",
        })
    }
}

/// Everything a training run is set by: what `config.toml` holds. Built by
/// [`TrainConfig::resolve`] from defaults, a TOML file and command-line overrides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The data spec (`digits`, `mnist:DIR`, `ring8`, ...; see [`DataSpec`]).
    pub data: String,
    /// Stop after this many training steps (one D update each; G every `n_critic`-th).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
    /// Stop after this many epochs (with `steps` too, whichever comes first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u64>,
    /// Examples per batch.
    pub batch_size: usize,
    /// Seed of every random choice: weights, noise, data order, built-in digits.
    pub seed: u64,
    /// Write a sample grid every this many steps (and at the end).
    pub sample_every: u64,
    /// Write the checkpoint every this many steps (and at the end).
    pub checkpoint_every: u64,
    /// Where to train.
    pub device: DeviceChoice,
    /// How many built-in digits to draw (`digits` data only).
    pub digits_count: usize,
    /// Resize images to this square size (e.g. 64 for the 64x64 DCGAN on MNIST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
    /// Use only the first this many images of the data set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_images: Option<usize>,
    /// Measure the generator every this many steps (and at the last step) with
    /// [`crate::metrics::monitor::RunMonitor`]: on images the Fréchet distance to the data in
    /// the feature network's space, the class histogram and near-duplicates (`fd_*`,
    /// `classes_covered_*`, `class_kl_*`, `near_duplicates_*`, `cond_acc_*`), on 2-D data the
    /// modes covered; logged into `metrics.jsonl`, drawn in `fd.png`, with warnings when a
    /// class disappears or samples collapse. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<u64>,
    /// The feature network of `eval_every` (default: `assets/classifiers/ARCH_DATASET.safetensors`,
    /// written by `ganforge train-classifier`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_classifier: Option<String>,
    /// The model and its hyper-parameters.
    pub gan: GanConfig,
}

/// Keys that a resumed run may not change (the checkpoint fixes them).
const FIXED_ON_RESUME: &[&str] = &[
    "data",
    "batch_size",
    "seed",
    "digits_count",
    "image_size",
    "max_images",
    "gan.model",
    "gan.conditional",
    "gan.latent_dim",
    "gan.ngf",
    "gan.ndf",
    "gan.hidden",
    "gan.ema_decay",
];

/// Keys that only say how long and how often: changing them on resume keeps bit-identity.
const SCHEDULE_KEYS: &[&str] = &[
    "steps",
    "epochs",
    "sample_every",
    "checkpoint_every",
    "device",
    // The monitor samples from its own noise stream in eval mode: no training state changes.
    "eval_every",
    "eval_classifier",
];

impl TrainConfig {
    /// The defaults for `model` on `data`: 64 per batch, seed 0, samples every 250 steps, a
    /// checkpoint every 500, and the model's published hyper-parameters
    /// ([`GanConfig::defaults_for_data`]); on the built-in `digits`, half-width networks
    /// (`ngf` = `ndf` = 32) and an EMA of G (0.995), so the default run is quick. Neither
    /// `steps` nor `epochs` is set ([`TrainConfig::resolve`] sets [`DEFAULT_STEPS`] when both
    /// stay unset).
    pub fn defaults(model: ModelKind, data: &DataSpec) -> TrainConfig {
        let shape = if data.is_points() {
            DataShape::points(0)
        } else {
            DataShape::image(1, 28, 28, 10)
        };
        let mut gan = GanConfig::defaults_for_data(model, &shape);
        if *data == DataSpec::Digits {
            // Sized so the README's main command (DCGAN, 1500 steps of 64) takes about four
            // minutes on two CPU cores and still draws recognisable digits.
            gan.ngf = 32;
            gan.ndf = 32;
            gan.ema_decay = 0.995;
        }
        TrainConfig {
            data: data.to_string(),
            steps: None,
            epochs: None,
            batch_size: 64,
            seed: 0,
            sample_every: 250,
            checkpoint_every: 500,
            device: DeviceChoice::Auto,
            digits_count: crate::data::digits::DEFAULT_COUNT,
            image_size: None,
            max_images: None,
            eval_every: None,
            eval_classifier: None,
            gan,
        }
    }

    /// Resolves a config: `base` (a resumed run's saved config) or the defaults of the model
    /// and data chosen, then the TOML `file` on top, then `overrides` (the command-line flags,
    /// as a TOML table shaped like the file: `steps = 10`, `[gan] lr_g = 1e-4`). The model
    /// defaults to `dcgan` on images and `vanilla` on 2-D points, the data to `digits`.
    ///
    /// When the file or the flags name `steps` or `epochs`, they replace both of the base's;
    /// when nothing sets either, `steps` is [`DEFAULT_STEPS`]. Unknown keys, wrong types and
    /// invalid values are errors naming the key (and the file).
    pub fn resolve(
        base: Option<&TrainConfig>,
        file: Option<&Path>,
        overrides: &toml::Table,
    ) -> Result<TrainConfig> {
        let file_table = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| TrainError::Config {
                    path: Some(p.to_path_buf()),
                    msg: format!("cannot read the config file: {e}"),
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| TrainError::Config {
                        path: Some(p.to_path_buf()),
                        msg: format!("not valid TOML: {e}"),
                    })?
            }
            None => toml::Table::new(),
        };
        let layers = [(file, &file_table), (None, overrides)];
        let lookup = |key: &str, sub: Option<&str>| -> Option<(Option<&Path>, toml::Value)> {
            layers.iter().rev().find_map(|(src, t)| {
                let v = match sub {
                    Some(s) => t.get(key)?.as_table()?.get(s)?,
                    None => t.get(key)?,
                };
                Some((*src, v.clone()))
            })
        };
        let config_err = |path: Option<&Path>, msg: String| TrainError::Config {
            path: path.map(Path::to_path_buf),
            msg,
        };

        let data = match lookup("data", None) {
            Some((src, toml::Value::String(s))) => {
                DataSpec::parse(&s).map_err(|e| config_err(src, e.to_string()))?
            }
            Some((src, v)) => {
                return Err(config_err(
                    src,
                    format!("`data` must be a string such as \"digits\", not {v}"),
                ))
            }
            None => match base {
                Some(b) => DataSpec::parse(&b.data)?,
                None => DataSpec::Digits,
            },
        };
        let model = match lookup("gan", Some("model")) {
            Some((src, v)) => ModelKind::deserialize(v.clone()).map_err(|_| {
                config_err(
                    src,
                    format!(
                        "unknown model {v} in `gan.model`; expected one of {}",
                        ModelKind::ALL.map(|m| m.name()).join(", ")
                    ),
                )
            })?,
            None => match base {
                Some(b) => b.gan.model,
                None if data.is_points() => ModelKind::Vanilla,
                None => ModelKind::Dcgan,
            },
        };

        let mut merged = match base {
            Some(b) => to_table(b)?,
            None => to_table(&TrainConfig::defaults(model, &data))?,
        };
        let sets_length = |t: &toml::Table| t.contains_key("steps") || t.contains_key("epochs");
        if sets_length(&file_table) || sets_length(overrides) {
            merged.remove("steps");
            merged.remove("epochs");
        }
        for (src, layer) in layers {
            check_known(layer, &merged, src)?;
            deep_merge(&mut merged, layer);
        }
        if !merged.contains_key("steps") && !merged.contains_key("epochs") {
            merged.insert("steps".into(), toml::Value::Integer(DEFAULT_STEPS as i64));
        }
        let cfg = TrainConfig::deserialize(toml::Value::Table(merged))
            .map_err(|e| config_err(file, format!("bad setting: {e}")))?;
        cfg.validate().map_err(|msg| config_err(file, msg))?;
        Ok(cfg)
    }

    /// Checks values that parse but make no sense; the message says what to change.
    pub fn validate(&self) -> std::result::Result<(), String> {
        DataSpec::parse(&self.data).map_err(|e| e.to_string())?;
        let positive = [
            ("batch_size", self.batch_size as u64),
            ("sample_every", self.sample_every),
            ("checkpoint_every", self.checkpoint_every),
            ("gan.latent_dim", self.gan.latent_dim as u64),
            ("gan.ngf", self.gan.ngf as u64),
            ("gan.ndf", self.gan.ndf as u64),
            ("gan.hidden", self.gan.hidden as u64),
            ("gan.n_critic", self.gan.n_critic as u64),
            ("digits_count", self.digits_count as u64),
        ];
        for (k, v) in positive {
            if v == 0 {
                return Err(format!("`{k}` must be at least 1"));
            }
        }
        for (k, v) in [
            ("steps", self.steps),
            ("epochs", self.epochs),
            ("eval_every", self.eval_every),
        ] {
            if v == Some(0) {
                return Err(format!("`{k}` must be at least 1"));
            }
        }
        if let Some(s) = self.image_size {
            if s == 0 {
                return Err("`image_size` must be at least 1".into());
            }
        }
        let g = &self.gan;
        for (k, v) in [("gan.lr_g", g.lr_g), ("gan.lr_d", g.lr_d)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("`{k}` must be a positive number, not {v}"));
            }
        }
        if !(0.0..1.0).contains(&g.label_smoothing) {
            return Err(format!(
                "`gan.label_smoothing` must be in [0, 1), not {}",
                g.label_smoothing
            ));
        }
        if !(0.0..1.0).contains(&g.ema_decay) {
            return Err(format!(
                "`gan.ema_decay` must be in [0, 1) (0 turns EMA off; 0.999 is usual), not {}",
                g.ema_decay
            ));
        }
        Ok(())
    }

    /// The config as TOML text, as written to `config.toml` (f32 values in their shortest
    /// decimal form).
    pub fn to_toml(&self) -> Result<String> {
        let table = to_table(self)?;
        toml::to_string(&table).map_err(|e| TrainError::Config {
            path: None,
            msg: format!("cannot write the config as TOML: {e}"),
        })
    }

    /// Parses the TOML written by [`TrainConfig::to_toml`] (a `config.toml` or a checkpoint's
    /// `config` metadata).
    pub fn from_toml(text: &str) -> std::result::Result<TrainConfig, String> {
        let cfg: TrainConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The data spec, parsed.
    pub fn data_spec(&self) -> Result<DataSpec> {
        Ok(DataSpec::parse(&self.data)?)
    }

    /// The default run folder for this config: `runs/{model}-{data kind}`
    /// (`runs/dcgan-digits`, `runs/vanilla-ring8`, `runs/dcgan-mnist`).
    pub fn default_out(&self) -> PathBuf {
        let kind = self.data.split(':').next().unwrap_or("data");
        PathBuf::from("runs").join(format!("{}-{kind}", self.gan.model))
    }
}

/// A value as a TOML table, with every float that is an f32 written in its shortest decimal
/// form (`2e-4`, not `0.00019999999494757503`).
fn to_table<T: Serialize>(value: &T) -> Result<toml::Table> {
    let v = toml::Value::try_from(value).map_err(|e| TrainError::Config {
        path: None,
        msg: format!("cannot express the config as TOML: {e}"),
    })?;
    match tidy_floats(v) {
        toml::Value::Table(t) => Ok(t),
        other => Err(TrainError::Config {
            path: None,
            msg: format!("config is not a table: {other}"),
        }),
    }
}

fn tidy_floats(v: toml::Value) -> toml::Value {
    match v {
        toml::Value::Float(x) if x.is_finite() && (x as f32) as f64 == x => {
            toml::Value::Float((x as f32).to_string().parse().unwrap_or(x))
        }
        toml::Value::Table(t) => {
            toml::Value::Table(t.into_iter().map(|(k, v)| (k, tidy_floats(v))).collect())
        }
        toml::Value::Array(a) => toml::Value::Array(a.into_iter().map(tidy_floats).collect()),
        other => other,
    }
}

/// `layer` merged into `into`: tables key by key, everything else replaced. An integer given
/// where the base has a float is converted (TOML's `lr_g = 1` means 1.0).
fn deep_merge(into: &mut toml::Table, layer: &toml::Table) {
    for (k, v) in layer {
        match (into.get_mut(k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => deep_merge(a, b),
            (Some(toml::Value::Float(_)), toml::Value::Integer(i)) => {
                into.insert(k.clone(), toml::Value::Float(*i as f64));
            }
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Every key of `layer` must be a key of the config (`known` holds the defaults, with every
/// optional key possibly absent).
fn check_known(layer: &toml::Table, known: &toml::Table, src: Option<&Path>) -> Result<()> {
    const OPTIONAL: &[&str] = &[
        "steps",
        "epochs",
        "image_size",
        "max_images",
        "eval_every",
        "eval_classifier",
    ];
    for (k, v) in layer {
        match known.get(k) {
            Some(toml::Value::Table(sub)) => {
                let Some(t) = v.as_table() else {
                    return Err(TrainError::Config {
                        path: src.map(Path::to_path_buf),
                        msg: format!("`{k}` must be a table (`[{k}]`)"),
                    });
                };
                for sk in t.keys() {
                    if !sub.contains_key(sk) {
                        return Err(TrainError::Config {
                            path: src.map(Path::to_path_buf),
                            msg: format!(
                                "unknown setting `{k}.{sk}`; `[{k}]` knows {}",
                                sub.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        });
                    }
                }
            }
            Some(_) => {}
            None if OPTIONAL.contains(&k.as_str()) => {}
            None => {
                let mut keys: Vec<String> = known.keys().cloned().collect();
                keys.extend(OPTIONAL.iter().map(|s| s.to_string()));
                keys.sort();
                keys.dedup();
                return Err(TrainError::Config {
                    path: src.map(Path::to_path_buf),
                    msg: format!("unknown setting `{k}`; known: {}", keys.join(", ")),
                });
            }
        }
    }
    Ok(())
}

/// `a.b` -> value for every leaf of the table.
fn flatten(t: &toml::Table, prefix: &str, out: &mut BTreeMap<String, toml::Value>) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(sub) => flatten(sub, &key, out),
            _ => {
                out.insert(key, v.clone());
            }
        }
    }
}

/// The settings that differ between two configs: `(key, old, new)`, absent values as `-`.
fn config_diff(old: &TrainConfig, new: &TrainConfig) -> Result<Vec<(String, String, String)>> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    flatten(&to_table(old)?, "", &mut a);
    flatten(&to_table(new)?, "", &mut b);
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let show = |v: Option<&toml::Value>| v.map_or("-".to_string(), |v| v.to_string());
    Ok(keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| (k.clone(), show(a.get(k)), show(b.get(k))))
        .collect())
}

// ---- data ------------------------------------------------------------------------------------

/// Where batches come from.
enum Source {
    /// Shuffled batches of an image data set.
    Images(Batcher),
    /// Fresh points from a 2-D mixture, drawn from their own stream.
    Points { mixture: GaussianMixture, rng: Rng },
}

/// The loaded data: the batch source, the shape the models are built for, class names.
struct LoadedData {
    source: Source,
    shape: DataShape,
    class_names: Vec<String>,
    description: String,
}

fn load_data(cfg: &TrainConfig, device: &Device) -> Result<LoadedData> {
    let spec = cfg.data_spec()?;
    let opts = LoadOptions {
        image_size: cfg.image_size,
        digits_count: cfg.digits_count,
        seed: cfg.seed,
        ..LoadOptions::default()
    };
    match spec.load(&opts)? {
        Data::Points(mixture) => Ok(LoadedData {
            description: format!("{spec}: {} Gaussians, 2-D points", mixture.centres.len()),
            source: Source::Points {
                mixture,
                rng: Rng::new(cfg.seed ^ DATA_STREAM),
            },
            shape: DataShape::points(0),
            class_names: Vec::new(),
        }),
        Data::Images(mut ds) => {
            if let Some(n) = cfg.max_images {
                ds.truncate(n);
            }
            let shape = DataShape::image(ds.channels, ds.height, ds.width, ds.num_classes);
            let class_names = if ds.class_names.is_empty() {
                (0..ds.num_classes).map(|c| c.to_string()).collect()
            } else {
                ds.class_names.clone()
            };
            let description = format!("{} ({} images, {shape})", ds.name, ds.len());
            let batcher = Batcher::new(ds, cfg.batch_size, cfg.seed)?.on_device(device.clone());
            Ok(LoadedData {
                source: Source::Images(batcher),
                shape,
                class_names,
                description,
            })
        }
    }
}

// ---- the trainer -----------------------------------------------------------------------------

/// How [`Trainer::new`] treats the run folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartMode {
    /// A new run; refused when the folder already holds a checkpoint or a metrics log.
    Fresh,
    /// A new run that replaces whatever run the folder holds.
    Overwrite,
    /// Continue the run in the folder from its checkpoint.
    Resume,
}

/// What the loop reports as it goes, for a progress display.
#[derive(Debug)]
pub enum Event<'a> {
    /// A step finished.
    Step {
        /// Steps done (from 1).
        step: u64,
        /// Steps the run will do in all.
        total: u64,
        /// The epoch of the step's batch (from 1).
        epoch: u64,
        /// The epochs the run will do in all (rounded up).
        total_epochs: u64,
        /// The losses and statistics of the step, as [`Gan::train_step`] returned them.
        losses: &'a [(String, f32)],
    },
    /// The generator was measured (`eval_every`): the logged values and any warnings.
    Eval {
        /// At this step.
        step: u64,
        /// `(name, value)` as logged (`fd_lenet_mnist`, ...).
        values: &'a [(String, f64)],
        /// Mode-collapse warnings (a class disappearing, near-duplicate samples).
        warnings: &'a [String],
    },
    /// A sample grid (or scatter plot) was written.
    Samples {
        /// At this step.
        step: u64,
        /// The file.
        path: &'a Path,
    },
    /// The checkpoint was written.
    Checkpoint {
        /// At this step.
        step: u64,
        /// The file.
        path: &'a Path,
    },
}

/// What a finished run did.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// The step the run started from (0, or the checkpoint's step on resume).
    pub start_step: u64,
    /// The step it ended at.
    pub end_step: u64,
    /// Wall time of the loop, in seconds.
    pub seconds: f64,
    /// The losses of the last step (empty when no step ran).
    pub last_losses: Vec<(String, f32)>,
    /// The run folder.
    pub out: PathBuf,
}

/// A training run: the models, the data, the random streams, the counters and the run folder.
pub struct Trainer {
    cfg: TrainConfig,
    out: PathBuf,
    device: Device,
    gan: Gan,
    data: LoadedData,
    rng: Rng,
    step: u64,
    steps_per_epoch: u64,
    total_steps: u64,
    metrics: MetricsLog,
    last_checkpoint: Option<u64>,
    notes: Vec<String>,
    monitor: Option<RunMonitor>,
}

impl Trainer {
    /// Prepares a run of `cfg` in the folder `out`: checks the device, loads the data, builds
    /// the models (refusing a model that does not fit the data), and either starts fresh or
    /// restores the folder's checkpoint ([`StartMode::Resume`]). Writes `config.toml`.
    ///
    /// On resume `cfg` should be the saved config with the new settings on top (see
    /// [`saved_config`]); settings the checkpoint fixes (data, batch size, seed, model and
    /// widths) must not differ from the saved ones.
    pub fn new(cfg: TrainConfig, out: &Path, mode: StartMode) -> Result<Trainer> {
        cfg.validate()
            .map_err(|msg| TrainError::Config { path: None, msg })?;
        let (device, device_note) = cfg.device.resolve()?;
        let mut notes: Vec<String> = device_note.into_iter().collect();
        let ckpt_path = out.join(CHECKPOINT_FILE);
        let metrics_path = out.join(METRICS_FILE);

        let ckpt = match mode {
            StartMode::Resume => {
                if !ckpt_path.exists() {
                    return Err(TrainError::Resume {
                        out: out.to_path_buf(),
                        msg: format!(
                            "there is no {} to resume from; run without --resume to start a \
                             new run there",
                            ckpt_path.display()
                        ),
                    });
                }
                let ckpt = load_ganforge_checkpoint(&ckpt_path)?;
                let saved = checkpoint_config(&ckpt)?;
                let diff = config_diff(&saved, &cfg)?;
                let fixed: Vec<String> = diff
                    .iter()
                    .filter(|(k, _, _)| FIXED_ON_RESUME.contains(&k.as_str()))
                    .map(|(k, a, b)| format!("`{k}` ({a} -> {b})"))
                    .collect();
                if !fixed.is_empty() {
                    return Err(TrainError::Resume {
                        out: out.to_path_buf(),
                        msg: format!(
                            "the checkpoint fixes {}; drop those settings, or start a new run \
                             in another --out",
                            fixed.join(", ")
                        ),
                    });
                }
                for (k, a, b) in &diff {
                    if !SCHEDULE_KEYS.contains(&k.as_str()) {
                        notes.push(format!(
                            "`{k}` changed on resume ({a} -> {b}): the run will differ from an \
                             uninterrupted one"
                        ));
                    }
                }
                Some(ckpt)
            }
            StartMode::Fresh => {
                let found: Vec<String> = [&ckpt_path, &metrics_path]
                    .into_iter()
                    .filter(|p| p.exists())
                    .map(|p| {
                        p.file_name()
                            .unwrap_or_default()
                            .to_string_lossy()
                            .into_owned()
                    })
                    .collect();
                if !found.is_empty() {
                    return Err(TrainError::RunExists {
                        out: out.to_path_buf(),
                        what: found.join(", "),
                    });
                }
                None
            }
            StartMode::Overwrite => {
                for f in [
                    CHECKPOINT_FILE,
                    METRICS_FILE,
                    LOSS_PLOT_FILE,
                    FD_PLOT_FILE,
                    CONFIG_FILE,
                ] {
                    let p = out.join(f);
                    if p.is_file() {
                        std::fs::remove_file(&p).map_err(|e| io_error(&p, e))?;
                    }
                }
                let samples = out.join(SAMPLES_DIR);
                if samples.is_dir() {
                    std::fs::remove_dir_all(&samples).map_err(|e| io_error(&samples, e))?;
                }
                None
            }
        };

        let data = load_data(&cfg, &device)?;
        let monitor = match cfg.eval_every {
            Some(_) => {
                let real = match &data.source {
                    Source::Images(b) => Some(b.dataset().as_ref()),
                    Source::Points { .. } => None,
                };
                let clf = cfg.eval_classifier.as_deref().map(Path::new);
                Some(RunMonitor::for_run(&cfg.data_spec()?, real, clf)?)
            }
            None => None,
        };
        let steps_per_epoch = match &data.source {
            Source::Images(b) => b.batches_per_epoch() as u64,
            Source::Points { .. } => (POINTS_PER_EPOCH / cfg.batch_size as u64).max(1),
        };
        let total_steps = match (cfg.steps, cfg.epochs) {
            (Some(s), Some(e)) => s.min(e * steps_per_epoch),
            (Some(s), None) => s,
            (None, Some(e)) => e * steps_per_epoch,
            (None, None) => DEFAULT_STEPS,
        };

        let mut rng = Rng::new(cfg.seed);
        let mut gan = Gan::new(&cfg.gan, &data.shape, &mut rng, &device)?;
        let mut trainer_data = data;
        let (step, metrics, last_checkpoint) = match ckpt {
            Some(ckpt) => {
                let saved_shape = checkpoint_shape(&ckpt)?;
                if saved_shape != trainer_data.shape {
                    return Err(TrainError::Resume {
                        out: out.to_path_buf(),
                        msg: format!(
                            "the checkpoint was trained on {saved_shape} but the data now loads \
                             as {}",
                            trainer_data.shape
                        ),
                    });
                }
                gan.load_state_dict(&ckpt.with_prefix(""))
                    .map_err(|e| checkpoint_error(&ckpt.path, e))?;
                let step = meta_u64(&ckpt, "step")?;
                rng = Rng::from_state(meta_rng(&ckpt, "rng")?);
                match &mut trainer_data.source {
                    Source::Images(b) => {
                        b.seek(
                            meta_u64(&ckpt, "epoch")? as usize,
                            meta_u64(&ckpt, "batch_in_epoch")? as usize,
                        );
                    }
                    Source::Points { rng, .. } => {
                        *rng = Rng::from_state(meta_rng(&ckpt, "data_rng")?)
                    }
                }
                (step, MetricsLog::resume(&metrics_path, step)?, Some(step))
            }
            None => (0, MetricsLog::open(&metrics_path, false)?, None),
        };

        let trainer = Trainer {
            cfg,
            out: out.to_path_buf(),
            device,
            gan,
            data: trainer_data,
            rng,
            step,
            steps_per_epoch,
            total_steps,
            metrics,
            last_checkpoint,
            notes,
            monitor,
        };
        io::write_atomic(
            &trainer.out.join(CONFIG_FILE),
            trainer.config_file_text()?.as_bytes(),
        )?;
        Ok(trainer)
    }

    fn config_file_text(&self) -> Result<String> {
        Ok(format!(
            "# ganforge training config, fully resolved (written by `ganforge train`).\n\
             # Train again with: ganforge train --config {}\n\n{}",
            self.out.join(CONFIG_FILE).display(),
            self.cfg.to_toml()?
        ))
    }

    /// The resolved config.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// The run folder.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// The models.
    pub fn gan(&self) -> &Gan {
        &self.gan
    }

    /// Steps done so far (the checkpoint's step right after a resume).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The step the run stops at.
    pub fn total_steps(&self) -> u64 {
        self.total_steps
    }

    /// Batches per epoch.
    pub fn steps_per_epoch(&self) -> u64 {
        self.steps_per_epoch
    }

    /// The data shape the models were built for.
    pub fn data_shape(&self) -> DataShape {
        self.data.shape
    }

    /// A one-line description of the data (`digits train (20000 images, 1x28x28 images, 10
    /// classes)`).
    pub fn data_description(&self) -> &str {
        &self.data.description
    }

    /// Things the user should know (device chosen, settings changed on resume).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Runs the loop from the current step to [`Trainer::total_steps`], writing samples,
    /// metrics, the loss plot and checkpoints, and reporting through `on_event`.
    ///
    /// A non-finite loss stops the run with [`TrainError::NonFinite`] before that step is
    /// logged or saved.
    pub fn run(&mut self, on_event: &mut dyn FnMut(Event<'_>)) -> Result<TrainSummary> {
        let start_step = self.step;
        let started = Instant::now();
        let mut last_losses = Vec::new();
        let total_epochs = self.total_steps.div_ceil(self.steps_per_epoch);
        let (fixed_z, fixed_labels) = self.fixed_noise()?;
        while self.step < self.total_steps {
            let (real, labels, epoch) = self.next_batch()?;
            let labels = if self.gan.config().is_conditional() {
                labels
            } else {
                None
            };
            let step = self.step + 1;
            let diverged = |detail: String| TrainError::NonFinite {
                step,
                detail,
                checkpoint: self.last_checkpoint.map(|_| self.out.join(CHECKPOINT_FILE)),
                checkpoint_step: self.last_checkpoint,
            };
            let losses = match self.gan.train_step(&real, labels.as_deref(), &mut self.rng) {
                Ok(l) => l,
                // Gan::train_step refuses a non-finite loss before it updates any weight.
                Err(Error::InvalidParam {
                    op: "train_step",
                    msg,
                }) => return Err(diverged(msg)),
                Err(e) => return Err(e.into()),
            };
            if let Some((name, v)) = losses.iter().find(|(_, v)| !v.is_finite()) {
                return Err(diverged(format!(
                    "{name} is {v} at step {step}: training diverged. Lower the learning rates (--lr-d, --lr-g)."
                )));
            }
            self.step = step;
            let last = step == self.total_steps;
            let report = match (&self.monitor, self.cfg.eval_every) {
                (Some(m), Some(every)) if step.is_multiple_of(every) || last => {
                    let use_ema = self.gan.config().ema_decay > 0.0;
                    Some(m.check(&self.gan, use_ema)?)
                }
                _ => None,
            };
            let mut values: Vec<(&str, f64)> = vec![("epoch", epoch as f64)];
            values.extend(losses.iter().map(|(k, v)| (k.as_str(), *v as f64)));
            if let Some(r) = &report {
                values.extend(r.values.iter().map(|(k, v)| (k.as_str(), *v)));
            }
            self.metrics.log(step, &values)?;
            on_event(Event::Step {
                step,
                total: self.total_steps,
                epoch,
                total_epochs,
                losses: &losses,
            });
            if let Some(r) = &report {
                on_event(Event::Eval {
                    step,
                    values: &r.values,
                    warnings: &r.warnings,
                });
            }
            let sample = step.is_multiple_of(self.cfg.sample_every) || last;
            let checkpoint = step.is_multiple_of(self.cfg.checkpoint_every) || last;
            if sample {
                let path = self.write_samples(&fixed_z, fixed_labels.as_deref())?;
                on_event(Event::Samples { step, path: &path });
            }
            if checkpoint {
                let path = self.save_checkpoint()?;
                on_event(Event::Checkpoint { step, path: &path });
            }
            if sample || checkpoint {
                self.plot_losses()?;
            }
            last_losses = losses;
        }
        if self.step == start_step {
            // Nothing to do (resumed at or past the target): still leave a current loss plot.
            self.plot_losses()?;
        }
        Ok(TrainSummary {
            start_step,
            end_step: self.step,
            seconds: started.elapsed().as_secs_f64(),
            last_losses,
            out: self.out.clone(),
        })
    }

    /// The next batch: examples, labels (when the data has them) and its epoch (from 1).
    fn next_batch(&mut self) -> Result<(Tensor, Option<Vec<usize>>, u64)> {
        match &mut self.data.source {
            Source::Images(b) => {
                let batch = b.next_batch()?;
                Ok((batch.images, batch.labels, batch.epoch as u64 + 1))
            }
            Source::Points { mixture, rng } => {
                let x = mixture.sample(self.cfg.batch_size, rng, &self.device)?;
                Ok((x, None, self.step / self.steps_per_epoch + 1))
            }
        }
    }

    /// The fixed noise of the sample grids (drawn from its own stream of the seed, so it is the
    /// same in every run and resume), and the labels: row `k` is class `k` for a conditional
    /// model.
    fn fixed_noise(&self) -> Result<(Tensor, Option<Vec<usize>>)> {
        let mut rng = Rng::new(self.cfg.seed ^ FIXED_NOISE_STREAM);
        let classes = if self.gan.config().is_conditional() {
            self.data.shape.num_classes
        } else {
            0
        };
        let n = if self.data.shape.points_2d {
            SCATTER_POINTS
        } else if classes > 0 {
            classes * GRID_COLUMNS
        } else {
            GRID_COLUMNS * GRID_COLUMNS
        };
        let z = Tensor::randn(0.0, 1.0, [n, self.gan.latent_dim()], &mut rng, &self.device);
        let labels = (classes > 0).then(|| (0..n).map(|i| i / GRID_COLUMNS).collect());
        Ok((z, labels))
    }

    /// Writes `samples/step_N.png` and `samples/latest.png` (or the scatter plot for points);
    /// returns the step's file.
    fn write_samples(&self, z: &Tensor, labels: Option<&[usize]>) -> Result<PathBuf> {
        let use_ema = self.gan.config().ema_decay > 0.0;
        let x = self.gan.generate(z, labels, use_ema)?;
        let dir = self.out.join(SAMPLES_DIR);
        if let Source::Points { mixture, .. } = &self.data.source {
            let path = dir.join(format!("scatter_step_{:06}.png", self.step));
            let real = real_points(mixture, self.cfg.seed, SCATTER_POINTS, &self.device)?;
            let title = format!(
                "{} on {}, step {}",
                self.cfg.gan.model, self.cfg.data, self.step
            );
            let generated = pairs(&x);
            for p in [&path, &dir.join("latest.png")] {
                io::plot_scatter(p, &title, &real, &generated, &mixture.centres)?;
            }
            return Ok(path);
        }
        let path = dir.join(format!("step_{:06}.png", self.step));
        io::save_image_grid(&x, GRID_COLUMNS, &path)?;
        io::save_image_grid(&x, GRID_COLUMNS, &dir.join("latest.png"))?;
        Ok(path)
    }

    /// Writes the checkpoint (atomically) and returns its path.
    fn save_checkpoint(&mut self) -> Result<PathBuf> {
        let path = self.out.join(CHECKPOINT_FILE);
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), CHECKPOINT_FORMAT.to_string());
        meta.insert(
            "ganforge_version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        );
        meta.insert("config".to_string(), self.cfg.to_toml()?);
        meta.insert("model".to_string(), self.cfg.gan.model.to_string());
        meta.insert(
            "data_shape".to_string(),
            serde_json::to_string(&self.data.shape).map_err(|e| TrainError::Config {
                path: None,
                msg: e.to_string(),
            })?,
        );
        meta.insert(
            "class_names".to_string(),
            serde_json::Value::from(self.data.class_names.clone()).to_string(),
        );
        meta.insert("step".to_string(), self.step.to_string());
        meta.insert("rng".to_string(), rng_to_string(&self.rng));
        match &self.data.source {
            Source::Images(b) => {
                meta.insert("epoch".to_string(), b.epoch().to_string());
                meta.insert("batch_in_epoch".to_string(), b.index_in_epoch().to_string());
            }
            Source::Points { rng, .. } => {
                meta.insert(
                    "epoch".to_string(),
                    (self.step / self.steps_per_epoch).to_string(),
                );
                meta.insert("data_rng".to_string(), rng_to_string(rng));
            }
        }
        // Brings the EMA generator's batch-norm statistics up to date (state_dict would too,
        // but could not report an error).
        self.gan.refresh_ema_stats()?;
        io::save_checkpoint(&path, &self.gan.state_dict(), &meta)?;
        self.last_checkpoint = Some(self.step);
        Ok(path)
    }

    /// Redraws `loss.png` from `metrics.jsonl`.
    fn plot_losses(&self) -> Result<()> {
        plot_losses(&self.out)
    }
}

/// Redraws `OUT/loss.png` from `OUT/metrics.jsonl`: one line per logged value but `epoch`,
/// smoothed over about a fiftieth of the run. Does nothing when the log is empty.
pub fn plot_losses(out: &Path) -> Result<()> {
    let metrics_path = out.join(METRICS_FILE);
    if !metrics_path.exists() {
        return Ok(());
    }
    let rows = io::read_metrics(&metrics_path)?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    // The monitor's measures (eval_every) have their own plot, fd.png.
    crate::metrics::monitor::plot_fd(&rows, &out.join(FD_PLOT_FILE))?;
    for (step, values) in &rows {
        for (k, v) in values {
            if k != "epoch" && !crate::metrics::monitor::is_monitor_metric(k) {
                series
                    .entry(k.clone())
                    .or_default()
                    .push((*step as f64, *v));
            }
        }
    }
    let series: Vec<(String, Vec<(f64, f64)>)> = series.into_iter().collect();
    let window = (rows.len() / 50).max(1);
    io::plot_lines(
        &out.join(LOSS_PLOT_FILE),
        "Training losses",
        "step",
        "value",
        &series,
        window,
    )?;
    Ok(())
}

/// `[n, 2]` tensor to pairs.
fn pairs(x: &Tensor) -> Vec<[f32; 2]> {
    x.to_vec().chunks_exact(2).map(|p| [p[0], p[1]]).collect()
}

/// `n` real points of `mixture` from the fixed real-points stream of `seed`.
fn real_points(
    mixture: &GaussianMixture,
    seed: u64,
    n: usize,
    device: &Device,
) -> Result<Vec<[f32; 2]>> {
    let mut rng = Rng::new(seed ^ REAL_POINTS_STREAM);
    Ok(pairs(&mixture.sample(n, &mut rng, device)?))
}

fn io_error(path: &Path, source: std::io::Error) -> TrainError {
    TrainError::Engine(Error::Io {
        path: path.display().to_string(),
        source,
    })
}

fn rng_to_string(rng: &Rng) -> String {
    rng.state()
        .iter()
        .map(|w| format!("{w:016x}"))
        .collect::<Vec<_>>()
        .join(",")
}

// ---- checkpoints -----------------------------------------------------------------------------

fn checkpoint_error(path: &Path, e: impl fmt::Display) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// Loads a checkpoint and checks that it is a ganforge training checkpoint.
fn load_ganforge_checkpoint(path: &Path) -> Result<Checkpoint> {
    if !path.exists() {
        return Err(checkpoint_error(
            path,
            "no such checkpoint file (`ganforge train` writes OUT/checkpoint.safetensors)",
        ));
    }
    let ckpt = io::load_checkpoint(path)?;
    match ckpt.meta("format") {
        Some(CHECKPOINT_FORMAT) => Ok(ckpt),
        Some(other) => Err(checkpoint_error(
            path,
            format!("checkpoint format `{other}` is not {CHECKPOINT_FORMAT}; it was written by another version"),
        )),
        None => Err(checkpoint_error(
            path,
            "a safetensors file, but not a ganforge training checkpoint (no `format` metadata); \
             `ganforge train` writes OUT/checkpoint.safetensors",
        )),
    }
}

fn meta<'a>(ckpt: &'a Checkpoint, key: &str) -> Result<&'a str> {
    ckpt.meta(key)
        .ok_or_else(|| checkpoint_error(&ckpt.path, format!("metadata `{key}` is missing")))
}

fn meta_u64(ckpt: &Checkpoint, key: &str) -> Result<u64> {
    let v = meta(ckpt, key)?;
    v.parse().map_err(|_| {
        checkpoint_error(
            &ckpt.path,
            format!("metadata `{key}` = `{v}` is not a count"),
        )
    })
}

fn meta_rng(ckpt: &Checkpoint, key: &str) -> Result<[u64; 4]> {
    let v = meta(ckpt, key)?;
    let words: Vec<u64> = v
        .split(',')
        .filter_map(|w| u64::from_str_radix(w, 16).ok())
        .collect();
    <[u64; 4]>::try_from(words).map_err(|_| {
        checkpoint_error(
            &ckpt.path,
            format!("metadata `{key}` = `{v}` is not an RNG state (4 hex words)"),
        )
    })
}

fn checkpoint_config(ckpt: &Checkpoint) -> Result<TrainConfig> {
    TrainConfig::from_toml(meta(ckpt, "config")?)
        .map_err(|e| checkpoint_error(&ckpt.path, format!("metadata `config`: {e}")))
}

fn checkpoint_shape(ckpt: &Checkpoint) -> Result<DataShape> {
    serde_json::from_str(meta(ckpt, "data_shape")?)
        .map_err(|e| checkpoint_error(&ckpt.path, format!("metadata `data_shape`: {e}")))
}

/// The config saved in the run folder `out` (from its checkpoint), the base on which a resumed
/// run's new settings go. Errors when there is nothing to resume.
pub fn saved_config(out: &Path) -> Result<TrainConfig> {
    let path = out.join(CHECKPOINT_FILE);
    if !path.exists() {
        return Err(TrainError::Resume {
            out: out.to_path_buf(),
            msg: format!(
                "there is no {} to resume from; run without --resume to start a new run there",
                path.display()
            ),
        });
    }
    checkpoint_config(&load_ganforge_checkpoint(&path)?)
}

/// A checkpoint opened for sampling: the model's config, data shape, class names and step.
pub struct SavedRun {
    /// The run's resolved config.
    pub config: TrainConfig,
    /// The data shape the models were built for.
    pub shape: DataShape,
    /// Class names (empty for unlabelled data).
    pub class_names: Vec<String>,
    /// The step the checkpoint was written at.
    pub step: u64,
    checkpoint: Checkpoint,
}

impl SavedRun {
    /// Opens a checkpoint written by `ganforge train`. A missing, truncated or foreign file is
    /// an error naming it.
    pub fn open(path: &Path) -> Result<SavedRun> {
        let checkpoint = load_ganforge_checkpoint(path)?;
        let class_names = match checkpoint.meta("class_names") {
            Some(s) => serde_json::from_str(s)
                .map_err(|e| checkpoint_error(path, format!("metadata `class_names`: {e}")))?,
            None => Vec::new(),
        };
        Ok(SavedRun {
            config: checkpoint_config(&checkpoint)?,
            shape: checkpoint_shape(&checkpoint)?,
            class_names,
            step: meta_u64(&checkpoint, "step")?,
            checkpoint,
        })
    }

    /// True when the checkpoint holds an EMA generator (`generator_ema.*`).
    pub fn has_ema(&self) -> bool {
        self.checkpoint
            .tensors
            .iter()
            .any(|(n, _)| n.starts_with("generator_ema."))
    }

    /// The generator (its EMA copy when `use_ema` and the checkpoint has one).
    pub fn generator(&self, use_ema: bool, device: &Device) -> Result<Generator> {
        let tensors: HashMap<String, Tensor> = self.checkpoint.with_prefix("");
        Gan::generator_from(
            &self.config.gan,
            &self.shape,
            &tensors,
            use_ema && self.has_ema(),
            device,
        )
        .map_err(|e| checkpoint_error(&self.checkpoint.path, e))
    }
}

// ---- sampling --------------------------------------------------------------------------------

/// What `ganforge sample` does.
#[derive(Clone, Debug)]
pub struct SampleOptions {
    /// The checkpoint to sample from.
    pub checkpoint: PathBuf,
    /// The output PNG (with `seeds`, one `OUT_seed{S}.png` per seed beside it).
    pub out: PathBuf,
    /// How many images per PNG (default 64; 1 with `seeds`; points: [`SCATTER_POINTS`]).
    pub n: Option<usize>,
    /// Draw only this class (conditional models); otherwise one row per class.
    pub class: Option<usize>,
    /// One PNG per seed; empty: one PNG from `seed`.
    pub seeds: Vec<u64>,
    /// The seed of the noise when `seeds` is empty.
    pub seed: u64,
    /// A latent walk: rows of `interp_steps` images between two random noise vectors.
    pub interpolate: bool,
    /// Images per interpolation row.
    pub interp_steps: usize,
    /// Interpolate linearly instead of spherically (slerp suits Gaussian noise better).
    pub lerp: bool,
    /// Sample from G's EMA weights when the checkpoint has them.
    pub use_ema: bool,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            checkpoint: PathBuf::from(CHECKPOINT_FILE),
            out: PathBuf::from("samples.png"),
            n: None,
            class: None,
            seeds: Vec::new(),
            seed: 0,
            interpolate: false,
            interp_steps: 8,
            lerp: false,
            use_ema: true,
        }
    }
}

/// What `sample` wrote.
#[derive(Clone, Debug)]
pub struct SampleReport {
    /// The files written.
    pub files: Vec<PathBuf>,
    /// Things the user should know (EMA used or not, mode coverage of 2-D models).
    pub notes: Vec<String>,
}

/// `OUT_seed{S}.ext` beside `out`.
pub fn seed_path(out: &Path, seed: u64) -> PathBuf {
    let stem = out.file_stem().unwrap_or_default().to_string_lossy();
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "png".to_string());
    out.with_file_name(format!("{stem}_seed{seed}.{ext}"))
}

/// Spherical interpolation between `a` and `b` at `t` in [0, 1] (Shoemake's slerp; linear when
/// the vectors are nearly parallel).
pub fn slerp(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let cos = (dot / (na * nb).max(1e-12)).clamp(-1.0, 1.0);
    let omega = cos.acos();
    let t = t as f64;
    if omega.sin().abs() < 1e-6 {
        return lerp(a, b, t as f32);
    }
    let (wa, wb) = (
        ((1.0 - t) * omega).sin() / omega.sin(),
        (t * omega).sin() / omega.sin(),
    );
    a.iter()
        .zip(b)
        .map(|(x, y)| (wa * *x as f64 + wb * *y as f64) as f32)
        .collect()
}

/// Linear interpolation `(1 - t) a + t b`.
pub fn lerp(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
    a.iter()
        .zip(b)
        .map(|(x, y)| (1.0 - t) * x + t * y)
        .collect()
}

/// Samples from a checkpoint as `opts` says: a grid, one grid per seed, or a latent walk; for
/// 2-D models a scatter plot of real vs generated points. Returns the files written.
pub fn sample(opts: &SampleOptions) -> Result<SampleReport> {
    let run = SavedRun::open(&opts.checkpoint)?;
    let device = Device::Cpu;
    let mut notes = Vec::new();
    let use_ema = opts.use_ema && run.has_ema();
    if opts.use_ema && !run.has_ema() {
        notes.push("the checkpoint has no EMA generator (ema_decay = 0): using G".into());
    } else if use_ema {
        notes.push("using G's EMA weights (--no-ema for the raw G)".into());
    }
    let g = run.generator(use_ema, &device)?;
    let classes = g.num_classes();
    if let Some(k) = opts.class {
        if classes == 0 {
            return Err(TrainError::Sample(format!(
                "--class {k}: this {} model is not conditional; train with --model cgan or \
                 --conditional to choose classes",
                run.config.gan.model
            )));
        }
        if k >= classes {
            let names = if run.class_names.is_empty() {
                String::new()
            } else {
                format!(" ({})", run.class_names.join(", "))
            };
            return Err(TrainError::Sample(format!(
                "--class {k} is out of range: the model knows classes 0..={}{names}",
                classes - 1
            )));
        }
    }
    let seeds: Vec<u64> = if opts.seeds.is_empty() {
        vec![opts.seed]
    } else {
        opts.seeds.clone()
    };
    let mut files = Vec::new();
    for &seed in &seeds {
        let path = if opts.seeds.is_empty() {
            opts.out.clone()
        } else {
            seed_path(&opts.out, seed)
        };
        let mut rng = Rng::new(seed);
        if run.shape.points_2d {
            if opts.interpolate {
                return Err(TrainError::Sample(
                    "--interpolate draws image grids; this model makes 2-D points".into(),
                ));
            }
            let n = opts.n.unwrap_or(SCATTER_POINTS).max(1);
            let z = Tensor::randn(0.0, 1.0, [n, g.latent_dim()], &mut rng, &device);
            let labels = opts.class.map(|k| vec![k; n]);
            let labels =
                labels.or_else(|| (classes > 0).then(|| (0..n).map(|i| i % classes).collect()));
            let pts = g.generate(&z, labels.as_deref())?.to_vec();
            let spec = run.config.data_spec()?;
            let mixture = match spec {
                DataSpec::Grid25 => GaussianMixture::grid25(),
                _ => GaussianMixture::ring8(),
            };
            let real = real_points(&mixture, seed, n, &device)?;
            let cov = mixture.coverage(&pts);
            notes.push(format!(
                "seed {seed}: modes covered {}/{}, {:.1}% of points within 3 std of a mode",
                cov.modes_covered,
                mixture.centres.len(),
                100.0 * cov.high_quality
            ));
            let generated: Vec<[f32; 2]> = pts.chunks_exact(2).map(|p| [p[0], p[1]]).collect();
            let title = format!(
                "{} on {}, step {} (seed {seed})",
                run.config.gan.model, run.config.data, run.step
            );
            io::plot_scatter(&path, &title, &real, &generated, &mixture.centres)?;
            files.push(path);
            continue;
        }
        let latent = g.latent_dim();
        let (z, labels, nrow) = if opts.interpolate {
            let steps = opts.interp_steps.max(2);
            let rows = (opts.n.unwrap_or(64) / steps).max(1);
            let mut data = Vec::with_capacity(rows * steps * latent);
            for _ in 0..rows {
                let a: Vec<f32> = (0..latent).map(|_| rng.normal()).collect();
                let b: Vec<f32> = (0..latent).map(|_| rng.normal()).collect();
                for s in 0..steps {
                    let t = s as f32 / (steps - 1) as f32;
                    data.extend(if opts.lerp {
                        lerp(&a, &b, t)
                    } else {
                        slerp(&a, &b, t)
                    });
                }
            }
            let labels = (classes > 0).then(|| {
                (0..rows * steps)
                    .map(|i| opts.class.unwrap_or((i / steps) % classes))
                    .collect::<Vec<_>>()
            });
            (
                Tensor::from_vec_on(data, [rows * steps, latent], &device)?,
                labels,
                steps,
            )
        } else {
            let default_n = if opts.seeds.is_empty() { 64 } else { 1 };
            let n = opts.n.unwrap_or(default_n).max(1);
            let (labels, nrow) = match (classes, opts.class) {
                (0, _) => (None, grid_columns(n)),
                (_, Some(k)) => (Some(vec![k; n]), grid_columns(n)),
                // One row per class, as many columns as fit n.
                (c, None) => {
                    let cols = n.div_ceil(c);
                    (Some((0..n).map(|i| (i / cols) % c).collect()), cols)
                }
            };
            let z = Tensor::randn(0.0, 1.0, [n, latent], &mut rng, &device);
            (z, labels, nrow)
        };
        let x = g.generate(&z, labels.as_deref())?;
        if x.dims()[0] == 1 {
            io::save_image(&x, &path)?;
        } else {
            io::save_image_grid(&x, nrow, &path)?;
        }
        files.push(path);
    }
    Ok(SampleReport { files, notes })
}

/// Columns of a near-square grid of `n` images.
fn grid_columns(n: usize) -> usize {
    ((n as f64).sqrt().ceil() as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_layers_defaults_file_and_flags() {
        let dir = std::env::temp_dir().join(format!("ganforge-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "batch_size = 32\n[gan]\nmodel = \"wgan-gp\"\nlr_g = 3e-4\n",
        )
        .unwrap();
        let mut flags = toml::Table::new();
        flags.insert("seed".into(), toml::Value::Integer(7));
        let cfg = TrainConfig::resolve(None, Some(&file), &flags).unwrap();
        assert_eq!(cfg.batch_size, 32);
        assert_eq!(cfg.seed, 7);
        assert_eq!(cfg.gan.model, ModelKind::WganGp);
        assert_eq!(cfg.gan.lr_g, 3e-4);
        assert_eq!(
            cfg.gan.n_critic, 5,
            "wgan-gp's defaults under the file's values"
        );
        assert_eq!(cfg.steps, Some(DEFAULT_STEPS));
        // The written TOML reads back to the same config, with tidy floats.
        let text = cfg.to_toml().unwrap();
        assert!(text.contains("lr_g = 0.0003"), "{text}");
        assert_eq!(TrainConfig::from_toml(&text).unwrap(), cfg);

        std::fs::write(&file, "[gan]\nlr = 1\n").unwrap();
        let e = TrainConfig::resolve(None, Some(&file), &toml::Table::new()).unwrap_err();
        assert!(e.to_string().contains("unknown setting `gan.lr`"), "{e}");
        assert!(e.to_string().contains("c.toml"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn new_length_replaces_the_base_length() {
        let mut flags = toml::Table::new();
        flags.insert("steps".into(), toml::Value::Integer(3));
        let base = TrainConfig::resolve(None, None, &flags).unwrap();
        let mut flags = toml::Table::new();
        flags.insert("epochs".into(), toml::Value::Integer(2));
        let cfg = TrainConfig::resolve(Some(&base), None, &flags).unwrap();
        assert_eq!((cfg.steps, cfg.epochs), (None, Some(2)));
        let points = {
            let mut f = toml::Table::new();
            f.insert("data".into(), toml::Value::String("ring8".into()));
            TrainConfig::resolve(None, None, &f).unwrap()
        };
        assert_eq!(points.gan.model, ModelKind::Vanilla);
        assert_eq!(points.gan.latent_dim, 8);
    }

    #[test]
    fn slerp_ends_and_norm() {
        let a = [1.0, 0.0];
        let b = [0.0, 1.0];
        assert_eq!(slerp(&a, &b, 0.0), vec![1.0, 0.0]);
        let m = slerp(&a, &b, 0.5);
        assert!(((m[0] * m[0] + m[1] * m[1]) - 1.0).abs() < 1e-6);
        assert_eq!(
            seed_path(Path::new("out/grid.png"), 3),
            PathBuf::from("out/grid_seed3.png")
        );
    }
}
