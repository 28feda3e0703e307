// Reductions (src/ops/reduce.rs): sum over any set of dims, and max over one dim with the
// index of the first maximum.
//
// sum: x: any shape, out: [out_count] (the kept dims, reduced dims of size 1).
//   out[j] = sum_{r < red_count} x[kept_offset(j) + red_offset(r)]
//   where kept_offset peels j over kept_dims/kept_strides and red_offset peels r over
//   red_dims/red_strides (input strides; the host merges contiguous runs).
//   `sum_rows`: one workgroup per output, 256 threads stride over r, then a tree reduction in
//   workgroup memory. `sum_small`: one thread per output (for short reductions).
// max: x seen as [outer, d, inner]; out, out_idx: [outer * inner].
//   out[o * inner + i] = max_k x[(o * d + k) * inner + i], out_idx = the first such k;
//   a NaN wins over numbers (the first NaN), as on the CPU and in PyTorch.

struct SumParams {
    out_count: u32,
    red_count: u32,
    kept_rank: u32,
    red_rank: u32,
    kept_dims: array<vec4<u32>, 2>,
    kept_strides: array<vec4<u32>, 2>,
    red_dims: array<vec4<u32>, 2>,
    red_strides: array<vec4<u32>, 2>,
}

struct MaxParams {
    outer: u32,
    d: u32,
    inner: u32,
    pad0: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read_write> out_idx: array<u32>;
@group(0) @binding(3) var<uniform> sp: SumParams;
@group(0) @binding(4) var<uniform> mp: MaxParams;

const WG: u32 = 256u;
const NONE: u32 = 0xffffffffu;

var<workgroup> partial: array<f32, 256>;
var<workgroup> best_val: array<f32, 256>;
var<workgroup> best_idx: array<u32, 256>;

fn kept_offset(j: u32) -> u32 {
    var rem = j;
    var off = 0u;
    for (var d = sp.kept_rank; d > 0u; d--) {
        let dim = d - 1u;
        let size = sp.kept_dims[dim / 4u][dim % 4u];
        off += (rem % size) * sp.kept_strides[dim / 4u][dim % 4u];
        rem = rem / size;
    }
    return off;
}

fn red_offset(r: u32) -> u32 {
    var rem = r;
    var off = 0u;
    for (var d = sp.red_rank; d > 0u; d--) {
        let dim = d - 1u;
        let size = sp.red_dims[dim / 4u][dim % 4u];
        off += (rem % size) * sp.red_strides[dim / 4u][dim % 4u];
        rem = rem / size;
    }
    return off;
}

// sum_rows: out[j] = sum_r x[kept_offset(j) + red_offset(r)], j = wid.x + wid.y * nwg.x, one
// workgroup per output.
@compute @workgroup_size(256)
fn sum_rows(@builtin(local_invocation_index) lid: u32,
            @builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = wid.x + wid.y * nwg.x;
    var acc = 0.0;
    if (j < sp.out_count) {
        let base = kept_offset(j);
        for (var r = lid; r < sp.red_count; r += WG) {
            acc += x[base + red_offset(r)];
        }
    }
    partial[lid] = acc;
    workgroupBarrier();
    // Tree: after the step with stride s, partial[t] for t < s holds the sum of its subtree.
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u && j < sp.out_count) {
        out[j] = partial[0];
    }
}

// sum_small: out[j] = sum_r x[kept_offset(j) + red_offset(r)], j = gid.x + gid.y * nwg.x * 256, one
// thread per output.
@compute @workgroup_size(256)
fn sum_small(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = gid.x + gid.y * nwg.x * WG;
    if (j >= sp.out_count) {
        return;
    }
    let base = kept_offset(j);
    var acc = 0.0;
    for (var r = 0u; r < sp.red_count; r++) {
        acc += x[base + red_offset(r)];
    }
    out[j] = acc;
}

fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// True when candidate (vb, ib) beats the current best (va, ia): NaN first, then the larger
// value, then the smaller index.
fn beats(va: f32, ia: u32, vb: f32, ib: u32) -> bool {
    if (ib == NONE) {
        return false;
    }
    if (ia == NONE) {
        return true;
    }
    let na = is_nan(va);
    let nb = is_nan(vb);
    if (na || nb) {
        return nb && (!na || ib < ia);
    }
    return vb > va || (vb == va && ib < ia);
}

// max_dim: x: [outer, d, inner] -> out, out_idx: [outer * inner]; one workgroup per output
// j = o * inner + i: out[j] = max_k x[(o * d + k) * inner + i], out_idx[j] = the first such k.
@compute @workgroup_size(256)
fn max_dim(@builtin(local_invocation_index) lid: u32,
           @builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = wid.x + wid.y * nwg.x;
    var bv = 0.0;
    var bi = NONE;
    if (j < mp.outer * mp.inner) {
        let o = j / mp.inner;
        let i = j % mp.inner;
        for (var k = lid; k < mp.d; k += WG) {
            let v = x[(o * mp.d + k) * mp.inner + i];
            if (beats(bv, bi, v, k)) {
                bv = v;
                bi = k;
            }
        }
    }
    best_val[lid] = bv;
    best_idx[lid] = bi;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s && beats(best_val[lid], best_idx[lid], best_val[lid + s], best_idx[lid + s])) {
            best_val[lid] = best_val[lid + s];
            best_idx[lid] = best_idx[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u && j < mp.outer * mp.inner) {
        out[j] = best_val[0];
        out_idx[j] = best_idx[0];
    }
}
