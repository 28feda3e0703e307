//! # ganforge
//!
//! A from-scratch autodiff tensor engine with hand-written kernels, and the GAN family trained
//! on top of it. Read it in this order:
//!
//! - [`tensor`]: f32 tensors (shape, storage, creation, the seeded RNG);
//! - [`ops`]: the op table; each op's file holds its parameters, shape rule and CPU kernel;
//! - [`autograd`]: the graph walk (`grad`, `backward`) and the backward rules, which are
//!   themselves differentiable so second-order gradients (WGAN-GP) work;
//! - [`backend`]: devices and storage (CPU kernels with rayon, GPU kernels in WGSL through
//!   wgpu);
//! - [`nn`]: modules with PyTorch-style parameter names; [`optim`]: Adam, SGD, RMSprop;
//! - [`profile`]: one training step timed op by op, with FLOPs and bytes per op;
//! - [`metrics`]: offline GAN metrics (Fréchet distance, KID, precision/recall, SWD) on the
//!   project's own feature networks.
//!
//! For a guided walk through one DCGAN training step, from the command line to the kernels,
//! read `docs/one-dcgan-step.md` in the repository; `examples/` holds short runnable programs
//! (`autodiff`, `ring_gan`, `conv_cpu_vs_gpu`).
//!
//! ```
//! use ganforge::{autograd, Tensor};
//! // d/dx of x^3 at x = 2 is 12, and d2/dx2 is 12 too.
//! let x = Tensor::from_vec(vec![2.0], [1]).unwrap();
//! x.set_requires_grad(true);
//! let y = x.powf(3.0).sum_all().unwrap();
//! let dx = autograd::grad(&[y], None, &[x.clone()], true).unwrap()[0].clone().unwrap();
//! assert_eq!(dx.to_vec(), vec![12.0]);
//! let d2x = autograd::grad(&[dx.sum_all().unwrap()], None, &[x], false).unwrap()[0].clone().unwrap();
//! assert_eq!(d2x.to_vec(), vec![12.0]);
//! ```

#![warn(missing_docs)]

pub mod autograd;
pub mod backend;
pub mod bench;
pub mod data;
pub mod error;
pub mod gan;
pub mod io;
pub mod metrics;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod profile;
pub mod tensor;

pub use backend::Device;
pub use error::{Error, Result};
pub use tensor::{Rng, Shape, Tensor};
