//! `ganforge profile` on the GPU: every family, narrow (ngf = ndf = 8, hidden 32) so a
//! software GPU (lavapipe) runs it in seconds; the same checks as on the CPU (formula FLOPs of
//! every convolution and matmul, rows adding up to the wall-clock step within 10%), the CPU
//! and GPU profiles side by side, and the binary with `--device both`.
//!
//! Without a GPU adapter each test prints why and passes, unless `GANFORGE_REQUIRE_GPU=1`.

mod common;
mod gpu_support;
mod profile_checks;

use ganforge::gan::ModelKind;
use ganforge::profile::{self, profile_step, ProfileOptions};
use ganforge::Device;
use gpu_support::gpu_or_skip;
use profile_checks::{assert_contains_all, check_profile, run_ganforge};

/// Batch 4, narrow networks, no warm-up step (the D-only steps of n_critic > 1 still run).
fn small(model: ModelKind) -> ProfileOptions {
    let mut o = ProfileOptions {
        warmup: 0,
        ..ProfileOptions::new(model, 4)
    };
    o.config.ngf = 8;
    o.config.ndf = 8;
    o.config.hidden = 32;
    o
}

#[test]
fn gpu_profiles_of_every_family_count_formula_flops_and_add_up() {
    let Some(gpu) = gpu_or_skip("gpu_profiles_of_every_family_count_formula_flops_and_add_up")
    else {
        return;
    };
    for model in ModelKind::ALL {
        let g = profile_step(&small(model), &gpu).unwrap_or_else(|e| panic!("{model}: {e}"));
        assert_eq!(g.device, "gpu");
        let gpu_flops = check_profile(model, &g);
        // The same step on the CPU does the same work: same rows, same FLOPs.
        let c = profile_step(&small(model), &Device::Cpu).unwrap();
        let cpu_flops = check_profile(model, &c);
        assert!(
            (gpu_flops - cpu_flops).abs() <= 1e-12 * cpu_flops,
            "{model}: conv/matmul FLOPs differ by device: gpu {gpu_flops}, cpu {cpu_flops}"
        );
        let table = profile::report::render(&[c, g]);
        assert_contains_all(
            model.name(),
            &table,
            &["cpu ms", "gpu ms", "G.main.0 ", "[G step]"],
        );
    }
}

#[test]
fn gpu_binary_shows_cpu_and_gpu_side_by_side() {
    if gpu_or_skip("gpu_binary_shows_cpu_and_gpu_side_by_side").is_none() {
        return;
    }
    let stdout = run_ganforge(&[
        "profile",
        "--model",
        "dcgan",
        "--batch-size",
        "2",
        "--device",
        "both",
        "--warmup",
        "0",
        "--ngf",
        "8",
        "--ndf",
        "8",
    ]);
    assert_contains_all(
        "profile --device both",
        &stdout,
        &[
            "cpu ms",
            "gpu ms",
            "gpu: ",
            "conv_transpose2d k4 s2 p1",
            "unattributed",
        ],
    );
}
