//! Elementwise ops: binary arithmetic with NumPy broadcasting, and pointwise functions.
//!
//! Binary kernel: `out[i] = f(lhs[bcast_l(i)], rhs[bcast_r(i)])` where `bcast_x` maps an output
//! multi-index to the operand's offset with stride 0 on broadcast dims
//! ([`Shape::broadcast_strides`]). Backward rules (autograd/rules.rs) reduce the incoming
//! gradient back to each operand's shape with [`Tensor::sum_to`].
//!
//! GPU kernels: `shaders/binary.wgsl` (strides in the parameter block, dims merged on the host)
//! and `shaders/unary.wgsl` (one pipeline per function, chosen by an override constant; the
//! masks of [`MaskOp`] are extra functions of the same shader).

use crate::backend::gpu::params::{BinaryParams, UnaryParams};
use crate::backend::gpu::{
    groups_for, pack8, too_many_dims, Access, KernelSpec, Shader, MAX_DIMS, WORKGROUP,
};
use crate::backend::{cpu, merge_dims, GpuBuffer, Storage};
use crate::error::{Error, Result};
use crate::ops::Op;
use crate::profile::{self, OpCost, OpInfo};
use crate::tensor::{Shape, Tensor};

static BINARY_WGSL: Shader = Shader {
    name: "binary",
    source: include_str!("../../shaders/binary.wgsl"),
};
const BINARY: KernelSpec = KernelSpec {
    shader: &BINARY_WGSL,
    entry: "binary",
    storage: &[(0, Access::Read), (1, Access::Read), (2, Access::ReadWrite)],
    uniform: 3,
};
static UNARY_WGSL: Shader = Shader {
    name: "unary",
    source: include_str!("../../shaders/unary.wgsl"),
};
const UNARY: KernelSpec = KernelSpec {
    shader: &UNARY_WGSL,
    entry: "unary",
    storage: &[(0, Access::Read), (1, Access::ReadWrite)],
    uniform: 2,
};

/// The four broadcasting arithmetic ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `lhs + rhs`.
    Add,
    /// `lhs - rhs`.
    Sub,
    /// `lhs * rhs` (elementwise).
    Mul,
    /// `lhs / rhs` (elementwise).
    Div,
}

impl BinaryOp {
    /// The `OP` constant of `shaders/binary.wgsl`.
    fn gpu_code(self) -> f64 {
        match self {
            BinaryOp::Add => 0.0,
            BinaryOp::Sub => 1.0,
            BinaryOp::Mul => 2.0,
            BinaryOp::Div => 3.0,
        }
    }

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
    /// `-x`.
    Neg,
    /// `e^x`.
    Exp,
    /// The natural logarithm `ln x`.
    Log,
    /// `sqrt(x)`.
    Sqrt,
    /// `|x|`.
    Abs,
    /// `tanh(x)`.
    Tanh,
    /// The logistic function `1 / (1 + e^-x)`, computed without overflow for large `|x|`.
    Sigmoid,
    /// `max(x, 0)`.
    Relu,
    /// `x` if `x > 0` else `slope * x`.
    LeakyRelu(f32),
    /// `log(1 + exp(x))`, computed as `max(x, 0) + log1p(exp(-|x|))` so it never overflows.
    Softplus,
    /// `x^p` for a constant exponent.
    Powf(f32),
    /// `min(max(x, min), max)`.
    Clamp {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// `mul * x + add` (scalar arithmetic: `x + 1`, `2 * x`, `1 - x`, ...).
    Affine {
        /// The factor.
        mul: f32,
        /// The offset added after the product.
        add: f32,
    },
}

impl UnaryOp {
    /// The `OP` constant of `shaders/unary.wgsl` and the parameters `(a, b)`.
    fn gpu_code(self) -> (f64, f32, f32) {
        match self {
            UnaryOp::Neg => (0.0, 0.0, 0.0),
            UnaryOp::Exp => (1.0, 0.0, 0.0),
            UnaryOp::Log => (2.0, 0.0, 0.0),
            UnaryOp::Sqrt => (3.0, 0.0, 0.0),
            UnaryOp::Abs => (4.0, 0.0, 0.0),
            UnaryOp::Tanh => (5.0, 0.0, 0.0),
            UnaryOp::Sigmoid => (6.0, 0.0, 0.0),
            UnaryOp::Relu => (7.0, 0.0, 0.0),
            UnaryOp::LeakyRelu(slope) => (8.0, slope, 0.0),
            UnaryOp::Softplus => (9.0, 0.0, 0.0),
            UnaryOp::Powf(p) => (10.0, p, 0.0),
            UnaryOp::Clamp { min, max } => (11.0, min, max),
            UnaryOp::Affine { mul, add } => (12.0, mul, add),
        }
    }

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

/// The constant masks that backward rules multiply gradients by (autograd/rules.rs): named
/// kinds rather than closures, so that every device has a kernel for them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaskOp {
    /// `1` where `x > 0`, else `0` (relu's derivative; 0 at 0 like PyTorch).
    Relu,
    /// `1` where `x > 0`, else `slope` (leaky relu's derivative).
    LeakySlope(f32),
    /// `-1`, `0` or `1` (abs's derivative; 0 at 0 like PyTorch's `sign`).
    Sign,
    /// `1` where `min <= x <= max`, else `0` (clamp's derivative).
    Clamp {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
}

impl MaskOp {
    /// The mask value for one element, as every kernel computes it.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            MaskOp::Relu => (x > 0.0) as u8 as f32,
            MaskOp::LeakySlope(slope) => {
                if x > 0.0 {
                    1.0
                } else {
                    slope
                }
            }
            MaskOp::Sign => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
            MaskOp::Clamp { min, max } => (x >= min && x <= max) as u8 as f32,
        }
    }

    /// Name for traces and profiles (`relu`, `leaky`, `sign`, `clamp`).
    pub fn name(self) -> &'static str {
        match self {
            MaskOp::Relu => "relu",
            MaskOp::LeakySlope(_) => "leaky",
            MaskOp::Sign => "sign",
            MaskOp::Clamp { .. } => "clamp",
        }
    }

    /// The `OP` constant of `shaders/unary.wgsl` and the parameters `(a, b)`.
    fn gpu_code(self) -> (f64, f32, f32) {
        match self {
            MaskOp::Relu => (13.0, 0.0, 0.0),
            MaskOp::LeakySlope(slope) => (14.0, slope, 0.0),
            MaskOp::Sign => (15.0, 0.0, 0.0),
            MaskOp::Clamp { min, max } => (16.0, min, max),
        }
    }
}

// ---- cost (profiler) -------------------------------------------------------------------------

impl UnaryOp {
    /// FLOPs per element, counting the operations of the formula in [`UnaryOp::apply`] (a
    /// transcendental such as `exp`, `ln`, `tanh`, `sqrt`, `powf` counts as one).
    pub fn flops_per_element(self) -> f64 {
        match self {
            UnaryOp::Neg
            | UnaryOp::Exp
            | UnaryOp::Log
            | UnaryOp::Sqrt
            | UnaryOp::Abs
            | UnaryOp::Tanh
            | UnaryOp::Relu
            | UnaryOp::Powf(_) => 1.0,
            // x > 0 ? x : slope * x
            UnaryOp::LeakyRelu(_) | UnaryOp::Clamp { .. } | UnaryOp::Affine { .. } => 2.0,
            // 1 / (1 + exp(-x))
            UnaryOp::Sigmoid => 3.0,
            // max(x, 0) + ln_1p(exp(-|x|))
            UnaryOp::Softplus => 5.0,
        }
    }
}

/// Cost of a broadcasting binary op: one FLOP per output element; both operands read as
/// stored (a broadcast operand counts its own elements), the output written.
pub fn binary_cost(lhs: &Shape, rhs: &Shape, out: &Shape) -> OpCost {
    OpCost::pointwise(1.0, &[lhs, rhs], out)
}

/// Cost of a pointwise function: [`UnaryOp::flops_per_element`] per element, one read and one
/// write per element.
pub fn unary_cost(op: UnaryOp, x: &Shape) -> OpCost {
    OpCost::pointwise(op.flops_per_element(), &[x], x)
}

/// Cost of a mask ([`MaskOp`]): one comparison per element, one read and one write.
pub fn mask_cost(x: &Shape) -> OpCost {
    OpCost::pointwise(1.0, &[x], x)
}

/// Cost of [`Tensor::mul_mask`]'s fused pass: a comparison and a multiply per element; `g`
/// and `x` read, the product written.
pub fn mul_mask_cost(x: &Shape) -> OpCost {
    OpCost::pointwise(2.0, &[x, x], x)
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

/// `tanh(x)` in plain f32 arithmetic with no branches, so that a loop over it vectorises (glibc's
/// `tanhf` is a scalar call: 6.3 ms for W2's 786k generator outputs on 2 cores). Cephes'
/// `tanhf`: for `|x| < 0.625` the odd polynomial `x + x^3 P(x^2)`; above, `1 - 2 / (e^{2|x|} + 1)`
/// with the sign of x, where the exponential is Cephes' `expf` (range reduction by ln 2 in two
/// parts, a degree-6 polynomial, the power of two put into the exponent bits). Inputs past 10
/// give +-1 (tanh(10) rounds to 1 in f32); NaN stays NaN. Within 2 ulp of the exact value
/// (checked against f64 in the tests below and in tests/ops_pointwise_reduce_shape.rs).
pub fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    let z = x * x;
    let small =
        ((((-5.704_988_7e-3 * z + 2.063_908_8e-2) * z - 5.373_971_6e-2) * z + 1.333_144_2e-1) * z
            - 3.333_328e-1)
            * z
            * x
            + x;
    // e^{2a} for 2a in [0, 20]: 2a = n ln 2 + r, |r| <= ln 2 / 2, e^{2a} = 2^n e^r.
    let t = 2.0 * a.min(10.0);
    // floor by truncation (t >= 0), which SSE2 has; f32::floor would be a libm call per value.
    let n = (t * std::f32::consts::LOG2_E + 0.5) as i32;
    let nf = n as f32;
    let r = t - nf * 0.693_359_4 - nf * -2.121_944_4e-4;
    let er = (((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 5.0e-1)
        * r
        * r
        + r
        + 1.0;
    let e = er * f32::from_bits(((n + 127) << 23) as u32);
    let large = 1.0 - 2.0 / (e + 1.0);
    // The sign of x on both branches (the polynomial alone turns -0 into +0).
    let y = if a < 0.625 { small } else { large }.copysign(x);
    if x.is_nan() {
        x
    } else {
        y
    }
}

// ---- CPU kernels ---------------------------------------------------------------------------

/// `out = op(lhs, rhs)` with broadcasting, all row-major. Same shapes: one zipped loop.
/// Otherwise the dims are merged first ([`merge_dims`]: `[N, C, H, W] op [1, C, 1, 1]`
/// becomes `[N, C, H*W] op [_, C, _]`), then each row of the last merged dim runs one of three
/// tight loops: both operands contiguous, or one of them constant along the row.
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
        if n == 0 {
            return out;
        }
        if ls == rs {
            cpu::zip_map(&mut out, lhs, rhs, f);
            return out;
        }
        let (dims, strides) = merge_dims(
            out_shape.dims(),
            &[
                ls.broadcast_strides(out_shape),
                rs.broadcast_strides(out_shape),
            ],
        );
        let (lst, rst) = (&strides[0], &strides[1]);
        let rank = dims.len();
        let last = dims[rank - 1];
        let (l_last, r_last) = (lst[rank - 1], rst[rank - 1]);
        cpu::for_each_row(&mut out, last, |row, out_row| {
            // Decompose the row index over the leading dims to find each operand's offset.
            let (mut lo, mut ro, mut rem) = (0, 0, row);
            for d in (0..rank - 1).rev() {
                let i = rem % dims[d];
                rem /= dims[d];
                lo += i * lst[d];
                ro += i * rst[d];
            }
            match (l_last, r_last) {
                (1, 1) => {
                    let (a, b) = (&lhs[lo..lo + last], &rhs[ro..ro + last]);
                    for ((o, &a), &b) in out_row.iter_mut().zip(a).zip(b) {
                        *o = f(a, b);
                    }
                }
                (1, 0) => {
                    let b = rhs[ro];
                    for (o, &a) in out_row.iter_mut().zip(&lhs[lo..lo + last]) {
                        *o = f(a, b);
                    }
                }
                (0, 1) => {
                    let a = lhs[lo];
                    for (o, &b) in out_row.iter_mut().zip(&rhs[ro..ro + last]) {
                        *o = f(a, b);
                    }
                }
                _ => {
                    for (j, o) in out_row.iter_mut().enumerate() {
                        *o = f(lhs[lo + j * l_last], rhs[ro + j * r_last]);
                    }
                }
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

/// [`MaskOp`] values of `x`, one monomorphised loop per kind.
fn map_mask(x: &[f32], kind: MaskOp) -> Vec<f32> {
    match kind {
        MaskOp::Relu => cpu::map_unary(x, |v| (v > 0.0) as u8 as f32),
        MaskOp::LeakySlope(slope) => cpu::map_unary(x, move |v| if v > 0.0 { 1.0 } else { slope }),
        kind => cpu::map_unary(x, move |v| kind.apply(v)),
    }
}

fn unary_cpu(op: UnaryOp, x: &[f32]) -> Vec<f32> {
    // One monomorphised loop per op, so the match is outside the hot loop. Closures that use a
    // parameter (the slope) take it by value (`move`): captured by reference, it is reloaded
    // through a pointer on every element and the loop stays scalar (leaky_relu ran 14x slower
    // than relu).
    match op {
        UnaryOp::Neg => cpu::map_unary(x, |v| -v),
        UnaryOp::Exp => cpu::map_unary(x, f32::exp),
        UnaryOp::Log => cpu::map_unary(x, f32::ln),
        UnaryOp::Sqrt => cpu::map_unary(x, f32::sqrt),
        UnaryOp::Abs => cpu::map_unary(x, f32::abs),
        UnaryOp::Tanh => cpu::map_unary(x, tanh_f32),
        UnaryOp::Sigmoid => cpu::map_unary(x, sigmoid),
        UnaryOp::Relu => cpu::map_unary(x, |v| v.max(0.0)),
        UnaryOp::LeakyRelu(slope) => {
            cpu::map_unary(x, move |v| if v > 0.0 { v } else { slope * v })
        }
        op => cpu::map_unary(x, move |v| op.apply(v)),
    }
}

// ---- GPU kernels ---------------------------------------------------------------------------

/// `out = op(lhs, rhs)` with broadcasting: one thread per output element, each operand read
/// through its strides (0 on broadcast dims) after merging contiguous dims.
fn binary_gpu(
    op: BinaryOp,
    lhs: &GpuBuffer,
    ls: &Shape,
    rhs: &GpuBuffer,
    rs: &Shape,
    out_shape: &Shape,
) -> Result<GpuBuffer> {
    let dev = lhs.device();
    let n = out_shape.elem_count();
    let (dims, strides) = merge_dims(
        out_shape.dims(),
        &[
            ls.broadcast_strides(out_shape),
            rs.broadcast_strides(out_shape),
        ],
    );
    if dims.len() > MAX_DIMS {
        return Err(too_many_dims(op.name(), dims.len()));
    }
    let out = dev.alloc(op.name(), n);
    let params = BinaryParams {
        n: n as u32,
        rank: dims.len() as u32,
        dims: pack8(&dims),
        lhs_strides: pack8(&strides[0]),
        rhs_strides: pack8(&strides[1]),
        ..Default::default()
    };
    dev.dispatch(
        op.name(),
        &BINARY,
        &[("OP", op.gpu_code())],
        &params,
        &[lhs, rhs, &out],
        groups_for(n, WORKGROUP),
    );
    dev.check(op.name())?;
    Ok(out)
}

/// `out[i] = f(x[i])` for the function `code` of `shaders/unary.wgsl`. Cannot fail here: an
/// error is kept on the device for its next check.
fn unary_gpu(name: &'static str, x: &GpuBuffer, (code, a, b): (f64, f32, f32)) -> GpuBuffer {
    let dev = x.device();
    let out = dev.alloc(name, x.len());
    let params = UnaryParams {
        n: x.len() as u32,
        a,
        b,
        pad0: 0,
    };
    dev.dispatch(
        name,
        &UNARY,
        &[("OP", code)],
        &params,
        &[x, &out],
        groups_for(x.len(), WORKGROUP),
    );
    out
}

// ---- tensor API ----------------------------------------------------------------------------

impl Tensor {
    fn binary(&self, op: BinaryOp, rhs: &Tensor) -> Result<Tensor> {
        self.check_same_device(op.name(), rhs)?;
        let out_shape = Shape::broadcast(op.name(), self.shape(), rhs.shape())?;
        let _t = profile::op(op.name());
        let storage = match (&*self.storage(), &*rhs.storage()) {
            (Storage::Cpu(a), Storage::Cpu(b)) => {
                Storage::Cpu(binary_cpu(op, a, self.shape(), b, rhs.shape(), &out_shape))
            }
            (Storage::Gpu(a), Storage::Gpu(b)) => {
                Storage::Gpu(binary_gpu(op, a, self.shape(), b, rhs.shape(), &out_shape)?)
            }
            (a, b) => return Err(Error::device_mismatch(op.name(), a, b)),
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

    /// Applies a pointwise function. (On a GPU, a failure is kept on the device and returned
    /// by the next fallible op, since this signature cannot fail.)
    pub fn unary(&self, op: UnaryOp) -> Tensor {
        let _t = profile::op(op.name());
        let storage = match &*self.storage() {
            Storage::Cpu(x) => Storage::Cpu(unary_cpu(op, x)),
            Storage::Gpu(x) => Storage::Gpu(unary_gpu(op.name(), x, op.gpu_code())),
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

    /// A constant (untracked) tensor `f(x)` elementwise, for any closure. On the GPU this
    /// copies to the host and back (a closure cannot run in a shader); the backward rules use
    /// [`Tensor::mask`], which has a kernel.
    pub fn map_constant(&self, f: impl Fn(f32) -> f32 + Sync) -> Tensor {
        let _t = profile::op("map_constant");
        profile::describe(|| {
            OpInfo::new(
                "map_constant",
                &[self.shape()],
                self.shape(),
                OpCost::copy(&[self.shape()], self.shape()),
            )
        });
        let storage = match &*self.storage() {
            Storage::Cpu(x) => Storage::Cpu(cpu::map_unary(x, f)),
            Storage::Gpu(x) => {
                let dev = x.device();
                let host = match x.to_vec() {
                    Ok(v) => v,
                    Err(e) => {
                        dev.keep_error(e);
                        vec![f32::NAN; x.len()]
                    }
                };
                Storage::Gpu(dev.upload("map_constant", &cpu::map_unary(&host, f)))
            }
        };
        Tensor::from_storage(storage, self.shape().clone()).expect("same element count")
    }

    /// A constant (untracked) mask of `x` (see [`MaskOp`]): what backward rules multiply the
    /// incoming gradient by. Its own derivative is zero almost everywhere.
    pub fn mask(&self, kind: MaskOp) -> Tensor {
        let _t = profile::op("mask");
        profile::describe(|| {
            let mut info = OpInfo::new(
                "mask",
                &[self.shape()],
                self.shape(),
                mask_cost(self.shape()),
            );
            info.detail = kind.name().to_string();
            info
        });
        let storage = match &*self.storage() {
            Storage::Cpu(x) => Storage::Cpu(map_mask(x, kind)),
            Storage::Gpu(x) => Storage::Gpu(unary_gpu("mask", x, kind.gpu_code())),
        };
        Tensor::from_storage(storage, self.shape().clone()).expect("same element count")
    }

    /// `self * x.mask(kind)`: an activation's backward (`g * f'(x)`). When the product is not
    /// recorded (the usual first-order backward) the CPU computes it in one pass, without the
    /// mask tensor; otherwise (second order, or on the GPU) it is the recorded `mul`.
    pub fn mul_mask(&self, x: &Tensor, kind: MaskOp) -> Result<Tensor> {
        let recorded = crate::autograd::is_grad_enabled() && self.is_tracked();
        if !recorded && self.shape() == x.shape() {
            if let (Storage::Cpu(g), Storage::Cpu(xv)) = (&*self.storage(), &*x.storage()) {
                let _t = profile::op("mul_mask");
                profile::describe(|| {
                    let mut info = OpInfo::new(
                        "mul_mask",
                        &[self.shape(), x.shape()],
                        self.shape(),
                        mul_mask_cost(self.shape()),
                    );
                    info.detail = kind.name().to_string();
                    info
                });
                let mut out = cpu::pool::take(g.len());
                match kind {
                    MaskOp::Relu => {
                        cpu::zip_map(&mut out, g, xv, |g, x| if x > 0.0 { g } else { 0.0 })
                    }
                    MaskOp::LeakySlope(slope) => {
                        cpu::zip_map(
                            &mut out,
                            g,
                            xv,
                            move |g, x| if x > 0.0 { g } else { slope * g },
                        )
                    }
                    kind => cpu::zip_map(&mut out, g, xv, move |g, x| g * kind.apply(x)),
                }
                return Tensor::from_storage(Storage::Cpu(out), self.shape().clone());
            }
        }
        self.mul(&x.mask(kind))
    }
}

#[cfg(test)]
mod tests {
    use super::tanh_f32;

    /// Distance in units in the last place between two finite f32 of the same sign.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    /// The vectorisable tanh against f64's on a dense sweep of [-20, 20] (both branches and
    /// their seam at 0.625, the clamp at 10), tiny and special values.
    #[test]
    fn tanh_f32_is_within_2_ulp_of_f64() {
        let mut worst = (0, 0.0f32);
        let steps = 400_000;
        for i in 0..=steps {
            let x = -20.0 + 40.0 * i as f32 / steps as f32;
            for x in [x, x.next_up(), x.next_down()] {
                let want = (x as f64).tanh() as f32;
                let got = tanh_f32(x);
                assert_eq!(
                    got.is_sign_negative(),
                    want.is_sign_negative(),
                    "sign at {x}"
                );
                let u = ulps(got, want);
                if u > worst.0 {
                    worst = (u, x);
                }
            }
        }
        assert!(worst.0 <= 2, "{} ulp at x = {}", worst.0, worst.1);
        for x in [
            0.625f32,
            0.625f32.next_down(),
            1e-30,
            -1e-30,
            1e-45,
            9.0,
            10.0,
            80.0,
            -80.0,
        ] {
            let want = (x as f64).tanh() as f32;
            assert!(
                ulps(tanh_f32(x), want) <= 2,
                "x = {x}: {} vs {want}",
                tanh_f32(x)
            );
        }
        assert_eq!(tanh_f32(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(tanh_f32(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(tanh_f32(f32::INFINITY), 1.0);
        assert_eq!(tanh_f32(f32::NEG_INFINITY), -1.0);
        assert!(tanh_f32(f32::NAN).is_nan());
    }
}
