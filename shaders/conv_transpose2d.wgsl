// conv_transpose2d as an implicit GEMM (src/ops/conv_transpose2d.rs), in gather form: each
// output pixel collects the input pixels that the scatter form would send to it.
//
// Shapes: x: [N, C_in, H, W], weight: [C_in, C_out, KH, KW] (PyTorch's layout),
//   out: [N, C_out, OH, OW], OH = (H - 1) * stride - 2 * padding + KH + output_padding.
// Scatter form (the definition): out[n, co, ih*s - p + kh, iw*s - p + kw] += x[n, ci, ih, iw] * w[ci, co, kh, kw]
// Gather form used here: for output (oh, ow) and tap (kh, kw), t = oh + p - kh must be a
//   multiple of s with ih = t / s in [0, H) (likewise for w); otherwise the tap adds nothing.
// GEMM M = C_out, N = N*OH*OW, K = C_in*KH*KW, with k = (ci, kh, kw), q = (n, oh, ow):
//   out[n, co, oh, ow] = sum_k weight[ci, co, kh, kw] * X[k, q],
//   X[k, q] = x[n, ci, (oh + p - kh) / s, (ow + p - kw) / s] where that is a valid tap, else 0.
// For stride s, only 1 / s^2 of the taps are valid: simple, and correct for any geometry.
//
// Tiling as matmul.wgsl: 16 x 16 threads, 64 x 64 outputs per workgroup, 4 x 4 per thread.
// Dispatch: (ceil(N*OH*OW / 64), ceil(C_out / 64), 1).

struct ConvParams {
    n: u32,
    c_in: u32,
    h: u32,
    w: u32,
    c_out: u32,
    kh: u32,
    kw: u32,
    stride: u32,
    padding: u32,
    oh: u32,
    ow: u32,
    pad0: u32,
}

@group(0) @binding(0) var<storage, read> weight: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: ConvParams;

const TILE_M: u32 = 64u;
const TILE_N: u32 = 64u;
const TILE_K: u32 = 16u;

var<workgroup> a_tile: array<f32, 1024>; // [TILE_K][TILE_M]
var<workgroup> b_tile: array<f32, 1024>; // [TILE_K][TILE_N]

// The input index along one axis that tap k sends to output position o, or -1 if none.
fn source(o: u32, k: u32, size: u32) -> i32 {
    let t = i32(o + p.padding) - i32(k);
    if (t < 0 || t % i32(p.stride) != 0) {
        return -1;
    }
    let i = t / i32(p.stride);
    if (i >= i32(size)) {
        return -1;
    }
    return i;
}

fn column(k: u32, q: u32) -> f32 {
    let khw = p.kh * p.kw;
    let ci = k / khw;
    let kh = (k % khw) / p.kw;
    let kw = k % p.kw;
    let ohw = p.oh * p.ow;
    let n = q / ohw;
    let oh = (q % ohw) / p.ow;
    let ow = q % p.ow;
    let ih = source(oh, kh, p.h);
    let iw = source(ow, kw, p.w);
    if (ih < 0 || iw < 0) {
        return 0.0;
    }
    return x[((n * p.c_in + ci) * p.h + u32(ih)) * p.w + u32(iw)];
}

@compute @workgroup_size(16, 16, 1)
fn conv_transpose2d_forward(@builtin(local_invocation_id) lid: vec3<u32>,
                            @builtin(workgroup_id) wid: vec3<u32>) {
    let gemm_m = p.c_out;
    let gemm_n = p.n * p.oh * p.ow;
    let khw = p.kh * p.kw;
    let gemm_k = p.c_in * khw;
    let row0 = wid.y * TILE_M;
    let col0 = wid.x * TILE_N;
    let t = lid.y * 16u + lid.x;
    var acc: array<array<f32, 4>, 4>;
    for (var k0 = 0u; k0 < gemm_k; k0 += TILE_K) {
        for (var r = 0u; r < 4u; r++) {
            let e = t + r * 256u;
            // A[co, k] = weight[ci, co, kh, kw]: contiguous along (kh, kw).
            let mm = e / TILE_K;
            let kk = e % TILE_K;
            var a = 0.0;
            let co = row0 + mm;
            let k = k0 + kk;
            if (co < gemm_m && k < gemm_k) {
                a = weight[((k / khw) * p.c_out + co) * khw + k % khw];
            }
            a_tile[kk * TILE_M + mm] = a;
            let kb = e / TILE_N;
            let nn = e % TILE_N;
            var b = 0.0;
            if (k0 + kb < gemm_k && col0 + nn < gemm_n) {
                b = column(k0 + kb, col0 + nn);
            }
            b_tile[kb * TILE_N + nn] = b;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = a_tile[kk * TILE_M + lid.y + 16u * i];
                b[i] = b_tile[kk * TILE_N + lid.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] = fma(a[i], b[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }
    let ohw = p.oh * p.ow;
    for (var i = 0u; i < 4u; i++) {
        let co = row0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let q = col0 + lid.x + 16u * j;
            if (co < gemm_m && q < gemm_n) {
                out[((q / ohw) * p.c_out + co) * ohw + q % ohw] = acc[i][j];
            }
        }
    }
}
