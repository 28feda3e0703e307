//! Reductions: sum over any set of dims and max over one dim are the primitives; mean, var,
//! argmax and `sum_to` (the adjoint of broadcasting) are built on them.
//!
//! Sum kernel: `out[j] = sum_{i : keep(i) = j} x[i]`, where `keep` zeroes the reduced dims of
//! the multi-index. Accumulated in f64, so the order of the sum does not change the f32 result.

use crate::backend::Storage;
use crate::error::{Error, Result};
use crate::ops::Op;
use crate::tensor::{Shape, Tensor};
use std::sync::Arc;

/// Sum of `x` (shape `shape`) over `dims`, output with those dims kept as 1.
fn sum_cpu(x: &[f32], shape: &Shape, dims: &[usize]) -> (Vec<f32>, Shape) {
    let mut out_dims = shape.dims().to_vec();
    for &d in dims {
        out_dims[d] = 1;
    }
    let out_shape = Shape::from(out_dims);
    let mut acc = vec![0.0f64; out_shape.elem_count()];
    let rank = shape.rank();
    if rank == 0 || x.is_empty() {
        acc.iter_mut().zip(x).for_each(|(a, &v)| *a = v as f64);
        return (acc.into_iter().map(|v| v as f32).collect(), out_shape);
    }
    // Output strides seen from the input's multi-index: 0 on reduced dims.
    let ostr = out_shape.strides();
    let ostr: Vec<usize> = (0..rank)
        .map(|d| if dims.contains(&d) { 0 } else { ostr[d] })
        .collect();
    let in_dims = shape.dims();
    let last = in_dims[rank - 1];
    for (row, xrow) in x.chunks(last).enumerate() {
        let (mut o, mut rem) = (0, row);
        for d in (0..rank - 1).rev() {
            o += (rem % in_dims[d]) * ostr[d];
            rem /= in_dims[d];
        }
        let step = ostr[rank - 1];
        if step == 0 {
            acc[o] += xrow.iter().map(|&v| v as f64).sum::<f64>();
        } else {
            for (j, &v) in xrow.iter().enumerate() {
                acc[o + j] += v as f64;
            }
        }
    }
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
        let (data, kept_shape) = match &*self.storage() {
            Storage::Cpu(x) => sum_cpu(x, self.shape(), &dims),
        };
        let kept = Tensor::from_op(
            Storage::Cpu(data),
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
        let (vals, idx) = match &*self.storage() {
            Storage::Cpu(x) => max_cpu(x, outer, d, inner),
        };
        let mut kept_dims = self.dims().to_vec();
        kept_dims[dim] = 1;
        let kept = Tensor::from_op(
            Storage::Cpu(vals),
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
        let (_, idx) = match &*self.storage() {
            Storage::Cpu(x) => max_cpu(x, outer, d, inner),
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
