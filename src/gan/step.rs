//! [`Gan`]: a generator, a discriminator, their optimizers and an optional EMA generator,
//! with one training step per call, sampling and a complete state dict for bit-identical
//! resume.

use super::config::{DataShape, GanConfig, ModelKind};
use super::losses::{
    discriminator_loss, generator_loss, gradient_penalty, interpolation_weights, r1_penalty,
};
use super::models::{Architecture, Discriminator, Generator};
use crate::autograd::no_grad;
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::nn::{clip_parameters, prefixed, Module};
use crate::optim::{Adam, AdamConfig, Optimizer, RmsProp, RmsPropConfig};
use crate::profile::{self, Phase};
use crate::tensor::{Rng, Tensor};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// The state-dict key of the step counter.
pub const STEP_KEY: &str = "gan.step";
/// Prefixes of the state dict's groups.
pub const GENERATOR_PREFIX: &str = "generator";
/// See [`GENERATOR_PREFIX`].
pub const DISCRIMINATOR_PREFIX: &str = "discriminator";
/// See [`GENERATOR_PREFIX`].
pub const GENERATOR_EMA_PREFIX: &str = "generator_ema";
/// See [`GENERATOR_PREFIX`].
pub const OPTIMIZER_G_PREFIX: &str = "optimizer_g";
/// See [`GENERATOR_PREFIX`].
pub const OPTIMIZER_D_PREFIX: &str = "optimizer_d";

/// Standing statistics of the EMA generator ([`Gan::refresh_ema_stats`]): this many
/// training-mode batches ...
pub const STANDING_STATS_BATCHES: usize = 16;
/// ... of this many noise vectors each ...
pub const STANDING_STATS_BATCH_SIZE: usize = 64;
/// ... drawn from `Rng::new(STANDING_STATS_SEED)`: a stream of its own, so the statistics are
/// a function of the EMA weights alone and training draws nothing for them.
pub const STANDING_STATS_SEED: u64 = 0x5354_414e_4449_4e47;

type BoxedOptimizer = Box<dyn Optimizer + Send + Sync>;

/// A GAN being trained: G, D, their optimizers (Adam; RMSprop for `wgan`), the EMA copy of G
/// when `ema_decay > 0`, and the count of discriminator steps taken.
///
/// One [`Gan::train_step`] is one discriminator update; every `n_critic`-th step is also one
/// generator update:
///
/// ```text
/// z ~ N(0, I);  fake = G(z, y)                                  (y: the batch's labels)
/// D step:  L_D = loss_D(D(real, y), D(fake.detach(), y)) [+ gp_weight * gp]
///          [+ r1_gamma / 2 * r1 on every r1_every-th step, times r1_every];  D.step()
///          wgan: clamp every D parameter to [-clip_value, clip_value]
/// G step (every n_critic-th call):
///          n_critic == 1: the same `fake` (as pytorch/examples/dcgan), re-scored by the
///                         updated D;   n_critic > 1: fake = G(z', y) with fresh z'
///          L_G = loss_G(D(fake, y));  G.step();  G_ema = d * G_ema + (1 - d) * G
/// ```
///
/// **The EMA generator's batch norm** should not use G's running statistics: they describe
/// the activations of G's weights, not of the averaged ones (the further the average lags
/// behind G, the larger the mismatch; `tests/gan_models.rs` shows samples off by 0.75 in
/// `[-1, 1]` with a fast-moving G). Its statistics are instead the "standing statistics" of
/// BigGAN: recomputed from its own training-mode forward passes
/// ([`Generator::standing_stats`], [`STANDING_STATS_BATCHES`] batches of
/// [`STANDING_STATS_BATCH_SIZE`] from [`STANDING_STATS_SEED`]) whenever they are needed after
/// the weights moved: before EMA sampling ([`Gan::generate`]) and in [`Gan::state_dict`] (so
/// checkpoints hold them). They are a function of the EMA weights alone, so when they are
/// computed does not change any result, and resume stays bit-identical. (At the usual
/// `lr = 2e-4` G moves slowly and G's statistics were close: on MNIST DCGAN/CGAN runs with
/// decay 0.995 and 0.999 the Fréchet distance of the EMA samples moved by a few percent,
/// within the noise of 2,000 samples.)
///
/// Conditional models score the fakes with the real batch's labels, so generated classes
/// follow the data's class frequencies. Randomness is drawn from the `rng` passed to each
/// call, in this order: `z`, then the gradient penalty's `eps` (wgan-gp), then `z'`. With the
/// same `rng` state and a restored [`Gan::state_dict`], the next step is bit-identical.
pub struct Gan {
    cfg: GanConfig,
    shape: DataShape,
    g: Generator,
    d: Discriminator,
    g_ema: Option<Generator>,
    /// The EMA generator's batch-norm statistics match its weights (see the type's docs).
    ema_stats_fresh: AtomicBool,
    opt_g: BoxedOptimizer,
    opt_d: BoxedOptimizer,
    step: u64,
}

/// Refuses settings that cannot train, naming the field and a valid range.
fn validate(cfg: &GanConfig, shape: &DataShape) -> Result<()> {
    let bad = |msg: String| Err(Error::invalid("config", msg));
    if cfg.latent_dim == 0 || cfg.ngf == 0 || cfg.ndf == 0 || cfg.hidden == 0 {
        return bad(format!(
            "latent_dim ({}), ngf ({}), ndf ({}) and hidden ({}) must all be at least 1",
            cfg.latent_dim, cfg.ngf, cfg.ndf, cfg.hidden
        ));
    }
    if cfg.n_critic == 0 {
        return bad("n_critic must be at least 1".into());
    }
    for (name, v) in [("lr_g", cfg.lr_g), ("lr_d", cfg.lr_d)] {
        if !(v.is_finite() && v > 0.0) {
            return bad(format!("{name} is {v}; it must be a positive number"));
        }
    }
    for (name, v) in [("beta1", cfg.beta1), ("beta2", cfg.beta2)] {
        if !(0.0..1.0).contains(&v) {
            return bad(format!("{name} is {v}; it must be in [0, 1)"));
        }
    }
    if !(0.0..1.0).contains(&cfg.label_smoothing) {
        return bad(format!(
            "label_smoothing is {}; it must be in [0, 1) (0.1 is typical)",
            cfg.label_smoothing
        ));
    }
    if cfg.label_smoothing > 0.0 && !cfg.model.supports_label_smoothing() {
        return bad(format!(
            "label smoothing applies to the losses with a real target (vanilla, dcgan, cgan, \
             lsgan), not to {}: set label_smoothing to 0",
            cfg.model
        ));
    }
    if !(0.0..1.0).contains(&cfg.ema_decay) {
        return bad(format!(
            "ema_decay is {}; it must be in [0, 1) (0 turns EMA off; 0.999 is typical)",
            cfg.ema_decay
        ));
    }
    if cfg.model == ModelKind::Wgan && !(cfg.clip_value.is_finite() && cfg.clip_value > 0.0) {
        return bad(format!(
            "clip_value is {}; wgan needs a positive clipping bound (0.01 in the paper)",
            cfg.clip_value
        ));
    }
    if !(cfg.r1_gamma.is_finite() && cfg.r1_gamma >= 0.0) {
        return bad(format!(
            "r1_gamma is {}; it must be >= 0 (0 turns R1 off; 1-10 is usual)",
            cfg.r1_gamma
        ));
    }
    if cfg.r1_every == 0 {
        return bad("r1_every is 0; it must be at least 1 (every D step)".to_string());
    }
    if cfg.r1_gamma > 0.0 && cfg.model.is_wasserstein() {
        return bad(format!(
            "the R1 penalty is for the families with a classifier-like D, not {}: wgan clips \
             the critic's weights and wgan-gp has its own gradient penalty (gp_weight); set \
             r1_gamma to 0",
            cfg.model
        ));
    }
    if cfg.model == ModelKind::WganGp && !(cfg.gp_weight.is_finite() && cfg.gp_weight >= 0.0) {
        return bad(format!(
            "gp_weight is {}; it must be >= 0 (10 in the paper)",
            cfg.gp_weight
        ));
    }
    if !shape.points_2d && (shape.channels == 0 || shape.height == 0 || shape.width == 0) {
        return Err(Error::invalid(
            "data",
            format!("the data's images are {shape}: every dim must be at least 1"),
        ));
    }
    if cfg.is_conditional() && shape.num_classes == 0 {
        let what = if cfg.model == ModelKind::Cgan {
            "cgan is a conditional model".to_string()
        } else {
            format!("--conditional {} is a conditional model", cfg.model)
        };
        return Err(Error::invalid(
            "model",
            format!(
                "{what} and needs class labels, but the data ({shape}) has none: use labelled \
                 data (mnist, fashion-mnist, cifar10, digits, or a folder with one sub-folder \
                 per class), or an unconditional model (e.g. dcgan, without --conditional)"
            ),
        ));
    }
    Architecture::choose(cfg.model, shape)?;
    Ok(())
}

fn optimizers(
    cfg: &GanConfig,
    g: &Generator,
    d: &Discriminator,
) -> (BoxedOptimizer, BoxedOptimizer) {
    if cfg.model == ModelKind::Wgan {
        let rms = |lr| RmsPropConfig {
            lr,
            ..RmsPropConfig::default()
        };
        (
            Box::new(RmsProp::new(g.parameters(), rms(cfg.lr_g))),
            Box::new(RmsProp::new(d.parameters(), rms(cfg.lr_d))),
        )
    } else {
        let adam = |lr| AdamConfig {
            lr,
            betas: (cfg.beta1, cfg.beta2),
            ..AdamConfig::default()
        };
        (
            Box::new(Adam::new(g.parameters(), adam(cfg.lr_g))),
            Box::new(Adam::new(d.parameters(), adam(cfg.lr_d))),
        )
    }
}

/// Copies every parameter and buffer of `src` into `dst` (same architecture).
fn copy_module(dst: &dyn Module, src: &dyn Module) -> Result<()> {
    let map: HashMap<String, Tensor> = src.state_dict().into_iter().collect();
    dst.load_state_dict(&map, true)
}

/// The entries of `tensors` under `prefix.`, with the prefix removed.
fn sub_map(tensors: &HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    let p = format!("{prefix}.");
    tensors
        .iter()
        .filter_map(|(k, t)| k.strip_prefix(&p).map(|rest| (rest.to_string(), t.clone())))
        .collect()
}

/// Fresh copies of every tensor (a snapshot that later updates do not change).
fn deep_copy(named: Vec<(String, Tensor)>) -> Result<HashMap<String, Tensor>> {
    named
        .into_iter()
        .map(|(k, t)| {
            Ok((
                k,
                Tensor::from_vec_on(t.to_vec(), t.shape().clone(), &t.device())?,
            ))
        })
        .collect()
}

/// Adds what to check to a state-dict error of one group.
fn in_group(group: &str, e: Error) -> Error {
    match e {
        Error::StateDict(msg) => Error::StateDict(format!(
            "{group}: {msg} (was the checkpoint written with another model, width \
             (ngf/ndf/hidden/latent_dim), data shape or number of classes?)"
        )),
        other => other,
    }
}

/// `Err` naming the non-finite loss, before it reaches any weight.
fn check_finite(name: &str, v: f32, step: u64, hint: &str) -> Result<()> {
    if v.is_finite() {
        return Ok(());
    }
    Err(Error::invalid(
        "train_step",
        format!(
            "{name} is {v} at step {}: training diverged, and this update was not applied. \
             {hint}",
            step + 1
        ),
    ))
}

impl Gan {
    /// Builds G and D (and their optimizers, and the EMA copy of G when `ema_decay > 0`) for
    /// the data. A model that does not fit the data is refused here, before any training,
    /// with an error saying what to change: a convolutional family on images that are not
    /// 28x28, 32x32 or 64x64, a conditional model on unlabelled data, an invalid
    /// hyper-parameter. The EMA copy is made without drawing from `rng`.
    pub fn new(cfg: &GanConfig, shape: &DataShape, rng: &mut Rng, dev: &Device) -> Result<Gan> {
        validate(cfg, shape)?;
        let g = Generator::new(cfg, shape, rng, dev)?;
        let d = Discriminator::new(cfg, shape, rng, dev)?;
        let g_ema = if cfg.ema_decay > 0.0 {
            let ema = Generator::new(cfg, shape, &mut Rng::new(0), dev)?;
            copy_module(&ema, &g)?;
            ema.set_training(false);
            Some(ema)
        } else {
            None
        };
        let (opt_g, opt_d) = optimizers(cfg, &g, &d);
        Ok(Gan {
            cfg: cfg.clone(),
            shape: *shape,
            g,
            d,
            g_ema,
            ema_stats_fresh: AtomicBool::new(false),
            opt_g,
            opt_d,
            step: 0,
        })
    }

    /// One discriminator update on the batch `real` (`[N, C, H, W]` or `[N, 2]`, the shape
    /// the model was built for; `labels` required by conditional models, ignored otherwise),
    /// and on every `n_critic`-th call one generator update. Returns named scalars for
    /// logging, in this order: `loss_d`, `loss_g` (only when G was updated), `d_real` and
    /// `d_fake` (mean D output on the real and fake batch; for the BCE families the mean
    /// probability `sigmoid(D)`, for the others the raw score), and `gp` (wgan-gp, before
    /// weighting).
    ///
    /// A non-finite loss is an error, returned before that loss updates any weight.
    pub fn train_step(
        &mut self,
        real: &Tensor,
        labels: Option<&[usize]>,
        rng: &mut Rng,
    ) -> Result<Vec<(String, f32)>> {
        let want = self.shape.sample_dims();
        if real.rank() != want.len() + 1 || real.dims()[1..] != want[..] || real.dims()[0] == 0 {
            let mut full = vec![0usize];
            full.extend(&want);
            return Err(Error::bad_shape(
                "train_step",
                real.shape(),
                format!(
                    "the model was built for {} (batches of shape [N, {}]); rebuild it for this \
                     data (channels, image size) or convert the data",
                    self.shape,
                    want.iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let n = real.dims()[0];
        let labels = if self.cfg.is_conditional() {
            labels
        } else {
            None
        };
        let model = self.cfg.model;
        let n_critic = self.cfg.n_critic;
        let update_g = (self.step + 1).is_multiple_of(n_critic as u64);
        let reuse_fake = n_critic == 1;
        let dev = real.device();
        let latent = self.g.latent_dim();

        // ---- D step ----
        // (The `profile::` scopes name the parts of the step for `ganforge profile`; they do
        // nothing unless a profiler session records on this thread.)
        let section = profile::section("D step");
        let z = {
            let _s = profile::root_scope("noise z");
            Tensor::randn(0.0, 1.0, [n, latent], rng, &dev)
        };
        let fake = if reuse_fake {
            self.g.forward_with_labels(&z, labels)?
        } else {
            let _ng = no_grad();
            self.g.forward_with_labels(&z, labels)?
        };
        self.opt_d.zero_grad();
        // With R1 due this step, the real batch is a leaf that requires grad, so that the
        // same forward pass serves the loss and the penalty's gradient.
        let r1_due = self.cfg.r1_gamma > 0.0 && self.step.is_multiple_of(self.cfg.r1_every as u64);
        let real_in = if r1_due {
            let leaf = real.detach();
            leaf.set_requires_grad(true);
            leaf
        } else {
            real.clone()
        };
        let d_real = self.d.forward_with_labels(&real_in, labels)?;
        let d_fake = self.d.forward_with_labels(&fake.detach(), labels)?;
        let scope = profile::root_scope("loss_d");
        let mut loss_d = discriminator_loss(model, &d_real, &d_fake, self.cfg.label_smoothing)?;
        let mut r1_value = None;
        if r1_due {
            let _s = profile::root_scope("R1 penalty");
            let r1 = r1_penalty(&d_real, &real_in)?;
            r1_value = Some(r1.to_scalar()?);
            let weight = 0.5 * self.cfg.r1_gamma * self.cfg.r1_every as f32;
            loss_d = loss_d.add(&r1.mul_scalar(weight))?;
        }
        let mut gp_value = None;
        if model == ModelKind::WganGp {
            let _s = profile::root_scope("gradient penalty");
            let eps = interpolation_weights(n, rng);
            let gp = gradient_penalty(&self.d, real, &fake, labels, &eps)?;
            gp_value = Some(gp.to_scalar()?);
            loss_d = loss_d.add(&gp.mul_scalar(self.cfg.gp_weight))?;
        }
        let loss_d_value = loss_d.to_scalar()?;
        drop(scope);
        let (d_real_value, d_fake_value) = {
            let _s = profile::root_scope("d_real, d_fake (logged)");
            let _ng = no_grad();
            let report = |t: &Tensor| -> Result<f32> {
                let t = if model.uses_bce() {
                    t.sigmoid()
                } else {
                    t.clone()
                };
                t.mean_all()?.to_scalar()
            };
            (report(&d_real)?, report(&d_fake)?)
        };
        check_finite(
            "loss_d",
            loss_d_value,
            self.step,
            "Lower lr_d (and lr_g), or check the data for NaN/inf values.",
        )?;
        {
            let _s = profile::root_scope("loss_d");
            loss_d.backward()?;
            let _r = profile::region("D", "free graph (outside ops)", Phase::Other);
            drop((loss_d, d_real, d_fake));
        }
        {
            let _r = profile::region(
                self.optimizer_row("D"),
                "optimizer loop (outside ops)",
                Phase::Optimizer,
            );
            self.opt_d.step()?;
            self.opt_d.zero_grad();
        }
        if model == ModelKind::Wgan {
            let _s = profile::root_scope("D weight clipping");
            clip_parameters(&self.d.parameters(), self.cfg.clip_value)?;
        }
        drop(section);

        let mut out = vec![("loss_d".to_string(), loss_d_value)];

        // ---- G step ----
        if update_g {
            let _section = profile::section("G step");
            let fake = if reuse_fake {
                fake
            } else {
                let z = {
                    let _s = profile::root_scope("noise z");
                    Tensor::randn(0.0, 1.0, [n, latent], rng, &dev)
                };
                self.g.forward_with_labels(&z, labels)?
            };
            self.opt_g.zero_grad();
            let d_fake = self.d.forward_with_labels(&fake, labels)?;
            let scope = profile::root_scope("loss_g");
            let loss_g = generator_loss(model, &d_fake)?;
            let loss_g_value = loss_g.to_scalar()?;
            check_finite("loss_g", loss_g_value, self.step, "Lower lr_g (and lr_d).")?;
            loss_g.backward()?;
            {
                let _r = profile::region("G", "free graph (outside ops)", Phase::Other);
                drop((loss_g, d_fake, fake));
            }
            drop(scope);
            {
                let _r = profile::region(
                    self.optimizer_row("G"),
                    "optimizer loop (outside ops)",
                    Phase::Optimizer,
                );
                self.opt_g.step()?;
                self.opt_g.zero_grad();
                // The backward pass through D left gradients on D's parameters: not needed.
                self.opt_d.zero_grad();
            }
            {
                let _s = profile::root_scope("G ema");
                self.update_ema()?;
            }
            out.push(("loss_g".to_string(), loss_g_value));
        }
        out.push(("d_real".to_string(), d_real_value));
        out.push(("d_fake".to_string(), d_fake_value));
        if let Some(gp) = gp_value {
            out.push(("gp".to_string(), gp));
        }
        if let Some(r1) = r1_value {
            out.push(("r1".to_string(), r1));
        }
        self.step += 1;
        Ok(out)
    }

    /// The profiler's name for the optimizer of `net` (`"D optimizer (adam)"`).
    fn optimizer_row(&self, net: &str) -> &'static str {
        match (net, self.cfg.model == ModelKind::Wgan) {
            ("D", false) => "D optimizer (adam)",
            ("D", true) => "D optimizer (rmsprop)",
            (_, false) => "G optimizer (adam)",
            (_, true) => "G optimizer (rmsprop)",
        }
    }

    /// `G_ema = decay * G_ema + (1 - decay) * G` for every parameter (elementwise, f32).
    /// The buffers (batch-norm statistics) are left stale, to be recomputed from the new
    /// weights when next needed ([`Gan::refresh_ema_stats`]).
    fn update_ema(&self) -> Result<()> {
        let Some(ema) = &self.g_ema else {
            return Ok(());
        };
        let decay = self.cfg.ema_decay;
        self.ema_stats_fresh.store(false, Ordering::Relaxed);
        for ((ne, e), (ng, g)) in ema.named_parameters().iter().zip(self.g.named_parameters()) {
            debug_assert_eq!(ne, &ng);
            e.axpby_in_place(decay, &g, 1.0 - decay, 1.0)?;
        }
        Ok(())
    }

    /// Recomputes the EMA generator's batch-norm statistics from its own activations
    /// ([`Generator::standing_stats`] over noise from [`STANDING_STATS_SEED`]) unless they are
    /// current. Does nothing without EMA or batch norm. Never draws from the training RNG.
    /// [`Gan::generate`] and [`Gan::state_dict`] call it; call it yourself before using
    /// [`Gan::generator_ema`] directly.
    pub fn refresh_ema_stats(&self) -> Result<()> {
        let Some(ema) = &self.g_ema else {
            return Ok(());
        };
        if self.ema_stats_fresh.load(Ordering::Relaxed) {
            return Ok(());
        }
        ema.standing_stats(
            STANDING_STATS_BATCHES,
            STANDING_STATS_BATCH_SIZE,
            &mut Rng::new(STANDING_STATS_SEED),
        )?;
        self.ema_stats_fresh.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// `G(z, y)` in eval mode without recording a graph (see [`Generator::generate`]), from
    /// the EMA weights (with their standing batch-norm statistics) when `use_ema` and EMA is
    /// on. `z` is `[N, latent_dim]`; the result is images in `[-1, 1]`, `[N, C, H, W]`, or
    /// points `[N, 2]`.
    pub fn generate(&self, z: &Tensor, labels: Option<&[usize]>, use_ema: bool) -> Result<Tensor> {
        match (&self.g_ema, use_ema) {
            (Some(ema), true) => {
                self.refresh_ema_stats()?;
                ema.generate(z, labels)
            }
            _ => self.g.generate(z, labels),
        }
    }

    /// Size of the noise vector.
    pub fn latent_dim(&self) -> usize {
        self.g.latent_dim()
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &GanConfig {
        &self.cfg
    }

    /// The data shape it was built for.
    pub fn data_shape(&self) -> &DataShape {
        &self.shape
    }

    /// Discriminator steps taken (calls of [`Gan::train_step`] that succeeded).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The generator being trained.
    pub fn generator(&self) -> &Generator {
        &self.g
    }

    /// The discriminator (critic).
    pub fn discriminator(&self) -> &Discriminator {
        &self.d
    }

    /// The EMA generator, when `ema_decay > 0`. Its batch-norm statistics are current only
    /// after [`Gan::refresh_ema_stats`] (or [`Gan::generate`], [`Gan::state_dict`]).
    pub fn generator_ema(&self) -> Option<&Generator> {
        self.g_ema.as_ref()
    }

    /// Everything needed to resume bit-identically (with the caller's RNG state):
    /// `generator.<name>` and `discriminator.<name>` (PyTorch `state_dict` names, e.g.
    /// `generator.main.0.weight`, `discriminator.main.3.running_mean`), `generator_ema.<name>`
    /// when EMA is on, `optimizer_g.state.<i>.<name>` and `optimizer_d.state.<i>.<name>`
    /// (PyTorch optimizer state names), and [`STEP_KEY`] (`gan.step`), the step count as a
    /// 0-dim f32 (exact up to 2^24 = 16,777,216 steps).
    ///
    /// The tensors are the live handles (shared data, like [`Module::state_dict`]) except
    /// the step: write them out before the next step, or copy them. The EMA generator's
    /// batch-norm statistics are brought up to date first ([`Gan::refresh_ema_stats`]; if
    /// that fails, they are left as they were: call it first to see the error).
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        // Best effort: an error here (a device failure) leaves the statistics stale, and the
        // flag says so; callers that need the error call `refresh_ema_stats` first.
        let _ = self.refresh_ema_stats();
        let mut all = prefixed(GENERATOR_PREFIX, self.g.state_dict());
        all.extend(prefixed(DISCRIMINATOR_PREFIX, self.d.state_dict()));
        if let Some(ema) = &self.g_ema {
            all.extend(prefixed(GENERATOR_EMA_PREFIX, ema.state_dict()));
        }
        all.extend(prefixed(OPTIMIZER_G_PREFIX, self.opt_g.state_dict()));
        all.extend(prefixed(OPTIMIZER_D_PREFIX, self.opt_d.state_dict()));
        all.push((STEP_KEY.to_string(), Tensor::scalar(self.step as f32)));
        all
    }

    /// Restores a [`Gan::state_dict`] (copied in). Strict: a missing or unknown key, or a
    /// shape mismatch, is an error that names the key (and both shapes), and on any error
    /// nothing is changed. When EMA is on but the tensors have no `generator_ema.*`, the EMA
    /// starts from the loaded generator; `generator_ema.*` is ignored when EMA is off. The
    /// EMA generator's batch-norm statistics are recomputed from its weights before use (so
    /// checkpoints that hold G's statistics there, from before standing statistics, load
    /// right).
    pub fn load_state_dict(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let known = [
            GENERATOR_PREFIX,
            DISCRIMINATOR_PREFIX,
            GENERATOR_EMA_PREFIX,
            OPTIMIZER_G_PREFIX,
            OPTIMIZER_D_PREFIX,
        ];
        let mut unknown: Vec<&String> = tensors
            .keys()
            .filter(|k| {
                k.as_str() != STEP_KEY && !known.iter().any(|p| k.starts_with(&format!("{p}.")))
            })
            .collect();
        if !unknown.is_empty() {
            unknown.sort();
            return Err(Error::StateDict(format!(
                "unexpected keys: {}",
                unknown
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let step = match tensors.get(STEP_KEY) {
            None => {
                return Err(Error::StateDict(format!(
                    "missing key {STEP_KEY} (the step count)"
                )))
            }
            Some(t) => {
                let v = if t.elem_count() == 1 {
                    t.to_vec()[0]
                } else {
                    f32::NAN
                };
                if !(v >= 0.0 && v.fract() == 0.0) {
                    return Err(Error::StateDict(format!(
                        "{STEP_KEY} must be one non-negative integer, got shape {:?} value {v}",
                        t.shape()
                    )));
                }
                v as u64
            }
        };
        // Snapshot, so a failure half-way restores everything.
        let backup = deep_copy(self.state_dict())?;
        match self.load_groups(tensors) {
            Ok(()) => {
                self.step = step;
                Ok(())
            }
            Err(e) => {
                self.load_groups(&backup)
                    .expect("restoring the snapshot of this model's own state");
                Err(e)
            }
        }
    }

    fn load_groups(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.ema_stats_fresh.store(false, Ordering::Relaxed);
        self.g
            .load_state_dict(&sub_map(tensors, GENERATOR_PREFIX), true)
            .map_err(|e| in_group(GENERATOR_PREFIX, e))?;
        self.d
            .load_state_dict(&sub_map(tensors, DISCRIMINATOR_PREFIX), true)
            .map_err(|e| in_group(DISCRIMINATOR_PREFIX, e))?;
        if let Some(ema) = &self.g_ema {
            let m = sub_map(tensors, GENERATOR_EMA_PREFIX);
            if m.is_empty() {
                copy_module(ema, &self.g)?;
            } else {
                ema.load_state_dict(&m, true)
                    .map_err(|e| in_group(GENERATOR_EMA_PREFIX, e))?;
            }
        }
        self.opt_g
            .load_state_dict(&sub_map(tensors, OPTIMIZER_G_PREFIX))
            .map_err(|e| in_group(OPTIMIZER_G_PREFIX, e))?;
        self.opt_d
            .load_state_dict(&sub_map(tensors, OPTIMIZER_D_PREFIX))
            .map_err(|e| in_group(OPTIMIZER_D_PREFIX, e))?;
        Ok(())
    }

    /// Just the generator, for sampling from a checkpoint (`ganforge sample`): built from
    /// `cfg` and `shape` (which must be those of the run) and loaded from the
    /// `generator_ema.*` tensors when `use_ema` and they are present, else from
    /// `generator.*`. Strict (missing, unknown or mis-shaped keys are errors). The result is
    /// in eval mode. An EMA generator gets its standing batch-norm statistics recomputed (as
    /// [`Gan::refresh_ema_stats`]: the same values a current checkpoint holds, and the right
    /// ones for a checkpoint written before they existed).
    pub fn generator_from(
        cfg: &GanConfig,
        shape: &DataShape,
        tensors: &HashMap<String, Tensor>,
        use_ema: bool,
        dev: &Device,
    ) -> Result<Generator> {
        validate(cfg, shape)?;
        let g = Generator::new(cfg, shape, &mut Rng::new(0), dev)?;
        let ema = sub_map(tensors, GENERATOR_EMA_PREFIX);
        let (prefix, map) = if use_ema && !ema.is_empty() {
            (GENERATOR_EMA_PREFIX, ema)
        } else {
            (GENERATOR_PREFIX, sub_map(tensors, GENERATOR_PREFIX))
        };
        if map.is_empty() {
            return Err(Error::StateDict(format!(
                "no generator weights: the checkpoint has no `{prefix}.*` tensors"
            )));
        }
        g.load_state_dict(&map, true)
            .map_err(|e| in_group(prefix, e))?;
        g.set_training(false);
        if prefix == GENERATOR_EMA_PREFIX {
            g.standing_stats(
                STANDING_STATS_BATCHES,
                STANDING_STATS_BATCH_SIZE,
                &mut Rng::new(STANDING_STATS_SEED),
            )?;
        }
        Ok(g)
    }
}
