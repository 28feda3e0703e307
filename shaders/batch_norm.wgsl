// Batch normalisation's fused normalisation and its backward (src/ops/norm.rs), with
// per-channel reductions in workgroup memory.
//
// Shapes: x, g (= dL/d x_hat), x_hat, out: [N, C, S] (S = product of the dims after C);
//   mean, var, invstd: [C]; sums: [2 * C]. M = N * S values per channel.
// bn_stats (one workgroup per channel c, two passes over the channel's M values):
//   mean[c] = sum x / M;  var[c] = sum (x - mean[c])^2 / M (biased);  invstd[c] = 1 / sqrt(var[c] + eps)
// bn_normalize (one thread per element):  out[n, c, s] = (x[n, c, s] - mean[c]) * invstd[c]
// bn_backward_sums (one workgroup per channel):  sums[c] = mean(g), sums[C + c] = mean(g * x_hat)
// bn_backward_apply (one thread per element), the backward of x_hat = (x - mean) * invstd with
//   the batch statistics (derivation in norm.rs):
//   out = invstd[c] * (g - sums[c] - x_hat * sums[C + c])

struct BnParams {
    n: u32,
    c: u32,
    s: u32,
    eps: f32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;       // x, or g in the backward
@group(0) @binding(1) var<storage, read_write> mean: array<f32>;
@group(0) @binding(2) var<storage, read_write> var_: array<f32>;
@group(0) @binding(3) var<storage, read_write> invstd: array<f32>;
@group(0) @binding(4) var<storage, read> mean_in: array<f32>;
@group(0) @binding(5) var<storage, read> invstd_in: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<storage, read> x_hat: array<f32>;
@group(0) @binding(8) var<storage, read_write> sums: array<f32>;
@group(0) @binding(9) var<storage, read> sums_in: array<f32>;
@group(0) @binding(10) var<uniform> p: BnParams;

const WG: u32 = 256u;

var<workgroup> partial: array<f32, 256>;

// The sum of every thread's v, returned to all threads of the workgroup.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    // Nobody may overwrite partial[0] (the next call) before everyone has read it.
    workgroupBarrier();
    return total;
}

// Element `idx` (in 0..M) of channel c.
fn at(c: u32, idx: u32) -> u32 {
    return ((idx / p.s) * p.c + c) * p.s + idx % p.s;
}

// bn_stats: x: [N, C, S] -> mean, var, invstd: [C]; one workgroup per channel c = wid.x,
// element idx < N*S of the channel at x[((idx / S) * C + c) * S + idx % S] (`at`).
@compute @workgroup_size(256)
fn bn_stats(@builtin(local_invocation_index) lid: u32,
            @builtin(workgroup_id) wid: vec3<u32>) {
    let c = wid.x;
    let count = p.n * p.s;
    var acc = 0.0;
    for (var idx = lid; idx < count; idx += WG) {
        acc += x[at(c, idx)];
    }
    let m = workgroup_sum(lid, acc) / f32(count);
    // Second pass over the centred values: no cancellation when |mean| >> std.
    var acc2 = 0.0;
    for (var idx = lid; idx < count; idx += WG) {
        let d = x[at(c, idx)] - m;
        acc2 += d * d;
    }
    let v = workgroup_sum(lid, acc2) / f32(count);
    if (lid == 0u) {
        mean[c] = m;
        var_[c] = v;
        invstd[c] = 1.0 / sqrt(v + p.eps);
    }
}

// bn_normalize: out[i] = (x[i] - mean_in[c]) * invstd_in[c], x, out: [N, C, S], c = (i / S) % C.
@compute @workgroup_size(256)
fn bn_normalize(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.n * p.c * p.s) {
        return;
    }
    let c = (i / p.s) % p.c;
    out[i] = (x[i] - mean_in[c]) * invstd_in[c];
}

// bn_backward_sums: g (bound as x), x_hat: [N, C, S] -> sums: [2C]; one workgroup per channel c:
// sums[c] = mean(g[., c, .]), sums[C + c] = mean(g * x_hat) over the channel (`at`).
@compute @workgroup_size(256)
fn bn_backward_sums(@builtin(local_invocation_index) lid: u32,
                    @builtin(workgroup_id) wid: vec3<u32>) {
    let c = wid.x;
    let count = p.n * p.s;
    var sg = 0.0;
    var sgx = 0.0;
    for (var idx = lid; idx < count; idx += WG) {
        let i = at(c, idx);
        sg += x[i];
        sgx += x[i] * x_hat[i];
    }
    let total_g = workgroup_sum(lid, sg);
    let total_gx = workgroup_sum(lid, sgx);
    if (lid == 0u) {
        sums[c] = total_g / f32(count);
        sums[p.c + c] = total_gx / f32(count);
    }
}

// bn_backward_apply: out[i] = invstd_in[c] * (g[i] - sums_in[c] - x_hat[i] * sums_in[C + c]),
// g (bound as x), x_hat, out: [N, C, S], c = (i / S) % C.
@compute @workgroup_size(256)
fn bn_backward_apply(@builtin(global_invocation_id) gid: vec3<u32>,
                     @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.n * p.c * p.s) {
        return;
    }
    let c = (i / p.s) % p.c;
    out[i] = invstd_in[c] * (x[i] - sums_in[c] - x_hat[i] * sums_in[p.c + c]);
}
