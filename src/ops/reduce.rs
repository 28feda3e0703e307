//! Reductions: sum over any set of dims and max over one dim are the primitives; mean, var,
//! argmax and `sum_to` (the adjoint of broadcasting) are built on them.
//!
//! Sum kernel: `out[j] = sum_{i : keep(i) = j} x[i]`, where `keep` zeroes the reduced dims of
//! the multi-index. Accumulated in f64, so the order of the sum does not change the f32 result.
//! GPU kernels (`shaders/reduce.wgsl`): one workgroup per output element with a tree reduction
//! in workgroup memory (f32), or one thread per output for short reductions; max carries
//! (value, index) pairs through the same tree.

use crate::backend::gpu::params::{MaxParams, SumParams};
use crate::backend::gpu::{
    groups_for, merge_dims, pack8, too_many_dims, Access, KernelSpec, Shader, MAX_DIMS, WORKGROUP,
};
use crate::backend::{cpu, GpuBuffer, Storage};
use crate::error::{Error, Result};
use crate::ops::Op;
use crate::profile::{self, OpCost};
use crate::tensor::{Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

static REDUCE_WGSL: Shader = Shader {
    name: "reduce",
    source: include_str!("../../shaders/reduce.wgsl"),
};
const SUM_ROWS: KernelSpec = KernelSpec {
    shader: &REDUCE_WGSL,
    entry: "sum_rows",
    storage: &[(0, Access::Read), (1, Access::ReadWrite)],
    uniform: 3,
};
const SUM_SMALL: KernelSpec = KernelSpec {
    shader: &REDUCE_WGSL,
    entry: "sum_small",
    storage: &[(0, Access::Read), (1, Access::ReadWrite)],
    uniform: 3,
};
const MAX_DIM: KernelSpec = KernelSpec {
    shader: &REDUCE_WGSL,
    entry: "max_dim",
    storage: &[
        (0, Access::Read),
        (1, Access::ReadWrite),
        (2, Access::ReadWrite),
    ],
    uniform: 4,
};

/// Reductions at most this long take one thread per output instead of a workgroup.
const SMALL_REDUCTION: usize = 64;

/// GPU sum of `x` (shape `shape`) over the sorted `dims`, kept as size 1.
pub(crate) fn sum_gpu(x: &GpuBuffer, shape: &Shape, dims: &[usize]) -> Result<GpuBuffer> {
    let dev = x.device();
    let strides = shape.strides();
    let (mut kept, mut kept_str, mut red, mut red_str) = (vec![], vec![], vec![], vec![]);
    for (d, &size) in shape.dims().iter().enumerate() {
        if dims.contains(&d) {
            red.push(size);
            red_str.push(strides[d]);
        } else {
            kept.push(size);
            kept_str.push(strides[d]);
        }
    }
    let out_count: usize = kept.iter().product();
    let red_count: usize = red.iter().product();
    if red_count == 0 || shape.elem_count() == 0 {
        return Ok(dev.zeros("sum", out_count));
    }
    let (kept, kept_str) = merge_dims(&kept, &[kept_str]);
    let (red, red_str) = merge_dims(&red, &[red_str]);
    if kept.len().max(red.len()) > MAX_DIMS {
        return Err(too_many_dims("sum", kept.len().max(red.len())));
    }
    let out = dev.alloc("sum", out_count);
    let params = SumParams {
        out_count: out_count as u32,
        red_count: red_count as u32,
        kept_rank: kept.len() as u32,
        red_rank: red.len() as u32,
        kept_dims: pack8(&kept),
        kept_strides: pack8(&kept_str[0]),
        red_dims: pack8(&red),
        red_strides: pack8(&red_str[0]),
    };
    if red_count <= SMALL_REDUCTION {
        let groups = groups_for(out_count, WORKGROUP);
        dev.dispatch("sum", &SUM_SMALL, &[], &params, &[x, &out], groups);
    } else {
        let groups = groups_for(out_count, 1);
        dev.dispatch("sum", &SUM_ROWS, &[], &params, &[x, &out], groups);
    }
    dev.check("sum")?;
    Ok(out)
}

/// GPU max over the middle dim of `[outer, d, inner]`: values and argmax (u32) buffers.
fn max_gpu(x: &GpuBuffer, outer: usize, d: usize, inner: usize) -> Result<(GpuBuffer, GpuBuffer)> {
    let dev = x.device();
    let n = outer * inner;
    let (vals, idx) = (dev.alloc("max", n), dev.alloc("max", n));
    let params = MaxParams {
        outer: outer as u32,
        d: d as u32,
        inner: inner as u32,
        pad0: 0,
    };
    dev.dispatch(
        "max",
        &MAX_DIM,
        &[],
        &params,
        &[x, &vals, &idx],
        groups_for(n, 1),
    );
    dev.check("max")?;
    Ok((vals, idx))
}

/// Sum of `x` (shape `shape`) over `dims`, output with those dims kept as 1, accumulated in
/// f64. The dims are merged first (`[N, C, H, W]` summed over `0, 2, 3` is `[N, C, H*W]` with
/// output strides `[0, 1, 0]`), then rows of the last merged dim are added either whole (a
/// reduced last dim: [`cpu::sum_f64`]) or elementwise (a kept one). Large inputs are split
/// into blocks of rows, each with its own f64 partial sums, added at the end.
fn sum_cpu(x: &[f32], shape: &Shape, dims: &[usize]) -> (Vec<f32>, Shape) {
    let mut out_dims = shape.dims().to_vec();
    for &d in dims {
        out_dims[d] = 1;
    }
    let out_shape = Shape::from(out_dims);
    let out_len = out_shape.elem_count();
    if shape.rank() == 0 || x.is_empty() {
        let mut out = vec![0.0f32; out_len];
        out.iter_mut().zip(x).for_each(|(o, &v)| *o = v);
        return (out, out_shape);
    }
    // Output strides seen from the input's multi-index: 0 on reduced dims.
    let ostr = out_shape.strides();
    let ostr: Vec<usize> = (0..shape.rank())
        .map(|d| if dims.contains(&d) { 0 } else { ostr[d] })
        .collect();
    let (mdims, mstr) = merge_dims(shape.dims(), &[shape.strides().to_vec(), ostr]);
    let ostr = &mstr[1];
    let rank = mdims.len();
    let last = mdims[rank - 1];
    let step = ostr[rank - 1];
    // Adds rows `first..` (the rows of `block`) into `acc`.
    let add_rows = |first: usize, block: &[f32], acc: &mut [f64]| {
        for (r, xrow) in block.chunks(last).enumerate() {
            let (mut o, mut rem) = (0, first + r);
            for d in (0..rank - 1).rev() {
                o += (rem % mdims[d]) * ostr[d];
                rem /= mdims[d];
            }
            if step == 0 {
                acc[o] += cpu::sum_f64(xrow);
            } else {
                for (a, &v) in acc[o..o + last].iter_mut().zip(xrow) {
                    *a += v as f64;
                }
            }
        }
    };
    let rows = x.len() / last;
    let threads = rayon::current_num_threads();
    // One thread when the input is small, or when the output is large next to it (each task
    // would zero and add a partial sum nearly as big as its share of the input).
    let acc = if x.len() < cpu::PAR_THRESHOLD || threads == 1 || out_len * 8 > x.len() {
        let mut acc = vec![0.0f64; out_len];
        add_rows(0, x, &mut acc);
        acc
    } else {
        let rows_per_task = rows.div_ceil(2 * threads);
        x.par_chunks(rows_per_task * last)
            .enumerate()
            .fold(
                || vec![0.0f64; out_len],
                |mut acc, (t, block)| {
                    add_rows(t * rows_per_task, block, &mut acc);
                    acc
                },
            )
            .reduce(
                || vec![0.0f64; out_len],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                },
            )
    };
    (acc.into_iter().map(|v| v as f32).collect(), out_shape)
}

/// Max over `dim` of `x` seen as `[outer, d, inner]`; returns values and the index of the
/// first maximum along `dim` for each output element.
fn max_cpu(x: &[f32], outer: usize, d: usize, inner: usize) -> (Vec<f32>, Vec<usize>) {
    let mut vals = vec![f32::NEG_INFINITY; outer * inner];
    let mut idx = vec![0usize; outer * inner];
    for o in 0..outer {
        for k in 0..d {
            for i in 0..inner {
                let v = x[(o * d + k) * inner + i];
                let j = o * inner + i;
                // `>` keeps the first maximum; NaN propagates like PyTorch's max.
                if v > vals[j] || (v.is_nan() && !vals[j].is_nan()) || k == 0 {
                    vals[j] = v;
                    idx[j] = k;
                }
            }
        }
    }
    (vals, idx)
}

/// `[outer, d, inner]` view of a shape around `dim`.
pub(crate) fn split_at_dim(shape: &Shape, dim: usize) -> (usize, usize, usize) {
    let dims = shape.dims();
    let outer = dims[..dim].iter().product();
    let inner = dims[dim + 1..].iter().product();
    (outer, dims[dim], inner)
}

/// Cost of a sum: one add per input element; the input read, the output written.
pub fn sum_cost(input: &Shape, out: &Shape) -> OpCost {
    OpCost::pointwise(0.0, &[input], out).with_flops(input.elem_count() as f64)
}

/// Cost of a max over one dim: one comparison per input element; the input read, the values
/// written.
pub fn max_cost(input: &Shape, out: &Shape) -> OpCost {
    sum_cost(input, out)
}

fn check_dims(op: &'static str, shape: &Shape, dims: &[usize]) -> Result<Vec<usize>> {
    let mut sorted = dims.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for &d in &sorted {
        if d >= shape.rank() {
            return Err(Error::DimOutOfRange {
                op,
                dim: d,
                rank: shape.rank(),
            });
        }
    }
    Ok(sorted)
}

impl Tensor {
    /// Sum over `dims`; with `keepdim` they stay as size 1, otherwise they are removed.
    pub fn sum(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        let dims = check_dims("sum", self.shape(), dims)?;
        let mut kept_dims = self.dims().to_vec();
        for &d in &dims {
            kept_dims[d] = 1;
        }
        let kept_shape = Shape::from(kept_dims);
        let _t = profile::op("sum");
        let storage = match &*self.storage() {
            Storage::Cpu(x) => Storage::Cpu(sum_cpu(x, self.shape(), &dims).0),
            Storage::Gpu(x) => Storage::Gpu(sum_gpu(x, self.shape(), &dims)?),
        };
        let kept = Tensor::from_op(
            storage,
            kept_shape.clone(),
            Op::Sum {
                input: self.clone(),
                dims: dims.clone(),
            },
        );
        if keepdim {
            Ok(kept)
        } else {
            let squeezed: Vec<usize> = kept_shape
                .dims()
                .iter()
                .enumerate()
                .filter(|(d, _)| !dims.contains(d))
                .map(|(_, &s)| s)
                .collect();
            kept.reshape(squeezed)
        }
    }

    /// Sum of all elements, as a 0-dim tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        let all: Vec<usize> = (0..self.rank()).collect();
        self.sum(&all, false)
    }

    /// Mean over `dims`.
    pub fn mean(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        let dims = check_dims("mean", self.shape(), dims)?;
        let n: usize = dims.iter().map(|&d| self.dims()[d]).product();
        Ok(self.sum(&dims, keepdim)?.mul_scalar(1.0 / n.max(1) as f32))
    }

    /// Mean of all elements, as a 0-dim tensor.
    pub fn mean_all(&self) -> Result<Tensor> {
        let all: Vec<usize> = (0..self.rank()).collect();
        self.mean(&all, false)
    }

    /// Variance over `dims`: `sum((x - mean)^2) / (n - 1)` if `unbiased`, else `/ n`.
    pub fn var(&self, dims: &[usize], unbiased: bool, keepdim: bool) -> Result<Tensor> {
        let dims = check_dims("var", self.shape(), dims)?;
        let n: usize = dims.iter().map(|&d| self.dims()[d]).product();
        let denom = if unbiased { n.saturating_sub(1) } else { n };
        if denom == 0 {
            return Err(Error::bad_shape(
                "var",
                self.shape(),
                format!("unbiased variance over {n} element(s) is undefined"),
            ));
        }
        let centred = self.sub(&self.mean(&dims, true)?)?;
        Ok(centred
            .sqr()?
            .sum(&dims, keepdim)?
            .mul_scalar(1.0 / denom as f32))
    }

    /// Max over `dim` (values; differentiable: the gradient goes to the first maximum).
    pub fn max(&self, dim: usize, keepdim: bool) -> Result<Tensor> {
        self.shape().dim("max", dim)?;
        if self.dims()[dim] == 0 {
            return Err(Error::bad_shape(
                "max",
                self.shape(),
                "max over an empty dim",
            ));
        }
        let (outer, d, inner) = split_at_dim(self.shape(), dim);
        let _t = profile::op("max");
        let (vals, idx) = match &*self.storage() {
            Storage::Cpu(x) => {
                let (vals, idx) = max_cpu(x, outer, d, inner);
                (Storage::Cpu(vals), idx)
            }
            Storage::Gpu(x) => {
                let (vals, idx) = max_gpu(x, outer, d, inner)?;
                // The backward rule needs the argmax on the host; read it back only when the
                // op is recorded (the same test `from_op` applies).
                let idx = if crate::autograd::is_grad_enabled() && self.is_tracked() {
                    let dev = x.device();
                    dev.read_u32("max", &idx)?
                        .into_iter()
                        .map(|i| i as usize)
                        .collect()
                } else {
                    Vec::new()
                };
                (Storage::Gpu(vals), idx)
            }
        };
        let mut kept_dims = self.dims().to_vec();
        kept_dims[dim] = 1;
        let kept = Tensor::from_op(
            vals,
            Shape::from(kept_dims.clone()),
            Op::Max {
                input: self.clone(),
                dim,
                argmax: Arc::new(idx),
            },
        );
        if keepdim {
            Ok(kept)
        } else {
            kept_dims.remove(dim);
            kept.reshape(kept_dims)
        }
    }

    /// Max of all elements.
    pub fn max_all(&self) -> Result<Tensor> {
        self.flatten_all()?.max(0, false)
    }

    /// Index of the first maximum along `dim`, for every other position (row-major order).
    pub fn argmax(&self, dim: usize) -> Result<Vec<usize>> {
        self.shape().dim("argmax", dim)?;
        let (outer, d, inner) = split_at_dim(self.shape(), dim);
        let idx = match &*self.storage() {
            Storage::Cpu(x) => max_cpu(x, outer, d, inner).1,
            Storage::Gpu(x) => {
                let (_, idx) = max_gpu(x, outer, d, inner)?;
                let dev = x.device();
                dev.read_u32("argmax", &idx)?
                    .into_iter()
                    .map(|i| i as usize)
                    .collect()
            }
        };
        Ok(idx)
    }

    /// Sums a broadcast result back down to `target` (the adjoint of `broadcast_to`): leading
    /// extra dims and dims where `target` has size 1 are summed.
    pub fn sum_to(&self, target: &Shape) -> Result<Tensor> {
        if self.shape() == target {
            return Ok(self.clone());
        }
        let offset = self
            .rank()
            .checked_sub(target.rank())
            .ok_or_else(|| Error::shape_mismatch("sum_to", self.shape(), target))?;
        let mut dims: Vec<usize> = (0..offset).collect();
        for (i, &t) in target.dims().iter().enumerate() {
            let s = self.dims()[offset + i];
            if t == 1 && s != 1 {
                dims.push(offset + i);
            } else if t != s {
                return Err(Error::shape_mismatch("sum_to", self.shape(), target));
            }
        }
        self.sum(&dims, true)?.reshape(target.clone())
    }
}
