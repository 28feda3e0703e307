// Batched matrix product (src/ops/matmul.rs), tiled in workgroup memory with register blocking.
//
// Buffers (per batch entry b; batch dims broadcast through per-operand batch strides):
//   lhs: [M, K] row-major, or [K, M] when LHS_T (stored transposed)
//   rhs: [K, N] row-major, or [N, K] when RHS_T
//   out: [batch, M, N]
// Index formula: out[b, m, n] = sum_k A[b, m, k] * B[b, k, n]
//   with A[m, k] = lhs[m * K + k] (or lhs[k * M + m]), B[k, n] = rhs[k * N + n] (or rhs[n * K + k]).
//
// Tiling: a workgroup of 16 x 16 threads computes a 64 x 64 block of out; each thread holds a
// 4 x 4 block of accumulators in registers (rows ty + 16 i, columns tx + 16 j, so neighbouring
// threads touch neighbouring columns). K is walked in steps of 16: the workgroup stages a
// 64 x 16 slice of A and a 16 x 64 slice of B in workgroup memory (8 KiB), each thread loading
// 4 + 4 elements with consecutive threads on consecutive addresses of whichever layout the
// operand has; then every thread does 16 x 4 x 4 multiply-adds from workgroup memory.
// Dispatch: (ceil(N / 64), ceil(M / 64), batch).
//
// Large products: `matmul_128`, a workgroup of 16 x 16 threads computing a 128 x 128 block with
// 8 x 8 accumulators per thread (rows 4 ty + r and 64 + 4 ty + r, columns 4 tx + c and
// 64 + 4 tx + c, r, c < 4): a thread's four rows (columns) are one vec4 of workgroup memory, so
// each k step reads 4 vec4 for 64 multiply-adds (`matmul` reads 8 scalars for 16). It takes
// products of at least 64 such blocks (src/ops/matmul.rs); smaller ones fill a large GPU
// better with the 64 x 64 kernel's 4x more workgroups.
// Dispatch: (ceil(N / 128), ceil(M / 128), batch).
//
// Skinny products (M or N below 16), where most of a 64 x 64 tile would be padding:
// `matmul_dot`: few outputs, long K: one workgroup per output element, 256 threads stride over
//   k, then a tree reduction in workgroup memory. Dispatch: (x, y) covering M * N, batch.
// `matmul_thread`: many outputs or short K: one thread per output element, looping over k.
//   Dispatch: (x, y) covering M * N / 256, batch.

struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    batch_rank: u32,
    batch_dims: vec4<u32>,
    lhs_batch_strides: vec4<u32>,
    rhs_batch_strides: vec4<u32>,
}

override LHS_T: bool = false;
override RHS_T: bool = false;

@group(0) @binding(0) var<storage, read> lhs: array<f32>;
@group(0) @binding(1) var<storage, read> rhs: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: MatmulParams;

const TILE_M: u32 = 64u;
const TILE_N: u32 = 64u;
const TILE_K: u32 = 16u;

// a_tile[kk * TILE_M + mm] = A[row0 + mm, k0 + kk];  b_tile[kk * TILE_N + nn] = B[k0 + kk, col0 + nn]
var<workgroup> a_tile: array<f32, 1024>;
var<workgroup> b_tile: array<f32, 1024>;
var<workgroup> partial: array<f32, 256>;

// Offsets of batch entry `batch`'s A and B (stride 0 on broadcast batch dims).
fn batch_bases(batch: u32) -> vec2<u32> {
    var rem = batch;
    var a_mat = 0u;
    var b_mat = 0u;
    for (var d = p.batch_rank; d > 0u; d--) {
        let size = p.batch_dims[d - 1u];
        let idx = rem % size;
        rem = rem / size;
        a_mat += idx * p.lhs_batch_strides[d - 1u];
        b_mat += idx * p.rhs_batch_strides[d - 1u];
    }
    return vec2<u32>(a_mat * p.m * p.k, b_mat * p.k * p.n);
}

// A[m, k] of the batch entry whose lhs starts at `base`, for either lhs layout (no bounds check).
fn lhs_at(base: u32, m: u32, k: u32) -> f32 {
    if (LHS_T) {
        return lhs[base + k * p.m + m];
    }
    return lhs[base + m * p.k + k];
}

// B[k, n] of the batch entry whose rhs starts at `base`, for either rhs layout (no bounds check).
fn rhs_at(base: u32, k: u32, n: u32) -> f32 {
    if (RHS_T) {
        return rhs[base + n * p.k + k];
    }
    return rhs[base + k * p.n + n];
}

// One element of a K-slice staged by a workgroup: its place in the slice (`mn` along M for A,
// along N for B; `kk` along K) and its value, zero outside the matrix.
struct Staged {
    mn: u32,
    kk: u32,
    value: f32,
}

// Element e of the `rows` x TILE_K slice of A starting at (row0, k0), numbered so that
// consecutive e run along lhs's contiguous axis (k, or m when LHS_T).
fn stage_lhs(base: u32, row0: u32, k0: u32, e: u32, rows: u32) -> Staged {
    var mm = e / TILE_K;
    var kk = e % TILE_K;
    if (LHS_T) {
        kk = e / rows;
        mm = e % rows;
    }
    var v = 0.0;
    if (row0 + mm < p.m && k0 + kk < p.k) {
        v = lhs_at(base, row0 + mm, k0 + kk);
    }
    return Staged(mm, kk, v);
}

// Element e of the TILE_K x `cols` slice of B starting at (k0, col0), consecutive e along
// rhs's contiguous axis (n, or k when RHS_T).
fn stage_rhs(base: u32, k0: u32, col0: u32, e: u32, cols: u32) -> Staged {
    var kb = e / cols;
    var nn = e % cols;
    if (RHS_T) {
        nn = e / TILE_K;
        kb = e % TILE_K;
    }
    var v = 0.0;
    if (k0 + kb < p.k && col0 + nn < p.n) {
        v = rhs_at(base, k0 + kb, col0 + nn);
    }
    return Staged(nn, kb, v);
}

// matmul: out[b, m, n] = sum_k A[b, m, k] * B[b, k, n], the tiled kernel; lhs, rhs as above,
// out: [batch, M, N] at out[b * M * N + m * N + n]. Dispatch (ceil(N / 64), ceil(M / 64), batch).
@compute @workgroup_size(16, 16, 1)
fn matmul(@builtin(local_invocation_id) lid: vec3<u32>,
          @builtin(workgroup_id) wid: vec3<u32>) {
    let batch = wid.z;
    let bases = batch_bases(batch);
    let a_base = bases.x;
    let b_base = bases.y;
    let row0 = wid.y * TILE_M;
    let col0 = wid.x * TILE_N;
    let t = lid.y * 16u + lid.x;

    var acc: array<array<f32, 4>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += TILE_K) {
        for (var r = 0u; r < 4u; r++) {
            let e = t + r * 256u;
            let a = stage_lhs(a_base, row0, k0, e, TILE_M);
            a_tile[a.kk * TILE_M + a.mn] = a.value;
            let b = stage_rhs(b_base, k0, col0, e, TILE_N);
            b_tile[b.kk * TILE_N + b.mn] = b.value;
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
        // Everyone is done reading the tiles before the next slice overwrites them.
        workgroupBarrier();
    }
    let out_base = batch * p.m * p.n;
    for (var i = 0u; i < 4u; i++) {
        let gm = row0 + lid.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let gn = col0 + lid.x + 16u * j;
            if (gm < p.m && gn < p.n) {
                out[out_base + gm * p.n + gn] = acc[i][j];
            }
        }
    }
}

// a_wide[kk * 32 + swz(kk, mm / 4)][mm % 4] = A[row0 + mm, k0 + kk];
// b_wide[kk * 32 + swz(kk, nn / 4)][nn % 4] = B[k0 + kk, col0 + nn]; 16 KiB together, the
// portable limit. swz(kk, q) = q ^ (kk % 8) permutes the vec4 of row kk within groups of 8, so
// that when an operand runs along k (consecutive threads on consecutive kk, same column) the
// stores spread over 8 banks instead of one; a thread's reads (q = ty or 16 + ty) go through
// the same permutation.
const WIDE_TILE: u32 = 128u;
var<workgroup> a_wide: array<vec4<f32>, 512>;
var<workgroup> b_wide: array<vec4<f32>, 512>;

// Index of vec4 q of row kk in a_wide / b_wide (see above).
fn wide_at(kk: u32, q: u32) -> u32 {
    return kk * 32u + (q ^ (kk & 7u));
}

// matmul_128: out[b, m, n] = sum_k A[b, m, k] * B[b, k, n]; lhs, rhs, out as for `matmul`.
// Dispatch (ceil(N / 128), ceil(M / 128), batch).
@compute @workgroup_size(16, 16, 1)
fn matmul_128(@builtin(local_invocation_id) lid: vec3<u32>,
              @builtin(workgroup_id) wid: vec3<u32>) {
    let batch = wid.z;
    let bases = batch_bases(batch);
    let row0 = wid.y * WIDE_TILE;
    let col0 = wid.x * WIDE_TILE;
    let t = lid.y * 16u + lid.x;

    var acc: array<vec4<f32>, 16>;
    for (var k0 = 0u; k0 < p.k; k0 += TILE_K) {
        // Stage 128 x 16 of A and 16 x 128 of B: 8 + 8 elements per thread, consecutive
        // threads on consecutive addresses of whichever layout each operand has.
        for (var r = 0u; r < 8u; r++) {
            let e = t + r * 256u;
            let a = stage_lhs(bases.x, row0, k0, e, WIDE_TILE);
            a_wide[wide_at(a.kk, a.mn / 4u)][a.mn % 4u] = a.value;
            let b = stage_rhs(bases.y, k0, col0, e, WIDE_TILE);
            b_wide[wide_at(b.kk, b.mn / 4u)][b.mn % 4u] = b.value;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let a_lo = a_wide[wide_at(kk, lid.y)];
            let a_hi = a_wide[wide_at(kk, 16u + lid.y)];
            let b_lo = b_wide[wide_at(kk, lid.x)];
            let b_hi = b_wide[wide_at(kk, 16u + lid.x)];
            for (var r = 0u; r < 4u; r++) {
                let x_lo = vec4<f32>(a_lo[r]);
                let x_hi = vec4<f32>(a_hi[r]);
                acc[2u * r] = fma(x_lo, b_lo, acc[2u * r]);
                acc[2u * r + 1u] = fma(x_lo, b_hi, acc[2u * r + 1u]);
                acc[8u + 2u * r] = fma(x_hi, b_lo, acc[8u + 2u * r]);
                acc[9u + 2u * r] = fma(x_hi, b_hi, acc[9u + 2u * r]);
            }
        }
        workgroupBarrier();
    }
    // acc[2 i + h][c] is out row (i < 4: 4 ty + i, else 64 + 4 ty + i - 4), column
    // 64 h + 4 tx + c.
    let out_base = batch * p.m * p.n;
    for (var i = 0u; i < 8u; i++) {
        let gm = row0 + (i / 4u) * 64u + 4u * lid.y + i % 4u;
        if (gm >= p.m) {
            continue;
        }
        for (var h = 0u; h < 2u; h++) {
            let v = acc[2u * i + h];
            for (var c = 0u; c < 4u; c++) {
                let gn = col0 + 64u * h + 4u * lid.x + c;
                if (gn < p.n) {
                    out[out_base + gm * p.n + gn] = v[c];
                }
            }
        }
    }
}

// matmul_dot: out[b * M * N + j], j = wid.x + wid.y * nwg.x = m * N + n, one workgroup per output.
@compute @workgroup_size(256)
fn matmul_dot(@builtin(local_invocation_index) lid: u32,
              @builtin(workgroup_id) wid: vec3<u32>,
              @builtin(num_workgroups) nwg: vec3<u32>) {
    let batch = wid.z;
    let bases = batch_bases(batch);
    let j = wid.x + wid.y * nwg.x;
    let gm = j / p.n;
    let gn = j % p.n;
    var acc = 0.0;
    if (gm < p.m) {
        for (var k = lid; k < p.k; k += 256u) {
            acc = fma(lhs_at(bases.x, gm, k), rhs_at(bases.y, k, gn), acc);
        }
    }
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s / 2u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u && gm < p.m) {
        out[batch * p.m * p.n + j] = partial[0];
    }
}

// matmul_thread: out[b * M * N + j], j = gid.x + gid.y * nwg.x * 256 = m * N + n, one thread
// per output.
@compute @workgroup_size(256)
fn matmul_thread(@builtin(global_invocation_id) gid: vec3<u32>,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let batch = gid.z;
    let j = gid.x + gid.y * nwg.x * 256u;
    if (j >= p.m * p.n) {
        return;
    }
    let bases = batch_bases(batch);
    let gm = j / p.n;
    let gn = j % p.n;
    var acc = 0.0;
    for (var k = 0u; k < p.k; k++) {
        acc = fma(lhs_at(bases.x, gm, k), rhs_at(bases.y, k, gn), acc);
    }
    out[batch * p.m * p.n + j] = acc;
}
