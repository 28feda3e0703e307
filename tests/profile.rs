//! `ganforge profile` on the CPU: for every model family, the FLOPs of each convolution and
//! matmul of a profiled training step equal the formula written out again in
//! `profile_checks` from the row's shapes, and the per-op rows add up to the step, timed
//! independently by the wall clock, within 10%. The binary runs once (table and JSON), and
//! once more to show the error for a GPU that is not there. GPU cases: `tests/gpu_profile.rs`.

mod profile_checks;

use ganforge::gan::{DataShape, ModelKind};
use ganforge::profile::{self, profile_step, ProfileOptions, StepProfile};
use ganforge::{Device, Error};
use profile_checks::{assert_contains_all, check_profile, run_ganforge};
use std::process::Command;

/// Quick settings: batch 8, one warm-up step.
fn quick(model: ModelKind) -> ProfileOptions {
    ProfileOptions {
        warmup: 1,
        ..ProfileOptions::new(model, 8)
    }
}

#[test]
fn every_family_profiles_with_formula_flops_and_rows_adding_up_to_the_step() {
    for model in ModelKind::ALL {
        let p =
            profile_step(&quick(model), &Device::Cpu).unwrap_or_else(|e| panic!("{model}: {e}"));
        assert_eq!((p.device.as_str(), p.model.as_str()), ("cpu", model.name()));
        let gemm = check_profile(model, &p);
        if model == ModelKind::Dcgan {
            // dcgan on 1x28x28 is workload W1 of perf.md, where PyTorch's FlopCounterMode
            // counts 17.93 GFLOP of convolutions and matmuls per step at batch 64; FLOPs are
            // linear in the batch.
            let want = 17.93e9 * 8.0 / 64.0;
            assert!(
                (gemm - want).abs() <= 2e-3 * want,
                "dcgan: {gemm} conv/matmul FLOPs per step, perf.md's W1 gives {want}"
            );
        }
        // The table names every layer and the totals.
        let table = profile::report::render(std::slice::from_ref(&p));
        assert_contains_all(
            model.name(),
            &table,
            &[
                "[D step]",
                "[G step]",
                "G.main.0 ",
                "D.main.0 ",
                "unattributed",
            ],
        );
    }
}

#[test]
fn averaged_steps_count_the_same_work_per_step() {
    let one = profile_step(&quick(ModelKind::Dcgan), &Device::Cpu).unwrap();
    let two = profile_step(
        &ProfileOptions {
            steps: 2,
            ..quick(ModelKind::Dcgan)
        },
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(two.step_ms_each.len(), 2);
    assert_eq!(one.rows.len(), two.rows.len());
    for (a, b) in one.rows.iter().zip(&two.rows) {
        assert_eq!(
            (&a.layer, &a.op, a.calls, a.flops),
            (&b.layer, &b.op, b.calls, b.flops)
        );
    }
    check_profile(ModelKind::Dcgan, &two);
}

#[test]
fn bad_settings_are_refused_with_what_to_change() {
    let err = |opts: ProfileOptions| profile_step(&opts, &Device::Cpu).unwrap_err().to_string();
    let e = err(ProfileOptions::new(ModelKind::Dcgan, 0));
    assert!(e.contains("batch size"), "{e}");
    let e = err(ProfileOptions::for_data(
        ModelKind::Cgan,
        4,
        DataShape::image(1, 28, 28, 0),
    ));
    assert!(e.contains("classes"), "{e}");
    match profile_step(
        &ProfileOptions::for_data(ModelKind::Dcgan, 4, DataShape::image(1, 30, 30, 10)),
        &Device::Cpu,
    ) {
        Err(Error::InvalidParam { op: "model", msg }) => assert!(msg.contains("28x28"), "{msg}"),
        other => panic!("dcgan on 30x30: {:?}", other.map(|p| p.model)),
    }
}

#[test]
fn the_binary_prints_the_table_and_writes_json() {
    let json = std::env::temp_dir().join(format!("ganforge_profile_{}.json", std::process::id()));
    let stdout = run_ganforge(&[
        "profile",
        "--model",
        "dcgan",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        // One warm-up step, so first-use costs (the thread pool, the buffer pool) are out of
        // the step whose rows must add up.
        "--warmup",
        "1",
        "--ngf",
        "8",
        "--ndf",
        "8",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_contains_all(
        "profile",
        &stdout,
        &[
            "G.main.0 ConvTranspose2d",
            "conv_transpose2d k7 s1 p0",
            "conv2d k4 s2 p1",
            "conv2d_weight_grad",
            "cpu ms",
            "GFLOP/s",
            "unattributed (step - rows)",
            "step, measured (wall clock)",
        ],
    );
    let text = std::fs::read_to_string(&json).unwrap();
    std::fs::remove_file(&json).ok();
    let profiles: Vec<StepProfile> = serde_json::from_str(&text).unwrap();
    assert_eq!(profiles.len(), 1);
    check_profile(ModelKind::Dcgan, &profiles[0]);

    let help = run_ganforge(&["profile", "--help"]);
    assert!(help.contains("2*N*C_out*H_out*W_out*C_in*KH*KW"), "{help}");
}

/// `--device gpu` with no adapter (no backend wgpu can use: Metal is only built on macOS)
/// fails with wgpu's reason and a hint, before any work.
#[cfg(not(target_os = "macos"))]
#[test]
fn the_binary_explains_a_missing_gpu() {
    let out = Command::new(env!("CARGO_BIN_EXE_ganforge"))
        .args(["profile", "--device", "gpu", "--batch-size", "2"])
        .env("WGPU_BACKEND", "metal")
        .output()
        .expect("run ganforge");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no usable GPU adapter"), "{stderr}");
    assert!(stderr.contains("--device cpu"), "{stderr}");
}
