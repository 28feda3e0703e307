//! Creating tensors: constants, data from the host, and seeded random tensors.

use super::{Rng, Shape, Tensor};
use crate::backend::cpu::pool;
use crate::backend::{Device, Storage};
use crate::error::{Error, Result};
use crate::profile::{self, OpCost, OpInfo};

/// Opens the timer of creation op `name` making `shape` (`written`: the output's elements
/// are written; `uploaded`: host data of that size is read too).
fn timed(name: &'static str, shape: &Shape, uploaded: bool) -> profile::OpTimer {
    let timer = profile::op(name);
    profile::describe(|| {
        let n = shape.elem_count();
        let inputs: &[usize] = if uploaded { &[n] } else { &[] };
        OpInfo::new(name, &[], shape, OpCost::new(0.0, inputs, n))
    });
    timer
}

impl Tensor {
    /// A tensor holding `data` (row-major) with the given shape, on the CPU.
    ///
    /// ```
    /// use ganforge::Tensor;
    /// let t = Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]).unwrap();
    /// assert_eq!(t.dims(), &[2, 3]);
    /// assert_eq!(t.to_vec()[4], 5.0);
    /// ```
    pub fn from_vec(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if data.len() != shape.elem_count() {
            return Err(Error::ElementCount {
                op: "from_vec",
                shape: shape.clone(),
                got: data.len(),
                want: shape.elem_count(),
            });
        }
        Tensor::from_storage(Storage::Cpu(data), shape)
    }

    /// Like [`Tensor::from_vec`], then moved to `device`.
    pub fn from_vec_on(data: Vec<f32>, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        match device {
            Device::Cpu => Tensor::from_vec(data, shape),
            Device::Gpu(g) => {
                let shape = shape.into();
                let _t = timed("upload", &shape, true);
                if data.len() != shape.elem_count() {
                    return Err(Error::ElementCount {
                        op: "from_vec",
                        shape: shape.clone(),
                        got: data.len(),
                        want: shape.elem_count(),
                    });
                }
                let storage = Storage::Gpu(g.upload("from_vec", &data));
                pool::recycle(data);
                Tensor::from_storage(storage, shape)
            }
        }
    }

    /// A 0-dim tensor holding `value`.
    pub fn scalar(value: f32) -> Tensor {
        Tensor::from_vec(vec![value], ()).expect("one element for a scalar")
    }

    /// A tensor filled with `value` (on a GPU, by a fill kernel).
    pub fn full(value: f32, shape: impl Into<Shape>, device: &Device) -> Tensor {
        let shape = shape.into();
        let _t = timed("full", &shape, false);
        let storage = match device {
            Device::Cpu => {
                let mut data = pool::take(shape.elem_count());
                data.fill(value);
                Storage::Cpu(data)
            }
            // Filled by a kernel: nothing crosses from the host.
            Device::Gpu(g) => Storage::Gpu(crate::ops::inplace::fill_gpu(
                g,
                "full",
                shape.elem_count(),
                value,
            )),
        };
        Tensor::from_storage(storage, shape).expect("element count matches by construction")
    }

    /// All zeros.
    pub fn zeros(shape: impl Into<Shape>, device: &Device) -> Tensor {
        Tensor::full(0.0, shape, device)
    }

    /// All ones.
    pub fn ones(shape: impl Into<Shape>, device: &Device) -> Tensor {
        Tensor::full(1.0, shape, device)
    }

    /// Zeros with the shape and device of `self`.
    pub fn zeros_like(&self) -> Tensor {
        Tensor::zeros(self.shape().clone(), &self.device())
    }

    /// Ones with the shape and device of `self`.
    pub fn ones_like(&self) -> Tensor {
        Tensor::ones(self.shape().clone(), &self.device())
    }

    /// Uniform samples in [lo, hi) from the engine's RNG (reproducible for a given state). The
    /// numbers are drawn on the host (the same sequence on every device) and uploaded.
    pub fn rand_uniform(
        lo: f32,
        hi: f32,
        shape: impl Into<Shape>,
        rng: &mut Rng,
        device: &Device,
    ) -> Tensor {
        let shape = shape.into();
        let _t = timed("rand_uniform", &shape, false);
        let mut data = pool::take(shape.elem_count());
        data.iter_mut().for_each(|v| *v = rng.uniform(lo, hi));
        Tensor::from_vec_on(data, shape, device).expect("element count matches by construction")
    }

    /// Normal samples with the given mean and standard deviation from the engine's RNG.
    pub fn randn(
        mean: f32,
        std: f32,
        shape: impl Into<Shape>,
        rng: &mut Rng,
        device: &Device,
    ) -> Tensor {
        let shape = shape.into();
        let _t = timed("randn", &shape, false);
        let mut data = pool::take(shape.elem_count());
        data.iter_mut().for_each(|v| *v = mean + std * rng.normal());
        Tensor::from_vec_on(data, shape, device).expect("element count matches by construction")
    }

    /// `[0, 1, ..., n-1]` as f32.
    pub fn arange(n: usize, device: &Device) -> Tensor {
        Tensor::from_vec_on((0..n).map(|i| i as f32).collect(), n, device)
            .expect("element count matches by construction")
    }
}
