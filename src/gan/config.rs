//! What to train: the model family ([`ModelKind`]), its hyper-parameters ([`GanConfig`], with
//! the published defaults of each family) and the shape of the data ([`DataShape`]).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The GAN families, named on the command line as `vanilla`, `dcgan`, `cgan`, `wgan`,
/// `wgan-gp`, `lsgan` and `sngan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// Goodfellow et al. 2014: MLP generator and discriminator, binary cross-entropy.
    Vanilla,
    /// Radford et al. 2015: convolutional G and D with batch norm, binary cross-entropy.
    Dcgan,
    /// Mirza & Osindero 2014: a DCGAN (an MLP on 2-D points) conditioned on class labels.
    Cgan,
    /// Arjovsky et al. 2017: Wasserstein critic with weight clipping, RMSprop, n_critic.
    Wgan,
    /// Gulrajani et al. 2017: Wasserstein critic without batch norm and a gradient penalty.
    WganGp,
    /// Mao et al. 2017: least-squares losses.
    Lsgan,
    /// Miyato et al. 2018: spectral norm on every layer of D, hinge loss.
    Sngan,
}

impl ModelKind {
    /// Every family, in the order of the command line's help.
    pub const ALL: [ModelKind; 7] = [
        ModelKind::Vanilla,
        ModelKind::Dcgan,
        ModelKind::Cgan,
        ModelKind::Wgan,
        ModelKind::WganGp,
        ModelKind::Lsgan,
        ModelKind::Sngan,
    ];

    /// The command-line name (`"wgan-gp"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Vanilla => "vanilla",
            ModelKind::Dcgan => "dcgan",
            ModelKind::Cgan => "cgan",
            ModelKind::Wgan => "wgan",
            ModelKind::WganGp => "wgan-gp",
            ModelKind::Lsgan => "lsgan",
            ModelKind::Sngan => "sngan",
        }
    }

    /// True for the families trained with binary cross-entropy on logits (`vanilla`, `dcgan`,
    /// `cgan`), whose discriminator outputs are reported as probabilities.
    pub fn uses_bce(self) -> bool {
        matches!(
            self,
            ModelKind::Vanilla | ModelKind::Dcgan | ModelKind::Cgan
        )
    }

    /// True for the families whose D is a Wasserstein critic (`wgan`, `wgan-gp`).
    pub fn is_wasserstein(self) -> bool {
        matches!(self, ModelKind::Wgan | ModelKind::WganGp)
    }

    /// True for the families whose loss has regression targets that one-sided label
    /// smoothing can soften (the BCE families and `lsgan`).
    pub fn supports_label_smoothing(self) -> bool {
        self.uses_bce() || self == ModelKind::Lsgan
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Hyper-parameters of a GAN. [`GanConfig::defaults_for`] gives each family's published
/// settings; every field can be overridden.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GanConfig {
    /// The family.
    pub model: ModelKind,
    /// Condition G and D on class labels (always on for `cgan`; `--conditional` adds it to the
    /// other families). Needs labelled data.
    pub conditional: bool,
    /// Size of the noise vector `z ~ N(0, I)`.
    pub latent_dim: usize,
    /// Width of the convolutional generator (`ngf` of the PyTorch DCGAN example).
    pub ngf: usize,
    /// Width of the convolutional discriminator (`ndf`).
    pub ndf: usize,
    /// Width of the MLP models (`vanilla` on images, every family on 2-D points).
    pub hidden: usize,
    /// Generator learning rate.
    pub lr_g: f32,
    /// Discriminator learning rate (a different value from `lr_g` is TTUR, Heusel et al. 2017).
    pub lr_d: f32,
    /// Adam's `beta1` (unused by `wgan`, which uses RMSprop).
    pub beta1: f32,
    /// Adam's `beta2` (unused by `wgan`).
    pub beta2: f32,
    /// Discriminator updates per generator update (>= 1).
    pub n_critic: usize,
    /// Weight `lambda` of the gradient penalty (`wgan-gp` only).
    pub gp_weight: f32,
    /// Weight clipping bound `c` (`wgan` only): every critic parameter is clamped to `[-c, c]`
    /// after each critic update.
    pub clip_value: f32,
    /// One-sided label smoothing (Salimans et al. 2016): the real target is
    /// `1 - label_smoothing` in D's loss (BCE families and `lsgan`; must be 0 for the others).
    pub label_smoothing: f32,
    /// Exponential moving average of G's weights (Yazici et al. 2019): 0 is off; otherwise
    /// after each G update `G_ema = ema_decay * G_ema + (1 - ema_decay) * G`, and samples can
    /// be drawn from `G_ema`.
    pub ema_decay: f32,
    /// Weight `gamma` of the R1 penalty (Mescheder et al. 2018, eq. 9): `gamma / 2 *
    /// mean_i ||d D(x_i) / d x_i||^2` over the real batch, added to D's loss; 0 is off. Not
    /// for `wgan` / `wgan-gp` (their critics have weight clipping and their own penalty).
    #[serde(default)]
    pub r1_gamma: f32,
    /// Apply R1 on every `r1_every`-th D step only, weighted by `r1_every` (the lazy
    /// regularisation of StyleGAN2, Karras et al. 2020, which uses 16); 1 is every step.
    #[serde(default = "every_step")]
    pub r1_every: usize,
}

/// Serde's default for [`GanConfig::r1_every`] (configs written before R1 existed).
fn every_step() -> usize {
    1
}

impl GanConfig {
    /// The published defaults of each family (widths: `latent_dim` 100, `ngf` = `ndf` = 64,
    /// `hidden` 256, as in the PyTorch DCGAN example and PyTorch-GAN's `gan.py`; no label
    /// smoothing, no EMA; conditional only for `cgan`):
    ///
    /// | model | optimizer | lr (G, D) | betas | n_critic | other | source |
    /// |---|---|---|---|---|---|---|
    /// | `vanilla` | Adam | 2e-4 | (0.5, 0.999) | 1 | | PyTorch-GAN `gan.py` (Goodfellow et al. 2014 used SGD + momentum) |
    /// | `dcgan` | Adam | 2e-4 | (0.5, 0.999) | 1 | | Radford et al. 2015, §4 |
    /// | `cgan` | Adam | 2e-4 | (0.5, 0.999) | 1 | | as DCGAN (Mirza & Osindero 2014 used SGD) |
    /// | `wgan` | RMSprop | 5e-5 | — | 5 | clip 0.01 | Arjovsky et al. 2017, Algorithm 1 |
    /// | `wgan-gp` | Adam | 1e-4 | (0.0, 0.9) | 5 | gp weight 10 | Gulrajani et al. 2017, Algorithm 1 |
    /// | `lsgan` | Adam | 2e-4 | (0.5, 0.999) | 1 | | Mao et al. 2017 use DCGAN's settings |
    /// | `sngan` | Adam | 2e-4 | (0.0, 0.9) | 5 | hinge loss | Miyato & Koyama 2018 / Miyato et al. 2018 (hinge, CIFAR-10) |
    pub fn defaults_for(model: ModelKind) -> GanConfig {
        let base = GanConfig {
            model,
            conditional: model == ModelKind::Cgan,
            latent_dim: 100,
            ngf: 64,
            ndf: 64,
            hidden: 256,
            lr_g: 2e-4,
            lr_d: 2e-4,
            beta1: 0.5,
            beta2: 0.999,
            n_critic: 1,
            gp_weight: 10.0,
            clip_value: 0.01,
            label_smoothing: 0.0,
            ema_decay: 0.0,
            r1_gamma: 0.0,
            r1_every: 1,
        };
        match model {
            ModelKind::Vanilla | ModelKind::Dcgan | ModelKind::Cgan | ModelKind::Lsgan => base,
            ModelKind::Wgan => GanConfig {
                lr_g: 5e-5,
                lr_d: 5e-5,
                n_critic: 5,
                ..base
            },
            ModelKind::WganGp => GanConfig {
                lr_g: 1e-4,
                lr_d: 1e-4,
                beta1: 0.0,
                beta2: 0.9,
                n_critic: 5,
                ..base
            },
            ModelKind::Sngan => GanConfig {
                beta1: 0.0,
                beta2: 0.9,
                n_critic: 5,
                ..base
            },
        }
    }

    /// [`GanConfig::defaults_for`] adjusted to the data: on 2-D points the models are small
    /// MLPs, so `latent_dim` becomes 8 and `hidden` 128 (the sizes of the mode-collapse
    /// experiments of Metz et al. 2017). Images keep the defaults.
    pub fn defaults_for_data(model: ModelKind, shape: &DataShape) -> GanConfig {
        let cfg = GanConfig::defaults_for(model);
        if shape.points_2d {
            GanConfig {
                latent_dim: 8,
                hidden: 128,
                ..cfg
            }
        } else {
            cfg
        }
    }

    /// True when G and D take class labels (`cgan`, or `conditional` set).
    pub fn is_conditional(&self) -> bool {
        self.conditional || self.model == ModelKind::Cgan
    }
}

/// The shape of one training example, which fixes the models' input and output sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataShape {
    /// Image channels (1 grey, 3 RGB; ignored for points).
    pub channels: usize,
    /// Image height in pixels (ignored for points).
    pub height: usize,
    /// Image width in pixels (ignored for points).
    pub width: usize,
    /// Number of classes of the labels; 0 when the data has no labels.
    pub num_classes: usize,
    /// Toy 2-D points (`ring8`, `grid25`): every family uses MLPs on `[N, 2]` tensors.
    pub points_2d: bool,
}

impl DataShape {
    /// Images of `channels x height x width` with `num_classes` classes (0: unlabelled).
    pub fn image(channels: usize, height: usize, width: usize, num_classes: usize) -> DataShape {
        DataShape {
            channels,
            height,
            width,
            num_classes,
            points_2d: false,
        }
    }

    /// 2-D points with `num_classes` classes (0: unlabelled).
    pub fn points(num_classes: usize) -> DataShape {
        DataShape {
            channels: 1,
            height: 1,
            width: 2,
            num_classes,
            points_2d: true,
        }
    }

    /// The dims of one example: `[C, H, W]`, or `[2]` for points.
    pub fn sample_dims(&self) -> Vec<usize> {
        if self.points_2d {
            vec![2]
        } else {
            vec![self.channels, self.height, self.width]
        }
    }

    /// Values per example (`C * H * W`, or 2).
    pub fn sample_len(&self) -> usize {
        self.sample_dims().iter().product()
    }
}

impl fmt::Display for DataShape {
    /// `1x28x28 images, 10 classes` / `2-D points, unlabelled`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.points_2d {
            write!(f, "2-D points")?;
        } else {
            write!(f, "{}x{}x{} images", self.channels, self.height, self.width)?;
        }
        match self.num_classes {
            0 => write!(f, ", unlabelled"),
            1 => write!(f, ", 1 class"),
            n => write!(f, ", {n} classes"),
        }
    }
}
