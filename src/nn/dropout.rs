//! `Dropout`: inverted dropout (PyTorch's `nn.Dropout`). Training: each element is zeroed
//! with probability `p` and the survivors scaled by `1 / (1 - p)`, so `E[y] = x`; eval: the
//! identity.

use super::Module;
use crate::error::{Error, Result};
use crate::tensor::{Rng, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Dropout with its own random stream (reproducible for a given seed).
pub struct Dropout {
    /// Probability of zeroing an element, in `[0, 1)`.
    pub p: f32,
    rng: Mutex<Rng>,
    training: AtomicBool,
}

impl Dropout {
    /// Dropout with probability `p` (in `[0, 1)`); its mask stream is forked from `rng`.
    /// Starts in training mode.
    pub fn new(p: f32, rng: &mut Rng) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid(
                "dropout",
                format!("p = {p} must be in [0, 1)"),
            ));
        }
        Ok(Dropout {
            p,
            rng: Mutex::new(rng.fork()),
            training: AtomicBool::new(true),
        })
    }
}

impl Module for Dropout {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let training = self.training.load(Ordering::Relaxed);
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        x.dropout(self.p, training, &mut rng)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
}
