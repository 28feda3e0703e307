// Optimizer updates, one thread per parameter element, in place (src/optim/*.rs). Each is the
// CPU loop of the optimizer's file, formula for formula and in the same operation order
// (PyTorch's single-tensor path); the scalar factors are computed on the host in f64.
//
// Buffers: param: [n] (updated), grad: [n], s1..s3: [n] state buffers (updated).
// adam (s1 = exp_avg m, s2 = exp_avg_sq v):
//   g = grad + wd * p;  m = lerp(m, g, w1);  v = v * beta2 + w2 * g * g
//   p += -step_size * (m / (sqrt(v) / bc2_sqrt + eps))
// sgd_plain:     g = grad + wd * p;  p += -lr * g
// sgd_momentum (s1 = momentum_buffer):
//   buf = first ? g : buf * momentum + keep * g;  d = nesterov ? g + momentum * buf : buf;  p += -lr * d
// rmsprop (s1 = square_avg, s2 = grad_avg if centered, s3 = momentum_buffer if momentum):
//   sq = sq * alpha + w * g * g;  avg = sqrt(sq - ga * ga) + eps (centered, ga = lerp(ga, g, w))
//   or sqrt(sq) + eps;  buf = buf * momentum + g / avg, p += -lr * buf  (or p += -lr * g / avg)
// Unused state bindings get distinct one-element dummy buffers.

struct AdamParams {
    n: u32,
    step_size: f32,
    bc2_sqrt: f32,
    w1: f32,
    w2: f32,
    beta2: f32,
    eps: f32,
    wd: f32,
}

struct SgdParams {
    n: u32,
    lr: f32,
    momentum: f32,
    keep: f32,
    wd: f32,
    nesterov: u32,
    first: u32,
    pad0: u32,
}

struct RmsPropParams {
    n: u32,
    lr: f32,
    alpha: f32,
    w: f32,
    eps: f32,
    wd: f32,
    momentum: f32,
    centered: u32,
    has_momentum: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> s1: array<f32>;
@group(0) @binding(3) var<storage, read_write> s2: array<f32>;
@group(0) @binding(4) var<storage, read_write> s3: array<f32>;
@group(0) @binding(5) var<uniform> adam_p: AdamParams;
@group(0) @binding(6) var<uniform> sgd_p: SgdParams;
@group(0) @binding(7) var<uniform> rms_p: RmsPropParams;

// PyTorch's lerp: a + w (b - a) for w < 0.5, else b - (b - a)(1 - w).
fn lerp(a: f32, b: f32, w: f32) -> f32 {
    if (w < 0.5) {
        return a + w * (b - a);
    }
    return b - (b - a) * (1.0 - w);
}

// This thread's element: the dispatch is (x, y) workgroups of 256 covering n (y > 1 only past
// the 65535-workgroup limit of one dimension).
fn element(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// grad[j] with L2 weight decay folded in: grad + wd * param (the add skipped when wd = 0).
fn decayed_grad(j: u32, wd: f32) -> f32 {
    var g = grad[j];
    if (wd != 0.0) {
        g = g + wd * param[j];
    }
    return g;
}

// adam: param, grad, s1 (m), s2 (v): [n]; element j updated in place as in the header.
@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = element(gid, nwg);
    if (j >= adam_p.n) {
        return;
    }
    let g = decayed_grad(j, adam_p.wd);
    let m = lerp(s1[j], g, adam_p.w1);
    let v = s2[j] * adam_p.beta2 + adam_p.w2 * g * g;
    s1[j] = m;
    s2[j] = v;
    let denom = sqrt(v) / adam_p.bc2_sqrt + adam_p.eps;
    param[j] += -adam_p.step_size * (m / denom);
}

// sgd_plain: param, grad: [n]; param[j] += -lr * g.
@compute @workgroup_size(256)
fn sgd_plain(@builtin(global_invocation_id) gid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = element(gid, nwg);
    if (j >= sgd_p.n) {
        return;
    }
    let g = decayed_grad(j, sgd_p.wd);
    param[j] += -sgd_p.lr * g;
}

// sgd_momentum: param, grad, s1 (momentum buffer): [n]; element j updated in place as in the
// header.
@compute @workgroup_size(256)
fn sgd_momentum(@builtin(global_invocation_id) gid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = element(gid, nwg);
    if (j >= sgd_p.n) {
        return;
    }
    let g = decayed_grad(j, sgd_p.wd);
    var buf = g;
    if (sgd_p.first == 0u) {
        buf = s1[j] * sgd_p.momentum + sgd_p.keep * g;
    }
    s1[j] = buf;
    var d = buf;
    if (sgd_p.nesterov != 0u) {
        d = g + sgd_p.momentum * buf;
    }
    param[j] += -sgd_p.lr * d;
}

// rmsprop: param, grad, s1 (square_avg), s2 (grad_avg), s3 (momentum buffer): [n]; element j
// updated in place as in the header.
@compute @workgroup_size(256)
fn rmsprop(@builtin(global_invocation_id) gid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = element(gid, nwg);
    if (j >= rms_p.n) {
        return;
    }
    let g = decayed_grad(j, rms_p.wd);
    let sq = s1[j] * rms_p.alpha + rms_p.w * g * g;
    s1[j] = sq;
    var avg: f32;
    if (rms_p.centered != 0u) {
        let ga = lerp(s2[j], g, rms_p.w);
        s2[j] = ga;
        avg = sqrt(sq + -(ga * ga)) + rms_p.eps;
    } else {
        avg = sqrt(sq) + rms_p.eps;
    }
    if (rms_p.has_momentum != 0u) {
        let buf = s3[j] * rms_p.momentum + g / avg;
        s3[j] = buf;
        param[j] += -rms_p.lr * buf;
    } else {
        param[j] += -rms_p.lr * (g / avg);
    }
}
