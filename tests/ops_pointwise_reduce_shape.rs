//! Correctness of every non-convolution op.
//!
//! Each op is checked three ways on fresh random inputs with odd sizes:
//! 1. forward against a naive f64 reference written here with plain index loops;
//! 2. autograd's gradient of `weighted_sum(y, seed)` against the hand-derived reference VJP
//!    (in f64, from the weights `weighted_sum` uses, regenerated here from the same seed);
//! 3. finite differences (`check_gradients`), with samples kept away from kinks.
//!
//! Then autodiff semantics (accumulation, no_grad, detach, unused inputs, shared nodes,
//! second order) and errors (never panics) on bad shapes, dims and indices.

mod common;

use common::{assert_close, check_gradients, f64s, leaf, weighted_sum};
use ganforge::ops::{BatchNormParams, RunningStats};
use ganforge::{autograd, Rng, Tensor};

// ============================================================================================
// Naive f64 toolkit
// ============================================================================================

fn numel(d: &[usize]) -> usize {
    d.iter().product()
}

/// Row-major multi-index of flat position `i` in dims `d`.
fn unravel(mut i: usize, d: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; d.len()];
    for k in (0..d.len()).rev() {
        idx[k] = i % d[k];
        i /= d[k];
    }
    idx
}

/// Flat row-major position of multi-index `idx` in dims `d`.
fn ravel(idx: &[usize], d: &[usize]) -> usize {
    let mut o = 0;
    for k in 0..d.len() {
        o = o * d[k] + idx[k];
    }
    o
}

/// Flat position in an operand of dims `d` read at output multi-index `oidx` under NumPy
/// broadcasting (trailing dims aligned; the operand's size-1 dims repeat).
fn bcast_ravel(oidx: &[usize], d: &[usize]) -> usize {
    let off = oidx.len() - d.len();
    let mut o = 0;
    for k in 0..d.len() {
        o = o * d[k] + if d[k] == 1 { 0 } else { oidx[off + k] };
    }
    o
}

/// The weights `w` of `weighted_sum(y, seed) = sum(y * w)`, regenerated from the same RNG
/// stream (`check_op` verifies they are the ones used).
fn weights(seed: u64, n: usize) -> Vec<f64> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.uniform(-1.0, 1.0) as f64).collect()
}

/// A distinct, reproducible seed per check (FNV-1a of its name).
fn seed_of(what: &str) -> u64 {
    what.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

fn tensor(data: Vec<f32>, dims: &[usize]) -> Tensor {
    Tensor::from_vec(data, dims.to_vec()).unwrap()
}

fn gen(rng: &mut Rng, dims: &[usize], mut f: impl FnMut(&mut Rng) -> f32) -> Tensor {
    let data = (0..numel(dims)).map(|_| f(rng)).collect();
    tensor(data, dims)
}

fn normal(rng: &mut Rng, dims: &[usize], std: f32) -> Tensor {
    gen(rng, dims, |r| std * r.normal())
}

fn uniform(rng: &mut Rng, dims: &[usize], lo: f32, hi: f32) -> Tensor {
    gen(rng, dims, |r| r.uniform(lo, hi))
}

/// Normal(0, std) samples at least `margin` away from every point in `kinks` (resampled).
fn normal_away(rng: &mut Rng, dims: &[usize], std: f32, kinks: &[f32], margin: f32) -> Tensor {
    gen(rng, dims, |r| loop {
        let v = std * r.normal();
        if kinks.iter().all(|k| (v - k).abs() >= margin) {
            return v;
        }
    })
}

/// Magnitude uniform in [lo, hi), random sign (safe denominators).
fn signed_mag(rng: &mut Rng, dims: &[usize], lo: f32, hi: f32) -> Tensor {
    gen(rng, dims, |r| {
        let m = r.uniform(lo, hi);
        if r.next_f64() < 0.5 {
            -m
        } else {
            m
        }
    })
}

/// All-distinct values (gaps >= 0.05) in random order: no ties for max, FD-safe.
fn distinct(rng: &mut Rng, dims: &[usize]) -> Tensor {
    let n = numel(dims);
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    let data = order
        .iter()
        .map(|&k| (k as f32 - n as f32 / 2.0) * 0.07 + r_noise(rng))
        .collect();
    tensor(data, dims)
}

fn r_noise(rng: &mut Rng) -> f32 {
    rng.uniform(-0.01, 0.01)
}

/// Reference `y[o] = x_k[i]` for `src(o) = Some((k, i))` (0 where `None`), and its VJP
/// `dx_k[i] += w[o]`: reshape, permute, broadcast, concat, narrow, pad, index_select.
fn ref_gather(
    xs: &[Vec<f64>],
    w: &[f64],
    src: impl Fn(usize) -> Option<(usize, usize)>,
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let mut y = vec![0.0; w.len()];
    let mut dx: Vec<Vec<f64>> = xs.iter().map(|x| vec![0.0; x.len()]).collect();
    for o in 0..w.len() {
        if let Some((k, i)) = src(o) {
            y[o] = xs[k][i];
            dx[k][i] += w[o];
        }
    }
    (y, dx)
}

// ============================================================================================
// The checker
// ============================================================================================

type Reference<'a> = &'a dyn Fn(&[Vec<f64>], &[f64]) -> (Vec<f64>, Vec<Vec<f64>>);

#[derive(Clone, Copy)]
struct Tol {
    /// forward (atol, rtol)
    fwd: (f64, f64),
    /// backward (atol, rtol) against the reference VJP
    bwd: (f64, f64),
    /// finite differences (eps, atol, rtol), or none
    fd: Option<(f32, f64, f64)>,
}

const TOL: Tol = Tol {
    fwd: (1e-5, 1e-5),
    bwd: (1e-5, 1e-4),
    fd: Some((1e-2, 2e-3, 1e-2)),
};

/// Looser forward/backward for composed ops (norms, losses) whose f32 rounding compounds.
const TOL_COMPOSED: Tol = Tol {
    fwd: (1e-4, 1e-4),
    bwd: (1e-4, 1e-3),
    fd: Some((1e-2, 3e-3, 1e-2)),
};

/// Checks an op end to end: output shape and values against `reference(inputs, w)`'s first
/// result, autograd's gradient of `weighted_sum(y, seed)` for every input against its second
/// (the reference VJP with weights `w`), and finite differences of the same scalar.
fn check_op(
    what: &str,
    f: &dyn Fn(&[Tensor]) -> Tensor,
    inputs: &[Tensor],
    want_dims: &[usize],
    reference: Reference<'_>,
    tol: Tol,
) {
    let seed = seed_of(what);
    let xs: Vec<Vec<f64>> = inputs.iter().map(f64s).collect();
    let w = weights(seed, numel(want_dims));
    let (want_y, want_grads) = reference(&xs, &w);

    let leaves: Vec<Tensor> = inputs.iter().map(leaf).collect();
    let y = f(&leaves);
    assert_eq!(y.dims(), want_dims, "{what}: output shape");
    assert!(y.op().is_some(), "{what}: the result was not recorded");
    assert_close(
        &format!("{what}: forward"),
        &y.to_vec(),
        &want_y,
        tol.fwd.0,
        tol.fwd.1,
    );

    let loss = weighted_sum(&y, seed);
    // The regenerated weights are the ones weighted_sum used (else the VJPs below are moot).
    let direct: f64 = y.to_vec().iter().zip(&w).map(|(&a, &b)| a as f64 * b).sum();
    assert_close(
        &format!("{what}: weights of weighted_sum"),
        &[loss.to_scalar().unwrap()],
        &[direct],
        1e-4,
        1e-4,
    );
    let grads = autograd::grad(&[loss], None, &leaves, false).unwrap();
    assert_eq!(grads.len(), want_grads.len(), "{what}: number of gradients");
    for (i, (g, want)) in grads.iter().zip(&want_grads).enumerate() {
        let g = g
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: no gradient for input {i}"));
        assert_eq!(g.dims(), inputs[i].dims(), "{what}: grad {i} shape");
        assert_close(
            &format!("{what}: grad of input {i}"),
            &g.to_vec(),
            want,
            tol.bwd.0,
            tol.bwd.1,
        );
    }

    if let Some((eps, atol, rtol)) = tol.fd {
        check_gradients(
            &format!("{what}: finite differences"),
            &|a: &[Tensor]| weighted_sum(&f(a), seed),
            inputs,
            eps,
            atol,
            rtol,
        );
    }
}

/// The Display text of an error that must be returned (not a panic, not Ok).
fn err_text<T: std::fmt::Debug>(r: ganforge::Result<T>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(
            msg.contains(p),
            "error message {msg:?} should mention {p:?}"
        );
    }
}

const D3: [usize; 3] = [3, 5, 7];

// ============================================================================================
// Pointwise unary ops
// ============================================================================================

fn sigmoid64(v: f64) -> f64 {
    if v >= 0.0 {
        1.0 / (1.0 + (-v).exp())
    } else {
        let e = v.exp();
        e / (1.0 + e)
    }
}

fn softplus64(v: f64) -> f64 {
    v.max(0.0) + (-v.abs()).exp().ln_1p()
}

type Run = fn(&Tensor) -> Tensor;
type F64 = fn(f64) -> f64;
type Gen = fn(&mut Rng) -> Tensor;

#[test]
fn unary_ops_forward_backward_fd() {
    let cases: Vec<(&str, Run, F64, F64, Gen)> = vec![
        (
            "neg",
            |x| x.neg(),
            |v| -v,
            |_| -1.0,
            |r| normal(r, &D3, 1.0),
        ),
        (
            "exp",
            |x| x.exp(),
            f64::exp,
            f64::exp,
            |r| normal(r, &D3, 1.0),
        ),
        (
            "log",
            |x| x.log(),
            f64::ln,
            |v| 1.0 / v,
            |r| uniform(r, &D3, 0.5, 2.5),
        ),
        (
            "sqrt",
            |x| x.sqrt(),
            f64::sqrt,
            |v| 0.5 / v.sqrt(),
            |r| uniform(r, &D3, 0.5, 2.5),
        ),
        (
            "abs",
            |x| x.abs(),
            f64::abs,
            f64::signum,
            |r| normal_away(r, &D3, 1.0, &[0.0], 0.05),
        ),
        (
            "powf(2.5)",
            |x| x.powf(2.5),
            |v| v.powf(2.5),
            |v| 2.5 * v.powf(1.5),
            |r| uniform(r, &D3, 0.5, 2.0),
        ),
        (
            "powf(3) on signed x",
            |x| x.powf(3.0),
            |v| v * v * v,
            |v| 3.0 * v * v,
            |r| normal(r, &D3, 1.0),
        ),
        (
            "powf(-1.5)",
            |x| x.powf(-1.5),
            |v| v.powf(-1.5),
            |v| -1.5 * v.powf(-2.5),
            |r| uniform(r, &D3, 0.8, 2.0),
        ),
        (
            "clamp(-0.5, 0.7)",
            |x| x.clamp(-0.5, 0.7),
            |v| v.clamp(-0.5, 0.7),
            |v| if v > -0.5 && v < 0.7 { 1.0 } else { 0.0 },
            |r| normal_away(r, &D3, 1.0, &[-0.5, 0.7], 0.05),
        ),
        (
            "affine(-1.5, 0.25)",
            |x| x.affine(-1.5, 0.25),
            |v| -1.5 * v + 0.25,
            |_| -1.5,
            |r| normal(r, &D3, 1.0),
        ),
        (
            "add_scalar(0.75)",
            |x| x.add_scalar(0.75),
            |v| v + 0.75,
            |_| 1.0,
            |r| normal(r, &D3, 1.0),
        ),
        (
            "mul_scalar(-2.5)",
            |x| x.mul_scalar(-2.5),
            |v| -2.5 * v,
            |_| -2.5,
            |r| normal(r, &D3, 1.0),
        ),
        (
            "relu",
            |x| x.relu(),
            |v| v.max(0.0),
            |v| if v > 0.0 { 1.0 } else { 0.0 },
            |r| normal_away(r, &D3, 1.0, &[0.0], 0.05),
        ),
        (
            "leaky_relu(0.2)",
            |x| x.leaky_relu(0.2),
            |v| if v > 0.0 { v } else { 0.2 * v },
            |v| if v > 0.0 { 1.0 } else { 0.2 },
            |r| normal_away(r, &D3, 1.0, &[0.0], 0.05),
        ),
        (
            "tanh",
            |x| x.tanh(),
            f64::tanh,
            |v| 1.0 - v.tanh().powi(2),
            |r| normal(r, &D3, 1.5),
        ),
        (
            "sigmoid",
            |x| x.sigmoid(),
            sigmoid64,
            |v| sigmoid64(v) * (1.0 - sigmoid64(v)),
            |r| normal(r, &D3, 2.0),
        ),
        (
            "softplus",
            |x| x.softplus(),
            softplus64,
            sigmoid64,
            |r| normal(r, &D3, 2.0),
        ),
        (
            "sqr",
            |x| x.sqr().unwrap(),
            |v| v * v,
            |v| 2.0 * v,
            |r| normal(r, &D3, 1.0),
        ),
    ];
    let mut rng = Rng::new(101);
    for (name, run, f, df, input) in cases {
        let x = input(&mut rng);
        check_op(
            name,
            &|a: &[Tensor]| run(&a[0]),
            &[x],
            &D3,
            &|xs, w| {
                let y = xs[0].iter().map(|&v| f(v)).collect();
                let dx = xs[0].iter().zip(w).map(|(&v, &wi)| wi * df(v)).collect();
                (y, vec![dx])
            },
            TOL,
        );
    }
}

#[test]
fn relu_family_kinks_take_pytorch_subgradients() {
    // Exactly at the kink: relu'(0) = 0, abs'(0) = 0, leaky_relu'(0) = slope; clamp passes
    // the gradient at its bounds (inclusive) and not outside.
    let x = leaf(&tensor(vec![0.0, -0.5, 0.7, 0.9, -0.6], &[5]));
    let cases: Vec<(&str, Tensor, Vec<f64>)> = vec![
        ("relu", x.relu(), vec![0.0, 0.0, 1.0, 1.0, 0.0]),
        ("abs", x.abs(), vec![0.0, -1.0, 1.0, 1.0, -1.0]),
        (
            "leaky_relu",
            x.leaky_relu(0.1),
            vec![0.1, 0.1, 1.0, 1.0, 0.1],
        ),
        ("clamp", x.clamp(-0.5, 0.7), vec![1.0, 1.0, 1.0, 0.0, 0.0]),
    ];
    for (name, y, want) in cases {
        let g = autograd::grad(
            &[y.sum_all().unwrap()],
            None,
            std::slice::from_ref(&x),
            false,
        )
        .unwrap()[0]
            .clone()
            .unwrap();
        assert_close(name, &g.to_vec(), &want, 1e-6, 0.0);
    }
}

#[test]
fn softplus_sigmoid_tanh_stay_finite_at_large_inputs() {
    let vals = [-80.0f32, -50.0, -20.0, -1.0, 0.0, 1.0, 20.0, 50.0, 80.0];
    let x = leaf(&tensor(vals.to_vec(), &[9]));
    let x64: Vec<f64> = vals.iter().map(|&v| v as f64).collect();

    let y = x.softplus();
    assert!(y.to_vec().iter().all(|v| v.is_finite()), "softplus: {y:?}");
    let want: Vec<f64> = x64.iter().map(|&v| softplus64(v)).collect();
    assert_close("softplus(+-80)", &y.to_vec(), &want, 1e-6, 1e-6);
    // softplus(80) must be 80 (not inf), softplus(-80) ~ 1.8e-35 (not 0 - 0 or NaN).
    assert_eq!(y.to_vec()[8], 80.0);
    assert!(y.to_vec()[0] > 0.0 && y.to_vec()[0] < 1e-30);
    let seed = 7;
    let w = weights(seed, 9);
    let g = autograd::grad(
        &[weighted_sum(&y, seed)],
        None,
        std::slice::from_ref(&x),
        false,
    )
    .unwrap()[0]
        .clone()
        .unwrap();
    let want: Vec<f64> = x64
        .iter()
        .zip(&w)
        .map(|(&v, &wi)| wi * sigmoid64(v))
        .collect();
    assert_close("softplus'(+-80)", &g.to_vec(), &want, 1e-7, 1e-5);

    let s = x.sigmoid();
    let want: Vec<f64> = x64.iter().map(|&v| sigmoid64(v)).collect();
    assert_close("sigmoid(+-80)", &s.to_vec(), &want, 1e-7, 1e-5);
    let g = autograd::grad(
        &[s.sum_all().unwrap()],
        None,
        std::slice::from_ref(&x),
        false,
    )
    .unwrap()[0]
        .clone()
        .unwrap();
    assert!(g.to_vec().iter().all(|v| v.is_finite()));
    let t = x.tanh();
    let want: Vec<f64> = x64.iter().map(|&v| v.tanh()).collect();
    assert_close("tanh(+-80)", &t.to_vec(), &want, 1e-7, 1e-6);
}

#[test]
fn unary_second_order_matches_reference() {
    // g = d sum(f(x)) / dx recorded (create_graph), then d weighted_sum(g) / dx = w f''(x).
    let cases: Vec<(&str, Run, F64, F64, Gen)> = vec![
        (
            "exp",
            |x| x.exp(),
            f64::exp,
            f64::exp,
            |r| normal(r, &D3, 1.0),
        ),
        (
            "log",
            |x| x.log(),
            |v| 1.0 / v,
            |v| -1.0 / (v * v),
            |r| uniform(r, &D3, 0.5, 2.5),
        ),
        (
            "sqrt",
            |x| x.sqrt(),
            |v| 0.5 / v.sqrt(),
            |v| -0.25 * v.powf(-1.5),
            |r| uniform(r, &D3, 0.5, 2.5),
        ),
        (
            "tanh",
            |x| x.tanh(),
            |v| 1.0 - v.tanh().powi(2),
            |v| -2.0 * v.tanh() * (1.0 - v.tanh().powi(2)),
            |r| normal(r, &D3, 1.0),
        ),
        (
            "sigmoid",
            |x| x.sigmoid(),
            |v| sigmoid64(v) * (1.0 - sigmoid64(v)),
            |v| {
                let s = sigmoid64(v);
                s * (1.0 - s) * (1.0 - 2.0 * s)
            },
            |r| normal(r, &D3, 2.0),
        ),
        (
            "softplus",
            |x| x.softplus(),
            sigmoid64,
            |v| sigmoid64(v) * (1.0 - sigmoid64(v)),
            |r| normal(r, &D3, 2.0),
        ),
        (
            "powf(2.5)",
            |x| x.powf(2.5),
            |v| 2.5 * v.powf(1.5),
            |v| 3.75 * v.sqrt(),
            |r| uniform(r, &D3, 0.5, 2.0),
        ),
        (
            "sqr",
            |x| x.sqr().unwrap(),
            |v| 2.0 * v,
            |_| 2.0,
            |r| normal(r, &D3, 1.0),
        ),
    ];
    let mut rng = Rng::new(202);
    for (name, run, df, d2f, input) in cases {
        let x = leaf(&input(&mut rng));
        let x64 = f64s(&x);
        let g = autograd::grad(
            &[run(&x).sum_all().unwrap()],
            None,
            std::slice::from_ref(&x),
            true,
        )
        .unwrap()[0]
            .clone()
            .unwrap();
        let want: Vec<f64> = x64.iter().map(|&v| df(v)).collect();
        assert_close(&format!("{name}: f'"), &g.to_vec(), &want, 1e-5, 1e-4);
        let seed = seed_of(name);
        let w = weights(seed, x64.len());
        let h = autograd::grad(
            &[weighted_sum(&g, seed)],
            None,
            std::slice::from_ref(&x),
            false,
        )
        .unwrap()[0]
            .clone()
            .unwrap_or_else(|| panic!("{name}: no second-order gradient"));
        let want: Vec<f64> = x64.iter().zip(&w).map(|(&v, &wi)| wi * d2f(v)).collect();
        assert_close(&format!("{name}: f''"), &h.to_vec(), &want, 1e-5, 1e-4);
    }
}

// ============================================================================================
// Broadcasting binary ops
// ============================================================================================

#[allow(clippy::type_complexity)]
fn ref_binary(
    op: char,
    a: &[f64],
    ad: &[usize],
    b: &[f64],
    bd: &[usize],
    od: &[usize],
    w: &[f64],
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let mut y = vec![0.0; numel(od)];
    let mut da = vec![0.0; a.len()];
    let mut db = vec![0.0; b.len()];
    for o in 0..numel(od) {
        let idx = unravel(o, od);
        let (ia, ib) = (bcast_ravel(&idx, ad), bcast_ravel(&idx, bd));
        let (x, z) = (a[ia], b[ib]);
        let (v, ga, gb) = match op {
            '+' => (x + z, 1.0, 1.0),
            '-' => (x - z, 1.0, -1.0),
            '*' => (x * z, z, x),
            '/' => (x / z, 1.0 / z, -x / (z * z)),
            _ => unreachable!(),
        };
        y[o] = v;
        da[ia] += w[o] * ga;
        db[ib] += w[o] * gb;
    }
    (y, vec![da, db])
}

#[test]
fn binary_ops_with_broadcasting() {
    type Bin = fn(&Tensor, &Tensor) -> ganforge::Result<Tensor>;
    let ops: [(char, &str, Bin); 4] = [
        ('+', "add", Tensor::add),
        ('-', "sub", Tensor::sub),
        ('*', "mul", Tensor::mul),
        ('/', "div", Tensor::div),
    ];
    // (lhs dims, rhs dims, output dims)
    let patterns: Vec<(Vec<usize>, Vec<usize>, Vec<usize>)> = vec![
        (vec![3, 5, 7], vec![3, 5, 7], vec![3, 5, 7]),
        (vec![3, 1, 7], vec![5, 1], vec![3, 5, 7]),
        (vec![5, 1], vec![3, 1, 7], vec![3, 5, 7]),
        (vec![7], vec![3, 5, 7], vec![3, 5, 7]),
        (vec![3, 5, 7], vec![5, 7], vec![3, 5, 7]),
        (vec![3, 5, 1], vec![1, 5, 7], vec![3, 5, 7]),
        (vec![3, 5], vec![1, 1], vec![3, 5]),
        (vec![], vec![3, 5], vec![3, 5]),
        (vec![3, 5], vec![], vec![3, 5]),
        (vec![], vec![], vec![]),
    ];
    let mut rng = Rng::new(303);
    for (sym, name, run) in ops {
        for (ad, bd, od) in &patterns {
            let a = normal(&mut rng, ad, 1.0);
            // Denominators (and every rhs) kept away from 0.
            let b = signed_mag(&mut rng, bd, 0.5, 2.0);
            check_op(
                &format!("{name} {ad:?} with {bd:?}"),
                &|t: &[Tensor]| run(&t[0], &t[1]).unwrap(),
                &[a, b],
                od,
                &|xs, w| ref_binary(sym, &xs[0], ad, &xs[1], bd, od, w),
                TOL,
            );
        }
    }
}

#[test]
fn div_mixed_second_order() {
    // L = sum(a / b): dL/db = -a / b^2; d weighted_sum(dL/db) / da = -w / b^2,
    // and / db = 2 a w / b^3.
    let mut rng = Rng::new(304);
    let a = leaf(&normal(&mut rng, &[3, 5], 1.0));
    let b = leaf(&signed_mag(&mut rng, &[3, 5], 0.5, 2.0));
    let (a64, b64) = (f64s(&a), f64s(&b));
    let loss = a.div(&b).unwrap().sum_all().unwrap();
    let g = autograd::grad(&[loss], None, &[a.clone(), b.clone()], true).unwrap();
    let gb = g[1].clone().unwrap();
    let want: Vec<f64> = a64.iter().zip(&b64).map(|(x, z)| -x / (z * z)).collect();
    assert_close("d(a/b)/db", &gb.to_vec(), &want, 1e-5, 1e-4);
    let w = weights(9, 15);
    let h = autograd::grad(
        &[weighted_sum(&gb, 9)],
        None,
        &[a.clone(), b.clone()],
        false,
    )
    .unwrap();
    let want_a: Vec<f64> = b64.iter().zip(&w).map(|(z, wi)| -wi / (z * z)).collect();
    let want_b: Vec<f64> = (0..15)
        .map(|i| 2.0 * a64[i] * w[i] / b64[i].powi(3))
        .collect();
    assert_close(
        "d2/dadb",
        &h[0].clone().unwrap().to_vec(),
        &want_a,
        1e-5,
        1e-4,
    );
    assert_close(
        "d2/db2",
        &h[1].clone().unwrap().to_vec(),
        &want_b,
        1e-5,
        1e-4,
    );
}

#[test]
fn second_order_through_a_linear_critic() {
    // Gradient-penalty shape: f = sum_r sum_o v_o act(z_ro), z = x W^T + b; g = df/dx recorded
    // (create_graph); L = sum(u * g). With a_ro = act'(z_ro), c_ro = sum_i u_ri W_oi:
    //   g_ri = sum_o v_o a_ro W_oi,   L = sum_ro v_o a_ro c_ro,
    //   q_ro = dL/dz_ro = v_o act''(z_ro) c_ro,
    //   dL/dW_oi = sum_r (q_ro x_ri + v_o a_ro u_ri),  dL/dx_ri = sum_o q_ro W_oi,
    //   dL/db_o = sum_r q_ro,  dL/dv_o = sum_r a_ro c_ro.
    let (rows, inf, out) = (7, 5, 3);
    let mut rng = Rng::new(3131);
    for act in ["tanh", "leaky_relu"] {
        let x = leaf(&normal(&mut rng, &[rows, inf], 1.0));
        let wt = leaf(&normal(&mut rng, &[out, inf], 0.7));
        let b = leaf(&normal(&mut rng, &[out], 0.5));
        let v = leaf(&normal(&mut rng, &[out], 1.0));
        let z = x.linear(&wt, Some(&b)).unwrap();
        let h = if act == "tanh" {
            z.tanh()
        } else {
            z.leaky_relu(0.2)
        };
        let f = h.mul(&v).unwrap().sum_all().unwrap();
        let g = autograd::grad(&[f], None, std::slice::from_ref(&x), true).unwrap()[0]
            .clone()
            .unwrap();
        let seed = seed_of(act);
        let u = weights(seed, rows * inf);
        let l = weighted_sum(&g, seed);
        let grads = autograd::grad(
            &[l],
            None,
            &[x.clone(), wt.clone(), b.clone(), v.clone()],
            false,
        )
        .unwrap();

        let (x64, w64, b64, v64, z64) = (f64s(&x), f64s(&wt), f64s(&b), f64s(&v), f64s(&z));
        let mut zr = vec![0.0; rows * out];
        for r in 0..rows {
            for o in 0..out {
                zr[r * out + o] = b64[o]
                    + (0..inf)
                        .map(|i| x64[r * inf + i] * w64[o * inf + i])
                        .sum::<f64>();
            }
        }
        assert_close(&format!("{act}: z"), &z.to_vec(), &zr, 1e-5, 1e-5);
        assert!(z64.iter().all(|v| v.abs() > 1e-3), "kink too close");
        let d1 = |z: f64| {
            if act == "tanh" {
                1.0 - z.tanh().powi(2)
            } else if z > 0.0 {
                1.0
            } else {
                0.2
            }
        };
        let d2 = |z: f64| {
            if act == "tanh" {
                -2.0 * z.tanh() * (1.0 - z.tanh().powi(2))
            } else {
                0.0
            }
        };
        let (mut gx, mut dx, mut dw, mut db, mut dv) = (
            vec![0.0; rows * inf],
            vec![0.0; rows * inf],
            vec![0.0; out * inf],
            vec![0.0; out],
            vec![0.0; out],
        );
        for r in 0..rows {
            for o in 0..out {
                let zz = zr[r * out + o];
                let c: f64 = (0..inf).map(|i| u[r * inf + i] * w64[o * inf + i]).sum();
                let q = v64[o] * d2(zz) * c;
                for i in 0..inf {
                    gx[r * inf + i] += v64[o] * d1(zz) * w64[o * inf + i];
                    dw[o * inf + i] += q * x64[r * inf + i] + v64[o] * d1(zz) * u[r * inf + i];
                    dx[r * inf + i] += q * w64[o * inf + i];
                }
                db[o] += q;
                dv[o] += d1(zz) * c;
            }
        }
        assert_close(&format!("{act}: df/dx"), &g.to_vec(), &gx, 1e-5, 1e-4);
        // With leaky_relu, x and b reach L only through constant masks: None or zeros.
        let got = |i: usize, n: usize| {
            grads[i]
                .as_ref()
                .map(|t| t.to_vec())
                .unwrap_or(vec![0.0; n])
        };
        assert_close(
            &format!("{act}: dL/dx"),
            &got(0, rows * inf),
            &dx,
            1e-5,
            1e-4,
        );
        assert_close(
            &format!("{act}: dL/dW"),
            &got(1, out * inf),
            &dw,
            1e-5,
            1e-4,
        );
        assert_close(&format!("{act}: dL/db"), &got(2, out), &db, 1e-5, 1e-4);
        assert_close(&format!("{act}: dL/dv"), &got(3, out), &dv, 1e-5, 1e-4);
        if act == "tanh" {
            assert!(
                grads.iter().all(|g| g.is_some()),
                "tanh: every input reaches L"
            );
        }
    }
}

// ============================================================================================
// Reductions
// ============================================================================================

/// For each input element, its output position (keepdim layout) when `red` dims are reduced.
fn reduce_map(d: &[usize], red: &[usize]) -> (Vec<usize>, usize) {
    let kd: Vec<usize> = d
        .iter()
        .enumerate()
        .map(|(k, &s)| if red.contains(&k) { 1 } else { s })
        .collect();
    let map = (0..numel(d))
        .map(|i| {
            let mut idx = unravel(i, d);
            for &k in red {
                idx[k] = 0;
            }
            ravel(&idx, &kd)
        })
        .collect();
    (map, numel(&kd))
}

fn out_dims(d: &[usize], red: &[usize], keepdim: bool) -> Vec<usize> {
    d.iter()
        .enumerate()
        .filter_map(|(k, &s)| {
            if !red.contains(&k) {
                Some(s)
            } else if keepdim {
                Some(1)
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn sum_and_mean_over_dims() {
    let mut rng = Rng::new(404);
    let cases: Vec<(Vec<usize>, bool)> = vec![
        (vec![0, 1, 2], false),
        (vec![0, 1, 2], true),
        (vec![0, 2], true),
        (vec![0, 2], false),
        (vec![1], false),
        (vec![2], true),
        (vec![2, 0], false), // order does not matter
    ];
    for (red, keep) in &cases {
        for mean in [false, true] {
            let x = normal(&mut rng, &D3, 1.0);
            let od = out_dims(&D3, red, *keep);
            let name = format!(
                "{} over {red:?} keepdim={keep}",
                if mean { "mean" } else { "sum" }
            );
            check_op(
                &name,
                &|t: &[Tensor]| {
                    if mean {
                        t[0].mean(red, *keep).unwrap()
                    } else {
                        t[0].sum(red, *keep).unwrap()
                    }
                },
                &[x],
                &od,
                &|xs, w| {
                    let (map, n_out) = reduce_map(&D3, red);
                    let count = (xs[0].len() / n_out) as f64;
                    let scale = if mean { 1.0 / count } else { 1.0 };
                    let mut y = vec![0.0; n_out];
                    for (i, &v) in xs[0].iter().enumerate() {
                        y[map[i]] += v * scale;
                    }
                    let dx = map.iter().map(|&o| w[o] * scale).collect();
                    (y, vec![dx])
                },
                TOL,
            );
        }
    }
    // sum_all / mean_all are 0-dim.
    let x = normal(&mut rng, &D3, 1.0);
    check_op(
        "sum_all",
        &|t: &[Tensor]| t[0].sum_all().unwrap(),
        std::slice::from_ref(&x),
        &[],
        &|xs, w| (vec![xs[0].iter().sum()], vec![vec![w[0]; 105]]),
        TOL,
    );
    check_op(
        "mean_all",
        &|t: &[Tensor]| t[0].mean_all().unwrap(),
        &[x],
        &[],
        &|xs, w| {
            (
                vec![xs[0].iter().sum::<f64>() / 105.0],
                vec![vec![w[0] / 105.0; 105]],
            )
        },
        TOL,
    );
}

#[test]
fn var_biased_and_unbiased() {
    let mut rng = Rng::new(505);
    for red in [vec![1], vec![0, 2], vec![2]] {
        for unbiased in [false, true] {
            for keep in [false, true] {
                let x = normal(&mut rng, &D3, 1.5);
                let od = out_dims(&D3, &red, keep);
                check_op(
                    &format!("var over {red:?} unbiased={unbiased} keepdim={keep}"),
                    &|t: &[Tensor]| t[0].var(&red, unbiased, keep).unwrap(),
                    &[x],
                    &od,
                    &|xs, w| {
                        let (map, n_out) = reduce_map(&D3, &red);
                        let n = xs[0].len() / n_out;
                        let denom = if unbiased { n - 1 } else { n } as f64;
                        let mut mean = vec![0.0; n_out];
                        for (i, &v) in xs[0].iter().enumerate() {
                            mean[map[i]] += v / n as f64;
                        }
                        let mut y = vec![0.0; n_out];
                        for (i, &v) in xs[0].iter().enumerate() {
                            y[map[i]] += (v - mean[map[i]]).powi(2) / denom;
                        }
                        // d var / d x_i = 2 (x_i - mean) / denom (the mean's own term sums to 0).
                        let dx = (0..xs[0].len())
                            .map(|i| w[map[i]] * 2.0 * (xs[0][i] - mean[map[i]]) / denom)
                            .collect();
                        (y, vec![dx])
                    },
                    TOL,
                );
            }
        }
    }
}

#[test]
fn max_and_argmax_over_a_dim() {
    let mut rng = Rng::new(606);
    for dim in 0..3 {
        for keep in [false, true] {
            let x = distinct(&mut rng, &D3);
            let od = out_dims(&D3, &[dim], keep);
            let reference = |xs: &[Vec<f64>], w: &[f64]| {
                let (map, n_out) = reduce_map(&D3, &[dim]);
                let mut best: Vec<Option<usize>> = vec![None; n_out];
                for (i, &v) in xs[0].iter().enumerate() {
                    match best[map[i]] {
                        Some(b) if xs[0][b] >= v => {}
                        _ => best[map[i]] = Some(i),
                    }
                }
                let y = best.iter().map(|b| xs[0][b.unwrap()]).collect();
                let mut dx = vec![0.0; xs[0].len()];
                for (o, b) in best.iter().enumerate() {
                    dx[b.unwrap()] += w[o];
                }
                (y, vec![dx])
            };
            check_op(
                &format!("max over {dim} keepdim={keep}"),
                &|t: &[Tensor]| t[0].max(dim, keep).unwrap(),
                std::slice::from_ref(&x),
                &od,
                &reference,
                TOL,
            );
            // argmax: the index along `dim` of the (first) maximum, in output order.
            let x64 = f64s(&x);
            let (map, n_out) = reduce_map(&D3, &[dim]);
            let mut best = vec![(f64::NEG_INFINITY, 0usize); n_out];
            for (i, &v) in x64.iter().enumerate() {
                if v > best[map[i]].0 {
                    best[map[i]] = (v, unravel(i, &D3)[dim]);
                }
            }
            let want: Vec<usize> = best.iter().map(|b| b.1).collect();
            assert_eq!(x.argmax(dim).unwrap(), want, "argmax over {dim}");
        }
    }
    let x = distinct(&mut rng, &D3);
    check_op(
        "max_all",
        &|t: &[Tensor]| t[0].max_all().unwrap(),
        &[x],
        &[],
        &|xs, w| {
            let (mut bi, mut bv) = (0, f64::NEG_INFINITY);
            for (i, &v) in xs[0].iter().enumerate() {
                if v > bv {
                    (bi, bv) = (i, v);
                }
            }
            let mut dx = vec![0.0; xs[0].len()];
            dx[bi] = w[0];
            (vec![bv], vec![dx])
        },
        TOL,
    );
}

#[test]
fn max_ties_send_the_gradient_to_the_first_maximum() {
    #[rustfmt::skip]
    let data = vec![
        1.0, 3.0, 3.0, 2.0, 0.0,
        5.0, 5.0, 5.0, 5.0, 5.0,
        0.0, -1.0, 4.0, -2.0, 4.0,
    ];
    let x = leaf(&tensor(data, &[3, 5]));
    // Over dim 1: values [3, 5, 4] at [1, 0, 2].
    let y = x.max(1, false).unwrap();
    assert_eq!(y.to_vec(), vec![3.0, 5.0, 4.0]);
    assert_eq!(x.argmax(1).unwrap(), vec![1, 0, 2]);
    let g = autograd::grad(
        &[weighted_sum(&y, 11)],
        None,
        std::slice::from_ref(&x),
        false,
    )
    .unwrap()[0]
        .clone()
        .unwrap();
    let w = weights(11, 3);
    let mut want = vec![0.0; 15];
    want[1] = w[0];
    want[5] = w[1];
    want[12] = w[2];
    assert_close("max dim 1 tie grad", &g.to_vec(), &want, 1e-7, 0.0);
    // Over dim 0, every column ties or has its max first: all gradient goes to row 0.
    let x2 = leaf(&tensor(
        vec![2.0, 7.0, 1.0, 7.0, 2.0, 0.0, 7.0, 1.0, 7.0, 2.0],
        &[2, 5],
    ));
    assert_eq!(x2.argmax(0).unwrap(), vec![0, 0, 0, 0, 0]);
    let y2 = x2.max(0, true).unwrap();
    let g2 = autograd::grad(
        &[y2.sum_all().unwrap()],
        None,
        std::slice::from_ref(&x2),
        false,
    )
    .unwrap()[0]
        .clone()
        .unwrap();
    assert_close(
        "max dim 0 tie grad",
        &g2.to_vec(),
        &[1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        0.0,
        0.0,
    );
}

// ============================================================================================
// Shape ops
// ============================================================================================

#[test]
fn reshape_flatten_unsqueeze_squeeze() {
    let mut rng = Rng::new(707);
    type ShapeRun = fn(&Tensor) -> Tensor;
    let cases: Vec<(&str, Vec<usize>, ShapeRun, Vec<usize>)> = vec![
        (
            "reshape",
            vec![3, 5, 7],
            |x| x.reshape([7, 15]).unwrap(),
            vec![7, 15],
        ),
        (
            "reshape to 1-D",
            vec![3, 5, 7],
            |x| x.reshape(105).unwrap(),
            vec![105],
        ),
        (
            "flatten(1)",
            vec![3, 5, 7],
            |x| x.flatten(1).unwrap(),
            vec![3, 35],
        ),
        (
            "flatten(0)",
            vec![3, 5, 7],
            |x| x.flatten(0).unwrap(),
            vec![105],
        ),
        (
            "flatten_all",
            vec![3, 5, 7],
            |x| x.flatten_all().unwrap(),
            vec![105],
        ),
        (
            "unsqueeze(1)",
            vec![3, 5, 7],
            |x| x.unsqueeze(1).unwrap(),
            vec![3, 1, 5, 7],
        ),
        (
            "unsqueeze(3)",
            vec![3, 5, 7],
            |x| x.unsqueeze(3).unwrap(),
            vec![3, 5, 7, 1],
        ),
        (
            "squeeze(1)",
            vec![3, 1, 7],
            |x| x.squeeze(1).unwrap(),
            vec![3, 7],
        ),
    ];
    for (name, dims, run, od) in cases {
        let x = normal(&mut rng, &dims, 1.0);
        // Row-major data is unchanged; the gradient is w in the input's shape.
        check_op(
            name,
            &|t: &[Tensor]| run(&t[0]),
            &[x],
            &od,
            &|xs, w| ref_gather(xs, w, |o| Some((0, o))),
            TOL,
        );
    }
}

#[test]
fn permute_and_transpose() {
    let mut rng = Rng::new(808);
    type PermRun = fn(&Tensor) -> Tensor;
    // (name, op, perm it amounts to)
    let cases: Vec<(&str, PermRun, [usize; 3])> = vec![
        (
            "permute [2,0,1]",
            |x| x.permute(&[2, 0, 1]).unwrap(),
            [2, 0, 1],
        ),
        (
            "permute [1,2,0]",
            |x| x.permute(&[1, 2, 0]).unwrap(),
            [1, 2, 0],
        ),
        ("transpose(0,2)", |x| x.transpose(0, 2).unwrap(), [2, 1, 0]),
        ("transpose(1,0)", |x| x.transpose(1, 0).unwrap(), [1, 0, 2]),
        ("t()", |x| x.t().unwrap(), [0, 2, 1]),
    ];
    for (name, run, perm) in cases {
        let x = normal(&mut rng, &D3, 1.0);
        let od: Vec<usize> = perm.iter().map(|&p| D3[p]).collect();
        check_op(
            name,
            &|t: &[Tensor]| run(&t[0]),
            &[x],
            &od,
            &|xs, w| {
                ref_gather(xs, w, |o| {
                    let oi = unravel(o, &od);
                    let mut ii = [0usize; 3];
                    for k in 0..3 {
                        ii[perm[k]] = oi[k];
                    }
                    Some((0, ravel(&ii, &D3)))
                })
            },
            TOL,
        );
    }
}

#[test]
fn broadcast_to_shapes() {
    let mut rng = Rng::new(909);
    let cases: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![5, 1], vec![3, 5, 7]),
        (vec![3, 1, 7], vec![3, 5, 7]),
        (vec![7], vec![3, 5, 7]),
        (vec![], vec![3, 5]),
        (vec![1, 5, 1], vec![3, 5, 7]),
    ];
    for (from, to) in cases {
        let x = normal(&mut rng, &from, 1.0);
        check_op(
            &format!("broadcast_to {from:?} -> {to:?}"),
            &|t: &[Tensor]| t[0].broadcast_to(to.clone()).unwrap(),
            &[x],
            &to,
            &|xs, w| ref_gather(xs, w, |o| Some((0, bcast_ravel(&unravel(o, &to), &from)))),
            TOL,
        );
    }
}

#[test]
fn concat_along_each_dim() {
    let mut rng = Rng::new(1010);
    // (dim, input dims)
    let cases: Vec<(usize, Vec<Vec<usize>>)> = vec![
        (1, vec![vec![3, 2, 7], vec![3, 5, 7], vec![3, 1, 7]]),
        (0, vec![vec![1, 5, 7], vec![3, 5, 7]]),
        (2, vec![vec![3, 5, 2], vec![3, 5, 3]]),
        (1, vec![vec![3, 5, 7]]),
    ];
    for (dim, shapes) in cases {
        let inputs: Vec<Tensor> = shapes.iter().map(|d| normal(&mut rng, d, 1.0)).collect();
        let mut od = shapes[0].clone();
        od[dim] = shapes.iter().map(|d| d[dim]).sum();
        check_op(
            &format!("concat dim {dim} of {shapes:?}"),
            &|t: &[Tensor]| Tensor::concat(t, dim).unwrap(),
            &inputs,
            &od,
            &|xs, w| {
                ref_gather(xs, w, |o| {
                    let mut idx = unravel(o, &od);
                    let mut k = 0;
                    while idx[dim] >= shapes[k][dim] {
                        idx[dim] -= shapes[k][dim];
                        k += 1;
                    }
                    Some((k, ravel(&idx, &shapes[k])))
                })
            },
            TOL,
        );
    }
}

#[test]
fn narrow_and_pad_dim() {
    let mut rng = Rng::new(1111);
    // narrow: (input dims, dim, start, len)
    let narrows: Vec<(Vec<usize>, usize, usize, usize)> = vec![
        (vec![3, 9, 5], 1, 2, 5),
        (vec![7, 3], 0, 6, 1),
        (vec![3, 5, 7], 2, 0, 3),
    ];
    for (dims, dim, start, len) in narrows {
        let x = normal(&mut rng, &dims, 1.0);
        let mut od = dims.clone();
        od[dim] = len;
        check_op(
            &format!("narrow {dims:?} dim {dim} {start}+{len}"),
            &|t: &[Tensor]| t[0].narrow(dim, start, len).unwrap(),
            &[x],
            &od,
            &|xs, w| {
                ref_gather(xs, w, |o| {
                    let mut idx = unravel(o, &od);
                    idx[dim] += start;
                    Some((0, ravel(&idx, &dims)))
                })
            },
            TOL,
        );
    }
    // pad_dim: (input dims, dim, before, after)
    let pads: Vec<(Vec<usize>, usize, usize, usize)> = vec![
        (vec![3, 5, 7], 2, 2, 3),
        (vec![3, 5, 7], 0, 1, 0),
        (vec![3, 5, 7], 1, 0, 3),
    ];
    for (dims, dim, before, after) in pads {
        let x = normal(&mut rng, &dims, 1.0);
        let mut od = dims.clone();
        od[dim] += before + after;
        check_op(
            &format!("pad_dim {dims:?} dim {dim} ({before}, {after})"),
            &|t: &[Tensor]| t[0].pad_dim(dim, before, after).unwrap(),
            &[x],
            &od,
            &|xs, w| {
                ref_gather(xs, w, |o| {
                    let mut idx = unravel(o, &od);
                    if idx[dim] < before || idx[dim] >= before + dims[dim] {
                        return None;
                    }
                    idx[dim] -= before;
                    Some((0, ravel(&idx, &dims)))
                })
            },
            TOL,
        );
    }
}

#[test]
fn index_select_and_index_add() {
    let mut rng = Rng::new(1212);
    // Embedding lookup: rows of an [11, 5] table, with repeats (their gradients add up).
    let select: Vec<(Vec<usize>, usize, Vec<usize>)> = vec![
        (vec![11, 5], 0, vec![3, 0, 3, 10, 7, 3, 0]),
        (vec![3, 7, 5], 1, vec![6, 0, 6, 2, 4]),
        (vec![3, 5, 7], 2, vec![6, 6, 6]),
    ];
    for (dims, dim, indices) in select {
        let x = normal(&mut rng, &dims, 1.0);
        let mut od = dims.clone();
        od[dim] = indices.len();
        check_op(
            &format!("index_select {dims:?} dim {dim} {indices:?}"),
            &|t: &[Tensor]| t[0].index_select(dim, &indices).unwrap(),
            &[x],
            &od,
            &|xs, w| {
                ref_gather(xs, w, |o| {
                    let mut idx = unravel(o, &od);
                    idx[dim] = indices[idx[dim]];
                    Some((0, ravel(&idx, &dims)))
                })
            },
            TOL,
        );
    }
    // index_add_into_zeros: entry j of dim goes to (adds into) position indices[j].
    let adds: Vec<(Vec<usize>, usize, Vec<usize>, usize)> = vec![
        (vec![3, 4, 5], 1, vec![2, 0, 2, 6], 7),
        (vec![7, 3], 0, vec![1, 1, 4, 0, 1, 4, 2], 5),
    ];
    for (dims, dim, indices, size) in adds {
        let x = normal(&mut rng, &dims, 1.0);
        let mut od = dims.clone();
        od[dim] = size;
        check_op(
            &format!("index_add_into_zeros {dims:?} dim {dim} {indices:?} size {size}"),
            &|t: &[Tensor]| t[0].index_add_into_zeros(dim, &indices, size).unwrap(),
            &[x],
            &od,
            &|xs, w| {
                let mut y = vec![0.0; numel(&od)];
                let mut dx = vec![0.0; xs[0].len()];
                for (i, &v) in xs[0].iter().enumerate() {
                    let mut idx = unravel(i, &dims);
                    idx[dim] = indices[idx[dim]];
                    let o = ravel(&idx, &od);
                    y[o] += v;
                    dx[i] = w[o];
                }
                (y, vec![dx])
            },
            TOL,
        );
    }
}

// ============================================================================================
// Matmul and linear
// ============================================================================================

/// Naive broadcasting of two dim lists (for batch dims).
fn bshape(a: &[usize], b: &[usize]) -> Vec<usize> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let x = if i + a.len() >= r {
                a[i + a.len() - r]
            } else {
                1
            };
            let y = if i + b.len() >= r {
                b[i + b.len() - r]
            } else {
                1
            };
            assert!(x == y || x == 1 || y == 1);
            x.max(y)
        })
        .collect()
}

fn ref_matmul(
    a: &[f64],
    ad: &[usize],
    b: &[f64],
    bd: &[usize],
    w: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (m, k) = (ad[ad.len() - 2], ad[ad.len() - 1]);
    let n = bd[bd.len() - 1];
    let (abd, bbd) = (&ad[..ad.len() - 2], &bd[..bd.len() - 2]);
    let batch = bshape(abd, bbd);
    let mut od = batch.clone();
    od.extend([m, n]);
    let mut y = vec![0.0; numel(&od)];
    let mut da = vec![0.0; a.len()];
    let mut db = vec![0.0; b.len()];
    for bi in 0..numel(&batch) {
        let bidx = unravel(bi, &batch);
        let ao = bcast_ravel(&bidx, abd) * m * k;
        let bo = bcast_ravel(&bidx, bbd) * k * n;
        for i in 0..m {
            for j in 0..n {
                let o = (bi * m + i) * n + j;
                let mut s = 0.0;
                for p in 0..k {
                    s += a[ao + i * k + p] * b[bo + p * n + j];
                    da[ao + i * k + p] += w[o] * b[bo + p * n + j];
                    db[bo + p * n + j] += w[o] * a[ao + i * k + p];
                }
                y[o] = s;
            }
        }
    }
    (y, da, db)
}

#[test]
fn matmul_2d_batched_and_broadcast() {
    let mut rng = Rng::new(1313);
    let cases: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![5, 7], vec![7, 9]),
        (vec![1, 7], vec![7, 3]),
        (vec![3, 5, 7], vec![3, 7, 9]),
        (vec![3, 5, 7], vec![7, 9]),
        (vec![5, 7], vec![3, 7, 9]),
        (vec![3, 1, 5, 7], vec![5, 7, 3]),
    ];
    for (ad, bd) in cases {
        let a = normal(&mut rng, &ad, 1.0);
        let b = normal(&mut rng, &bd, 1.0);
        let mut od = bshape(&ad[..ad.len() - 2], &bd[..bd.len() - 2]);
        od.extend([ad[ad.len() - 2], bd[bd.len() - 1]]);
        check_op(
            &format!("matmul {ad:?} @ {bd:?}"),
            &|t: &[Tensor]| t[0].matmul(&t[1]).unwrap(),
            &[a, b],
            &od,
            &|xs, w| {
                let (y, da, db) = ref_matmul(&xs[0], &ad, &xs[1], &bd, w);
                (y, vec![da, db])
            },
            TOL,
        );
    }
}

#[test]
fn linear_with_and_without_bias() {
    let mut rng = Rng::new(1414);
    // (x dims, out features, bias?)
    let cases: Vec<(Vec<usize>, usize, bool)> = vec![
        (vec![7, 5], 3, true),
        (vec![3, 5, 7], 9, true),
        (vec![5, 7], 3, false),
    ];
    for (xd, out, has_bias) in cases {
        let inf = *xd.last().unwrap();
        let rows = numel(&xd) / inf;
        let x = normal(&mut rng, &xd, 1.0);
        let wt = normal(&mut rng, &[out, inf], 0.5);
        let mut inputs = vec![x, wt];
        if has_bias {
            inputs.push(normal(&mut rng, &[out], 1.0));
        }
        let mut od = xd.clone();
        *od.last_mut().unwrap() = out;
        check_op(
            &format!("linear {xd:?} -> {out} bias={has_bias}"),
            &|t: &[Tensor]| t[0].linear(&t[1], t.get(2)).unwrap(),
            &inputs,
            &od,
            &|xs, w| {
                let (x, wt) = (&xs[0], &xs[1]);
                let mut y = vec![0.0; rows * out];
                let (mut dx, mut dw, mut db) =
                    (vec![0.0; x.len()], vec![0.0; wt.len()], vec![0.0; out]);
                for r in 0..rows {
                    for o in 0..out {
                        let g = w[r * out + o];
                        let mut s = if has_bias { xs[2][o] } else { 0.0 };
                        for i in 0..inf {
                            s += x[r * inf + i] * wt[o * inf + i];
                            dx[r * inf + i] += g * wt[o * inf + i];
                            dw[o * inf + i] += g * x[r * inf + i];
                        }
                        db[o] += g;
                        y[r * out + o] = s;
                    }
                }
                let mut grads = vec![dx, dw];
                if has_bias {
                    grads.push(db);
                }
                (y, grads)
            },
            TOL,
        );
    }
}

// ============================================================================================
// Losses
// ============================================================================================

#[test]
fn bce_with_logits_matches_naive_formula_and_is_stable() {
    let mut rng = Rng::new(1515);
    let dims = [5, 7];
    let mut x = normal(&mut rng, &dims, 3.0).to_vec();
    let mut t = uniform(&mut rng, &dims, 0.0, 1.0).to_vec();
    // Saturated logits, with agreeing and disagreeing hard targets: naive f32 would give
    // log(0) = -inf here (sigmoid(50) rounds to 1).
    for (i, (xv, tv)) in [
        (50.0, 0.0),
        (50.0, 1.0),
        (-50.0, 1.0),
        (-50.0, 0.0),
        (50.0, 0.3),
    ]
    .into_iter()
    .enumerate()
    {
        x[3 * i] = xv;
        t[3 * i] = tv;
    }
    t[1] = 0.0;
    t[2] = 1.0;
    let (x, t) = (tensor(x, &dims), tensor(t, &dims));
    check_op(
        "bce_with_logits",
        &|a: &[Tensor]| a[0].bce_with_logits(&a[1]).unwrap(),
        &[x.clone(), t.clone()],
        &[],
        &|xs, w| {
            let n = xs[0].len() as f64;
            let (mut loss, mut dx, mut dt) = (0.0, vec![0.0; xs[0].len()], vec![0.0; xs[0].len()]);
            for i in 0..xs[0].len() {
                let (z, y) = (xs[0][i], xs[1][i]);
                // The naive formula in f64, with 1 - s computed as 1 / (1 + e^z) so that the
                // f64 reference itself does not round 1 - s to 0 at z = 50.
                let s = 1.0 / (1.0 + (-z).exp());
                let one_minus_s = 1.0 / (1.0 + z.exp());
                loss += -(y * s.ln() + (1.0 - y) * one_minus_s.ln()) / n;
                dx[i] = w[0] * (s - y) / n;
                // d/dy of the naive formula: -(ln s - ln(1 - s)) = -z.
                dt[i] = w[0] * -(s.ln() - one_minus_s.ln()) / n;
            }
            (vec![loss], vec![dx, dt])
        },
        TOL_COMPOSED,
    );
    let loss = x.bce_with_logits(&t).unwrap().to_scalar().unwrap();
    assert!(loss.is_finite() && loss > 0.0);
    // A single saturated wrong prediction costs exactly its logit.
    let one = tensor(vec![50.0], &[1])
        .bce_with_logits(&tensor(vec![0.0], &[1]))
        .unwrap();
    assert_close("bce(50, 0)", &one.to_vec(), &[50.0], 1e-5, 1e-6);
    let one = tensor(vec![-50.0], &[1])
        .bce_with_logits(&tensor(vec![0.0], &[1]))
        .unwrap();
    assert_close(
        "bce(-50, 0)",
        &one.to_vec(),
        &[(-50f64).exp().ln_1p()],
        1e-12,
        1e-3,
    );
}

#[test]
fn mse_l1_hinge_losses() {
    let mut rng = Rng::new(1616);
    let dims = [5, 7];
    let n = 35.0;
    // mse
    let x = normal(&mut rng, &dims, 1.0);
    let t = normal(&mut rng, &dims, 1.0);
    check_op(
        "mse",
        &|a: &[Tensor]| a[0].mse(&a[1]).unwrap(),
        &[x, t],
        &[],
        &|xs, w| {
            let mut loss = 0.0;
            let (mut dx, mut dt) = (vec![0.0; 35], vec![0.0; 35]);
            for i in 0..35 {
                let d = xs[0][i] - xs[1][i];
                loss += d * d / n;
                dx[i] = w[0] * 2.0 * d / n;
                dt[i] = -dx[i];
            }
            (vec![loss], vec![dx, dt])
        },
        TOL_COMPOSED,
    );
    // l1, with |x - t| kept away from the kink
    let t = normal(&mut rng, &dims, 1.0);
    let d = normal_away(&mut rng, &dims, 1.0, &[0.0], 0.05);
    let x = t.add(&d).unwrap();
    check_op(
        "l1",
        &|a: &[Tensor]| a[0].l1(&a[1]).unwrap(),
        &[x, t],
        &[],
        &|xs, w| {
            let mut loss = 0.0;
            let (mut dx, mut dt) = (vec![0.0; 35], vec![0.0; 35]);
            for i in 0..35 {
                let d = xs[0][i] - xs[1][i];
                loss += d.abs() / n;
                dx[i] = w[0] * d.signum() / n;
                dt[i] = -dx[i];
            }
            (vec![loss], vec![dx, dt])
        },
        TOL_COMPOSED,
    );
    // hinge with labels in {-1, +1}; 1 - y x = 0 at x = y, so x is kept away from +-1.
    let x = normal_away(&mut rng, &dims, 1.5, &[-1.0, 1.0], 0.05);
    let y = gen(
        &mut rng,
        &dims,
        |r| if r.next_f64() < 0.5 { -1.0 } else { 1.0 },
    );
    check_op(
        "hinge",
        &|a: &[Tensor]| a[0].hinge(&a[1]).unwrap(),
        &[x, y],
        &[],
        &|xs, w| {
            let mut loss = 0.0;
            let (mut dx, mut dy) = (vec![0.0; 35], vec![0.0; 35]);
            for i in 0..35 {
                let m = 1.0 - xs[1][i] * xs[0][i];
                if m > 0.0 {
                    loss += m / n;
                    dx[i] = -w[0] * xs[1][i] / n;
                    dy[i] = -w[0] * xs[0][i] / n;
                }
            }
            (vec![loss], vec![dx, dy])
        },
        TOL_COMPOSED,
    );
}

#[test]
fn cross_entropy_with_logits_matches_log_softmax() {
    let mut rng = Rng::new(1717);
    let (n, k) = (7, 5);
    let mut x = normal(&mut rng, &[n, k], 2.0).to_vec();
    // A row of huge logits: exp(90) overflows f32 unless the row max is subtracted.
    x[2 * k] = 90.0;
    x[2 * k + 3] = 88.5;
    let x = tensor(x, &[n, k]);
    let targets = vec![0, 4, 3, 2, 1, 4, 0];
    check_op(
        "cross_entropy_with_logits",
        &|a: &[Tensor]| a[0].cross_entropy_with_logits(&targets).unwrap(),
        &[x],
        &[],
        &|xs, w| {
            let x = &xs[0];
            let mut loss = 0.0;
            let mut dx = vec![0.0; n * k];
            for r in 0..n {
                let row = &x[r * k..(r + 1) * k];
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = row.iter().map(|v| (v - m).exp()).sum();
                let lse = m + z.ln();
                loss += (lse - row[targets[r]]) / n as f64;
                for c in 0..k {
                    let p = (row[c] - m).exp() / z;
                    let onehot = if c == targets[r] { 1.0 } else { 0.0 };
                    dx[r * k + c] = w[0] * (p - onehot) / n as f64;
                }
            }
            (vec![loss], vec![dx])
        },
        TOL_COMPOSED,
    );
}

// ============================================================================================
// Normalisation and dropout
// ============================================================================================

struct NormRef {
    y: Vec<f64>,
    dx: Vec<f64>,
    dgamma: Vec<f64>,
    dbeta: Vec<f64>,
    mean: Vec<f64>,
    var: Vec<f64>,
    count: usize,
}

/// Normalisation over groups (`group(i)`), biased variance, affine parameter `param(i)`:
/// `y = (x - mean_g) / sqrt(var_g + eps) * gamma[p] + beta[p]`, and its VJP for weights `w`:
/// with `g_i = w_i gamma[p(i)]`, `dx_i = invstd / n (n g_i - sum_g g - xhat_i sum_g g xhat)`.
#[allow(clippy::too_many_arguments)]
fn ref_norm(
    x: &[f64],
    groups: usize,
    group: &dyn Fn(usize) -> usize,
    gamma: &[f64],
    beta: &[f64],
    param: &dyn Fn(usize) -> usize,
    eps: f64,
    w: &[f64],
) -> NormRef {
    let mut count = vec![0usize; groups];
    let mut mean = vec![0.0; groups];
    for (i, &v) in x.iter().enumerate() {
        count[group(i)] += 1;
        mean[group(i)] += v;
    }
    for g in 0..groups {
        mean[g] /= count[g] as f64;
    }
    let mut var = vec![0.0; groups];
    for (i, &v) in x.iter().enumerate() {
        var[group(i)] += (v - mean[group(i)]).powi(2) / count[group(i)] as f64;
    }
    let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let xhat: Vec<f64> = (0..x.len())
        .map(|i| (x[i] - mean[group(i)]) * invstd[group(i)])
        .collect();
    let y = (0..x.len())
        .map(|i| xhat[i] * gamma[param(i)] + beta[param(i)])
        .collect();
    let (mut sum_g, mut sum_gx) = (vec![0.0; groups], vec![0.0; groups]);
    let (mut dgamma, mut dbeta) = (vec![0.0; gamma.len()], vec![0.0; beta.len()]);
    for i in 0..x.len() {
        let g = w[i] * gamma[param(i)];
        sum_g[group(i)] += g;
        sum_gx[group(i)] += g * xhat[i];
        dgamma[param(i)] += w[i] * xhat[i];
        dbeta[param(i)] += w[i];
    }
    let dx = (0..x.len())
        .map(|i| {
            let gr = group(i);
            let n = count[gr] as f64;
            invstd[gr] / n * (n * w[i] * gamma[param(i)] - sum_g[gr] - xhat[i] * sum_gx[gr])
        })
        .collect();
    NormRef {
        y,
        dx,
        dgamma,
        dbeta,
        mean,
        var,
        count: count[0],
    }
}

#[test]
fn batch_norm_training_output_gradients_and_running_stats() {
    let mut rng = Rng::new(1818);
    let params = BatchNormParams {
        eps: 1e-5,
        momentum: 0.1,
    };
    for dims in [vec![7, 5], vec![3, 5, 7, 9], vec![3, 5, 7]] {
        let c = dims[1];
        let inner: usize = dims[2..].iter().product();
        let x = gen(&mut rng, &dims, |r| 0.7 + 1.8 * r.normal());
        let gamma = uniform(&mut rng, &[c], 0.5, 1.5);
        let beta = normal(&mut rng, &[c], 1.0);
        let channel = move |i: usize| (i / inner) % c;
        let name = format!("batch_norm train {dims:?}");
        check_op(
            &name,
            &|t: &[Tensor]| {
                t[0].batch_norm(None, Some(&t[1]), Some(&t[2]), true, params)
                    .unwrap()
            },
            &[x.clone(), gamma.clone(), beta.clone()],
            &dims,
            &|xs, w| {
                let r = ref_norm(&xs[0], c, &channel, &xs[1], &xs[2], &channel, 1e-5, w);
                (r.y, vec![r.dx, r.dgamma, r.dbeta])
            },
            TOL_COMPOSED,
        );

        // Running statistics: r = (1 - m) r + m stat, with the UNBIASED batch variance.
        let rm0 = normal(&mut rng, &[c], 0.5);
        let rv0 = uniform(&mut rng, &[c], 0.5, 1.5);
        let (rm, rv) = (rm0.detach().mul_scalar(1.0), rv0.detach().mul_scalar(1.0));
        let y = x
            .batch_norm(
                Some(RunningStats {
                    mean: &rm,
                    var: &rv,
                }),
                Some(&gamma),
                Some(&beta),
                true,
                params,
            )
            .unwrap();
        let r = ref_norm(
            &f64s(&x),
            c,
            &channel,
            &f64s(&gamma),
            &f64s(&beta),
            &channel,
            1e-5,
            &vec![0.0; x.elem_count()],
        );
        assert_close(
            &format!("{name}: output with running stats"),
            &y.to_vec(),
            &r.y,
            1e-4,
            1e-4,
        );
        let n = r.count as f64;
        let m = 0.1;
        let want_rm: Vec<f64> = (0..c)
            .map(|ch| (1.0 - m) * f64s(&rm0)[ch] + m * r.mean[ch])
            .collect();
        let want_rv: Vec<f64> = (0..c)
            .map(|ch| (1.0 - m) * f64s(&rv0)[ch] + m * r.var[ch] * n / (n - 1.0))
            .collect();
        assert_close(
            &format!("{name}: running mean"),
            &rm.to_vec(),
            &want_rm,
            1e-5,
            1e-5,
        );
        assert_close(
            &format!("{name}: running var (unbiased)"),
            &rv.to_vec(),
            &want_rv,
            1e-5,
            1e-5,
        );
    }
}

/// Batch norm with its activation fused (`batch_norm_activated`, what `Sequential` runs for
/// `BatchNorm -> ReLU / LeakyReLU`): forward and first-order gradients against the f64 loop
/// (the activation's mask on the recomputed pre-activation), finite differences, exactly the
/// values of batch norm followed by the activation's own op, and the second-order gradient
/// (the rule's recorded path) equal to the unfused composite's.
#[test]
fn batch_norm_with_fused_activation_matches_batch_norm_then_activation() {
    use ganforge::ops::Activation;
    let mut rng = Rng::new(2020);
    let params = BatchNormParams::default();
    for (act, slope) in [(Activation::Relu, 0.0), (Activation::LeakyRelu(0.2), 0.2)] {
        for dims in [vec![9, 4], vec![3, 5, 6, 7]] {
            let c = dims[1];
            let inner: usize = dims[2..].iter().product();
            let x = gen(&mut rng, &dims, |r| 0.3 + 1.2 * r.normal());
            let gamma = uniform(&mut rng, &[c], 0.5, 1.5);
            let beta = normal(&mut rng, &[c], 0.5);
            let channel = move |i: usize| (i / inner) % c;
            let name = format!("batch_norm + {act:?} {dims:?}");
            let fused = move |t: &[Tensor]| {
                t[0].batch_norm_activated(None, Some(&t[1]), Some(&t[2]), true, params, act)
                    .unwrap()
            };
            check_op(
                &name,
                &fused,
                &[x.clone(), gamma.clone(), beta.clone()],
                &dims,
                &|xs, w| {
                    let zero = vec![0.0; w.len()];
                    let pre =
                        ref_norm(&xs[0], c, &channel, &xs[1], &xs[2], &channel, 1e-5, &zero).y;
                    let factor = |v: f64| if v > 0.0 { 1.0 } else { slope };
                    let w_pre: Vec<f64> = w.iter().zip(&pre).map(|(w, &p)| w * factor(p)).collect();
                    let r = ref_norm(&xs[0], c, &channel, &xs[1], &xs[2], &channel, 1e-5, &w_pre);
                    let y = pre.iter().map(|&p| p * factor(p)).collect();
                    (y, vec![r.dx, r.dgamma, r.dbeta])
                },
                // Finite differences below, on inputs kept away from the kink.
                Tol {
                    fd: None,
                    ..TOL_COMPOSED
                },
            );
            // Finite differences on a copy whose pre-activations all keep 0.05 away from the
            // kink (a 1e-3 step must not cross it); re-drawn until they do.
            while dims.len() == 2 {
                let cand = gen(&mut rng, &dims, |r| 0.3 + 1.2 * r.normal());
                let pre = cand
                    .batch_norm(None, Some(&gamma), Some(&beta), true, params)
                    .unwrap();
                if pre.to_vec().iter().all(|v| v.abs() > 0.05) {
                    check_gradients(
                        &format!("{name}: finite differences"),
                        &|t: &[Tensor]| weighted_sum(&fused(t), 7),
                        &[cand, gamma.clone(), beta.clone()],
                        1e-3,
                        2e-3,
                        2e-2,
                    );
                    break;
                }
            }
            // The same values as the two ops, forward and backward.
            let unfused = move |t: &[Tensor]| {
                let y = t[0]
                    .batch_norm(None, Some(&t[1]), Some(&t[2]), true, params)
                    .unwrap();
                match act {
                    Activation::LeakyRelu(s) => y.leaky_relu(s),
                    _ => y.relu(),
                }
            };
            let inputs = [x.clone(), gamma.clone(), beta.clone()];
            let run = |f: &dyn Fn(&[Tensor]) -> Tensor, create_graph: bool| {
                let leaves: Vec<Tensor> = inputs.iter().map(leaf).collect();
                let y = f(&leaves);
                let g =
                    autograd::grad(&[weighted_sum(&y, 3)], None, &leaves, create_graph).unwrap();
                (leaves, y, g)
            };
            let (_, yf, gf) = run(&fused, false);
            let (_, yu, gu) = run(&unfused, false);
            assert_close(
                &format!("{name}: forward = unfused"),
                &yf.to_vec(),
                &f64s(&yu),
                1e-6,
                1e-6,
            );
            for (i, (a, b)) in gf.iter().zip(&gu).enumerate() {
                let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
                assert_close(
                    &format!("{name}: grad {i} = unfused"),
                    &a.to_vec(),
                    &f64s(b),
                    1e-5,
                    1e-5,
                );
            }
            // Second order: d/d(inputs) of sum(dL/dx * u), recorded through the rule.
            let second = |f: &dyn Fn(&[Tensor]) -> Tensor| {
                let (leaves, _, g) = run(f, true);
                let gx = g[0].as_ref().unwrap();
                let h = weighted_sum(gx, 11);
                autograd::grad(&[h], None, &leaves, false).unwrap()
            };
            let (hf, hu) = (second(&fused), second(&unfused));
            // No path (None) counts as zeros: beta reaches dL/dx only through the mask.
            let values = |g: &Option<Tensor>, like: &Tensor| {
                g.as_ref()
                    .map_or(vec![0.0; like.elem_count()], |g| g.to_vec())
            };
            for (i, (a, b)) in hf.iter().zip(&hu).enumerate() {
                let (a, b) = (values(a, &inputs[i]), values(b, &inputs[i]));
                let b: Vec<f64> = b.iter().map(|&v| v as f64).collect();
                assert_close(
                    &format!("{name}: second-order grad {i}"),
                    &a,
                    &b,
                    1e-4,
                    1e-4,
                );
            }
        }
    }
}

#[test]
fn batch_norm_eval_uses_running_stats() {
    let mut rng = Rng::new(1919);
    let params = BatchNormParams::default();
    for dims in [vec![7, 5], vec![3, 5, 7, 9]] {
        let c = dims[1];
        let inner: usize = dims[2..].iter().product();
        let x = normal(&mut rng, &dims, 1.5);
        let gamma = uniform(&mut rng, &[c], 0.5, 1.5);
        let beta = normal(&mut rng, &[c], 1.0);
        let rm = normal(&mut rng, &[c], 0.5);
        let rv = uniform(&mut rng, &[c], 0.5, 1.5);
        let (rm64, rv64) = (f64s(&rm), f64s(&rv));
        let eps = params.eps as f64;
        check_op(
            &format!("batch_norm eval {dims:?}"),
            &|t: &[Tensor]| {
                t[0].batch_norm(
                    Some(RunningStats {
                        mean: &rm,
                        var: &rv,
                    }),
                    Some(&t[1]),
                    Some(&t[2]),
                    false,
                    params,
                )
                .unwrap()
            },
            &[x, gamma, beta],
            &dims,
            &|xs, w| {
                let (x, g, b) = (&xs[0], &xs[1], &xs[2]);
                let mut y = vec![0.0; x.len()];
                let mut dx = vec![0.0; x.len()];
                let (mut dg, mut db) = (vec![0.0; c], vec![0.0; c]);
                for i in 0..x.len() {
                    let ch = (i / inner) % c;
                    let inv = 1.0 / (rv64[ch] + eps).sqrt();
                    let xhat = (x[i] - rm64[ch]) * inv;
                    y[i] = xhat * g[ch] + b[ch];
                    dx[i] = w[i] * g[ch] * inv;
                    dg[ch] += w[i] * xhat;
                    db[ch] += w[i];
                }
                (y, vec![dx, dg, db])
            },
            TOL_COMPOSED,
        );
        // Eval never touches the running statistics.
        assert_close(
            "eval: running mean unchanged",
            &rm.to_vec(),
            &rm64,
            0.0,
            0.0,
        );
        assert_close("eval: running var unchanged", &rv.to_vec(), &rv64, 0.0, 0.0);
    }
}

#[test]
fn layer_norm_over_trailing_dims() {
    let mut rng = Rng::new(2020);
    // (normalized dims, affine?)
    for (k, affine) in [(2usize, true), (1, true), (1, false), (3, true)] {
        let x = gen(&mut rng, &D3, |r| -0.4 + 1.3 * r.normal());
        let pd: Vec<usize> = D3[3 - k..].to_vec();
        let size = numel(&pd);
        let mut inputs = vec![x];
        if affine {
            inputs.push(uniform(&mut rng, &pd, 0.5, 1.5));
            inputs.push(normal(&mut rng, &pd, 1.0));
        }
        check_op(
            &format!("layer_norm last {k} dims affine={affine}"),
            &|t: &[Tensor]| t[0].layer_norm(k, t.get(1), t.get(2), 1e-5).unwrap(),
            &inputs,
            &D3,
            &|xs, w| {
                let (ones, zeros) = (vec![1.0; size], vec![0.0; size]);
                let (g, b) = if affine {
                    (&xs[1], &xs[2])
                } else {
                    (&ones, &zeros)
                };
                let r = ref_norm(
                    &xs[0],
                    105 / size,
                    &|i| i / size,
                    g,
                    b,
                    &|i| i % size,
                    1e-5,
                    w,
                );
                let mut grads = vec![r.dx];
                if affine {
                    grads.extend([r.dgamma, r.dbeta]);
                }
                (r.y, grads)
            },
            TOL_COMPOSED,
        );
    }
}

#[test]
fn instance_norm_per_plane() {
    let mut rng = Rng::new(2121);
    let dims = [3, 5, 7, 9];
    let (c, hw) = (5, 63);
    let x = gen(&mut rng, &dims, |r| 0.3 + 2.0 * r.normal());
    let gamma = uniform(&mut rng, &[c], 0.5, 1.5);
    let beta = normal(&mut rng, &[c], 1.0);
    check_op(
        "instance_norm",
        &|t: &[Tensor]| t[0].instance_norm(Some(&t[1]), Some(&t[2]), 1e-5).unwrap(),
        &[x.clone(), gamma, beta],
        &dims,
        &|xs, w| {
            let r = ref_norm(
                &xs[0],
                3 * c,
                &|i| i / hw,
                &xs[1],
                &xs[2],
                &|i| (i / hw) % c,
                1e-5,
                w,
            );
            (r.y, vec![r.dx, r.dgamma, r.dbeta])
        },
        TOL_COMPOSED,
    );
    check_op(
        "instance_norm without affine",
        &|t: &[Tensor]| t[0].instance_norm(None, None, 1e-5).unwrap(),
        &[x],
        &dims,
        &|xs, w| {
            let r = ref_norm(&xs[0], 3 * c, &|i| i / hw, &[1.0], &[0.0], &|_| 0, 1e-5, w);
            (r.y, vec![r.dx])
        },
        TOL_COMPOSED,
    );
}

#[test]
fn dropout_seeded_mask_rate_scale_and_eval() {
    let mut rng = Rng::new(2222);
    let dims = [101, 99];
    let p = 0.3f32;
    let x = leaf(&uniform(&mut rng, &dims, 0.5, 1.5)); // never 0: zeros in y are dropped
    let y1 = x.dropout(p, true, &mut Rng::new(42)).unwrap();
    let y2 = x.dropout(p, true, &mut Rng::new(42)).unwrap();
    let y3 = x.dropout(p, true, &mut Rng::new(43)).unwrap();
    assert_eq!(y1.to_vec(), y2.to_vec(), "same seed, same mask");
    assert_ne!(y1.to_vec(), y3.to_vec(), "another seed, another mask");

    let (xv, yv) = (f64s(&x), y1.to_vec());
    let zeros = yv.iter().filter(|&&v| v == 0.0).count();
    let frac = zeros as f64 / yv.len() as f64;
    // 9999 draws: the standard error is 0.0046; allow 4 of them.
    assert!(
        (frac - p as f64).abs() < 0.02,
        "fraction dropped {frac}, want ~{p}"
    );
    // Survivors are scaled by 1 / (1 - p).
    let want: Vec<f64> = (0..yv.len())
        .map(|i| {
            if yv[i] == 0.0 {
                0.0
            } else {
                xv[i] / (1.0 - p as f64)
            }
        })
        .collect();
    assert_close("dropout scale", &yv, &want, 1e-6, 1e-6);
    // Gradient: w / (1 - p) where kept, 0 where dropped.
    let seed = 5;
    let w = weights(seed, yv.len());
    let g = autograd::grad(
        &[weighted_sum(&y1, seed)],
        None,
        std::slice::from_ref(&x),
        false,
    )
    .unwrap()[0]
        .clone()
        .unwrap();
    let want: Vec<f64> = (0..yv.len())
        .map(|i| {
            if yv[i] == 0.0 {
                0.0
            } else {
                w[i] / (1.0 - p as f64)
            }
        })
        .collect();
    assert_close("dropout grad", &g.to_vec(), &want, 1e-6, 1e-5);

    // Eval (and p = 0) is the identity.
    let e = x.dropout(p, false, &mut Rng::new(42)).unwrap();
    assert_close("dropout eval", &e.to_vec(), &xv, 0.0, 0.0);
    let z = x.dropout(0.0, true, &mut Rng::new(42)).unwrap();
    assert_close("dropout p=0", &z.to_vec(), &xv, 0.0, 0.0);
    // A larger p drops more.
    let y9 = x.dropout(0.9, true, &mut Rng::new(1)).unwrap().to_vec();
    let frac9 = y9.iter().filter(|&&v| v == 0.0).count() as f64 / y9.len() as f64;
    assert!((frac9 - 0.9).abs() < 0.02, "p = 0.9 dropped {frac9}");
}

// ============================================================================================
// Large tensors: the parallel (rayon) kernel paths, above cpu::PAR_THRESHOLD = 32768 elements
// ============================================================================================

/// Forward and reference-VJP checks only: finite differences over ~40k elements are too slow.
const TOL_LARGE: Tol = Tol {
    fwd: (1e-5, 1e-5),
    bwd: (1e-5, 1e-4),
    fd: None,
};

#[test]
fn large_tensors_take_the_parallel_paths() {
    let mut rng = Rng::new(2929);
    let big = [5, 91, 83]; // 37765 elements
    let n = numel(&big);
    let a = normal(&mut rng, &big, 1.0);
    let b = signed_mag(&mut rng, &big, 0.5, 2.0);
    let col = signed_mag(&mut rng, &[91, 1], 0.5, 2.0);
    let s = normal(&mut rng, &[], 1.0);
    // Binary: same shape (fast path), broadcast column (strided path), scalar rhs.
    let bins: Vec<(char, &str, Tensor, Vec<usize>)> = vec![
        ('*', "mul same shape", b.clone(), big.to_vec()),
        ('/', "div by a broadcast column", col.clone(), vec![91, 1]),
        ('-', "sub a scalar", s.clone(), vec![]),
    ];
    for (sym, name, rhs, rd) in bins {
        check_op(
            &format!("large {name}"),
            &|t: &[Tensor]| match sym {
                '*' => t[0].mul(&t[1]).unwrap(),
                '/' => t[0].div(&t[1]).unwrap(),
                _ => t[0].sub(&t[1]).unwrap(),
            },
            &[a.clone(), rhs],
            &big,
            &|xs, w| ref_binary(sym, &xs[0], &big, &xs[1], &rd, &big, w),
            TOL_LARGE,
        );
    }
    check_op(
        "large tanh",
        &|t: &[Tensor]| t[0].tanh(),
        std::slice::from_ref(&a),
        &big,
        &|xs, w| {
            let y = xs[0].iter().map(|v| v.tanh()).collect();
            let dx = (0..n)
                .map(|i| w[i] * (1.0 - xs[0][i].tanh().powi(2)))
                .collect();
            (y, vec![dx])
        },
        TOL_LARGE,
    );
    check_op(
        "large permute [2,0,1]",
        &|t: &[Tensor]| t[0].permute(&[2, 0, 1]).unwrap(),
        std::slice::from_ref(&a),
        &[83, 5, 91],
        &|xs, w| {
            ref_gather(xs, w, |o| {
                let oi = unravel(o, &[83, 5, 91]);
                Some((0, ravel(&[oi[1], oi[2], oi[0]], &big)))
            })
        },
        TOL_LARGE,
    );
    check_op(
        "large broadcast_to",
        &|t: &[Tensor]| t[0].broadcast_to(big.to_vec()).unwrap(),
        std::slice::from_ref(&col),
        &big,
        &|xs, w| {
            ref_gather(xs, w, |o| {
                Some((0, bcast_ravel(&unravel(o, &big), &[91, 1])))
            })
        },
        TOL_LARGE,
    );
    check_op(
        "large sum over dims [0, 2]",
        &|t: &[Tensor]| t[0].sum(&[0, 2], false).unwrap(),
        std::slice::from_ref(&a),
        &[91],
        &|xs, w| {
            let (map, n_out) = reduce_map(&big, &[0, 2]);
            let mut y = vec![0.0; n_out];
            for (i, &v) in xs[0].iter().enumerate() {
                y[map[i]] += v;
            }
            (y, vec![map.iter().map(|&o| w[o]).collect()])
        },
        TOL_LARGE,
    );
    // 3 * 181 * 71 = 38553 output elements.
    let (ad, bd) = ([3, 181, 67], [67, 71]);
    let ma = normal(&mut rng, &ad, 1.0);
    let mb = normal(&mut rng, &bd, 1.0);
    check_op(
        "large matmul [3,181,67] @ [67,71]",
        &|t: &[Tensor]| t[0].matmul(&t[1]).unwrap(),
        &[ma, mb],
        &[3, 181, 71],
        &|xs, w| {
            let (y, da, db) = ref_matmul(&xs[0], &ad, &xs[1], &bd, w);
            (y, vec![da, db])
        },
        Tol {
            fwd: (1e-4, 1e-4),
            bwd: (1e-3, 1e-4),
            fd: None,
        },
    );
}

// ============================================================================================
// Autodiff semantics
// ============================================================================================

#[test]
fn backward_accumulates_and_zero_grad_clears() {
    let mut rng = Rng::new(2323);
    let x = leaf(&normal(&mut rng, &[3, 5], 1.0));
    let seed = 3;
    let w = weights(seed, 15);
    let x64 = f64s(&x);
    // d/dx sum(w x^2) = 2 w x
    let once: Vec<f64> = (0..15).map(|i| 2.0 * w[i] * x64[i]).collect();
    let twice: Vec<f64> = once.iter().map(|v| 2.0 * v).collect();
    let loss = weighted_sum(&x.sqr().unwrap(), seed);
    assert!(x.grad().is_none());
    loss.backward().unwrap();
    assert_close(
        "after one backward",
        &x.grad().unwrap().to_vec(),
        &once,
        1e-6,
        1e-5,
    );
    loss.backward().unwrap();
    assert_close(
        "after two backwards",
        &x.grad().unwrap().to_vec(),
        &twice,
        1e-6,
        1e-5,
    );
    x.zero_grad();
    assert!(x.grad().is_none(), "zero_grad clears");
    weighted_sum(&x.sqr().unwrap(), seed).backward().unwrap();
    assert_close(
        "after zero_grad + backward",
        &x.grad().unwrap().to_vec(),
        &once,
        1e-6,
        1e-5,
    );
    // A leaf without requires_grad gets nothing.
    let c = normal(&mut rng, &[3, 5], 1.0);
    x.zero_grad();
    weighted_sum(&x.mul(&c).unwrap(), seed).backward().unwrap();
    assert!(c.grad().is_none());
    let want: Vec<f64> = (0..15).map(|i| w[i] * c.to_vec()[i] as f64).collect();
    assert_close(
        "grad of x*c",
        &x.grad().unwrap().to_vec(),
        &want,
        1e-6,
        1e-5,
    );
}

#[test]
fn no_grad_records_nothing() {
    let mut rng = Rng::new(2424);
    let x = leaf(&normal(&mut rng, &[3, 5], 1.0));
    {
        let _guard = autograd::no_grad();
        assert!(!autograd::is_grad_enabled());
        let y = x.mul(&x).unwrap().exp().sum_all().unwrap();
        assert!(y.op().is_none(), "no_grad result has no op");
        assert!(!y.is_tracked());
        // Every kind of op result, not just the last one.
        let w = leaf(&normal(&mut rng, &[5, 3], 1.0));
        let results: Vec<(&str, Tensor)> = vec![
            ("mul", x.mul(&x).unwrap()),
            ("exp", x.exp()),
            ("sum keepdim", x.sum(&[1], true).unwrap()),
            ("max keepdim", x.max(1, true).unwrap()),
            ("matmul", x.matmul(&w).unwrap()),
            ("reshape", x.reshape([5, 3]).unwrap()),
            ("permute", x.t().unwrap()),
            ("broadcast_to", x.broadcast_to([2, 3, 5]).unwrap()),
            (
                "concat",
                Tensor::concat(&[x.clone(), x.clone()], 0).unwrap(),
            ),
            ("narrow", x.narrow(1, 1, 2).unwrap()),
            ("pad_dim", x.pad_dim(1, 1, 0).unwrap()),
            ("index_select", x.index_select(0, &[2, 0]).unwrap()),
            (
                "index_add",
                x.index_add_into_zeros(0, &[1, 0, 1], 4).unwrap(),
            ),
        ];
        for (name, r) in results {
            assert!(
                r.op().is_none() && !r.is_tracked(),
                "{name} recorded under no_grad"
            );
        }
        // Values are still computed.
        let want: f64 = f64s(&x).iter().map(|v| (v * v).exp()).sum();
        assert_close("no_grad value", &y.to_vec(), &[want], 1e-4, 1e-5);
        assert!(y.backward().is_err(), "nothing to backpropagate");
    }
    assert!(autograd::is_grad_enabled(), "guard restores grad mode");
    let y = x.mul(&x).unwrap();
    assert!(y.op().is_some(), "recording resumes after the guard");
    // A result of untracked inputs is never recorded.
    let c = normal(&mut rng, &[3, 5], 1.0);
    assert!(c.exp().op().is_none());
}

#[test]
fn detach_cuts_the_graph() {
    let mut rng = Rng::new(2525);
    let x = leaf(&normal(&mut rng, &[3, 5], 1.0));
    let d = x.detach();
    assert!(d.op().is_none() && !d.requires_grad() && !d.is_tracked());
    assert_eq!(d.to_vec(), x.to_vec());
    // y = detach(x) * x: only the second factor passes gradient, so dy/dx = w x, not 2 w x.
    let seed = 4;
    let w = weights(seed, 15);
    let y = weighted_sum(&d.mul(&x).unwrap(), seed);
    let g = autograd::grad(&[y], None, std::slice::from_ref(&x), false).unwrap()[0]
        .clone()
        .unwrap();
    let want: Vec<f64> = f64s(&x).iter().zip(&w).map(|(v, wi)| wi * v).collect();
    assert_close("grad through detach", &g.to_vec(), &want, 1e-6, 1e-5);
    // Detaching a graph result: nothing upstream is reachable.
    let z = x.exp().detach().sum_all().unwrap();
    assert!(autograd::grad(&[z], None, std::slice::from_ref(&x), false).is_err());
}

#[test]
fn grad_of_unused_input_is_none() {
    let mut rng = Rng::new(2626);
    let x = leaf(&normal(&mut rng, &[3, 5], 1.0));
    let z = leaf(&normal(&mut rng, &[5], 1.0));
    let y = weighted_sum(&x.exp(), 8);
    let g = autograd::grad(&[y], None, &[x.clone(), z.clone()], false).unwrap();
    assert!(g[0].is_some());
    assert!(g[1].is_none(), "z does not feed y");
    let w = weights(8, 15);
    let want: Vec<f64> = f64s(&x)
        .iter()
        .zip(&w)
        .map(|(v, wi)| wi * v.exp())
        .collect();
    assert_close(
        "d/dx exp",
        &g[0].clone().unwrap().to_vec(),
        &want,
        1e-6,
        1e-5,
    );
}

#[test]
fn node_used_twice_gets_both_contributions() {
    let mut rng = Rng::new(2727);
    let x = leaf(&normal(&mut rng, &[3, 5, 7], 1.0));
    let seed = 12;
    let w = weights(seed, 105);
    // y = x*x + x: dy/dx = 2x + 1 (three uses of x).
    let y = x.mul(&x).unwrap().add(&x).unwrap();
    let g = autograd::grad(
        &[weighted_sum(&y, seed)],
        None,
        std::slice::from_ref(&x),
        false,
    )
    .unwrap()[0]
        .clone()
        .unwrap();
    let want: Vec<f64> = f64s(&x)
        .iter()
        .zip(&w)
        .map(|(v, wi)| wi * (2.0 * v + 1.0))
        .collect();
    assert_close("x*x + x", &g.to_vec(), &want, 1e-6, 1e-5);
    // An intermediate node used twice: h = tanh(x); y = h * h + h -> (2h + 1)(1 - h^2).
    let h = x.tanh();
    let y = h.mul(&h).unwrap().add(&h).unwrap();
    let g = autograd::grad(
        &[weighted_sum(&y, seed)],
        None,
        std::slice::from_ref(&x),
        false,
    )
    .unwrap()[0]
        .clone()
        .unwrap();
    let want: Vec<f64> = f64s(&x)
        .iter()
        .zip(&w)
        .map(|(v, wi)| {
            let h = v.tanh();
            wi * (2.0 * h + 1.0) * (1.0 - h * h)
        })
        .collect();
    assert_close("h*h + h", &g.to_vec(), &want, 1e-6, 1e-5);
    // Also through backward().
    weighted_sum(&x.mul(&x).unwrap().add(&x).unwrap(), seed)
        .backward()
        .unwrap();
    let want: Vec<f64> = f64s(&x)
        .iter()
        .zip(&w)
        .map(|(v, wi)| wi * (2.0 * v + 1.0))
        .collect();
    assert_close(
        "x*x + x via backward",
        &x.grad().unwrap().to_vec(),
        &want,
        1e-6,
        1e-5,
    );
}

#[test]
fn backward_on_non_scalar_is_an_error() {
    let mut rng = Rng::new(2828);
    let x = leaf(&normal(&mut rng, &[3, 5], 1.0));
    let y = x.exp();
    let msg = err_text(y.backward());
    assert_mentions(&msg, &["scalar", "[3, 5]"]);
    assert!(x.grad().is_none(), "a failed backward leaves .grad alone");
    // A one-element, non-0-dim tensor is fine.
    x.sum(&[0, 1], true).unwrap().backward().unwrap();
    assert_close(
        "sum keepdim backward",
        &x.grad().unwrap().to_vec(),
        &[1.0; 15],
        0.0,
        0.0,
    );
}

// ============================================================================================
// Errors, not panics
// ============================================================================================

#[test]
fn shape_mismatch_errors_name_op_and_both_shapes() {
    let a = Tensor::zeros([3, 5], &Default::default());
    let b = Tensor::zeros([4, 5], &Default::default());
    type Bin = fn(&Tensor, &Tensor) -> ganforge::Result<Tensor>;
    let ops: [(&str, Bin); 4] = [
        ("add", Tensor::add),
        ("sub", Tensor::sub),
        ("mul", Tensor::mul),
        ("div", Tensor::div),
    ];
    for (name, run) in ops {
        let msg = err_text(run(&a, &b));
        assert_mentions(&msg, &[name, "[3, 5]", "[4, 5]"]);
    }
    let c = Tensor::zeros([3, 5, 7], &Default::default());
    let d = Tensor::zeros([5, 1, 6], &Default::default());
    assert_mentions(&err_text(c.add(&d)), &["add", "[3, 5, 7]", "[5, 1, 6]"]);

    let m1 = Tensor::zeros([3, 5], &Default::default());
    let m2 = Tensor::zeros([4, 7], &Default::default());
    assert_mentions(&err_text(m1.matmul(&m2)), &["matmul", "[3, 5]", "[4, 7]"]);
    // Batch dims that do not broadcast: the message still names the full shapes.
    let b1 = Tensor::zeros([3, 5, 7], &Default::default());
    let b2 = Tensor::zeros([4, 7, 2], &Default::default());
    assert_mentions(
        &err_text(b1.matmul(&b2)),
        &["matmul", "[3, 5, 7]", "[4, 7, 2]"],
    );
    let v = Tensor::zeros([5], &Default::default());
    assert_mentions(
        &err_text(v.matmul(&m1.t().unwrap())),
        &["matmul", "[5]", "[5, 3]"],
    );

    let k1 = Tensor::zeros([3, 5, 7], &Default::default());
    let k2 = Tensor::zeros([3, 4, 6], &Default::default());
    assert_mentions(
        &err_text(Tensor::concat(&[k1.clone(), k2], 1)),
        &["concat", "[3, 5, 7]", "[3, 4, 6]"],
    );
    let k3 = Tensor::zeros([3, 5], &Default::default());
    assert_mentions(
        &err_text(Tensor::concat(&[k1.clone(), k3], 2)),
        &["concat", "[3, 5, 7]", "[3, 5]"],
    );
    assert!(Tensor::concat(&[], 0).is_err());

    // Losses on mismatched shapes.
    let p = Tensor::zeros([3, 5], &Default::default());
    let q = Tensor::zeros([5, 3], &Default::default());
    for (name, r) in [
        ("mse", p.mse(&q)),
        ("l1", p.l1(&q)),
        ("hinge", p.hinge(&q)),
        ("bce_with_logits", p.bce_with_logits(&q)),
    ] {
        assert_mentions(&err_text(r), &[name, "[3, 5]", "[5, 3]"]);
    }
    assert!(k1.reshape([4, 4]).is_err());
    assert_mentions(
        &err_text(k1.broadcast_to([3, 4, 7])),
        &["broadcast_to", "[3, 5, 7]", "[3, 4, 7]"],
    );
    assert!(
        k1.broadcast_to([5, 7]).is_err(),
        "cannot broadcast to fewer dims"
    );
}

#[test]
fn out_of_range_dims_and_indices_are_errors() {
    let x = Tensor::zeros([3, 5, 7], &Default::default());
    let checks: Vec<(&str, ganforge::Result<Tensor>)> = vec![
        ("sum", x.sum(&[3], false)),
        ("mean", x.mean(&[0, 3], true)),
        ("var", x.var(&[5], true, false)),
        ("max", x.max(3, false)),
        ("narrow", x.narrow(3, 0, 1)),
        ("narrow", x.narrow(1, 4, 2)),
        ("pad_dim", x.pad_dim(3, 1, 1)),
        ("index_select", x.index_select(3, &[0])),
        ("index_select", x.index_select(1, &[0, 5])),
        ("index_add", x.index_add_into_zeros(1, &[0, 1, 2, 3, 7], 7)),
        ("index_add", x.index_add_into_zeros(1, &[0, 1], 7)),
        ("permute", x.permute(&[0, 0, 1])),
        ("permute", x.permute(&[0, 1])),
        ("permute", x.permute(&[0, 1, 3])),
        ("transpose", x.transpose(0, 3)),
        ("squeeze", x.squeeze(1)),
        ("squeeze", x.squeeze(3)),
        ("unsqueeze", x.unsqueeze(4)),
        ("flatten", x.flatten(3)),
        ("layer_norm", x.layer_norm(4, None, None, 1e-5)),
        ("layer_norm", x.layer_norm(0, None, None, 1e-5)),
        ("instance_norm", x.instance_norm(None, None, 1e-5)),
        (
            "var",
            Tensor::zeros([1, 5], &Default::default()).var(&[0], true, false),
        ),
        ("t", Tensor::zeros([5], &Default::default()).t()),
    ];
    for (op, r) in checks {
        assert_mentions(&err_text(r), &[op]);
    }
    assert_mentions(&err_text(x.argmax(3)), &["argmax"]);
    let logits = Tensor::zeros([3, 5], &Default::default());
    assert_mentions(
        &err_text(logits.cross_entropy_with_logits(&[0, 5, 1])),
        &["cross_entropy_with_logits", "5"],
    );
    assert_mentions(
        &err_text(logits.cross_entropy_with_logits(&[0, 1])),
        &["cross_entropy_with_logits"],
    );
    assert_mentions(
        &err_text(logits.dropout(1.0, true, &mut Rng::new(0))),
        &["dropout"],
    );
    assert_mentions(
        &err_text(logits.dropout(-0.1, true, &mut Rng::new(0))),
        &["dropout"],
    );
    // batch_norm: eval without running stats, parameters of the wrong size, 1 value/channel.
    let bn = Tensor::zeros([3, 5, 7], &Default::default());
    let p = BatchNormParams::default();
    assert_mentions(
        &err_text(bn.batch_norm(None, None, None, false, p)),
        &["batch_norm"],
    );
    let g4 = Tensor::ones([4], &Default::default());
    assert_mentions(
        &err_text(bn.batch_norm(None, Some(&g4), None, true, p)),
        &["batch_norm", "[3, 5, 7]", "[4]"],
    );
    let one = Tensor::zeros([1, 5], &Default::default());
    assert_mentions(
        &err_text(one.batch_norm(None, None, None, true, p)),
        &["batch_norm"],
    );
}

/// Matmul with operands stored transposed (the layouts linear and the matmul backward use):
/// forward against an f64 loop over the *stored* layouts, gradients by finite differences,
/// batched with a broadcast rhs.
#[test]
fn matmul_with_transposed_layouts() {
    use ganforge::ops::MatmulLayout;
    let mut r = common::rng(930);
    let (b, m, k, n) = (3, 5, 7, 4);
    for (lt, rt) in [(false, false), (false, true), (true, false), (true, true)] {
        let lhs_shape = if lt { vec![b, k, m] } else { vec![b, m, k] };
        let rhs_shape = if rt { vec![n, k] } else { vec![k, n] };
        let lhs = common::randn(&mut r, &lhs_shape, 1.0);
        let rhs = common::randn(&mut r, &rhs_shape, 1.0);
        let layout = MatmulLayout::new(lt, rt);
        let y = lhs.matmul_with(&rhs, layout).unwrap();
        assert_eq!(y.dims(), &[b, m, n]);
        let (a, w) = (f64s(&lhs), f64s(&rhs));
        let mut want = vec![0.0f64; b * m * n];
        for bi in 0..b {
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0.0;
                    for p in 0..k {
                        let av = if lt {
                            a[(bi * k + p) * m + i]
                        } else {
                            a[(bi * m + i) * k + p]
                        };
                        let bv = if rt { w[j * k + p] } else { w[p * n + j] };
                        s += av * bv;
                    }
                    want[(bi * m + i) * n + j] = s;
                }
            }
        }
        assert_close(
            &format!("matmul layout ({lt}, {rt})"),
            &y.to_vec(),
            &want,
            1e-5,
            1e-4,
        );
        check_gradients(
            &format!("matmul layout ({lt}, {rt}) gradients"),
            &|t| weighted_sum(&t[0].matmul_with(&t[1], layout).unwrap(), 931),
            &[lhs, rhs],
            1e-2,
            2e-3,
            2e-3,
        );
    }
}

/// Inputs above the CPU kernels' parallel threshold (32768 elements), so the blocked parallel
/// paths of the broadcasting binary ops and of `sum` (per-task f64 partial sums) are checked
/// too, at odd sizes and the channel-broadcast patterns of batch norm and bias.
#[test]
fn large_sums_and_broadcasts_take_the_parallel_paths() {
    const BIG: Tol = Tol { fd: None, ..TOL };
    let d = [5usize, 37, 13, 17];
    let mut rng = Rng::new(405);
    for red in [
        vec![0, 2, 3],
        vec![0],
        vec![1, 3],
        vec![3],
        vec![0, 1, 2, 3],
    ] {
        let x = normal(&mut rng, &d, 1.0);
        let od = out_dims(&d, &red, true);
        check_op(
            &format!("sum over {red:?} of {d:?}"),
            &|t: &[Tensor]| t[0].sum(&red, true).unwrap(),
            &[x],
            &od,
            &|xs, w| {
                let (map, n_out) = reduce_map(&d, &red);
                let mut y = vec![0.0; n_out];
                for (i, &v) in xs[0].iter().enumerate() {
                    y[map[i]] += v;
                }
                (y, vec![map.iter().map(|&o| w[o]).collect()])
            },
            BIG,
        );
    }
    for bd in [
        vec![1, 37, 1, 1],
        vec![5, 1, 13, 17],
        vec![1, 1, 13, 1],
        vec![5, 37, 1, 1],
    ] {
        for (sym, name, run) in [
            (
                '+',
                "add",
                Tensor::add as fn(&Tensor, &Tensor) -> ganforge::Result<Tensor>,
            ),
            ('*', "mul", Tensor::mul),
        ] {
            let a = normal(&mut rng, &d, 1.0);
            let b = signed_mag(&mut rng, &bd, 0.5, 2.0);
            check_op(
                &format!("{name} {d:?} with {bd:?}"),
                &|t: &[Tensor]| run(&t[0], &t[1]).unwrap(),
                &[a.clone(), b.clone()],
                &d,
                &|xs, w| ref_binary(sym, &xs[0], &d, &xs[1], &bd, &d, w),
                BIG,
            );
            // And with the operands swapped (a constant left operand along the rows).
            check_op(
                &format!("{name} {bd:?} with {d:?}"),
                &|t: &[Tensor]| run(&t[0], &t[1]).unwrap(),
                &[b, a],
                &d,
                &|xs, w| ref_binary(sym, &xs[0], &bd, &xs[1], &d, &d, w),
                BIG,
            );
        }
    }
}
