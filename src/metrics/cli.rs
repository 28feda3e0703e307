//! The `ganforge train-classifier` and `ganforge eval` commands (argument structs and the
//! work; `src/main.rs` only dispatches to them).
//!
//! ```text
//! ganforge train-classifier --data mnist:../shared/data/mnist --out assets/classifiers/lenet_mnist.safetensors
//! ganforge eval --checkpoint runs/mnist/checkpoint.safetensors --data mnist:../shared/data/mnist \
//!     --n 10000 --real-vs-real --json runs/mnist/eval.json
//! ```

use super::classes::{class_stats, conditional_accuracy, frequencies};
use super::classifier::{self, Arch, Classifier, LoadedClassifier, TrainEvent, TrainOptions};
use super::frechet::fd;
use super::kid::{kid, KidOptions};
use super::monitor::to_shape;
use super::prdc::{prdc, DEFAULT_K};
use super::swd::{swd, ImageBatch, SwdOptions};
use super::{metric_key, sample_without_replacement, Features};
use crate::data::toy::GaussianMixture;
use crate::data::{ColorMode, DataSpec, Dataset, LoadOptions, Split};
use crate::gan::trainer::{Result, SavedRun, TrainError};
use crate::gan::Generator;
use crate::io::write_atomic;
use crate::tensor::{Rng, Tensor};
use crate::Device;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where `eval` looks for a data set's classifier when `--classifier` is not given.
pub const DEFAULT_CLASSIFIER_DIR: &str = "assets/classifiers";

/// Flags of `ganforge train-classifier`.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainClassifierArgs {
    /// Labelled training data: mnist:DIR, fashion-mnist:DIR, cifar10:DIR, digits, or
    /// folder:DIR with one sub-folder per class (then --arch is needed).
    #[arg(long)]
    pub data: String,
    /// The checkpoint to write (FILE.safetensors); its test accuracy goes to FILE.json.
    #[arg(long)]
    pub out: PathBuf,
    /// lenet (1x28x28) or convnet (3x32x32); default: convnet for cifar10, lenet otherwise.
    #[arg(long)]
    pub arch: Option<String>,
    /// Passes over the training set (default: 6 for lenet, 30 for convnet).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Adam's peak learning rate (cosine-decayed over the run; default 1e-3 for lenet, 2e-3
    /// for convnet).
    #[arg(long)]
    pub lr: Option<f32>,
    /// L2 weight decay (default: 0 for lenet, 5e-4 for convnet).
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// Train on the images as they are (no random shifts, crops or flips).
    #[arg(long)]
    pub no_augment: bool,
    /// Use only the first N training images.
    #[arg(long, value_name = "N")]
    pub max_images: Option<usize>,
    /// How many built-in digits to draw (`--data digits`).
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub digits_count: usize,
    /// Seed of the weights, batch order, dropout and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Flags of `ganforge eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// A generator checkpoint written by `ganforge train` (optional with --real-vs-real).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// The real data (default: the data the checkpoint was trained on).
    #[arg(long)]
    pub data: Option<String>,
    /// Samples per set (default 10000 images, 2500 points).
    #[arg(long)]
    pub n: Option<usize>,
    /// The feature network (default: assets/classifiers/ARCH_DATASET.safetensors, e.g.
    /// lenet_mnist.safetensors).
    #[arg(long)]
    pub classifier: Option<PathBuf>,
    /// Write the figures as JSON here (metric names as keys, the network hash as feature_net).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also measure a held-out real set (the test split; half of a folder) against the same
    /// reference: each metric's floor.
    #[arg(long)]
    pub real_vs_real: bool,
    /// Use G's raw weights even when the checkpoint has EMA weights.
    #[arg(long)]
    pub no_ema: bool,
    /// Subsets of the kernel distance.
    #[arg(long, default_value_t = 100)]
    pub kid_subsets: usize,
    /// Points per kernel-distance subset.
    #[arg(long, default_value_t = 1000)]
    pub kid_subset_size: usize,
    /// Also compute the sliced Wasserstein distance (always on for folder data).
    #[arg(long)]
    pub swd: bool,
    /// Images per set for the sliced Wasserstein distance.
    #[arg(long, default_value_t = 4096, value_name = "N")]
    pub swd_images: usize,
    /// Seed of the noise, the reference subset and the metric subsets.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The data set's name in metric keys and default file names.
pub fn dataset_name(spec: &DataSpec) -> &'static str {
    match spec {
        DataSpec::Mnist(_) => "mnist",
        DataSpec::FashionMnist(_) => "fashion_mnist",
        DataSpec::Cifar10(_) => "cifar10",
        DataSpec::Folder(_) => "folder",
        DataSpec::Digits => "digits",
        DataSpec::Ring8 => "ring8",
        DataSpec::Grid25 => "grid25",
    }
}

/// The architecture a data set's classifier uses by default (`None` for folders and points).
pub fn default_arch(spec: &DataSpec) -> Option<Arch> {
    match spec {
        DataSpec::Mnist(_) | DataSpec::FashionMnist(_) | DataSpec::Digits => Some(Arch::Lenet),
        DataSpec::Cifar10(_) => Some(Arch::Convnet),
        _ => None,
    }
}

/// `assets/classifiers/{arch}_{dataset}.safetensors`, where a data set has a default network.
pub fn default_classifier_path(spec: &DataSpec) -> Option<PathBuf> {
    default_arch(spec).map(|a| {
        Path::new(DEFAULT_CLASSIFIER_DIR).join(format!(
            "{}_{}.safetensors",
            a.name(),
            dataset_name(spec)
        ))
    })
}

/// The f64 a user meant by an f32 flag (`1e-3`, not `0.0010000000474974513`).
fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

/// A command-line mistake, reported as its message alone.
fn invalid(msg: impl Into<String>) -> TrainError {
    TrainError::Config {
        path: None,
        msg: msg.into(),
    }
}

fn format_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Splits a data set without a test split into (train, test): a seeded shuffle, 10% held out.
fn hold_out(ds: &Dataset, seed: u64) -> crate::Result<(Dataset, Dataset)> {
    let mut idx: Vec<usize> = (0..ds.len()).collect();
    Rng::new(seed ^ 0x686F_6C64).shuffle(&mut idx);
    let cut = ds.len() / 10;
    Ok((ds.subset(&idx[cut..])?, ds.subset(&idx[..cut])?))
}

/// `ganforge train-classifier`: trains the feature network, writes FILE.safetensors and
/// FILE.json (test accuracy, hash, settings, time).
pub fn train_classifier(args: &TrainClassifierArgs) -> Result<()> {
    let spec = DataSpec::parse(&args.data)?;
    if spec.is_points() {
        return Err(invalid(format!(
            "{spec} is 2-D points: there is nothing to classify (eval measures toy data by \
             mode coverage)"
        )));
    }
    let arch = match (&args.arch, default_arch(&spec)) {
        (Some(a), _) => Arch::parse(a)?,
        (None, Some(a)) => a,
        (None, None) => {
            return Err(invalid(
                "--arch is needed for folder data: lenet (1x28x28) or convnet (3x32x32)",
            ))
        }
    };
    let [c, h, _] = arch.input_shape();
    let opts = |split| LoadOptions {
        split,
        image_size: Some(h),
        color: Some(if c == 1 {
            ColorMode::Gray
        } else {
            ColorMode::Rgb
        }),
        digits_count: args.digits_count,
        seed: args.seed,
    };
    println!("ganforge train-classifier: loading {spec}");
    let (mut train, test) = match spec {
        DataSpec::Folder(_) => hold_out(&spec.load_images(&opts(Split::Train))?, args.seed)?,
        _ => (
            spec.load_images(&opts(Split::Train))?,
            spec.load_images(&opts(Split::Test))?,
        ),
    };
    if let Some(m) = args.max_images {
        train.truncate(m);
    }
    let lenet = arch == Arch::Lenet;
    let topts = TrainOptions {
        epochs: args.epochs.unwrap_or(if lenet { 6 } else { 30 }),
        batch_size: args.batch_size,
        lr: args.lr.unwrap_or(if lenet { 1e-3 } else { 2e-3 }),
        weight_decay: args.weight_decay.unwrap_or(if lenet { 0.0 } else { 5e-4 }),
        augment: !args.no_augment,
        seed: args.seed,
    };
    let name = dataset_name(&spec);
    println!(
        "{} on {} ({} train / {} test images), {} epochs of {}, Adam lr {} (cosine), weight \
         decay {}, augmentation {}",
        arch.name(),
        name,
        train.len(),
        test.len(),
        topts.epochs,
        topts.batch_size,
        topts.lr,
        topts.weight_decay,
        if topts.augment { "on" } else { "off" }
    );
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:25} {pos}/{len} steps {msg} [{elapsed_precise}<{eta_precise}, {per_sec}]",
        )
        .expect("valid template"),
    );
    let quiet = bar.is_hidden();
    let (net, info) = classifier::train(arch, &train, &test, name, &topts, &mut |ev| match ev {
        TrainEvent::Step {
            step,
            total,
            epoch,
            loss,
            accuracy,
        } => {
            bar.set_length(total as u64);
            bar.set_position(step as u64);
            bar.set_message(format!(
                "epoch {epoch}/{} loss {loss:.4} train acc {:.2}%",
                topts.epochs,
                100.0 * accuracy
            ));
        }
        TrainEvent::Epoch {
            epoch,
            test_accuracy,
            seconds,
        } => {
            let line = format!(
                "epoch {epoch}/{}: test accuracy {:.2}% ({})",
                topts.epochs,
                100.0 * test_accuracy,
                format_secs(seconds)
            );
            if quiet {
                println!("{line}");
            } else {
                bar.println(line);
            }
        }
    })?;
    bar.finish_and_clear();
    net.save(&args.out, &info)?;
    let hash = net.hash();
    let json_path = args.out.with_extension("json");
    let report = json!({
        "arch": arch.name(),
        "dataset": name,
        "data": spec.to_string(),
        "feature_net": hash,
        "feature_dim": net.feature_dim(),
        "test_accuracy": info.test_accuracy,
        "test_images": info.test_images,
        "train_images": info.train_images,
        "epochs": topts.epochs,
        "batch_size": topts.batch_size,
        "lr": decimal(topts.lr),
        "weight_decay": decimal(topts.weight_decay),
        "augment": topts.augment,
        "seed": topts.seed,
        "train_seconds": (info.train_seconds * 10.0).round() / 10.0,
        "checkpoint": args.out.display().to_string(),
    });
    let text = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
    write_atomic(&json_path, text.as_bytes())?;
    println!(
        "done: test accuracy {:.2}% on {} test images after {} epochs in {}; feature_net {hash}",
        100.0 * info.test_accuracy.unwrap_or(0.0),
        info.test_images,
        topts.epochs,
        format_secs(info.train_seconds)
    );
    println!("wrote {} and {}", args.out.display(), json_path.display());
    Ok(())
}

/// Figures of one measured set, in report order: scalars and arrays (histograms).
#[derive(Default, Clone, Debug)]
struct Figures {
    scalars: Vec<(String, f64)>,
    arrays: Vec<(String, Vec<f64>)>,
}

impl Figures {
    fn put(&mut self, key: String, v: f64) {
        self.scalars.push((key, v));
    }
    fn json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        for (k, v) in &self.scalars {
            m.insert(k.clone(), json_number(*v));
        }
        for (k, v) in &self.arrays {
            m.insert(k.clone(), Value::from(v.clone()));
        }
        m
    }
}

fn json_number(v: f64) -> Value {
    if v.is_finite() {
        Value::from(v)
    } else {
        Value::Null
    }
}

/// Generates `n` samples, batched, in eval mode; a conditional G gets classes `i % K`.
fn generate(g: &Generator, n: usize, seed: u64) -> crate::Result<(Vec<f32>, Option<Vec<usize>>)> {
    let mut rng = Rng::new(seed);
    let k = g.num_classes();
    let asked: Option<Vec<usize>> = (k > 0).then(|| (0..n).map(|i| i % k).collect());
    let per: usize = g.output_dims().iter().product();
    let mut out = Vec::with_capacity(n * per);
    for start in (0..n).step_by(500) {
        let b = 500.min(n - start);
        let z = Tensor::randn(0.0, 1.0, [b, g.latent_dim()], &mut rng, &Device::Cpu);
        let labels = asked.as_ref().map(|a| &a[start..start + b]);
        out.extend(g.generate(&z, labels)?.to_vec());
    }
    Ok((out, asked))
}

/// Prints the table of figures: one row per scalar, a column per set.
fn print_table(columns: &[(&str, &Figures)]) {
    let mut keys: Vec<&str> = Vec::new();
    for (_, f) in columns {
        for (k, _) in &f.scalars {
            if !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
    }
    let width = keys.iter().map(|k| k.len()).max().unwrap_or(6).max(6);
    let mut header = format!("{:width$}", "metric");
    for (name, _) in columns {
        header.push_str(&format!("  {name:>14}"));
    }
    println!("{header}");
    for k in keys {
        let mut line = format!("{k:width$}");
        for (_, f) in columns {
            match f.scalars.iter().find(|(kk, _)| kk == k) {
                Some((_, v)) => line.push_str(&format!("  {:>14}", format_value(*v))),
                None => line.push_str(&format!("  {:>14}", "-")),
            }
        }
        println!("{line}");
    }
    for (name, f) in columns {
        for (k, v) in &f.arrays {
            let cells: Vec<String> = v
                .iter()
                .enumerate()
                .map(|(i, x)| format!("{i}:{:.1}%", 100.0 * x))
                .collect();
            println!("{k} ({name}): {}", cells.join(" "));
        }
    }
}

fn format_value(v: f64) -> String {
    if !v.is_finite() {
        "nan".into()
    } else if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e6) {
        format!("{v:.4e}")
    } else {
        format!("{v:.4}")
    }
}

/// Writes the JSON report (when asked) and says so.
fn write_json(path: Option<&Path>, value: &Value) -> Result<()> {
    if let Some(p) = path {
        let text = serde_json::to_string_pretty(value).unwrap_or_default() + "\n";
        write_atomic(p, text.as_bytes())?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// `ganforge eval`: measures a generator checkpoint against real data (and, with
/// `--real-vs-real`, a held-out real set against the same reference), prints a table and
/// writes JSON.
pub fn eval(args: &EvalArgs) -> Result<()> {
    if args.checkpoint.is_none() && !args.real_vs_real {
        return Err(invalid(
            "--checkpoint is needed (or --real-vs-real with --data for the real floor alone)",
        ));
    }
    let run = args.checkpoint.as_deref().map(SavedRun::open).transpose()?;
    let spec = match (&args.data, &run) {
        (Some(d), _) => DataSpec::parse(d)?,
        (None, Some(r)) => r.config.data_spec()?,
        (None, None) => return Err(invalid("--real-vs-real without --checkpoint needs --data")),
    };
    let mut header = Map::new();
    header.insert("data".into(), Value::from(spec.to_string()));
    header.insert("seed".into(), Value::from(args.seed));
    if let (Some(r), Some(p)) = (&run, &args.checkpoint) {
        let ema = !args.no_ema && r.has_ema();
        header.insert("checkpoint".into(), Value::from(p.display().to_string()));
        header.insert("model".into(), Value::from(r.config.gan.model.name()));
        header.insert("step".into(), Value::from(r.step));
        header.insert("ema".into(), Value::from(ema));
        println!(
            "ganforge eval: {} (step {}, {}) on {spec}",
            p.display(),
            r.step,
            if ema { "EMA G" } else { "G" }
        );
    } else {
        println!("ganforge eval: real-vs-real floor on {spec}");
    }
    if spec.is_points() {
        return eval_points(args, run.as_ref(), &spec, header);
    }
    eval_images(args, run.as_ref(), &spec, header)
}

fn eval_points(
    args: &EvalArgs,
    run: Option<&SavedRun>,
    spec: &DataSpec,
    mut out: Map<String, Value>,
) -> Result<()> {
    let mixture = match spec {
        DataSpec::Grid25 => GaussianMixture::grid25(),
        _ => GaussianMixture::ring8(),
    };
    let name = dataset_name(spec);
    let n = args.n.unwrap_or(2500).max(1);
    let figures = |pts: &[f32]| {
        let cov = mixture.coverage(pts);
        let mut f = Figures::default();
        f.put(metric_key("modes_covered", name), cov.modes_covered as f64);
        f.put(metric_key("modes", name), mixture.centres.len() as f64);
        f.put(metric_key("high_quality", name), cov.high_quality);
        f
    };
    out.insert("n".into(), Value::from(n));
    out.insert(
        "feature_net".into(),
        Value::from("none (2-D points: distances to the known modes)"),
    );
    let mut columns = Vec::new();
    let gen = match run {
        Some(r) => {
            let g = r.generator(!args.no_ema, &Device::Cpu)?;
            let (pts, _) = generate(&g, n, args.seed)?;
            Some(figures(&pts))
        }
        None => None,
    };
    let floor = if args.real_vs_real {
        let real = mixture.sample(n, &mut Rng::new(args.seed ^ 0x7265_616C), &Device::Cpu)?;
        Some(figures(&real.to_vec()))
    } else {
        None
    };
    if let Some(g) = &gen {
        out.extend(g.json());
        columns.push(("generated", g));
    }
    if let Some(f) = &floor {
        out.insert("real_vs_real".into(), Value::Object(f.json()));
        columns.push(("real-vs-real", f));
    }
    println!(
        "{n} points; a mode is covered with >= {} points within 3 std of it; high_quality is \
         the fraction of points within 3 std of some mode",
        crate::data::toy::MIN_POINTS_PER_MODE
    );
    print_table(&columns);
    write_json(args.json.as_deref(), &Value::Object(out))
}

/// Everything measured about one set of images against the reference.
struct Measure<'a> {
    net: &'a str,
    reference: &'a Features,
    ref_freq: &'a [f64],
    kid_opts: KidOptions,
}

impl Measure<'_> {
    fn features(&self, f: &mut Figures, emb: &classifier::Embedding) -> Result<()> {
        let net = self.net;
        let feats = &emb.features;
        f.put(metric_key("fd", net), fd(self.reference, feats)?);
        let k = kid(self.reference, feats, &self.kid_opts)?;
        f.put(metric_key("kid", net), k.mean);
        f.put(metric_key("kid_std", net), k.std);
        f.put(metric_key("kid_stderr", net), k.stderr);
        let p = prdc(self.reference, feats, DEFAULT_K)?;
        f.put(metric_key("precision", net), p.precision);
        f.put(metric_key("recall", net), p.recall);
        f.put(metric_key("density", net), p.density);
        f.put(metric_key("coverage", net), p.coverage);
        let s = class_stats(&emb.probs, emb.num_classes, Some(self.ref_freq))?;
        f.put(metric_key("classes_covered", net), s.covered as f64);
        f.put(
            metric_key("class_kl", net),
            s.kl_to_reference.unwrap_or(f64::NAN),
        );
        f.put(metric_key("is", net), s.score);
        f.put(metric_key("confidence", net), s.mean_confidence);
        f.arrays
            .push((metric_key("class_histogram", net), s.fractions.clone()));
        Ok(())
    }
}

/// The images of one set at two shapes: the generator's (for SWD) and the network's.
fn eval_images(
    args: &EvalArgs,
    run: Option<&SavedRun>,
    spec: &DataSpec,
    mut out: Map<String, Value>,
) -> Result<()> {
    let started = Instant::now();
    let n = args.n.unwrap_or(10_000).max(2);
    let folder = matches!(spec, DataSpec::Folder(_));
    // Load the real data as the model was trained on it: a folder at the model's size and
    // colour; other data at the model's size too (MNIST trained with `--image-size 32` is
    // resized to 32 here), so that real and generated images take the same resize to the
    // feature network's input. At the data's native size this changes nothing.
    let (image_size, color) = match (run, folder) {
        (Some(r), true) => (
            Some(r.shape.height),
            Some(if r.shape.channels == 1 {
                ColorMode::Gray
            } else {
                ColorMode::Rgb
            }),
        ),
        (Some(r), false) => (Some(r.shape.height), None),
        _ => (None, None),
    };
    if let (Some(size), false) = (image_size, folder) {
        if spec.native_image_size() != Some(size) {
            println!(
                "note: the model was trained at {size}x{size}; the real images are resized to \
                 {size}x{size} as in training, then real and generated images alike to the \
                 feature network's input"
            );
        }
    }
    let opts = |split| LoadOptions {
        split,
        image_size,
        color,
        digits_count: run.map_or(20_000, |r| r.config.digits_count),
        seed: run.map_or(0, |r| r.config.seed),
    };
    eprintln!("loading {spec} ...");
    let train = spec.load_images(&opts(Split::Train))?;
    // Reference: n random training images. Held-out: the test split (a folder: the rest).
    let mut rng = Rng::new(args.seed ^ 0x7265_6665);
    let (reference, held) = if folder {
        let mut idx: Vec<usize> = (0..train.len()).collect();
        rng.shuffle(&mut idx);
        let half = train.len() / 2;
        let m = n.min(half);
        (
            train.subset(&idx[..m])?,
            train.subset(&idx[half..half + m])?,
        )
    } else {
        let idx = sample_without_replacement(train.len(), n, &mut rng);
        let reference = train.subset(&idx)?;
        let held = if args.real_vs_real {
            let mut t = spec.load_images(&opts(Split::Test))?;
            t.truncate(n);
            t
        } else {
            reference.subset(&[])?
        };
        (reference, held)
    };
    let gen_shape: [usize; 3] = match run {
        Some(r) => {
            let d = &r.shape;
            [d.channels, d.height, d.width]
        }
        None => reference.image_shape(),
    };
    out.insert("n".into(), Value::from(n));
    out.insert("n_reference".into(), Value::from(reference.len()));
    if args.real_vs_real {
        out.insert("n_real_vs_real".into(), Value::from(held.len()));
    }
    if reference.len() < n || (args.real_vs_real && held.len() < n) {
        println!(
            "note: the real sets are smaller than --n {n} (reference {}, held-out {}); the \
             figures depend on the set sizes (the Fréchet distance grows as they shrink), so \
             compare figures at equal sizes only",
            reference.len(),
            held.len()
        );
    }
    // The feature network (folders: none unless --classifier).
    let clf_path = args
        .classifier
        .clone()
        .or_else(|| default_classifier_path(spec));
    let clf: Option<LoadedClassifier> = match clf_path {
        Some(p) => {
            if !p.exists() && args.classifier.is_none() {
                return Err(invalid(format!(
                    "no feature network at {} (the default for {spec}); train it with\n  \
                     ganforge train-classifier --data {spec} --out {}\nor pass --classifier FILE",
                    p.display(),
                    p.display()
                )));
            }
            let c = Classifier::load(&p)?;
            out.insert(
                "feature_net_file".into(),
                Value::from(p.display().to_string()),
            );
            Some(c)
        }
        None => None,
    };
    // Generated samples, at the generator's shape.
    let generated = match run {
        Some(r) => {
            let g = r.generator(!args.no_ema, &Device::Cpu)?;
            eprintln!("generating {n} samples ...");
            Some(generate(&g, n, args.seed)?)
        }
        None => None,
    };

    let mut gen_fig = Figures::default();
    let mut floor_fig = Figures::default();
    match &clf {
        Some(c) => {
            let net = c.net_name();
            let target = c.net.arch().input_shape();
            println!(
                "feature network: {net}, feature_net {} ({} epochs, test accuracy {}); figures \
                 are *_{net}: not Inception FID/KID, comparable only at the same feature_net",
                c.hash,
                c.info.epochs,
                c.info
                    .test_accuracy
                    .map_or("unknown".into(), |a| format!("{:.2}%", 100.0 * a))
            );
            out.insert("feature_net".into(), Value::from(c.hash.clone()));
            out.insert("feature_net_name".into(), Value::from(net.clone()));
            if let Some(a) = c.info.test_accuracy {
                out.insert("feature_net_test_accuracy".into(), Value::from(a));
            }
            let embed = |images: Vec<f32>, shape: [usize; 3], what: &str| {
                eprintln!(
                    "embedding {} {what} images ...",
                    images.len() / shape.iter().product::<usize>()
                );
                c.net.embed(&to_shape(images, shape, target)?, 250)
            };
            let ref_emb = embed(
                reference.images.clone(),
                reference.image_shape(),
                "reference",
            )?;
            let k = c.net.num_classes();
            let ref_freq = match &reference.labels {
                Some(l) if reference.num_classes == k => frequencies(l, k),
                _ => frequencies(&ref_emb.predictions(), k),
            };
            let m = Measure {
                net: &net,
                reference: &ref_emb.features,
                ref_freq: &ref_freq,
                kid_opts: KidOptions {
                    subsets: args.kid_subsets.max(1),
                    subset_size: args.kid_subset_size.max(2),
                    seed: args.seed,
                },
            };
            if let Some((images, asked)) = &generated {
                let emb = embed(images.clone(), gen_shape, "generated")?;
                eprintln!("measuring generated vs reference ...");
                m.features(&mut gen_fig, &emb)?;
                if let Some(asked) = asked {
                    let acc = conditional_accuracy(&emb.predictions(), asked)?;
                    gen_fig.put(metric_key("cond_acc", &net), acc);
                }
            }
            if args.real_vs_real {
                let emb = embed(held.images.clone(), held.image_shape(), "held-out real")?;
                eprintln!("measuring held-out real vs reference ...");
                m.features(&mut floor_fig, &emb)?;
                // The conditional-accuracy floor: the classifier's accuracy on real labels.
                if let Some(l) = &held.labels {
                    if held.num_classes == k {
                        let acc = conditional_accuracy(&emb.predictions(), l)?;
                        floor_fig.put(metric_key("cond_acc", &net), acc);
                    }
                }
            }
        }
        None => {
            out.insert(
                "feature_net".into(),
                Value::from("none (sliced Wasserstein distance on image patches)"),
            );
        }
    }
    if args.swd || clf.is_none() {
        let m = args.swd_images.min(n);
        eprintln!("sliced Wasserstein distance on {m} images per set ...");
        let opts = SwdOptions {
            seed: args.seed,
            ..SwdOptions::default()
        };
        let batch = |images: &[f32], shape: [usize; 3]| -> crate::Result<ImageBatch> {
            let per: usize = shape.iter().product();
            let cnt = (images.len() / per).min(m);
            let data = to_shape(images[..cnt * per].to_vec(), shape, gen_shape)?;
            Ok(ImageBatch {
                data,
                n: cnt,
                c: gen_shape[0],
                h: gen_shape[1],
                w: gen_shape[2],
            })
        };
        let ref_b = batch(&reference.images, reference.image_shape())?;
        let put_swd = |f: &mut Figures, other: &ImageBatch| -> Result<()> {
            let r = swd(&ref_b, other, &opts)?;
            for (res, d) in &r.levels {
                f.put(format!("swd_x1e3_{res}px"), *d);
            }
            f.put("swd_x1e3_avg".into(), r.mean);
            Ok(())
        };
        if let Some((images, _)) = &generated {
            put_swd(&mut gen_fig, &batch(images, gen_shape)?)?;
        }
        if args.real_vs_real {
            put_swd(&mut floor_fig, &batch(&held.images, held.image_shape())?)?;
        }
    }
    let mut columns = Vec::new();
    if generated.is_some() {
        out.extend(gen_fig.json());
        columns.push(("generated", &gen_fig));
    }
    if args.real_vs_real {
        out.insert("real_vs_real".into(), Value::Object(floor_fig.json()));
        columns.push(("real-vs-real", &floor_fig));
    }
    println!(
        "sets: generated {}, reference {} (random training images), held-out {}",
        if generated.is_some() { n } else { 0 },
        reference.len(),
        if args.real_vs_real {
            format!(
                "{} ({})",
                held.len(),
                if folder {
                    "the other half of the folder"
                } else {
                    "test split"
                }
            )
        } else {
            "-".into()
        }
    );
    print_table(&columns);
    let secs = started.elapsed().as_secs_f64();
    out.insert(
        "eval_seconds".into(),
        Value::from((secs * 10.0).round() / 10.0),
    );
    println!("measured in {}", format_secs(secs));
    write_json(args.json.as_deref(), &Value::Object(out))
}
