//! The profiler behind `ganforge profile`: one training step, op by op.
//!
//! **How ops are hooked.** A thread-local recorder is off by default; every hook first reads
//! one thread-local `Cell<bool>` and returns when it is off, so an unprofiled step pays one
//! flag test per op. When on ([`Session::start`]):
//!
//! - every primitive op's tensor method opens an [`OpTimer`] (`let _t = profile::op("conv2d");`)
//!   just before its kernel runs; the timer stops when the method returns. Ops called *inside*
//!   another op (a `sum` that ends with a `reshape`, an optimizer update that reads its step
//!   counter) are part of the outer op's time and are not recorded on their own;
//! - [`Tensor::from_op`](crate::Tensor) hands the [`Op`] it records to `describe_op`, which
//!   takes the op's name, input and output shapes and its [`OpCost`] from the formula in the
//!   op's own file (`src/ops/<op>.rs`, next to its shape rule; see [`Op::cost`]). Ops that do
//!   not go through `from_op` (in-place updates, creation, readbacks, the optimizers' updates,
//!   the fused batch-norm backward) describe themselves with [`describe`];
//! - layers are attributed by scopes: `G`/`D` (the models), `main`, and `Sequential` pushes
//!   each child as `<index> <type>`, so ops land on PyTorch-style names such as
//!   `G.main.0 ConvTranspose2d`. Each recorded node remembers the layer and phase that made
//!   it; autograd's traversal ([`backward_node`]) runs each backward rule in the context of
//!   the node it differentiates, so backward ops land on the layer of their forward op, in
//!   phase `bwd` (or `bwd2` when the node was itself made by a backward pass: the
//!   double-backward of the WGAN-GP penalty). An optimizer's update of a parameter lands on
//!   the layer whose forward op first read that parameter (phase `opt`);
//! - work between ops is timed by [`Region`]s (autograd's graph walk and gradient
//!   bookkeeping, an optimizer's host loop, freeing a graph): their *self* time (elapsed
//!   minus the ops recorded inside) becomes a row of its own, so time outside ops is shown,
//!   not hidden. What no row covers is reported as `unattributed` by the report: the step is
//!   timed independently (wall clock around the whole training step) and compared.
//!
//! **GPU timing.** GPU dispatches are only recorded and submitted in batches; when the session
//! profiles a GPU, every op waits for the GPU to be idle before its timer starts and again
//! before it stops ([`GpuDevice::wait_idle`]), so each op's time is the time its kernels ran.
//! This serialisation makes a profiled GPU step slower than an unprofiled one; the driver
//! reports both.
//!
//! **FLOP and byte conventions** (each op's formula is written in its file):
//! - one multiply-add is 2 FLOPs: conv2d forward is `2*N*C_out*H_out*W_out*C_in*KH*KW`,
//!   matmul `2*batch*M*N*K`, whatever the kernel does with padding or zeros;
//! - pointwise ops count the arithmetic operations of their formula per element, a
//!   transcendental function (`exp`, `log`, `tanh`, `sqrt`) counting as one;
//! - bytes moved = every input read once + the output written once, in f32 (4 bytes per
//!   element), as stored (a broadcast operand counts its stored elements); a `reshape`, which
//!   shares its input's buffer, moves nothing; an in-place update reads and writes its
//!   target. Real kernels may move more (re-reads, im2col buffers): the figure is the
//!   compulsory traffic, the usual roofline convention.
//!
//! The driver ([`profile_step`]) builds a [`Gan`](crate::gan::Gan), warms it up, and profiles
//! calls of [`Gan::train_step`](crate::gan::Gan::train_step) that update both D and G;
//! [`report`] turns the result into the table and the JSON file.

mod driver;
pub mod report;

pub use driver::{profile_step, ProfileOptions, Row, StepProfile};

use crate::backend::{Device, GpuDevice};
use crate::ops::Op;
use crate::tensor::{Shape, TensorId};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Bytes per element of every tensor (f32).
pub const BYTES_PER_ELEMENT: f64 = 4.0;

/// Which part of a training step an op belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// A forward pass (`fwd`).
    Forward,
    /// A backward rule, run by autograd (`bwd`).
    Backward,
    /// A backward rule applied to a node a backward pass made (`bwd2`): the second-order
    /// gradient of the WGAN-GP penalty.
    DoubleBackward,
    /// An optimizer update (`opt`).
    Optimizer,
    /// Anything else: freeing a graph (`-`).
    Other,
}

impl Phase {
    /// The short label of the table: `fwd`, `bwd`, `bwd2`, `opt`, `-`.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Forward => "fwd",
            Phase::Backward => "bwd",
            Phase::DoubleBackward => "bwd2",
            Phase::Optimizer => "opt",
            Phase::Other => "-",
        }
    }

    /// The phase of a backward rule applied to a node made in this phase.
    fn backward_of(self) -> Phase {
        match self {
            Phase::Backward | Phase::DoubleBackward => Phase::DoubleBackward,
            _ => Phase::Backward,
        }
    }
}

/// The work of one op call, computed from its shapes (see the module docs for the
/// conventions).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OpCost {
    /// Floating-point operations (a multiply-add is 2).
    pub flops: f64,
    /// Bytes read and written: every input once, the output once (f32).
    pub bytes: f64,
}

impl OpCost {
    /// `flops` FLOPs reading tensors of `inputs` elements and writing `output` elements.
    pub fn new(flops: f64, inputs: &[usize], output: usize) -> OpCost {
        let elems: usize = inputs.iter().sum::<usize>() + output;
        OpCost {
            flops,
            bytes: elems as f64 * BYTES_PER_ELEMENT,
        }
    }

    /// A pointwise op: `flops_per_element` per output element, reading `inputs` (stored
    /// sizes) and writing `output`.
    pub fn pointwise(flops_per_element: f64, inputs: &[&Shape], output: &Shape) -> OpCost {
        let sizes: Vec<usize> = inputs.iter().map(|s| s.elem_count()).collect();
        OpCost::new(
            flops_per_element * output.elem_count() as f64,
            &sizes,
            output.elem_count(),
        )
    }

    /// Pure data movement (no arithmetic): read `inputs`, write `output`.
    pub fn copy(inputs: &[&Shape], output: &Shape) -> OpCost {
        OpCost::pointwise(0.0, inputs, output)
    }

    /// The same bytes with `flops` FLOPs.
    pub fn with_flops(self, flops: f64) -> OpCost {
        OpCost { flops, ..self }
    }
}

/// What one op call did: its name, a detail (`k4 s2 p1`, a matmul layout), shapes and cost.
#[derive(Clone, Debug)]
pub struct OpInfo {
    /// The op (`conv2d`, `add`, `adam`, ...).
    pub name: &'static str,
    /// Parameters worth showing next to the name, or empty.
    pub detail: String,
    /// The dims of each input.
    pub inputs: Vec<Vec<usize>>,
    /// The dims of the output.
    pub output: Vec<usize>,
    /// FLOPs and bytes from the op's formula.
    pub cost: OpCost,
    /// For an optimizer update: the parameter, whose layer the row is attributed to.
    pub param: Option<TensorId>,
}

impl OpInfo {
    /// An op `name` with these input shapes, output shape and cost.
    pub fn new(name: &'static str, inputs: &[&Shape], output: &Shape, cost: OpCost) -> OpInfo {
        OpInfo {
            name,
            detail: String::new(),
            inputs: inputs.iter().map(|s| s.dims().to_vec()).collect(),
            output: output.dims().to_vec(),
            cost,
            param: None,
        }
    }
}

/// One recorded op call or region (raw, before aggregation).
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub section: Arc<str>,
    pub layer: Arc<str>,
    pub op: String,
    pub phase: Phase,
    pub inputs: Vec<Vec<usize>>,
    pub output: Vec<usize>,
    pub cost: OpCost,
    pub ns: u64,
}

/// One entry of the layer-scope stack.
struct ScopeEntry {
    /// The dotted path segment (`G`, `main`, `0`).
    segment: String,
    /// A root scope starts a new path (`D` inside `gradient penalty` is `D`, not
    /// `gradient penalty.D`).
    root: bool,
    /// The display name of the layer this entry opens: the path, then the layer's type.
    display: Arc<str>,
}

#[derive(Default)]
struct State {
    records: Vec<Record>,
    /// Nesting of open op timers (only depth 1 is recorded).
    depth: u32,
    start: Option<Instant>,
    timer_name: &'static str,
    pending: Option<OpInfo>,
    scopes: Vec<ScopeEntry>,
    section: Option<Arc<str>>,
    /// (layer, phase) of the backward rules being run, innermost last.
    backward: Vec<(Arc<str>, Phase)>,
    /// Phase of ops outside any backward rule, set by regions.
    phases: Vec<Phase>,
    /// The layer and phase that made each recorded node.
    nodes: HashMap<TensorId, (Arc<str>, Phase)>,
    /// The layer whose forward op first read each parameter.
    params: HashMap<TensorId, Arc<str>>,
    /// Nanoseconds in records so far (regions subtract what ran inside them).
    accounted_ns: u64,
    gpu: Option<GpuDevice>,
    /// Ops that ran with no timer open (a hook missing from an op: the report lists them).
    unguarded: Vec<String>,
}

impl State {
    fn layer(&self) -> Arc<str> {
        self.scopes
            .last()
            .map(|s| s.display.clone())
            .unwrap_or_else(|| Arc::from("(step)"))
    }

    /// The layer and phase an op running now belongs to.
    fn context(&self) -> (Arc<str>, Phase) {
        match self.backward.last() {
            Some((layer, phase)) => (layer.clone(), *phase),
            None => (
                self.layer(),
                self.phases.last().copied().unwrap_or(Phase::Forward),
            ),
        }
    }

    fn section(&self) -> Arc<str> {
        self.section.clone().unwrap_or_else(|| Arc::from("step"))
    }

    fn push(&mut self, record: Record) {
        self.accounted_ns += record.ns;
        self.records.push(record);
    }
}

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// True while a [`Session`] records on this thread.
#[inline]
pub fn is_on() -> bool {
    ON.with(|on| on.get())
}

/// Recording on this thread, from [`Session::start`] to `Session::finish` (or drop).
pub struct Session {
    finished: bool,
}

impl Session {
    /// Starts recording on this thread, forgetting anything recorded before. With a GPU
    /// `device`, every op waits for the GPU before and after it runs.
    pub fn start(device: &Device) -> Session {
        STATE.with(|s| {
            *s.borrow_mut() = State {
                gpu: match device {
                    Device::Gpu(g) => Some(g.clone()),
                    Device::Cpu => None,
                },
                ..State::default()
            }
        });
        ON.with(|on| on.set(true));
        Session { finished: false }
    }

    /// Stops recording; returns the records and the names of ops that ran with no timer.
    pub(crate) fn finish(mut self) -> (Vec<Record>, Vec<String>) {
        self.finished = true;
        ON.with(|on| on.set(false));
        STATE.with(|s| {
            let state = std::mem::take(&mut *s.borrow_mut());
            (state.records, state.unguarded)
        })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if !self.finished {
            ON.with(|on| on.set(false));
            STATE.with(|s| *s.borrow_mut() = State::default());
        }
    }
}

// ---- op timers ----------------------------------------------------------------------------

/// Times one op call while it lives (see [`op`]).
#[must_use = "the op is timed until the timer is dropped"]
pub struct OpTimer {
    active: bool,
}

/// Starts timing the op `name` (a no-op unless profiling). Ops opened inside another op are
/// counted in the outer op's time only.
#[inline]
pub fn op(name: &'static str) -> OpTimer {
    if !is_on() {
        return OpTimer { active: false };
    }
    op_begin(name);
    OpTimer { active: true }
}

fn op_begin(name: &'static str) {
    let (outer, gpu) = STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.depth += 1;
        if s.depth == 1 {
            s.timer_name = name;
            s.pending = None;
            (true, s.gpu.clone())
        } else {
            (false, None)
        }
    });
    if outer {
        if let Some(g) = gpu {
            // Work queued before this op (there should be none) is not this op's.
            g.wait_idle();
        }
        STATE.with(|s| s.borrow_mut().start = Some(Instant::now()));
    }
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        if self.active {
            op_end();
        }
    }
}

fn op_end() {
    let (outer, gpu) = STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.depth = s.depth.saturating_sub(1);
        (s.depth == 0, s.gpu.clone())
    });
    if !outer {
        return;
    }
    if let Some(g) = gpu {
        g.wait_idle();
    }
    let end = Instant::now();
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let Some(start) = s.start.take() else {
            return;
        };
        let ns = end.duration_since(start).as_nanos() as u64;
        let info = s.pending.take().unwrap_or_else(|| OpInfo {
            name: s.timer_name,
            detail: String::new(),
            inputs: Vec::new(),
            output: Vec::new(),
            cost: OpCost::default(),
            param: None,
        });
        let (mut layer, phase) = s.context();
        if let Some(owner) = info.param.and_then(|p| s.params.get(&p).cloned()) {
            layer = owner;
        }
        let op = if info.detail.is_empty() {
            info.name.to_string()
        } else {
            format!("{} {}", info.name, info.detail)
        };
        let section = s.section();
        s.push(Record {
            section,
            layer,
            op,
            phase,
            inputs: info.inputs,
            output: info.output,
            cost: info.cost,
            ns,
        });
    });
}

/// Describes the op being timed (shapes and cost). Called by ops that do not go through
/// `Tensor::from_op`; the closure runs only when profiling, for the outermost op.
#[inline]
pub fn describe(info: impl FnOnce() -> OpInfo) {
    if !is_on() {
        return;
    }
    let outer = STATE.with(|s| s.borrow().depth == 1);
    if outer {
        let info = info();
        STATE.with(|s| s.borrow_mut().pending = Some(info));
    }
}

/// The hook of `Tensor::from_op`: describes the op being timed from its [`Op`] (name,
/// shapes, [`Op::cost`]) and remembers which layer read each parameter. Call only when
/// [`is_on`].
pub(crate) fn describe_op(op: &Op, output: &Shape) {
    let inputs = op.inputs();
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        if s.backward.is_empty() {
            let layer = s.layer();
            for t in &inputs {
                if t.requires_grad() && t.op().is_none() {
                    s.params.entry(t.id()).or_insert_with(|| layer.clone());
                }
            }
        }
        match s.depth {
            0 => {
                let name = op.name().to_string();
                if !s.unguarded.contains(&name) {
                    s.unguarded.push(name);
                }
            }
            1 => {
                let shapes: Vec<&Shape> = inputs.iter().map(|t| t.shape()).collect();
                s.pending = Some(OpInfo {
                    name: op.name(),
                    detail: op.detail(),
                    inputs: shapes.iter().map(|d| d.dims().to_vec()).collect(),
                    output: output.dims().to_vec(),
                    cost: op.cost(output),
                    param: None,
                });
            }
            _ => {}
        }
    });
}

/// The hook of `Tensor::from_op` for a recorded node: remembers the layer and phase that made
/// it, for the backward rule that will differentiate it. Call only when [`is_on`].
pub(crate) fn note_node(id: TensorId) {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let ctx = s.context();
        s.nodes.insert(id, ctx);
    });
}

/// Called where GPU work is recorded: notes an op that runs while profiling with no timer
/// open (a missing hook), so the report can say so instead of hiding its time.
#[inline]
pub fn check_timed(name: &'static str) {
    if !is_on() {
        return;
    }
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        if s.depth == 0 && !s.unguarded.iter().any(|u| u == name) {
            s.unguarded.push(name.to_string());
        }
    });
}

// ---- scopes -------------------------------------------------------------------------------

enum ScopeKind {
    Layer,
    Section(Option<Arc<str>>),
    Backward,
}

/// Attributes the ops run while it lives to a layer, a section or a backward node; pops
/// itself when dropped. Inert unless profiling.
#[must_use = "the scope ends when this guard is dropped"]
pub struct Scope {
    kind: Option<ScopeKind>,
}

const INERT: Scope = Scope { kind: None };

fn push_layer(segment: String, root: bool, layer_type: Option<String>) -> Scope {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let mut path: Vec<&str> = Vec::new();
        if !root {
            for e in s.scopes.iter().rev() {
                path.push(&e.segment);
                if e.root {
                    break;
                }
            }
            path.reverse();
        }
        path.push(&segment);
        let mut display = path.join(".");
        if let Some(t) = layer_type {
            display.push(' ');
            display.push_str(&t);
        }
        let display: Arc<str> = Arc::from(display);
        s.scopes.push(ScopeEntry {
            segment,
            root,
            display,
        });
    });
    Scope {
        kind: Some(ScopeKind::Layer),
    }
}

/// A top-level name for the ops inside (`G`, `D`, `loss_d`, `gradient penalty`): it starts a
/// new dotted path.
#[inline]
pub fn root_scope(name: &str) -> Scope {
    if !is_on() {
        return INERT;
    }
    push_layer(name.to_string(), true, None)
}

/// A named child of the current scope (`main`, `label_emb`), with the layer type when it is
/// one layer.
#[inline]
pub fn child_scope(name: &str, layer_type: Option<&str>) -> Scope {
    if !is_on() {
        return INERT;
    }
    push_layer(name.to_string(), false, layer_type.map(short_type_name))
}

/// Child `index` of a `Sequential`, shown with its type (`0 Conv2d`); `layer_type` is only
/// called when profiling.
#[inline]
pub fn layer_scope(index: usize, layer_type: impl FnOnce() -> &'static str) -> Scope {
    if !is_on() {
        return INERT;
    }
    push_layer(
        index.to_string(),
        false,
        Some(short_type_name(layer_type())),
    )
}

/// The part of the step the ops inside belong to (`D step`, `G step`).
#[inline]
pub fn section(name: &str) -> Scope {
    if !is_on() {
        return INERT;
    }
    let previous = STATE.with(|s| s.borrow_mut().section.replace(Arc::from(name)));
    Scope {
        kind: Some(ScopeKind::Section(previous)),
    }
}

/// Runs while autograd applies the backward rule of node `id`: the ops inside are attributed
/// to the layer whose forward op made the node, one phase later (`fwd` -> `bwd` -> `bwd2`).
#[inline]
pub fn backward_node(id: TensorId) -> Scope {
    if !is_on() {
        return INERT;
    }
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let (layer, phase) = match s.nodes.get(&id) {
            Some((layer, phase)) => (layer.clone(), phase.backward_of()),
            None => {
                let (layer, phase) = s.context();
                (layer, phase.backward_of())
            }
        };
        s.backward.push((layer, phase));
    });
    Scope {
        kind: Some(ScopeKind::Backward),
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let Some(kind) = self.kind.take() else {
            return;
        };
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            match kind {
                ScopeKind::Layer => {
                    s.scopes.pop();
                }
                ScopeKind::Section(previous) => s.section = previous,
                ScopeKind::Backward => {
                    s.backward.pop();
                }
            }
        });
    }
}

/// `SpectralNorm<Conv2d>` from `ganforge::nn::spectral_norm::SpectralNorm<ganforge::nn::conv2d::Conv2d>`:
/// every path segment dropped.
pub fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut word = String::new();
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            out.push_str(word.rsplit("::").next().unwrap_or(""));
            word.clear();
            out.push(c);
        }
    }
    out.push_str(word.rsplit("::").next().unwrap_or(""));
    out
}

// ---- regions ------------------------------------------------------------------------------

/// Times work *between* ops (see [`region`]); its self time becomes a row when dropped.
#[must_use = "the region is timed until it is dropped"]
pub struct Region {
    open: Option<OpenRegion>,
}

struct OpenRegion {
    layer: Arc<str>,
    what: &'static str,
    phase: Phase,
    start: Instant,
    accounted_at_start: u64,
}

/// Times the host work between the ops run while it lives (autograd's graph walk, an
/// optimizer's loop, freeing a graph): when dropped, its elapsed time minus the ops (and
/// inner regions) recorded inside becomes the row `layer / what`. Ops inside that are not
/// in a backward rule get `phase`.
#[inline]
pub fn region(layer: &str, what: &'static str, phase: Phase) -> Region {
    if !is_on() {
        return Region { open: None };
    }
    let accounted_at_start = STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.phases.push(phase);
        s.accounted_ns
    });
    Region {
        open: Some(OpenRegion {
            layer: Arc::from(layer),
            what,
            phase,
            start: Instant::now(),
            accounted_at_start,
        }),
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        let Some(r) = self.open.take() else {
            return;
        };
        let elapsed = r.start.elapsed().as_nanos() as u64;
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            s.phases.pop();
            if !is_on() {
                return;
            }
            let inside = s.accounted_ns - r.accounted_at_start;
            let section = s.section();
            s.push(Record {
                section,
                layer: r.layer,
                op: r.what.to_string(),
                phase: r.phase,
                inputs: Vec::new(),
                output: Vec::new(),
                cost: OpCost::default(),
                ns: elapsed.saturating_sub(inside),
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_lose_their_paths() {
        assert_eq!(short_type_name("ganforge::nn::conv2d::Conv2d"), "Conv2d");
        assert_eq!(
            short_type_name(
                "ganforge::nn::spectral_norm::SpectralNorm<ganforge::nn::linear::Linear>"
            ),
            "SpectralNorm<Linear>"
        );
    }

    #[test]
    fn hooks_are_inert_when_off() {
        assert!(!is_on());
        let _t = op("x");
        let _s = root_scope("G");
        let _r = region("autograd", "walk", Phase::Backward);
        STATE.with(|s| {
            let s = s.borrow();
            assert_eq!((s.depth, s.scopes.len(), s.phases.len()), (0, 0, 0));
        });
    }
}
