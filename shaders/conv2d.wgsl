// conv2d and its weight gradient as implicit GEMMs (src/ops/conv2d.rs): the matmul tiling of
// matmul.wgsl, with the im2col matrix never stored; each tile load computes which input pixel
// (or padding zero) it stands for.
//
// Shapes: x: [N, C_in, H, W], weight: [C_out, C_in, KH, KW], out: [N, C_out, OH, OW],
//   OH = (H + 2 * padding - KH) / stride + 1 (likewise OW).
// Column matrix (never materialised), with k = (ci, kh, kw) and q = (n, oh, ow):
//   X[k, q] = x[n, ci, oh * stride - padding + kh, ow * stride - padding + kw], 0 outside.
//
// conv2d_forward: GEMM M = C_out, N = N*OH*OW, K = C_in*KH*KW:
//   out[n, co, oh, ow] = sum_k weight[co, k] * X[k, (n, oh, ow)]
// conv2d_weight_grad: GEMM M = C_out, N = C_in*KH*KW, K = N*OH*OW (gy = dL/d out):
//   dw[co, k] = sum_q gy[n, co, oh, ow] * X[k, q]
//
// Tiling as matmul.wgsl: 16 x 16 threads, a 64 x 64 output block per workgroup, 4 x 4
// accumulators per thread, K in slices of 16 staged in workgroup memory.
// Dispatch: (ceil(GEMM N / 64), ceil(GEMM M / 64), 1).

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

// conv2d_forward: the weight; conv2d_weight_grad: gy.
@group(0) @binding(0) var<storage, read> a_src: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: ConvParams;

const TILE_M: u32 = 64u;
const TILE_N: u32 = 64u;
const TILE_K: u32 = 16u;

var<workgroup> a_tile: array<f32, 1024>; // [TILE_K][TILE_M]
var<workgroup> b_tile: array<f32, 1024>; // [TILE_K][TILE_N]

// X[k, q]: the input pixel under kernel tap k = (ci, kh, kw) for output position q = (n, oh, ow).
fn column(k: u32, q: u32) -> f32 {
    let khw = p.kh * p.kw;
    let ci = k / khw;
    let kh = (k % khw) / p.kw;
    let kw = k % p.kw;
    let ohw = p.oh * p.ow;
    let n = q / ohw;
    let oh = (q % ohw) / p.ow;
    let ow = q % p.ow;
    let ih = i32(oh * p.stride + kh) - i32(p.padding);
    let iw = i32(ow * p.stride + kw) - i32(p.padding);
    if (ih < 0 || iw < 0 || ih >= i32(p.h) || iw >= i32(p.w)) {
        return 0.0;
    }
    return x[((n * p.c_in + ci) * p.h + u32(ih)) * p.w + u32(iw)];
}

// acc += a_tile^T-slice x b_tile-slice for this thread's 4 x 4 block.
fn multiply_tiles(acc: ptr<function, array<array<f32, 4>, 4>>, lid: vec3<u32>) {
    for (var kk = 0u; kk < TILE_K; kk++) {
        var a: array<f32, 4>;
        var b: array<f32, 4>;
        for (var i = 0u; i < 4u; i++) {
            a[i] = a_tile[kk * TILE_M + lid.y + 16u * i];
            b[i] = b_tile[kk * TILE_N + lid.x + 16u * i];
        }
        for (var i = 0u; i < 4u; i++) {
            for (var j = 0u; j < 4u; j++) {
                (*acc)[i][j] = fma(a[i], b[j], (*acc)[i][j]);
            }
        }
    }
}

@compute @workgroup_size(16, 16, 1)
fn conv2d_forward(@builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(workgroup_id) wid: vec3<u32>) {
    let gemm_m = p.c_out;
    let gemm_n = p.n * p.oh * p.ow;
    let gemm_k = p.c_in * p.kh * p.kw;
    let row0 = wid.y * TILE_M;
    let col0 = wid.x * TILE_N;
    let t = lid.y * 16u + lid.x;
    var acc: array<array<f32, 4>, 4>;
    for (var k0 = 0u; k0 < gemm_k; k0 += TILE_K) {
        for (var r = 0u; r < 4u; r++) {
            let e = t + r * 256u;
            // weight[co, k]: contiguous along k.
            let mm = e / TILE_K;
            let kk = e % TILE_K;
            var a = 0.0;
            if (row0 + mm < gemm_m && k0 + kk < gemm_k) {
                a = a_src[(row0 + mm) * gemm_k + k0 + kk];
            }
            a_tile[kk * TILE_M + mm] = a;
            // X[k, q]: consecutive threads take consecutive q (neighbouring ow).
            let kb = e / TILE_N;
            let nn = e % TILE_N;
            var b = 0.0;
            if (k0 + kb < gemm_k && col0 + nn < gemm_n) {
                b = column(k0 + kb, col0 + nn);
            }
            b_tile[kb * TILE_N + nn] = b;
        }
        workgroupBarrier();
        multiply_tiles(&acc, lid);
        workgroupBarrier();
    }
    let ohw = p.oh * p.ow;
    for (var i = 0u; i < 4u; i++) {
        let co = row0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let q = col0 + lid.x + 16u * j;
            if (co < gemm_m && q < gemm_n) {
                let n = q / ohw;
                out[(n * p.c_out + co) * ohw + q % ohw] = acc[i][j];
            }
        }
    }
}

@compute @workgroup_size(16, 16, 1)
fn conv2d_weight_grad(@builtin(local_invocation_id) lid: vec3<u32>,
                      @builtin(workgroup_id) wid: vec3<u32>) {
    let gemm_m = p.c_out;
    let gemm_n = p.c_in * p.kh * p.kw;
    let gemm_k = p.n * p.oh * p.ow;
    let ohw = p.oh * p.ow;
    let row0 = wid.y * TILE_M;
    let col0 = wid.x * TILE_N;
    let t = lid.y * 16u + lid.x;
    var acc: array<array<f32, 4>, 4>;
    for (var k0 = 0u; k0 < gemm_k; k0 += TILE_K) {
        for (var r = 0u; r < 4u; r++) {
            let e = t + r * 256u;
            // gy[n, co, oh, ow] as A[co, q]: contiguous along q within one image.
            let mm = e / TILE_K;
            let kk = e % TILE_K;
            var a = 0.0;
            let q = k0 + kk;
            if (row0 + mm < gemm_m && q < gemm_k) {
                a = a_src[((q / ohw) * p.c_out + row0 + mm) * ohw + q % ohw];
            }
            a_tile[kk * TILE_M + mm] = a;
            // X[k, q] read as B[q, k]: consecutive threads take consecutive q.
            let nn = e / TILE_K;
            let kb = e % TILE_K;
            var b = 0.0;
            if (k0 + kb < gemm_k && col0 + nn < gemm_n) {
                b = column(col0 + nn, k0 + kb);
            }
            b_tile[kb * TILE_N + nn] = b;
        }
        workgroupBarrier();
        multiply_tiles(&acc, lid);
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let co = row0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let k = col0 + lid.x + 16u * j;
            if (co < gemm_m && k < gemm_n) {
                out[co * gemm_n + k] = acc[i][j];
            }
        }
    }
}
