// Elementwise binary arithmetic with NumPy broadcasting (src/ops/elementwise.rs).
//
// Buffers: lhs, rhs: any shapes that broadcast to the output; out: [n], row-major.
// Index formula, with idx_d(i) the multi-index of i over `dims` (outermost first):
//   out[i] = OP(lhs[sum_d idx_d(i) * lhs_strides[d]], rhs[sum_d idx_d(i) * rhs_strides[d]])
// A broadcast dim has stride 0. The host merges dims that are contiguous in both operands
// (`merge_dims`), so a same-shape op arrives with rank 1.
// OP (override constant, one pipeline each): 0 add, 1 sub, 2 mul, 3 div.

struct BinaryParams {
    n: u32,
    rank: u32,
    pad0: u32,
    pad1: u32,
    dims: array<vec4<u32>, 2>,
    lhs_strides: array<vec4<u32>, 2>,
    rhs_strides: array<vec4<u32>, 2>,
}

override OP: u32 = 0u;

@group(0) @binding(0) var<storage, read> lhs: array<f32>;
@group(0) @binding(1) var<storage, read> rhs: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: BinaryParams;

fn apply(a: f32, b: f32) -> f32 {
    switch OP {
        case 0u: { return a + b; }
        case 1u: { return a - b; }
        case 2u: { return a * b; }
        default: { return a / b; }
    }
}

// binary: out[i] = OP(lhs[lhs_at(i)], rhs[rhs_at(i)]), out: [n], offsets from the broadcast strides.
@compute @workgroup_size(256)
fn binary(@builtin(global_invocation_id) gid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) {
        return;
    }
    // Peel the multi-index off i, innermost dim first.
    var rem = i;
    var lhs_at = 0u;
    var rhs_at = 0u;
    for (var d = p.rank; d > 0u; d--) {
        let dim = d - 1u;
        let size = p.dims[dim / 4u][dim % 4u];
        let idx = rem % size;
        rem = rem / size;
        lhs_at += idx * p.lhs_strides[dim / 4u][dim % 4u];
        rhs_at += idx * p.rhs_strides[dim / 4u][dim % 4u];
    }
    out[i] = apply(lhs[lhs_at], rhs[rhs_at]);
}
