//! The driver of `ganforge profile`: builds a GAN on random data, warms it up, records the
//! training steps that update both D and G, and aggregates the records into rows.

use super::{Phase, Record, Session};
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::gan::{DataShape, Gan, GanConfig, ModelKind};
use crate::tensor::{Rng, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// What to profile: a GAN on random data of a given shape.
#[derive(Clone, Debug)]
pub struct ProfileOptions {
    /// The family and its settings ([`GanConfig::defaults_for_data`] unless changed, e.g.
    /// narrower `ngf`/`ndf` for a quick run).
    pub config: GanConfig,
    /// Examples per batch.
    pub batch_size: usize,
    /// The shape of one example (and the number of classes, for conditional models).
    pub shape: DataShape,
    /// Profiled steps, averaged; each one updates D and G.
    pub steps: usize,
    /// Unprofiled steps first that update D and G (pipeline compilation, buffer pools); with
    /// `n_critic > 1` the D-only steps in between run too.
    pub warmup: usize,
    /// Seed of the weights and the random data.
    pub seed: u64,
}

impl ProfileOptions {
    /// `model` with its defaults at `batch_size` on MNIST-shaped data (1x28x28, 10 classes):
    /// one profiled step after two warm-up steps, seed 0.
    pub fn new(model: ModelKind, batch_size: usize) -> ProfileOptions {
        ProfileOptions::for_data(model, batch_size, DataShape::image(1, 28, 28, 10))
    }

    /// Like [`ProfileOptions::new`] on data of `shape`, with the family's defaults for it.
    pub fn for_data(model: ModelKind, batch_size: usize, shape: DataShape) -> ProfileOptions {
        ProfileOptions {
            config: GanConfig::defaults_for_data(model, &shape),
            batch_size,
            shape,
            steps: 1,
            warmup: 2,
            seed: 0,
        }
    }
}

/// One row of a profile: an op (or time outside ops) of one layer in one part of the step,
/// with the same shapes every call. Counts are per step (averaged over the profiled steps).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// `D step` or `G step`.
    pub section: String,
    /// The layer (`G.main.0 ConvTranspose2d`), or a part of the step (`loss_d`, `autograd`,
    /// `D optimizer (adam)`).
    pub layer: String,
    /// The op with its detail (`conv2d k4 s2 p1`, `matmul nt`), or what a row of time
    /// outside ops covers.
    pub op: String,
    /// Forward, backward, double backward, optimizer, other.
    pub phase: Phase,
    /// The dims of each input.
    pub inputs: Vec<Vec<usize>>,
    /// The dims of the output.
    pub output: Vec<usize>,
    /// Calls per step.
    pub calls: f64,
    /// FLOPs per step (all calls), from the op's formula.
    pub flops: f64,
    /// Bytes moved per step (all calls), from the op's formula.
    pub bytes: f64,
    /// Measured milliseconds per step (all calls).
    pub ms: f64,
}

impl Row {
    /// Achieved GFLOP/s (0 for a row without FLOPs or time).
    pub fn gflops(&self) -> f64 {
        if self.ms > 0.0 {
            self.flops / self.ms / 1e6
        } else {
            0.0
        }
    }

    /// The op's name without its detail (`conv2d` for `conv2d k4 s2 p1`); a row of time
    /// outside ops keeps its whole name.
    pub fn base_op(&self) -> &str {
        if self.is_outside_ops() {
            return &self.op;
        }
        self.op.split(' ').next().unwrap_or(&self.op)
    }

    /// True for a row of time outside ops (a region: autograd, optimizer loop, freeing).
    pub fn is_outside_ops(&self) -> bool {
        self.op.ends_with("(outside ops)")
    }
}

/// The profile of one model on one device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepProfile {
    /// The family (`dcgan`).
    pub model: String,
    /// `cpu` or `gpu`.
    pub device: String,
    /// Threads of the CPU, or the GPU adapter.
    pub device_info: String,
    /// Examples per batch.
    pub batch_size: usize,
    /// The data shape, e.g. `1x28x28 images, 10 classes`.
    pub data: String,
    /// D updates per G update of the family (the profiled calls are those that update G).
    pub n_critic: usize,
    /// Profiled steps averaged.
    pub steps: usize,
    /// Warm-up steps that updated D and G.
    pub warmup: usize,
    /// Mean wall-clock time of the profiled steps, measured around the whole training step
    /// (independently of the rows).
    pub step_ms: f64,
    /// Wall-clock time of each profiled step.
    pub step_ms_each: Vec<f64>,
    /// The last warm-up step that updated D and G, run without the profiler (on a GPU the
    /// profiler's wait around every op makes a step slower), if there was one.
    pub unprofiled_step_ms: Option<f64>,
    /// The rows, in order of first appearance.
    pub rows: Vec<Row>,
    /// Ops that ran with no timer (a hook missing in the engine); should be empty.
    pub untimed_ops: Vec<String>,
}

impl StepProfile {
    /// Milliseconds in rows (ops and time outside ops).
    pub fn rows_ms(&self) -> f64 {
        self.rows.iter().map(|r| r.ms).sum()
    }

    /// Step time no row accounts for (negative when rows add up to more than the step).
    pub fn unattributed_ms(&self) -> f64 {
        self.step_ms - self.rows_ms()
    }

    /// FLOPs of one step, all rows.
    pub fn flops(&self) -> f64 {
        self.rows.iter().map(|r| r.flops).sum()
    }

    /// Bytes moved in one step, all rows.
    pub fn bytes(&self) -> f64 {
        self.rows.iter().map(|r| r.bytes).sum()
    }
}

/// Waits for the GPU and returns its kept error (nothing to do on the CPU).
fn settle(dev: &Device) -> Result<()> {
    if let Device::Gpu(g) = dev {
        g.wait_idle();
        g.check("profile")?;
    }
    Ok(())
}

/// A random batch: examples `U(-1, 1)` of the data shape, and labels when it has classes.
fn random_batch(
    opts: &ProfileOptions,
    rng: &mut Rng,
    dev: &Device,
) -> (Tensor, Option<Vec<usize>>) {
    let mut dims = vec![opts.batch_size];
    dims.extend(opts.shape.sample_dims());
    let real = Tensor::rand_uniform(-1.0, 1.0, dims, rng, dev);
    let labels = (opts.shape.num_classes > 0).then(|| {
        (0..opts.batch_size)
            .map(|_| rng.below(opts.shape.num_classes))
            .collect()
    });
    (real, labels)
}

type Key = (
    Arc<str>,
    Arc<str>,
    String,
    Phase,
    Vec<Vec<usize>>,
    Vec<usize>,
);

/// Profiles training steps of `opts.config` on `dev`: builds the GAN for `opts.shape`, runs
/// `opts.warmup` unprofiled steps that update D and G (and
/// the D-only steps between them when `n_critic > 1`), then records `opts.steps` calls of
/// [`Gan::train_step`] that update both D and G, each timed as a whole by the wall clock and
/// op by op by the recorder. Rows are averaged over the profiled steps.
pub fn profile_step(opts: &ProfileOptions, dev: &Device) -> Result<StepProfile> {
    if opts.batch_size == 0 || opts.steps == 0 {
        return Err(Error::invalid(
            "profile",
            format!(
                "batch size ({}) and profiled steps ({}) must be at least 1",
                opts.batch_size, opts.steps
            ),
        ));
    }
    let cfg = &opts.config;
    if cfg.is_conditional() && opts.shape.num_classes == 0 {
        return Err(Error::invalid(
            "profile",
            format!(
                "{} is conditional and needs labelled data: give a number of classes >= 1",
                cfg.model
            ),
        ));
    }
    let mut rng = Rng::new(opts.seed);
    let mut data_rng = Rng::new(opts.seed.wrapping_add(1));
    let mut gan = Gan::new(cfg, &opts.shape, &mut rng, dev)?;
    let n_critic = cfg.n_critic as u64;
    let updates_g = |gan: &Gan| (gan.step() + 1).is_multiple_of(n_critic);

    // Warm-up, unprofiled; ends right before a step that updates G.
    let mut full_steps = 0;
    let mut unprofiled_step_ms = None;
    while full_steps < opts.warmup || !updates_g(&gan) {
        let full = updates_g(&gan);
        let (real, labels) = random_batch(opts, &mut data_rng, dev);
        settle(dev)?;
        let t = Instant::now();
        gan.train_step(&real, labels.as_deref(), &mut rng)?;
        settle(dev)?;
        if full {
            full_steps += 1;
            unprofiled_step_ms = Some(t.elapsed().as_secs_f64() * 1e3);
        }
    }

    let mut order: Vec<Key> = Vec::new();
    let mut sums: HashMap<Key, (f64, f64, f64, u64)> = HashMap::new();
    let mut step_ms_each = Vec::new();
    let mut untimed_ops: Vec<String> = Vec::new();
    for i in 0..opts.steps {
        while i > 0 && !updates_g(&gan) {
            let (real, labels) = random_batch(opts, &mut data_rng, dev);
            gan.train_step(&real, labels.as_deref(), &mut rng)?;
        }
        let (real, labels) = random_batch(opts, &mut data_rng, dev);
        settle(dev)?;
        let session = Session::start(dev);
        let t = Instant::now();
        let result = gan.train_step(&real, labels.as_deref(), &mut rng);
        let settled = settle(dev);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let (records, untimed) = session.finish();
        result?;
        settled?;
        step_ms_each.push(ms);
        for u in untimed {
            if !untimed_ops.contains(&u) {
                untimed_ops.push(u);
            }
        }
        for Record {
            section,
            layer,
            op,
            phase,
            inputs,
            output,
            cost,
            ns,
        } in records
        {
            let key = (section, layer, op, phase, inputs, output);
            let entry = sums.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                (0.0, 0.0, 0.0, 0)
            });
            entry.0 += cost.flops;
            entry.1 += cost.bytes;
            entry.2 += ns as f64 / 1e6;
            entry.3 += 1;
        }
    }

    let steps = opts.steps as f64;
    let rows = order
        .into_iter()
        .map(|key| {
            let (flops, bytes, ms, calls) = sums[&key];
            let (section, layer, op, phase, inputs, output) = key;
            Row {
                section: section.to_string(),
                layer: layer.to_string(),
                op,
                phase,
                inputs,
                output,
                calls: calls as f64 / steps,
                flops: flops / steps,
                bytes: bytes / steps,
                ms: ms / steps,
            }
        })
        .collect();
    Ok(StepProfile {
        model: cfg.model.name().to_string(),
        device: dev.name(),
        device_info: match dev {
            Device::Cpu => format!("{} threads", rayon::current_num_threads()),
            Device::Gpu(g) => g.info().to_string(),
        },
        batch_size: opts.batch_size,
        data: opts.shape.to_string(),
        n_critic: cfg.n_critic,
        steps: opts.steps,
        warmup: full_steps,
        step_ms: step_ms_each.iter().sum::<f64>() / steps,
        step_ms_each,
        unprofiled_step_ms,
        rows,
        untimed_ops,
    })
}
