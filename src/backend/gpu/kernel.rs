//! What a kernel is to the host: a shader file, an entry point, and its bindings. Each op file
//! declares its kernels as `const` [`KernelSpec`]s next to its CPU kernels; the pipeline cache
//! (`context.rs`) builds one compute pipeline per (shader, entry point, override constants).

/// A WGSL file from `shaders/`, compiled into the binary with `include_str!`.
#[derive(Debug)]
pub struct Shader {
    /// The file name without `.wgsl` (also the shader-module cache key).
    pub name: &'static str,
    /// The WGSL source.
    pub source: &'static str,
}

/// How a kernel uses a storage buffer (declared in the bind group layout, checked by wgpu
/// against the WGSL `var<storage, read>` / `var<storage, read_write>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `var<storage, read>`.
    Read,
    /// `var<storage, read_write>`.
    ReadWrite,
}

/// One entry point of a shader with an explicit bind group layout (group 0).
#[derive(Debug)]
pub struct KernelSpec {
    /// The shader file.
    pub shader: &'static Shader,
    /// The `@compute` function.
    pub entry: &'static str,
    /// `(binding, access)` of each storage buffer, in the order buffers are passed to
    /// `GpuDevice::dispatch`.
    pub storage: &'static [(u32, Access)],
    /// The binding of the `var<uniform>` parameter block.
    pub uniform: u32,
}

impl KernelSpec {
    /// The pipeline-cache key, also printed by `GANFORGE_TRACE=1`: `shader.entry` followed by
    /// the override constants, e.g. `unary.unary[OP=7]` or `matmul.matmul[LHS_T=0,RHS_T=1]`.
    pub fn key(&self, constants: &[(&'static str, f64)]) -> String {
        let mut key = format!("{}.{}", self.shader.name, self.entry);
        if !constants.is_empty() {
            let c: Vec<String> = constants.iter().map(|(n, v)| format!("{n}={v}")).collect();
            key.push_str(&format!("[{}]", c.join(",")));
        }
        key
    }
}
