// Shape ops that move data (src/ops/shape_ops.rs). All one thread per output element.
//
// gather (permute, broadcast_to): out: [n] over `dims`;
//   out[i] = x[sum_d idx_d(i) * src_strides[d]]   (stride 0 on repeated dims)
// copy_block (concat, narrow, pad): x: [outer, d_in, inner] -> out: [outer, d_out, inner];
//   for k < len: out[o, dst_start + k, i] = x[o, src_start + k, i]   (n = outer * len * inner)
// index_select: x: [outer, d_in, inner] -> out: [outer, n_idx, inner];
//   out[o, j, i] = x[o, indices[j], i]
// index_add (into zeros): x: [outer, n_idx, inner] -> out: [outer, d_out, inner];
//   out[o, t, i] = sum_{j : indices[j] == t} x[o, j, i]
//   written as a gather (each output sums its own entries, in order of j), so repeated
//   indices need no atomics and the result is deterministic.

struct GatherParams {
    n: u32,
    rank: u32,
    pad0: u32,
    pad1: u32,
    dims: array<vec4<u32>, 2>,
    src_strides: array<vec4<u32>, 2>,
}

struct CopyBlockParams {
    outer: u32,
    inner: u32,
    d_in: u32,
    d_out: u32,
    src_start: u32,
    dst_start: u32,
    len: u32,
    n: u32,
}

struct IndexParams {
    outer: u32,
    inner: u32,
    d_in: u32,
    d_out: u32,
    n_idx: u32,
    n: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<uniform> gp: GatherParams;
@group(0) @binding(4) var<uniform> cp: CopyBlockParams;
@group(0) @binding(5) var<uniform> ip: IndexParams;

// gather: out[i] = x[sum_d idx_d(i) * src_strides[d]], out: [n].
@compute @workgroup_size(256)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= gp.n) {
        return;
    }
    var rem = i;
    var src = 0u;
    for (var d = gp.rank; d > 0u; d--) {
        let dim = d - 1u;
        let size = gp.dims[dim / 4u][dim % 4u];
        src += (rem % size) * gp.src_strides[dim / 4u][dim % 4u];
        rem = rem / size;
    }
    out[i] = x[src];
}

// copy_block: out[(o * d_out + dst_start + k) * inner + i] = x[(o * d_in + src_start + k) * inner + i],
// t = (o * len + k) * inner + i < n.
@compute @workgroup_size(256)
fn copy_block(@builtin(global_invocation_id) gid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;
    if (t >= cp.n) {
        return;
    }
    let i = t % cp.inner;
    let k = (t / cp.inner) % cp.len;
    let o = t / (cp.inner * cp.len);
    out[(o * cp.d_out + cp.dst_start + k) * cp.inner + i] =
        x[(o * cp.d_in + cp.src_start + k) * cp.inner + i];
}

// index_select: out[t] = x[(o * d_in + indices[j]) * inner + i], t = (o * n_idx + j) * inner + i.
@compute @workgroup_size(256)
fn index_select(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;
    if (t >= ip.n) {
        return;
    }
    let i = t % ip.inner;
    let j = (t / ip.inner) % ip.n_idx;
    let o = t / (ip.inner * ip.n_idx);
    out[t] = x[(o * ip.d_in + indices[j]) * ip.inner + i];
}

// index_add: out[t] = sum_{j : indices[j] == slot} x[(o * n_idx + j) * inner + i],
// t = (o * d_out + slot) * inner + i.
@compute @workgroup_size(256)
fn index_add(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;
    if (t >= ip.n) {
        return;
    }
    let i = t % ip.inner;
    let slot = (t / ip.inner) % ip.d_out;
    let o = t / (ip.inner * ip.d_out);
    var acc = 0.0;
    for (var j = 0u; j < ip.n_idx; j++) {
        if (indices[j] == slot) {
            acc += x[(o * ip.n_idx + j) * ip.inner + i];
        }
    }
    out[t] = acc;
}
