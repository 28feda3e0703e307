//! Shared tools of the GPU tests (`tests/gpu_*.rs`): finding the GPU (or skipping), moving
//! tensors, and the parity check every kernel test uses: the same function on CPU tensors and
//! on their GPU copies, forward values and the gradients of a weighted sum, compared with the
//! one rule of `tests/common` (`|gpu - cpu| <= atol + rtol * |cpu|`).
#![allow(dead_code)]

use crate::common::assert_close;
use ganforge::{autograd, Device, Rng, Tensor};

/// The GPU, or `None` after printing why the test is skipped. With `GANFORGE_REQUIRE_GPU=1`
/// (set by `.ci/run`, which installs lavapipe) a missing GPU fails the test instead.
pub fn gpu_or_skip(test: &str) -> Option<Device> {
    match Device::gpu() {
        Ok(d) => Some(d),
        Err(e) => {
            let required = std::env::var("GANFORGE_REQUIRE_GPU").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{test}: GANFORGE_REQUIRE_GPU=1 but there is no GPU: {e}"
            );
            eprintln!(
                "skipping {test}: no GPU adapter ({e}); install mesa-vulkan-drivers for lavapipe"
            );
            None
        }
    }
}

/// `t` copied to `dev` (a leaf).
pub fn on(dev: &Device, t: &Tensor) -> Tensor {
    t.to_device(dev).expect("to_device")
}

/// A leaf on `dev` that requires a gradient.
pub fn leaf_on(dev: &Device, t: &Tensor) -> Tensor {
    let l = on(dev, t);
    l.set_requires_grad(true);
    l
}

/// `sum(y * w)` with fixed random weights `w` (made on the host, moved to y's device), so a
/// wrong gradient cannot hide behind symmetry.
pub fn weighted_sum(y: &Tensor, seed: u64) -> Tensor {
    let mut r = Rng::new(seed);
    let w = Tensor::rand_uniform(-1.0, 1.0, y.dims().to_vec(), &mut r, &Device::Cpu);
    y.mul(&on(&y.device(), &w)).unwrap().sum_all().unwrap()
}

/// Asserts a GPU tensor matches a CPU one (same shape, values within `atol + rtol |cpu|`).
pub fn assert_matches(what: &str, gpu: &Tensor, cpu: &Tensor, atol: f64, rtol: f64) {
    assert_eq!(gpu.dims(), cpu.dims(), "{what}: shapes differ");
    assert!(gpu.device().is_gpu(), "{what}: result is not on the GPU");
    let want: Vec<f64> = cpu.to_vec().iter().map(|&v| v as f64).collect();
    assert_close(what, &gpu.try_to_vec().unwrap(), &want, atol, rtol);
}

/// Runs `f` on `inputs` (CPU) and on their copies on `gpu`: the outputs must match, and so
/// must the gradients of `weighted_sum(f(inputs))` with respect to every input (computed by
/// autodiff on each device, so the GPU backward kernels are exercised too).
pub fn check_parity(
    what: &str,
    gpu: &Device,
    inputs: &[Tensor],
    f: &dyn Fn(&[Tensor]) -> ganforge::Result<Tensor>,
    atol: f64,
    rtol: f64,
) {
    let cpu_leaves: Vec<Tensor> = inputs.iter().map(|t| leaf_on(&Device::Cpu, t)).collect();
    let gpu_leaves: Vec<Tensor> = inputs.iter().map(|t| leaf_on(gpu, t)).collect();
    let y_cpu = f(&cpu_leaves).unwrap_or_else(|e| panic!("{what} (cpu): {e}"));
    let y_gpu = f(&gpu_leaves).unwrap_or_else(|e| panic!("{what} (gpu): {e}"));
    assert_matches(&format!("{what}: forward"), &y_gpu, &y_cpu, atol, rtol);
    let g_cpu = autograd::grad(&[weighted_sum(&y_cpu, 99)], None, &cpu_leaves, false).unwrap();
    let g_gpu = autograd::grad(&[weighted_sum(&y_gpu, 99)], None, &gpu_leaves, false).unwrap();
    for (i, (gc, gg)) in g_cpu.iter().zip(&g_gpu).enumerate() {
        match (gc, gg) {
            (Some(gc), Some(gg)) => {
                assert_matches(&format!("{what}: d/d input {i}"), gg, gc, atol, rtol)
            }
            // Every input given here is differentiated: none may come back without a gradient.
            (None, None) => panic!("{what}: input {i} has no gradient on either device"),
            _ => panic!("{what}: input {i} has a gradient on one device only"),
        }
    }
}
