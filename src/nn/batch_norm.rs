//! `BatchNorm`: PyTorch's `nn.BatchNorm1d` / `nn.BatchNorm2d` (one type: the input may be
//! `[N, C]`, `[N, C, L]` or `[N, C, H, W]`; statistics are per channel, dim 1).
//!
//! Training: `y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias` with the batch's biased
//! variance, and the buffers are updated in place:
//! `running_mean = (1 - momentum) * running_mean + momentum * E[x]`,
//! `running_var = (1 - momentum) * running_var + momentum * Var_unbiased[x]`,
//! `num_batches_tracked += 1`. Eval: the running statistics replace the batch statistics.
//!
//! [`Module::set_cumulative_stats`] switches to PyTorch's `momentum=None`: the statistics are
//! reset, and the `k`-th training batch after that updates them with momentum `1 / k`, so they
//! are the equal-weight average of the batches seen (the "standing statistics" that
//! [`crate::gan::Generator::standing_stats`] computes for an EMA generator).

use super::{param, Module};
use crate::backend::Device;
use crate::error::{Error, Result};
use crate::ops::norm::{Activation, BatchNormParams, RunningStats};
use crate::tensor::Tensor;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Batch normalisation with learned affine parameters and running statistics.
pub struct BatchNorm {
    /// Per-channel scale `gamma`, `[C]`, initialised to 1.
    pub weight: Tensor,
    /// Per-channel shift `beta`, `[C]`, initialised to 0.
    pub bias: Tensor,
    /// Buffer: running mean, `[C]`, initialised to 0.
    pub running_mean: Tensor,
    /// Buffer: running unbiased variance, `[C]`, initialised to 1.
    pub running_var: Tensor,
    /// Buffer: number of training batches seen, a 0-dim tensor (an f32 holding an integer;
    /// PyTorch stores it as int64).
    pub num_batches_tracked: Tensor,
    /// `eps` and `momentum`.
    pub params: BatchNormParams,
    training: AtomicBool,
    /// Cumulative averaging ([`Module::set_cumulative_stats`]) is on.
    cumulative: AtomicBool,
    /// Training batches averaged since cumulative averaging was switched on.
    cumulative_batches: AtomicU64,
}

impl BatchNorm {
    /// A batch norm over `num_features` channels, in training mode. Errors on a negative
    /// `eps` or a `momentum` outside `[0, 1]`.
    pub fn new(num_features: usize, params: BatchNormParams, device: &Device) -> Result<Self> {
        if params.eps.is_nan() || params.eps < 0.0 || !(0.0..=1.0).contains(&params.momentum) {
            return Err(Error::invalid(
                "batch_norm",
                format!(
                    "eps {} must be >= 0 and momentum {} in [0, 1]",
                    params.eps, params.momentum
                ),
            ));
        }
        Ok(BatchNorm {
            weight: param(Tensor::ones(num_features, device)),
            bias: param(Tensor::zeros(num_features, device)),
            running_mean: Tensor::zeros(num_features, device),
            running_var: Tensor::ones(num_features, device),
            num_batches_tracked: Tensor::zeros((), device),
            params,
            training: AtomicBool::new(true),
            cumulative: AtomicBool::new(false),
            cumulative_batches: AtomicU64::new(0),
        })
    }

    /// True in training mode.
    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }
}

impl BatchNorm {
    /// `activation(batch_norm(x))`, updating the running statistics in training mode.
    fn forward_with(&self, x: &Tensor, activation: Activation) -> Result<Tensor> {
        let training = self.is_training();
        let mut params = self.params;
        if training && self.cumulative.load(Ordering::Relaxed) {
            let k = self.cumulative_batches.fetch_add(1, Ordering::Relaxed) + 1;
            params.momentum = 1.0 / k as f32;
        }
        let y = x.batch_norm_activated(
            Some(RunningStats {
                mean: &self.running_mean,
                var: &self.running_var,
            }),
            Some(&self.weight),
            Some(&self.bias),
            training,
            params,
            activation,
        )?;
        if training {
            self.num_batches_tracked.affine_in_place(1.0, 1.0)?;
        }
        Ok(y)
    }
}

impl Module for BatchNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, Activation::Identity)
    }
    fn forward_activated(&self, x: &Tensor, activation: Activation) -> Option<Result<Tensor>> {
        Some(self.forward_with(x, activation))
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("weight".to_string(), self.weight.clone()),
            ("bias".to_string(), self.bias.clone()),
        ]
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        vec![
            ("running_mean".to_string(), self.running_mean.clone()),
            ("running_var".to_string(), self.running_var.clone()),
            (
                "num_batches_tracked".to_string(),
                self.num_batches_tracked.clone(),
            ),
        ]
    }
    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }
    /// On: `running_mean = 0`, `running_var = 1`, `num_batches_tracked = 0` (PyTorch's
    /// `reset_running_stats`), then every training batch is averaged with equal weight.
    /// Off: back to `momentum`, keeping the statistics.
    fn set_cumulative_stats(&self, on: bool) -> Result<()> {
        if on {
            self.running_mean.fill_in_place(0.0)?;
            self.running_var.fill_in_place(1.0)?;
            self.num_batches_tracked.fill_in_place(0.0)?;
        }
        self.cumulative_batches.store(0, Ordering::Relaxed);
        self.cumulative.store(on, Ordering::Relaxed);
        Ok(())
    }
}
