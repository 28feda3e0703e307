//! The checks `tests/profile.rs` (CPU) and `tests/gpu_profile.rs` (GPU) apply to a profile:
//! every convolution and matmul row's FLOPs against the formula written out here again from
//! its shapes, and the rows against the step measured independently by the wall clock; and
//! running the binary.
#![allow(dead_code)]

use ganforge::gan::ModelKind;
use ganforge::profile::{Phase, Row, StepProfile};
use std::process::Command;

/// Runs the `ganforge` binary with `args`, fails the test unless it succeeds, and returns its
/// standard output.
pub fn run_ganforge(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ganforge"))
        .args(args)
        .output()
        .expect("run ganforge");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ganforge {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Fails the test, naming `what`, unless `text` contains every one of `wants`.
pub fn assert_contains_all(what: &str, text: &str, wants: &[&str]) {
    for want in wants {
        assert!(text.contains(want), "{what}: no `{want}` in\n{text}");
    }
}

/// FLOPs of one call of a convolution or matmul row, from its input and output shapes alone
/// (written here independently of `src/ops`), or `None` for other ops.
pub fn formula_flops(row: &Row) -> Option<f64> {
    let p = |dims: &[usize]| dims.iter().map(|&d| d as f64).product::<f64>();
    let (i, o) = (&row.inputs, &row.output);
    let op = row.op.split(' ').next().unwrap();
    Some(match op {
        // x [N, C_in, H, W], w [C_out, C_in, KH, KW] -> [N, C_out, OH, OW]:
        // 2 * N * C_out * OH * OW * C_in * KH * KW.
        "conv2d" => 2.0 * p(o) * p(&i[1][1..]),
        // x [N, C_in, H, W], gy [N, C_out, OH, OW] -> dw [C_out, C_in, KH, KW]: the forward's
        // 2 * N * C_out * OH * OW * C_in * KH * KW.
        "conv2d_weight_grad" => 2.0 * p(&i[1]) * p(&o[1..]),
        // x [N, C_in, H, W], w [C_in, C_out, KH, KW]: every input pixel times every tap,
        // 2 * N * C_in * H * W * C_out * KH * KW.
        "conv_transpose2d" => 2.0 * p(&i[0]) * p(&i[1][1..]),
        // out [.., M, N] = lhs [.., M, K] (or stored [.., K, M]) x rhs: 2 * batch * M * N * K,
        // K = the lhs matrix's elements / M whichever way it is stored.
        "matmul" => {
            let m = o[o.len() - 2] as f64;
            let lhs = &i[0];
            let k = p(&lhs[lhs.len() - 2..]) / m;
            2.0 * p(o) * k
        }
        _ => return None,
    })
}

/// Checks a profile of `model`: formula FLOPs of every conv/matmul row, rows adding up to the
/// measured step within 10%, no op outside a timer, both parts of the step present, backward
/// ops on the layers of their forward ops, optimizer updates on the layers owning the
/// parameters. Returns the total FLOPs of the conv/matmul rows.
pub fn check_profile(model: ModelKind, p: &StepProfile) -> f64 {
    let what = format!("{model} on {}", p.device);
    assert!(
        p.untimed_ops.is_empty(),
        "{what}: ops outside any timer: {:?}",
        p.untimed_ops
    );
    assert!(
        p.step_ms > 0.0 && p.rows.iter().all(|r| r.ms >= 0.0),
        "{what}: times"
    );

    // 1. FLOPs: each conv and matmul row against the formula.
    let mut gemm_rows = 0;
    let mut gemm_flops = 0.0;
    for r in &p.rows {
        let Some(per_call) = formula_flops(r) else {
            continue;
        };
        gemm_rows += 1;
        gemm_flops += r.flops;
        let want = per_call * r.calls;
        assert!(
            (r.flops - want).abs() <= 1e-9 * want,
            "{what}: {} {} of {} ({:?} -> {:?}): profile says {} FLOPs, the formula {want}",
            r.op,
            r.phase.label(),
            r.layer,
            r.inputs,
            r.output,
            r.flops
        );
        assert!(
            r.flops > 0.0 && r.bytes > 0.0,
            "{what}: {} has no cost",
            r.op
        );
    }
    assert!(gemm_rows > 0, "{what}: no convolution or matmul rows");

    // 2. Time: the rows (ops and time outside ops) add up to the wall-clock step.
    let rows = p.rows_ms();
    assert!(
        (rows - p.step_ms).abs() <= 0.10 * p.step_ms,
        "{what}: rows add up to {rows:.3} ms, the measured step took {:.3} ms \
         (unattributed {:.3} ms)",
        p.step_ms,
        p.unattributed_ms()
    );

    // 3. Attribution.
    for section in ["D step", "G step"] {
        assert!(
            p.rows.iter().any(|r| r.section == section),
            "{what}: no rows in {section}"
        );
    }
    let has = |layer: &str, phase: Phase| {
        p.rows
            .iter()
            .any(|r| r.layer.starts_with(layer) && r.phase == phase && formula_flops(r).is_some())
    };
    for net in ["G.main.0 ", "D.main.0 "] {
        assert!(
            has(net, Phase::Forward) && has(net, Phase::Backward),
            "{what}: {net}has no forward or no backward GEMM rows"
        );
    }
    if model == ModelKind::WganGp {
        assert!(
            p.rows
                .iter()
                .any(|r| r.phase == Phase::DoubleBackward && r.layer.starts_with("D.")),
            "{what}: the gradient penalty's double backward is not on D's layers"
        );
    }
    let updates: Vec<&Row> = p
        .rows
        .iter()
        .filter(|r| r.phase == Phase::Optimizer && !r.is_outside_ops())
        .collect();
    assert!(!updates.is_empty(), "{what}: no optimizer rows");
    for r in updates {
        assert!(
            r.layer.starts_with("G.") || r.layer.starts_with("D."),
            "{what}: update {} of {:?} attributed to {}",
            r.op,
            r.output,
            r.layer
        );
    }
    gemm_flops
}
