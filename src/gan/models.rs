//! The generator and discriminator architectures of every family, with PyTorch parameter names
//! so a checkpoint loads key for key into the PyTorch modules written out below.
//!
//! Which architecture a model gets ([`Architecture::choose`]):
//!
//! | data | `vanilla` | every other family |
//! |---|---|---|
//! | 2-D points | [`Architecture::Mlp`] (small) | [`Architecture::Mlp`] (small) |
//! | images of any size | [`Architecture::Mlp`] (W3 of `perf.md`) | — |
//! | 28x28 | | [`Architecture::Conv28`] (W1 of `perf.md`) |
//! | 32x32 | | [`Architecture::Conv32`] (the 64x64 nets less one block) |
//! | 64x64 | | [`Architecture::Conv64`] (pytorch/examples/dcgan) |
//!
//! Other image sizes are refused for the convolutional families with a message saying what
//! to change.
//!
//! The discriminator's normalisation depends on the family ([`DNorm`]): batch norm for
//! `dcgan`, `cgan`, `lsgan` and `wgan` (Arjovsky et al.'s reference code keeps DCGAN's batch
//! norm in the critic; clipping then also bounds the batch-norm scales), none for `wgan-gp`
//! (the per-sample gradient penalty is invalid with batch norm, Gulrajani et al. §4), and
//! spectral norm on every convolution and linear layer for `sngan`. The discriminator always
//! outputs raw scores (logits) of shape `[N]`: the PyTorch example's final `Sigmoid` is folded
//! into the BCE loss. Without batch norm every discriminator layer has a bias.
//!
//! **Conditioning** (`cgan`, or `--conditional`): G owns `label_emb = Embedding(K, K)` (K
//! classes) whose row is concatenated to `z` (for the convolutional G, along the channel dim
//! of the `[N, nz, 1, 1]` input); D owns `label_emb = Embedding(K, H*W)` whose row is reshaped
//! to an `H x W` plane and concatenated to the image as one extra channel (the MLP D on images
//! flattens the `C + 1` channels; on 2-D points D's table is `Embedding(K, K)`, concatenated to
//! the point). An extra input plane lets every convolution see the label at every position,
//! and keeps D's body the unconditional one with `nc + 1` input channels.
//!
//! The PyTorch modules these are equivalent to (`n_classes = 0` for unconditional models;
//! ganforge's `K` is `n_classes`):
//!
//! ```python
//! import torch, torch.nn as nn
//! from torch.nn.utils import spectral_norm as SN
//!
//! class Generator(nn.Module):   # Conv64; Conv32 drops the ngf*8 block (first layer nz->ngf*4)
//!     def __init__(self, nz=100, ngf=64, nc=3, n_classes=0):
//!         super().__init__()
//!         if n_classes: self.label_emb = nn.Embedding(n_classes, n_classes)
//!         self.main = nn.Sequential(
//!             nn.ConvTranspose2d(nz + n_classes, ngf*8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf*8), nn.ReLU(True),
//!             nn.ConvTranspose2d(ngf*8, ngf*4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf*4), nn.ReLU(True),
//!             nn.ConvTranspose2d(ngf*4, ngf*2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf*2), nn.ReLU(True),
//!             nn.ConvTranspose2d(ngf*2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
//!             nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())
//!     def forward(self, z, labels=None):
//!         if labels is not None: z = torch.cat([z, self.label_emb(labels)], 1)
//!         return self.main(z.view(z.size(0), -1, 1, 1))
//!
//! # Conv28 generator (W1): the same class with
//! #   self.main = nn.Sequential(
//! #       nn.ConvTranspose2d(nz + n_classes, ngf*4, 7, 1, 0, bias=False), nn.BatchNorm2d(ngf*4), nn.ReLU(True),
//! #       nn.ConvTranspose2d(ngf*4, ngf*2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf*2), nn.ReLU(True),
//! #       nn.ConvTranspose2d(ngf*2, nc, 4, 2, 1, bias=True), nn.Tanh())
//!
//! class Discriminator(nn.Module):   # Conv64 with batch norm (dcgan, cgan, lsgan, wgan)
//!     def __init__(self, ndf=64, nc=3, n_classes=0, size=64):
//!         super().__init__()
//!         if n_classes: self.label_emb = nn.Embedding(n_classes, size * size)
//!         self.main = nn.Sequential(
//!             nn.Conv2d(nc + (1 if n_classes else 0), ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
//!             nn.Conv2d(ndf, ndf*2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf*2), nn.LeakyReLU(0.2, True),
//!             nn.Conv2d(ndf*2, ndf*4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf*4), nn.LeakyReLU(0.2, True),
//!             nn.Conv2d(ndf*4, ndf*8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf*8), nn.LeakyReLU(0.2, True),
//!             nn.Conv2d(ndf*8, 1, 4, 1, 0, bias=False))           # logits: no Sigmoid
//!     def forward(self, x, labels=None):
//!         if labels is not None:
//!             plane = self.label_emb(labels).view(x.size(0), 1, x.size(2), x.size(3))
//!             x = torch.cat([x, plane], 1)
//!         return self.main(x).view(-1)
//!
//! # Conv64 without batch norm (wgan-gp): drop the BatchNorm2d layers and set bias=True on
//! #   every Conv2d (indices become main.0, main.2, main.4, main.6, main.8).
//! # sngan: the wgan-gp layout with every Conv2d/Linear wrapped: SN(nn.Conv2d(..., bias=True)).
//! # Conv32: drop the ndf*8 block; the last layer is nn.Conv2d(ndf*4, 1, 4, 1, 0).
//! # Conv28 (W1): nn.Conv2d(nc', ndf, 4, 2, 1, bias=True), nn.LeakyReLU(0.2),
//! #   nn.Conv2d(ndf, ndf*2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf*2), nn.LeakyReLU(0.2),
//! #   nn.Flatten(), nn.Linear(ndf*2*7*7, 1)       (without batch norm: bias=True, no BatchNorm2d)
//!
//! # Mlp on images (vanilla, W3), h = hidden; G ends with .view(N, C, H, W), D flattens first:
//! #   G.main = nn.Sequential(nn.Linear(nz + n_classes, h), nn.LeakyReLU(0.2), nn.Linear(h, 2*h),
//! #       nn.LeakyReLU(0.2), nn.Linear(2*h, 4*h), nn.LeakyReLU(0.2), nn.Linear(4*h, C*H*W), nn.Tanh())
//! #   D.main = nn.Sequential(nn.Linear(C'*H*W, 2*h), nn.LeakyReLU(0.2), nn.Linear(2*h, h),
//! #       nn.LeakyReLU(0.2), nn.Linear(h, 1))
//! # Mlp on 2-D points (no Tanh: the points are not in [-1, 1]):
//! #   G.main = nn.Sequential(nn.Linear(nz + n_classes, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 2))
//! #   D.main = nn.Sequential(nn.Linear(2 + n_classes, h), nn.LeakyReLU(0.2), nn.Linear(h, h),
//! #       nn.LeakyReLU(0.2), nn.Linear(h, 1))
//! ```
//!
//! Initialisation: the convolutional models get [`dcgan_init`] on `main` (weights
//! `N(0, 0.02)`, batch-norm scales `N(1, 0.02)`); the MLPs keep PyTorch's default init; the
//! label tables keep `N(0, 1)` (nn.Embedding's default).

use super::config::{DataShape, GanConfig, ModelKind};
use crate::autograd::no_grad;
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::nn::init::dcgan_init;
use crate::nn::{
    prefixed, BatchNorm, Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig, Embedding,
    Flatten, HasWeight, LeakyRelu, Linear, Module, Relu, Sequential, SpectralNorm, Tanh,
};
use crate::ops::BatchNormParams;
use crate::profile;
use crate::tensor::{Rng, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

/// The network layout, fixed by the family and the data (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// Fully connected G and D (vanilla GAN on images; every family on 2-D points).
    Mlp,
    /// DCGAN for 28x28 images (W1): G `nz -> 7x7 -> 14x14 -> 28x28`, D two strided convs
    /// and a linear layer.
    Conv28,
    /// DCGAN for 32x32 images: the 64x64 nets with one fewer up/down-sampling block.
    Conv32,
    /// DCGAN for 64x64 images, exactly pytorch/examples/dcgan.
    Conv64,
}

impl Architecture {
    /// The layout for `model` on `shape`, or an error saying what to change when the
    /// convolutional models do not fit the image size.
    pub fn choose(model: ModelKind, shape: &DataShape) -> Result<Architecture> {
        if shape.points_2d || model == ModelKind::Vanilla {
            return Ok(Architecture::Mlp);
        }
        match (shape.height, shape.width) {
            (28, 28) => Ok(Architecture::Conv28),
            (32, 32) => Ok(Architecture::Conv32),
            (64, 64) => Ok(Architecture::Conv64),
            (h, w) => {
                let nearest = [28usize, 32, 64]
                    .into_iter()
                    .min_by_key(|s| s.abs_diff(h.max(w)))
                    .unwrap_or(64);
                let square = if h != w {
                    " (non-square images are centre-cropped to a square by the folder loader)"
                } else {
                    ""
                };
                Err(Error::invalid(
                    "model",
                    format!(
                        "{model} has convolutional networks for 28x28, 32x32 and 64x64 images, \
                         but the data is {h}x{w}: resize the data to a supported size \
                         (e.g. --image-size {nearest}){square}, or use --model vanilla, \
                         whose MLPs take any size"
                    ),
                ))
            }
        }
    }

    /// True for the convolutional layouts.
    pub fn is_conv(self) -> bool {
        self != Architecture::Mlp
    }
}

/// How the discriminator's hidden layers are normalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DNorm {
    /// Batch norm after every strided convolution but the first (DCGAN).
    BatchNorm,
    /// No normalisation (WGAN-GP critic); every layer has a bias.
    None,
    /// Spectral norm on every convolution and linear layer, no batch norm (SNGAN).
    Spectral,
}

impl DNorm {
    /// The discriminator normalisation of `model`.
    pub fn for_model(model: ModelKind) -> DNorm {
        match model {
            ModelKind::WganGp => DNorm::None,
            ModelKind::Sngan => DNorm::Spectral,
            _ => DNorm::BatchNorm,
        }
    }
}

// ---- layer helpers -------------------------------------------------------------------------

#[allow(clippy::too_many_arguments)]
fn conv(
    ci: usize,
    co: usize,
    k: usize,
    s: usize,
    p: usize,
    bias: bool,
    rng: &mut Rng,
    dev: &Device,
) -> Result<Conv2d> {
    Conv2d::new(
        Conv2dConfig {
            in_channels: ci,
            out_channels: co,
            kernel_size: k,
            stride: s,
            padding: p,
            bias,
        },
        rng,
        dev,
    )
}

#[allow(clippy::too_many_arguments)]
fn convt(
    ci: usize,
    co: usize,
    k: usize,
    s: usize,
    p: usize,
    bias: bool,
    rng: &mut Rng,
    dev: &Device,
) -> Result<ConvTranspose2d> {
    ConvTranspose2d::new(
        ConvTranspose2dConfig {
            in_channels: ci,
            out_channels: co,
            kernel_size: k,
            stride: s,
            padding: p,
            output_padding: 0,
            bias,
        },
        rng,
        dev,
    )
}

fn bn(c: usize, dev: &Device) -> Result<BatchNorm> {
    BatchNorm::new(c, BatchNormParams::default(), dev)
}

/// Appends a weighted layer, wrapped in spectral norm when `sn`.
fn push_layer<L: HasWeight + 'static>(
    seq: Sequential,
    layer: L,
    sn: bool,
    rng: &mut Rng,
) -> Result<Sequential> {
    Ok(if sn {
        seq.push(SpectralNorm::new(layer, rng)?)
    } else {
        seq.push(layer)
    })
}

/// Checks `labels` against a batch of `n` and `num_classes`, for a model that does or does
/// not take labels. Labels given to an unconditional model are ignored.
fn check_labels<'a>(
    who: &str,
    num_classes: usize,
    n: usize,
    labels: Option<&'a [usize]>,
) -> Result<Option<&'a [usize]>> {
    if num_classes == 0 {
        return Ok(None);
    }
    let labels = labels.ok_or_else(|| {
        Error::invalid(
            "labels",
            format!(
                "the conditional {who} needs a class label per example ({num_classes} classes), \
                 none were given"
            ),
        )
    })?;
    if labels.len() != n {
        return Err(Error::invalid(
            "labels",
            format!(
                "{} labels for a batch of {n} in the conditional {who}",
                labels.len()
            ),
        ));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l >= num_classes) {
        return Err(Error::invalid(
            "labels",
            format!(
                "class {bad} is out of range for the conditional {who}, which knows \
                 {num_classes} classes (0..={})",
                num_classes - 1
            ),
        ));
    }
    Ok(Some(labels))
}

/// `label_emb` first, then `main` (PyTorch's registration order in the modules above).
fn named_with_emb(emb: &Option<Embedding>, main: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    let mut v = match emb {
        Some(e) => prefixed("label_emb", e.named_parameters()),
        None => Vec::new(),
    };
    v.extend(prefixed("main", main));
    v
}

// ---- generator -----------------------------------------------------------------------------

/// The generator `G(z[, y])`: noise `[N, latent_dim]` (and labels) to images `[N, C, H, W]`
/// in `[-1, 1]`, or points `[N, 2]`. Parameters are named `main.*` and `label_emb.weight`.
pub struct Generator {
    main: Sequential,
    label_emb: Option<Embedding>,
    arch: Architecture,
    latent_dim: usize,
    num_classes: usize,
    out_dims: Vec<usize>,
    training: AtomicBool,
}

impl Generator {
    /// Builds the generator of `cfg` for data of `shape` (DCGAN init for the convolutional
    /// layouts). Errors when the model does not fit the data.
    pub fn new(cfg: &GanConfig, shape: &DataShape, rng: &mut Rng, dev: &Device) -> Result<Self> {
        let arch = Architecture::choose(cfg.model, shape)?;
        let num_classes = if cfg.is_conditional() {
            shape.num_classes
        } else {
            0
        };
        let nz = cfg.latent_dim;
        let nin = nz + num_classes;
        let label_emb = if num_classes > 0 {
            Some(Embedding::new(num_classes, num_classes, rng, dev)?)
        } else {
            None
        };
        let (nc, g, h) = (shape.channels, cfg.ngf, cfg.hidden);
        let main = match arch {
            Architecture::Mlp if shape.points_2d => Sequential::new()
                .push(Linear::with_bias(nin, h, rng, dev)?)
                .push(Relu)
                .push(Linear::with_bias(h, h, rng, dev)?)
                .push(Relu)
                .push(Linear::with_bias(h, 2, rng, dev)?),
            Architecture::Mlp => Sequential::new()
                .push(Linear::with_bias(nin, h, rng, dev)?)
                .push(LeakyRelu(0.2))
                .push(Linear::with_bias(h, 2 * h, rng, dev)?)
                .push(LeakyRelu(0.2))
                .push(Linear::with_bias(2 * h, 4 * h, rng, dev)?)
                .push(LeakyRelu(0.2))
                .push(Linear::with_bias(4 * h, shape.sample_len(), rng, dev)?)
                .push(Tanh),
            Architecture::Conv28 => Sequential::new()
                .push(convt(nin, 4 * g, 7, 1, 0, false, rng, dev)?)
                .push(bn(4 * g, dev)?)
                .push(Relu)
                .push(convt(4 * g, 2 * g, 4, 2, 1, false, rng, dev)?)
                .push(bn(2 * g, dev)?)
                .push(Relu)
                .push(convt(2 * g, nc, 4, 2, 1, true, rng, dev)?)
                .push(Tanh),
            Architecture::Conv32 | Architecture::Conv64 => {
                let widths: Vec<usize> = if arch == Architecture::Conv64 {
                    vec![8 * g, 4 * g, 2 * g, g]
                } else {
                    vec![4 * g, 2 * g, g]
                };
                let mut seq = Sequential::new();
                let mut cin = nin;
                for (i, &w) in widths.iter().enumerate() {
                    let (s, p) = if i == 0 { (1, 0) } else { (2, 1) };
                    seq = seq
                        .push(convt(cin, w, 4, s, p, false, rng, dev)?)
                        .push(bn(w, dev)?)
                        .push(Relu);
                    cin = w;
                }
                seq.push(convt(cin, nc, 4, 2, 1, false, rng, dev)?)
                    .push(Tanh)
            }
        };
        if arch.is_conv() {
            dcgan_init(&main, rng)?;
        }
        Ok(Generator {
            main,
            label_emb,
            arch,
            latent_dim: nz,
            num_classes,
            out_dims: shape.sample_dims(),
            training: AtomicBool::new(true),
        })
    }

    /// Size of the noise vector.
    pub fn latent_dim(&self) -> usize {
        self.latent_dim
    }

    /// Number of classes it is conditioned on (0: unconditional).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The layout.
    pub fn architecture(&self) -> Architecture {
        self.arch
    }

    /// The dims of one generated example: `[C, H, W]` or `[2]`.
    pub fn output_dims(&self) -> &[usize] {
        &self.out_dims
    }

    /// `G(z, y)` in the current mode (training unless switched), recording a graph when grad
    /// mode is on. `z` is `[N, latent_dim]` (or `[N, latent_dim, 1, 1]`); `labels` (one per
    /// row, `< num_classes`) are required by a conditional G and ignored otherwise.
    pub fn forward_with_labels(&self, z: &Tensor, labels: Option<&[usize]>) -> Result<Tensor> {
        let n = match z.dims() {
            [n, l] | [n, l, 1, 1] if *l == self.latent_dim => *n,
            _ => {
                return Err(Error::bad_shape(
                    "generator",
                    z.shape(),
                    format!(
                        "expected noise of shape [N, {}] (the model's latent_dim)",
                        self.latent_dim
                    ),
                ))
            }
        };
        let _scope = profile::root_scope("G");
        let mut input = z.reshape([n, self.latent_dim])?;
        if let (Some(emb), Some(labels)) = (
            &self.label_emb,
            check_labels("generator", self.num_classes, n, labels)?,
        ) {
            let rows = {
                let _s = profile::child_scope("label_emb", Some(emb.layer_type()));
                emb.forward_indices(labels)?
            };
            input = Tensor::concat(&[input, rows], 1)?;
        }
        let width = input.dims()[1];
        let mut out_dims = vec![n];
        out_dims.extend(&self.out_dims);
        if self.arch.is_conv() {
            let input = input.reshape([n, width, 1, 1])?;
            let _s = profile::child_scope("main", None);
            self.main.forward(&input)
        } else {
            let y = {
                let _s = profile::child_scope("main", None);
                self.main.forward(&input)?
            };
            y.reshape(out_dims)
        }
    }

    /// Samples for display or export: `G(z, y)` in eval mode (batch norm uses its running
    /// statistics) without recording a graph. Images are in `[-1, 1]`, `[N, C, H, W]`;
    /// points are `[N, 2]`, on G's device; `z` may live on another device (it is copied over,
    /// e.g. noise drawn on the CPU so that every device sees the same numbers). The previous
    /// mode is restored afterwards.
    pub fn generate(&self, z: &Tensor, labels: Option<&[usize]>) -> Result<Tensor> {
        let _g = no_grad();
        let dev = self.main.parameters()[0].device();
        let moved;
        let z = if z.device() == dev {
            z
        } else {
            moved = z.to_device(&dev)?;
            &moved
        };
        let was_training = self.is_training();
        self.main.set_training(false);
        let out = self.forward_with_labels(z, labels);
        self.main.set_training(was_training);
        out
    }

    /// True in training mode (batch norm uses batch statistics and updates its running ones).
    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }

    /// True when the layout has batch norm (the convolutional generators), whose running
    /// statistics [`Generator::generate`] uses.
    pub fn has_batch_norm(&self) -> bool {
        !self.main.named_buffers().is_empty()
    }

    /// Recomputes the batch-norm running statistics from this generator's own activations
    /// ("standing statistics", Brock et al. 2019, BigGAN §3.1 / appendix): `batches`
    /// training-mode forward passes of `batch_size` noise vectors from `rng` (a conditional
    /// G gets classes `i % K`), without a graph, every batch counted equally (PyTorch's
    /// `momentum=None`). Afterwards `running_mean` is the mean of the batch means and
    /// `running_var` the mean of the batches' unbiased variances, `num_batches_tracked` is
    /// `batches`, and the mode is restored. A generator without batch norm is left as it is
    /// and draws nothing from `rng`.
    ///
    /// An EMA generator needs this before eval-mode sampling: its weights are an average, so
    /// the statistics of the generator being trained do not describe its activations.
    pub fn standing_stats(&self, batches: usize, batch_size: usize, rng: &mut Rng) -> Result<()> {
        if !self.has_batch_norm() {
            return Ok(());
        }
        if batches == 0 || batch_size < 2 {
            return Err(Error::invalid(
                "standing_stats",
                format!(
                    "needs at least one batch of at least 2 ({batches} batches of {batch_size})"
                ),
            ));
        }
        let dev = match self.main.named_parameters().first() {
            Some((_, p)) => p.device(),
            None => return Ok(()),
        };
        let _ng = no_grad();
        let was_training = self.is_training();
        self.main.set_training(true);
        let mut run = || -> Result<()> {
            self.main.set_cumulative_stats(true)?;
            let k = self.num_classes;
            for b in 0..batches {
                let z = Tensor::randn(0.0, 1.0, [batch_size, self.latent_dim], rng, &dev);
                let labels: Option<Vec<usize>> =
                    (k > 0).then(|| (0..batch_size).map(|i| (b * batch_size + i) % k).collect());
                self.forward_with_labels(&z, labels.as_deref())?;
            }
            Ok(())
        };
        let out = run();
        let off = self.main.set_cumulative_stats(false);
        self.main.set_training(was_training);
        out.and(off)
    }
}

impl Module for Generator {
    /// `G(z)` for an unconditional generator (a conditional one errors: use
    /// [`Generator::forward_with_labels`]).
    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        self.forward_with_labels(z, None)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        named_with_emb(&self.label_emb, self.main.named_parameters())
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        prefixed("main", self.main.named_buffers())
    }
    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
        self.main.set_training(training);
    }
    fn set_cumulative_stats(&self, on: bool) -> Result<()> {
        self.main.set_cumulative_stats(on)
    }
}

// ---- discriminator -------------------------------------------------------------------------

/// The discriminator (critic) `D(x[, y])`: examples `[N, C, H, W]` or `[N, 2]` (and labels)
/// to raw scores `[N]` (logits for the BCE families). Parameters are named `main.*` and
/// `label_emb.weight`.
pub struct Discriminator {
    main: Sequential,
    label_emb: Option<Embedding>,
    arch: Architecture,
    norm: DNorm,
    num_classes: usize,
    in_dims: Vec<usize>,
}

impl Discriminator {
    /// Builds the discriminator of `cfg` for data of `shape` (DCGAN init for the
    /// convolutional layouts). Errors when the model does not fit the data.
    pub fn new(cfg: &GanConfig, shape: &DataShape, rng: &mut Rng, dev: &Device) -> Result<Self> {
        let arch = Architecture::choose(cfg.model, shape)?;
        let norm = DNorm::for_model(cfg.model);
        let sn = norm == DNorm::Spectral;
        let num_classes = if cfg.is_conditional() {
            shape.num_classes
        } else {
            0
        };
        let (nc, d, h) = (shape.channels, cfg.ndf, cfg.hidden);
        let plane = shape.height * shape.width;
        let label_emb = match num_classes {
            0 => None,
            k if shape.points_2d => Some(Embedding::new(k, k, rng, dev)?),
            k => Some(Embedding::new(k, plane, rng, dev)?),
        };
        let extra = usize::from(num_classes > 0);
        let mut seq = Sequential::new();
        match arch {
            Architecture::Mlp => {
                let (nin, w1, w2) = if shape.points_2d {
                    (2 + num_classes, h, h)
                } else {
                    ((nc + extra) * plane, 2 * h, h)
                };
                seq = push_layer(seq, Linear::with_bias(nin, w1, rng, dev)?, sn, rng)?
                    .push(LeakyRelu(0.2));
                seq = push_layer(seq, Linear::with_bias(w1, w2, rng, dev)?, sn, rng)?
                    .push(LeakyRelu(0.2));
                seq = push_layer(seq, Linear::with_bias(w2, 1, rng, dev)?, sn, rng)?;
            }
            _ => {
                let bnorm = norm == DNorm::BatchNorm;
                let widths: Vec<usize> = match arch {
                    Architecture::Conv28 => vec![d, 2 * d],
                    Architecture::Conv32 => vec![d, 2 * d, 4 * d],
                    _ => vec![d, 2 * d, 4 * d, 8 * d],
                };
                let mut cin = nc + extra;
                for (i, &w) in widths.iter().enumerate() {
                    // With batch norm, the biases of the reference nets: W1 has one on its
                    // first conv only, the PyTorch example on none. Without, every layer.
                    let bias = !bnorm || (arch == Architecture::Conv28 && i == 0);
                    seq = push_layer(seq, conv(cin, w, 4, 2, 1, bias, rng, dev)?, sn, rng)?;
                    if bnorm && i > 0 {
                        seq = seq.push(bn(w, dev)?);
                    }
                    seq = seq.push(LeakyRelu(0.2));
                    cin = w;
                }
                if arch == Architecture::Conv28 {
                    seq = seq.push(Flatten);
                    seq = push_layer(seq, Linear::with_bias(cin * 7 * 7, 1, rng, dev)?, sn, rng)?;
                } else {
                    seq = push_layer(seq, conv(cin, 1, 4, 1, 0, !bnorm, rng, dev)?, sn, rng)?;
                }
            }
        }
        if arch.is_conv() {
            dcgan_init(&seq, rng)?;
        }
        Ok(Discriminator {
            main: seq,
            label_emb,
            arch,
            norm,
            num_classes,
            in_dims: shape.sample_dims(),
        })
    }

    /// Number of classes it is conditioned on (0: unconditional).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The layout.
    pub fn architecture(&self) -> Architecture {
        self.arch
    }

    /// The normalisation of its hidden layers.
    pub fn norm(&self) -> DNorm {
        self.norm
    }

    /// The dims of one example it takes: `[C, H, W]` or `[2]`.
    pub fn input_dims(&self) -> &[usize] {
        &self.in_dims
    }

    /// `D(x, y)`: raw scores `[N]`. `labels` are required by a conditional D and ignored
    /// otherwise. Errors name the expected example shape when `x` does not fit.
    pub fn forward_with_labels(&self, x: &Tensor, labels: Option<&[usize]>) -> Result<Tensor> {
        if x.rank() != self.in_dims.len() + 1 || x.dims()[1..] != self.in_dims[..] {
            return Err(Error::bad_shape(
                "discriminator",
                x.shape(),
                format!(
                    "expected a batch of examples of shape {:?} (the data the model was built for)",
                    self.in_dims
                ),
            ));
        }
        let _scope = profile::root_scope("D");
        let n = x.dims()[0];
        let mut input = x.clone();
        if let (Some(emb), Some(labels)) = (
            &self.label_emb,
            check_labels("discriminator", self.num_classes, n, labels)?,
        ) {
            let e = {
                let _s = profile::child_scope("label_emb", Some(emb.layer_type()));
                emb.forward_indices(labels)?
            };
            let e = if self.in_dims.len() == 3 {
                e.reshape([n, 1, self.in_dims[1], self.in_dims[2]])?
            } else {
                e
            };
            input = Tensor::concat(&[input, e], 1)?;
        }
        if self.arch == Architecture::Mlp && input.rank() > 2 {
            input = input.flatten(1)?;
        }
        let scores = {
            let _s = profile::child_scope("main", None);
            self.main.forward(&input)?
        };
        scores.reshape([n])
    }
}

impl Module for Discriminator {
    /// `D(x)` for an unconditional discriminator (a conditional one errors: use
    /// [`Discriminator::forward_with_labels`]).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with_labels(x, None)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        named_with_emb(&self.label_emb, self.main.named_parameters())
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        prefixed("main", self.main.named_buffers())
    }
    fn set_training(&self, training: bool) {
        self.main.set_training(training);
    }
    fn set_cumulative_stats(&self, on: bool) -> Result<()> {
        self.main.set_cumulative_stats(on)
    }
}
