// Pointwise functions of one tensor, and the masks the backward rules multiply by
// (src/ops/elementwise.rs: UnaryOp and MaskOp; src/autograd/rules.rs).
//
// Buffers: x: [n], out: [n].  Index formula: out[i] = f(x[i]).
// OP (override constant, one pipeline per function), parameters a, b from the block:
//    0 neg       1 exp       2 log       3 sqrt      4 abs       5 tanh      6 sigmoid
//    7 relu      8 leaky_relu(slope a)   9 softplus  10 powf(a)  11 clamp(a, b)
//   12 affine (a * x + b)
//   masks (constants inside backward rules; their own derivative is zero a.e.):
//   13 relu mask (x > 0)  14 leaky slope (1 if x > 0 else a)  15 sign  16 clamp mask (a <= x <= b)

struct UnaryParams {
    n: u32,
    a: f32,
    b: f32,
    pad0: u32,
}

override OP: u32 = 0u;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: UnaryParams;

// 1 / (1 + e^-v) without overflow: e^v / (1 + e^v) for negative v.
fn sigmoid(v: f32) -> f32 {
    if (v >= 0.0) {
        return 1.0 / (1.0 + exp(-v));
    }
    let e = exp(v);
    return e / (1.0 + e);
}

// log(1 + u) accurate for tiny u (Goldberg's trick: the rounding of 1 + u cancels out).
fn log1p(u: f32) -> f32 {
    let w = 1.0 + u;
    if (w == 1.0) {
        return u;
    }
    return log(w) * u / (w - 1.0);
}

// tanh saturates to +-1 in f32 beyond |v| = 9.01; some drivers compute it as a ratio of
// exponentials that overflows there, so saturate explicitly.
fn tanh_(v: f32) -> f32 {
    if (abs(v) > 10.0) {
        return sign(v);
    }
    return tanh(v);
}

// x^e with the CPU's meaning for negative x: real for integer e (sign from its parity), NaN
// otherwise. WGSL's pow is only defined for x >= 0.
fn powf(v: f32, e: f32) -> f32 {
    if (e == 0.0) {
        return 1.0;
    }
    if (e == 1.0) {
        return v;
    }
    if (e == 2.0) {
        return v * v;
    }
    let r = pow(abs(v), e);
    if (v < 0.0) {
        if (floor(e) != e) {
            return bitcast<f32>(0x7fc00000u); // NaN
        }
        if (abs(e) % 2.0 == 1.0) {
            return -r;
        }
    }
    return r;
}

fn apply(v: f32) -> f32 {
    switch OP {
        case 0u: { return -v; }
        case 1u: { return exp(v); }
        case 2u: { return log(v); }
        case 3u: { return sqrt(v); }
        case 4u: { return abs(v); }
        case 5u: { return tanh_(v); }
        case 6u: { return sigmoid(v); }
        case 7u: { return max(v, 0.0); }
        case 8u: { return select(p.a * v, v, v > 0.0); }
        case 9u: { return max(v, 0.0) + log1p(exp(-abs(v))); }
        case 10u: { return powf(v, p.a); }
        case 11u: { return min(max(v, p.a), p.b); }
        case 12u: { return p.a * v + p.b; }
        case 13u: { return select(0.0, 1.0, v > 0.0); }
        case 14u: { return select(p.a, 1.0, v > 0.0); }
        case 15u: { return select(select(0.0, -1.0, v < 0.0), 1.0, v > 0.0); }
        default: { return select(0.0, 1.0, v >= p.a && v <= p.b); }
    }
}

// unary: out[i] = OP(x[i]), x, out: [n].
@compute @workgroup_size(256)
fn unary(@builtin(global_invocation_id) gid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) {
        return;
    }
    out[i] = apply(x[i]);
}
