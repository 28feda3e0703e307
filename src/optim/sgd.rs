//! SGD with momentum, exactly as `torch/optim/sgd.py` (`_single_tensor_sgd`, without
//! maximize). For each parameter `p` with gradient `g`:
//!
//! ```text
//! g = g + weight_decay * p                         (when weight_decay != 0)
//! if momentum != 0:
//!     buf = g                                      (first step: buffer created as a copy)
//!     buf = momentum * buf + (1 - dampening) * g   (later steps)
//!     g = g + momentum * buf   if nesterov   else   g = buf
//! p = p - lr * g
//! ```
//!
//! State name: `momentum_buffer` (only with momentum != 0; PyTorch keeps `None` otherwise).

use super::{clear_grads, decimal, fused_update, parse_state, state_entries};
use super::{gpu_update, update_timer, Optimizer, ParamState, SGD_MOMENTUM, SGD_PLAIN};
use crate::backend::gpu::params::SgdParams;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::{BTreeMap, HashMap};

/// Hyper-parameters of [`Sgd`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f32,
    /// Momentum factor (0 for plain SGD).
    pub momentum: f32,
    /// Dampening of the gradient added to the momentum buffer.
    pub dampening: f32,
    /// Nesterov momentum (needs momentum > 0 and dampening 0, as in PyTorch).
    pub nesterov: bool,
    /// L2 penalty added to the gradient.
    pub weight_decay: f32,
}

impl SgdConfig {
    /// FLOPs per element of one update (the profiler's count of the formula above): `p` 2;
    /// with momentum `buf` 3 (0 on the first step, a copy) and 2 more for nesterov; 2 more for
    /// the L2 term when `weight_decay != 0`.
    pub fn flops_per_element(&self, first_step: bool) -> f64 {
        let wd = if self.weight_decay != 0.0 { 2.0 } else { 0.0 };
        let momentum = if self.momentum != 0.0 && !first_step {
            3.0
        } else {
            0.0
        };
        let nesterov = if self.nesterov { 2.0 } else { 0.0 };
        2.0 + wd + momentum + nesterov
    }
}

impl Default for SgdConfig {
    /// lr 1e-3 (PyTorch's default) and everything else off.
    fn default() -> Self {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

const NAMES: [&str; 1] = ["momentum_buffer"];

/// Stochastic gradient descent over a fixed list of parameters.
pub struct Sgd {
    params: Vec<Tensor>,
    /// The hyper-parameters (the learning rate may be changed with `set_lr`).
    pub config: SgdConfig,
    state: Vec<ParamState>,
}

impl Sgd {
    /// SGD over `params`.
    pub fn new(params: Vec<Tensor>, config: SgdConfig) -> Self {
        let state = vec![None; params.len()];
        Sgd {
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

impl Optimizer for Sgd {
    fn step(&mut self) -> Result<()> {
        let SgdConfig {
            lr,
            momentum,
            dampening,
            nesterov,
            weight_decay: wd,
        } = self.config;
        if nesterov && (momentum <= 0.0 || dampening != 0.0) {
            return Err(Error::invalid(
                "sgd",
                "nesterov momentum requires a momentum and zero dampening",
            ));
        }
        for (p, st) in self.params.iter().zip(self.state.iter_mut()) {
            let Some(g) = p.grad() else { continue };
            let _t = update_timer(
                "sgd",
                p,
                usize::from(momentum != 0.0),
                self.config.flops_per_element(st.is_none()),
            );
            let keep = (1.0 - decimal(dampening)) as f32;
            let gpu_params = |first: bool| SgdParams {
                n: p.elem_count() as u32,
                lr,
                momentum,
                keep,
                wd,
                nesterov: nesterov as u32,
                first: first as u32,
                pad0: 0,
            };
            if momentum == 0.0 {
                if p.device().is_gpu() {
                    gpu_update("sgd", &SGD_PLAIN, &gpu_params(false), p, &g, &[])?;
                    continue;
                }
                fused_update(p, &g, &[], |p, g, _| {
                    for j in 0..p.len() {
                        let gj = if wd != 0.0 { g[j] + wd * p[j] } else { g[j] };
                        p[j] += -lr * gj;
                    }
                })?;
                continue;
            }
            let first = st.is_none();
            let st =
                st.get_or_insert_with(|| BTreeMap::from([("momentum_buffer", p.zeros_like())]));
            if p.device().is_gpu() {
                let states = [Some(&st["momentum_buffer"])];
                gpu_update("sgd", &SGD_MOMENTUM, &gpu_params(first), p, &g, &states)?;
                continue;
            }
            fused_update(p, &g, &[&st["momentum_buffer"]], |p, g, s| {
                let [buf] = s else { unreachable!() };
                for j in 0..p.len() {
                    let gj = if wd != 0.0 { g[j] + wd * p[j] } else { g[j] };
                    buf[j] = if first {
                        gj
                    } else {
                        buf[j] * momentum + keep * gj
                    };
                    let d = if nesterov {
                        gj + momentum * buf[j]
                    } else {
                        buf[j]
                    };
                    p[j] += -lr * d;
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
