// In-place updates of a tensor's own buffer, outside any autodiff graph (src/ops/inplace.rs):
// creation fills, running statistics, EMA weights, WGAN weight clipping, counters.
//
// Buffers: dst: [n] (read and written), src: [n].
//   fill:           dst[i] = a
//   axpby:          dst[i] = a * dst[i] + b * (c * src[i])
//   unary_inplace:  dst[i] = f(dst[i]) with OP 0: clamp(dst, a, b), 1: a * dst + b

struct InplaceParams {
    n: u32,
    a: f32,
    b: f32,
    c: f32,
}

override OP: u32 = 0u;

@group(0) @binding(0) var<storage, read_write> dst: array<f32>;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<uniform> p: InplaceParams;

// fill: dst[i] = a for i < n.
@compute @workgroup_size(256)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < p.n) {
        dst[i] = p.a;
    }
}

// axpby: dst[i] = a * dst[i] + b * (c * src[i]) for i < n.
@compute @workgroup_size(256)
fn axpby(@builtin(global_invocation_id) gid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i < p.n) {
        dst[i] = p.a * dst[i] + p.b * (p.c * src[i]);
    }
}

// unary_inplace: dst[i] = clamp(dst[i], a, b) (OP 0) or a * dst[i] + b (OP 1), i < n.
@compute @workgroup_size(256)
fn unary_inplace(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) {
        return;
    }
    let v = dst[i];
    switch OP {
        case 0u: { dst[i] = min(max(v, p.a), p.b); }
        default: { dst[i] = p.a * v + p.b; }
    }
}
