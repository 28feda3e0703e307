//! Shape ops: reshape, permute/transpose, broadcast, concat, narrow/pad, index_select/index_add.
//!
//! Storage is always contiguous, so reshape shares the buffer and every other op here copies.
//! Most are one "strided gather": `out[o] = x[sum_d idx_d(o) * src_stride_d]`, with the source
//! strides permuted (permute) or zeroed on repeated dims (broadcast).
//! GPU kernels: `shaders/shape.wgsl` (gather, copy_block, index_select, index_add), one thread
//! per output element.

use crate::backend::gpu::params::{CopyBlockParams, GatherParams, IndexParams};
use crate::backend::gpu::{
    groups_for, merge_dims, pack8, too_many_dims, Access, KernelSpec, Shader, MAX_DIMS, WORKGROUP,
};
use crate::backend::{cpu, GpuBuffer, Storage};
use crate::error::{Error, Result};
use crate::ops::reduce::split_at_dim;
use crate::ops::Op;
use crate::profile::{self, OpCost};
use crate::tensor::{Shape, Tensor};
use std::sync::Arc;

// ---- cost (profiler) -------------------------------------------------------------------------

/// Cost of a reshape: nothing computed, nothing moved (the output shares the input's buffer).
pub fn reshape_cost() -> OpCost {
    OpCost::default()
}

/// Cost of a copying shape op (permute, broadcast, concat, narrow, pad, index_select): no
/// arithmetic; every input read once, the output written once.
pub fn copy_cost(inputs: &[&Shape], out: &Shape) -> OpCost {
    OpCost::copy(inputs, out)
}

/// Cost of index_add into zeros: one add per input element; the input read, the output
/// written.
pub fn index_add_cost(input: &Shape, out: &Shape) -> OpCost {
    OpCost::copy(&[input], out).with_flops(input.elem_count() as f64)
}

static SHAPE_WGSL: Shader = Shader {
    name: "shape",
    source: include_str!("../../shaders/shape.wgsl"),
};
const GATHER: KernelSpec = KernelSpec {
    shader: &SHAPE_WGSL,
    entry: "gather",
    storage: &[(0, Access::Read), (1, Access::ReadWrite)],
    uniform: 3,
};
const COPY_BLOCK: KernelSpec = KernelSpec {
    shader: &SHAPE_WGSL,
    entry: "copy_block",
    storage: &[(0, Access::Read), (1, Access::ReadWrite)],
    uniform: 4,
};
const INDEX_SELECT: KernelSpec = KernelSpec {
    shader: &SHAPE_WGSL,
    entry: "index_select",
    storage: &[(0, Access::Read), (1, Access::ReadWrite), (2, Access::Read)],
    uniform: 5,
};
const INDEX_ADD: KernelSpec = KernelSpec {
    shader: &SHAPE_WGSL,
    entry: "index_add",
    storage: &[(0, Access::Read), (1, Access::ReadWrite), (2, Access::Read)],
    uniform: 5,
};

/// GPU version of [`gather_strided`].
fn gather_gpu(
    op: &'static str,
    x: &GpuBuffer,
    out_shape: &Shape,
    src_strides: &[usize],
) -> Result<GpuBuffer> {
    let dev = x.device();
    let n = out_shape.elem_count();
    let (dims, strides) = merge_dims(out_shape.dims(), &[src_strides.to_vec()]);
    if dims.len() > MAX_DIMS {
        return Err(too_many_dims(op, dims.len()));
    }
    let out = dev.alloc(op, n);
    let params = GatherParams {
        n: n as u32,
        rank: dims.len() as u32,
        dims: pack8(&dims),
        src_strides: pack8(&strides[0]),
        ..Default::default()
    };
    dev.dispatch(
        op,
        &GATHER,
        &[],
        &params,
        &[x, &out],
        groups_for(n, WORKGROUP),
    );
    dev.check(op)?;
    Ok(out)
}

/// GPU version of [`copy_dim_block`] (recorded into `out`).
#[allow(clippy::too_many_arguments)]
fn copy_dim_block_gpu(
    op: &'static str,
    x: &GpuBuffer,
    out: &GpuBuffer,
    outer: usize,
    inner: usize,
    d_in: usize,
    d_out: usize,
    src_start: usize,
    dst_start: usize,
    len: usize,
) {
    let n = outer * len * inner;
    let params = CopyBlockParams {
        outer: outer as u32,
        inner: inner as u32,
        d_in: d_in as u32,
        d_out: d_out as u32,
        src_start: src_start as u32,
        dst_start: dst_start as u32,
        len: len as u32,
        n: n as u32,
    };
    let dev = x.device();
    dev.dispatch(
        op,
        &COPY_BLOCK,
        &[],
        &params,
        &[x, out],
        groups_for(n, WORKGROUP),
    );
}

/// index_select (`add = false`) or index_add into zeros (`add = true`) on the GPU.
#[allow(clippy::too_many_arguments)]
fn index_gpu(
    op: &'static str,
    add: bool,
    x: &GpuBuffer,
    indices: &[usize],
    outer: usize,
    inner: usize,
    d_in: usize,
    d_out: usize,
) -> Result<GpuBuffer> {
    let dev = x.device();
    let n = outer * d_out * inner;
    let out = dev.alloc(op, n);
    let idx: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
    let idx = dev.upload(op, &idx);
    let params = IndexParams {
        outer: outer as u32,
        inner: inner as u32,
        d_in: d_in as u32,
        d_out: d_out as u32,
        n_idx: indices.len() as u32,
        n: n as u32,
        ..Default::default()
    };
    let spec = if add { &INDEX_ADD } else { &INDEX_SELECT };
    dev.dispatch(
        op,
        spec,
        &[],
        &params,
        &[x, &out, &idx],
        groups_for(n, WORKGROUP),
    );
    dev.check(op)?;
    Ok(out)
}

/// `out[o] = x[offset(o)]` for an output of `out_shape`, where `offset` uses `src_strides`
/// (one per output dim, 0 where the source is repeated).
fn gather_strided(x: &[f32], out_shape: &Shape, src_strides: &[usize]) -> Vec<f32> {
    let n = out_shape.elem_count();
    let mut out = cpu::pool::take(n);
    let rank = out_shape.rank();
    if n == 0 {
        return out;
    }
    if rank == 0 {
        out[0] = x[0];
        return out;
    }
    let dims = out_shape.dims();
    let last = dims[rank - 1];
    let last_stride = src_strides[rank - 1];
    cpu::for_each_row(&mut out, last, |row, out_row| {
        let (mut off, mut rem) = (0, row);
        for d in (0..rank - 1).rev() {
            off += (rem % dims[d]) * src_strides[d];
            rem /= dims[d];
        }
        for (j, o) in out_row.iter_mut().enumerate() {
            *o = x[off + j * last_stride];
        }
    });
    out
}

/// `[outer, d_in, inner] -> [outer, d_out, inner]`: copies `len` slices of `dim` from source
/// position `src_start` to destination position `dst_start`; the rest of `out` stays zero.
#[allow(clippy::too_many_arguments)]
fn copy_dim_block(
    x: &[f32],
    out: &mut [f32],
    outer: usize,
    inner: usize,
    d_in: usize,
    d_out: usize,
    src_start: usize,
    dst_start: usize,
    len: usize,
) {
    for o in 0..outer {
        let src = (o * d_in + src_start) * inner;
        let dst = (o * d_out + dst_start) * inner;
        out[dst..dst + len * inner].copy_from_slice(&x[src..src + len * inner]);
    }
}

impl Tensor {
    /// Same data in a new shape with the same element count (shares the buffer).
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.elem_count() != self.elem_count() {
            return Err(Error::ElementCount {
                op: "reshape",
                shape: shape.clone(),
                got: self.elem_count(),
                want: shape.elem_count(),
            });
        }
        if &shape == self.shape() {
            return Ok(self.clone());
        }
        let _t = profile::op("reshape");
        Ok(self.shared_with_op(
            shape,
            Op::Reshape {
                input: self.clone(),
            },
        ))
    }

    /// Keeps dims before `start_dim` and merges the rest into one (like `torch.flatten`).
    pub fn flatten(&self, start_dim: usize) -> Result<Tensor> {
        if start_dim >= self.rank().max(1) {
            return Err(Error::DimOutOfRange {
                op: "flatten",
                dim: start_dim,
                rank: self.rank(),
            });
        }
        let mut dims: Vec<usize> = self.dims()[..start_dim].to_vec();
        dims.push(self.dims()[start_dim..].iter().product());
        self.reshape(dims)
    }

    /// All elements as one dim.
    pub fn flatten_all(&self) -> Result<Tensor> {
        self.reshape(self.elem_count())
    }

    /// Inserts a size-1 dim at `dim`.
    pub fn unsqueeze(&self, dim: usize) -> Result<Tensor> {
        if dim > self.rank() {
            return Err(Error::DimOutOfRange {
                op: "unsqueeze",
                dim,
                rank: self.rank(),
            });
        }
        let mut dims = self.dims().to_vec();
        dims.insert(dim, 1);
        self.reshape(dims)
    }

    /// Removes a size-1 dim at `dim`.
    pub fn squeeze(&self, dim: usize) -> Result<Tensor> {
        if self.shape().dim("squeeze", dim)? != 1 {
            return Err(Error::bad_shape(
                "squeeze",
                self.shape(),
                format!("dim {dim} is not 1"),
            ));
        }
        let mut dims = self.dims().to_vec();
        dims.remove(dim);
        self.reshape(dims)
    }

    /// Reorders dims: output dim `i` is input dim `perm[i]` (copies).
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if perm.len() != rank
            || perm
                .iter()
                .any(|&p| p >= rank || std::mem::replace(&mut seen[p], true))
        {
            return Err(Error::invalid(
                "permute",
                format!(
                    "{perm:?} is not a permutation of the {rank} dims of {:?}",
                    self.shape()
                ),
            ));
        }
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(self.clone());
        }
        let _t = profile::op("permute");
        let out_shape = Shape::from(perm.iter().map(|&p| self.dims()[p]).collect::<Vec<_>>());
        let strides = self.shape().strides();
        let src_strides: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
        let storage = match &*self.storage() {
            Storage::Cpu(x) => Storage::Cpu(gather_strided(x, &out_shape, &src_strides)),
            Storage::Gpu(x) => Storage::Gpu(gather_gpu("permute", x, &out_shape, &src_strides)?),
        };
        Ok(Tensor::from_op(
            storage,
            out_shape,
            Op::Permute {
                input: self.clone(),
                perm: perm.to_vec(),
            },
        ))
    }

    /// Swaps two dims.
    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Tensor> {
        let rank = self.rank();
        for d in [d0, d1] {
            if d >= rank {
                return Err(Error::DimOutOfRange {
                    op: "transpose",
                    dim: d,
                    rank,
                });
            }
        }
        let mut perm: Vec<usize> = (0..rank).collect();
        perm.swap(d0, d1);
        self.permute(&perm)
    }

    /// Transpose of a matrix (the last two dims swapped).
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::bad_shape("t", self.shape(), "needs at least 2 dims"));
        }
        self.transpose(self.rank() - 2, self.rank() - 1)
    }

    /// Repeats size-1 dims (and adds leading dims) to reach `shape` (copies).
    pub fn broadcast_to(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        let check = Shape::broadcast("broadcast_to", self.shape(), &shape)?;
        if check != shape {
            return Err(Error::shape_mismatch("broadcast_to", self.shape(), &shape));
        }
        if &shape == self.shape() {
            return Ok(self.clone());
        }
        let _t = profile::op("broadcast");
        let src_strides = self.shape().broadcast_strides(&shape);
        let storage = match &*self.storage() {
            Storage::Cpu(x) => Storage::Cpu(gather_strided(x, &shape, &src_strides)),
            Storage::Gpu(x) => Storage::Gpu(gather_gpu("broadcast", x, &shape, &src_strides)?),
        };
        Ok(Tensor::from_op(
            storage,
            shape,
            Op::Broadcast {
                input: self.clone(),
            },
        ))
    }

    /// Joins tensors along `dim`; all other dims must match.
    pub fn concat(tensors: &[Tensor], dim: usize) -> Result<Tensor> {
        let first = tensors
            .first()
            .ok_or_else(|| Error::invalid("concat", "no tensors to concatenate"))?;
        first.shape().dim("concat", dim)?;
        let mut total = 0;
        for t in tensors {
            first.check_same_device("concat", t)?;
            let same_rank = t.rank() == first.rank();
            let others_match =
                same_rank && (0..first.rank()).all(|d| d == dim || t.dims()[d] == first.dims()[d]);
            if !others_match {
                return Err(Error::ShapeMismatch {
                    op: "concat",
                    lhs: first.shape().clone(),
                    rhs: t.shape().clone(),
                    hint: format!("all dims except {dim} must match"),
                });
            }
            total += t.dims()[dim];
        }
        let mut out_dims = first.dims().to_vec();
        out_dims[dim] = total;
        let out_shape = Shape::from(out_dims);
        let (outer, _, inner) = split_at_dim(first.shape(), dim);
        let _t = profile::op("concat");
        let storage = match first.device() {
            crate::Device::Cpu => {
                let mut out = cpu::pool::take(out_shape.elem_count());
                let mut start = 0;
                for t in tensors {
                    let d = t.dims()[dim];
                    let x = t.storage();
                    copy_dim_block(x.as_cpu(), &mut out, outer, inner, d, total, 0, start, d);
                    start += d;
                }
                Storage::Cpu(out)
            }
            crate::Device::Gpu(dev) => {
                let out = dev.alloc("concat", out_shape.elem_count());
                let mut start = 0;
                for t in tensors {
                    let d = t.dims()[dim];
                    let x = t.storage();
                    let x = x.as_gpu().ok_or_else(|| Error::DeviceMismatch {
                        op: "concat",
                        lhs: first.device().name(),
                        rhs: t.device().name(),
                    })?;
                    copy_dim_block_gpu("concat", x, &out, outer, inner, d, total, 0, start, d);
                    start += d;
                }
                dev.check("concat")?;
                Storage::Gpu(out)
            }
        };
        Ok(Tensor::from_op(
            storage,
            out_shape,
            Op::Concat {
                inputs: tensors.to_vec(),
                dim,
            },
        ))
    }

    /// Entries `start..start + len` of `dim` (copies).
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        let size = self.shape().dim("narrow", dim)?;
        if start + len > size {
            return Err(Error::bad_shape(
                "narrow",
                self.shape(),
                format!(
                    "range {start}..{} past the {size} entries of dim {dim}",
                    start + len
                ),
            ));
        }
        if start == 0 && len == size {
            return Ok(self.clone());
        }
        let _t = profile::op("narrow");
        let mut out_dims = self.dims().to_vec();
        out_dims[dim] = len;
        let out_shape = Shape::from(out_dims);
        let (outer, _, inner) = split_at_dim(self.shape(), dim);
        let storage = match &*self.storage() {
            Storage::Cpu(x) => {
                let mut out = cpu::pool::take(out_shape.elem_count());
                copy_dim_block(x, &mut out, outer, inner, size, len, start, 0, len);
                Storage::Cpu(out)
            }
            Storage::Gpu(x) => {
                let dev = x.device();
                let out = dev.alloc("narrow", out_shape.elem_count());
                copy_dim_block_gpu("narrow", x, &out, outer, inner, size, len, start, 0, len);
                dev.check("narrow")?;
                Storage::Gpu(out)
            }
        };
        Ok(Tensor::from_op(
            storage,
            out_shape,
            Op::Narrow {
                input: self.clone(),
                dim,
                start,
                len,
            },
        ))
    }

    /// Adds `before` and `after` zero entries along `dim`.
    pub fn pad_dim(&self, dim: usize, before: usize, after: usize) -> Result<Tensor> {
        let size = self.shape().dim("pad_dim", dim)?;
        if before == 0 && after == 0 {
            return Ok(self.clone());
        }
        let _t = profile::op("pad");
        let mut out_dims = self.dims().to_vec();
        out_dims[dim] = size + before + after;
        let out_shape = Shape::from(out_dims);
        let (outer, _, inner) = split_at_dim(self.shape(), dim);
        let d_out = size + before + after;
        let storage = match &*self.storage() {
            Storage::Cpu(x) => {
                let mut out = cpu::pool::take_zeroed(out_shape.elem_count());
                copy_dim_block(x, &mut out, outer, inner, size, d_out, 0, before, size);
                Storage::Cpu(out)
            }
            Storage::Gpu(x) => {
                let dev = x.device();
                let out = dev.zeros("pad", out_shape.elem_count());
                copy_dim_block_gpu("pad", x, &out, outer, inner, size, d_out, 0, before, size);
                dev.check("pad")?;
                Storage::Gpu(out)
            }
        };
        Ok(Tensor::from_op(
            storage,
            out_shape,
            Op::Pad {
                input: self.clone(),
                dim,
                before,
                after,
            },
        ))
    }

    /// Entries `indices` of `dim`, in that order (embedding lookup with `dim = 0`).
    pub fn index_select(&self, dim: usize, indices: &[usize]) -> Result<Tensor> {
        let size = self.shape().dim("index_select", dim)?;
        if let Some(&bad) = indices.iter().find(|&&i| i >= size) {
            return Err(Error::bad_shape(
                "index_select",
                self.shape(),
                format!("index {bad} out of range for dim {dim} of size {size}"),
            ));
        }
        let (outer, _, inner) = split_at_dim(self.shape(), dim);
        let _t = profile::op("index_select");
        let mut out_dims = self.dims().to_vec();
        out_dims[dim] = indices.len();
        let out_shape = Shape::from(out_dims);
        let storage = match &*self.storage() {
            Storage::Cpu(x) => {
                let mut out = cpu::pool::take(out_shape.elem_count());
                for o in 0..outer {
                    for (j, &idx) in indices.iter().enumerate() {
                        let src = (o * size + idx) * inner;
                        let dst = (o * indices.len() + j) * inner;
                        out[dst..dst + inner].copy_from_slice(&x[src..src + inner]);
                    }
                }
                Storage::Cpu(out)
            }
            Storage::Gpu(x) => Storage::Gpu(index_gpu(
                "index_select",
                false,
                x,
                indices,
                outer,
                inner,
                size,
                indices.len(),
            )?),
        };
        Ok(Tensor::from_op(
            storage,
            out_shape,
            Op::IndexSelect {
                input: self.clone(),
                dim,
                indices: Arc::new(indices.to_vec()),
            },
        ))
    }

    /// A zero tensor with `size` entries along `dim`, into which entry `j` of `self` is added at
    /// `indices[j]` (repeated indices accumulate). The adjoint of [`Tensor::index_select`].
    pub fn index_add_into_zeros(
        &self,
        dim: usize,
        indices: &[usize],
        size: usize,
    ) -> Result<Tensor> {
        let n = self.shape().dim("index_add", dim)?;
        if n != indices.len() {
            return Err(Error::bad_shape(
                "index_add",
                self.shape(),
                format!(
                    "dim {dim} has {n} entries but {} indices were given",
                    indices.len()
                ),
            ));
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= size) {
            return Err(Error::invalid(
                "index_add",
                format!("index {bad} >= size {size}"),
            ));
        }
        let (outer, _, inner) = split_at_dim(self.shape(), dim);
        let _t = profile::op("index_add");
        let mut out_dims = self.dims().to_vec();
        out_dims[dim] = size;
        let out_shape = Shape::from(out_dims);
        let storage = match &*self.storage() {
            Storage::Cpu(x) => {
                let mut out = cpu::pool::take_zeroed(out_shape.elem_count());
                for o in 0..outer {
                    for (j, &idx) in indices.iter().enumerate() {
                        let src = (o * n + j) * inner;
                        let dst = (o * size + idx) * inner;
                        for i in 0..inner {
                            out[dst + i] += x[src + i];
                        }
                    }
                }
                Storage::Cpu(out)
            }
            Storage::Gpu(x) => Storage::Gpu(index_gpu(
                "index_add",
                true,
                x,
                indices,
                outer,
                inner,
                n,
                size,
            )?),
        };
        Ok(Tensor::from_op(
            storage,
            out_shape,
            Op::IndexAdd {
                input: self.clone(),
                dim,
                indices: Arc::new(indices.to_vec()),
                size,
            },
        ))
    }
}
