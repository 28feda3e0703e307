//! The GPU backend: hand-written WGSL kernels (`shaders/*.wgsl`) dispatched through wgpu, so
//! the same tensor code runs on Vulkan, Metal, DX12 or GL, and, with Mesa's lavapipe, on a
//! machine with no GPU at all (CI).
//!
//! How a GPU op runs, in the order a reader meets it in an op file (`src/ops/*.rs`):
//!
//! 1. The op checks shapes on the host, as on the CPU.
//! 2. Its `Storage::Gpu` arm takes an output buffer from the device's pool
//!    ([`GpuDevice::alloc`]; buffers come back to the pool when their tensor is dropped).
//! 3. It fills a parameter block (a `#[repr(C)]` struct from [`params`], whose layout a unit test
//!    checks against the WGSL struct of the same name) and calls [`GpuDevice::dispatch`] with a
//!    [`KernelSpec`]: shader file, entry point, bindings. Pipelines are created once per
//!    (shader, entry point, override constants) and cached.
//! 4. The dispatch is *recorded*, not run: commands queue up in a batch and are encoded into one
//!    command buffer per submit ([`GpuDevice::flush`]). Only reading data back
//!    ([`GpuDevice::read`], behind `Tensor::to_vec`) waits for the GPU, so a training step runs
//!    without a round trip to the host until its scalar loss is asked for.
//!
//! Errors: wgpu reports validation and out-of-memory errors through error scopes; they come back
//! as [`Error::Gpu`] naming the op. Ops whose API cannot fail (`relu`, `zeros`, ...) keep the
//! first such error on the device, and the next fallible GPU op (or [`GpuDevice::check`])
//! returns it, like an asynchronous CUDA error. Set `GANFORGE_GPU_SYNC=1` to submit after
//! every dispatch so an error names exactly the op that caused it, and `GANFORGE_TRACE=1` to
//! print each dispatch (op, kernel key, workgroups; with both set, also its GPU time in ms).

mod context;
mod kernel;
pub mod params;
mod pool;

pub use context::{transfer_stats, GpuInfo, TransferStats};
pub use kernel::{Access, KernelSpec, Shader};

use crate::error::{Error, GpuErrorKind, Result};
use context::Context;
use std::sync::{Arc, OnceLock};

/// Threads per workgroup of the elementwise kernels (the portable WebGPU maximum).
pub const WORKGROUP: u32 = 256;

/// Most dims an elementwise/gather/reduce kernel takes (after merging contiguous dims).
pub const MAX_DIMS: usize = 8;

/// A handle to one GPU (adapter, device, queue, buffer pool, pipeline cache and the batch of
/// recorded commands). Cheap to clone; clones share everything. Two handles are equal when they
/// are the same device.
#[derive(Clone)]
pub struct GpuDevice {
    ctx: Arc<Context>,
}

impl PartialEq for GpuDevice {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.ctx, &other.ctx)
    }
}
impl Eq for GpuDevice {}

impl std::fmt::Debug for GpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = &self.ctx.info;
        write!(f, "GpuDevice({}, {})", i.name, i.backend)
    }
}

static SHARED: OnceLock<std::result::Result<GpuDevice, String>> = OnceLock::new();

impl GpuDevice {
    /// The process-wide GPU device, created on first use: the adapter wgpu prefers
    /// (high-performance first; `WGPU_BACKEND=vulkan|gl|metal|dx12` restricts the backends).
    /// Errors with [`Error::GpuUnavailable`] and wgpu's reason when no adapter is found.
    pub fn shared() -> Result<GpuDevice> {
        SHARED
            .get_or_init(|| {
                Context::new()
                    .map(|ctx| GpuDevice { ctx: Arc::new(ctx) })
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(Error::GpuUnavailable)
    }

    /// The adapter's name, backend, device type and limits.
    pub fn info(&self) -> &GpuInfo {
        &self.ctx.info
    }

    /// A buffer of `len` f32 elements from the pool; contents unspecified (the kernel that
    /// receives it writes every element). Allocation failures are kept (see the module doc).
    pub fn alloc(&self, op: &'static str, len: usize) -> GpuBuffer {
        let raw = self.ctx.alloc(op, len);
        GpuBuffer {
            raw: Some(raw),
            len,
            dev: self.clone(),
        }
    }

    /// A buffer of `len` zeros (a pooled buffer cleared on the GPU, in order with the batch).
    pub fn zeros(&self, op: &'static str, len: usize) -> GpuBuffer {
        let b = self.alloc(op, len);
        self.ctx.clear(op, b.raw());
        b
    }

    /// A new buffer holding `data` (f32 or u32 words).
    pub fn upload<T: bytemuck::Pod>(&self, op: &'static str, data: &[T]) -> GpuBuffer {
        crate::profile::check_timed(op);
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let b = self.alloc(op, bytes.len() / 4);
        self.ctx.write(op, b.raw(), bytes);
        b
    }

    /// Overwrites `dst` with `data` (same length), in order with the recorded commands.
    pub fn write(&self, op: &'static str, dst: &GpuBuffer, data: &[f32]) {
        self.ctx.write(op, dst.raw(), bytemuck::cast_slice(data));
    }

    /// `dst[..] = src[..]` (same length), in order with the recorded commands.
    pub fn copy(&self, op: &'static str, src: &GpuBuffer, dst: &GpuBuffer) {
        self.ctx
            .copy(op, src.raw(), dst.raw(), (src.len.min(dst.len) * 4) as u64);
    }

    /// Records one dispatch of `spec` with override `constants`, the parameter block `params`
    /// and the storage `buffers` in the order of `spec.storage`. Nothing runs until the batch
    /// is flushed. Errors (pipeline creation, a full batch that failed to submit) are kept and
    /// returned by the next [`GpuDevice::check`].
    pub fn dispatch<P: bytemuck::Pod>(
        &self,
        op: &'static str,
        spec: &KernelSpec,
        constants: &[(&'static str, f64)],
        params: &P,
        buffers: &[&GpuBuffer],
        groups: [u32; 3],
    ) {
        crate::profile::check_timed(op);
        if groups.contains(&0) {
            return;
        }
        let raw: Vec<(&wgpu::Buffer, u64)> = buffers
            .iter()
            .map(|b| (b.raw(), (b.len.max(1) * 4) as u64))
            .collect();
        self.ctx.dispatch(
            op,
            spec,
            constants,
            bytemuck::bytes_of(params),
            &raw,
            groups,
        );
    }

    /// Submits every recorded command and waits until the GPU has run all of it: what the
    /// profiler calls before and after each op so that the op's time is its kernels' time.
    /// Cheap when the GPU is already idle. A failure is kept for the next check.
    pub fn wait_idle(&self) {
        self.ctx.wait_idle("wait_idle");
    }

    /// Submits every recorded command (one command buffer). Returns the first error kept since
    /// the last check, naming the op.
    pub fn flush(&self, op: &'static str) -> Result<()> {
        self.ctx.flush(op);
        self.check(op)
    }

    /// Returns (and clears) the first GPU error kept since the last check.
    pub fn check(&self, _op: &'static str) -> Result<()> {
        match self.ctx.take_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits for every recorded command and copies `buf` back to the host: the only place the
    /// host waits for the GPU.
    pub fn read(&self, op: &'static str, buf: &GpuBuffer) -> Result<Vec<f32>> {
        let bytes = self.ctx.read(op, buf.raw(), (buf.len * 4) as u64)?;
        self.check(op)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Like [`GpuDevice::read`] for a buffer of u32 words (argmax indices).
    pub fn read_u32(&self, op: &'static str, buf: &GpuBuffer) -> Result<Vec<u32>> {
        let bytes = self.ctx.read(op, buf.raw(), (buf.len * 4) as u64)?;
        self.check(op)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Keeps `e` to be returned by the next check (used by ops that cannot fail).
    pub fn keep_error(&self, e: Error) {
        self.ctx.keep_error(e);
    }

    /// Buffer pool counters: (hits, misses, bytes held for reuse).
    pub fn pool_stats(&self) -> (u64, u64, u64) {
        self.ctx.pool.lock().unwrap().stats()
    }

    /// Number of compute pipelines created so far (each is created once and cached).
    pub fn pipelines_created(&self) -> usize {
        self.ctx.pipelines_created()
    }
}

/// The data of a tensor on a GPU: `len` f32 elements in a storage buffer from the device's
/// pool. Dropping it gives the buffer back to the pool; commands already recorded that use it
/// still run first, because the GPU executes commands in recording order. Cloning copies the
/// data into a new buffer.
pub struct GpuBuffer {
    raw: Option<wgpu::Buffer>,
    len: usize,
    dev: GpuDevice,
}

impl GpuBuffer {
    /// Number of f32 elements.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The device it lives on.
    pub fn device(&self) -> &GpuDevice {
        &self.dev
    }
    fn raw(&self) -> &wgpu::Buffer {
        self.raw
            .as_ref()
            .expect("a live buffer has its wgpu buffer")
    }
    /// A copy of the data on the host (waits for the GPU).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        self.dev.read("to_vec", self)
    }
}

impl Clone for GpuBuffer {
    fn clone(&self) -> Self {
        let out = self.dev.alloc("clone", self.len);
        self.dev.copy("clone", self, &out);
        out
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(raw) = self.raw.take() {
            self.dev.ctx.pool.lock().unwrap().recycle(raw);
        }
    }
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuffer(len={}, {:?})", self.len, self.dev)
    }
}

/// Workgroup counts `[x, y, 1]` covering `n` items at `per_group` items per workgroup; `y > 1`
/// once `x` reaches the 65535 per-dimension limit. Kernels recover the linear index as
/// `gid.x + gid.y * nwg.x * per_group` (or `wid.x + wid.y * nwg.x` for one item per group).
pub fn groups_for(n: usize, per_group: u32) -> [u32; 3] {
    let groups = n.div_ceil(per_group as usize).max(1);
    let x = groups.min(65535);
    let y = groups.div_ceil(x);
    [x as u32, y as u32, 1]
}

pub use super::merge_dims;

/// Packs up to [`MAX_DIMS`] values into the `array<vec4<u32>, 2>` of a parameter block.
pub fn pack8(v: &[usize]) -> [[u32; 4]; 2] {
    let mut out = [[0u32; 4]; 2];
    for (i, &x) in v.iter().enumerate().take(MAX_DIMS) {
        out[i / 4][i % 4] = x as u32;
    }
    out
}

/// Packs up to 4 values into a `vec4<u32>`.
pub fn pack4(v: &[usize]) -> [u32; 4] {
    let mut out = [0u32; 4];
    for (i, &x) in v.iter().enumerate().take(4) {
        out[i] = x as u32;
    }
    out
}

/// The error for a shape whose merged rank exceeds what the kernel takes.
pub fn too_many_dims(op: &'static str, rank: usize) -> Error {
    Error::Gpu {
        op,
        kind: GpuErrorKind::Unsupported,
        msg: format!("{rank} non-mergeable dims; the GPU kernel takes at most {MAX_DIMS}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_dims_joins_contiguous_runs() {
        // Same shape: everything merges into one dim.
        let (d, s) = merge_dims(&[2, 3, 4], &[vec![12, 4, 1], vec![12, 4, 1]]);
        assert_eq!((d, s), (vec![24], vec![vec![1], vec![1]]));
        // A bias [1, C, 1, 1] against [N, C, H, W]: three runs remain.
        let (d, s) = merge_dims(&[2, 3, 4, 5], &[vec![60, 20, 5, 1], vec![0, 1, 0, 0]]);
        assert_eq!(d, vec![2, 3, 20]);
        assert_eq!(s, vec![vec![60, 20, 1], vec![0, 1, 0]]);
        // All ones.
        let (d, s) = merge_dims(&[1, 1], &[vec![1, 1]]);
        assert_eq!((d, s), (vec![1], vec![vec![0]]));
    }

    #[test]
    fn groups_cover_large_counts() {
        assert_eq!(groups_for(1, 256), [1, 1, 1]);
        assert_eq!(groups_for(257, 256), [2, 1, 1]);
        let [x, y, _] = groups_for(70000 * 256, 256);
        assert!(x as usize * y as usize >= 70000 && x <= 65535);
    }
}
