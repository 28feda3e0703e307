//! Devices and storage. Model code names a [`Device`], never a backend type: every op matches
//! on [`Storage`] and runs the kernel of the device the data lives on (`Storage::Cpu` arm: Rust
//! loops in the op's file; `Storage::Gpu` arm: a WGSL kernel from `shaders/`, see [`gpu`]).

pub mod cpu;
pub mod gpu;

use crate::error::{Error, Result};
pub use gpu::{GpuBuffer, GpuDevice};

/// Where a tensor's data lives and where its ops run.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Device {
    /// Host memory; kernels in Rust with rayon (see [`cpu`]).
    #[default]
    Cpu,
    /// A GPU through wgpu; kernels in WGSL (see [`gpu`]).
    Gpu(GpuDevice),
}

impl Device {
    /// The GPU (the process-wide [`GpuDevice::shared`]), or [`Error::GpuUnavailable`] with
    /// wgpu's reason when there is no usable adapter.
    pub fn gpu() -> Result<Device> {
        GpuDevice::shared().map(Device::Gpu)
    }

    /// A GPU when wgpu finds a hardware adapter, otherwise the CPU. The second value is one
    /// line that says which and why (for a log or the CLI), e.g.
    /// `gpu: NVIDIA H100 80GB HBM3 (Vulkan, DiscreteGpu)` or
    /// `cpu (no GPU: No suitable graphics adapter found; ...)`.
    ///
    /// A software adapter (Mesa's lavapipe/llvmpipe, device type `Cpu`) is not taken: it runs
    /// the WGSL kernels on the CPU, 10-40x slower than the CPU kernels. [`Device::gpu`] still
    /// returns it (that is how CI tests the GPU kernels).
    ///
    /// ```
    /// use ganforge::{Device, Tensor};
    /// let (dev, why) = Device::auto();
    /// println!("running on {dev}: {why}");
    /// assert!(why.starts_with(if dev.is_gpu() { "gpu" } else { "cpu" }));
    /// // The same code runs on either device; the data moves with to_device.
    /// let x = Tensor::from_vec(vec![-1.0, 2.0], [2]).unwrap().to_device(&dev).unwrap();
    /// let y = x.relu().mul_scalar(3.0);
    /// assert_eq!(y.device(), dev);
    /// assert_eq!(y.to_vec(), vec![0.0, 6.0]); // to_vec copies back to the host
    /// ```
    pub fn auto() -> (Device, String) {
        match GpuDevice::shared() {
            Ok(g) if g.info().device_type == "Cpu" => (
                Device::Cpu,
                format!(
                    "cpu (the only GPU adapter is a software one, {}; --device gpu uses it anyway)",
                    g.info().name
                ),
            ),
            Ok(g) => {
                let line = format!("gpu: {}", g.info());
                (Device::Gpu(g), line)
            }
            Err(e) => {
                let reason = match e {
                    Error::GpuUnavailable(msg) => msg,
                    other => other.to_string(),
                };
                (Device::Cpu, format!("cpu (no GPU: {reason})"))
            }
        }
    }

    /// A short human name ("cpu", "gpu").
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".to_string(),
            Device::Gpu(_) => "gpu".to_string(),
        }
    }

    /// True for a GPU device.
    pub fn is_gpu(&self) -> bool {
        matches!(self, Device::Gpu(_))
    }

    /// Waits for every command recorded on the device and reports the first GPU error kept
    /// since the last check (a no-op on the CPU). Benchmarks call it inside the timed region.
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Gpu(g) => {
                // A one-element readback waits for the whole queue.
                let b = g.zeros("synchronize", 1);
                g.read("synchronize", &b).map(|_| ())
            }
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// The data of a tensor on its device: always contiguous, row-major f32.
#[derive(Clone, Debug)]
pub enum Storage {
    /// Host memory.
    Cpu(Vec<f32>),
    /// A GPU buffer.
    Gpu(GpuBuffer),
}

/// CPU buffers go back to the pool when their last tensor is dropped, so the next op of the
/// same size reuses them (see [`cpu::pool`]); GPU buffers do the same through their own drop
/// (see [`gpu`]).
impl Drop for Storage {
    fn drop(&mut self) {
        match self {
            Storage::Cpu(v) => cpu::pool::recycle(std::mem::take(v)),
            Storage::Gpu(_) => {}
        }
    }
}

impl Storage {
    /// The device this storage lives on.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Gpu(b) => Device::Gpu(b.device().clone()),
        }
    }
    /// Number of f32 elements.
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(v) => v.len(),
            Storage::Gpu(b) => b.len(),
        }
    }
    /// True when it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A copy of the data in host memory. On the GPU this waits for the queue; if the GPU
    /// fails, the values are NaN and the error is kept on the device for its next check (use
    /// [`Storage::try_to_vec`] to get it here).
    pub fn to_vec(&self) -> Vec<f32> {
        match self {
            Storage::Cpu(v) => v.clone(),
            Storage::Gpu(b) => match b.to_vec() {
                Ok(v) => v,
                Err(e) => {
                    b.device().keep_error(e);
                    vec![f32::NAN; b.len()]
                }
            },
        }
    }
    /// A copy of the data in host memory, or the GPU error that prevented it.
    pub fn try_to_vec(&self) -> Result<Vec<f32>> {
        match self {
            Storage::Cpu(v) => Ok(v.clone()),
            Storage::Gpu(b) => b.to_vec(),
        }
    }
    /// The host slice of CPU storage.
    ///
    /// # Panics
    /// On GPU storage, which has no host slice: engine code matches on the storage instead,
    /// and user code reads GPU data with [`Storage::to_vec`].
    pub fn as_cpu(&self) -> &[f32] {
        match self {
            Storage::Cpu(v) => v,
            Storage::Gpu(_) => panic!("as_cpu on GPU storage; use to_vec or match on Storage"),
        }
    }
    /// The mutable host slice of CPU storage.
    ///
    /// # Panics
    /// On GPU storage (see [`Storage::as_cpu`]); write GPU data with
    /// `Tensor::write_from_slice` or the in-place ops of `src/ops/inplace.rs`.
    pub fn as_cpu_mut(&mut self) -> &mut [f32] {
        match self {
            Storage::Cpu(v) => v,
            Storage::Gpu(_) => {
                panic!("as_cpu_mut on GPU storage; use Tensor::write_from_slice or in-place ops")
            }
        }
    }
    /// The GPU buffer, if the data lives on a GPU.
    pub fn as_gpu(&self) -> Option<&GpuBuffer> {
        match self {
            Storage::Gpu(b) => Some(b),
            Storage::Cpu(_) => None,
        }
    }
}

/// Merges dims for a strided kernel: drops size-1 dims and joins neighbours `d, d+1` when every
/// operand's stride satisfies `stride[d] == stride[d+1] * dims[d+1]` (the pair is one
/// contiguous run for all of them). A same-shape elementwise op ends up with rank 1. Returns
/// the merged dims and each operand's merged strides; rank is at least 1.
pub fn merge_dims(dims: &[usize], strides: &[Vec<usize>]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut out_dims: Vec<usize> = Vec::new();
    let mut out_strides: Vec<Vec<usize>> = vec![Vec::new(); strides.len()];
    for d in 0..dims.len() {
        if dims[d] == 1 {
            continue;
        }
        let mergeable = match out_dims.last() {
            Some(_) => strides.iter().enumerate().all(|(o, s)| {
                let prev = *out_strides[o].last().expect("same length");
                prev == s[d] * dims[d]
            }),
            None => false,
        };
        if mergeable {
            *out_dims.last_mut().expect("checked") *= dims[d];
            for (o, s) in strides.iter().enumerate() {
                *out_strides[o].last_mut().expect("checked") = s[d];
            }
        } else {
            out_dims.push(dims[d]);
            for (o, s) in strides.iter().enumerate() {
                out_strides[o].push(s[d]);
            }
        }
    }
    if out_dims.is_empty() {
        out_dims.push(1);
        for s in out_strides.iter_mut() {
            s.push(0);
        }
    }
    (out_dims, out_strides)
}
