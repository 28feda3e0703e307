//! Devices and storage. Model code names a [`Device`], never a backend type: every op matches
//! on [`Storage`] and runs the kernel of the device the data lives on. The GPU backend
//! (issue 4) adds a `Gpu` variant to both enums and a match arm to each op's dispatch.

pub mod cpu;

/// Where a tensor's data lives and where its ops run.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Device {
    /// Host memory; kernels in Rust with rayon (see [`cpu`]).
    #[default]
    Cpu,
}

impl Device {
    /// A short human name ("cpu").
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".to_string(),
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
}

/// CPU buffers go back to the pool when their last tensor is dropped, so the next op of the
/// same size reuses them (see [`cpu::pool`]).
impl Drop for Storage {
    fn drop(&mut self) {
        match self {
            Storage::Cpu(v) => cpu::pool::recycle(std::mem::take(v)),
        }
    }
}

impl Storage {
    /// The device this storage lives on.
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
        }
    }
    /// Number of f32 elements.
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(v) => v.len(),
        }
    }
    /// True when it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A copy of the data in host memory.
    pub fn to_vec(&self) -> Vec<f32> {
        match self {
            Storage::Cpu(v) => v.clone(),
        }
    }
    /// The host slice (CPU storage).
    pub fn as_cpu(&self) -> &[f32] {
        match self {
            Storage::Cpu(v) => v,
        }
    }
    /// The mutable host slice (CPU storage).
    pub fn as_cpu_mut(&mut self) -> &mut [f32] {
        match self {
            Storage::Cpu(v) => v,
        }
    }
}
