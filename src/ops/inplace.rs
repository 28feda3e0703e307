//! In-place updates of a tensor's own data, outside any autodiff graph: overwriting it from the
//! host or from another tensor, `a * self + b * (c * src)` (batch norm's running statistics, EMA
//! weights), in-place clamp (WGAN weight clipping) and affine (counters), and the fill kernel
//! behind `Tensor::full` on a GPU. Each goes through [`Tensor::write_storage`], which refuses a
//! tensor that a recorded graph still needs. On the GPU each is one kernel from
//! `shaders/inplace.wgsl` (or a buffer copy), so none of them moves data to the host.

use crate::backend::gpu::params::InplaceParams;
use crate::backend::gpu::{groups_for, Access, KernelSpec, Shader, WORKGROUP};
use crate::backend::{GpuBuffer, GpuDevice, Storage};
use crate::error::{Error, Result};
use crate::profile::{self, OpCost, OpInfo};
use crate::tensor::Tensor;

static INPLACE_WGSL: Shader = Shader {
    name: "inplace",
    source: include_str!("../../shaders/inplace.wgsl"),
};
const FILL: KernelSpec = KernelSpec {
    shader: &INPLACE_WGSL,
    entry: "fill",
    storage: &[(0, Access::ReadWrite)],
    uniform: 2,
};
const AXPBY: KernelSpec = KernelSpec {
    shader: &INPLACE_WGSL,
    entry: "axpby",
    storage: &[(0, Access::ReadWrite), (1, Access::Read)],
    uniform: 2,
};
const UNARY_INPLACE: KernelSpec = KernelSpec {
    shader: &INPLACE_WGSL,
    entry: "unary_inplace",
    storage: &[(0, Access::ReadWrite)],
    uniform: 2,
};

/// A new GPU buffer of `len` elements, all `value`.
pub(crate) fn fill_gpu(dev: &GpuDevice, op: &'static str, len: usize, value: f32) -> GpuBuffer {
    let out = dev.alloc(op, len);
    let params = InplaceParams {
        n: len as u32,
        a: value,
        ..Default::default()
    };
    dev.dispatch(op, &FILL, &[], &params, &[&out], groups_for(len, WORKGROUP));
    out
}

/// `dst = f(dst)` on the GPU: `code` 0 clamps into `[a, b]`, 1 computes `a * dst + b`.
fn unary_in_place_gpu(op: &'static str, dst: &GpuBuffer, code: u32, a: f32, b: f32) -> Result<()> {
    let dev = dst.device();
    let params = InplaceParams {
        n: dst.len() as u32,
        a,
        b,
        c: 0.0,
    };
    dev.dispatch(
        op,
        &UNARY_INPLACE,
        &[("OP", code as f64)],
        &params,
        &[dst],
        groups_for(dst.len(), WORKGROUP),
    );
    dev.check(op)
}

// ---- cost (profiler) -------------------------------------------------------------------------

/// Cost of an in-place update of `n` elements with `flops_per_element` FLOPs that also reads
/// `sources` other tensors of `n` elements: the target read and written, each source read.
pub fn in_place_cost(n: usize, flops_per_element: f64, sources: usize) -> OpCost {
    let mut inputs = vec![n; sources];
    if flops_per_element > 0.0 {
        inputs.push(n); // the target's old values
    }
    OpCost::new(flops_per_element * n as f64, &inputs, n)
}

/// Opens the timer of in-place op `name` on `t` and describes it (no-op unless profiling).
fn timed(
    name: &'static str,
    t: &Tensor,
    flops_per_element: f64,
    sources: usize,
) -> profile::OpTimer {
    let timer = profile::op(name);
    profile::describe(|| {
        let cost = in_place_cost(t.elem_count(), flops_per_element, sources);
        OpInfo::new(name, &[t.shape()], t.shape(), cost)
    });
    timer
}

fn same_shape(op: &'static str, dst: &Tensor, src: &Tensor) -> Result<()> {
    if dst.shape() != src.shape() {
        return Err(Error::shape_mismatch(op, dst.shape(), src.shape()));
    }
    Ok(())
}

impl Tensor {
    /// Overwrites the data with `data` (row-major, same element count), on any device.
    pub fn write_from_slice(&self, data: &[f32]) -> Result<()> {
        if data.len() != self.elem_count() {
            return Err(Error::ElementCount {
                op: "write_from_slice",
                shape: self.shape().clone(),
                got: data.len(),
                want: self.elem_count(),
            });
        }
        // The host data read, the tensor written.
        let _t = timed("write_from_slice", self, 0.0, 1);
        self.write_storage(|s| match s {
            Storage::Cpu(v) => v.copy_from_slice(data),
            Storage::Gpu(b) => b.device().write("write_from_slice", b, data),
        })
    }

    /// Overwrites the data with `src`'s (same shape; any devices: a buffer copy when both are
    /// on the same GPU, through the host otherwise).
    pub fn copy_from(&self, src: &Tensor) -> Result<()> {
        same_shape("copy_from", self, src)?;
        if self.same_storage(src) {
            return Ok(());
        }
        let _t = timed("copy_from", self, 0.0, 1);
        let src_guard = src.storage();
        self.write_storage(|s| match (s, &*src_guard) {
            (Storage::Cpu(d), Storage::Cpu(x)) => {
                d.copy_from_slice(x);
                Ok(())
            }
            (Storage::Gpu(d), Storage::Gpu(x)) if d.device() == x.device() => {
                d.device().copy("copy_from", x, d);
                Ok(())
            }
            (d, x) => {
                let data = x.try_to_vec()?;
                match d {
                    Storage::Cpu(v) => v.copy_from_slice(&data),
                    Storage::Gpu(b) => b.device().write("copy_from", b, &data),
                }
                Ok(())
            }
        })?
    }

    /// `self = a * self + b * (c * src)` elementwise (same shape and device). With
    /// `(1 - m, m, 1)` it is a running average; the CPU evaluates exactly this expression.
    pub fn axpby_in_place(&self, a: f32, src: &Tensor, b: f32, c: f32) -> Result<()> {
        same_shape("axpby_in_place", self, src)?;
        self.check_same_device("axpby_in_place", src)?;
        // a * d + b * (c * x): 4 FLOPs per element.
        let _t = timed("axpby_in_place", self, 4.0, 1);
        // Reading and writing one buffer: read a copy.
        let src = if self.same_storage(src) {
            Tensor::from_vec_on(src.try_to_vec()?, src.shape().clone(), &src.device())?
        } else {
            src.clone()
        };
        let src_guard = src.storage();
        self.write_storage(|s| match (s, &*src_guard) {
            (Storage::Cpu(d), Storage::Cpu(x)) => {
                for (d, &x) in d.iter_mut().zip(x) {
                    *d = a * *d + b * (c * x);
                }
                Ok(())
            }
            (Storage::Gpu(d), Storage::Gpu(x)) => {
                let dev = d.device();
                let params = InplaceParams {
                    n: d.len() as u32,
                    a,
                    b,
                    c,
                };
                dev.dispatch(
                    "axpby_in_place",
                    &AXPBY,
                    &[],
                    &params,
                    &[d, x],
                    groups_for(d.len(), WORKGROUP),
                );
                dev.check("axpby_in_place")
            }
            (d, x) => Err(Error::device_mismatch("axpby_in_place", d, x)),
        })?
    }

    /// Sets every element to `value` in place.
    pub fn fill_in_place(&self, value: f32) -> Result<()> {
        let _t = timed("fill_in_place", self, 0.0, 0);
        self.write_storage(|s| match s {
            Storage::Cpu(v) => v.fill(value),
            Storage::Gpu(b) => {
                let params = InplaceParams {
                    n: b.len() as u32,
                    a: value,
                    ..Default::default()
                };
                let groups = groups_for(b.len(), WORKGROUP);
                b.device()
                    .dispatch("fill_in_place", &FILL, &[], &params, &[b], groups);
            }
        })
    }

    /// Clamps every element into `[min, max]` in place (WGAN weight clipping).
    pub fn clamp_in_place(&self, min: f32, max: f32) -> Result<()> {
        if min.is_nan() || max.is_nan() || min > max {
            return Err(Error::invalid(
                "clamp_in_place",
                format!("[{min}, {max}] is not an interval"),
            ));
        }
        // max then min: 2 FLOPs per element.
        let _t = timed("clamp_in_place", self, 2.0, 0);
        self.write_storage(|s| match s {
            Storage::Cpu(v) => {
                for w in v.iter_mut() {
                    *w = w.clamp(min, max);
                }
                Ok(())
            }
            Storage::Gpu(b) => unary_in_place_gpu("clamp_in_place", b, 0, min, max),
        })?
    }

    /// `self = mul * self + add` in place (e.g. a counter's `+= 1`).
    pub fn affine_in_place(&self, mul: f32, add: f32) -> Result<()> {
        // mul * x + add: 2 FLOPs per element.
        let _t = timed("affine_in_place", self, 2.0, 0);
        self.write_storage(|s| match s {
            Storage::Cpu(v) => {
                for x in v.iter_mut() {
                    *x = mul * *x + add;
                }
                Ok(())
            }
            Storage::Gpu(b) => unary_in_place_gpu("affine_in_place", b, 1, mul, add),
        })?
    }
}
