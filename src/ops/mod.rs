//! The op table. Every differentiable operation the engine records is one variant of [`Op`];
//! its home file (listed beside each group) holds its parameters, shape rule, CPU kernel and
//! the function the backward rule calls. The backward rules themselves are one `match` in
//! `src/autograd/rules.rs`, each written with these same ops, so gradients are differentiable.
//!
//! Everything else (linear, batch norm, losses, dropout, mean, var, ...) is *composed* from
//! these primitives and needs no rule of its own.

pub mod conv2d;
pub mod conv_transpose2d;
pub mod elementwise;
pub mod inplace;
pub mod losses;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod shape_ops;

pub use conv2d::{Conv2dParams, Conv2dWeightGradParams};
pub use conv_transpose2d::ConvTranspose2dParams;
pub use elementwise::{BinaryOp, MaskOp, UnaryOp};
pub use matmul::MatmulLayout;
pub use norm::{BatchNormParams, RunningStats};

use crate::tensor::Tensor;
use std::sync::Arc;

/// How a tensor was made: the op and its inputs (and parameters). Kept only for tensors that
/// autodiff tracks.
#[derive(Clone)]
pub enum Op {
    // ---- elementwise.rs: broadcasting binary ops and pointwise unary ops ----
    /// `lhs (+ - * /) rhs` with NumPy broadcasting.
    Binary {
        op: BinaryOp,
        lhs: Tensor,
        rhs: Tensor,
    },
    /// A pointwise function of one tensor (exp, tanh, leaky_relu, powf, ...).
    Unary { op: UnaryOp, input: Tensor },

    // ---- reduce.rs ----
    /// Sum over `dims`, keeping them as size 1.
    Sum { input: Tensor, dims: Vec<usize> },
    /// Max over `dim`, kept as size 1; `argmax` remembers where each max came from.
    Max {
        input: Tensor,
        dim: usize,
        argmax: Arc<Vec<usize>>,
    },

    // ---- shape_ops.rs ----
    /// Same data, new shape.
    Reshape { input: Tensor },
    /// Dims reordered: output dim `i` is input dim `perm[i]`.
    Permute { input: Tensor, perm: Vec<usize> },
    /// Size-1 (or missing leading) dims repeated to a larger shape.
    Broadcast { input: Tensor },
    /// Inputs joined along `dim`.
    Concat { inputs: Vec<Tensor>, dim: usize },
    /// `len` entries of `dim` starting at `start`.
    Narrow {
        input: Tensor,
        dim: usize,
        start: usize,
        len: usize,
    },
    /// Zeros added before and after along `dim` (the adjoint of narrow).
    Pad {
        input: Tensor,
        dim: usize,
        before: usize,
        after: usize,
    },
    /// Entries `indices` of `dim` (embedding lookup).
    IndexSelect {
        input: Tensor,
        dim: usize,
        indices: Arc<Vec<usize>>,
    },
    /// A zero tensor with `size` entries along `dim` into which `input`'s entries are added at
    /// `indices` (the adjoint of index_select).
    IndexAdd {
        input: Tensor,
        dim: usize,
        indices: Arc<Vec<usize>>,
        size: usize,
    },

    // ---- matmul.rs ----
    /// `lhs[.., M, K] @ rhs[.., K, N]`.
    Matmul {
        lhs: Tensor,
        rhs: Tensor,
        layout: matmul::MatmulLayout,
    },

    // ---- conv2d.rs ----
    /// 2-D cross-correlation, PyTorch's `conv2d` (no bias; bias is a broadcast add).
    Conv2d {
        input: Tensor,
        weight: Tensor,
        params: Conv2dParams,
    },
    /// The weight gradient of conv2d given its input and output gradient; differentiable.
    Conv2dWeightGrad {
        input: Tensor,
        grad_output: Tensor,
        params: Conv2dWeightGradParams,
    },

    // ---- conv_transpose2d.rs ----
    /// PyTorch's `conv_transpose2d`: the adjoint of conv2d with respect to its input.
    ConvTranspose2d {
        input: Tensor,
        weight: Tensor,
        params: ConvTranspose2dParams,
    },

    // ---- norm.rs ----
    /// `(x - mean_c) / sqrt(var_c + eps)` with each channel's (dim 1) batch statistics: the
    /// normalisation step of batch norm in training mode, as one fused two-pass kernel.
    BatchNormalize {
        input: Tensor,
        eps: f32,
        stats: Arc<norm::ChannelStats>,
    },

    /// Batch norm in training mode, normalisation and affine fused:
    /// `(x - mean_c) / sqrt(var_c + eps) * weight_c + bias_c` (CPU; the GPU composes
    /// `BatchNormalize` with `mul` and `add`).
    BatchNormAffine {
        input: Tensor,
        weight: Option<Tensor>,
        bias: Option<Tensor>,
        eps: f32,
        stats: Arc<norm::ChannelStats>,
    },

    // ---- pool.rs ----
    /// Mean over non-overlapping 2x2 windows (floor for odd sizes, like PyTorch).
    AvgPool2x2 { input: Tensor },
    /// Each pixel repeated 2x2; rows/cols past `2*H`/`2*W` (at most one) are zero.
    UpsampleNearest2x {
        input: Tensor,
        out_h: usize,
        out_w: usize,
    },
}

impl Op {
    /// The tensors this op read, in the order its backward rule returns their gradients.
    pub fn inputs(&self) -> Vec<&Tensor> {
        match self {
            Op::Binary { lhs, rhs, .. } | Op::Matmul { lhs, rhs, .. } => vec![lhs, rhs],
            Op::Conv2d { input, weight, .. } | Op::ConvTranspose2d { input, weight, .. } => {
                vec![input, weight]
            }
            Op::Conv2dWeightGrad {
                input, grad_output, ..
            } => vec![input, grad_output],
            Op::Concat { inputs, .. } => inputs.iter().collect(),
            Op::BatchNormAffine {
                input,
                weight,
                bias,
                ..
            } => std::iter::once(input)
                .chain(weight.as_ref())
                .chain(bias.as_ref())
                .collect(),
            Op::Unary { input, .. }
            | Op::Sum { input, .. }
            | Op::Max { input, .. }
            | Op::Reshape { input }
            | Op::Permute { input, .. }
            | Op::Broadcast { input }
            | Op::Narrow { input, .. }
            | Op::Pad { input, .. }
            | Op::IndexSelect { input, .. }
            | Op::IndexAdd { input, .. }
            | Op::BatchNormalize { input, .. }
            | Op::AvgPool2x2 { input }
            | Op::UpsampleNearest2x { input, .. } => vec![input],
        }
    }

    /// A short name for traces and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Binary { op, .. } => op.name(),
            Op::Unary { op, .. } => op.name(),
            Op::Sum { .. } => "sum",
            Op::Max { .. } => "max",
            Op::Reshape { .. } => "reshape",
            Op::Permute { .. } => "permute",
            Op::Broadcast { .. } => "broadcast",
            Op::Concat { .. } => "concat",
            Op::Narrow { .. } => "narrow",
            Op::Pad { .. } => "pad",
            Op::IndexSelect { .. } => "index_select",
            Op::IndexAdd { .. } => "index_add",
            Op::Matmul { .. } => "matmul",
            Op::Conv2d { .. } => "conv2d",
            Op::Conv2dWeightGrad { .. } => "conv2d_weight_grad",
            Op::ConvTranspose2d { .. } => "conv_transpose2d",
            Op::BatchNormalize { .. } => "batch_normalize",
            Op::BatchNormAffine { .. } => "batch_norm",
            Op::AvgPool2x2 { .. } => "avg_pool2x2",
            Op::UpsampleNearest2x { .. } => "upsample_nearest2x",
        }
    }
}
