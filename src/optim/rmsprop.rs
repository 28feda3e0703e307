//! RMSprop exactly as `torch/optim/rmsprop.py` (`_single_tensor_rmsprop`, without
//! maximize). For each parameter `p` with gradient `g`:
//!
//! ```text
//! g   = g + weight_decay * p                          (when weight_decay != 0)
//! sq  = alpha * sq + (1 - alpha) * g * g
//! if centered:
//!     ga  = ga + (1 - alpha) * (g - ga)               (lerp: = alpha*ga + (1-alpha)*g)
//!     avg = sqrt(sq - ga * ga) + eps
//! else:
//!     avg = sqrt(sq) + eps
//! if momentum > 0:
//!     buf = momentum * buf + g / avg
//!     p   = p - lr * buf
//! else:
//!     p   = p - lr * g / avg
//! ```
//!
//! State names: `step` (0-dim), `square_avg`, `momentum_buffer` (momentum > 0), `grad_avg`
//! (centered).

use super::{clear_grads, decimal, fused_update, increment_step, parse_state, state_entries};
use super::{gpu_update, new_step_counter, update_timer, Optimizer, ParamState, RMSPROP};
use crate::backend::gpu::params::RmsPropParams;
use crate::error::Result;
use crate::tensor::Tensor;
use std::collections::HashMap;

/// Hyper-parameters of [`RmsProp`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsPropConfig {
    /// Learning rate.
    pub lr: f32,
    /// Decay rate of the squared-gradient average.
    pub alpha: f32,
    /// Added to the denominator for stability.
    pub eps: f32,
    /// L2 penalty added to the gradient.
    pub weight_decay: f32,
    /// Momentum factor (0 for none).
    pub momentum: f32,
    /// Normalise by the variance estimate `sq - ga^2` instead of the raw second moment.
    pub centered: bool,
}

impl RmsPropConfig {
    /// FLOPs per element of one update (the profiler's count of the formula above): `sq` 4;
    /// `avg` 2 (7 when centered: the lerp of `ga` 3, `sq - ga*ga` 2); the update of `p` 3 (5
    /// with momentum: `buf` 3, `p` 2); 2 more for the L2 term when `weight_decay != 0`.
    pub fn flops_per_element(&self) -> f64 {
        let avg = if self.centered { 7.0 } else { 2.0 };
        let update = if self.momentum > 0.0 { 5.0 } else { 3.0 };
        let wd = if self.weight_decay != 0.0 { 2.0 } else { 0.0 };
        4.0 + avg + update + wd
    }

    /// State buffers per parameter besides the step counter.
    fn buffers(&self) -> usize {
        1 + usize::from(self.centered) + usize::from(self.momentum > 0.0)
    }
}

impl Default for RmsPropConfig {
    /// PyTorch's defaults: lr 1e-2, alpha 0.99, eps 1e-8, no weight decay, no momentum,
    /// not centered.
    fn default() -> Self {
        RmsPropConfig {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
        }
    }
}

/// RMSprop over a fixed list of parameters.
pub struct RmsProp {
    params: Vec<Tensor>,
    /// The hyper-parameters (the learning rate may be changed with `set_lr`).
    pub config: RmsPropConfig,
    state: Vec<ParamState>,
}

impl RmsProp {
    /// RMSprop over `params`.
    pub fn new(params: Vec<Tensor>, config: RmsPropConfig) -> Self {
        let state = vec![None; params.len()];
        RmsProp {
            params,
            config,
            state,
        }
    }

    /// The parameters, in the order their state is numbered.
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    /// The state names this configuration keeps, in PyTorch's order.
    fn names(&self) -> Vec<&'static str> {
        let mut names = vec!["step", "square_avg"];
        if self.config.momentum > 0.0 {
            names.push("momentum_buffer");
        }
        if self.config.centered {
            names.push("grad_avg");
        }
        names
    }
}

impl Optimizer for RmsProp {
    fn step(&mut self) -> Result<()> {
        let RmsPropConfig {
            lr,
            alpha,
            eps,
            weight_decay: wd,
            momentum,
            centered,
        } = self.config;
        let names = self.names();
        for (p, st) in self.params.iter().zip(self.state.iter_mut()) {
            let Some(g) = p.grad() else { continue };
            let _t = update_timer(
                "rmsprop",
                p,
                self.config.buffers(),
                self.config.flops_per_element(),
            );
            let st = st.get_or_insert_with(|| {
                names
                    .iter()
                    .map(|&n| {
                        let t = if n == "step" {
                            new_step_counter()
                        } else {
                            p.zeros_like()
                        };
                        (n, t)
                    })
                    .collect()
            });
            increment_step(&st["step"])?;
            let w = (1.0 - decimal(alpha)) as f32;
            // Buffers in a fixed order: square_avg, then grad_avg / momentum_buffer if kept.
            let mut bufs = vec![&st["square_avg"]];
            if centered {
                bufs.push(&st["grad_avg"]);
            }
            if momentum > 0.0 {
                bufs.push(&st["momentum_buffer"]);
            }
            if p.device().is_gpu() {
                let params = RmsPropParams {
                    n: p.elem_count() as u32,
                    lr,
                    alpha,
                    w,
                    eps,
                    wd,
                    momentum,
                    centered: centered as u32,
                    has_momentum: (momentum > 0.0) as u32,
                    ..Default::default()
                };
                // Binding order: square_avg, grad_avg, momentum_buffer (dummies if not kept).
                let states = [
                    Some(&st["square_avg"]),
                    centered.then(|| &st["grad_avg"]),
                    (momentum > 0.0).then(|| &st["momentum_buffer"]),
                ];
                gpu_update("rmsprop", &RMSPROP, &params, p, &g, &states)?;
                continue;
            }
            fused_update(p, &g, &bufs, |p, g, s| {
                let (sq, rest) = s.split_first_mut().expect("square_avg");
                let (mut ga, rest) = if centered {
                    let (ga, rest) = rest.split_first_mut().expect("grad_avg");
                    (Some(ga), rest)
                } else {
                    (None, rest)
                };
                let mut buf = rest.first_mut();
                for j in 0..p.len() {
                    let gj = if wd != 0.0 { g[j] + wd * p[j] } else { g[j] };
                    sq[j] = sq[j] * alpha + w * gj * gj;
                    let avg = match &mut ga {
                        Some(ga) => {
                            ga[j] = if w < 0.5 {
                                ga[j] + w * (gj - ga[j])
                            } else {
                                gj - (gj - ga[j]) * (1.0 - w)
                            };
                            (sq[j] + -(ga[j] * ga[j])).sqrt() + eps
                        }
                        None => sq[j].sqrt() + eps,
                    };
                    match &mut buf {
                        Some(buf) => {
                            buf[j] = buf[j] * momentum + gj / avg;
                            p[j] += -lr * buf[j];
                        }
                        None => p[j] += -lr * (gj / avg),
                    }
                }
            })?;
        }
        Ok(())
    }

    fn zero_grad(&self) {
        clear_grads(&self.params);
    }

    fn state_dict(&self) -> Vec<(String, Tensor)> {
        state_entries(&self.state, &self.names())
    }

    fn load_state_dict(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.state = parse_state(&self.params, tensors, &self.names())?;
        Ok(())
    }

    fn set_lr(&mut self, lr: f32) {
        self.config.lr = lr;
    }

    fn lr(&self) -> f32 {
        self.config.lr
    }
}
