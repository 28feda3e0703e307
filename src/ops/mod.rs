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
pub use norm::{Activation, BatchNormParams, RunningStats};

use crate::profile::OpCost;
use crate::tensor::{Shape, Tensor};
use std::sync::Arc;

/// `k4 s2 p1` (`k4x3` for a non-square kernel).
fn conv_detail(kh: usize, kw: usize, stride: usize, padding: usize) -> String {
    let k = if kh == kw {
        kh.to_string()
    } else {
        format!("{kh}x{kw}")
    };
    format!("k{k} s{stride} p{padding}")
}

/// How a tensor was made: the op and its inputs (and parameters). Kept only for tensors that
/// autodiff tracks.
#[derive(Clone)]
pub enum Op {
    // ---- elementwise.rs: broadcasting binary ops and pointwise unary ops ----
    /// `lhs (+ - * /) rhs` with NumPy broadcasting.
    Binary {
        /// Which of the four.
        op: BinaryOp,
        /// The left operand.
        lhs: Tensor,
        /// The right operand.
        rhs: Tensor,
    },
    /// A pointwise function of one tensor (exp, tanh, leaky_relu, powf, ...).
    Unary {
        /// The function (with its constants, e.g. the leaky slope).
        op: UnaryOp,
        /// Its argument.
        input: Tensor,
    },

    // ---- reduce.rs ----
    /// Sum over `dims`, keeping them as size 1.
    Sum {
        /// The tensor summed.
        input: Tensor,
        /// The dims summed over.
        dims: Vec<usize>,
    },
    /// Max over `dim`, kept as size 1; `argmax` remembers where each max came from.
    Max {
        /// The tensor reduced.
        input: Tensor,
        /// The dim reduced over.
        dim: usize,
        /// For each output element, the index along `dim` of its (first) maximum.
        argmax: Arc<Vec<usize>>,
    },

    // ---- shape_ops.rs ----
    /// Same data, new shape.
    Reshape {
        /// The tensor reshaped.
        input: Tensor,
    },
    /// Dims reordered: output dim `i` is input dim `perm[i]`.
    Permute {
        /// The tensor permuted.
        input: Tensor,
        /// The permutation, `perm[i]` = the input dim that becomes output dim `i`.
        perm: Vec<usize>,
    },
    /// Size-1 (or missing leading) dims repeated to a larger shape.
    Broadcast {
        /// The tensor broadcast (the output's shape is on the output).
        input: Tensor,
    },
    /// Inputs joined along `dim`.
    Concat {
        /// The tensors joined, in order.
        inputs: Vec<Tensor>,
        /// The dim they are joined along.
        dim: usize,
    },
    /// `len` entries of `dim` starting at `start`.
    Narrow {
        /// The tensor sliced.
        input: Tensor,
        /// The dim sliced.
        dim: usize,
        /// First entry kept.
        start: usize,
        /// Entries kept.
        len: usize,
    },
    /// Zeros added before and after along `dim` (the adjoint of narrow).
    Pad {
        /// The tensor padded.
        input: Tensor,
        /// The dim padded.
        dim: usize,
        /// Zeros added before the first entry.
        before: usize,
        /// Zeros added after the last entry.
        after: usize,
    },
    /// Entries `indices` of `dim` (embedding lookup).
    IndexSelect {
        /// The tensor read from (an embedding table).
        input: Tensor,
        /// The dim indexed.
        dim: usize,
        /// The entries picked, in output order (repeats allowed).
        indices: Arc<Vec<usize>>,
    },
    /// A zero tensor with `size` entries along `dim` into which `input`'s entries are added at
    /// `indices` (the adjoint of index_select).
    IndexAdd {
        /// The values added; entry `i` along `dim` goes to `indices[i]`.
        input: Tensor,
        /// The dim indexed.
        dim: usize,
        /// Where each entry of `input` is added (repeats accumulate).
        indices: Arc<Vec<usize>>,
        /// Entries of the output along `dim`.
        size: usize,
    },

    // ---- matmul.rs ----
    /// `lhs[.., M, K] @ rhs[.., K, N]`.
    Matmul {
        /// The left factor, as stored (`[.., K, M]` when the layout says transposed).
        lhs: Tensor,
        /// The right factor, as stored (`[.., N, K]` when the layout says transposed).
        rhs: Tensor,
        /// Which factors are stored transposed.
        layout: matmul::MatmulLayout,
    },

    // ---- conv2d.rs ----
    /// 2-D cross-correlation, PyTorch's `conv2d` (no bias; bias is a broadcast add).
    Conv2d {
        /// The images, `[N, C_in, H, W]`.
        input: Tensor,
        /// The filters, `[C_out, C_in, KH, KW]`.
        weight: Tensor,
        /// Stride and padding.
        params: Conv2dParams,
    },
    /// The weight gradient of conv2d given its input and output gradient; differentiable.
    Conv2dWeightGrad {
        /// The convolution's input, `[N, C_in, H, W]`.
        input: Tensor,
        /// The gradient of its output, `[N, C_out, OH, OW]`.
        grad_output: Tensor,
        /// The convolution's stride and padding, and the kernel size to produce.
        params: Conv2dWeightGradParams,
    },

    // ---- conv_transpose2d.rs ----
    /// PyTorch's `conv_transpose2d`: the adjoint of conv2d with respect to its input.
    ConvTranspose2d {
        /// The images, `[N, C_in, H, W]`.
        input: Tensor,
        /// The filters, `[C_in, C_out, KH, KW]` (PyTorch's transposed layout).
        weight: Tensor,
        /// Stride, padding and output padding.
        params: ConvTranspose2dParams,
    },

    // ---- norm.rs ----
    /// `(x - mean_c) / sqrt(var_c + eps)` with each channel's (dim 1) batch statistics: the
    /// normalisation step of batch norm in training mode, as one fused two-pass kernel.
    BatchNormalize {
        /// The batch `x`, `[N, C, ...]`.
        input: Tensor,
        /// Added to the variance under the square root.
        eps: f32,
        /// The per-channel statistics of the forward pass, reused by the backward kernel.
        stats: Arc<norm::ChannelStats>,
    },

    /// Batch norm in training mode, normalisation, affine and activation fused:
    /// `act((x - mean_c) / sqrt(var_c + eps) * weight_c + bias_c)` (CPU; the GPU composes
    /// `BatchNormalize` with `mul`, `add` and the activation's op).
    BatchNormAffine {
        /// `x`, `[N, C, ...]`.
        input: Tensor,
        /// The per-channel scale `[C]` (1 when absent).
        weight: Option<Tensor>,
        /// The per-channel shift `[C]` (0 when absent).
        bias: Option<Tensor>,
        /// Added to the variance before the square root.
        eps: f32,
        /// Applied to the result in the same op (a following ReLU / LeakyReLU).
        activation: norm::Activation,
        /// The batch statistics the forward pass used (the backward pass reuses them).
        stats: Arc<norm::ChannelStats>,
    },

    // ---- pool.rs ----
    /// Mean over non-overlapping 2x2 windows (floor for odd sizes, like PyTorch).
    AvgPool2x2 {
        /// The images, `[N, C, H, W]`.
        input: Tensor,
    },
    /// Each pixel repeated 2x2; rows/cols past `2*H`/`2*W` (at most one) are zero.
    UpsampleNearest2x {
        /// The images, `[N, C, H, W]`.
        input: Tensor,
        /// Output height (`2*H` or `2*H + 1`).
        out_h: usize,
        /// Output width (`2*W` or `2*W + 1`).
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

    /// The FLOPs and bytes of this op producing an output of shape `out`, from the formula in
    /// the op's own file (the profiler's conventions: a multiply-add is 2 FLOPs; bytes are
    /// every input read once plus the output written once, f32; see `crate::profile`).
    pub fn cost(&self, out: &Shape) -> OpCost {
        match self {
            Op::Binary { lhs, rhs, .. } => elementwise::binary_cost(lhs.shape(), rhs.shape(), out),
            Op::Unary { op, input } => elementwise::unary_cost(*op, input.shape()),
            Op::Sum { input, .. } => reduce::sum_cost(input.shape(), out),
            Op::Max { input, .. } => reduce::max_cost(input.shape(), out),
            Op::Reshape { .. } => shape_ops::reshape_cost(),
            Op::Permute { input, .. }
            | Op::Broadcast { input }
            | Op::Narrow { input, .. }
            | Op::Pad { input, .. }
            | Op::IndexSelect { input, .. } => shape_ops::copy_cost(&[input.shape()], out),
            Op::Concat { inputs, .. } => {
                let shapes: Vec<&Shape> = inputs.iter().map(|t| t.shape()).collect();
                shape_ops::copy_cost(&shapes, out)
            }
            Op::IndexAdd { input, .. } => shape_ops::index_add_cost(input.shape(), out),
            Op::Matmul { lhs, rhs, layout } => {
                matmul::matmul_cost(lhs.shape(), rhs.shape(), *layout, out)
            }
            Op::Conv2d { input, weight, .. } => {
                conv2d::conv2d_cost(input.shape(), weight.shape(), out)
            }
            Op::Conv2dWeightGrad {
                input, grad_output, ..
            } => conv2d::conv2d_weight_grad_cost(input.shape(), grad_output.shape(), out),
            Op::ConvTranspose2d { input, weight, .. } => {
                conv_transpose2d::conv_transpose2d_cost(input.shape(), weight.shape(), out)
            }
            Op::BatchNormalize { input, .. } => norm::batch_normalize_cost(input.shape()),
            Op::BatchNormAffine { input, .. } => norm::batch_norm_affine_cost(input.shape()),
            Op::AvgPool2x2 { input } => pool::avg_pool2x2_cost(input.shape(), out),
            Op::UpsampleNearest2x { input, .. } => {
                pool::upsample_nearest2x_cost(input.shape(), out)
            }
        }
    }

    /// The parameters worth showing next to the name in a profile (`k4 s2 p1`, a matmul's
    /// layout `nt`), or an empty string.
    pub fn detail(&self) -> String {
        match self {
            Op::Matmul { layout, .. } => layout.code().to_string(),
            Op::Conv2d { weight, params, .. } => {
                let d = weight.dims();
                conv_detail(d[2], d[3], params.stride, params.padding)
            }
            Op::Conv2dWeightGrad { params, .. } => conv_detail(
                params.kernel_h,
                params.kernel_w,
                params.conv.stride,
                params.conv.padding,
            ),
            Op::ConvTranspose2d { weight, params, .. } => {
                let d = weight.dims();
                conv_detail(d[2], d[3], params.stride, params.padding)
            }
            _ => String::new(),
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
