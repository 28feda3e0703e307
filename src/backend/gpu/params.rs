//! Shader parameter blocks, defined once in Rust. Each struct here is the `var<uniform>` block
//! of a kernel: `#[repr(C)]` and `bytemuck::Pod`, uploaded byte for byte. The WGSL struct of the
//! same name in the listed shader files must have the same members at the same offsets: the
//! unit test below parses each shader with naga and compares its layout (member names,
//! offsets, size) with `offset_of!` and `size_of` here, so host and shader cannot drift apart.
//!
//! Layout rule used throughout: scalars (`u32`/`f32`) in groups of four, then
//! `vec4<u32>` (`[u32; 4]`) or `array<vec4<u32>, 2>` (`[[u32; 4]; 2]`, up to 8 dims). WGSL aligns
//! a `vec4` to 16 bytes, so a group of fewer than four scalars would shift it; padding members
//! are named `pad*` in both languages.

macro_rules! param_blocks {
    ($(
        $(#[$meta:meta])*
        $name:ident in [$($file:literal),+] {
            $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)?
        }
    )*) => {
        $(
            $(#[$meta])*
            #[repr(C)]
            #[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
            pub struct $name {
                $($(#[$fmeta])* pub $field: $ty,)*
            }
        )*

        /// Name, shader files, size and `(member, offset)` list of every block, for the
        /// layout test.
        #[cfg(test)]
        pub(crate) fn layouts() -> Vec<BlockLayout> {
            vec![$(BlockLayout {
                name: stringify!($name),
                files: &[$($file),+],
                size: std::mem::size_of::<$name>(),
                fields: vec![$((stringify!($field), std::mem::offset_of!($name, $field))),*],
            }),*]
        }
    };
}

/// The Rust side of one block, as the layout test sees it.
#[cfg(test)]
pub(crate) struct BlockLayout {
    pub name: &'static str,
    pub files: &'static [&'static str],
    pub size: usize,
    pub fields: Vec<(&'static str, usize)>,
}

param_blocks! {
    /// `binary.wgsl`: broadcasting binary op over merged dims (see `merge_dims`).
    BinaryParams in ["binary.wgsl"] {
        /// Output elements.
        n: u32,
        /// Merged output rank (1..=8).
        rank: u32,
        /// Padding.
        pad0: u32,
        /// Padding.
        pad1: u32,
        /// Output dims, outermost first.
        dims: [[u32; 4]; 2],
        /// lhs strides per output dim (0 where broadcast).
        lhs_strides: [[u32; 4]; 2],
        /// rhs strides per output dim (0 where broadcast).
        rhs_strides: [[u32; 4]; 2],
    }

    /// `unary.wgsl`: pointwise function with up to two scalar parameters.
    UnaryParams in ["unary.wgsl"] {
        /// Elements.
        n: u32,
        /// First parameter (slope, exponent, min, multiplier).
        a: f32,
        /// Second parameter (max, offset).
        b: f32,
        /// Padding.
        pad0: u32,
    }

    /// `inplace.wgsl`: fill, axpby, in-place clamp/affine.
    InplaceParams in ["inplace.wgsl"] {
        /// Elements.
        n: u32,
        /// Fill value, or `a` of `a * dst + b * (c * src)`, or the first unary parameter.
        a: f32,
        /// `b`, or the second unary parameter.
        b: f32,
        /// `c`.
        c: f32,
    }

    /// `reduce.wgsl` sum: kept and reduced dims with their input strides.
    SumParams in ["reduce.wgsl"] {
        /// Output elements.
        out_count: u32,
        /// Elements summed per output.
        red_count: u32,
        /// Merged rank of the kept dims.
        kept_rank: u32,
        /// Merged rank of the reduced dims.
        red_rank: u32,
        /// Kept dims.
        kept_dims: [[u32; 4]; 2],
        /// Input strides of the kept dims.
        kept_strides: [[u32; 4]; 2],
        /// Reduced dims.
        red_dims: [[u32; 4]; 2],
        /// Input strides of the reduced dims.
        red_strides: [[u32; 4]; 2],
    }

    /// `reduce.wgsl` max over one dim of `[outer, d, inner]`.
    MaxParams in ["reduce.wgsl"] {
        /// Product of the dims before.
        outer: u32,
        /// The reduced dim.
        d: u32,
        /// Product of the dims after.
        inner: u32,
        /// Padding.
        pad0: u32,
    }

    /// `shape.wgsl` gather (permute, broadcast).
    GatherParams in ["shape.wgsl"] {
        /// Output elements.
        n: u32,
        /// Merged rank.
        rank: u32,
        /// Padding.
        pad0: u32,
        /// Padding.
        pad1: u32,
        /// Output dims.
        dims: [[u32; 4]; 2],
        /// Source strides per output dim.
        src_strides: [[u32; 4]; 2],
    }

    /// `shape.wgsl` copy_block (concat, narrow, pad).
    CopyBlockParams in ["shape.wgsl"] {
        /// Product of the dims before.
        outer: u32,
        /// Product of the dims after.
        inner: u32,
        /// Source size of the dim.
        d_in: u32,
        /// Destination size of the dim.
        d_out: u32,
        /// First source slice.
        src_start: u32,
        /// First destination slice.
        dst_start: u32,
        /// Slices copied.
        len: u32,
        /// Elements copied (`outer * len * inner`).
        n: u32,
    }

    /// `shape.wgsl` index_select / index_add.
    IndexParams in ["shape.wgsl"] {
        /// Product of the dims before.
        outer: u32,
        /// Product of the dims after.
        inner: u32,
        /// Input size of the dim.
        d_in: u32,
        /// Output size of the dim.
        d_out: u32,
        /// Number of indices.
        n_idx: u32,
        /// Output elements.
        n: u32,
        /// Padding.
        pad0: u32,
        /// Padding.
        pad1: u32,
    }

    /// `matmul.wgsl`.
    MatmulParams in ["matmul.wgsl"] {
        /// Rows of the product.
        m: u32,
        /// Columns of the product.
        n: u32,
        /// Inner dim.
        k: u32,
        /// Merged batch rank (0..=4).
        batch_rank: u32,
        /// Batch dims of the output.
        batch_dims: [u32; 4],
        /// lhs batch strides, in matrices (0 where broadcast).
        lhs_batch_strides: [u32; 4],
        /// rhs batch strides, in matrices (0 where broadcast).
        rhs_batch_strides: [u32; 4],
    }

    /// `conv2d.wgsl` and `conv_transpose2d.wgsl`: the geometry of a convolution (`n, c_in, h,
    /// w` of its input, `c_out, oh, ow` of its output).
    ConvParams in ["conv2d.wgsl", "conv_transpose2d.wgsl"] {
        /// Batch.
        n: u32,
        /// Input channels.
        c_in: u32,
        /// Input height.
        h: u32,
        /// Input width.
        w: u32,
        /// Output channels.
        c_out: u32,
        /// Kernel height.
        kh: u32,
        /// Kernel width.
        kw: u32,
        /// Stride.
        stride: u32,
        /// Zero padding.
        padding: u32,
        /// Output height.
        oh: u32,
        /// Output width.
        ow: u32,
        /// Slices of the GEMM depth run as separate workgroups (`conv2d_weight_grad`'s split-K:
        /// slice z sums its part of `N*OH*OW` into its own `[C_out, C_in*KH*KW]` block); 0 or
        /// 1 = one slice. Unused by the other kernels.
        k_split: u32,
    }

    /// `batch_norm.wgsl`: `[N, C, S]` and eps.
    BnParams in ["batch_norm.wgsl"] {
        /// Batch.
        n: u32,
        /// Channels.
        c: u32,
        /// Values per (n, c) plane.
        s: u32,
        /// Added to the variance.
        eps: f32,
    }

    /// `pool.wgsl`.
    PoolParams in ["pool.wgsl"] {
        /// `N * C`.
        planes: u32,
        /// Input height.
        h: u32,
        /// Input width.
        w: u32,
        /// Output height.
        oh: u32,
        /// Output width.
        ow: u32,
        /// Output elements.
        total: u32,
        /// Padding.
        pad0: u32,
        /// Padding.
        pad1: u32,
    }

    /// `optim.wgsl` adam (factors as in `src/optim/adam.rs`).
    AdamParams in ["optim.wgsl"] {
        /// Elements.
        n: u32,
        /// `lr / (1 - beta1^t)`.
        step_size: f32,
        /// `sqrt(1 - beta2^t)`.
        bc2_sqrt: f32,
        /// `1 - beta1` (lerp weight).
        w1: f32,
        /// `1 - beta2`.
        w2: f32,
        /// beta2.
        beta2: f32,
        /// eps.
        eps: f32,
        /// weight decay.
        wd: f32,
    }

    /// `optim.wgsl` sgd_plain / sgd_momentum.
    SgdParams in ["optim.wgsl"] {
        /// Elements.
        n: u32,
        /// Learning rate.
        lr: f32,
        /// Momentum.
        momentum: f32,
        /// `1 - dampening`.
        keep: f32,
        /// Weight decay.
        wd: f32,
        /// Nesterov (0/1).
        nesterov: u32,
        /// First step: the buffer is set to the gradient (0/1).
        first: u32,
        /// Padding.
        pad0: u32,
    }

    /// `optim.wgsl` rmsprop.
    RmsPropParams in ["optim.wgsl"] {
        /// Elements.
        n: u32,
        /// Learning rate.
        lr: f32,
        /// alpha.
        alpha: f32,
        /// `1 - alpha`.
        w: f32,
        /// eps.
        eps: f32,
        /// Weight decay.
        wd: f32,
        /// Momentum.
        momentum: f32,
        /// Centered (0/1).
        centered: u32,
        /// Momentum > 0 (0/1).
        has_momentum: u32,
        /// Padding.
        pad0: u32,
        /// Padding.
        pad1: u32,
        /// Padding.
        pad2: u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::naga;

    fn shader_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders")
    }

    fn parse(file: &str) -> (naga::Module, String) {
        let path = shader_dir().join(file);
        let src =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{file}: {}", e.emit_to_string(&src)));
        (module, src)
    }

    /// Every `.wgsl` file in `shaders/` parses and passes naga's validation (the checks wgpu
    /// runs when it creates a shader module), without a GPU. Also enforces the portable
    /// workgroup-memory budget (16 KiB per module), which wgpu does not check.
    #[test]
    fn every_shader_parses_and_validates() {
        let mut files: Vec<_> = std::fs::read_dir(shader_dir())
            .expect("shaders/ exists")
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
            .collect();
        files.sort();
        assert!(files.len() >= 10, "found only {files:?}");
        for path in files {
            let file = path.file_name().unwrap().to_str().unwrap().to_string();
            let (module, src) = parse(&file);
            let mut validator = naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::default(),
            );
            let info = validator
                .validate(&module)
                .unwrap_or_else(|e| panic!("{file}: {}", e.emit_to_string(&src)));
            let mut layouter = naga::proc::Layouter::default();
            layouter.update(module.to_ctx()).unwrap();
            // Per entry point: the workgroup variables it uses.
            for (i, entry) in module.entry_points.iter().enumerate() {
                let uses = info.get_entry_point(i);
                let workgroup_bytes: u32 = module
                    .global_variables
                    .iter()
                    .filter(|(h, g)| {
                        g.space == naga::AddressSpace::WorkGroup && !uses[*h].is_empty()
                    })
                    .map(|(_, g)| layouter[g.ty].size)
                    .sum();
                assert!(
                    workgroup_bytes <= 16384,
                    "{file} {}: {workgroup_bytes} bytes of workgroup memory (portable limit 16 KiB)",
                    entry.name
                );
            }
        }
    }

    /// Each Rust parameter block has the layout of the WGSL struct of the same name in every
    /// shader that declares it, and every uniform block in a shader has a Rust definition.
    #[test]
    fn parameter_blocks_match_their_wgsl_structs() {
        let layouts = layouts();
        for l in &layouts {
            for file in l.files {
                let (module, _) = parse(file);
                let mut layouter = naga::proc::Layouter::default();
                layouter.update(module.to_ctx()).unwrap();
                let (handle, ty) = module
                    .types
                    .iter()
                    .find(|(_, t)| t.name.as_deref() == Some(l.name))
                    .unwrap_or_else(|| panic!("{file} has no struct {}", l.name));
                let naga::TypeInner::Struct { members, span } = &ty.inner else {
                    panic!("{file}: {} is not a struct", l.name);
                };
                let wgsl: Vec<(String, usize)> = members
                    .iter()
                    .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
                    .collect();
                let rust: Vec<(String, usize)> =
                    l.fields.iter().map(|(n, o)| (n.to_string(), *o)).collect();
                assert_eq!(rust, wgsl, "{file}: members of {}", l.name);
                assert_eq!(
                    l.size, *span as usize,
                    "{file}: size of {} (WGSL span)",
                    l.name
                );
                assert_eq!(layouter[handle].size as usize, l.size, "{file}: {}", l.name);
            }
        }
        // The other direction: no uniform block without a Rust twin.
        for entry in std::fs::read_dir(shader_dir()).unwrap() {
            let file = entry.unwrap().file_name().to_str().unwrap().to_string();
            if !file.ends_with(".wgsl") {
                continue;
            }
            let (module, _) = parse(&file);
            for (_, g) in module.global_variables.iter() {
                if g.space == naga::AddressSpace::Uniform {
                    let name = module.types[g.ty].name.clone().unwrap_or_default();
                    assert!(
                        layouts
                            .iter()
                            .any(|l| l.name == name && l.files.contains(&file.as_str())),
                        "{file}: uniform struct {name} has no Rust block listing this file"
                    );
                }
            }
        }
    }
}
