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
// accumulators per thread, K in slices of 16 staged in workgroup memory. Index arithmetic is
// kept out of the inner loops: each thread's column index is decomposed once, and each K
// slice's 16 indices once per slice into `k_tab`. The weight gradient's depth N*OH*OW is long
// and its output small (64 x 16 for a 1-channel input: one workgroup), so it is split over
// `k_split` layers of workgroups (wid.z), each writing its own output block; the host sums them.
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
    k_split: u32,
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
// Per K-slice lookup table: the 16 values of the slice's K index, decomposed once by 16
// threads instead of by every load (integer division is slow on GPUs, slower still on
// lavapipe, which emulates it lane by lane).
var<workgroup> k_tab: array<vec4<i32>, 16>;

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

// The input pixel at (ih, iw) of the image plane starting at `plane`, or 0 in the padding.
fn pixel(plane: u32, ih: i32, iw: i32) -> f32 {
    if (ih < 0 || iw < 0 || ih >= i32(p.h) || iw >= i32(p.w)) {
        return 0.0;
    }
    return x[plane + u32(ih) * p.w + u32(iw)];
}

// conv2d_forward: weight (a_src): [C_out, C_in*KH*KW], x: [N, C_in, H, W] -> out: [N, C_out, OH, OW];
// GEMM row co, column q = (n, oh, ow) goes to out[(n * C_out + co) * OH*OW + oh * OW + ow].
@compute @workgroup_size(16, 16, 1)
fn conv2d_forward(@builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(workgroup_id) wid: vec3<u32>) {
    let gemm_m = p.c_out;
    let gemm_n = p.n * p.oh * p.ow;
    let khw = p.kh * p.kw;
    let gemm_k = p.c_in * khw;
    let hw = p.h * p.w;
    let ohw = p.oh * p.ow;
    let row0 = wid.y * TILE_M;
    let col0 = wid.x * TILE_N;
    let t = lid.y * 16u + lid.x;
    // This thread always loads column q = col0 + t % 64 of X: decompose it once.
    let q = col0 + t % TILE_N;
    let n = q / ohw;
    let oh = (q % ohw) / p.ow;
    let ow = q % p.ow;
    let image = n * p.c_in * hw;
    let ih0 = i32(oh * p.stride) - i32(p.padding);
    let iw0 = i32(ow * p.stride) - i32(p.padding);
    var acc: array<array<f32, 4>, 4>;
    for (var k0 = 0u; k0 < gemm_k; k0 += TILE_K) {
        // k = (ci, kh, kw) -> (offset of channel ci's plane, kh, kw, in range)
        if (t < TILE_K) {
            let k = k0 + t;
            let ci = k / khw;
            let kh = (k % khw) / p.kw;
            k_tab[t] = vec4<i32>(i32(ci * hw), i32(kh), i32(k % p.kw), select(0, 1, k < gemm_k));
        }
        workgroupBarrier();
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
            // X[k, q] for this thread's q and k = k0 + t / 64 + 4 r.
            let kb = e / TILE_N;
            let tab = k_tab[kb];
            var b = 0.0;
            if (tab.w == 1 && q < gemm_n) {
                b = pixel(image + u32(tab.x), ih0 + tab.y, iw0 + tab.z);
            }
            b_tile[kb * TILE_N + e % TILE_N] = b;
        }
        workgroupBarrier();
        multiply_tiles(&acc, lid);
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let co = row0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let qo = col0 + lid.x + 16u * j;
            if (co < gemm_m && qo < gemm_n) {
                out[((qo / ohw) * p.c_out + co) * ohw + qo % ohw] = acc[i][j];
            }
        }
    }
}

// conv2d_weight_grad: gy (a_src): [N, C_out, OH, OW], x: [N, C_in, H, W] -> dw: [C_out, C_in*KH*KW];
// out[(z * C_out + co) * (C_in*KH*KW) + k] = sum_{q in slice z} gy[n, co, oh, ow] * X[k, q].
@compute @workgroup_size(16, 16, 1)
fn conv2d_weight_grad(@builtin(local_invocation_id) lid: vec3<u32>,
                      @builtin(workgroup_id) wid: vec3<u32>) {
    let gemm_m = p.c_out;
    let khw = p.kh * p.kw;
    let gemm_n = p.c_in * khw;
    let ohw = p.oh * p.ow;
    let gemm_k = p.n * ohw;
    let hw = p.h * p.w;
    let row0 = wid.y * TILE_M;
    let col0 = wid.x * TILE_N;
    let t = lid.y * 16u + lid.x;
    // This thread loads columns k = col0 + t / 16 + 16 r (r < 4) of dW: decompose them once.
    var col_off: array<u32, 4>;
    var col_kh: array<i32, 4>;
    var col_kw: array<i32, 4>;
    for (var r = 0u; r < 4u; r++) {
        let k = col0 + t / TILE_K + 16u * r;
        col_off[r] = (k / khw) * hw;
        col_kh[r] = i32((k % khw) / p.kw);
        col_kw[r] = i32(k % p.kw);
    }
    // Split-K: workgroup layer z sums positions [k_begin, k_end), a multiple of TILE_K long,
    // into its own block of out (the host adds the blocks).
    let slices = max(p.k_split, 1u);
    let chunk = ((gemm_k + slices - 1u) / slices + TILE_K - 1u) / TILE_K * TILE_K;
    let k_begin = wid.z * chunk;
    let k_end = min(gemm_k, k_begin + chunk);
    var acc: array<array<f32, 4>, 4>;
    for (var k0 = k_begin; k0 < k_end; k0 += TILE_K) {
        // q = (n, oh, ow) -> (gy offset, image offset, oh*s - p, ow*s - p); 0 in .y marks
        // nothing (q past the end of this slice).
        if (t < TILE_K) {
            let qq = k0 + t;
            let n = qq / ohw;
            let pos = qq % ohw;
            let oh = pos / p.ow;
            let ow = pos % p.ow;
            if (qq < k_end) {
                k_tab[t] = vec4<i32>(
                    i32(n * p.c_out * ohw + pos),
                    i32(n * p.c_in * hw) + 1,
                    i32(oh * p.stride) - i32(p.padding),
                    i32(ow * p.stride) - i32(p.padding),
                );
            } else {
                k_tab[t] = vec4<i32>(0, 0, 0, 0);
            }
        }
        workgroupBarrier();
        let kk = t % TILE_K;
        let tab = k_tab[kk];
        for (var r = 0u; r < 4u; r++) {
            // gy[n, co, oh, ow] as A[co, q].
            let mm = t / TILE_K + 16u * r;
            var a = 0.0;
            if (row0 + mm < gemm_m && tab.y != 0) {
                a = a_src[u32(tab.x) + (row0 + mm) * ohw];
            }
            a_tile[kk * TILE_M + mm] = a;
            // X[k, q] read as B[q, k].
            let nn = t / TILE_K + 16u * r;
            var b = 0.0;
            if (tab.y != 0 && col0 + nn < gemm_n) {
                b = pixel(u32(tab.y - 1) + col_off[r], tab.z + col_kh[r], tab.w + col_kw[r]);
            }
            b_tile[kk * TILE_N + nn] = b;
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
                out[(wid.z * gemm_m + co) * gemm_n + k] = acc[i][j];
            }
        }
    }
}
