//! Matrix product, 2-D and batched: `out[b, i, j] = sum_k lhs[b, i, k] * rhs[b, k, j]`.
//! Batch dims broadcast like elementwise ops (a 2-D rhs is shared by every batch entry).
//! Backward (autograd/rules.rs): `d_lhs = g @ rhs^T`, `d_rhs = lhs^T @ g`, each summed back to
//! its operand's shape.
//!
//! GPU kernel: `shaders/matmul.wgsl`, 64 x 64 tiles in workgroup memory with 4 x 4 register
//! blocks per thread; the four layouts are override constants (one pipeline each), so a
//! transposed operand is read in place, never copied.

use crate::backend::cpu::gemm::{gemm, MatRef};
use crate::backend::gpu::params::MatmulParams;
use crate::backend::gpu::{groups_for, merge_dims, pack4, Access, KernelSpec, Shader, WORKGROUP};
use crate::backend::{cpu, GpuBuffer, Storage};
use crate::error::{Error, GpuErrorKind, Result};
use crate::ops::Op;
use crate::profile::{self, OpCost};
use crate::tensor::{Shape, Tensor};

static MATMUL_WGSL: Shader = Shader {
    name: "matmul",
    source: include_str!("../../shaders/matmul.wgsl"),
};
const MATMUL: KernelSpec = KernelSpec {
    shader: &MATMUL_WGSL,
    entry: "matmul",
    storage: &[(0, Access::Read), (1, Access::Read), (2, Access::ReadWrite)],
    uniform: 3,
};
const MATMUL_DOT: KernelSpec = KernelSpec {
    shader: &MATMUL_WGSL,
    entry: "matmul_dot",
    storage: &[(0, Access::Read), (1, Access::Read), (2, Access::ReadWrite)],
    uniform: 3,
};
const MATMUL_THREAD: KernelSpec = KernelSpec {
    shader: &MATMUL_WGSL,
    entry: "matmul_thread",
    storage: &[(0, Access::Read), (1, Access::Read), (2, Access::ReadWrite)],
    uniform: 3,
};
const MATMUL_128: KernelSpec = KernelSpec {
    shader: &MATMUL_WGSL,
    entry: "matmul_128",
    storage: &[(0, Access::Read), (1, Access::Read), (2, Access::ReadWrite)],
    uniform: 3,
};
/// Output rows and columns per workgroup of `matmul.wgsl`'s `matmul_128`.
const WIDE_TILE: usize = 128;
/// Products with at least this many 128 x 128 blocks take `matmul_128`; smaller ones the 64 x 64
/// kernel, whose 4x more workgroups fill a large GPU better. Measured on an H200 (BENCHMARKS.md):
/// 1024^3 (64 blocks) runs at 20.5 TFLOP/s whole in `matmul_128`, 14.4 in 64 x 64 blocks, and
/// 14.3 split along K into 4 layers summed afterwards (so there is no split-K).
/// `GANFORGE_MATMUL_128_MIN_BLOCKS=B` sets it to re-measure on another GPU.
const WIDE_MIN_BLOCKS: usize = 64;

/// [`WIDE_MIN_BLOCKS`], or the value of `GANFORGE_MATMUL_128_MIN_BLOCKS` (read once).
fn wide_min_blocks() -> usize {
    static MIN: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MIN.get_or_init(|| {
        std::env::var("GANFORGE_MATMUL_128_MIN_BLOCKS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(WIDE_MIN_BLOCKS)
    })
}

/// Which `matmul.wgsl` kernel `matmul_gpu` runs a product of this size with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MatmulPlan {
    /// `matmul_dot`: one workgroup per output element.
    Dot,
    /// `matmul_thread`: one thread per output element.
    Thread,
    /// `matmul`: 64 x 64 blocks, 4 x 4 per thread.
    Tile64,
    /// `matmul_128`: 128 x 128 blocks, 8 x 8 per thread.
    Tile128,
}

impl MatmulPlan {
    fn choose(m: usize, k: usize, n: usize, batches: usize) -> MatmulPlan {
        MatmulPlan::choose_with(m, k, n, batches, wide_min_blocks())
    }

    /// The plan when products of at least `min_blocks` 128 x 128 blocks take `matmul_128`.
    fn choose_with(m: usize, k: usize, n: usize, batches: usize, min_blocks: usize) -> MatmulPlan {
        if m.min(n) < SKINNY {
            return if m * n <= 4096 && k >= 256 {
                MatmulPlan::Dot
            } else {
                MatmulPlan::Thread
            };
        }
        let blocks = m.div_ceil(WIDE_TILE) * n.div_ceil(WIDE_TILE) * batches;
        if m.min(n) >= WIDE_TILE && blocks >= min_blocks {
            MatmulPlan::Tile128
        } else {
            MatmulPlan::Tile64
        }
    }
}

/// Output rows and columns per workgroup of `matmul.wgsl`.
const MATMUL_TILE: usize = 64;
/// Below this many rows or columns a 64 x 64 tile would be mostly padding: the product takes
/// `matmul_dot` (few outputs, long K) or `matmul_thread` (one thread per output).
const SKINNY: usize = 16;

/// The GPU matmul: one dispatch of `(ceil(N/64), ceil(M/64), batches)` workgroups of the
/// tiled kernel, or one workgroup per output element for skinny products.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_gpu(
    lhs: &GpuBuffer,
    rhs: &GpuBuffer,
    layout: MatmulLayout,
    batch_shape: &Shape,
    lhs_batch_strides: &[usize],
    rhs_batch_strides: &[usize],
    m: usize,
    k: usize,
    n: usize,
) -> Result<GpuBuffer> {
    let dev = lhs.device();
    let batches = batch_shape.elem_count();
    let (bdims, bstrides) = merge_dims(
        batch_shape.dims(),
        &[lhs_batch_strides.to_vec(), rhs_batch_strides.to_vec()],
    );
    if bdims.len() > 4 || batches > 65535 {
        return Err(Error::Gpu {
            op: "matmul",
            kind: GpuErrorKind::Unsupported,
            msg: format!(
                "batch dims {:?}: the GPU kernel takes at most 4 batch dims and 65535 batches",
                batch_shape.dims()
            ),
        });
    }
    if k == 0 {
        // An empty inner dim: the product is zero.
        return Ok(dev.zeros("matmul", batches * m * n));
    }
    let plan = MatmulPlan::choose(m, k, n, batches);
    let out = dev.alloc("matmul", batches * m * n);
    let params = MatmulParams {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        batch_rank: bdims.len() as u32,
        batch_dims: pack4(&bdims),
        lhs_batch_strides: pack4(&bstrides[0]),
        rhs_batch_strides: pack4(&bstrides[1]),
    };
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let constants = [
        ("LHS_T", flag(layout.lhs_transposed)),
        ("RHS_T", flag(layout.rhs_transposed)),
    ];
    let bufs = [lhs, rhs, &out];
    let tiles = |tile: usize| [n.div_ceil(tile) as u32, m.div_ceil(tile) as u32];
    match plan {
        MatmulPlan::Dot => {
            let [x, y, _] = groups_for(m * n, 1);
            let groups = [x, y, batches as u32];
            dev.dispatch("matmul", &MATMUL_DOT, &constants, &params, &bufs, groups);
        }
        MatmulPlan::Thread => {
            let [x, y, _] = groups_for(m * n, WORKGROUP);
            let groups = [x, y, batches as u32];
            dev.dispatch("matmul", &MATMUL_THREAD, &constants, &params, &bufs, groups);
        }
        MatmulPlan::Tile64 => {
            let [x, y] = tiles(MATMUL_TILE);
            let groups = [x, y, batches as u32];
            dev.dispatch("matmul", &MATMUL, &constants, &params, &bufs, groups);
        }
        MatmulPlan::Tile128 => {
            let [x, y] = tiles(WIDE_TILE);
            let groups = [x, y, batches as u32];
            dev.dispatch("matmul", &MATMUL_128, &constants, &params, &bufs, groups);
        }
    }
    dev.check("matmul")?;
    Ok(out)
}

/// Reference kernel. `lhs: [batch.., M, K]`, `rhs: [batch.., K, N]`, `out: [batch.., M, N]`;
/// rows of `out` in parallel, i-k-j loop order so the inner loop runs along contiguous rows of
/// `rhs` and `out` (and vectorises).
#[allow(clippy::too_many_arguments)]
// The plain loop is the reference the GEMM path is tested against (see `tests` below).
#[cfg_attr(not(test), allow(dead_code))]
fn matmul_cpu_naive(
    lhs: &[f32],
    rhs: &[f32],
    batch_shape: &Shape,
    lhs_batch_strides: &[usize],
    rhs_batch_strides: &[usize],
    m: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    let batches = batch_shape.elem_count();
    let mut out = vec![0.0f32; batches * m * n];
    let bdims = batch_shape.dims();
    cpu::for_each_row(&mut out, n, |row, out_row| {
        let (b, i) = (row / m, row % m);
        // Offsets of this batch entry in each operand (stride 0 on broadcast batch dims).
        let (mut lo, mut ro, mut rem) = (0, 0, b);
        for d in (0..bdims.len()).rev() {
            let idx = rem % bdims[d];
            rem /= bdims[d];
            lo += idx * lhs_batch_strides[d];
            ro += idx * rhs_batch_strides[d];
        }
        let a_row = &lhs[lo * m * k + i * k..][..k];
        let b_mat = &rhs[ro * k * n..][..k * n];
        for (kk, &a) in a_row.iter().enumerate() {
            let b_row = &b_mat[kk * n..(kk + 1) * n];
            for (o, &bv) in out_row.iter_mut().zip(b_row) {
                *o += a * bv;
            }
        }
    });
    out
}

/// One [`gemm`] per batch entry (batch dims broadcast through the strides, as in
/// [`matmul_cpu_naive`], which stays as the reference).
#[allow(clippy::too_many_arguments)]
fn matmul_cpu_gemm(
    lhs: &[f32],
    rhs: &[f32],
    layout: MatmulLayout,
    batch_shape: &Shape,
    lhs_batch_strides: &[usize],
    rhs_batch_strides: &[usize],
    m: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    let batches = batch_shape.elem_count();
    let mut out = cpu::pool::take(batches * m * n);
    let bdims = batch_shape.dims();
    for b in 0..batches {
        let (mut lo, mut ro, mut rem) = (0, 0, b);
        for d in (0..bdims.len()).rev() {
            let idx = rem % bdims[d];
            rem /= bdims[d];
            lo += idx * lhs_batch_strides[d];
            ro += idx * rhs_batch_strides[d];
        }
        // A stored transposed ([K, M]) or B stored transposed ([N, K]) is read through a
        // transposed view: the GEMM's packing absorbs it, nothing is copied.
        let a_data = &lhs[lo * m * k..][..m * k];
        let b_data = &rhs[ro * k * n..][..k * n];
        let a = if layout.lhs_transposed {
            MatRef::row_major(a_data, m).t()
        } else {
            MatRef::row_major(a_data, k)
        };
        let bm = if layout.rhs_transposed {
            MatRef::row_major(b_data, k).t()
        } else {
            MatRef::row_major(b_data, n)
        };
        gemm(
            m,
            n,
            k,
            a,
            bm,
            &mut out[b * m * n..(b + 1) * m * n],
            n,
            false,
        );
    }
    out
}

/// Which operands of a matmul are stored transposed (their last two dims swapped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MatmulLayout {
    /// `lhs` holds `[.., K, M]`; the product uses its transpose.
    pub lhs_transposed: bool,
    /// `rhs` holds `[.., N, K]`; the product uses its transpose.
    pub rhs_transposed: bool,
}

impl MatmulLayout {
    /// The layout with the given flags.
    pub const fn new(lhs_transposed: bool, rhs_transposed: bool) -> Self {
        MatmulLayout {
            lhs_transposed,
            rhs_transposed,
        }
    }

    /// The BLAS-style code of the layout: `nn`, `nt` (rhs transposed), `tn`, `tt`.
    pub fn code(self) -> &'static str {
        match (self.lhs_transposed, self.rhs_transposed) {
            (false, false) => "nn",
            (false, true) => "nt",
            (true, false) => "tn",
            (true, true) => "tt",
        }
    }
}

// ---- cost (profiler) -------------------------------------------------------------------------

/// FLOPs of `batch` products `[M, K] x [K, N]`: `2 * batch * M * N * K` (a multiply-add is 2).
pub fn matmul_flops(batch: usize, m: usize, n: usize, k: usize) -> f64 {
    2.0 * batch as f64 * m as f64 * n as f64 * k as f64
}

/// Cost of a matmul with output `out: [.., M, N]`: [`matmul_flops`] with `K` read off the
/// stored lhs (`[.., M, K]`, or `[.., K, M]` when transposed), both operands read as stored,
/// the output written.
pub fn matmul_cost(lhs: &Shape, rhs: &Shape, layout: MatmulLayout, out: &Shape) -> OpCost {
    let d = lhs.dims();
    let k = if layout.lhs_transposed {
        d[d.len() - 2]
    } else {
        d[d.len() - 1]
    };
    let o = out.dims();
    let (m, n) = (o[o.len() - 2], o[o.len() - 1]);
    let batch: usize = o[..o.len() - 2].iter().product();
    OpCost::copy(&[lhs, rhs], out).with_flops(matmul_flops(batch, m, n, k))
}

/// Backward of `C = op(A) op(B)` (op = transpose where the layout says so), each gradient in
/// its operand's *stored* layout, again without transposed copies:
/// - `C = A B`:     `dA = g B^T`,   `dB = A^T g`
/// - `C = A B^T`:   `dA = g B`,     `dB = g^T A`
/// - `C = A^T B`:   `dA = B g^T`,   `dB = A g`
/// - `C = A^T B^T`: `dA = B^T g^T`, `dB = g^T A^T`
pub(crate) fn matmul_backward(
    lhs: &Tensor,
    rhs: &Tensor,
    layout: MatmulLayout,
    g: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let l = MatmulLayout::new;
    let (dl, dr) = match (layout.lhs_transposed, layout.rhs_transposed) {
        (false, false) => (
            g.matmul_with(rhs, l(false, true))?,
            lhs.matmul_with(g, l(true, false))?,
        ),
        (false, true) => (
            g.matmul_with(rhs, l(false, false))?,
            g.matmul_with(lhs, l(true, false))?,
        ),
        (true, false) => (
            rhs.matmul_with(g, l(false, true))?,
            lhs.matmul_with(g, l(false, false))?,
        ),
        (true, true) => (
            rhs.matmul_with(g, l(true, true))?,
            g.matmul_with(lhs, l(true, true))?,
        ),
    };
    // Broadcast batch dims were summed over nothing yet: reduce to each operand's shape.
    Ok((dl.sum_to(lhs.shape())?, dr.sum_to(rhs.shape())?))
}

impl Tensor {
    /// Matrix product of the last two dims, batch dims broadcast.
    ///
    /// ```
    /// use ganforge::Tensor;
    /// let a = Tensor::from_vec(vec![1., 2., 3., 4.], [2, 2]).unwrap();
    /// let b = Tensor::from_vec(vec![5., 6., 7., 8.], [2, 2]).unwrap();
    /// assert_eq!(a.matmul(&b).unwrap().to_vec(), vec![19., 22., 43., 50.]);
    /// ```
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.matmul_with(rhs, MatmulLayout::default())
    }

    /// Matrix product where either operand may be stored transposed: with
    /// `layout.lhs_transposed`, `self` holds `[.., K, M]` and the product uses its transpose
    /// (likewise `rhs` holding `[.., N, K]`). No transposed copy is made.
    pub fn matmul_with(&self, rhs: &Tensor, layout: MatmulLayout) -> Result<Tensor> {
        self.check_same_device("matmul", rhs)?;
        let (ls, rs) = (self.shape(), rhs.shape());
        if ls.rank() < 2 || rs.rank() < 2 {
            return Err(Error::ShapeMismatch {
                op: "matmul",
                lhs: ls.clone(),
                rhs: rs.clone(),
                hint: "both operands need at least 2 dims".into(),
            });
        }
        let last2 = |s: &Shape, transposed: bool| {
            let (a, b) = (s.dims()[s.rank() - 2], s.dims()[s.rank() - 1]);
            if transposed {
                (b, a)
            } else {
                (a, b)
            }
        };
        let (m, k) = last2(ls, layout.lhs_transposed);
        let (k2, n) = last2(rs, layout.rhs_transposed);
        if k != k2 {
            return Err(Error::ShapeMismatch {
                op: "matmul",
                lhs: ls.clone(),
                rhs: rs.clone(),
                hint: format!("inner dims differ: {k} vs {k2}"),
            });
        }
        let lb = Shape::from(&ls.dims()[..ls.rank() - 2]);
        let rb = Shape::from(&rs.dims()[..rs.rank() - 2]);
        // Report the full operand shapes, not just their batch dims.
        let batch = Shape::broadcast("matmul", &lb, &rb).map_err(|_| Error::ShapeMismatch {
            op: "matmul",
            lhs: ls.clone(),
            rhs: rs.clone(),
            hint: format!("batch dims {lb:?} and {rb:?} cannot broadcast"),
        })?;
        let (lbs, rbs) = (lb.broadcast_strides(&batch), rb.broadcast_strides(&batch));
        let _t = profile::op("matmul");
        let storage = match (&*self.storage(), &*rhs.storage()) {
            (Storage::Cpu(a), Storage::Cpu(b)) => {
                Storage::Cpu(matmul_cpu_gemm(a, b, layout, &batch, &lbs, &rbs, m, k, n))
            }
            (Storage::Gpu(a), Storage::Gpu(b)) => {
                Storage::Gpu(matmul_gpu(a, b, layout, &batch, &lbs, &rbs, m, k, n)?)
            }
            (a, b) => return Err(Error::device_mismatch("matmul", a, b)),
        };
        let mut out_dims = batch.dims().to_vec();
        out_dims.extend([m, n]);
        Ok(Tensor::from_op(
            storage,
            Shape::from(out_dims),
            Op::Matmul {
                lhs: self.clone(),
                rhs: rhs.clone(),
                layout,
            },
        ))
    }

    /// `x @ weight^T + bias` with PyTorch's Linear layout: `x: [.., in]`, `weight: [out, in]`,
    /// `bias: [out]`.
    pub fn linear(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let y = self.matmul_with(
            weight,
            MatmulLayout {
                lhs_transposed: false,
                rhs_transposed: true,
            },
        )?;
        match bias {
            Some(b) => y.add(b),
            None => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Rng;

    /// The shapes of tests/gpu_ops.rs's matmul parity test reach every GPU kernel, and the
    /// benchmark sizes take the measured ones (1024^3 and up: `matmul_128`).
    #[test]
    fn gpu_plans_of_the_parity_shapes() {
        use MatmulPlan::*;
        let cases = [
            ((1, 1, 1, 1), Thread),
            ((1, 513, 1, 1), Dot),
            ((65, 17, 130, 1), Tile64),
            ((2001, 37, 1931, 1), Tile128),
            ((130, 600, 129, 64), Tile128),
            ((200, 1100, 150, 1), Tile64),
            ((1024, 1024, 1024, 1), Tile128),
            ((512, 512, 512, 1), Tile64),
        ];
        for ((m, k, n, b), want) in cases {
            let plan = MatmulPlan::choose_with(m, k, n, b, WIDE_MIN_BLOCKS);
            assert_eq!(plan, want, "{m}x{k}x{n} batch {b}");
        }
    }

    /// The GEMM path against the naive loop, with a broadcast batch dim.
    #[test]
    fn gemm_path_matches_naive_path() {
        let mut rng = Rng::new(5);
        let (m, k, n) = (7, 33, 19);
        let lhs: Vec<f32> = (0..3 * m * k).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let rhs: Vec<f32> = (0..k * n).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let batch = Shape::from([3]);
        let (ls, rs) = (
            Shape::from([3]).broadcast_strides(&batch),
            Shape::from([1]).broadcast_strides(&batch),
        );
        let got = matmul_cpu_gemm(
            &lhs,
            &rhs,
            MatmulLayout::default(),
            &batch,
            &ls,
            &rs,
            m,
            k,
            n,
        );
        let want = matmul_cpu_naive(&lhs, &rhs, &batch, &ls, &rs, m, k, n);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
        }
    }
}
