//! Typed errors of the engine. Every variant names the op that failed and the shapes involved,
//! so a message read alone says what went wrong; the binary adds file names and hints.

use crate::tensor::Shape;

/// Everything the engine can refuse. Ops check shapes before running any kernel.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two operands whose shapes do not fit together (elementwise, matmul, concat, ...).
    #[error("{op}: shape mismatch between {lhs:?} and {rhs:?}{}", hint_suffix(.hint))]
    ShapeMismatch {
        /// The op that refused its operands.
        op: &'static str,
        /// Shape of the first operand.
        lhs: Shape,
        /// Shape of the second operand.
        rhs: Shape,
        /// What the op expected, e.g. "weight is [C_out, C_in, KH, KW]" (may be empty).
        hint: String,
    },
    /// An input of the wrong rank or layout for the op (e.g. conv2d on a 3-D tensor).
    #[error("{op}: bad input shape {shape:?}: {msg}")]
    BadShape {
        /// The op that refused its input.
        op: &'static str,
        /// The input's shape.
        shape: Shape,
        /// What was expected instead.
        msg: String,
    },
    /// A dimension index past the rank of the tensor.
    #[error("{op}: dim {dim} out of range for a tensor of rank {rank}")]
    DimOutOfRange {
        /// The op that was given the dim.
        op: &'static str,
        /// The dim asked for.
        dim: usize,
        /// The tensor's number of dims.
        rank: usize,
    },
    /// A parameter that makes no sense (stride 0, negative probability, ...).
    #[error("{op}: invalid parameter: {msg}")]
    InvalidParam {
        /// The op (or the setting, e.g. `"config"`) whose parameter is invalid.
        op: &'static str,
        /// Which parameter, its value, and the valid range.
        msg: String,
    },
    /// A tensor whose element count does not match the data or target shape.
    #[error("{op}: {got} elements given where shape {shape:?} needs {want}")]
    ElementCount {
        /// The op (or constructor) that checked the count.
        op: &'static str,
        /// The shape the data was meant to fill.
        shape: Shape,
        /// Elements given.
        got: usize,
        /// Elements the shape holds.
        want: usize,
    },
    /// Autodiff misuse: backward on a non-scalar, grad of a tensor that is not in the graph...
    #[error("autograd: {0}")]
    Autograd(String),
    /// Two tensors on different devices were combined.
    #[error("{op}: tensors on different devices ({lhs} and {rhs}); move one with to_device")]
    DeviceMismatch {
        /// The op that was given the two tensors.
        op: &'static str,
        /// Device of the first operand (`"cpu"`, `"gpu"`).
        lhs: String,
        /// Device of the second operand.
        rhs: String,
    },
    /// A state dict (checkpoint, fixture) that does not fit the module it is loaded into.
    #[error("state dict: {0}")]
    StateDict(String),
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A safetensors file that could not be parsed or written.
    #[error("{path}: safetensors: {msg}")]
    SafeTensors {
        /// The file.
        path: String,
        /// The safetensors library's error, or what the engine found wrong.
        msg: String,
    },
    /// A data file or data set that could not be loaded: missing, truncated, corrupt or of the
    /// wrong format. `path` names the file (or folder) and `msg` the problem.
    #[error("{path}: {msg}")]
    Data {
        /// The data file or folder.
        path: String,
        /// What is wrong with it.
        msg: String,
    },
    /// No GPU could be used: wgpu found no adapter, or the device could not be created. The
    /// message is wgpu's reason (which backends it tried and why each failed).
    #[error("gpu: no usable GPU adapter: {0}")]
    GpuUnavailable(String),
    /// The GPU backend failed while running `op`: a wgpu validation error (an engine bug), an
    /// out-of-memory error, a shape the kernel cannot take, or a failed readback.
    #[error("{op}: gpu {kind}: {msg}")]
    Gpu {
        /// The op that failed (for errors found when a batch of commands is submitted, the op
        /// that submitted it; `GANFORGE_GPU_SYNC=1` submits per op).
        op: &'static str,
        /// Validation, out of memory, unsupported shape, or internal.
        kind: GpuErrorKind,
        /// wgpu's or the engine's description.
        msg: String,
    },
    /// An output file (image grid, plot, checkpoint, metrics log) that could not be written
    /// or read back: `path` names the file and `msg` the problem.
    #[error("{path}: {msg}")]
    Output {
        /// The output file.
        path: String,
        /// What went wrong.
        msg: String,
    },
}

/// What kind of GPU failure an [`Error::Gpu`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuErrorKind {
    /// wgpu rejected a command (a bug in a kernel or in how the engine called it).
    Validation,
    /// The GPU ran out of memory (or a tensor exceeds the adapter's largest binding).
    OutOfMemory,
    /// A shape or size the GPU kernel cannot take.
    Unsupported,
    /// Anything else wgpu or the driver reported (device lost, a failed readback).
    Internal,
}

impl std::fmt::Display for GpuErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GpuErrorKind::Validation => "validation error",
            GpuErrorKind::OutOfMemory => "out of memory",
            GpuErrorKind::Unsupported => "unsupported",
            GpuErrorKind::Internal => "internal error",
        })
    }
}

fn hint_suffix(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!(" ({hint})")
    }
}

/// The engine's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for a [`Error::ShapeMismatch`] without a hint.
    pub fn shape_mismatch(op: &'static str, lhs: &Shape, rhs: &Shape) -> Self {
        Error::ShapeMismatch {
            op,
            lhs: lhs.clone(),
            rhs: rhs.clone(),
            hint: String::new(),
        }
    }

    /// Shorthand for [`Error::BadShape`].
    pub fn bad_shape(op: &'static str, shape: &Shape, msg: impl Into<String>) -> Self {
        Error::BadShape {
            op,
            shape: shape.clone(),
            msg: msg.into(),
        }
    }

    /// Shorthand for [`Error::Data`] about the file or folder at `path`.
    pub fn data(path: impl AsRef<std::path::Path>, msg: impl Into<String>) -> Self {
        Error::Data {
            path: path.as_ref().display().to_string(),
            msg: msg.into(),
        }
    }

    /// Shorthand for [`Error::DeviceMismatch`] between two storages' devices.
    pub fn device_mismatch(
        op: &'static str,
        lhs: &crate::backend::Storage,
        rhs: &crate::backend::Storage,
    ) -> Self {
        Error::DeviceMismatch {
            op,
            lhs: lhs.device().name(),
            rhs: rhs.device().name(),
        }
    }

    /// Shorthand for [`Error::InvalidParam`].
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidParam {
            op,
            msg: msg.into(),
        }
    }
}
