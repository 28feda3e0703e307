//! Optimizers with PyTorch's update rules, applied in place to the parameters' data.
//!
//! Each optimizer follows the single-tensor (`foreach=False`) path of `torch/optim/*.py`
//! formula for formula, so a run here and the same run in PyTorch agree to f32 rounding.
//! Parameters whose `.grad()` is `None` are skipped (no state is created, no step counted),
//! as in PyTorch. Per-parameter state is created on the first step that parameter has a
//! gradient, and is saved under PyTorch's `state_dict()` names: `"state.{i}.exp_avg"`,
//! `"state.{i}.step"` (0-dim), `"state.{i}.momentum_buffer"`, ... where `i` is the index of
//! the parameter in the list the optimizer was built with.
//!
//! An update is one pass over the parameter's data (parallel in chunks for large tensors),
//! reading the gradient and updating the state buffers in the same loop. On a GPU it is one
//! kernel of `shaders/optim.wgsl` per parameter (`gpu_update`), with the same formulas, so a
//! training step never copies parameters to the host. The `step` counters stay on the host
//! (as PyTorch keeps them on the CPU): the bias corrections are computed from them there.

mod adam;
mod rmsprop;
mod sgd;

pub use adam::{Adam, AdamConfig};
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use sgd::{Sgd, SgdConfig};

use crate::backend::gpu::{groups_for, Access, KernelSpec, Shader, WORKGROUP};
use crate::backend::Storage;
use crate::error::{Error, Result};
use crate::profile::{self, OpCost, OpInfo};
use crate::tensor::Tensor;
use crate::Device;
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};

static OPTIM_WGSL: Shader = Shader {
    name: "optim",
    source: include_str!("../../shaders/optim.wgsl"),
};
/// Adam: param, grad, exp_avg, exp_avg_sq.
pub(crate) const ADAM: KernelSpec = KernelSpec {
    shader: &OPTIM_WGSL,
    entry: "adam",
    storage: &[
        (0, Access::ReadWrite),
        (1, Access::Read),
        (2, Access::ReadWrite),
        (3, Access::ReadWrite),
    ],
    uniform: 5,
};
/// SGD without momentum: param, grad.
pub(crate) const SGD_PLAIN: KernelSpec = KernelSpec {
    shader: &OPTIM_WGSL,
    entry: "sgd_plain",
    storage: &[(0, Access::ReadWrite), (1, Access::Read)],
    uniform: 6,
};
/// SGD with momentum: param, grad, momentum_buffer.
pub(crate) const SGD_MOMENTUM: KernelSpec = KernelSpec {
    shader: &OPTIM_WGSL,
    entry: "sgd_momentum",
    storage: &[
        (0, Access::ReadWrite),
        (1, Access::Read),
        (2, Access::ReadWrite),
    ],
    uniform: 6,
};
/// RMSprop: param, grad, square_avg, grad_avg, momentum_buffer (dummies when unused).
pub(crate) const RMSPROP: KernelSpec = KernelSpec {
    shader: &OPTIM_WGSL,
    entry: "rmsprop",
    storage: &[
        (0, Access::ReadWrite),
        (1, Access::Read),
        (2, Access::ReadWrite),
        (3, Access::ReadWrite),
        (4, Access::ReadWrite),
    ],
    uniform: 7,
};

/// A new 0-dim step counter. It lives on the host whatever the parameter's device.
pub(crate) fn new_step_counter() -> Tensor {
    Tensor::zeros((), &Device::Cpu)
}

/// Updates parameters from their gradients.
pub trait Optimizer {
    /// One update of every parameter that has a gradient.
    fn step(&mut self) -> Result<()>;
    /// Clears the gradient of every parameter (to `None`, like `set_to_none=True`).
    fn zero_grad(&self);
    /// The per-parameter state under PyTorch's names (`"state.{i}.{name}"`). The tensors are
    /// the optimizer's own handles (shared data), not copies.
    fn state_dict(&self) -> Vec<(String, Tensor)>;
    /// Replaces the whole state with `tensors` (copied). Parameters with no entry get no
    /// state, as after construction. Errors ([`Error::StateDict`]) name unknown keys, an
    /// incomplete set of entries for a parameter, and shape mismatches.
    fn load_state_dict(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()>;
    /// Sets the learning rate (for schedules).
    fn set_lr(&mut self, lr: f32);
    /// The current learning rate.
    fn lr(&self) -> f32;
}

/// Per-parameter state: named tensors, `None` until the parameter's first step.
pub(crate) type ParamState = Option<BTreeMap<&'static str, Tensor>>;

/// Clears every gradient.
pub(crate) fn clear_grads(params: &[Tensor]) {
    for p in params {
        p.zero_grad();
    }
}

/// `"state.{i}.{name}"` for every existing state entry, in parameter order and then in the
/// order of `names`.
pub(crate) fn state_entries(
    states: &[ParamState],
    names: &[&'static str],
) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    for (i, st) in states.iter().enumerate() {
        if let Some(st) = st {
            for name in names {
                if let Some(t) = st.get(name) {
                    out.push((format!("state.{i}.{name}"), t.clone()));
                }
            }
        }
    }
    out
}

/// Parses a state dict into per-parameter states. `required` are the names every parameter
/// with state must have (given its optimizer config); `step` must hold one element, every
/// other entry must match its parameter's shape. All tensors are copied to fresh storage on
/// the parameter's device.
pub(crate) fn parse_state(
    params: &[Tensor],
    tensors: &HashMap<String, Tensor>,
    required: &[&'static str],
) -> Result<Vec<ParamState>> {
    let mut states: Vec<ParamState> = vec![None; params.len()];
    let mut problems = Vec::new();
    let mut keys: Vec<&String> = tensors.keys().collect();
    keys.sort();
    for key in keys {
        let t = &tensors[key];
        let parsed = key
            .strip_prefix("state.")
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(i, name)| Some((i.parse::<usize>().ok()?, name)));
        let Some((i, name)) = parsed else {
            problems.push(format!("unexpected key {key}"));
            continue;
        };
        let Some(&name) = required.iter().find(|&&n| n == name) else {
            problems.push(format!(
                "unexpected key {key} (this optimizer keeps {required:?})"
            ));
            continue;
        };
        let Some(p) = params.get(i) else {
            problems.push(format!(
                "unexpected key {key}: the optimizer has {} parameters",
                params.len()
            ));
            continue;
        };
        let ok = if name == "step" {
            t.elem_count() == 1
        } else {
            t.shape() == p.shape()
        };
        if !ok {
            let want = if name == "step" {
                "[] (one element)".to_string()
            } else {
                format!("{:?}", p.shape())
            };
            problems.push(format!(
                "size mismatch for {key}: the state dict has shape {:?}, the parameter needs {want}",
                t.shape()
            ));
            continue;
        }
        let (shape, device) = if name == "step" {
            (crate::tensor::Shape::from(()), Device::Cpu)
        } else {
            (p.shape().clone(), p.device())
        };
        let copy = Tensor::from_vec_on(t.try_to_vec()?, shape, &device)?;
        states[i]
            .get_or_insert_with(BTreeMap::new)
            .insert(name, copy);
    }
    for (i, st) in states.iter().enumerate() {
        if let Some(st) = st {
            let missing: Vec<String> = required
                .iter()
                .filter(|n| !st.contains_key(*n))
                .map(|n| format!("state.{i}.{n}"))
                .collect();
            if !missing.is_empty() {
                problems.push(format!("missing keys: {}", missing.join(", ")));
            }
        }
    }
    if problems.is_empty() {
        Ok(states)
    } else {
        Err(Error::StateDict(problems.join("; ")))
    }
}

/// The f64 a user meant by an f32 hyper-parameter: its shortest decimal form read as f64
/// (`0.999f32` gives `0.999`, not `0.99900001287`). PyTorch computes scalar factors such as
/// `1 - beta2` and `lr / (1 - beta1^t)` in double from the decimal the user wrote; doing the
/// same keeps `1 - beta2` exact to f32 rounding instead of off by 1e-5 relative.
pub(crate) fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

/// Adds one to a 0-dim step counter in place and returns the new count.
pub(crate) fn increment_step(step: &Tensor) -> Result<f32> {
    let count = step.to_scalar()? + 1.0;
    step.write_from_slice(&[count])?;
    Ok(count)
}

/// Opens the profiler's timer of one parameter's update by optimizer `name` (a no-op unless
/// profiling), described with its cost: `flops_per_element` (from the optimizer's own file)
/// per element; the parameter, its gradient and `states` state buffers read, the parameter
/// and the state buffers written. The row is attributed to the layer that owns `param`.
pub(crate) fn update_timer(
    name: &'static str,
    param: &Tensor,
    states: usize,
    flops_per_element: f64,
) -> profile::OpTimer {
    let timer = profile::op(name);
    profile::describe(|| {
        let n = param.elem_count();
        let read = vec![n; 2 + states];
        let cost = OpCost {
            bytes: OpCost::new(0.0, &read, n).bytes
                + (states * n) as f64 * profile::BYTES_PER_ELEMENT,
            flops: flops_per_element * n as f64,
        };
        let shapes = vec![param.shape(); 2 + states];
        let mut info = OpInfo::new(name, &shapes, param.shape(), cost);
        info.param = Some(param.id());
        info
    });
    timer
}

/// Elements per parallel task of an update.
const CHUNK: usize = 1 << 14;

/// One optimizer kernel on the GPU: `spec` over `param` (written), `grad` and the state
/// buffers (written), each of the parameter's length, with the parameter block `params`. A
/// `None` state (one the configuration does not keep) is bound to a one-element dummy.
pub(crate) fn gpu_update<P: bytemuck::Pod>(
    op: &'static str,
    spec: &KernelSpec,
    params: &P,
    param: &Tensor,
    grad: &Tensor,
    states: &[Option<&Tensor>],
) -> Result<()> {
    let kept: Vec<&Tensor> = states.iter().flatten().copied().collect();
    check_update_shapes(param, grad, &kept)?;
    let Device::Gpu(dev) = param.device() else {
        return Err(Error::invalid(op, "gpu_update on a CPU tensor"));
    };
    for t in std::iter::once(grad).chain(kept.iter().copied()) {
        param.check_same_device(op, t)?;
    }
    // The gradient is read while the parameter is written: never the same buffer.
    let grad = if grad.same_storage(param) {
        Tensor::from_vec_on(grad.try_to_vec()?, grad.shape().clone(), &grad.device())?
    } else {
        grad.clone()
    };
    let g_guard = grad.storage();
    let state_guards: Vec<_> = states.iter().map(|t| t.map(|t| t.storage())).collect();
    let dummies: Vec<_> = states
        .iter()
        .map(|t| t.is_none().then(|| dev.alloc(op, 1)))
        .collect();
    // The parameter is written in place through write_storage, which refuses a tensor that a
    // recorded graph still needs. (The states are the optimizer's own leaves.)
    param.write_storage(|p| {
        let Storage::Gpu(p) = p else {
            unreachable!("device checked above")
        };
        let mut bufs = vec![&*p, g_guard.as_gpu().expect("same device")];
        for (s, d) in state_guards.iter().zip(&dummies) {
            match (s, d) {
                (Some(s), _) => bufs.push(s.as_gpu().expect("same device")),
                (None, Some(d)) => bufs.push(d),
                (None, None) => unreachable!("a dummy per missing state"),
            }
        }
        dev.dispatch(op, spec, &[], params, &bufs, groups_for(p.len(), WORKGROUP));
        dev.check(op)
    })?
}

fn check_update_shapes(param: &Tensor, grad: &Tensor, states: &[&Tensor]) -> Result<()> {
    if grad.shape() != param.shape() {
        return Err(Error::shape_mismatch(
            "optimizer step",
            param.shape(),
            grad.shape(),
        ));
    }
    if let Some(bad) = states.iter().find(|t| t.elem_count() != param.elem_count()) {
        return Err(Error::shape_mismatch(
            "optimizer step",
            param.shape(),
            bad.shape(),
        ));
    }
    Ok(())
}

/// The fused update loop: calls `f(p, g, states)` over aligned chunks of the parameter data,
/// its gradient and each state buffer (all of the parameter's length), in parallel for large
/// tensors. `f` sees plain slices and updates `p` and `states` in place.
pub(crate) fn fused_update(
    param: &Tensor,
    grad: &Tensor,
    states: &[&Tensor],
    f: impl Fn(&mut [f32], &[f32], &mut [&mut [f32]]) + Sync,
) -> Result<()> {
    check_update_shapes(param, grad, states)?;
    // The gradient is read while the parameter is written: never the same buffer.
    let grad = if grad.same_storage(param) {
        Tensor::from_vec_on(grad.to_vec(), grad.shape().clone(), &grad.device())?
    } else {
        grad.clone()
    };
    let g_guard = grad.storage();
    let g = g_guard.as_cpu();
    let run = |p: &mut [f32], st: Vec<&mut [f32]>| chunked(p, g, st, &f);
    // Write access to each state buffer (all distinct buffers owned by the optimizer), then
    // to the parameter, nested so every lock is released in reverse order.
    match states {
        [] => param.write_storage(|p| run(p.as_cpu_mut(), vec![])),
        [a] => {
            a.write_storage(|a| param.write_storage(|p| run(p.as_cpu_mut(), vec![a.as_cpu_mut()])))?
        }
        [a, b] => a.write_storage(|a| {
            b.write_storage(|b| {
                param.write_storage(|p| run(p.as_cpu_mut(), vec![a.as_cpu_mut(), b.as_cpu_mut()]))
            })
        })??,
        [a, b, c] => a.write_storage(|a| {
            b.write_storage(|b| {
                c.write_storage(|c| {
                    param.write_storage(|p| {
                        run(
                            p.as_cpu_mut(),
                            vec![a.as_cpu_mut(), b.as_cpu_mut(), c.as_cpu_mut()],
                        )
                    })
                })
            })
        })???,
        _ => Err(Error::invalid(
            "optimizer step",
            "at most three state buffers per parameter",
        )),
    }
}

/// Splits `p`, `g` and every state slice into aligned chunks and runs `f` on each, in
/// parallel when the tensor is large.
fn chunked(
    p: &mut [f32],
    g: &[f32],
    st: Vec<&mut [f32]>,
    f: &(impl Fn(&mut [f32], &[f32], &mut [&mut [f32]]) + Sync),
) {
    if p.len() <= CHUNK {
        let mut st = st;
        f(p, g, &mut st);
        return;
    }
    let (mut p, mut g, mut st) = (p, g, st);
    let mut jobs = Vec::with_capacity(p.len().div_ceil(CHUNK));
    while !p.is_empty() {
        let n = CHUNK.min(p.len());
        let (ph, pt) = std::mem::take(&mut p).split_at_mut(n);
        let (gh, gt) = g.split_at(n);
        let mut heads = Vec::with_capacity(st.len());
        let mut tails = Vec::with_capacity(st.len());
        for s in st {
            let (h, t) = s.split_at_mut(n);
            heads.push(h);
            tails.push(t);
        }
        jobs.push((ph, gh, heads));
        p = pt;
        g = gt;
        st = tails;
    }
    jobs.into_par_iter()
        .for_each(|(p, g, mut s)| f(p, g, &mut s));
}
