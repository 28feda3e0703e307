//! The `ganforge` command line. Only argument parsing and reporting live here; the work is in
//! the library.

use clap::{Parser, Subcommand, ValueEnum};
use ganforge::data::toy::GaussianMixture;
use ganforge::gan::trainer::{
    self, DeviceChoice, Event, SampleOptions, StartMode, TrainConfig, TrainError, Trainer,
};
use ganforge::gan::ModelKind;
use ganforge::nn::{LeakyRelu, Linear, LinearConfig, Module, Relu, Sequential};
use ganforge::optim::{Adam, AdamConfig, Optimizer};
use ganforge::{autograd, Device, Rng, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "ganforge",
    version,
    about = "GANs on a from-scratch autodiff engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time training steps of the reference workloads W1-W4 (../shared/anchors/perf.md) on
    /// random data; prints per-step times and `RESULT ganforge <workload> <device> median_ms X`
    /// lines, the form of the PyTorch reference script, so the two can be run alternately.
    Bench(BenchArgs),
    /// Train a GAN and keep everything in a run folder: resolved config, sample grids from fixed
    /// noise, loss curves, a per-step metrics log and a checkpoint that --resume continues
    /// bit-identically. With no flags: DCGAN on the built-in digits.
    Train(Box<TrainArgs>),
    /// Draw samples from a checkpoint written by `train`: a grid, one PNG per seed, or a latent
    /// walk; for 2-D models a scatter plot of real vs generated points.
    Sample(SampleArgs),
    /// Train a small MLP GAN on a built-in 2-D mixture of Gaussians (no files needed) and show
    /// how many modes it covers: mode collapse made visible.
    Demo(DemoArgs),
    /// Train the feature network (a small CNN classifier) that `eval` measures samples with;
    /// writes FILE.safetensors and its test accuracy to FILE.json.
    TrainClassifier(ganforge::metrics::cli::TrainClassifierArgs),
    /// Measure a generator checkpoint against real data: Fréchet distance, KID,
    /// precision/recall on the project's own feature network (not Inception), class coverage;
    /// modes covered for 2-D data; sliced Wasserstein distance for image folders.
    Eval(ganforge::metrics::cli::EvalArgs),
    /// Profile one training step (a D and a G update) of a model on random data, layer by
    /// layer and op by op: shapes in and out, forward and backward FLOPs and bytes moved,
    /// measured time, achieved GFLOP/s and share of the step; --device both puts the CPU and
    /// the GPU side by side.
    ///
    /// FLOPs and bytes are computed from the shapes by each op's formula (src/ops/<op>.rs):
    /// a multiply-add counts 2 FLOPs (conv2d forward = 2*N*C_out*H_out*W_out*C_in*KH*KW,
    /// conv_transpose2d = 2*N*C_in*H*W*C_out*KH*KW, matmul = 2*batch*M*N*K); pointwise ops
    /// count the arithmetic of their formula, exp/log/tanh/sqrt counting 1; bytes moved =
    /// every input read once + the output written once, 4 bytes per f32 (a reshape moves
    /// nothing). Times are measured per op; on a GPU each op waits for the GPU before and after
    /// it, so a profiled GPU step is slower than an unprofiled one (both are printed). Time
    /// between ops (autograd's graph walk, an optimizer's loop, freeing a graph) has rows of
    /// its own; "unattributed" is the wall-clock step minus every row.
    ///
    /// Phases: fwd (forward), bwd (backward rule), bwd2 (a backward rule of a backward node:
    /// the WGAN-GP double backward), opt (optimizer update, on the layer owning the
    /// parameter). For families with n_critic > 1 the profiled call is the one that also
    /// updates G.
    #[command(verbatim_doc_comment)]
    Profile(ProfileArgs),
}

/// Where `ganforge profile` runs.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProfileDevice {
    /// The CPU kernels.
    Cpu,
    /// The GPU kernels (WGSL through wgpu).
    Gpu,
    /// Both, side by side (the CPU first).
    Both,
}

/// Flags of `ganforge profile`.
#[derive(clap::Args)]
struct ProfileArgs {
    /// Model family.
    #[arg(long, value_enum, default_value = "dcgan")]
    model: ModelKind,
    /// Examples per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Where to run: cpu, gpu or both (side by side).
    #[arg(long, value_enum, default_value = "cpu")]
    device: ProfileDevice,
    /// Image channels of the random data (1 like MNIST, 3 like CIFAR-10).
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Image height and width (the convolutional families take 28, 32 or 64).
    #[arg(long, default_value_t = 28, value_name = "SIZE")]
    image_size: usize,
    /// Classes of the random labels (used by conditional models such as cgan).
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// 2-D points instead of images (every family becomes a small MLP).
    #[arg(long)]
    points: bool,
    /// Profiled steps, averaged (each a D and a G update).
    #[arg(long, default_value_t = 1)]
    steps: usize,
    /// Unprofiled steps first (pipeline compilation, buffer pools).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Seed of the weights and the random data.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Width of the convolutional generator (default 64).
    #[arg(long)]
    ngf: Option<usize>,
    /// Width of the convolutional discriminator (default 64).
    #[arg(long)]
    ndf: Option<usize>,
    /// Width of the MLP models (default 256; 128 on 2-D points).
    #[arg(long)]
    hidden: Option<usize>,
    /// Size of the noise vector (default 100; 8 on 2-D points).
    #[arg(long)]
    latent_dim: Option<usize>,
    /// Also write the profile (every row, per device) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ToyData {
    /// 8 Gaussians on a circle of radius 2.
    Ring8,
    /// 25 Gaussians on a 5x5 grid.
    Grid25,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Which mixture to learn.
    #[arg(long, value_enum, default_value = "ring8")]
    data: ToyData,
    /// Training steps (one D update and one G update each).
    #[arg(long, default_value_t = 3000)]
    steps: usize,
    /// Points per batch.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Adam learning rate for both networks.
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    /// Seed of every random choice (weights, noise, data).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Flags of `ganforge train`. Every setting flag overrides the same key of `--config`;
/// unset flags keep the file's value, or the model's default.
#[derive(clap::Args)]
struct TrainArgs {
    /// Model family (default: dcgan on images, vanilla on 2-D points).
    #[arg(long, value_enum)]
    model: Option<ModelKind>,
    /// Training data: mnist:DIR, fashion-mnist:DIR, cifar10:DIR, folder:DIR, digits, ring8,
    /// grid25 (default: digits, drawn procedurally, no files needed).
    #[arg(long)]
    data: Option<String>,
    /// Stop after this many epochs (with --steps too, whichever comes first).
    #[arg(long)]
    epochs: Option<u64>,
    /// Stop after this many training steps (one D update each; default 1500 when neither
    /// --steps nor --epochs is given).
    #[arg(long)]
    steps: Option<u64>,
    /// Examples per batch (default 64).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Where to train: auto, cpu or gpu (default auto).
    #[arg(long, value_enum)]
    device: Option<DeviceChoice>,
    /// The run folder (default: runs/MODEL-DATA, e.g. runs/dcgan-digits).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of weights, noise, data order and built-in data (default 0).
    #[arg(long)]
    seed: Option<u64>,
    /// A TOML config file (the keys of OUT/config.toml); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in --out from its checkpoint up to the new --steps/--epochs.
    #[arg(long)]
    resume: bool,
    /// Start over in an --out that already holds a run (deletes its checkpoint, metrics and
    /// samples).
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Write a sample grid every N steps (default 250).
    #[arg(long, value_name = "N")]
    sample_every: Option<u64>,
    /// Write the checkpoint every N steps (default 500).
    #[arg(long, value_name = "N")]
    checkpoint_every: Option<u64>,
    /// How many built-in digits to draw (default 20000).
    #[arg(long, value_name = "N")]
    digits_count: Option<usize>,
    /// Resize images to SIZE x SIZE (DCGAN nets exist for 28, 32 and 64).
    #[arg(long, value_name = "SIZE")]
    image_size: Option<usize>,
    /// Use only the first N images of the data set.
    #[arg(long, value_name = "N")]
    max_images: Option<usize>,
    /// Generator learning rate.
    #[arg(long)]
    lr_g: Option<f32>,
    /// Discriminator learning rate (TTUR: a different value from --lr-g).
    #[arg(long)]
    lr_d: Option<f32>,
    /// Adam beta1.
    #[arg(long)]
    beta1: Option<f32>,
    /// Adam beta2.
    #[arg(long)]
    beta2: Option<f32>,
    /// D updates per G update.
    #[arg(long)]
    n_critic: Option<usize>,
    /// Gradient penalty weight (wgan-gp).
    #[arg(long)]
    gp_weight: Option<f32>,
    /// Weight clipping bound (wgan).
    #[arg(long)]
    clip_value: Option<f32>,
    /// R1 penalty weight gamma on D's gradient at real data (Mescheder et al. 2018); 0 is off,
    /// 1-10 usual. Not for wgan / wgan-gp.
    #[arg(long)]
    r1_gamma: Option<f32>,
    /// Apply R1 every N D steps, weighted by N (StyleGAN2's lazy regularisation uses 16).
    #[arg(long, value_name = "N")]
    r1_every: Option<usize>,
    /// One-sided label smoothing: D's real target is 1 - this.
    #[arg(long)]
    label_smoothing: Option<f32>,
    /// EMA of G's weights for sampling (0 = off; 0.999 is usual).
    #[arg(long)]
    ema_decay: Option<f32>,
    /// Condition G and D on the class labels (cgan always is).
    #[arg(long)]
    conditional: bool,
    /// Size of the noise vector.
    #[arg(long)]
    latent_dim: Option<usize>,
    /// Width of the convolutional generator.
    #[arg(long)]
    ngf: Option<usize>,
    /// Width of the convolutional discriminator.
    #[arg(long)]
    ndf: Option<usize>,
    /// Width of the MLP models.
    #[arg(long)]
    hidden: Option<usize>,
    /// Measure G every N steps with the feature network (Fréchet distance, class histogram,
    /// near-duplicates; modes covered on 2-D data) into metrics.jsonl and fd.png, warning when
    /// a class disappears or samples collapse.
    #[arg(long, value_name = "N")]
    eval_every: Option<u64>,
    /// The feature network for --eval-every (default: assets/classifiers/ARCH_DATASET.safetensors).
    #[arg(long, value_name = "FILE")]
    eval_classifier: Option<PathBuf>,
}

impl TrainArgs {
    /// The flags that were given, as a TOML table shaped like the config file.
    fn overrides(&self) -> toml::Table {
        use toml::Value;
        // f32 flags as the decimal typed (1e-4, not 0.00009999999747).
        let float = |x: f32| Value::Float(x.to_string().parse().unwrap_or(x as f64));
        let int = |x: u64| Value::Integer(x as i64);
        let mut top = toml::Table::new();
        let mut gan = toml::Table::new();
        let put = |t: &mut toml::Table, k: &str, v: Option<Value>| {
            if let Some(v) = v {
                t.insert(k.to_string(), v);
            }
        };
        put(&mut top, "data", self.data.clone().map(Value::String));
        put(&mut top, "steps", self.steps.map(int));
        put(&mut top, "epochs", self.epochs.map(int));
        put(
            &mut top,
            "batch_size",
            self.batch_size.map(|v| int(v as u64)),
        );
        put(&mut top, "seed", self.seed.map(int));
        put(&mut top, "sample_every", self.sample_every.map(int));
        put(&mut top, "checkpoint_every", self.checkpoint_every.map(int));
        put(
            &mut top,
            "device",
            self.device.map(|d| Value::String(d.to_string())),
        );
        put(
            &mut top,
            "digits_count",
            self.digits_count.map(|v| int(v as u64)),
        );
        put(
            &mut top,
            "image_size",
            self.image_size.map(|v| int(v as u64)),
        );
        put(
            &mut top,
            "max_images",
            self.max_images.map(|v| int(v as u64)),
        );
        put(&mut top, "eval_every", self.eval_every.map(int));
        put(
            &mut top,
            "eval_classifier",
            self.eval_classifier
                .as_ref()
                .map(|p| Value::String(p.display().to_string())),
        );
        put(
            &mut gan,
            "model",
            self.model.map(|m| Value::String(m.name().to_string())),
        );
        put(
            &mut gan,
            "conditional",
            self.conditional.then_some(Value::Boolean(true)),
        );
        put(
            &mut gan,
            "latent_dim",
            self.latent_dim.map(|v| int(v as u64)),
        );
        put(&mut gan, "ngf", self.ngf.map(|v| int(v as u64)));
        put(&mut gan, "ndf", self.ndf.map(|v| int(v as u64)));
        put(&mut gan, "hidden", self.hidden.map(|v| int(v as u64)));
        put(&mut gan, "lr_g", self.lr_g.map(float));
        put(&mut gan, "lr_d", self.lr_d.map(float));
        put(&mut gan, "beta1", self.beta1.map(float));
        put(&mut gan, "beta2", self.beta2.map(float));
        put(&mut gan, "n_critic", self.n_critic.map(|v| int(v as u64)));
        put(&mut gan, "gp_weight", self.gp_weight.map(float));
        put(&mut gan, "clip_value", self.clip_value.map(float));
        put(&mut gan, "r1_gamma", self.r1_gamma.map(float));
        put(&mut gan, "r1_every", self.r1_every.map(|v| int(v as u64)));
        put(&mut gan, "label_smoothing", self.label_smoothing.map(float));
        put(&mut gan, "ema_decay", self.ema_decay.map(float));
        if !gan.is_empty() {
            top.insert("gan".to_string(), Value::Table(gan));
        }
        top
    }
}

/// Flags of `ganforge sample`.
#[derive(clap::Args)]
struct SampleArgs {
    /// A checkpoint written by `ganforge train` (OUT/checkpoint.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Images per PNG (default 64, or 1 with --seeds; 2000 points for 2-D models).
    #[arg(long)]
    n: Option<usize>,
    /// The PNG to write (with --seeds: OUT_seedS.png for each seed S).
    #[arg(long, default_value = "samples.png")]
    out: PathBuf,
    /// Draw only this class (conditional models); otherwise one row per class.
    #[arg(long = "class", value_name = "K")]
    class: Option<usize>,
    /// One PNG per seed, reproducible: --seeds 1,2,3.
    #[arg(long, value_delimiter = ',', value_name = "S,S,...")]
    seeds: Vec<u64>,
    /// The seed of the noise when --seeds is not given.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A latent walk: rows of --walk-steps images between pairs of random noise vectors.
    #[arg(long)]
    interpolate: bool,
    /// Images per interpolation row.
    #[arg(long, default_value_t = 8, value_name = "N")]
    walk_steps: usize,
    /// Interpolate linearly instead of spherically (slerp).
    #[arg(long)]
    lerp: bool,
    /// Use G's raw weights even when the checkpoint has EMA weights.
    #[arg(long)]
    no_ema: bool,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => train(&args),
        Command::Sample(args) => sample(&args),
        Command::Demo(args) => demo(&args).map_err(TrainError::from),
        Command::Bench(args) => bench(&args).map_err(TrainError::from),
        Command::TrainClassifier(args) => ganforge::metrics::cli::train_classifier(&args),
        Command::Eval(args) => ganforge::metrics::cli::eval(&args),
        Command::Profile(args) => profile(&args).map_err(TrainError::from),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        if let Some(h) = hint(&e) {
            eprintln!("hint: {h}");
        }
        std::process::exit(1);
    }
}

/// What to do about an error, where the message alone may not say.
fn hint(e: &TrainError) -> Option<String> {
    use ganforge::Error;
    match e {
        TrainError::Engine(Error::Data { .. }) => Some(format!(
            "--data takes {}; the folder must hold the data set's original files",
            ganforge::data::DATA_SPEC_FORMS
        )),
        TrainError::Engine(Error::InvalidParam { op: "model", .. })
        | TrainError::Engine(Error::InvalidParam { op: "config", .. }) => Some(
            "the model is checked against the data before training; change the flag named above \
             (the command's --help lists them)"
                .into(),
        ),
        TrainError::Engine(Error::GpuUnavailable(_)) => Some(
            "run on the CPU (--device cpu), or install a Vulkan driver (on Debian/Ubuntu, \
             mesa-vulkan-drivers provides lavapipe, a software GPU)"
                .into(),
        ),
        TrainError::NonFinite { .. } => Some(
            "lower the learning rates (e.g. --lr-d 1e-4 --lr-g 1e-4) and continue from the last \
             checkpoint with --resume, or start over with --overwrite"
                .into(),
        ),
        TrainError::Checkpoint { .. } | TrainError::Engine(Error::SafeTensors { .. }) => Some(
            "pass the checkpoint.safetensors that `ganforge train` wrote in its --out folder; a \
             truncated file cannot be repaired, but the run can be retrained or resumed from an \
             intact copy"
                .into(),
        ),
        _ => None,
    }
}

fn train(args: &TrainArgs) -> trainer::Result<()> {
    let overrides = args.overrides();
    let fresh = TrainConfig::resolve(None, args.config.as_deref(), &overrides)?;
    let out = args.out.clone().unwrap_or_else(|| fresh.default_out());
    let (cfg, mode) = if args.resume {
        let saved = trainer::saved_config(&out)?;
        let cfg = TrainConfig::resolve(Some(&saved), args.config.as_deref(), &overrides)?;
        (cfg, StartMode::Resume)
    } else if args.overwrite {
        (fresh, StartMode::Overwrite)
    } else {
        (fresh, StartMode::Fresh)
    };
    let mut t = Trainer::new(cfg, &out, mode)?;
    for note in t.notes() {
        println!("{note}");
    }
    let c = t.config();
    let (start, total, per_epoch) = (t.step(), t.total_steps(), t.steps_per_epoch());
    println!(
        "ganforge train: {} on {}",
        c.gan.model,
        t.data_description()
    );
    println!(
        "{}steps {start}->{total} ({:.2} epochs of {per_epoch} batches of {}), seed {}, run folder {}",
        if start > 0 { "resuming: " } else { "" },
        total as f64 / per_epoch as f64,
        c.batch_size,
        c.seed,
        out.display()
    );

    let bar = ProgressBar::new(total).with_position(start);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:25} {pos}/{len} steps {msg} [{elapsed_precise}<{eta_precise}, {per_sec}]",
        )
        .expect("valid template"),
    );
    let started = Instant::now();
    let quiet = bar.is_hidden();
    let mut last_line = String::new();
    let summary = t.run(&mut |ev| match ev {
        Event::Step {
            step,
            epoch,
            total_epochs,
            losses,
            ..
        } => {
            last_line = format!("epoch {epoch}/{total_epochs} {}", format_losses(losses));
            bar.set_message(last_line.clone());
            bar.set_position(step);
        }
        Event::Samples { step, path } if quiet => {
            // No terminal (a log file, CI): one line per sample grid instead of the bar.
            let done = step - start;
            let secs = started.elapsed().as_secs_f64();
            let rate = done as f64 / secs.max(1e-9);
            let eta = (total - step) as f64 / rate.max(1e-9);
            println!(
                "step {step}/{total} {last_line} ({rate:.2} steps/s, ETA {}) -> {}",
                format_secs(eta),
                path.display()
            );
        }
        Event::Eval {
            step,
            values,
            warnings,
        } => {
            let shown: Vec<String> = values.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
            let mut lines = vec![format!("step {step}: {}", shown.join(", "))];
            lines.extend(warnings.iter().map(|w| format!("warning: {w}")));
            for line in lines {
                if quiet {
                    println!("{line}");
                } else {
                    bar.println(line);
                }
            }
        }
        _ => {}
    });
    bar.finish_and_clear();
    let s = summary?;
    let steps = s.end_step - s.start_step;
    if steps == 0 {
        println!(
            "nothing to do: the run in {} is already at step {} (ask for more with --steps or \
             --epochs)",
            out.display(),
            s.end_step
        );
        return Ok(());
    }
    println!(
        "done: steps {}->{} in {} ({:.2} steps/s, {:.0} ms/step); {}; samples {}, checkpoint {}",
        s.start_step,
        s.end_step,
        format_secs(s.seconds),
        steps as f64 / s.seconds.max(1e-9),
        1000.0 * s.seconds / steps as f64,
        format_losses(&s.last_losses),
        out.join(trainer::SAMPLES_DIR).join("latest.png").display(),
        out.join(trainer::CHECKPOINT_FILE).display()
    );
    Ok(())
}

fn format_losses(losses: &[(String, f32)]) -> String {
    losses
        .iter()
        .map(|(k, v)| format!("{k} {v:.3}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn format_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn sample(args: &SampleArgs) -> trainer::Result<()> {
    let opts = SampleOptions {
        checkpoint: args.checkpoint.clone(),
        out: args.out.clone(),
        n: args.n,
        class: args.class,
        seeds: args.seeds.clone(),
        seed: args.seed,
        interpolate: args.interpolate,
        interp_steps: args.walk_steps,
        lerp: args.lerp,
        use_ema: !args.no_ema,
    };
    let report = trainer::sample(&opts)?;
    for note in &report.notes {
        println!("{note}");
    }
    for f in &report.files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

const LATENT: usize = 8;
const HIDDEN: usize = 128;

fn mlp(
    sizes: &[usize],
    hidden_act: fn() -> Box<dyn Module>,
    rng: &mut Rng,
    dev: &Device,
) -> ganforge::Result<Sequential> {
    let mut net = Sequential::new();
    for (i, pair) in sizes.windows(2).enumerate() {
        let cfg = LinearConfig {
            in_features: pair[0],
            out_features: pair[1],
            bias: true,
        };
        net = net.push(Linear::new(cfg, rng, dev)?);
        if i + 2 < sizes.len() {
            net = net.push_boxed(hidden_act());
        }
    }
    Ok(net)
}

fn demo(args: &DemoArgs) -> ganforge::Result<()> {
    let dev = Device::Cpu;
    let mut rng = Rng::new(args.seed);
    let mixture = match args.data {
        ToyData::Ring8 => GaussianMixture::ring8(),
        ToyData::Grid25 => GaussianMixture::grid25(),
    };
    let g = mlp(
        &[LATENT, HIDDEN, HIDDEN, 2],
        || Box::new(Relu),
        &mut rng,
        &dev,
    )?;
    let d = mlp(
        &[2, HIDDEN, HIDDEN, 1],
        || Box::new(LeakyRelu(0.2)),
        &mut rng,
        &dev,
    )?;
    let adam = AdamConfig {
        lr: args.lr,
        betas: (0.5, 0.999),
        ..AdamConfig::default()
    };
    let mut opt_g = Adam::new(g.parameters(), adam);
    let mut opt_d = Adam::new(d.parameters(), adam);
    let (ones, zeros) = (
        Tensor::ones([args.batch_size, 1], &dev),
        Tensor::zeros([args.batch_size, 1], &dev),
    );

    println!(
        "ganforge demo: vanilla GAN (MLP {LATENT}-{HIDDEN}-{HIDDEN}-2 / 2-{HIDDEN}-{HIDDEN}-1, BCE, Adam {}) on {} modes, {} steps, batch {}",
        args.lr,
        mixture.centres.len(),
        args.steps,
        args.batch_size
    );
    let bar = ProgressBar::new(args.steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}] {msg}",
        )
        .expect("valid template"),
    );
    for step in 1..=args.steps {
        // D step: real -> 1, fake -> 0 (fake detached: no gradient into G).
        let real = mixture.sample(args.batch_size, &mut rng, &dev)?;
        let z = Tensor::randn(0.0, 1.0, [args.batch_size, LATENT], &mut rng, &dev);
        let fake = g.forward(&z)?;
        opt_d.zero_grad();
        let loss_d = d
            .forward(&real)?
            .bce_with_logits(&ones)?
            .add(&d.forward(&fake.detach())?.bce_with_logits(&zeros)?)?;
        loss_d.backward()?;
        opt_d.step()?;
        // G step, non-saturating loss: make D call the fakes real.
        opt_g.zero_grad();
        let loss_g = d.forward(&fake)?.bce_with_logits(&ones)?;
        loss_g.backward()?;
        opt_g.step()?;
        if step % 50 == 0 || step == args.steps {
            bar.set_message(format!(
                "loss_d {:.3} loss_g {:.3}",
                loss_d.to_scalar()?,
                loss_g.to_scalar()?
            ));
        }
        bar.set_position(step as u64);
    }
    bar.finish();

    let _guard = autograd::no_grad();
    let z = Tensor::randn(0.0, 1.0, [2500, LATENT], &mut rng, &dev);
    let points = g.forward(&z)?.to_vec();
    let cov = mixture.coverage(&points);
    println!("{}", ascii_scatter(&points, &mixture));
    println!(
        "modes covered: {}/{}   high-quality samples (within 3 std of a mode): {:.1}%",
        cov.modes_covered,
        mixture.centres.len(),
        100.0 * cov.high_quality
    );
    println!("points per mode: {:?}", cov.per_mode);
    Ok(())
}

/// A terminal scatter plot: `o` marks a mode centre, `.:*#` the density of generated points.
fn ascii_scatter(points: &[f32], mixture: &GaussianMixture) -> String {
    let (cols, rows) = (61usize, 25usize);
    let extent = mixture
        .centres
        .iter()
        .flat_map(|c| [c[0].abs(), c[1].abs()])
        .fold(0.0f32, f32::max)
        * 1.5;
    let mut counts = vec![0usize; cols * rows];
    let cell = |x: f32, y: f32| {
        let c = ((x + extent) / (2.0 * extent) * cols as f32).floor();
        let r = ((extent - y) / (2.0 * extent) * rows as f32).floor();
        (c >= 0.0 && r >= 0.0 && (c as usize) < cols && (r as usize) < rows)
            .then(|| r as usize * cols + c as usize)
    };
    for p in points.chunks_exact(2) {
        if let Some(i) = cell(p[0], p[1]) {
            counts[i] += 1;
        }
    }
    let mut grid: Vec<char> = counts
        .iter()
        .map(|&n| match n {
            0 => ' ',
            1..=2 => '.',
            3..=9 => ':',
            10..=39 => '*',
            _ => '#',
        })
        .collect();
    for c in &mixture.centres {
        if let Some(i) = cell(c[0], c[1]) {
            if grid[i] == ' ' {
                grid[i] = 'o';
            }
        }
    }
    let mut out = format!("+{}+\n", "-".repeat(cols));
    for r in 0..rows {
        out.push('|');
        out.extend(&grid[r * cols..(r + 1) * cols]);
        out.push_str("|\n");
    }
    out.push_str(&format!(
        "+{}+  (o: an uncovered mode centre; . : * #: generated points)",
        "-".repeat(cols)
    ));
    out
}

fn profile(args: &ProfileArgs) -> ganforge::Result<()> {
    use ganforge::gan::DataShape;
    use ganforge::profile::{self, ProfileOptions};
    // The GPU first, so a missing adapter is reported before any CPU work.
    let mut devices = Vec::new();
    if args.device != ProfileDevice::Gpu {
        devices.push(Device::Cpu);
    }
    if args.device != ProfileDevice::Cpu {
        devices.push(Device::gpu()?);
    }
    let shape = if args.points {
        DataShape::points(args.classes)
    } else {
        DataShape::image(
            args.channels,
            args.image_size,
            args.image_size,
            args.classes,
        )
    };
    let mut opts = ProfileOptions {
        steps: args.steps,
        warmup: args.warmup,
        seed: args.seed,
        ..ProfileOptions::for_data(args.model, args.batch_size, shape)
    };
    let c = &mut opts.config;
    c.ngf = args.ngf.unwrap_or(c.ngf);
    c.ndf = args.ndf.unwrap_or(c.ndf);
    c.hidden = args.hidden.unwrap_or(c.hidden);
    c.latent_dim = args.latent_dim.unwrap_or(c.latent_dim);
    let mut profiles = Vec::new();
    for dev in &devices {
        eprintln!("profiling {} on {} ...", args.model, dev.name());
        profiles.push(profile::profile_step(&opts, dev)?);
    }
    print!("{}", profile::report::render(&profiles));
    if let Some(path) = &args.json {
        std::fs::write(path, profile::report::to_json(&profiles)).map_err(|source| {
            ganforge::Error::Io {
                path: path.display().to_string(),
                source,
            }
        })?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Which device a benchmark runs on.
#[derive(Clone, Copy, ValueEnum)]
enum BenchDevice {
    /// The CPU kernels (rayon; set RAYON_NUM_THREADS to match a reference's thread count).
    Cpu,
    /// The GPU kernels (WGSL through wgpu); each timed step ends with its loss read back, so
    /// the GPU has finished inside the timed region.
    Gpu,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Workload(s) to run: w1 dcgan-mnist, w2 dcgan-64, w3 mlp-gan-mnist, w4 wgan-gp-mnist
    /// (critic and generator steps timed separately).
    #[arg(long, value_enum, num_args = 1.., default_values = ["w1"])]
    workload: Vec<ganforge::bench::Workload>,
    /// Device to run on.
    #[arg(long, value_enum, default_value = "cpu")]
    device: BenchDevice,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
}

fn bench(args: &BenchArgs) -> ganforge::Result<()> {
    let dev = match args.device {
        BenchDevice::Cpu => {
            println!("device: cpu, {} threads", rayon::current_num_threads());
            Device::Cpu
        }
        BenchDevice::Gpu => {
            let dev = Device::gpu()?;
            if let Device::Gpu(g) = &dev {
                println!("device: gpu: {}", g.info());
            }
            dev
        }
    };
    let mut series = Vec::new();
    for &w in &args.workload {
        let mut b = ganforge::bench::Bench::new(w, &dev)?;
        series.extend(b.run(args.warmup, args.steps)?);
    }
    print!("{}", ganforge::bench::report(&series, &dev.name()));
    Ok(())
}
