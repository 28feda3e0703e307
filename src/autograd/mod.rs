//! Reverse-mode automatic differentiation over the graph that ops record as they run.
//!
//! Every op result remembers its [`Op`](crate::ops::Op) (which holds its input tensors), so the
//! tensors themselves form the graph: define-by-run, as in PyTorch. [`grad`] walks that graph
//! backwards and applies each op's backward rule (`rules.rs`). The rules are written with the
//! same differentiable tensor ops as the forward pass, so when `create_graph` is on, the
//! gradients are recorded too and can be differentiated again: that is what a WGAN-GP
//! gradient penalty needs.
//!
//! Contract (the trap behind micrograd issue #53): [`Tensor::backward`] *accumulates* into the
//! `.grad()` of each leaf that requires a gradient, exactly like PyTorch. Calling it twice
//! doubles the gradients; zero them (`zero_grad`, or an optimizer's `zero_grad`) between
//! steps. [`grad`] returns gradients and never touches `.grad()`.

mod rules;

use crate::error::{Error, Result};
use crate::profile::Phase;
use crate::tensor::{Tensor, TensorId};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};

/// The profiler's row for the time of a backward pass spent outside ops (graph sort, gradient
/// maps, dropping intermediate gradients).
const PROFILE_LAYER: &str = "autograd";
/// See [`PROFILE_LAYER`].
const PROFILE_WHAT: &str = "graph walk (outside ops)";

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// True unless inside a [`no_grad`] scope.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Restores the previous grad mode when dropped.
pub struct GradModeGuard {
    previous: bool,
}

impl Drop for GradModeGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Sets grad mode for the current thread until the guard is dropped.
pub fn set_grad_enabled(on: bool) -> GradModeGuard {
    let previous = GRAD_ENABLED.with(|g| g.replace(on));
    GradModeGuard { previous }
}

/// No graph is recorded while the guard lives (like `torch.no_grad()`):
/// `let _guard = no_grad();`
pub fn no_grad() -> GradModeGuard {
    set_grad_enabled(false)
}

/// Gradients of the sum of `outputs` (each weighted by the matching `grad_outputs` entry, or
/// by ones) with respect to `inputs`, like `torch.autograd.grad`.
///
/// With `create_graph`, the returned gradients are themselves recorded in the graph and can be
/// differentiated again (second-order). An input that the outputs do not depend on gets `None`.
///
/// ```
/// use ganforge::{autograd, Tensor};
/// // y = sum(x^2 * w): dy/dx = 2 x w, and d/dw of sum(dy/dx) = sum over 2 x.
/// let x = Tensor::from_vec(vec![1.0, -2.0, 3.0], [3]).unwrap();
/// let w = Tensor::from_vec(vec![0.5, 0.5, 0.5], [3]).unwrap();
/// x.set_requires_grad(true);
/// w.set_requires_grad(true);
/// let y = x.sqr().unwrap().mul(&w).unwrap().sum_all().unwrap();
/// let grads = autograd::grad(&[y], None, &[x.clone(), w.clone()], true).unwrap();
/// let dx = grads[0].clone().unwrap();
/// assert_eq!(dx.to_vec(), vec![1.0, -2.0, 3.0]); // 2 * x * 0.5
/// // dx is on the tape (create_graph = true): differentiate it again, with respect to w.
/// let dw = autograd::grad(&[dx.sum_all().unwrap()], None, &[w], false).unwrap()[0]
///     .clone()
///     .unwrap();
/// assert_eq!(dw.to_vec(), vec![2.0, -4.0, 6.0]); // d(2 x w)/dw = 2 x
/// // `grad` leaves `.grad()` alone; an input the output does not use gets None.
/// assert!(x.grad().is_none());
/// let unused = Tensor::scalar(1.0);
/// unused.set_requires_grad(true);
/// let z = x.sum_all().unwrap();
/// assert!(autograd::grad(&[z], None, &[unused], false).unwrap()[0].is_none());
/// ```
pub fn grad(
    outputs: &[Tensor],
    grad_outputs: Option<&[Tensor]>,
    inputs: &[Tensor],
    create_graph: bool,
) -> Result<Vec<Option<Tensor>>> {
    let _r = crate::profile::region(PROFILE_LAYER, PROFILE_WHAT, Phase::Backward);
    let wanted: HashSet<TensorId> = inputs.iter().map(|t| t.id()).collect();
    let grads = run_backward(outputs, grad_outputs, &wanted, create_graph)?;
    Ok(inputs.iter().map(|t| grads.get(&t.id()).cloned()).collect())
}

impl Tensor {
    /// Backpropagates from this scalar and *accumulates* the gradient into `.grad()` of every
    /// leaf that requires a gradient.
    ///
    /// ```
    /// use ganforge::Tensor;
    /// // f(a, b) = a * b + b: df/da = b = 3, df/db = a + 1 = 3.
    /// let a = Tensor::scalar(2.0);
    /// let b = Tensor::scalar(3.0);
    /// a.set_requires_grad(true);
    /// b.set_requires_grad(true);
    /// let f = a.mul(&b).unwrap().add(&b).unwrap();
    /// f.backward().unwrap();
    /// assert_eq!(a.grad().unwrap().to_vec(), vec![3.0]);
    /// assert_eq!(b.grad().unwrap().to_vec(), vec![3.0]);
    /// // A second backward adds to what is there, as in PyTorch; zero_grad clears it.
    /// f.backward().unwrap();
    /// assert_eq!(a.grad().unwrap().to_vec(), vec![6.0]);
    /// a.zero_grad();
    /// assert!(a.grad().is_none());
    /// // Only a one-element tensor can start a backward pass.
    /// assert!(Tensor::from_vec(vec![1.0, 2.0], [2]).unwrap().backward().is_err());
    /// ```
    pub fn backward(&self) -> Result<()> {
        if self.elem_count() != 1 {
            return Err(Error::Autograd(format!(
                "backward() needs a scalar (one element), got shape {:?}; reduce it first (sum or mean)",
                self.shape()
            )));
        }
        let _r = crate::profile::region(PROFILE_LAYER, PROFILE_WHAT, Phase::Backward);
        let order = topo_order(std::slice::from_ref(self));
        let leaves: Vec<Tensor> = order
            .iter()
            .filter(|t| t.requires_grad())
            .cloned()
            .collect();
        let wanted = leaves.iter().map(|t| t.id()).collect();
        let grads = run_backward(std::slice::from_ref(self), None, &wanted, false)?;
        let _guard = no_grad();
        for leaf in leaves {
            if let Some(g) = grads.get(&leaf.id()) {
                let total = match leaf.grad() {
                    Some(old) => old.add(g)?,
                    None => g.clone(),
                };
                leaf.set_grad(Some(total));
            }
        }
        Ok(())
    }
}

/// All tracked nodes reachable from `roots`, each after every node it depends on
/// (a depth-first post-order, iterative so deep graphs cannot overflow the stack).
fn topo_order(roots: &[Tensor]) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut visited = HashSet::new();
    // (node, children already pushed?)
    let mut stack: Vec<(Tensor, bool)> = roots.iter().map(|t| (t.clone(), false)).collect();
    while let Some((node, expanded)) = stack.pop() {
        if expanded {
            order.push(node);
            continue;
        }
        if !node.is_tracked() || !visited.insert(node.id()) {
            continue;
        }
        stack.push((node.clone(), true));
        if let Some(op) = node.op() {
            for input in op.inputs() {
                if input.is_tracked() && !visited.contains(&input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order
}

/// The chain rule over the whole graph. Returns the gradient of every node in `wanted`.
fn run_backward(
    outputs: &[Tensor],
    grad_outputs: Option<&[Tensor]>,
    wanted: &HashSet<TensorId>,
    create_graph: bool,
) -> Result<HashMap<TensorId, Tensor>> {
    // Without create_graph the gradient computations are not recorded: plain numbers.
    let _mode = set_grad_enabled(create_graph);

    // 1. The seed: d(output)/d(output) = 1 (or the caller's weights).
    let mut grads: HashMap<TensorId, Tensor> = HashMap::new();
    for (i, out) in outputs.iter().enumerate() {
        if !out.is_tracked() {
            return Err(Error::Autograd(format!(
                "output {i} (shape {:?}) does not depend on any tensor that requires a gradient",
                out.shape()
            )));
        }
        let seed = match grad_outputs {
            Some(g) => g
                .get(i)
                .ok_or_else(|| Error::Autograd("fewer grad_outputs than outputs".into()))?
                .clone(),
            None => out.ones_like(),
        };
        accumulate(&mut grads, out, seed)?;
    }

    // 2. Visit nodes from the outputs back towards the leaves, so a node's gradient is
    //    complete (all its consumers have contributed) before it is passed to its inputs.
    let order = topo_order(outputs);
    let mut result = HashMap::new();
    for node in order.iter().rev() {
        let Some(g) = grads.remove(&node.id()) else {
            continue; // nothing flowed here
        };
        if wanted.contains(&node.id()) {
            result.insert(node.id(), g.clone());
        }
        let Some(op) = node.op() else {
            continue; // a leaf: nothing further back
        };
        // 3. The local rule: gradient w.r.t. each input, given the output's gradient (profiled
        //    as the backward of the layer that made the node).
        let _p = crate::profile::backward_node(node.id());
        let input_grads = rules::backward(op, node, &g)?;
        for (input, input_grad) in op.inputs().iter().zip(input_grads) {
            if let Some(ig) = input_grad {
                if input.is_tracked() {
                    accumulate(&mut grads, input, ig)?;
                }
            }
        }
    }
    Ok(result)
}

/// Adds `g` to the pending gradient of `node` (a node used twice receives two contributions).
fn accumulate(grads: &mut HashMap<TensorId, Tensor>, node: &Tensor, g: Tensor) -> Result<()> {
    if g.shape() != node.shape() {
        return Err(Error::Autograd(format!(
            "gradient of shape {:?} for a tensor of shape {:?} (op {})",
            g.shape(),
            node.shape(),
            node.op().map(|o| o.name()).unwrap_or("leaf")
        )));
    }
    let total = match grads.remove(&node.id()) {
        Some(prev) => prev.add(&g)?,
        None => g,
    };
    grads.insert(node.id(), total);
    Ok(())
}
