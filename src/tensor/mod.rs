//! Tensors: shared, immutable handles to f32 data on a device, plus the autodiff record of how
//! they were made.
//!
//! A [`Tensor`] is an `Arc`: cloning one is cheap and shares data. Ops never mutate their
//! inputs; they return new tensors. The only in-place writes are the optimizers' updates and
//! batch norm's running statistics, which go through [`Tensor::write_storage`] on tensors that
//! are not part of a live graph.

mod creation;
mod rng;
mod shape;

pub use rng::Rng;
pub use shape::Shape;

use crate::autograd;
use crate::backend::{Device, Storage};
use crate::error::{Error, Result};
use crate::ops::Op;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

/// A unique id per tensor node, used by autodiff to key gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(1);
        TensorId(COUNTER.fetch_add(1, Ordering::Relaxed))
    }
}

/// A tensor's data, shared by the tensors that view it (`reshape`, `detach`), with a count of
/// the in-place writes made to it: a value derived from the data (a kept im2col) is valid
/// while the count has not moved.
pub(crate) struct StorageCell {
    data: RwLock<Storage>,
    writes: AtomicU64,
}

impl StorageCell {
    fn new(storage: Storage) -> Arc<StorageCell> {
        Arc::new(StorageCell {
            data: RwLock::new(storage),
            writes: AtomicU64::new(0),
        })
    }
}

pub(crate) struct TensorInner {
    id: TensorId,
    storage: Arc<StorageCell>,
    shape: Shape,
    /// The op that made this tensor, kept only when some input is tracked by autodiff and
    /// grad mode is on. `None` for leaves and constants.
    op: Option<Op>,
    /// Set by the user on leaves (parameters, inputs of a gradient penalty).
    requires_grad: AtomicBool,
    /// Gradient accumulated by [`Tensor::backward`] (leaves only).
    grad: Mutex<Option<Tensor>>,
}

/// An n-dimensional f32 array on a [`Device`], contiguous and row-major, with autodiff.
///
/// Ops are methods that return new tensors (inputs are never modified); those that can
/// refuse their operands (shapes, devices) return a [`Result`].
///
/// ```
/// use ganforge::{Device, Rng, Tensor};
/// // Creation: from host data, constants, seeded random numbers.
/// let a = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]).unwrap();
/// let ones = Tensor::ones([3], &Device::Cpu);
/// let noise = Tensor::randn(0.0, 1.0, [2, 3], &mut Rng::new(0), &Device::Cpu);
/// assert_eq!(noise.dims(), &[2, 3]);
///
/// // Elementwise ops broadcast like NumPy: [2, 3] + [3].
/// let b = a.add(&ones).unwrap();
/// assert_eq!(b.to_vec(), vec![2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
/// // Reductions keep or drop the reduced dims.
/// assert_eq!(a.sum(&[1], false).unwrap().to_vec(), vec![6.0, 15.0]);
/// assert_eq!(a.mean_all().unwrap().to_scalar().unwrap(), 3.5);
/// // Shapes: reshape, transpose, matmul ([2, 3] @ [3, 2]).
/// let at = a.t().unwrap();
/// assert_eq!(at.to_vec(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
/// let gram = a.matmul(&at).unwrap();
/// assert_eq!(gram.to_vec(), vec![14.0, 32.0, 32.0, 77.0]);
/// assert_eq!(a.reshape([3, 2]).unwrap().dims(), &[3, 2]);
/// // Pointwise functions.
/// assert_eq!(a.neg().relu().to_vec(), vec![0.0; 6]);
/// ```
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<TensorInner>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let data = self.to_vec();
        let shown: Vec<f32> = data.iter().take(8).copied().collect();
        write!(
            f,
            "Tensor(shape={:?}, device={}, op={}, data={:?}{})",
            self.shape(),
            self.device(),
            self.op().map(|o| o.name()).unwrap_or("leaf"),
            shown,
            if data.len() > 8 { " ..." } else { "" }
        )
    }
}

impl Tensor {
    /// Wraps storage as a new leaf tensor (no autodiff history).
    pub fn from_storage(storage: Storage, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if storage.len() != shape.elem_count() {
            return Err(Error::ElementCount {
                op: "from_storage",
                shape: shape.clone(),
                got: storage.len(),
                want: shape.elem_count(),
            });
        }
        Ok(Self::make(StorageCell::new(storage), shape, None))
    }

    fn make(storage: Arc<StorageCell>, shape: Shape, op: Option<Op>) -> Tensor {
        Tensor(Arc::new(TensorInner {
            id: TensorId::new(),
            storage,
            shape,
            op,
            requires_grad: AtomicBool::new(false),
            grad: Mutex::new(None),
        }))
    }

    /// The result of an op: records `op` for autodiff only when grad mode is on and one of its
    /// inputs is tracked; otherwise the result is a plain constant and the inputs can be freed.
    pub(crate) fn from_op(storage: Storage, shape: Shape, op: Op) -> Tensor {
        debug_assert_eq!(storage.len(), shape.elem_count(), "{}", op.name());
        let track = autograd::is_grad_enabled() && op.inputs().iter().any(|t| t.is_tracked());
        let profiling = crate::profile::is_on();
        if profiling {
            crate::profile::describe_op(&op, &shape);
        }
        let t = Self::make(
            StorageCell::new(storage),
            shape,
            if track { Some(op) } else { None },
        );
        if profiling && track {
            crate::profile::note_node(t.id());
        }
        t
    }

    /// Like [`Tensor::from_op`] but sharing the input's storage (reshape of contiguous data).
    pub(crate) fn shared_with_op(&self, shape: Shape, op: Op) -> Tensor {
        let track = autograd::is_grad_enabled() && op.inputs().iter().any(|t| t.is_tracked());
        let profiling = crate::profile::is_on();
        if profiling {
            crate::profile::describe_op(&op, &shape);
        }
        let t = Self::make(
            self.0.storage.clone(),
            shape,
            if track { Some(op) } else { None },
        );
        if profiling && track {
            crate::profile::note_node(t.id());
        }
        t
    }

    /// This node's id.
    pub fn id(&self) -> TensorId {
        self.0.id
    }
    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.0.shape
    }
    /// The dims, outermost first.
    pub fn dims(&self) -> &[usize] {
        self.0.shape.dims()
    }
    /// Number of dims.
    pub fn rank(&self) -> usize {
        self.0.shape.rank()
    }
    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        self.0.shape.elem_count()
    }
    /// The device the data lives on.
    pub fn device(&self) -> Device {
        self.0.storage.data.read().unwrap().device()
    }
    /// The op that made this tensor, if it is part of a recorded graph.
    pub fn op(&self) -> Option<&Op> {
        self.0.op.as_ref()
    }
    /// Read access to the storage.
    pub fn storage(&self) -> RwLockReadGuard<'_, Storage> {
        self.0.storage.data.read().unwrap()
    }
    /// True if two tensors share the same storage buffer.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    /// How many in-place writes the data has had (shared by every tensor viewing it).
    pub(crate) fn storage_writes(&self) -> u64 {
        self.0.storage.writes.load(Ordering::Relaxed)
    }

    /// In-place write to the data (optimizer updates, running statistics). Refused on a tensor
    /// that is the output of a recorded op, whose value a pending backward may still need.
    pub fn write_storage<R>(&self, f: impl FnOnce(&mut Storage) -> R) -> Result<R> {
        if self.0.op.is_some() {
            return Err(Error::Autograd(
                "in-place write to a tensor that is part of a recorded graph; detach it first"
                    .into(),
            ));
        }
        self.0.storage.writes.fetch_add(1, Ordering::Relaxed);
        let mut guard = self.0.storage.data.write().unwrap();
        Ok(f(&mut guard))
    }

    /// Copies the data out to host memory, row-major. On a GPU this waits for the queued
    /// work; should the GPU fail, the values are NaN and the error is kept for the device's
    /// next check ([`Tensor::try_to_vec`] returns it instead).
    pub fn to_vec(&self) -> Vec<f32> {
        let _t = self.readback_timer();
        self.storage().to_vec()
    }

    /// Copies the data out to host memory, or returns the GPU error that prevented it.
    pub fn try_to_vec(&self) -> Result<Vec<f32>> {
        let _t = self.readback_timer();
        self.storage().try_to_vec()
    }

    /// The profiler's timer of a copy to the host (read on the device, written on the host).
    fn readback_timer(&self) -> crate::profile::OpTimer {
        let t = crate::profile::op("to_vec");
        crate::profile::describe(|| {
            crate::profile::OpInfo::new(
                "to_vec",
                &[self.shape()],
                self.shape(),
                crate::profile::OpCost::copy(&[self.shape()], self.shape()),
            )
        });
        t
    }

    /// The single value of a one-element tensor (on a GPU, the one read back to the host).
    pub fn to_scalar(&self) -> Result<f32> {
        if self.elem_count() != 1 {
            return Err(Error::bad_shape(
                "to_scalar",
                self.shape(),
                "expected exactly one element",
            ));
        }
        Ok(self.try_to_vec()?[0])
    }

    /// Moves (copies) the tensor to `device`. The result is a leaf: no autodiff history.
    ///
    /// ```
    /// use ganforge::{Device, Tensor};
    /// let t = Tensor::from_vec(vec![1.0, 2.0], [2]).unwrap();
    /// let (dev, _why) = Device::auto(); // a hardware GPU if there is one, else the CPU
    /// let back = t.to_device(&dev).unwrap().to_device(&Device::Cpu).unwrap();
    /// assert_eq!(back.to_vec(), vec![1.0, 2.0]);
    /// ```
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        let _t = crate::profile::op("to_device");
        crate::profile::describe(|| {
            crate::profile::OpInfo::new(
                "to_device",
                &[self.shape()],
                self.shape(),
                crate::profile::OpCost::copy(&[self.shape()], self.shape()),
            )
        });
        let storage = match (&*self.storage(), device) {
            (s, Device::Cpu) => Storage::Cpu(s.try_to_vec()?),
            (Storage::Cpu(v), Device::Gpu(g)) => Storage::Gpu(g.upload("to_device", v)),
            (Storage::Gpu(b), Device::Gpu(g)) if b.device() == g => Storage::Gpu(b.clone()),
            (Storage::Gpu(b), Device::Gpu(g)) => Storage::Gpu(g.upload("to_device", &b.to_vec()?)),
        };
        Tensor::from_storage(storage, self.shape().clone())
    }

    // ---- autodiff flags ------------------------------------------------------------------

    /// True if gradients flow to or through this tensor.
    pub fn is_tracked(&self) -> bool {
        self.0.op.is_some() || self.0.requires_grad.load(Ordering::Relaxed)
    }
    /// True if the user asked for this leaf's gradient.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad.load(Ordering::Relaxed)
    }
    /// Marks a leaf as needing its gradient (parameters, the interpolates of a gradient
    /// penalty). Returns `self` for chaining.
    pub fn set_requires_grad(&self, on: bool) -> &Tensor {
        self.0.requires_grad.store(on, Ordering::Relaxed);
        self
    }
    /// A new leaf sharing this tensor's data, cut from the graph (like `torch.Tensor.detach`).
    pub fn detach(&self) -> Tensor {
        Self::make(self.0.storage.clone(), self.shape().clone(), None)
    }
    /// The gradient accumulated by [`Tensor::backward`], if any.
    pub fn grad(&self) -> Option<Tensor> {
        self.0.grad.lock().unwrap().clone()
    }
    /// Replaces the accumulated gradient.
    pub fn set_grad(&self, g: Option<Tensor>) {
        *self.0.grad.lock().unwrap() = g;
    }
    /// Clears the accumulated gradient (`None`, like PyTorch's `set_to_none=True`).
    pub fn zero_grad(&self) {
        self.set_grad(None);
    }

    /// Same-device check used by every binary op.
    pub(crate) fn check_same_device(&self, op: &'static str, other: &Tensor) -> Result<()> {
        let (a, b) = (self.device(), other.device());
        if a != b {
            return Err(Error::DeviceMismatch {
                op,
                lhs: a.name(),
                rhs: b.name(),
            });
        }
        Ok(())
    }
}
