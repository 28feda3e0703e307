//! 2x2 average pooling and nearest-neighbour 2x upsampling: each is the other's adjoint up to
//! a factor of 4, so their backward rules call each other.
//!
//! avg_pool2x2:  `x: [N, C, H, W] -> out: [N, C, H/2, W/2]` (floor, like PyTorch's
//!               `avg_pool2d(x, 2)`): `out[n, c, i, j] = 1/4 * sum_{a, b in {0,1}} x[n, c, 2i+a, 2j+b]`
//! upsample:     `x: [N, C, H, W] -> out: [N, C, OH, OW]` with `OH` in {2H, 2H+1}:
//!               `out[n, c, i, j] = x[n, c, i/2, j/2]`, zero where `i/2 >= H` or `j/2 >= W`
//!               (the extra row/col only appears as the adjoint of pooling an odd size).
//!
//! GPU kernels: `shaders/pool.wgsl`, one thread per output element.

use crate::backend::gpu::params::PoolParams;
use crate::backend::gpu::{groups_for, Access, KernelSpec, Shader, WORKGROUP};
use crate::backend::{cpu, GpuBuffer, Storage};
use crate::error::{Error, Result};
use crate::ops::Op;
use crate::profile::{self, OpCost};
use crate::tensor::{Shape, Tensor};

/// Cost of avg_pool2x2: 4 FLOPs per output element (3 adds and a multiply by 1/4); the input
/// read, the output written.
pub fn avg_pool2x2_cost(input: &Shape, out: &Shape) -> OpCost {
    OpCost::pointwise(4.0, &[input], out)
}

/// Cost of upsample_nearest2x: no arithmetic; the input read, the output written.
pub fn upsample_nearest2x_cost(input: &Shape, out: &Shape) -> OpCost {
    OpCost::copy(&[input], out)
}

static POOL_WGSL: Shader = Shader {
    name: "pool",
    source: include_str!("../../shaders/pool.wgsl"),
};
const AVG_POOL: KernelSpec = KernelSpec {
    shader: &POOL_WGSL,
    entry: "avg_pool2x2",
    storage: &[(0, Access::Read), (1, Access::ReadWrite)],
    uniform: 2,
};
const UPSAMPLE: KernelSpec = KernelSpec {
    shader: &POOL_WGSL,
    entry: "upsample_nearest2x",
    storage: &[(0, Access::Read), (1, Access::ReadWrite)],
    uniform: 2,
};

/// Runs `spec` of `pool.wgsl` from `[planes, h, w]` to `[planes, oh, ow]`.
fn pool_gpu(
    op: &'static str,
    spec: &KernelSpec,
    x: &GpuBuffer,
    (planes, h, w): (usize, usize, usize),
    (oh, ow): (usize, usize),
) -> Result<GpuBuffer> {
    let dev = x.device();
    let total = planes * oh * ow;
    let out = dev.alloc(op, total);
    let params = PoolParams {
        planes: planes as u32,
        h: h as u32,
        w: w as u32,
        oh: oh as u32,
        ow: ow as u32,
        total: total as u32,
        ..Default::default()
    };
    dev.dispatch(
        op,
        spec,
        &[],
        &params,
        &[x, &out],
        groups_for(total, WORKGROUP),
    );
    dev.check(op)?;
    Ok(out)
}

fn avg_pool2x2_cpu(x: &[f32], (n, c, h, w): (usize, usize, usize, usize)) -> Vec<f32> {
    let (oh, ow) = (h / 2, w / 2);
    let mut out = cpu::pool::take(n * c * oh * ow);
    cpu::for_each_row(&mut out, (oh * ow).max(1), |plane, out_plane| {
        let x_plane = &x[plane * h * w..][..h * w];
        for i in 0..oh {
            for j in 0..ow {
                let top = (2 * i) * w + 2 * j;
                let bottom = top + w;
                out_plane[i * ow + j] = 0.25
                    * (x_plane[top] + x_plane[top + 1] + x_plane[bottom] + x_plane[bottom + 1]);
            }
        }
    });
    out
}

fn upsample_cpu(
    x: &[f32],
    (n, c, h, w): (usize, usize, usize, usize),
    oh: usize,
    ow: usize,
) -> Vec<f32> {
    let mut out = cpu::pool::take_zeroed(n * c * oh * ow);
    cpu::for_each_row(&mut out, (oh * ow).max(1), |plane, out_plane| {
        let x_plane = &x[plane * h * w..][..h * w];
        for i in 0..oh.min(2 * h) {
            for j in 0..ow.min(2 * w) {
                out_plane[i * ow + j] = x_plane[(i / 2) * w + j / 2];
            }
        }
    });
    out
}

impl Tensor {
    /// Mean over non-overlapping 2x2 windows; odd trailing rows/cols are dropped (floor).
    pub fn avg_pool2x2(&self) -> Result<Tensor> {
        let (n, c, h, w) = self.shape().dims4("avg_pool2x2")?;
        if h < 2 || w < 2 {
            return Err(Error::bad_shape(
                "avg_pool2x2",
                self.shape(),
                "height and width must be at least 2",
            ));
        }
        let _t = profile::op("avg_pool2x2");
        let storage = match &*self.storage() {
            Storage::Cpu(x) => Storage::Cpu(avg_pool2x2_cpu(x, (n, c, h, w))),
            Storage::Gpu(x) => Storage::Gpu(pool_gpu(
                "avg_pool2x2",
                &AVG_POOL,
                x,
                (n * c, h, w),
                (h / 2, w / 2),
            )?),
        };
        Ok(Tensor::from_op(
            storage,
            Shape::from([n, c, h / 2, w / 2]),
            Op::AvgPool2x2 {
                input: self.clone(),
            },
        ))
    }

    /// Nearest-neighbour upsampling by 2 (`nn.Upsample(scale_factor=2, mode="nearest")`).
    pub fn upsample_nearest2x(&self) -> Result<Tensor> {
        let (_, _, h, w) = self.shape().dims4("upsample_nearest2x")?;
        self.upsample_nearest2x_to(2 * h, 2 * w)
    }

    /// Nearest 2x upsampling to `out_h x out_w` (each `2*H` or `2*H + 1`; the extra row or
    /// column is zero). Used as the adjoint of pooling an odd-sized input.
    pub fn upsample_nearest2x_to(&self, out_h: usize, out_w: usize) -> Result<Tensor> {
        let (n, c, h, w) = self.shape().dims4("upsample_nearest2x")?;
        if !(out_h == 2 * h || out_h == 2 * h + 1) || !(out_w == 2 * w || out_w == 2 * w + 1) {
            return Err(Error::bad_shape(
                "upsample_nearest2x",
                self.shape(),
                format!("output {out_h}x{out_w} is not 2x the input (+1 at most)"),
            ));
        }
        let _t = profile::op("upsample_nearest2x");
        let storage = match &*self.storage() {
            Storage::Cpu(x) => Storage::Cpu(upsample_cpu(x, (n, c, h, w), out_h, out_w)),
            Storage::Gpu(x) => Storage::Gpu(pool_gpu(
                "upsample_nearest2x",
                &UPSAMPLE,
                x,
                (n * c, h, w),
                (out_h, out_w),
            )?),
        };
        Ok(Tensor::from_op(
            storage,
            Shape::from([n, c, out_h, out_w]),
            Op::UpsampleNearest2x {
                input: self.clone(),
                out_h,
                out_w,
            },
        ))
    }
}
