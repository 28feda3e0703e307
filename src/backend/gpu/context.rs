//! The wgpu objects behind a [`GpuDevice`](super::GpuDevice): adapter and device creation, the
//! shader-module and pipeline caches, the batch of recorded commands and its submission, and
//! reading buffers back. Every wgpu call that can fail runs inside an error scope, so its error
//! becomes an [`Error::Gpu`] naming the op instead of wgpu's default panic.

use super::kernel::{Access, KernelSpec, Shader};
use super::pool::BufferPool;
use crate::error::{Error, GpuErrorKind, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

thread_local! {
    /// The first GPU error this thread ran into and has not reported yet. Per thread, like
    /// wgpu's error scopes: a failing op on one thread is reported on that thread, not by an
    /// unrelated op on another that shares the device.
    static KEPT: RefCell<Option<Error>> = const { RefCell::new(None) };
    /// Host <-> GPU copies made by this thread.
    static TRANSFERS: std::cell::Cell<TransferStats> = const {
        std::cell::Cell::new(TransferStats { uploads: 0, upload_bytes: 0, readbacks: 0, readback_bytes: 0 })
    };
}

/// Counts of the copies between host and GPU made by the calling thread (uploads of host data,
/// readbacks to the host), to check that a training step keeps its tensors on the GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// Host-to-GPU copies (`from_vec_on`, `to_device`, random tensors, index lists).
    pub uploads: u64,
    /// Bytes uploaded.
    pub upload_bytes: u64,
    /// GPU-to-host copies (`to_vec`, `to_scalar`, argmax for a recorded max).
    pub readbacks: u64,
    /// Bytes read back.
    pub readback_bytes: u64,
}

/// The calling thread's transfer counters since it started.
pub fn transfer_stats() -> TransferStats {
    TRANSFERS.with(|t| t.get())
}

fn count(upload: bool, bytes: u64) {
    TRANSFERS.with(|t| {
        let mut s = t.get();
        if upload {
            s.uploads += 1;
            s.upload_bytes += bytes;
        } else {
            s.readbacks += 1;
            s.readback_bytes += bytes;
        }
        t.set(s);
    });
}
use wgpu::util::DeviceExt;

/// What wgpu says about the adapter in use.
#[derive(Clone, Debug)]
pub struct GpuInfo {
    /// Adapter name, e.g. `NVIDIA H100 80GB HBM3` or `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub name: String,
    /// `Vulkan`, `Metal`, `Dx12` or `Gl`.
    pub backend: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `Cpu` (a software rasteriser such as lavapipe), ...
    pub device_type: String,
    /// Driver name and version.
    pub driver: String,
    /// Largest storage-buffer binding, bytes (the largest tensor a kernel can take).
    pub max_storage_binding: u64,
}

impl std::fmt::Display for GpuInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {})", self.name, self.backend, self.device_type)?;
        if self.device_type == "Cpu" {
            write!(f, " [a CPU emulation of a GPU: correct, not fast]")?;
        }
        Ok(())
    }
}

/// A compiled kernel: its pipeline and the layout its bind groups are made with.
pub(crate) struct Pipeline {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    storage: Vec<u32>,
    uniform: u32,
}

/// One recorded command.
enum Cmd {
    Dispatch {
        pipeline: Arc<Pipeline>,
        buffers: Vec<(wgpu::Buffer, u64)>,
        /// Byte range of the parameter block in the batch's uniform buffer.
        params: (u64, u64),
        groups: [u32; 3],
    },
    Copy {
        src: wgpu::Buffer,
        dst: wgpu::Buffer,
        size: u64,
    },
    Clear {
        buf: wgpu::Buffer,
    },
}

/// Commands recorded since the last submit, with their parameter blocks packed into one
/// byte vector (each block at a multiple of the uniform offset alignment).
#[derive(Default)]
struct Batch {
    cmds: Vec<Cmd>,
    params: Vec<u8>,
    dispatches: usize,
    ops: Vec<&'static str>,
}

pub(crate) struct Context {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pub(crate) info: GpuInfo,
    limits: wgpu::Limits,
    pub(crate) pool: Mutex<BufferPool>,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: RwLock<HashMap<String, Arc<Pipeline>>>,
    batch: Mutex<Batch>,
    /// Where wgpu's uncaptured errors land (errors outside any scope; thread unknown).
    error: Arc<Mutex<Option<Error>>>,
    /// Submit after every dispatch (`GANFORGE_GPU_SYNC=1`).
    sync: bool,
    /// Print every dispatch (`GANFORGE_TRACE=1`); with `GANFORGE_GPU_SYNC=1` also its time.
    trace: bool,
    /// Submit once this many dispatches are recorded (`GANFORGE_GPU_BATCH`, default 256).
    max_pending: usize,
    /// Work was submitted since the last [`Context::wait_idle`].
    in_flight: std::sync::atomic::AtomicBool,
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

fn gpu_error(op: &'static str, e: wgpu::Error, context: &str) -> Error {
    let (kind, msg) = match &e {
        wgpu::Error::OutOfMemory { .. } => (GpuErrorKind::OutOfMemory, e.to_string()),
        wgpu::Error::Validation { description, .. } => {
            (GpuErrorKind::Validation, description.clone())
        }
        _ => (GpuErrorKind::Internal, e.to_string()),
    };
    Error::Gpu {
        op,
        kind,
        msg: if context.is_empty() {
            msg
        } else {
            format!("{context}: {msg}")
        },
    }
}

impl Context {
    /// Instance, adapter, device and queue. Honours `WGPU_BACKEND` (through
    /// `InstanceDescriptor::new_without_display_handle_from_env`).
    pub(crate) fn new() -> std::result::Result<Context, String> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            apply_limit_buckets: false,
        }))
        .map_err(|e| e.to_string())?;
        let a = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("ganforge"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| format!("{} ({:?}): {e}", a.name, a.backend))?;
        // Errors outside any scope would panic by default; keep them for the next check.
        let error: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
        let slot = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut s = slot.lock().unwrap();
            if s.is_none() {
                *s = Some(gpu_error("gpu", e, "uncaptured"));
            }
        }));
        let info = GpuInfo {
            name: a.name.clone(),
            backend: format!("{:?}", a.backend),
            device_type: format!("{:?}", a.device_type),
            driver: format!("{} {}", a.driver, a.driver_info).trim().to_string(),
            max_storage_binding: limits.max_storage_buffer_binding_size,
        };
        let max_pending = std::env::var("GANFORGE_GPU_BATCH")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(256)
            .max(1);
        Ok(Context {
            device,
            queue,
            info,
            limits,
            pool: Mutex::new(BufferPool::new()),
            modules: Mutex::new(HashMap::new()),
            pipelines: RwLock::new(HashMap::new()),
            batch: Mutex::new(Batch::default()),
            error,
            sync: env_flag("GANFORGE_GPU_SYNC"),
            trace: env_flag("GANFORGE_TRACE"),
            max_pending,
            in_flight: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub(crate) fn keep_error(&self, e: Error) {
        KEPT.with(|k| {
            let mut k = k.borrow_mut();
            if k.is_none() {
                *k = Some(e);
            }
        });
    }

    pub(crate) fn take_error(&self) -> Option<Error> {
        KEPT.with(|k| k.borrow_mut().take())
            .or_else(|| self.error.lock().unwrap().take())
    }

    /// Runs `f` inside validation and out-of-memory error scopes; an error is kept.
    fn scoped<R>(&self, op: &'static str, context: &str, f: impl FnOnce() -> R) -> R {
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let r = f();
        if let Some(e) = pollster::block_on(oom.pop()) {
            self.keep_error(gpu_error(op, e, context));
        }
        if let Some(e) = pollster::block_on(validation.pop()) {
            self.keep_error(gpu_error(op, e, context));
        }
        r
    }

    /// A storage buffer of `len` f32 words (at least one), from the pool when one is free.
    pub(crate) fn alloc(&self, op: &'static str, len: usize) -> wgpu::Buffer {
        let bytes = (len.max(1) * 4) as u64;
        if let Some(b) = self.pool.lock().unwrap().take(bytes) {
            return b;
        }
        if bytes > self.limits.max_storage_buffer_binding_size {
            self.keep_error(Error::Gpu {
                op,
                kind: GpuErrorKind::OutOfMemory,
                msg: format!(
                    "a tensor of {len} f32 ({bytes} bytes) exceeds this adapter's largest \
                     storage binding ({} bytes)",
                    self.limits.max_storage_buffer_binding_size
                ),
            });
        }
        self.scoped(op, "allocating a buffer", || {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(op),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
    }

    /// Records a copy of `bytes` from the host into `dst` (through a staging buffer, so it
    /// happens in order with the other recorded commands).
    pub(crate) fn write(&self, op: &'static str, dst: &wgpu::Buffer, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        count(true, bytes.len() as u64);
        let staging = self.scoped(op, "uploading", || {
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("upload"),
                    contents: bytes,
                    usage: wgpu::BufferUsages::COPY_SRC,
                })
        });
        let size = bytes.len() as u64;
        self.record(
            op,
            Cmd::Copy {
                src: staging,
                dst: dst.clone(),
                size,
            },
        );
    }

    pub(crate) fn copy(&self, op: &'static str, src: &wgpu::Buffer, dst: &wgpu::Buffer, size: u64) {
        if size == 0 {
            return;
        }
        self.record(
            op,
            Cmd::Copy {
                src: src.clone(),
                dst: dst.clone(),
                size,
            },
        );
    }

    pub(crate) fn clear(&self, op: &'static str, buf: &wgpu::Buffer) {
        self.record(op, Cmd::Clear { buf: buf.clone() });
    }

    fn record(&self, op: &'static str, cmd: Cmd) {
        let mut batch = self.batch.lock().unwrap();
        batch.cmds.push(cmd);
        if batch.ops.last() != Some(&op) {
            batch.ops.push(op);
        }
        if self.sync {
            self.flush_locked(op, &mut batch);
        }
    }

    fn module(&self, shader: &'static Shader) -> wgpu::ShaderModule {
        let mut modules = self.modules.lock().unwrap();
        modules
            .entry(shader.name)
            .or_insert_with(|| {
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(shader.name),
                    source: wgpu::ShaderSource::Wgsl(shader.source.into()),
                };
                // Without the bounds checks naga would inject into every array access: on an
                // NVIDIA H200 they cost a factor of 45 (the tiled matmul at 4096^3: 378
                // GFLOP/s checked, 17.3 TFLOP/s unchecked; a W1 step 62.6 -> 5.8 ms).
                // `GANFORGE_GPU_CHECKED=1` turns them back on, to rule out an out-of-bounds
                // access when a kernel misbehaves.
                if std::env::var_os("GANFORGE_GPU_CHECKED").is_some() {
                    self.device.create_shader_module(desc)
                } else {
                    // SAFETY: every kernel in shaders/ guards each storage and workgroup index
                    // against the extents in its parameter block before it reads or writes
                    // (the parameter blocks are validated on the host, and tests/gpu_ops.rs
                    // runs each kernel on odd sizes against the CPU), so the checks naga
                    // would add are redundant.
                    unsafe {
                        self.device.create_shader_module_trusted(
                            desc,
                            wgpu::ShaderRuntimeChecks::unchecked(),
                        )
                    }
                }
            })
            .clone()
    }

    /// The cached pipeline of `spec` with `constants`, created on first use: a read lock on
    /// the fast path, then a write lock and a second look before creating it.
    fn pipeline(
        &self,
        op: &'static str,
        spec: &KernelSpec,
        constants: &[(&'static str, f64)],
    ) -> Result<Arc<Pipeline>> {
        let key = spec.key(constants);
        if let Some(p) = self.pipelines.read().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let mut cache = self.pipelines.write().unwrap();
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.module(spec.shader);
        let buffer_entry = |binding: u32, ty: wgpu::BufferBindingType| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let mut entries: Vec<wgpu::BindGroupLayoutEntry> = spec
            .storage
            .iter()
            .map(|&(b, access)| {
                buffer_entry(
                    b,
                    wgpu::BufferBindingType::Storage {
                        read_only: access == Access::Read,
                    },
                )
            })
            .collect();
        entries.push(buffer_entry(spec.uniform, wgpu::BufferBindingType::Uniform));
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(&key),
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&key),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&key),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(spec.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    // Every kernel writes its workgroup memory before reading it.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(validation.pop()) {
            return Err(gpu_error(op, e, &format!("creating kernel {key}")));
        }
        let p = Arc::new(Pipeline {
            pipeline,
            layout,
            storage: spec.storage.iter().map(|&(b, _)| b).collect(),
            uniform: spec.uniform,
        });
        cache.insert(key, p.clone());
        Ok(p)
    }

    pub(crate) fn pipelines_created(&self) -> usize {
        self.pipelines.read().unwrap().len()
    }

    pub(crate) fn dispatch(
        &self,
        op: &'static str,
        spec: &KernelSpec,
        constants: &[(&'static str, f64)],
        params: &[u8],
        buffers: &[(&wgpu::Buffer, u64)],
        groups: [u32; 3],
    ) {
        let pipeline = match self.pipeline(op, spec, constants) {
            Ok(p) => p,
            Err(e) => return self.keep_error(e),
        };
        let max_groups = self.limits.max_compute_workgroups_per_dimension;
        let problem = if buffers.len() != spec.storage.len() {
            Some(format!(
                "kernel {} takes {} buffers, {} given",
                spec.key(constants),
                spec.storage.len(),
                buffers.len()
            ))
        } else if groups.iter().any(|&g| g > max_groups) {
            Some(format!(
                "kernel {}: {groups:?} workgroups exceed the limit of {max_groups} per dimension",
                spec.key(constants)
            ))
        } else {
            buffers
                .iter()
                .find(|(_, size)| *size > self.limits.max_storage_buffer_binding_size)
                .map(|(_, size)| {
                    format!(
                        "a {size}-byte buffer exceeds the adapter's largest storage binding ({})",
                        self.limits.max_storage_buffer_binding_size
                    )
                })
        };
        if let Some(msg) = problem {
            return self.keep_error(Error::Gpu {
                op,
                kind: GpuErrorKind::Unsupported,
                msg,
            });
        }
        let trace = self.trace.then(|| {
            format!(
                "[gpu] {op:<20} {:<44} groups {}x{}x{}",
                spec.key(constants),
                groups[0],
                groups[1],
                groups[2]
            )
        });
        let align = self.limits.min_uniform_buffer_offset_alignment.max(16) as usize;
        let mut batch = self.batch.lock().unwrap();
        let offset = batch.params.len().next_multiple_of(align);
        batch.params.resize(offset, 0);
        batch.params.extend_from_slice(params);
        batch.cmds.push(Cmd::Dispatch {
            pipeline,
            buffers: buffers.iter().map(|(b, s)| ((*b).clone(), *s)).collect(),
            params: (offset as u64, params.len() as u64),
            groups,
        });
        batch.dispatches += 1;
        if batch.ops.last() != Some(&op) {
            batch.ops.push(op);
        }
        if self.sync {
            // Submit now; when tracing, wait for the GPU too, so the line can say how long
            // this one dispatch took.
            let t = std::time::Instant::now();
            self.flush_locked(op, &mut batch);
            if let Some(line) = trace {
                let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
                eprintln!("{line} {:8.3} ms", t.elapsed().as_secs_f64() * 1e3);
            }
        } else {
            if let Some(line) = trace {
                eprintln!("{line}");
            }
            if batch.dispatches >= self.max_pending {
                self.flush_locked(op, &mut batch);
            }
        }
    }

    pub(crate) fn flush(&self, op: &'static str) {
        let mut batch = self.batch.lock().unwrap();
        self.flush_locked(op, &mut batch);
    }

    /// Submits what is recorded and waits until the GPU has run everything submitted. Cheap
    /// when nothing was submitted since the last wait (a lock and a flag test), so the
    /// profiler can call it around every op. A failed wait is kept for the next check.
    pub(crate) fn wait_idle(&self, op: &'static str) {
        self.flush(op);
        if self
            .in_flight
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            if let Err(e) = self.device.poll(wgpu::PollType::wait_indefinitely()) {
                self.keep_error(Error::Gpu {
                    op,
                    kind: GpuErrorKind::Internal,
                    msg: format!("waiting for the GPU: {e}"),
                });
            }
        }
    }

    /// Encodes every recorded command into one command buffer and submits it. Consecutive
    /// dispatches share one compute pass (wgpu orders each dispatch after the writes of the
    /// previous one); copies and clears go between passes.
    fn flush_locked(&self, op: &'static str, batch: &mut Batch) {
        if batch.cmds.is_empty() {
            return;
        }
        let Batch {
            cmds, params, ops, ..
        } = std::mem::take(batch);
        let context = if ops.len() == 1 {
            String::new()
        } else {
            format!(
                "in a batch of {} commands from ops [{}] (GANFORGE_GPU_SYNC=1 names the exact op)",
                cmds.len(),
                ops.join(", ")
            )
        };
        let op = if ops.len() == 1 { ops[0] } else { op };
        self.scoped(op, &context, || {
            let params_buf = (!params.is_empty()).then(|| {
                self.device
                    .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                        label: Some("params"),
                        contents: &params,
                        usage: wgpu::BufferUsages::UNIFORM,
                    })
            });
            let bind_groups: Vec<Option<wgpu::BindGroup>> = cmds
                .iter()
                .map(|cmd| match cmd {
                    Cmd::Dispatch {
                        pipeline,
                        buffers,
                        params: (offset, size),
                        ..
                    } => {
                        let mut entries: Vec<wgpu::BindGroupEntry> = pipeline
                            .storage
                            .iter()
                            .zip(buffers)
                            .map(|(&binding, (buf, size))| wgpu::BindGroupEntry {
                                binding,
                                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                    buffer: buf,
                                    offset: 0,
                                    size: wgpu::BufferSize::new(*size),
                                }),
                            })
                            .collect();
                        entries.push(wgpu::BindGroupEntry {
                            binding: pipeline.uniform,
                            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: params_buf.as_ref().expect("dispatches have params"),
                                offset: *offset,
                                size: wgpu::BufferSize::new(*size),
                            }),
                        });
                        Some(self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                            label: None,
                            layout: &pipeline.layout,
                            entries: &entries,
                        }))
                    }
                    _ => None,
                })
                .collect();
            let mut enc = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(op) });
            let mut i = 0;
            while i < cmds.len() {
                match &cmds[i] {
                    Cmd::Dispatch { .. } => {
                        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: None,
                            timestamp_writes: None,
                        });
                        while let Some(Cmd::Dispatch {
                            pipeline, groups, ..
                        }) = cmds.get(i)
                        {
                            pass.set_pipeline(&pipeline.pipeline);
                            pass.set_bind_group(0, bind_groups[i].as_ref(), &[]);
                            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                            i += 1;
                        }
                    }
                    Cmd::Copy { src, dst, size } => {
                        enc.copy_buffer_to_buffer(src, 0, dst, 0, *size);
                        i += 1;
                    }
                    Cmd::Clear { buf } => {
                        enc.clear_buffer(buf, 0, None);
                        i += 1;
                    }
                }
            }
            self.queue.submit([enc.finish()]);
        });
        self.in_flight
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Submits everything recorded, then copies `size` bytes of `buf` to a mapped staging
    /// buffer and waits for them.
    pub(crate) fn read(&self, op: &'static str, buf: &wgpu::Buffer, size: u64) -> Result<Vec<u8>> {
        if size == 0 {
            return Ok(Vec::new());
        }
        count(false, size);
        let staging = {
            let mut batch = self.batch.lock().unwrap();
            self.flush_locked(op, &mut batch);
            self.scoped(op, "reading back", || {
                let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("readback"),
                    size,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let mut enc = self
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(op) });
                enc.copy_buffer_to_buffer(buf, 0, &staging, 0, size);
                self.queue.submit([enc.finish()]);
                staging
            })
        };
        if let Some(e) = self.take_error() {
            return Err(e);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        let map_err = |msg: String| Error::Gpu {
            op,
            kind: GpuErrorKind::Internal,
            msg: format!("reading back: {msg}"),
        };
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| map_err(e.to_string()))?;
        rx.recv()
            .map_err(|e| map_err(e.to_string()))?
            .map_err(|e| map_err(e.to_string()))?;
        let out = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| map_err(e.to_string()))?;
            view.to_vec()
        };
        staging.unmap();
        Ok(out)
    }
}
