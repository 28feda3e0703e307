//! Elementwise ops: binary arithmetic with NumPy broadcasting, and pointwise functions.
//!
//! Binary kernel: `out[i] = f(lhs[bcast_l(i)], rhs[bcast_r(i)])` where `bcast_x` maps an output
//! multi-index to the operand's offset with stride 0 on broadcast dims
//! ([`Shape::broadcast_strides`]). Backward rules (autograd/rules.rs) reduce the incoming
//! gradient back to each operand's shape with [`Tensor::sum_to`].

use crate::backend::{cpu, Storage};
use crate::error::Result;
use crate::ops::Op;
use crate::tensor::{Shape, Tensor};

/// The four broadcasting arithmetic ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    /// Name for traces and errors.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
        }
    }
}

/// Pointwise functions of one tensor. Parameters are part of the variant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Abs,
    Tanh,
    Sigmoid,
    Relu,
    /// `x` if `x > 0` else `slope * x`.
    LeakyRelu(f32),
    /// `log(1 + exp(x))`, computed as `max(x, 0) + log1p(exp(-|x|))` so it never overflows.
    Softplus,
    /// `x^p` for a constant exponent.
    Powf(f32),
    /// `min(max(x, min), max)`.
    Clamp {
        min: f32,
        max: f32,
    },
    /// `mul * x + add` (scalar arithmetic: `x + 1`, `2 * x`, `1 - x`, ...).
    Affine {
        mul: f32,
        add: f32,
    },
}

impl UnaryOp {
    /// Name for traces and errors.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Abs => "abs",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Relu => "relu",
            UnaryOp::LeakyRelu(_) => "leaky_relu",
            UnaryOp::Softplus => "softplus",
            UnaryOp::Powf(_) => "powf",
            UnaryOp::Clamp { .. } => "clamp",
            UnaryOp::Affine { .. } => "affine",
        }
    }

    /// The function itself, in f32 as the kernels compute it.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Abs => x.abs(),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Sigmoid => sigmoid(x),
            UnaryOp::Relu => x.max(0.0),
            UnaryOp::LeakyRelu(slope) => {
                if x > 0.0 {
                    x
                } else {
                    slope * x
                }
            }
            UnaryOp::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
            UnaryOp::Powf(p) => x.powf(p),
            UnaryOp::Clamp { min, max } => x.max(min).min(max),
            UnaryOp::Affine { mul, add } => mul * x + add,
        }
    }
}

/// Numerically stable logistic function (no overflow for large |x|).
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

// ---- CPU kernels ---------------------------------------------------------------------------

/// `out = op(lhs, rhs)` with broadcasting, all row-major. Fast paths for equal shapes and a
/// scalar right operand; otherwise rows along the last output dim with per-operand strides.
fn binary_cpu(
    op: BinaryOp,
    lhs: &[f32],
    ls: &Shape,
    rhs: &[f32],
    rs: &Shape,
    out_shape: &Shape,
) -> Vec<f32> {
    fn run(
        lhs: &[f32],
        ls: &Shape,
        rhs: &[f32],
        rs: &Shape,
        out_shape: &Shape,
        f: impl Fn(f32, f32) -> f32 + Sync,
    ) -> Vec<f32> {
        let n = out_shape.elem_count();
        let mut out = cpu::pool::take(n);
        if ls == rs {
            cpu::fill_indexed(&mut out, |i| f(lhs[i], rhs[i]));
            return out;
        }
        if rhs.len() == 1 && ls == out_shape {
            let r = rhs[0];
            cpu::fill_indexed(&mut out, |i| f(lhs[i], r));
            return out;
        }
        if n == 0 {
            return out;
        }
        let rank = out_shape.rank();
        let dims = out_shape.dims();
        let last = if rank == 0 { 1 } else { dims[rank - 1] };
        let (lst, rst) = (
            ls.broadcast_strides(out_shape),
            rs.broadcast_strides(out_shape),
        );
        let (l_last, r_last) = if rank == 0 {
            (0, 0)
        } else {
            (lst[rank - 1], rst[rank - 1])
        };
        cpu::for_each_row(&mut out, last, |row, out_row| {
            // Decompose the row index over the leading dims to find each operand's offset.
            let (mut lo, mut ro, mut rem) = (0, 0, row);
            for d in (0..rank.saturating_sub(1)).rev() {
                let i = rem % dims[d];
                rem /= dims[d];
                lo += i * lst[d];
                ro += i * rst[d];
            }
            for (j, o) in out_row.iter_mut().enumerate() {
                *o = f(lhs[lo + j * l_last], rhs[ro + j * r_last]);
            }
        });
        out
    }
    match op {
        BinaryOp::Add => run(lhs, ls, rhs, rs, out_shape, |a, b| a + b),
        BinaryOp::Sub => run(lhs, ls, rhs, rs, out_shape, |a, b| a - b),
        BinaryOp::Mul => run(lhs, ls, rhs, rs, out_shape, |a, b| a * b),
        BinaryOp::Div => run(lhs, ls, rhs, rs, out_shape, |a, b| a / b),
    }
}

fn unary_cpu(op: UnaryOp, x: &[f32]) -> Vec<f32> {
    // One monomorphised loop per op, so the match is outside the hot loop.
    match op {
        UnaryOp::Neg => cpu::map_unary(x, |v| -v),
        UnaryOp::Exp => cpu::map_unary(x, f32::exp),
        UnaryOp::Log => cpu::map_unary(x, f32::ln),
        UnaryOp::Sqrt => cpu::map_unary(x, f32::sqrt),
        UnaryOp::Abs => cpu::map_unary(x, f32::abs),
        UnaryOp::Tanh => cpu::map_unary(x, f32::tanh),
        UnaryOp::Sigmoid => cpu::map_unary(x, sigmoid),
        UnaryOp::Relu => cpu::map_unary(x, |v| v.max(0.0)),
        op => cpu::map_unary(x, |v| op.apply(v)),
    }
}

// ---- tensor API ----------------------------------------------------------------------------

impl Tensor {
    fn binary(&self, op: BinaryOp, rhs: &Tensor) -> Result<Tensor> {
        self.check_same_device(op.name(), rhs)?;
        let out_shape = Shape::broadcast(op.name(), self.shape(), rhs.shape())?;
        let storage = match (&*self.storage(), &*rhs.storage()) {
            (Storage::Cpu(a), Storage::Cpu(b)) => {
                Storage::Cpu(binary_cpu(op, a, self.shape(), b, rhs.shape(), &out_shape))
            }
        };
        Ok(Tensor::from_op(
            storage,
            out_shape,
            Op::Binary {
                op,
                lhs: self.clone(),
                rhs: rhs.clone(),
            },
        ))
    }

    /// `self + rhs`, broadcasting.
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Add, rhs)
    }
    /// `self - rhs`, broadcasting.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Sub, rhs)
    }
    /// `self * rhs` elementwise, broadcasting.
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Mul, rhs)
    }
    /// `self / rhs` elementwise, broadcasting.
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Div, rhs)
    }

    /// Applies a pointwise function.
    pub fn unary(&self, op: UnaryOp) -> Tensor {
        let storage = match &*self.storage() {
            Storage::Cpu(x) => Storage::Cpu(unary_cpu(op, x)),
        };
        Tensor::from_op(
            storage,
            self.shape().clone(),
            Op::Unary {
                op,
                input: self.clone(),
            },
        )
    }

    /// `-x`.
    pub fn neg(&self) -> Tensor {
        self.unary(UnaryOp::Neg)
    }
    /// `e^x`.
    pub fn exp(&self) -> Tensor {
        self.unary(UnaryOp::Exp)
    }
    /// Natural log.
    pub fn log(&self) -> Tensor {
        self.unary(UnaryOp::Log)
    }
    /// Square root.
    pub fn sqrt(&self) -> Tensor {
        self.unary(UnaryOp::Sqrt)
    }
    /// `|x|`.
    pub fn abs(&self) -> Tensor {
        self.unary(UnaryOp::Abs)
    }
    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Tensor {
        self.unary(UnaryOp::Tanh)
    }
    /// Logistic sigmoid.
    pub fn sigmoid(&self) -> Tensor {
        self.unary(UnaryOp::Sigmoid)
    }
    /// `max(x, 0)`. Its gradient at exactly 0 is taken as 0, like PyTorch's.
    pub fn relu(&self) -> Tensor {
        self.unary(UnaryOp::Relu)
    }
    /// `x` for `x > 0`, else `slope * x`.
    pub fn leaky_relu(&self, slope: f32) -> Tensor {
        self.unary(UnaryOp::LeakyRelu(slope))
    }
    /// `log(1 + e^x)`, stable for any x.
    pub fn softplus(&self) -> Tensor {
        self.unary(UnaryOp::Softplus)
    }
    /// `x^p` for a constant `p`.
    pub fn powf(&self, p: f32) -> Tensor {
        self.unary(UnaryOp::Powf(p))
    }
    /// `x * x`.
    pub fn sqr(&self) -> Result<Tensor> {
        self.mul(self)
    }
    /// Clamps into `[min, max]`; the gradient is 1 inside and 0 outside.
    pub fn clamp(&self, min: f32, max: f32) -> Tensor {
        self.unary(UnaryOp::Clamp { min, max })
    }
    /// `mul * x + add`.
    pub fn affine(&self, mul: f32, add: f32) -> Tensor {
        self.unary(UnaryOp::Affine { mul, add })
    }
    /// `x + c`.
    pub fn add_scalar(&self, c: f32) -> Tensor {
        self.affine(1.0, c)
    }
    /// `c * x`.
    pub fn mul_scalar(&self, c: f32) -> Tensor {
        self.affine(c, 0.0)
    }

    /// A constant (untracked) tensor `f(x)` elementwise: masks and signs used inside backward
    /// rules, whose own derivative is zero almost everywhere.
    pub fn map_constant(&self, f: impl Fn(f32) -> f32 + Sync) -> Tensor {
        let storage = match &*self.storage() {
            Storage::Cpu(x) => Storage::Cpu(cpu::map_unary(x, f)),
        };
        Tensor::from_storage(storage, self.shape().clone()).expect("same element count")
    }
}
