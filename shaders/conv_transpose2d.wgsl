// conv_transpose2d as an implicit GEMM (src/ops/conv_transpose2d.rs), in gather form: each
// output pixel collects the input pixels that the scatter form would send to it.
//
// Shapes: x: [N, C_in, H, W], weight: [C_in, C_out, KH, KW] (PyTorch's layout),
//   out: [N, C_out, OH, OW], OH = (H - 1) * stride - 2 * padding + KH + output_padding.
// Scatter form (the definition): out[n, co, ih*s - p + kh, iw*s - p + kw] += x[n, ci, ih, iw] * w[ci, co, kh, kw]
// Gather form: tap kh reaches output row oh from input row ih = (oh + p - kh) / s only when
//   oh + p - kh is a multiple of s (and 0 <= ih < H); likewise for columns.
//
// Stride phases: the taps that reach row oh are those with kh = (oh + p) mod s + a * s. So the
// output splits into s * s phases (ph, pw) = ((oh + p) mod s, (ow + p) mod s), and within one
// phase every output pixel uses the same taps. Each phase is its own GEMM (workgroup_id.z):
//   M = C_out, N = N * |rows of phase ph| * |cols of phase pw|, K = C_in * |kh = ph + a s| * |kw = pw + b s|
//   out[n, co, oh, ow] = sum_{ci, a, b} weight[ci, co, ph + a s, pw + b s] * x[n, ci, ih, iw],
//   ih = (oh + p - ph) / s - a  (0 outside the input).
// Without phases, 1 - 1/s^2 of the GEMM's multiply-adds would be by zero (3/4 at stride 2).
//
// `conv_transpose2d_thread`, for few output channels (an image generator's last layer has 1 or
// 3, which would leave 61 of a tile's 64 rows idle): one thread per output element, summing
// over ci and the taps of its phase directly. Dispatch: (x, y) covering N*C_out*OH*OW / 256.
//
// Tiling as matmul.wgsl: 16 x 16 threads, 64 x 64 outputs per workgroup, 4 x 4 per thread;
// each thread's column is decomposed once, each K slice's indices once into `k_tab`.
// Dispatch: (ceil(N * ceil(OH/s) * ceil(OW/s) / 64), ceil(C_out / 64), s * s).

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

@group(0) @binding(0) var<storage, read> weight: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: ConvParams;

const TILE_M: u32 = 64u;
const TILE_N: u32 = 64u;
const TILE_K: u32 = 16u;

var<workgroup> a_tile: array<f32, 1024>; // [TILE_K][TILE_M]
var<workgroup> b_tile: array<f32, 1024>; // [TILE_K][TILE_N]
// Per K-slice lookup table (decomposed once by 16 threads, not by every load):
// k = (ci, a, b) -> (offset of x's channel plane ci, a, b, offset of w[ci, 0, kh, kw]).
var<workgroup> k_tab: array<vec4<i32>, 16>;

// One stride phase along one axis: output positions o = first + i * s (i < count) all use the
// taps k = phase + a * s (a < taps); the input row for (i, a) is base + i - a.
struct Phase {
    first: u32,
    count: u32,
    taps: u32,
    base: i32,
}

fn phase_of(phase: u32, out_len: u32, kernel: u32) -> Phase {
    let s = p.stride;
    // First o >= 0 with (o + padding) mod s == phase.
    let first = (phase + s - p.padding % s) % s;
    var ph: Phase;
    ph.first = first;
    ph.count = select(0u, (out_len - first + s - 1u) / s, first < out_len);
    ph.taps = select(0u, (kernel - phase + s - 1u) / s, phase < kernel);
    // ih = (o + padding - phase) / s - a with o = first + i * s.
    ph.base = (i32(first + p.padding) - i32(phase)) / i32(s);
    return ph;
}

// conv_transpose2d_forward: weight: [C_in, C_out, KH, KW], x: [N, C_in, H, W] -> out: [N, C_out, OH, OW];
// stride phase (ph, pw) = (wid.z / s, wid.z % s); GEMM column q = (n, i, j) is output pixel
// out[n, co, rows.first + i s, cols.first + j s].
@compute @workgroup_size(16, 16, 1)
fn conv_transpose2d_forward(@builtin(local_invocation_id) lid: vec3<u32>,
                            @builtin(workgroup_id) wid: vec3<u32>) {
    let ph = wid.z / p.stride;
    let pw = wid.z % p.stride;
    let rows = phase_of(ph, p.oh, p.kh);
    let cols = phase_of(pw, p.ow, p.kw);
    let gemm_m = p.c_out;
    let ij = rows.count * cols.count;
    let gemm_n = p.n * ij;
    let ab = rows.taps * cols.taps;
    let gemm_k = p.c_in * ab;
    let khw = p.kh * p.kw;
    let hw = p.h * p.w;
    let row0 = wid.y * TILE_M;
    let col0 = wid.x * TILE_N;
    let t = lid.y * 16u + lid.x;
    // This thread always loads column q = col0 + t % 64 = (n, i, j) of the phase: decompose once.
    let q = col0 + t % TILE_N;
    let n = q / max(ij, 1u);
    let i = (q % max(ij, 1u)) / max(cols.count, 1u);
    let j = q % max(cols.count, 1u);
    let image = n * p.c_in * hw;
    let ih0 = rows.base + i32(i);
    let iw0 = cols.base + i32(j);
    var acc: array<array<f32, 4>, 4>;
    for (var k0 = 0u; k0 < gemm_k; k0 += TILE_K) {
        if (t < TILE_K) {
            let k = k0 + t;
            let ci = k / ab;
            let a = (k % ab) / cols.taps;
            let b = k % cols.taps;
            let kh = ph + a * p.stride;
            let kw = pw + b * p.stride;
            if (k < gemm_k) {
                k_tab[t] = vec4<i32>(i32(ci * hw), i32(a), i32(b), i32(ci * p.c_out * khw + kh * p.kw + kw));
            } else {
                k_tab[t] = vec4<i32>(-1, 0, 0, 0);
            }
        }
        workgroupBarrier();
        for (var r = 0u; r < 4u; r++) {
            let e = t + r * 256u;
            // A[co, k] = weight[ci, co, kh, kw].
            let mm = e / TILE_K;
            let kk = e % TILE_K;
            let ta = k_tab[kk];
            var wv = 0.0;
            if (row0 + mm < gemm_m && ta.x >= 0) {
                wv = weight[u32(ta.w) + (row0 + mm) * khw];
            }
            a_tile[kk * TILE_M + mm] = wv;
            // X[k, q]: x[n, ci, ih0 - a, iw0 - b], 0 outside the input.
            let kb = e / TILE_N;
            let tb = k_tab[kb];
            var xv = 0.0;
            let ih = ih0 - tb.y;
            let iw = iw0 - tb.z;
            if (tb.x >= 0 && q < gemm_n && ih >= 0 && iw >= 0 && ih < i32(p.h) && iw < i32(p.w)) {
                xv = x[image + u32(tb.x) + u32(ih) * p.w + u32(iw)];
            }
            b_tile[kb * TILE_N + e % TILE_N] = xv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var u = 0u; u < 4u; u++) {
                a[u] = a_tile[kk * TILE_M + lid.y + 16u * u];
                b[u] = b_tile[kk * TILE_N + lid.x + 16u * u];
            }
            for (var u = 0u; u < 4u; u++) {
                for (var v = 0u; v < 4u; v++) {
                    acc[u][v] = fma(a[u], b[v], acc[u][v]);
                }
            }
        }
        workgroupBarrier();
    }
    // Column q = (n, i, j) of this phase is output pixel (n, rows.first + i s, cols.first + j s).
    let ohw = p.oh * p.ow;
    for (var u = 0u; u < 4u; u++) {
        let co = row0 + lid.y + 16u * u;
        for (var v = 0u; v < 4u; v++) {
            let qo = col0 + lid.x + 16u * v;
            if (co < gemm_m && qo < gemm_n) {
                let no = qo / ij;
                let oh = rows.first + ((qo % ij) / cols.count) * p.stride;
                let ow = cols.first + (qo % cols.count) * p.stride;
                out[(no * p.c_out + co) * ohw + oh * p.ow + ow] = acc[u][v];
            }
        }
    }
}

// conv_transpose2d_thread: out[t], t = ((n * C_out + co) * OH + oh) * OW + ow, summed over ci and
// the taps kh = (oh + p) mod s + a s (likewise kw) of its phase.
@compute @workgroup_size(256)
fn conv_transpose2d_thread(@builtin(global_invocation_id) gid: vec3<u32>,
                           @builtin(num_workgroups) nwg: vec3<u32>) {
    let ohw = p.oh * p.ow;
    let t = gid.x + gid.y * nwg.x * 256u;
    if (t >= p.n * p.c_out * ohw) {
        return;
    }
    let n = t / (p.c_out * ohw);
    let co = (t / ohw) % p.c_out;
    let oh = (t % ohw) / p.ow;
    let ow = t % p.ow;
    let khw = p.kh * p.kw;
    let hw = p.h * p.w;
    // Taps of this pixel's phase: kh = (oh + p) mod s + a s, input row (oh + p - kh) / s.
    let ph = (oh + p.padding) % p.stride;
    let pw = (ow + p.padding) % p.stride;
    var acc = 0.0;
    for (var kh = ph; kh < p.kh; kh += p.stride) {
        let ih = (i32(oh + p.padding) - i32(kh)) / i32(p.stride);
        if (ih < 0 || ih >= i32(p.h)) {
            continue;
        }
        for (var kw = pw; kw < p.kw; kw += p.stride) {
            let iw = (i32(ow + p.padding) - i32(kw)) / i32(p.stride);
            if (iw < 0 || iw >= i32(p.w)) {
                continue;
            }
            let x_at = n * p.c_in * hw + u32(ih) * p.w + u32(iw);
            let w_at = co * khw + kh * p.kw + kw;
            for (var ci = 0u; ci < p.c_in; ci++) {
                acc = fma(x[x_at + ci * hw], weight[w_at + ci * p.c_out * khw], acc);
            }
        }
    }
    out[t] = acc;
}
