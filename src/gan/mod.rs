//! The GAN family on the engine: vanilla GAN, DCGAN, conditional GAN, WGAN, WGAN-GP, LSGAN and
//! SNGAN-style hinge GAN, as a library that the `ganforge` binary's trainer drives.
//!
//! - [`config`]: [`ModelKind`], the hyper-parameters [`GanConfig`] with each family's
//!   published defaults, and the [`DataShape`] a model is built for;
//! - [`models`]: the [`Generator`] and [`Discriminator`] architectures (MLP, DCGAN at 28, 32
//!   and 64 pixels), with PyTorch parameter names and the equivalent PyTorch modules in the
//!   docs;
//! - [`losses`]: each family's losses and the WGAN-GP gradient penalty;
//! - [`step`]: [`Gan`], which owns G, D, their optimizers and the EMA generator, takes one
//!   training step per call, samples, and saves/restores its complete state.
//!
//! ```
//! use ganforge::gan::{DataShape, Gan, GanConfig, ModelKind};
//! use ganforge::{Device, Rng, Tensor};
//! let shape = DataShape::points(0);
//! let cfg = GanConfig::defaults_for_data(ModelKind::Vanilla, &shape);
//! let mut rng = Rng::new(0);
//! let mut gan = Gan::new(&cfg, &shape, &mut rng, &Device::Cpu).unwrap();
//! let real = Tensor::randn(0.0, 1.0, [16, 2], &mut rng, &Device::Cpu);
//! let losses = gan.train_step(&real, None, &mut rng).unwrap();
//! assert_eq!(losses[0].0, "loss_d");
//! let z = Tensor::randn(0.0, 1.0, [4, gan.latent_dim()], &mut rng, &Device::Cpu);
//! assert_eq!(gan.generate(&z, None, false).unwrap().dims(), &[4, 2]);
//! ```

pub mod config;
pub mod losses;
pub mod models;
pub mod step;
pub mod trainer;

pub use config::{DataShape, GanConfig, ModelKind};
pub use models::{Architecture, DNorm, Discriminator, Generator};
pub use step::Gan;
