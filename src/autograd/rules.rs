//! The backward rule of every op, in one `match`.
//!
//! Given an op, its output `out` and the gradient `g` of the loss with respect to `out`, each
//! arm returns the gradient with respect to each input (in `Op::inputs` order; `None` where an
//! input gets nothing). Every rule is written with differentiable tensor ops, so when the
//! backward pass is recorded (`create_graph`), these gradients can be differentiated again.
//! Masks and signs ([`Tensor::mask`]) are constants: their own derivative is zero almost
//! everywhere.

use crate::error::Result;
use crate::ops::conv2d::{conv2d_backward, conv2d_weight_grad_backward};
use crate::ops::conv_transpose2d::conv_transpose2d_backward;
use crate::ops::{BinaryOp, MaskOp, Op, UnaryOp};
use crate::tensor::Tensor;

pub(super) fn backward(op: &Op, out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    Ok(match op {
        // d(a + b) = da + db; broadcasting in the forward becomes a sum in the backward.
        Op::Binary { op, lhs, rhs } => {
            let (gl, gr) = match op {
                BinaryOp::Add => (g.clone(), g.clone()),
                BinaryOp::Sub => (g.clone(), g.neg()),
                // d(a * b) = b da + a db
                BinaryOp::Mul => (g.mul(rhs)?, g.mul(lhs)?),
                // d(a / b) = da / b - a db / b^2
                BinaryOp::Div => (g.div(rhs)?, g.mul(lhs)?.div(&rhs.sqr()?)?.neg()),
            };
            vec![Some(gl.sum_to(lhs.shape())?), Some(gr.sum_to(rhs.shape())?)]
        }

        // y = f(x): dx = f'(x) g, with f' written through x or through the output y.
        Op::Unary { op, input: x } => {
            let y = out;
            let dx = match *op {
                UnaryOp::Neg => g.neg(),
                UnaryOp::Exp => g.mul(y)?,                    // e^x
                UnaryOp::Log => g.div(x)?,                    // 1/x
                UnaryOp::Sqrt => g.div(&y.mul_scalar(2.0))?,  // 1/(2 sqrt x)
                UnaryOp::Abs => g.mul_mask(x, MaskOp::Sign)?, // sign(x)
                UnaryOp::Tanh => g.mul(&y.sqr()?.affine(-1.0, 1.0))?, // 1 - tanh^2
                UnaryOp::Sigmoid => g.mul(&y.mul(&y.affine(-1.0, 1.0))?)?, // s (1 - s)
                UnaryOp::Relu => g.mul_mask(x, MaskOp::Relu)?,
                UnaryOp::LeakyRelu(slope) => g.mul_mask(x, MaskOp::LeakySlope(slope))?,
                UnaryOp::Softplus => g.mul(&x.sigmoid())?, // sigmoid(x)
                UnaryOp::Powf(p) => g.mul(&x.powf(p - 1.0).mul_scalar(p))?, // p x^(p-1)
                UnaryOp::Clamp { min, max } => g.mul_mask(x, MaskOp::Clamp { min, max })?,
                UnaryOp::Affine { mul, .. } => g.mul_scalar(mul),
            };
            vec![Some(dx)]
        }

        // Every input element contributed once to its output element: spread g back out.
        Op::Sum { input, .. } => vec![Some(g.broadcast_to(input.shape().clone())?)],

        // Only the (first) maximum receives the gradient.
        Op::Max { input, dim, argmax } => {
            let (outer, d, inner) = crate::ops::reduce::split_at_dim(input.shape(), *dim);
            let mut onehot = vec![0.0f32; input.elem_count()];
            for o in 0..outer {
                for i in 0..inner {
                    onehot[(o * d + argmax[o * inner + i]) * inner + i] = 1.0;
                }
            }
            let mask = Tensor::from_vec_on(onehot, input.shape().clone(), &input.device())?;
            vec![Some(g.broadcast_to(input.shape().clone())?.mul(&mask)?)]
        }

        Op::Reshape { input } => vec![Some(g.reshape(input.shape().clone())?)],

        // Undo the permutation: inverse[perm[i]] = i.
        Op::Permute { perm, .. } => {
            let mut inverse = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p] = i;
            }
            vec![Some(g.permute(&inverse)?)]
        }

        // Repeated entries each pass their gradient back: sum over the repeats.
        Op::Broadcast { input } => vec![Some(g.sum_to(input.shape())?)],

        // Each input gets its own slice of g.
        Op::Concat { inputs, dim } => {
            let mut start = 0;
            let mut grads = Vec::with_capacity(inputs.len());
            for t in inputs {
                let len = t.dims()[*dim];
                grads.push(Some(g.narrow(*dim, start, len)?));
                start += len;
            }
            grads
        }

        // narrow and pad are each other's adjoints.
        Op::Narrow {
            input,
            dim,
            start,
            len,
        } => {
            let after = input.dims()[*dim] - start - len;
            vec![Some(g.pad_dim(*dim, *start, after)?)]
        }
        Op::Pad {
            input, dim, before, ..
        } => {
            vec![Some(g.narrow(*dim, *before, input.dims()[*dim])?)]
        }

        // index_select and index_add are each other's adjoints.
        Op::IndexSelect {
            input,
            dim,
            indices,
        } => {
            vec![Some(g.index_add_into_zeros(
                *dim,
                indices,
                input.dims()[*dim],
            )?)]
        }
        Op::IndexAdd { dim, indices, .. } => vec![Some(g.index_select(*dim, indices)?)],

        // C = A B (either stored transposed): see matmul_backward for the four cases.
        Op::Matmul { lhs, rhs, layout } => {
            let (dl, dr) = crate::ops::matmul::matmul_backward(lhs, rhs, *layout, g)?;
            vec![Some(dl), Some(dr)]
        }

        // Convolutions: the three ops below are closed under differentiation (see their files).
        // Only tracked operands get a gradient: a data batch needs none, and its gradient is the
        // costliest (a full transposed convolution).
        Op::Conv2d {
            input,
            weight,
            params,
        } => {
            let (dx, dw) = conv2d_backward(input, weight, *params, g)?;
            vec![dx, dw]
        }
        Op::ConvTranspose2d {
            input,
            weight,
            params,
        } => {
            let (dx, dw) = conv_transpose2d_backward(input, weight, *params, g)?;
            vec![dx, dw]
        }
        Op::Conv2dWeightGrad {
            input,
            grad_output,
            params,
        } => {
            let (dx, dgy) = conv2d_weight_grad_backward(input, grad_output, *params, g)?;
            vec![dx, dgy]
        }

        // x_hat = (x - mean) * invstd over the batch: see ops/norm.rs for the derivation.
        Op::BatchNormalize { input, eps, stats } => {
            vec![Some(crate::ops::norm::batch_normalize_backward(
                input, out, *eps, stats, g,
            )?)]
        }

        // y = act(x_hat * w + b): g masked by act', then dw = sum g x_hat, db = sum g, dx
        // through x_hat (ops/norm.rs).
        Op::BatchNormAffine {
            input,
            weight,
            bias,
            eps,
            activation,
            stats,
        } => crate::ops::norm::batch_norm_affine_backward(
            input,
            weight.as_ref(),
            bias.as_ref(),
            *eps,
            *activation,
            stats,
            g,
        )?,

        // Pooling and upsampling are adjoint up to the factor 4 of the mean.
        Op::AvgPool2x2 { input } => {
            let (_, _, h, w) = input.shape().dims4("avg_pool2x2 backward")?;
            vec![Some(g.upsample_nearest2x_to(h, w)?.mul_scalar(0.25))]
        }
        Op::UpsampleNearest2x { .. } => vec![Some(g.avg_pool2x2()?.mul_scalar(4.0))],
    })
}
