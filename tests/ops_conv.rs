//! Convolution, pooling and second-order correctness.
//!
//! - conv2d, conv_transpose2d, conv2d_weight_grad, avg_pool2x2, upsample_nearest2x: forward and
//!   backward against naive f64 references written here from the definitions (plain nested
//!   loops), on fresh random inputs, over a table of named cases with odd sizes, every stride /
//!   padding / kernel combination we rely on, and the DCGAN shapes at small batch;
//! - output shapes against PyTorch's formulas (and literal PyTorch values);
//! - finite-difference gradient checks of every op;
//! - second order (grad of grad against finite differences of the gradient) for conv2d,
//!   conv_transpose2d, conv2d_weight_grad, linear, leaky_relu, tanh, mul, sum, sqrt;
//! - a WGAN-GP gradient penalty through a tiny critic, checked against finite differences;
//! - invalid shapes and parameters give errors naming the op and the shapes, not panics.
//!
//! The backward references are the hand-written VJPs of `weighted_sum(y, seed)`, whose weights
//! are regenerated here from the same seed (see `ws_weights`, itself checked below).

mod common;

use common::{
    assert_close, check_gradients, f64s, leaf, numeric_grad, randn, rng, uniform, weighted_sum,
};
use ganforge::ops::{Conv2dParams, Conv2dWeightGradParams, ConvTranspose2dParams};
use ganforge::{autograd, Rng, Tensor};

// ---------------------------------------------------------------------------------------------
// Case tables
// ---------------------------------------------------------------------------------------------

/// One convolution configuration. `k` is `[KH, KW]`; `output_padding` (`[h, w]`) is used by
/// transposed convolutions only.
#[derive(Clone, Copy, Debug)]
struct Case {
    name: &'static str,
    n: usize,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    k: [usize; 2],
    stride: usize,
    padding: usize,
    output_padding: [usize; 2],
}

#[allow(clippy::too_many_arguments)]
const fn case(
    name: &'static str,
    n: usize,
    c_in: usize,
    c_out: usize,
    h: usize,
    w: usize,
    k: [usize; 2],
    stride: usize,
    padding: usize,
    output_padding: [usize; 2],
) -> Case {
    Case {
        name,
        n,
        c_in,
        c_out,
        h,
        w,
        k,
        stride,
        padding,
        output_padding,
    }
}

/// conv2d (and conv2d_weight_grad) cases. Comments give the rows the floor in OH drops,
/// `(H + 2p - KH) mod s`, which the backward must restore.
const CONV_CASES: &[Case] = &[
    case("b1_c1_7x9_k3_s1_p0", 1, 1, 1, 7, 9, [3, 3], 1, 0, [0, 0]),
    // floor drops 0 rows, 0 cols
    case("b3_c5to7_7x9_k3_s2_p1", 3, 5, 7, 7, 9, [3, 3], 2, 1, [0, 0]),
    // drops 2 rows, 0 cols
    case("b3_c7to5_9x7_k5_s3_p2", 3, 7, 5, 9, 7, [5, 5], 3, 2, [0, 0]),
    case("b3_c5to1_7x9_k1_s1_p0", 3, 5, 1, 7, 9, [1, 1], 1, 0, [0, 0]),
    // 1x1 kernel with padding: the border outputs see only zeros
    case("b1_c7to5_7x9_k1_s2_p1", 1, 7, 5, 7, 9, [1, 1], 2, 1, [0, 0]),
    // drops 1 row, 1 col
    case("b3_c5to7_7x9_k4_s2_p1", 3, 5, 7, 7, 9, [4, 4], 2, 1, [0, 0]),
    // even kernel, padding 2, output larger than the input
    case("b1_c5to7_7x9_k4_s1_p2", 1, 5, 7, 7, 9, [4, 4], 1, 2, [0, 0]),
    // stride 3, no padding: drops 1 row, 0 cols
    case("b3_c1to5_7x9_k3_s3_p0", 3, 1, 5, 7, 9, [3, 3], 3, 0, [0, 0]),
    // non-square kernel on a tall image: drops 1 row, 2 cols
    case(
        "b2_c5to7_11x5_k3x5_s3_p1",
        2,
        5,
        7,
        11,
        5,
        [3, 5],
        3,
        1,
        [0, 0],
    ),
    // padding larger than the image: the dropped rows (2) exceed H (1)
    case("b2_c3to2_1x3_k1_s4_p3", 2, 3, 2, 1, 3, [1, 1], 4, 3, [0, 0]),
    // DCGAN discriminator (MNIST) at batch 2
    case(
        "dcgan_d1_b2_c1to16_28x28_k4_s2_p1",
        2,
        1,
        16,
        28,
        28,
        [4, 4],
        2,
        1,
        [0, 0],
    ),
    case(
        "dcgan_d2_b2_c16to32_14x14_k4_s2_p1",
        2,
        16,
        32,
        14,
        14,
        [4, 4],
        2,
        1,
        [0, 0],
    ),
    case(
        "dcgan_d3_b2_c32to1_7x7_k7_s1_p0",
        2,
        32,
        1,
        7,
        7,
        [7, 7],
        1,
        0,
        [0, 0],
    ),
];

/// conv_transpose2d cases (`h, w` are the input size).
const CONVT_CASES: &[Case] = &[
    case("b1_c1_7x9_k3_s1_p0", 1, 1, 1, 7, 9, [3, 3], 1, 0, [0, 0]),
    // the mandatory one: stride 2, output_padding 1
    case(
        "b3_c5to7_7x9_k3_s2_p1_op1",
        3,
        5,
        7,
        7,
        9,
        [3, 3],
        2,
        1,
        [1, 1],
    ),
    // output_padding per axis
    case(
        "b3_c7to5_7x9_k4_s2_p1_op10",
        3,
        7,
        5,
        7,
        9,
        [4, 4],
        2,
        1,
        [1, 0],
    ),
    case(
        "b3_c5to7_9x7_k5_s3_p2_op21",
        3,
        5,
        7,
        9,
        7,
        [5, 5],
        3,
        2,
        [2, 1],
    ),
    // 1x1 kernel, stride 2: every other output row/col is untouched (zero)
    case(
        "b1_c7to5_7x9_k1_s2_p0_op1",
        1,
        7,
        5,
        7,
        9,
        [1, 1],
        2,
        0,
        [1, 1],
    ),
    case(
        "b3_c1to5_7x9_k3_s3_p0_op02",
        3,
        1,
        5,
        7,
        9,
        [3, 3],
        3,
        0,
        [0, 2],
    ),
    case("b3_c5to7_7x9_k5_s1_p2", 3, 5, 7, 7, 9, [5, 5], 1, 2, [0, 0]),
    case(
        "b2_c5to3_5x11_k3x5_s2_p1_op01",
        2,
        5,
        3,
        5,
        11,
        [3, 5],
        2,
        1,
        [0, 1],
    ),
    // padding that crops most of the full output
    case("b1_c3to2_3x5_k3_s1_p2", 1, 3, 2, 3, 5, [3, 3], 1, 2, [0, 0]),
    // DCGAN generator (MNIST) at batch 2: 1x1 -> 7x7 -> 14x14 -> 28x28
    case(
        "dcgan_g1_b2_c100to256_1x1_k7_s1_p0",
        2,
        100,
        256,
        1,
        1,
        [7, 7],
        1,
        0,
        [0, 0],
    ),
    case(
        "dcgan_g2_b2_c128to64_7x7_k4_s2_p1",
        2,
        128,
        64,
        7,
        7,
        [4, 4],
        2,
        1,
        [0, 0],
    ),
    case(
        "dcgan_g3_b2_c64to1_14x14_k4_s2_p1",
        2,
        64,
        1,
        14,
        14,
        [4, 4],
        2,
        1,
        [0, 0],
    ),
];

// ---------------------------------------------------------------------------------------------
// PyTorch's output-size formulas
// ---------------------------------------------------------------------------------------------

/// `torch.nn.Conv2d`: `floor((H + 2p - K) / s) + 1`.
fn torch_conv_out(i: usize, k: usize, s: usize, p: usize) -> usize {
    (i + 2 * p - k) / s + 1
}

/// `torch.nn.ConvTranspose2d`: `(H - 1) s - 2p + K + output_padding`.
fn torch_convt_out(i: usize, k: usize, s: usize, p: usize, op: usize) -> usize {
    let full = (i - 1) * s + k + op;
    assert!(full > 2 * p, "test case leaves no output");
    full - 2 * p
}

// ---------------------------------------------------------------------------------------------
// f64 references, straight from the definitions
// ---------------------------------------------------------------------------------------------

/// Geometry of one convolution: input `[n, ci, h, w]`, kernel `kh x kw`, output `[n, co, oh, ow]`.
#[derive(Clone, Copy, Debug)]
struct Geo {
    n: usize,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    s: usize,
    p: usize,
}

impl Geo {
    fn xi(&self, n: usize, c: usize, i: usize, j: usize) -> usize {
        ((n * self.ci + c) * self.h + i) * self.w + j
    }
    fn yi(&self, n: usize, c: usize, i: usize, j: usize) -> usize {
        ((n * self.co + c) * self.oh + i) * self.ow + j
    }
    /// conv2d weight `[co, ci, kh, kw]`.
    fn wi(&self, co: usize, ci: usize, a: usize, b: usize) -> usize {
        ((co * self.ci + ci) * self.kh + a) * self.kw + b
    }
    /// conv_transpose2d weight `[ci, co, kh, kw]`.
    fn wti(&self, ci: usize, co: usize, a: usize, b: usize) -> usize {
        ((ci * self.co + co) * self.kh + a) * self.kw + b
    }
    fn x_len(&self) -> usize {
        self.n * self.ci * self.h * self.w
    }
    fn y_len(&self) -> usize {
        self.n * self.co * self.oh * self.ow
    }
    fn w_len(&self) -> usize {
        self.co * self.ci * self.kh * self.kw
    }
    /// Input position read by output `(o)` through kernel tap `k` (conv2d), or the output
    /// position written by input `(o)` through tap `k` (conv_transpose2d): `o*s - p + k`.
    fn tap(&self, o: usize, k: usize, len: usize) -> Option<usize> {
        let v = (o * self.s + k) as isize - self.p as isize;
        (v >= 0 && (v as usize) < len).then_some(v as usize)
    }
}

fn conv_geo(c: &Case) -> Geo {
    Geo {
        n: c.n,
        ci: c.c_in,
        co: c.c_out,
        h: c.h,
        w: c.w,
        kh: c.k[0],
        kw: c.k[1],
        oh: torch_conv_out(c.h, c.k[0], c.stride, c.padding),
        ow: torch_conv_out(c.w, c.k[1], c.stride, c.padding),
        s: c.stride,
        p: c.padding,
    }
}

fn convt_geo(c: &Case) -> Geo {
    Geo {
        n: c.n,
        ci: c.c_in,
        co: c.c_out,
        h: c.h,
        w: c.w,
        kh: c.k[0],
        kw: c.k[1],
        oh: torch_convt_out(c.h, c.k[0], c.stride, c.padding, c.output_padding[0]),
        ow: torch_convt_out(c.w, c.k[1], c.stride, c.padding, c.output_padding[1]),
        s: c.stride,
        p: c.padding,
    }
}

/// `y[n, co, oh, ow] = sum_{ci, kh, kw} w[co, ci, kh, kw] * x[n, ci, oh*s - p + kh, ow*s - p + kw]`.
fn conv2d_ref(x: &[f64], wt: &[f64], g: &Geo) -> Vec<f64> {
    let mut y = vec![0.0; g.y_len()];
    for n in 0..g.n {
        for co in 0..g.co {
            for oh in 0..g.oh {
                for ow in 0..g.ow {
                    let mut acc = 0.0;
                    for ci in 0..g.ci {
                        for kh in 0..g.kh {
                            for kw in 0..g.kw {
                                if let (Some(ih), Some(iw)) =
                                    (g.tap(oh, kh, g.h), g.tap(ow, kw, g.w))
                                {
                                    acc += wt[g.wi(co, ci, kh, kw)] * x[g.xi(n, ci, ih, iw)];
                                }
                            }
                        }
                    }
                    y[g.yi(n, co, oh, ow)] = acc;
                }
            }
        }
    }
    y
}

/// VJP of `L = sum(conv2d(x, w) * gy)`: `(dL/dx, dL/dw)`. The `dw` part is also the definition
/// of conv2d_weight_grad(x, gy).
fn conv2d_vjp_ref(x: &[f64], wt: &[f64], gy: &[f64], g: &Geo) -> (Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; g.x_len()];
    let mut dw = vec![0.0; g.w_len()];
    for n in 0..g.n {
        for co in 0..g.co {
            for oh in 0..g.oh {
                for ow in 0..g.ow {
                    let gv = gy[g.yi(n, co, oh, ow)];
                    for ci in 0..g.ci {
                        for kh in 0..g.kh {
                            for kw in 0..g.kw {
                                if let (Some(ih), Some(iw)) =
                                    (g.tap(oh, kh, g.h), g.tap(ow, kw, g.w))
                                {
                                    dx[g.xi(n, ci, ih, iw)] += gv * wt[g.wi(co, ci, kh, kw)];
                                    dw[g.wi(co, ci, kh, kw)] += gv * x[g.xi(n, ci, ih, iw)];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw)
}

/// VJP of `L = sum(conv2d_weight_grad(x, gy) * gw)` with
/// `conv2d_weight_grad(x, gy)[co, ci, kh, kw] = sum_{n, oh, ow} gy[n, co, oh, ow] x[n, ci, ih, iw]`:
/// returns `(dL/dx, dL/dgy)`.
fn conv2d_weight_grad_vjp_ref(x: &[f64], gy: &[f64], gw: &[f64], g: &Geo) -> (Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; g.x_len()];
    let mut dgy = vec![0.0; g.y_len()];
    for n in 0..g.n {
        for co in 0..g.co {
            for oh in 0..g.oh {
                for ow in 0..g.ow {
                    for ci in 0..g.ci {
                        for kh in 0..g.kh {
                            for kw in 0..g.kw {
                                if let (Some(ih), Some(iw)) =
                                    (g.tap(oh, kh, g.h), g.tap(ow, kw, g.w))
                                {
                                    let wv = gw[g.wi(co, ci, kh, kw)];
                                    dx[g.xi(n, ci, ih, iw)] += wv * gy[g.yi(n, co, oh, ow)];
                                    dgy[g.yi(n, co, oh, ow)] += wv * x[g.xi(n, ci, ih, iw)];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dgy)
}

/// Scatter form: `y[n, co, ih*s - p + kh, iw*s - p + kw] += x[n, ci, ih, iw] * w[ci, co, kh, kw]`,
/// positions outside the `oh x ow` output dropped.
fn conv_transpose2d_ref(x: &[f64], wt: &[f64], g: &Geo) -> Vec<f64> {
    let mut y = vec![0.0; g.y_len()];
    for n in 0..g.n {
        for ci in 0..g.ci {
            for ih in 0..g.h {
                for iw in 0..g.w {
                    let xv = x[g.xi(n, ci, ih, iw)];
                    for co in 0..g.co {
                        for kh in 0..g.kh {
                            for kw in 0..g.kw {
                                if let (Some(oh), Some(ow)) =
                                    (g.tap(ih, kh, g.oh), g.tap(iw, kw, g.ow))
                                {
                                    y[g.yi(n, co, oh, ow)] += xv * wt[g.wti(ci, co, kh, kw)];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    y
}

/// VJP of `L = sum(conv_transpose2d(x, w) * gy)`: `(dL/dx, dL/dw)`.
fn conv_transpose2d_vjp_ref(x: &[f64], wt: &[f64], gy: &[f64], g: &Geo) -> (Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; g.x_len()];
    let mut dw = vec![0.0; g.w_len()];
    for n in 0..g.n {
        for ci in 0..g.ci {
            for ih in 0..g.h {
                for iw in 0..g.w {
                    for co in 0..g.co {
                        for kh in 0..g.kh {
                            for kw in 0..g.kw {
                                if let (Some(oh), Some(ow)) =
                                    (g.tap(ih, kh, g.oh), g.tap(iw, kw, g.ow))
                                {
                                    let gv = gy[g.yi(n, co, oh, ow)];
                                    dx[g.xi(n, ci, ih, iw)] += gv * wt[g.wti(ci, co, kh, kw)];
                                    dw[g.wti(ci, co, kh, kw)] += gv * x[g.xi(n, ci, ih, iw)];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (dx, dw)
}

/// `y[n, c] += b[c]` over every pixel, and the bias gradient `db[c] = sum_{n, i, j} gy[n, c, i, j]`.
fn add_bias_ref(y: &mut [f64], b: &[f64], n: usize, c: usize, plane: usize) {
    for ni in 0..n {
        for ci in 0..c {
            for v in &mut y[(ni * c + ci) * plane..][..plane] {
                *v += b[ci];
            }
        }
    }
}

fn bias_grad_ref(gy: &[f64], n: usize, c: usize, plane: usize) -> Vec<f64> {
    let mut db = vec![0.0; c];
    for ni in 0..n {
        for (ci, d) in db.iter_mut().enumerate() {
            *d += gy[(ni * c + ci) * plane..][..plane].iter().sum::<f64>();
        }
    }
    db
}

/// `out[p, i, j] = (x[p, 2i, 2j] + x[p, 2i, 2j+1] + x[p, 2i+1, 2j] + x[p, 2i+1, 2j+1]) / 4` per
/// plane `p`, `i < H/2`, `j < W/2` (floor).
fn avg_pool_ref(x: &[f64], planes: usize, h: usize, w: usize) -> Vec<f64> {
    let (oh, ow) = (h / 2, w / 2);
    let mut y = vec![0.0; planes * oh * ow];
    for p in 0..planes {
        for i in 0..oh {
            for j in 0..ow {
                let mut acc = 0.0;
                for a in 0..2 {
                    for b in 0..2 {
                        acc += x[(p * h + 2 * i + a) * w + 2 * j + b];
                    }
                }
                y[(p * oh + i) * ow + j] = acc / 4.0;
            }
        }
    }
    y
}

fn avg_pool_vjp_ref(gy: &[f64], planes: usize, h: usize, w: usize) -> Vec<f64> {
    let (oh, ow) = (h / 2, w / 2);
    let mut dx = vec![0.0; planes * h * w];
    for p in 0..planes {
        for i in 0..oh {
            for j in 0..ow {
                for a in 0..2 {
                    for b in 0..2 {
                        dx[(p * h + 2 * i + a) * w + 2 * j + b] += gy[(p * oh + i) * ow + j] / 4.0;
                    }
                }
            }
        }
    }
    dx
}

/// `out[p, i, j] = x[p, i/2, j/2]`, zero where `i/2 >= H` or `j/2 >= W`.
fn upsample_ref(x: &[f64], planes: usize, h: usize, w: usize, oh: usize, ow: usize) -> Vec<f64> {
    let mut y = vec![0.0; planes * oh * ow];
    for p in 0..planes {
        for i in 0..oh {
            for j in 0..ow {
                if i / 2 < h && j / 2 < w {
                    y[(p * oh + i) * ow + j] = x[(p * h + i / 2) * w + j / 2];
                }
            }
        }
    }
    y
}

fn upsample_vjp_ref(
    gy: &[f64],
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
) -> Vec<f64> {
    let mut dx = vec![0.0; planes * h * w];
    for p in 0..planes {
        for i in 0..oh {
            for j in 0..ow {
                if i / 2 < h && j / 2 < w {
                    dx[(p * h + i / 2) * w + j / 2] += gy[(p * oh + i) * ow + j];
                }
            }
        }
    }
    dx
}

/// The weights `weighted_sum(y, seed)` multiplies `y` by, regenerated from the seed exactly as
/// `common::weighted_sum` draws them (`Tensor::rand_uniform(-1, 1, ..)` = one `uniform` per
/// element, in order). `weighted_sum_weights_are_reproduced` guards this.
fn ws_weights(dims: &[usize], seed: u64) -> Vec<f64> {
    let mut r = Rng::new(seed);
    (0..dims.iter().product::<usize>())
        .map(|_| r.uniform(-1.0, 1.0) as f64)
        .collect()
}

/// Absolute tolerance for an f32 result that sums `terms` products of O(1) values.
fn tol(terms: usize) -> f64 {
    1e-5 * (terms as f64).sqrt().max(4.0)
}

fn grads_of(loss: &Tensor, wrt: &[Tensor]) -> Vec<Vec<f32>> {
    autograd::grad(std::slice::from_ref(loss), None, wrt, false)
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, g)| {
            g.unwrap_or_else(|| panic!("no gradient for input {i}"))
                .to_vec()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The test helper itself
// ---------------------------------------------------------------------------------------------

#[test]
fn weighted_sum_weights_are_reproduced() {
    let mut r = rng(1);
    let y = randn(&mut r, &[3, 5, 7], 1.0);
    let got = weighted_sum(&y, 42).to_scalar().unwrap();
    let want: f64 = f64s(&y)
        .iter()
        .zip(ws_weights(y.dims(), 42))
        .map(|(a, b)| a * b)
        .sum();
    assert_close(
        "weighted_sum vs its regenerated weights",
        &[got],
        &[want],
        1e-4,
        1e-5,
    );
    // and a different seed gives a different scalar, so the seed matters
    let other = weighted_sum(&y, 43).to_scalar().unwrap();
    assert!((other as f64 - want).abs() > 1e-2);
}

// ---------------------------------------------------------------------------------------------
// Forward and backward against the references
// ---------------------------------------------------------------------------------------------

#[test]
fn conv2d_matches_reference() {
    for (idx, c) in CONV_CASES.iter().enumerate() {
        let g = conv_geo(c);
        let mut r = rng(100 + idx as u64);
        let x = leaf(&randn(&mut r, &[c.n, c.c_in, c.h, c.w], 1.0));
        let w = leaf(&randn(&mut r, &[c.c_out, c.c_in, c.k[0], c.k[1]], 0.5));
        let b = leaf(&randn(&mut r, &[c.c_out], 1.0));
        let params = Conv2dParams::new(c.stride, c.padding).unwrap();
        let terms = c.c_in * c.k[0] * c.k[1];

        // forward, no bias
        let y = x.conv2d(&w, params).unwrap();
        assert_eq!(
            y.dims(),
            [c.n, c.c_out, g.oh, g.ow],
            "{}: output shape",
            c.name
        );
        let y_ref = conv2d_ref(&f64s(&x), &f64s(&w), &g);
        assert_close(
            &format!("{}: conv2d forward", c.name),
            &y.to_vec(),
            &y_ref,
            tol(terms),
            1e-5,
        );

        // backward of weighted_sum(y)
        let seed = 1000 + idx as u64;
        let gy = ws_weights(y.dims(), seed);
        let grads = grads_of(&weighted_sum(&y, seed), &[x.clone(), w.clone()]);
        let (dx_ref, dw_ref) = conv2d_vjp_ref(&f64s(&x), &f64s(&w), &gy, &g);
        let dx_terms = c.c_out * c.k[0] * c.k[1];
        let dw_terms = c.n * g.oh * g.ow;
        assert_close(
            &format!("{}: conv2d dx", c.name),
            &grads[0],
            &dx_ref,
            tol(dx_terms),
            1e-5,
        );
        assert_close(
            &format!("{}: conv2d dw", c.name),
            &grads[1],
            &dw_ref,
            tol(dw_terms),
            1e-5,
        );

        // bias variant: forward and dx, dw, db
        let yb = x.conv2d_bias(&w, Some(&b), params).unwrap();
        let mut yb_ref = y_ref.clone();
        add_bias_ref(&mut yb_ref, &f64s(&b), c.n, c.c_out, g.oh * g.ow);
        assert_close(
            &format!("{}: conv2d_bias forward", c.name),
            &yb.to_vec(),
            &yb_ref,
            tol(terms),
            1e-5,
        );
        let grads = grads_of(&weighted_sum(&yb, seed), &[x.clone(), w.clone(), b.clone()]);
        let db_ref = bias_grad_ref(&gy, c.n, c.c_out, g.oh * g.ow);
        assert_close(
            &format!("{}: conv2d_bias dx", c.name),
            &grads[0],
            &dx_ref,
            tol(dx_terms),
            1e-5,
        );
        assert_close(
            &format!("{}: conv2d_bias dw", c.name),
            &grads[1],
            &dw_ref,
            tol(dw_terms),
            1e-5,
        );
        assert_close(
            &format!("{}: conv2d_bias db", c.name),
            &grads[2],
            &db_ref,
            tol(dw_terms),
            1e-5,
        );

        // bias None is the plain conv
        let yn = x.conv2d_bias(&w, None, params).unwrap();
        assert_close(
            &format!("{}: conv2d_bias(None)", c.name),
            &yn.to_vec(),
            &y_ref,
            tol(terms),
            1e-5,
        );
    }
}

#[test]
fn conv_transpose2d_matches_reference() {
    for (idx, c) in CONVT_CASES.iter().enumerate() {
        let g = convt_geo(c);
        let mut r = rng(200 + idx as u64);
        let x = leaf(&randn(&mut r, &[c.n, c.c_in, c.h, c.w], 1.0));
        let w = leaf(&randn(&mut r, &[c.c_in, c.c_out, c.k[0], c.k[1]], 0.5));
        let b = leaf(&randn(&mut r, &[c.c_out], 1.0));
        let params = ConvTranspose2dParams {
            stride: c.stride,
            padding: c.padding,
            output_padding: c.output_padding,
        };
        // each output sums at most c_in * ceil(k/s)^2 products
        let terms = c.c_in * c.k[0].div_ceil(c.stride) * c.k[1].div_ceil(c.stride);

        let y = x.conv_transpose2d(&w, params).unwrap();
        assert_eq!(
            y.dims(),
            [c.n, c.c_out, g.oh, g.ow],
            "{}: output shape",
            c.name
        );
        let y_ref = conv_transpose2d_ref(&f64s(&x), &f64s(&w), &g);
        assert_close(
            &format!("{}: conv_transpose2d forward", c.name),
            &y.to_vec(),
            &y_ref,
            tol(terms),
            1e-5,
        );

        let seed = 2000 + idx as u64;
        let gy = ws_weights(y.dims(), seed);
        let grads = grads_of(&weighted_sum(&y, seed), &[x.clone(), w.clone()]);
        let (dx_ref, dw_ref) = conv_transpose2d_vjp_ref(&f64s(&x), &f64s(&w), &gy, &g);
        let dx_terms = c.c_out * c.k[0] * c.k[1];
        let dw_terms = c.n * c.h * c.w;
        assert_close(
            &format!("{}: conv_transpose2d dx", c.name),
            &grads[0],
            &dx_ref,
            tol(dx_terms),
            1e-5,
        );
        assert_close(
            &format!("{}: conv_transpose2d dw", c.name),
            &grads[1],
            &dw_ref,
            tol(dw_terms),
            1e-5,
        );

        let yb = x.conv_transpose2d_bias(&w, Some(&b), params).unwrap();
        let mut yb_ref = y_ref.clone();
        add_bias_ref(&mut yb_ref, &f64s(&b), c.n, c.c_out, g.oh * g.ow);
        assert_close(
            &format!("{}: conv_transpose2d_bias forward", c.name),
            &yb.to_vec(),
            &yb_ref,
            tol(terms),
            1e-5,
        );
        let grads = grads_of(&weighted_sum(&yb, seed), &[x.clone(), w.clone(), b.clone()]);
        let db_ref = bias_grad_ref(&gy, c.n, c.c_out, g.oh * g.ow);
        assert_close(
            &format!("{}: conv_transpose2d_bias dx", c.name),
            &grads[0],
            &dx_ref,
            tol(dx_terms),
            1e-5,
        );
        assert_close(
            &format!("{}: conv_transpose2d_bias dw", c.name),
            &grads[1],
            &dw_ref,
            tol(dw_terms),
            1e-5,
        );
        assert_close(
            &format!("{}: conv_transpose2d_bias db", c.name),
            &grads[2],
            &db_ref,
            tol(c.n * g.oh * g.ow),
            1e-5,
        );

        let yn = x.conv_transpose2d_bias(&w, None, params).unwrap();
        assert_close(
            &format!("{}: conv_transpose2d_bias(None)", c.name),
            &yn.to_vec(),
            &y_ref,
            tol(terms),
            1e-5,
        );
    }
}

#[test]
fn conv2d_weight_grad_matches_reference() {
    for (idx, c) in CONV_CASES.iter().enumerate() {
        let g = conv_geo(c);
        let mut r = rng(300 + idx as u64);
        let x = leaf(&randn(&mut r, &[c.n, c.c_in, c.h, c.w], 1.0));
        let gy = leaf(&randn(&mut r, &[c.n, c.c_out, g.oh, g.ow], 1.0));
        let params = Conv2dWeightGradParams {
            conv: Conv2dParams::new(c.stride, c.padding).unwrap(),
            kernel_h: c.k[0],
            kernel_w: c.k[1],
        };
        let dw = x.conv2d_weight_grad(&gy, params).unwrap();
        assert_eq!(
            dw.dims(),
            [c.c_out, c.c_in, c.k[0], c.k[1]],
            "{}: shape",
            c.name
        );
        // the definition: dw = sum_{n, oh, ow} gy * x at the tap (the dw half of the conv VJP,
        // whose weight argument it does not read)
        let zeros_w = vec![0.0; g.w_len()];
        let (_, dw_ref) = conv2d_vjp_ref(&f64s(&x), &zeros_w, &f64s(&gy), &g);
        let terms = c.n * g.oh * g.ow;
        assert_close(
            &format!("{}: conv2d_weight_grad forward", c.name),
            &dw.to_vec(),
            &dw_ref,
            tol(terms),
            1e-5,
        );

        let seed = 3000 + idx as u64;
        let gw = ws_weights(dw.dims(), seed);
        let grads = grads_of(&weighted_sum(&dw, seed), &[x.clone(), gy.clone()]);
        let (dx_ref, dgy_ref) = conv2d_weight_grad_vjp_ref(&f64s(&x), &f64s(&gy), &gw, &g);
        let dx_terms = c.c_out * c.k[0] * c.k[1];
        let dgy_terms = c.c_in * c.k[0] * c.k[1];
        assert_close(
            &format!("{}: conv2d_weight_grad d/dx", c.name),
            &grads[0],
            &dx_ref,
            tol(dx_terms),
            1e-5,
        );
        assert_close(
            &format!("{}: conv2d_weight_grad d/dgy", c.name),
            &grads[1],
            &dgy_ref,
            tol(dgy_terms),
            1e-5,
        );
    }
}

/// `(name, n, c, h, w)` for pooling and upsampling.
const POOL_CASES: &[(&str, usize, usize, usize, usize)] = &[
    ("b1_c1_2x2", 1, 1, 2, 2),
    ("b3_c5_7x9", 3, 5, 7, 9),
    ("b1_c7_9x7", 1, 7, 9, 7),
    ("b3_c1_5x3", 3, 1, 5, 3),
    ("b1_c5_3x3", 1, 5, 3, 3),
    ("b1_c1_1x1", 1, 1, 1, 1), // upsampling only
    ("b2_c7_14x14", 2, 7, 14, 14),
];

#[test]
fn avg_pool2x2_matches_reference() {
    for (idx, &(name, n, c, h, w)) in POOL_CASES.iter().enumerate() {
        if h < 2 || w < 2 {
            continue;
        }
        let mut r = rng(400 + idx as u64);
        let x = leaf(&randn(&mut r, &[n, c, h, w], 1.0));
        let y = x.avg_pool2x2().unwrap();
        // PyTorch's avg_pool2d(x, 2): floor(H / 2)
        assert_eq!(y.dims(), [n, c, h / 2, w / 2], "{name}: shape");
        let y_ref = avg_pool_ref(&f64s(&x), n * c, h, w);
        assert_close(
            &format!("{name}: avg_pool2x2 forward"),
            &y.to_vec(),
            &y_ref,
            1e-6,
            1e-6,
        );
        let seed = 4000 + idx as u64;
        let gy = ws_weights(y.dims(), seed);
        let grads = grads_of(&weighted_sum(&y, seed), std::slice::from_ref(&x));
        let dx_ref = avg_pool_vjp_ref(&gy, n * c, h, w);
        assert_close(
            &format!("{name}: avg_pool2x2 dx"),
            &grads[0],
            &dx_ref,
            1e-6,
            1e-6,
        );
        if h % 2 == 1 {
            // the dropped last row gets exactly zero gradient
            let last_row: Vec<f32> = (0..w).map(|j| grads[0][(h - 1) * w + j]).collect();
            assert!(
                last_row.iter().all(|&v| v == 0.0),
                "{name}: dropped row has gradient"
            );
        }
    }
}

#[test]
fn upsample_nearest2x_matches_reference() {
    for (idx, &(name, n, c, h, w)) in POOL_CASES.iter().enumerate() {
        // 2x, and the odd target sizes used as the adjoint of pooling an odd input
        for (oh, ow) in [
            (2 * h, 2 * w),
            (2 * h + 1, 2 * w),
            (2 * h, 2 * w + 1),
            (2 * h + 1, 2 * w + 1),
        ] {
            let mut r = rng(500 + idx as u64);
            let x = leaf(&randn(&mut r, &[n, c, h, w], 1.0));
            let y = if (oh, ow) == (2 * h, 2 * w) {
                x.upsample_nearest2x().unwrap()
            } else {
                x.upsample_nearest2x_to(oh, ow).unwrap()
            };
            let what = format!("{name} -> {oh}x{ow}");
            assert_eq!(y.dims(), [n, c, oh, ow], "{what}: shape");
            let y_ref = upsample_ref(&f64s(&x), n * c, h, w, oh, ow);
            assert_close(
                &format!("{what}: upsample forward"),
                &y.to_vec(),
                &y_ref,
                0.0,
                0.0,
            );
            let seed = 5000 + idx as u64;
            let gy = ws_weights(y.dims(), seed);
            let grads = grads_of(&weighted_sum(&y, seed), std::slice::from_ref(&x));
            let dx_ref = upsample_vjp_ref(&gy, n * c, h, w, oh, ow);
            assert_close(
                &format!("{what}: upsample dx"),
                &grads[0],
                &dx_ref,
                1e-6,
                1e-6,
            );
        }
    }
}

/// `(x dims, w dims, stride, padding, expected output dims)`.
type ConvShapeCase = (&'static [usize], [usize; 4], usize, usize, [usize; 4]);
/// `(x dims, w dims, stride, padding, output_padding, expected output dims)`.
type ConvTShapeCase = (
    &'static [usize],
    [usize; 4],
    usize,
    usize,
    [usize; 2],
    [usize; 4],
);

#[test]
fn output_shapes_match_pytorch() {
    // Literal values from PyTorch (nn.Conv2d / nn.ConvTranspose2d / avg_pool2d), so that the
    // formulas above are themselves checked.
    let conv: &[ConvShapeCase] = &[
        (&[2, 1, 28, 28], [16, 1, 4, 4], 2, 1, [2, 16, 14, 14]),
        (&[2, 16, 14, 14], [32, 16, 4, 4], 2, 1, [2, 32, 7, 7]),
        (&[2, 32, 7, 7], [1, 32, 7, 7], 1, 0, [2, 1, 1, 1]),
        (&[1, 3, 7, 9], [4, 3, 3, 3], 2, 1, [1, 4, 4, 5]),
        (&[1, 3, 9, 7], [4, 3, 5, 5], 3, 2, [1, 4, 3, 3]),
        (&[1, 3, 7, 9], [4, 3, 3, 3], 3, 0, [1, 4, 2, 3]),
        (&[1, 3, 11, 5], [4, 3, 3, 5], 3, 1, [1, 4, 4, 1]),
        (&[1, 3, 7, 9], [4, 3, 4, 4], 1, 2, [1, 4, 8, 10]),
    ];
    for (xd, wd, s, p, want) in conv {
        let x = Tensor::zeros(xd.to_vec(), &ganforge::Device::Cpu);
        let w = Tensor::zeros(wd.to_vec(), &ganforge::Device::Cpu);
        let y = x.conv2d(&w, Conv2dParams::new(*s, *p).unwrap()).unwrap();
        assert_eq!(y.dims(), want, "conv2d {xd:?} * {wd:?} s{s} p{p}");
        assert_eq!(
            [
                torch_conv_out(xd[2], wd[2], *s, *p),
                torch_conv_out(xd[3], wd[3], *s, *p)
            ],
            [want[2], want[3]]
        );
    }
    let convt: &[ConvTShapeCase] = &[
        (
            &[2, 100, 1, 1],
            [100, 256, 7, 7],
            1,
            0,
            [0, 0],
            [2, 256, 7, 7],
        ),
        (
            &[2, 128, 7, 7],
            [128, 64, 4, 4],
            2,
            1,
            [0, 0],
            [2, 64, 14, 14],
        ),
        (
            &[2, 64, 14, 14],
            [64, 1, 4, 4],
            2,
            1,
            [0, 0],
            [2, 1, 28, 28],
        ),
        (&[1, 3, 7, 9], [3, 4, 3, 3], 2, 1, [1, 1], [1, 4, 14, 18]),
        (&[1, 3, 7, 9], [3, 4, 3, 3], 2, 1, [0, 0], [1, 4, 13, 17]),
        (&[1, 3, 7, 9], [3, 4, 4, 4], 2, 1, [1, 0], [1, 4, 15, 18]),
        (&[1, 3, 9, 7], [3, 4, 5, 5], 3, 2, [2, 1], [1, 4, 27, 20]),
        (&[1, 3, 3, 5], [3, 4, 3, 3], 1, 2, [0, 0], [1, 4, 1, 3]),
    ];
    for (xd, wd, s, p, op, want) in convt {
        let x = Tensor::zeros(xd.to_vec(), &ganforge::Device::Cpu);
        let w = Tensor::zeros(wd.to_vec(), &ganforge::Device::Cpu);
        let params = ConvTranspose2dParams {
            stride: *s,
            padding: *p,
            output_padding: *op,
        };
        let y = x.conv_transpose2d(&w, params).unwrap();
        assert_eq!(
            y.dims(),
            want,
            "conv_transpose2d {xd:?} * {wd:?} s{s} p{p} op{op:?}"
        );
        assert_eq!(
            [
                torch_convt_out(xd[2], wd[2], *s, *p, op[0]),
                torch_convt_out(xd[3], wd[3], *s, *p, op[1])
            ],
            [want[2], want[3]]
        );
    }
    let x = Tensor::zeros([2, 3, 7, 9], &ganforge::Device::Cpu);
    assert_eq!(x.avg_pool2x2().unwrap().dims(), [2, 3, 3, 4]);
    assert_eq!(x.upsample_nearest2x().unwrap().dims(), [2, 3, 14, 18]);
}

// ---------------------------------------------------------------------------------------------
// Finite differences
// ---------------------------------------------------------------------------------------------

// Every op below is linear in each input, so central differences are exact up to f32 rounding.
const FD_EPS: f32 = 1e-2;
const FD_ATOL: f64 = 2e-3;
const FD_RTOL: f64 = 2e-3;

#[test]
fn conv2d_finite_differences() {
    let mut r = rng(600);
    let x = randn(&mut r, &[2, 3, 5, 7], 1.0);
    let w = randn(&mut r, &[4, 3, 3, 3], 0.5);
    let b = randn(&mut r, &[4], 1.0);
    for (s, p) in [(1, 0), (2, 1), (3, 2)] {
        let params = Conv2dParams::new(s, p).unwrap();
        check_gradients(
            &format!("conv2d s{s} p{p}"),
            &|a| weighted_sum(&a[0].conv2d(&a[1], params).unwrap(), 61),
            &[x.clone(), w.clone()],
            FD_EPS,
            FD_ATOL,
            FD_RTOL,
        );
        check_gradients(
            &format!("conv2d_bias s{s} p{p}"),
            &|a| weighted_sum(&a[0].conv2d_bias(&a[1], Some(&a[2]), params).unwrap(), 62),
            &[x.clone(), w.clone(), b.clone()],
            FD_EPS,
            FD_ATOL,
            FD_RTOL,
        );
    }
}

#[test]
fn conv_transpose2d_finite_differences() {
    let mut r = rng(601);
    let x = randn(&mut r, &[2, 3, 3, 5], 1.0);
    let w = randn(&mut r, &[3, 2, 3, 4], 0.5);
    let b = randn(&mut r, &[2], 1.0);
    for (s, p, op) in [(1, 0, [0, 0]), (2, 1, [1, 0]), (3, 1, [2, 1])] {
        let params = ConvTranspose2dParams {
            stride: s,
            padding: p,
            output_padding: op,
        };
        check_gradients(
            &format!("conv_transpose2d s{s} p{p} op{op:?}"),
            &|a| weighted_sum(&a[0].conv_transpose2d(&a[1], params).unwrap(), 63),
            &[x.clone(), w.clone()],
            FD_EPS,
            FD_ATOL,
            FD_RTOL,
        );
        check_gradients(
            &format!("conv_transpose2d_bias s{s} p{p} op{op:?}"),
            &|a| {
                weighted_sum(
                    &a[0]
                        .conv_transpose2d_bias(&a[1], Some(&a[2]), params)
                        .unwrap(),
                    64,
                )
            },
            &[x.clone(), w.clone(), b.clone()],
            FD_EPS,
            FD_ATOL,
            FD_RTOL,
        );
    }
}

#[test]
fn conv2d_weight_grad_finite_differences() {
    let mut r = rng(602);
    let x = randn(&mut r, &[2, 3, 5, 7], 1.0);
    let params = Conv2dWeightGradParams {
        conv: Conv2dParams::new(2, 1).unwrap(),
        kernel_h: 4,
        kernel_w: 3,
    };
    // OH = (5 + 2 - 4)/2 + 1 = 2, OW = (7 + 2 - 3)/2 + 1 = 4
    let gy = randn(&mut r, &[2, 2, 2, 4], 1.0);
    check_gradients(
        "conv2d_weight_grad",
        &|a| weighted_sum(&a[0].conv2d_weight_grad(&a[1], params).unwrap(), 65),
        &[x, gy],
        FD_EPS,
        FD_ATOL,
        FD_RTOL,
    );
}

#[test]
fn pool_and_upsample_finite_differences() {
    let mut r = rng(603);
    let x = randn(&mut r, &[2, 3, 5, 7], 1.0);
    check_gradients(
        "avg_pool2x2 5x7",
        &|a| weighted_sum(&a[0].avg_pool2x2().unwrap(), 66),
        &[x],
        FD_EPS,
        FD_ATOL,
        FD_RTOL,
    );
    let x = randn(&mut r, &[2, 3, 3, 5], 1.0);
    check_gradients(
        "upsample_nearest2x 3x5",
        &|a| weighted_sum(&a[0].upsample_nearest2x().unwrap(), 67),
        std::slice::from_ref(&x),
        FD_EPS,
        FD_ATOL,
        FD_RTOL,
    );
    check_gradients(
        "upsample_nearest2x_to 3x5 -> 7x10",
        &|a| weighted_sum(&a[0].upsample_nearest2x_to(7, 10).unwrap(), 68),
        &[x],
        FD_EPS,
        FD_ATOL,
        FD_RTOL,
    );
}

// ---------------------------------------------------------------------------------------------
// Second order
// ---------------------------------------------------------------------------------------------

/// `s = sum_j weighted_sum(d f / d input_j)` with the first gradients recorded
/// (`create_graph`), for leaves `leaves`.
fn first_grad_scalar(f: &dyn Fn(&[Tensor]) -> Tensor, leaves: &[Tensor], wrt: &[usize]) -> Tensor {
    let out = f(leaves);
    let targets: Vec<Tensor> = wrt.iter().map(|&i| leaves[i].clone()).collect();
    let grads = autograd::grad(&[out], None, &targets, true).unwrap();
    let mut s: Option<Tensor> = None;
    for (j, g) in grads.into_iter().enumerate() {
        let g = g.unwrap_or_else(|| panic!("no first gradient for input {}", wrt[j]));
        let t = weighted_sum(&g, 7000 + j as u64);
        s = Some(match s {
            None => t,
            Some(acc) => acc.add(&t).unwrap(),
        });
    }
    s.unwrap()
}

/// Grad of grad: `d s / d input_i` by autodiff (through the recorded backward pass) against
/// central differences of `s`, where each evaluation of `s` re-runs the first-order gradient on
/// perturbed inputs. An input `s` does not depend on must get no gradient (or zeros) and
/// finite differences of zero.
fn check_second_order(
    what: &str,
    f: &dyn Fn(&[Tensor]) -> Tensor,
    inputs: &[Tensor],
    wrt: &[usize],
    eps: f32,
    atol: f64,
    rtol: f64,
) {
    let leaves: Vec<Tensor> = inputs.iter().map(leaf).collect();
    let s = first_grad_scalar(f, &leaves, wrt);
    let second = autograd::grad(&[s], None, &leaves, false).unwrap();
    let s_of = |args: &[Tensor]| {
        let l: Vec<Tensor> = args.iter().map(leaf).collect();
        first_grad_scalar(f, &l, wrt).to_scalar().unwrap() as f64
    };
    let mut largest = 0.0f64;
    for (i, g) in second.iter().enumerate() {
        let fd = numeric_grad(&s_of, inputs, i, eps);
        largest = fd.iter().fold(largest, |m, v| m.max(v.abs()));
        let got = match g {
            Some(g) => g.to_vec(),
            None => vec![0.0; inputs[i].elem_count()],
        };
        assert_close(&format!("{what}: d2/d input {i}"), &got, &fd, atol, rtol);
    }
    // the check must have something to see
    assert!(
        largest > 0.05,
        "{what}: second derivatives are all ~0 ({largest}); a useless test"
    );
}

const SO_EPS: f32 = 1e-2;
const SO_ATOL: f64 = 3e-3;
const SO_RTOL: f64 = 5e-3;

#[test]
fn second_order_conv2d() {
    let mut r = rng(700);
    let x = randn(&mut r, &[2, 2, 5, 7], 0.7);
    let w = randn(&mut r, &[3, 2, 3, 3], 0.4);
    let params = Conv2dParams::new(2, 1).unwrap();
    // y^2 makes dx depend on x and dw on w, so every second-derivative block is non-zero;
    // grads w.r.t. both x and w are differentiated (the dw path runs conv2d_weight_grad's rule)
    check_second_order(
        "conv2d",
        &|a| weighted_sum(&a[0].conv2d(&a[1], params).unwrap().sqr().unwrap(), 71),
        &[x, w],
        &[0, 1],
        SO_EPS,
        SO_ATOL,
        SO_RTOL,
    );
}

#[test]
fn second_order_conv_transpose2d() {
    let mut r = rng(701);
    let x = randn(&mut r, &[2, 3, 3, 4], 0.7);
    let w = randn(&mut r, &[3, 2, 3, 3], 0.4);
    let params = ConvTranspose2dParams {
        stride: 2,
        padding: 1,
        output_padding: [1, 0],
    };
    check_second_order(
        "conv_transpose2d",
        &|a| {
            weighted_sum(
                &a[0].conv_transpose2d(&a[1], params).unwrap().sqr().unwrap(),
                72,
            )
        },
        &[x, w],
        &[0, 1],
        SO_EPS,
        SO_ATOL,
        SO_RTOL,
    );
}

#[test]
fn second_order_conv2d_weight_grad() {
    let mut r = rng(702);
    let x = randn(&mut r, &[2, 2, 5, 7], 0.7);
    let gy = randn(&mut r, &[2, 3, 2, 4], 0.7);
    let params = Conv2dWeightGradParams {
        conv: Conv2dParams::new(2, 1).unwrap(),
        kernel_h: 4,
        kernel_w: 3,
    };
    check_second_order(
        "conv2d_weight_grad",
        &|a| {
            weighted_sum(
                &a[0]
                    .conv2d_weight_grad(&a[1], params)
                    .unwrap()
                    .sqr()
                    .unwrap(),
                73,
            )
        },
        &[x, gy],
        &[0, 1],
        SO_EPS,
        SO_ATOL,
        SO_RTOL,
    );
}

#[test]
fn second_order_linear() {
    let mut r = rng(703);
    let x = randn(&mut r, &[4, 5], 0.7);
    let w = randn(&mut r, &[3, 5], 0.5);
    let b = randn(&mut r, &[3], 0.5);
    check_second_order(
        "linear",
        &|a| weighted_sum(&a[0].linear(&a[1], Some(&a[2])).unwrap().sqr().unwrap(), 74),
        &[x, w, b],
        &[0, 1, 2],
        SO_EPS,
        SO_ATOL,
        SO_RTOL,
    );
}

#[test]
fn second_order_leaky_relu() {
    let mut r = rng(704);
    // |x| in [0.2, 2]: no finite-difference step crosses the kink at 0
    let mag = uniform(&mut r, &[3, 5], 0.2, 2.0).to_vec();
    let sign = uniform(&mut r, &[3, 5], -1.0, 1.0).to_vec();
    let x: Vec<f32> = mag
        .iter()
        .zip(&sign)
        .map(|(m, s)| if *s < 0.0 { -m } else { *m })
        .collect();
    assert!(x.iter().any(|&v| v < 0.0) && x.iter().any(|&v| v > 0.0));
    let x = Tensor::from_vec(x, [3, 5]).unwrap();
    let w = randn(&mut r, &[3, 5], 1.0);
    // d/dx [lrelu(x)^2 w] = 2 lrelu(x) lrelu'(x) w: its x-derivative is 2 lrelu'(x)^2 w, which
    // is 2w or 0.08w depending on the side of the kink
    check_second_order(
        "leaky_relu",
        &|a| weighted_sum(&a[0].leaky_relu(0.2).sqr().unwrap().mul(&a[1]).unwrap(), 75),
        &[x, w],
        &[0, 1],
        SO_EPS,
        SO_ATOL,
        SO_RTOL,
    );
}

#[test]
fn second_order_tanh() {
    let mut r = rng(705);
    let x = randn(&mut r, &[3, 5], 1.0);
    let w = randn(&mut r, &[3, 5], 1.0);
    check_second_order(
        "tanh",
        &|a| weighted_sum(&a[0].tanh().mul(&a[1]).unwrap(), 76),
        &[x, w],
        &[0, 1],
        SO_EPS,
        SO_ATOL,
        SO_RTOL,
    );
}

#[test]
fn second_order_mul() {
    let mut r = rng(706);
    let x = randn(&mut r, &[3, 5], 1.0);
    let w = randn(&mut r, &[5], 1.0); // broadcast over rows
    check_second_order(
        "mul",
        &|a| weighted_sum(&a[0].mul(&a[1]).unwrap().mul(&a[0]).unwrap(), 77),
        &[x, w],
        &[0, 1],
        SO_EPS,
        SO_ATOL,
        SO_RTOL,
    );
}

#[test]
fn second_order_sum() {
    let mut r = rng(707);
    let x = randn(&mut r, &[3, 5], 1.0);
    let w = randn(&mut r, &[5], 1.0);
    let v = randn(&mut r, &[3, 1], 1.0);
    check_second_order(
        "sum",
        &|a| {
            let over_rows = a[0]
                .sum(&[0], false)
                .unwrap()
                .sqr()
                .unwrap()
                .mul(&a[1])
                .unwrap();
            let over_cols = a[0]
                .sum(&[1], true)
                .unwrap()
                .sqr()
                .unwrap()
                .mul(&a[2])
                .unwrap();
            weighted_sum(&over_rows, 78)
                .add(&weighted_sum(&over_cols, 79))
                .unwrap()
        },
        &[x, w, v],
        &[0, 1, 2],
        SO_EPS,
        SO_ATOL,
        SO_RTOL,
    );
}

#[test]
fn second_order_sqrt() {
    let mut r = rng(708);
    let x = uniform(&mut r, &[3, 5], 0.5, 2.0);
    let w = randn(&mut r, &[3, 5], 1.0);
    check_second_order(
        "sqrt",
        &|a| weighted_sum(&a[0].sqrt().mul(&a[1]).unwrap(), 80),
        &[x, w],
        &[0, 1],
        SO_EPS,
        SO_ATOL,
        SO_RTOL,
    );
}

// ---------------------------------------------------------------------------------------------
// WGAN-GP gradient penalty
// ---------------------------------------------------------------------------------------------

const GP_N: usize = 2;
const GP_C: usize = 2;
const GP_H: usize = 5;
const GP_W: usize = 7;
const GP_CO: usize = 3;
const GP_K: usize = 3;
const GP_CONV: Conv2dParams = Conv2dParams {
    stride: 2,
    padding: 1,
};
// (5 + 2 - 3)/2 + 1 = 3, (7 + 2 - 3)/2 + 1 = 4
const GP_OH: usize = 3;
const GP_OW: usize = 4;
const GP_F: usize = GP_CO * GP_OH * GP_OW;
const GP_SLOPE: f32 = 0.2;

/// The critic: `linear(leaky_relu(conv2d(x, w1) + b1, 0.2).flatten(1), w2) + b2`, optionally
/// with a layer norm (affine `p[4]`, `p[5]`) on the flattened features.
/// `p = [w1, b1, w2, b2, (ln_w, ln_b)]`.
fn critic(x: &Tensor, p: &[Tensor]) -> Tensor {
    let h = x.conv2d_bias(&p[0], Some(&p[1]), GP_CONV).unwrap();
    let h = h.leaky_relu(GP_SLOPE).flatten(1).unwrap();
    let h = if p.len() > 4 {
        h.layer_norm(1, Some(&p[4]), Some(&p[5]), 1e-5).unwrap()
    } else {
        h
    };
    h.linear(&p[2], Some(&p[3])).unwrap()
}

/// `(gp, g)`: `g = d sum(D(x_hat)) / d x_hat` (recorded), `gp = mean_i (||g_i||_2 - 1)^2`.
fn gradient_penalty(x_hat: &Tensor, p: &[Tensor]) -> (Tensor, Tensor) {
    let x_hat = leaf(x_hat);
    let d = critic(&x_hat, p);
    let g = autograd::grad(&[d.sum_all().unwrap()], None, &[x_hat], true).unwrap()[0]
        .clone()
        .expect("the critic depends on its input");
    let norms = g.sqr().unwrap().sum(&[1, 2, 3], false).unwrap().sqrt();
    let gp = norms.add_scalar(-1.0).sqr().unwrap().mean_all().unwrap();
    (gp, g)
}

/// Draws `x_hat` and critic parameters, redrawing until every pre-activation of the leaky ReLU
/// is farther from its kink than a finite-difference step of `eps` on w1 or b1 can move it
/// (the penalty depends on the kink's side discontinuously).
fn gp_setup(seed: u64, with_ln: bool, eps: f32) -> (Tensor, Vec<Tensor>) {
    for attempt in 0..200 {
        let mut r = rng(seed + attempt);
        let x_hat = randn(&mut r, &[GP_N, GP_C, GP_H, GP_W], 1.0);
        let mut p = vec![
            randn(&mut r, &[GP_CO, GP_C, GP_K, GP_K], 0.4),
            randn(&mut r, &[GP_CO], 0.3),
            randn(&mut r, &[1, GP_F], 0.3),
            randn(&mut r, &[1], 0.3),
        ];
        if with_ln {
            p.push(uniform(&mut r, &[GP_F], 0.5, 1.5));
            p.push(randn(&mut r, &[GP_F], 0.3));
        }
        let pre = x_hat
            .conv2d_bias(&p[0], Some(&p[1]), GP_CONV)
            .unwrap()
            .to_vec();
        let max_x = x_hat.to_vec().iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let margin = 3.0 * eps * (max_x + 1.0);
        if pre.iter().all(|v| v.abs() > margin) {
            return (x_hat, p);
        }
    }
    panic!("no draw keeps the pre-activations away from the kink");
}

/// Checks `gp.backward()` into every critic parameter against central differences of gp.
fn check_gp_param_grads(what: &str, x_hat: &Tensor, p: &[Tensor], eps: f32) {
    let params: Vec<Tensor> = p.iter().map(leaf).collect();
    let (gp, _) = gradient_penalty(x_hat, &params);
    assert!(
        gp.to_scalar().unwrap() > 1e-3,
        "{what}: gp is ~0, nothing to test"
    );
    gp.backward().unwrap();
    let gp_of = |args: &[Tensor]| gradient_penalty(x_hat, args).0.to_scalar().unwrap() as f64;
    let names = ["w1", "b1", "w2", "b2", "ln_w", "ln_b"];
    for (i, param) in params.iter().enumerate() {
        let fd = numeric_grad(&gp_of, p, i, eps);
        let got = match param.grad() {
            Some(g) => g.to_vec(),
            // gp does not reach this parameter (b2 always; b1 when nothing nonlinear follows
            // the leaky ReLU): its gradient is zero, and finite differences must agree
            None => vec![0.0; param.elem_count()],
        };
        assert_close(
            &format!("{what}: d gp / d {}", names[i]),
            &got,
            &fd,
            2e-3,
            1e-2,
        );
    }
    // w1 and w2 shape the input gradient, so their penalty gradients cannot vanish
    for i in [0, 2] {
        let g = params[i]
            .grad()
            .expect("w1 and w2 get a penalty gradient")
            .to_vec();
        assert!(
            g.iter().any(|v| v.abs() > 1e-2),
            "{what}: d gp / d {} is ~0",
            names[i]
        );
    }
}

#[test]
fn wgan_gp_penalty_gradients() {
    let eps = 2e-3;
    let (x_hat, p) = gp_setup(9000, false, eps);

    // First order: g against an f64 reference. D = w2 . lrelu(conv(x, w1) + b1) + b2, so
    // dD/dx = conv2d VJP of G[n, co, oh, ow] = lrelu'(pre) * w2[co, oh, ow].
    let (gp, g) = gradient_penalty(&x_hat, &p);
    let geo = Geo {
        n: GP_N,
        ci: GP_C,
        co: GP_CO,
        h: GP_H,
        w: GP_W,
        kh: GP_K,
        kw: GP_K,
        oh: GP_OH,
        ow: GP_OW,
        s: GP_CONV.stride,
        p: GP_CONV.padding,
    };
    let (xv, w1, b1, w2) = (f64s(&x_hat), f64s(&p[0]), f64s(&p[1]), f64s(&p[2]));
    let mut pre = conv2d_ref(&xv, &w1, &geo);
    add_bias_ref(&mut pre, &b1, GP_N, GP_CO, GP_OH * GP_OW);
    let mut gy = vec![0.0; pre.len()];
    for (i, v) in pre.iter().enumerate() {
        let slope = if *v > 0.0 { 1.0 } else { GP_SLOPE as f64 };
        gy[i] = slope * w2[i % GP_F];
    }
    let (g_ref, _) = conv2d_vjp_ref(&xv, &w1, &gy, &geo);
    assert_close(
        "wgan-gp: input gradient of the critic",
        &g.to_vec(),
        &g_ref,
        1e-5,
        1e-5,
    );
    let per_sample = GP_C * GP_H * GP_W;
    let gp_ref = (0..GP_N)
        .map(|n| {
            let norm = g_ref[n * per_sample..][..per_sample]
                .iter()
                .map(|v| v * v)
                .sum::<f64>()
                .sqrt();
            (norm - 1.0).powi(2)
        })
        .sum::<f64>()
        / GP_N as f64;
    assert_close(
        "wgan-gp: penalty",
        &[gp.to_scalar().unwrap()],
        &[gp_ref],
        1e-5,
        1e-5,
    );

    // Second order: gp.backward() into the critic's parameters against finite differences.
    check_gp_param_grads("wgan-gp", &x_hat, &p, eps);
}

#[test]
fn wgan_gp_penalty_gradients_with_layer_norm() {
    let eps = 2e-3;
    let (x_hat, p) = gp_setup(9500, true, eps);
    check_gp_param_grads("wgan-gp + layer_norm", &x_hat, &p, eps);
    // with a layer norm after the activation, b1 moves the penalty too
    let params: Vec<Tensor> = p.iter().map(leaf).collect();
    gradient_penalty(&x_hat, &params).0.backward().unwrap();
    let db1 = params[1]
        .grad()
        .expect("b1 reaches the penalty through the layer norm");
    assert!(
        db1.to_vec().iter().any(|v| v.abs() > 1e-3),
        "d gp / d b1 is ~0"
    );
}

// ---------------------------------------------------------------------------------------------
// Errors, not panics
// ---------------------------------------------------------------------------------------------

/// Asserts `r` is an error whose message names `op` and contains every string in `parts`.
fn assert_err<T: std::fmt::Debug>(what: &str, r: ganforge::Result<T>, op: &str, parts: &[&str]) {
    let msg = match r {
        Ok(v) => panic!("{what}: expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    };
    assert!(
        msg.contains(op),
        "{what}: message does not name {op}: {msg}"
    );
    for p in parts {
        assert!(msg.contains(p), "{what}: message lacks {p:?}: {msg}");
    }
}

fn zeros(dims: &[usize]) -> Tensor {
    Tensor::zeros(dims.to_vec(), &ganforge::Device::Cpu)
}

#[test]
fn conv_errors_name_op_and_shapes() {
    let x = zeros(&[2, 3, 7, 9]);
    let p = Conv2dParams::default();

    assert_err(
        "conv2d channel mismatch",
        x.conv2d(&zeros(&[4, 5, 3, 3]), p),
        "conv2d",
        &["[2, 3, 7, 9]", "[4, 5, 3, 3]"],
    );
    assert_err(
        "conv2d kernel larger than the input",
        zeros(&[1, 3, 3, 3]).conv2d(&zeros(&[4, 3, 5, 5]), p),
        "conv2d",
        &["[1, 3, 3, 3]", "[4, 3, 5, 5]"],
    );
    // with enough padding the same kernel fits: (3 + 2 - 5) + 1 = 1
    let fits = zeros(&[1, 3, 3, 3]).conv2d(&zeros(&[4, 3, 5, 5]), Conv2dParams::new(1, 1).unwrap());
    assert_eq!(fits.unwrap().dims(), [1, 4, 1, 1]);
    assert_err(
        "conv2d stride 0",
        x.conv2d(
            &zeros(&[4, 3, 3, 3]),
            Conv2dParams {
                stride: 0,
                padding: 1,
            },
        ),
        "conv2d",
        &["stride", "[2, 3, 7, 9]", "[4, 3, 3, 3]"],
    );
    assert_err(
        "Conv2dParams::new stride 0",
        Conv2dParams::new(0, 0),
        "conv2d",
        &["stride"],
    );
    assert_err(
        "conv2d 3-D input",
        zeros(&[3, 7, 9]).conv2d(&zeros(&[4, 3, 3, 3]), p),
        "conv2d",
        &["[3, 7, 9]"],
    );
    assert_err(
        "conv2d 3-D weight",
        x.conv2d(&zeros(&[3, 3, 3]), p),
        "conv2d",
        &["[3, 3, 3]"],
    );

    let t = ConvTranspose2dParams::default();
    assert_err(
        "conv_transpose2d channel mismatch",
        x.conv_transpose2d(&zeros(&[5, 4, 3, 3]), t),
        "conv_transpose2d",
        &["[2, 3, 7, 9]", "[5, 4, 3, 3]"],
    );
    assert_err(
        "conv_transpose2d output_padding >= stride",
        x.conv_transpose2d(
            &zeros(&[3, 4, 3, 3]),
            ConvTranspose2dParams {
                stride: 2,
                padding: 1,
                output_padding: [0, 2],
            },
        ),
        "conv_transpose2d",
        &["output_padding", "[2, 3, 7, 9]", "[3, 4, 3, 3]"],
    );
    assert_err(
        "ConvTranspose2dParams::new output_padding == stride",
        ConvTranspose2dParams::new(2, 1, 2),
        "conv_transpose2d",
        &["output_padding"],
    );
    assert_err(
        "conv_transpose2d stride 0",
        x.conv_transpose2d(
            &zeros(&[3, 4, 3, 3]),
            ConvTranspose2dParams {
                stride: 0,
                padding: 0,
                output_padding: [0, 0],
            },
        ),
        "conv_transpose2d",
        &["stride", "[2, 3, 7, 9]", "[3, 4, 3, 3]"],
    );
    assert_err(
        "conv_transpose2d 3-D input",
        zeros(&[3, 7, 9]).conv_transpose2d(&zeros(&[3, 4, 3, 3]), t),
        "conv_transpose2d",
        &["[3, 7, 9]"],
    );
    assert_err(
        "conv_transpose2d padding eats the output",
        zeros(&[1, 3, 1, 1]).conv_transpose2d(
            &zeros(&[3, 4, 3, 3]),
            ConvTranspose2dParams {
                stride: 1,
                padding: 2,
                output_padding: [0, 0],
            },
        ),
        "conv_transpose2d",
        &["[1, 3, 1, 1]", "[3, 4, 3, 3]"],
    );

    let wg = Conv2dWeightGradParams {
        conv: Conv2dParams::new(2, 1).unwrap(),
        kernel_h: 3,
        kernel_w: 3,
    };
    // the right grad_output would be [2, C, 4, 5]
    assert_err(
        "conv2d_weight_grad grad_output size",
        x.conv2d_weight_grad(&zeros(&[2, 4, 4, 4]), wg),
        "conv2d_weight_grad",
        &["[2, 3, 7, 9]", "[2, 4, 4, 4]"],
    );
    assert_err(
        "conv2d_weight_grad batch mismatch",
        x.conv2d_weight_grad(&zeros(&[3, 4, 4, 5]), wg),
        "conv2d_weight_grad",
        &["[2, 3, 7, 9]", "[3, 4, 4, 5]"],
    );
    assert_err(
        "conv2d_weight_grad stride 0",
        x.conv2d_weight_grad(
            &zeros(&[2, 4, 5, 7]),
            Conv2dWeightGradParams {
                conv: Conv2dParams {
                    stride: 0,
                    padding: 0,
                },
                kernel_h: 3,
                kernel_w: 3,
            },
        ),
        "conv2d_weight_grad",
        &["stride", "[2, 3, 7, 9]", "[2, 4, 5, 7]"],
    );
}

#[test]
fn pool_errors_name_op_and_shapes() {
    assert_err(
        "avg_pool2x2 3-D",
        zeros(&[3, 7, 9]).avg_pool2x2(),
        "avg_pool2x2",
        &["[3, 7, 9]"],
    );
    assert_err(
        "avg_pool2x2 1 row",
        zeros(&[1, 2, 1, 9]).avg_pool2x2(),
        "avg_pool2x2",
        &["[1, 2, 1, 9]"],
    );
    assert_err(
        "upsample_nearest2x 3-D",
        zeros(&[3, 7, 9]).upsample_nearest2x(),
        "upsample_nearest2x",
        &["[3, 7, 9]"],
    );
    assert_err(
        "upsample_nearest2x_to wrong size",
        zeros(&[1, 2, 3, 5]).upsample_nearest2x_to(8, 10),
        "upsample_nearest2x",
        &["[1, 2, 3, 5]", "8x10"],
    );
}

/// Batch norm's normalisation is a fused primitive whose backward rule switches to
/// differentiable ops when the backward pass is recorded; this checks that second-order path
/// (through mean, variance and the affine scale) against finite differences of the gradient.
#[test]
fn second_order_batch_norm_training() {
    use ganforge::ops::BatchNormParams;
    let mut r = rng(720);
    let x = randn(&mut r, &[3, 2, 3, 2], 1.0);
    let gamma = uniform(&mut r, &[2], 0.5, 1.5);
    let beta = randn(&mut r, &[2], 0.3);
    check_second_order(
        "batch_norm",
        &|a| {
            let y = a[0]
                .batch_norm(
                    None,
                    Some(&a[1]),
                    Some(&a[2]),
                    true,
                    BatchNormParams::default(),
                )
                .unwrap();
            // A non-linearity after the norm, so the second derivative is not trivially zero.
            weighted_sum(&y.tanh(), 78)
        },
        &[x, gamma, beta],
        &[0, 1],
        SO_EPS,
        SO_ATOL,
        SO_RTOL,
    );
}

/// The recorded (create_graph) backward of batch norm computes the same first-order gradient
/// as the fused kernel; the second-order check above cannot see an error common to both
/// sides of its comparison, this one can.
#[test]
fn batch_norm_recorded_backward_equals_fused_backward() {
    use ganforge::ops::BatchNormParams;
    let mut r = rng(721);
    for shape in [vec![5, 3], vec![3, 4, 5, 7], vec![2, 3, 9]] {
        let x = leaf(&randn(&mut r, &shape, 2.0).add_scalar(3.0));
        let gamma = leaf(&uniform(&mut r, &[shape[1]], 0.5, 1.5));
        let y = x
            .batch_norm(None, Some(&gamma), None, true, BatchNormParams::default())
            .unwrap();
        let s = weighted_sum(&y, 79);
        let fused = autograd::grad(
            std::slice::from_ref(&s),
            None,
            &[x.clone(), gamma.clone()],
            false,
        )
        .unwrap();
        let recorded = autograd::grad(&[s], None, &[x.clone(), gamma.clone()], true).unwrap();
        for (i, (a, b)) in fused.iter().zip(&recorded).enumerate() {
            let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
            assert!(
                b.op().is_some(),
                "the create_graph gradient must be recorded"
            );
            common::assert_tensors_close(&format!("{shape:?} input {i}"), b, a, 1e-5, 1e-4);
        }
    }
}
