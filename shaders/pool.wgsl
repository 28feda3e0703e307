// 2x2 average pooling and nearest 2x upsampling (src/ops/pool.rs), one thread per output.
//
// avg_pool2x2: x: [planes, H, W] -> out: [planes, OH, OW], OH = H / 2 (floor):
//   out[pl, i, j] = 0.25 * (x[pl, 2i, 2j] + x[pl, 2i, 2j+1] + x[pl, 2i+1, 2j] + x[pl, 2i+1, 2j+1])
// upsample_nearest2x: x: [planes, H, W] -> out: [planes, OH, OW], OH in {2H, 2H + 1}:
//   out[pl, i, j] = x[pl, i / 2, j / 2], 0 where i / 2 >= H or j / 2 >= W.

struct PoolParams {
    planes: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    total: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: PoolParams;

// avg_pool2x2: x: [planes, H, W] -> out[t], t = (pl * OH + i) * OW + j: the mean of x's 2x2 block (2i, 2j).
@compute @workgroup_size(256)
fn avg_pool2x2(@builtin(global_invocation_id) gid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;
    if (t >= p.total) {
        return;
    }
    let plane = t / (p.oh * p.ow);
    let i = (t / p.ow) % p.oh;
    let j = t % p.ow;
    let top = plane * p.h * p.w + (2u * i) * p.w + 2u * j;
    let bottom = top + p.w;
    out[t] = 0.25 * (x[top] + x[top + 1u] + x[bottom] + x[bottom + 1u]);
}

// upsample_nearest2x: x: [planes, H, W] -> out[t], t = (pl * OH + i) * OW + j: x[pl, i / 2, j / 2] or 0.
@compute @workgroup_size(256)
fn upsample_nearest2x(@builtin(global_invocation_id) gid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;
    if (t >= p.total) {
        return;
    }
    let plane = t / (p.oh * p.ow);
    let i = (t / p.ow) % p.oh;
    let j = t % p.ow;
    var v = 0.0;
    if (i / 2u < p.h && j / 2u < p.w) {
        v = x[plane * p.h * p.w + (i / 2u) * p.w + j / 2u];
    }
    out[t] = v;
}
