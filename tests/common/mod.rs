//! Shared test tools: one comparison rule, random inputs, finite differences.
//!
//! Comparison rule (llm.c's `validate_result`): `|got - want| <= atol + rtol * |want|` for
//! every element; on failure the message lists the first mismatches and the max difference.
#![allow(dead_code)]

use ganforge::{autograd, Device, Rng, Tensor};

/// Asserts `got` (f32) matches `want` (f64 reference) elementwise.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} values, reference has {}",
        got.len(),
        want.len()
    );
    let mut bad = Vec::new();
    let mut max_diff = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = (g as f64 - w).abs();
        if d.is_nan() || d > atol + rtol * w.abs() {
            bad.push((i, g, w));
        }
        if d > max_diff || d.is_nan() {
            max_diff = d;
        }
    }
    if !bad.is_empty() {
        let first: Vec<String> = bad
            .iter()
            .take(8)
            .map(|(i, g, w)| format!("[{i}] got {g} want {w}"))
            .collect();
        panic!(
            "{what}: {} of {} values differ (atol {atol}, rtol {rtol}), max diff {max_diff:e}; first: {}",
            bad.len(),
            got.len(),
            first.join(", ")
        );
    }
}

/// Asserts two f32 tensors match (e.g. GPU vs CPU, or two paths through the engine).
pub fn assert_tensors_close(what: &str, got: &Tensor, want: &Tensor, atol: f64, rtol: f64) {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes differ");
    let want: Vec<f64> = want.to_vec().iter().map(|&v| v as f64).collect();
    assert_close(what, &got.to_vec(), &want, atol, rtol);
}

/// A fresh seed per call site and run is not wanted: tests are reproducible, but each test
/// uses its own seed so inputs differ between tests.
pub fn rng(seed: u64) -> Rng {
    Rng::new(seed)
}

/// Normal(0, std) tensor on the CPU.
pub fn randn(rng: &mut Rng, shape: &[usize], std: f32) -> Tensor {
    Tensor::randn(0.0, std, shape.to_vec(), rng, &Device::Cpu)
}

/// Uniform(lo, hi) tensor on the CPU.
pub fn uniform(rng: &mut Rng, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    Tensor::rand_uniform(lo, hi, shape.to_vec(), rng, &Device::Cpu)
}

/// A leaf that requires a gradient, with the given data.
pub fn leaf(t: &Tensor) -> Tensor {
    let l = t.detach();
    l.set_requires_grad(true);
    l
}

/// The data as f64.
pub fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_vec().iter().map(|&v| v as f64).collect()
}

/// Central finite differences of the scalar function `f` with respect to every element of
/// input `which`, evaluated in f32 by the engine (so `eps` must not be too small: 1e-2 suits
/// smooth functions of O(1) inputs).
pub fn numeric_grad(
    f: &dyn Fn(&[Tensor]) -> f64,
    inputs: &[Tensor],
    which: usize,
    eps: f32,
) -> Vec<f64> {
    let base = inputs[which].to_vec();
    let shape = inputs[which].dims().to_vec();
    let mut out = Vec::with_capacity(base.len());
    for i in 0..base.len() {
        let eval = |delta: f32| {
            let mut data = base.clone();
            data[i] += delta;
            let mut args = inputs.to_vec();
            args[which] = Tensor::from_vec(data, shape.clone()).unwrap();
            f(&args)
        };
        out.push((eval(eps) - eval(-eps)) / (2.0 * eps as f64));
    }
    out
}

/// Checks autodiff against finite differences for `loss = f(inputs)` (f must return a scalar
/// tensor): every input's analytic gradient must match within `atol + rtol * |fd|`.
pub fn check_gradients(
    what: &str,
    f: &dyn Fn(&[Tensor]) -> Tensor,
    inputs: &[Tensor],
    eps: f32,
    atol: f64,
    rtol: f64,
) {
    let leaves: Vec<Tensor> = inputs.iter().map(leaf).collect();
    let loss = f(&leaves);
    let grads = autograd::grad(&[loss], None, &leaves, false).unwrap();
    let scalar = |args: &[Tensor]| f(args).to_scalar().unwrap() as f64;
    for (i, g) in grads.iter().enumerate() {
        let g = g
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: no gradient for input {i}"));
        let fd = numeric_grad(&scalar, inputs, i, eps);
        assert_close(
            &format!("{what}: d/d input {i}"),
            &g.to_vec(),
            &fd,
            atol,
            rtol,
        );
    }
}

/// A scalar that weights every output element differently, so a wrong gradient cannot hide
/// behind symmetry: `sum(y * w)` with fixed random `w`.
pub fn weighted_sum(y: &Tensor, seed: u64) -> Tensor {
    let mut r = Rng::new(seed);
    let w = Tensor::rand_uniform(-1.0, 1.0, y.dims().to_vec(), &mut r, &Device::Cpu);
    y.mul(&w).unwrap().sum_all().unwrap()
}
