//! Adam (Kingma & Ba 2014) exactly as `torch/optim/adam.py` (`_single_tensor_adam`, without
//! amsgrad or maximize). For each parameter `p` with gradient `g`, at step `t` (per
//! parameter, counted from 1):
//!
//! ```text
//! g    = g + weight_decay * p                     (L2 penalty, when weight_decay != 0)
//! m    = m + (1 - beta1) * (g - m)                (lerp: = beta1*m + (1-beta1)*g)
//! v    = beta2 * v + (1 - beta2) * g * g
//! bias_correction1 = 1 - beta1^t
//! bias_correction2 = 1 - beta2^t
//! step_size = lr / bias_correction1
//! denom = sqrt(v) / sqrt(bias_correction2) + eps
//! p    = p - step_size * m / denom
//! ```
//!
//! The scalar factors are computed in f64 from the decimal value of each hyper-parameter
//! (PyTorch computes them as Python floats; see `decimal` in `optim/mod.rs`) and rounded to
//! f32 once; the elementwise part is f32, in PyTorch's operation order.
//! State names: `step` (0-dim), `exp_avg` (m), `exp_avg_sq` (v).

use super::{clear_grads, decimal, fused_update, increment_step, parse_state, state_entries};
use super::{gpu_update, new_step_counter, update_timer, Optimizer, ParamState, ADAM};
use crate::backend::gpu::params::AdamParams;
use crate::error::Result;
use crate::tensor::Tensor;
use std::collections::{BTreeMap, HashMap};

/// Hyper-parameters of [`Adam`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f32,
    /// Decay rates `(beta1, beta2)` of the first and second moment averages.
    pub betas: (f32, f32),
    /// Added to the denominator for stability.
    pub eps: f32,
    /// L2 penalty added to the gradient (`g + weight_decay * p`; not AdamW's decoupled decay).
    pub weight_decay: f32,
}

impl Default for AdamConfig {
    /// PyTorch's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, no weight decay.
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

const NAMES: [&str; 3] = ["step", "exp_avg", "exp_avg_sq"];

/// FLOPs per element of one Adam update (the profiler's count of the formula above): the
/// lerp of `m` 3, `v` 4, `denom` 3 (a square root counts as one), the update of `p` 3, and 2
/// for the L2 term when `weight_decay != 0`.
pub fn adam_flops_per_element(weight_decay: f32) -> f64 {
    13.0 + if weight_decay != 0.0 { 2.0 } else { 0.0 }
}

/// The Adam optimizer over a fixed list of parameters.
///
/// ```
/// use ganforge::optim::{Adam, AdamConfig, Optimizer};
/// use ganforge::Tensor;
/// // Minimise (p - 3)^2 from p = 0.
/// let p = Tensor::from_vec(vec![0.0], [1]).unwrap();
/// p.set_requires_grad(true);
/// let mut opt = Adam::new(vec![p.clone()], AdamConfig { lr: 0.1, ..AdamConfig::default() });
/// for _ in 0..200 {
///     opt.zero_grad();
///     let loss = p.add_scalar(-3.0).sqr().unwrap().sum_all().unwrap();
///     loss.backward().unwrap();
///     opt.step().unwrap(); // p is updated in place
/// }
/// assert!((p.to_vec()[0] - 3.0).abs() < 0.05);
/// // The first step moves p by lr exactly (Adam's bias correction makes m / sqrt(v) = 1).
/// let q = Tensor::from_vec(vec![0.0], [1]).unwrap();
/// q.set_requires_grad(true);
/// let mut opt = Adam::new(vec![q.clone()], AdamConfig { lr: 0.1, ..AdamConfig::default() });
/// q.add_scalar(-3.0).sqr().unwrap().sum_all().unwrap().backward().unwrap();
/// opt.step().unwrap();
/// assert!((q.to_vec()[0] - 0.1).abs() < 1e-6);
/// ```
pub struct Adam {
    params: Vec<Tensor>,
    /// The hyper-parameters (the learning rate may be changed with `set_lr`).
    pub config: AdamConfig,
    state: Vec<ParamState>,
}

impl Adam {
    /// Adam over `params` (state is created lazily on each parameter's first step).
    pub fn new(params: Vec<Tensor>, config: AdamConfig) -> Self {
        let state = vec![None; params.len()];
        Adam {
            params,
            config,
            state,
        }
    }

    /// The parameters, in the order their state is numbered.
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }
}

impl Optimizer for Adam {
    fn step(&mut self) -> Result<()> {
        let AdamConfig {
            lr,
            betas: (beta1, beta2),
            eps,
            weight_decay: wd,
        } = self.config;
        for (p, st) in self.params.iter().zip(self.state.iter_mut()) {
            let Some(g) = p.grad() else { continue };
            let _t = update_timer("adam", p, 2, adam_flops_per_element(wd));
            let st = st.get_or_insert_with(|| {
                BTreeMap::from([
                    ("step", new_step_counter()),
                    ("exp_avg", p.zeros_like()),
                    ("exp_avg_sq", p.zeros_like()),
                ])
            });
            let t = increment_step(&st["step"])? as f64;
            let bias_correction1 = 1.0 - decimal(beta1).powf(t);
            let bias_correction2 = 1.0 - decimal(beta2).powf(t);
            let step_size = (decimal(lr) / bias_correction1) as f32;
            let bc2_sqrt = bias_correction2.sqrt() as f32;
            let w1 = (1.0 - decimal(beta1)) as f32; // lerp weight
            let w2 = (1.0 - decimal(beta2)) as f32;
            if p.device().is_gpu() {
                let params = AdamParams {
                    n: p.elem_count() as u32,
                    step_size,
                    bc2_sqrt,
                    w1,
                    w2,
                    beta2,
                    eps,
                    wd,
                };
                let states = [Some(&st["exp_avg"]), Some(&st["exp_avg_sq"])];
                gpu_update("adam", &ADAM, &params, p, &g, &states)?;
                continue;
            }
            fused_update(p, &g, &[&st["exp_avg"], &st["exp_avg_sq"]], |p, g, s| {
                let [m, v] = s else { unreachable!() };
                // One pass over zipped slices (no bounds checks, so it vectorises); the
                // branches are on constants and hoisted out of the loop.
                let lerp_low = w1 < 0.5;
                let items = p
                    .iter_mut()
                    .zip(g.iter())
                    .zip(m.iter_mut())
                    .zip(v.iter_mut());
                for (((pj, &gj), mj), vj) in items {
                    let gj = if wd != 0.0 { gj + wd * *pj } else { gj };
                    // PyTorch's lerp: weight < 0.5 ? a + w (b - a) : b - (b - a)(1 - w).
                    *mj = if lerp_low {
                        *mj + w1 * (gj - *mj)
                    } else {
                        gj - (gj - *mj) * (1.0 - w1)
                    };
                    *vj = *vj * beta2 + w2 * gj * gj;
                    let denom = vj.sqrt() / bc2_sqrt + eps;
                    *pj += -step_size * (*mj / denom);
                }
            })?;
        }
        Ok(())
    }

    fn zero_grad(&self) {
        clear_grads(&self.params);
    }

    fn state_dict(&self) -> Vec<(String, Tensor)> {
        state_entries(&self.state, &NAMES)
    }

    fn load_state_dict(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.state = parse_state(&self.params, tensors, &NAMES)?;
        Ok(())
    }

    fn set_lr(&mut self, lr: f32) {
        self.config.lr = lr;
    }

    fn lr(&self) -> f32 {
        self.config.lr
    }
}
