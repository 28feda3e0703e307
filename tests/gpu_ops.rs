//! Every GPU kernel against the CPU kernel, on fresh random inputs of odd sizes (not multiples
//! of the 64-wide GEMM tiles or of the 256-thread workgroups), forward and backward through
//! autodiff on GPU tensors (`gpu_support::check_parity`).
//!
//! Tolerances: elementwise ops 1e-5 relative (the GPU's exp/log/div are within a few ulp);
//! reductions, matmul and convolutions 1e-4 + 1e-4 relative (f32 sums in another order: the
//! CPU sums reductions in f64, the GPU in f32 trees; GEMMs accumulate in a different order).
//!
//! Without a GPU adapter each test prints why and passes, unless `GANFORGE_REQUIRE_GPU=1`.

mod common;
mod gpu_support;

use common::{randn, rng, uniform};
use ganforge::ops::{
    BatchNormParams, Conv2dParams, Conv2dWeightGradParams, ConvTranspose2dParams, MaskOp,
    MatmulLayout, RunningStats, UnaryOp,
};
use ganforge::{autograd, Device, Error, Tensor};
use gpu_support::{assert_matches, check_parity, gpu_or_skip, on};

const CPU: Device = Device::Cpu;
/// Elementwise tolerance.
const EW: (f64, f64) = (1e-6, 1e-5);
/// Reductions, GEMMs and convolutions.
const RED: (f64, f64) = (1e-4, 1e-4);

#[test]
fn gpu_binary_ops_broadcast_like_the_cpu() {
    let Some(gpu) = gpu_or_skip("gpu_binary_ops_broadcast_like_the_cpu") else {
        return;
    };
    let mut r = rng(1);
    let cases: [(&[usize], &[usize]); 8] = [
        (&[3, 5, 7], &[3, 5, 7]),
        (&[3, 5, 7], &[5, 1]),
        (&[3, 1, 7], &[1, 5, 1]),
        (&[2, 3, 4, 5], &[1, 3, 1, 1]),
        (&[], &[4, 3]),
        (&[7], &[]),
        // Rank 9, but contiguous runs merge to fewer dims.
        (&[2, 3, 1, 2, 2, 1, 3, 2, 2], &[1, 1, 2, 2, 1, 3, 1, 1]),
        (&[2, 1, 3, 1, 2, 1, 3, 1], &[2, 1, 3, 1, 2, 1, 3, 1]),
    ];
    for (ls, rs) in cases {
        let a = randn(&mut r, ls, 1.0);
        // Keep divisors away from 0.
        let b = uniform(&mut r, rs, 0.5, 2.0);
        let what = format!("{ls:?} op {rs:?}");
        check_parity(
            &format!("add {what}"),
            &gpu,
            &[a.clone(), b.clone()],
            &|t| t[0].add(&t[1]),
            EW.0,
            EW.1,
        );
        check_parity(
            &format!("sub {what}"),
            &gpu,
            &[a.clone(), b.clone()],
            &|t| t[0].sub(&t[1]),
            EW.0,
            EW.1,
        );
        check_parity(
            &format!("mul {what}"),
            &gpu,
            &[a.clone(), b.clone()],
            &|t| t[0].mul(&t[1]),
            EW.0,
            EW.1,
        );
        check_parity(
            &format!("div {what}"),
            &gpu,
            &[a, b],
            &|t| t[0].div(&t[1]),
            1e-5,
            1e-5,
        );
    }
    // Nine dims that alternate between broadcast and not cannot merge below 9: the kernel
    // takes 8, and says so with a typed error.
    let a = on(&gpu, &randn(&mut r, &[2, 1, 2, 1, 2, 1, 2, 1, 2], 1.0));
    let b = on(&gpu, &randn(&mut r, &[1, 2, 1, 2, 1, 2, 1, 2, 1], 1.0));
    match a.add(&b) {
        Err(Error::Gpu { op, kind, .. }) => {
            assert_eq!(
                (op, kind),
                ("add", ganforge::error::GpuErrorKind::Unsupported)
            )
        }
        other => panic!(
            "expected a typed GPU error, got {:?}",
            other.map(|t| t.dims().to_vec())
        ),
    }
}

#[test]
fn gpu_unary_ops_and_masks_match_the_cpu() {
    let Some(gpu) = gpu_or_skip("gpu_unary_ops_and_masks_match_the_cpu") else {
        return;
    };
    let mut r = rng(2);
    let x = randn(&mut r, &[3, 7, 11], 2.0);
    let pos = uniform(&mut r, &[3, 7, 11], 0.1, 3.0);
    let ops = [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Abs,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Relu,
        UnaryOp::LeakyRelu(0.2),
        UnaryOp::Softplus,
        UnaryOp::Powf(3.0),
        UnaryOp::Powf(2.0),
        UnaryOp::Clamp {
            min: -0.5,
            max: 1.5,
        },
        UnaryOp::Affine {
            mul: -1.5,
            add: 0.25,
        },
    ];
    for op in ops {
        check_parity(
            &format!("{op:?}"),
            &gpu,
            std::slice::from_ref(&x),
            &|t| Ok(t[0].unary(op)),
            1e-5,
            2e-5,
        );
    }
    // Functions of positive inputs only.
    for op in [
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Powf(-0.5),
        UnaryOp::Powf(1.7),
    ] {
        check_parity(
            &format!("{op:?}"),
            &gpu,
            std::slice::from_ref(&pos),
            &|t| Ok(t[0].unary(op)),
            1e-5,
            2e-5,
        );
    }
    // Large arguments: no overflow in tanh, sigmoid, softplus.
    let big = Tensor::from_vec(vec![-100.0, -20.0, -9.5, 0.0, 9.5, 20.0, 100.0], [7]).unwrap();
    for op in [UnaryOp::Tanh, UnaryOp::Sigmoid, UnaryOp::Softplus] {
        assert_matches(
            &format!("{op:?} at large |x|"),
            &on(&gpu, &big).unary(op),
            &big.unary(op),
            1e-6,
            1e-6,
        );
    }
    // The masks the backward rules use, including the points where they switch.
    let edges = Tensor::from_vec(vec![-2.0, -0.5, 0.0, 0.5, 1.5, 2.0, -0.0, 1.0], [8]).unwrap();
    for kind in [
        MaskOp::Relu,
        MaskOp::LeakySlope(0.2),
        MaskOp::Sign,
        MaskOp::Clamp {
            min: -0.5,
            max: 1.5,
        },
    ] {
        for t in [&x, &edges] {
            let g = on(&gpu, t).mask(kind);
            assert_matches(&format!("mask {kind:?}"), &g, &t.mask(kind), 0.0, 0.0);
        }
    }
}

#[test]
fn gpu_sums_over_any_dims_match_the_cpu() {
    let Some(gpu) = gpu_or_skip("gpu_sums_over_any_dims_match_the_cpu") else {
        return;
    };
    let mut r = rng(3);
    let x = randn(&mut r, &[3, 4, 5, 6], 1.0);
    let dims: [&[usize]; 8] = [
        &[],
        &[0],
        &[1],
        &[3],
        &[0, 2],
        &[1, 2, 3],
        &[0, 3],
        &[0, 1, 2, 3],
    ];
    for d in dims {
        for keep in [true, false] {
            check_parity(
                &format!("sum {d:?} keep {keep}"),
                &gpu,
                std::slice::from_ref(&x),
                &|t| t[0].sum(d, keep),
                RED.0,
                RED.1,
            );
        }
    }
    // Long reductions (one workgroup per output) and short ones (one thread per output).
    let long = randn(&mut r, &[3, 3001], 1.0);
    check_parity(
        "sum of long rows",
        &gpu,
        &[long],
        &|t| t[0].sum(&[1], true),
        1e-3,
        1e-4,
    );
    let tall = randn(&mut r, &[517, 7], 1.0);
    check_parity(
        "sum down columns",
        &gpu,
        std::slice::from_ref(&tall),
        &|t| t[0].sum(&[0], false),
        1e-3,
        1e-4,
    );
    check_parity(
        "mean",
        &gpu,
        std::slice::from_ref(&tall),
        &|t| t[0].mean(&[1], true),
        RED.0,
        RED.1,
    );
    check_parity(
        "var",
        &gpu,
        &[tall],
        &|t| t[0].var(&[0], true, false),
        RED.0,
        RED.1,
    );
    // sum_to: the backward of broadcasting (bias gradients of a conv layer).
    let y = randn(&mut r, &[5, 7, 3, 3], 1.0);
    check_parity(
        "sum_to [1, 7, 1, 1]",
        &gpu,
        &[y],
        &|t| t[0].sum_to(&[1, 7, 1, 1].into()),
        RED.0,
        RED.1,
    );
}

#[test]
fn gpu_max_and_argmax_match_the_cpu() {
    let Some(gpu) = gpu_or_skip("gpu_max_and_argmax_match_the_cpu") else {
        return;
    };
    let mut r = rng(4);
    let x = randn(&mut r, &[4, 9, 5], 1.0);
    for dim in 0..3 {
        check_parity(
            &format!("max over {dim}"),
            &gpu,
            std::slice::from_ref(&x),
            &|t| t[0].max(dim, false),
            0.0,
            0.0,
        );
        assert_eq!(
            on(&gpu, &x).argmax(dim).unwrap(),
            x.argmax(dim).unwrap(),
            "argmax {dim}"
        );
    }
    // Long dim (several elements per thread), ties (the first wins), NaN (it wins).
    let long = randn(&mut r, &[2, 700], 1.0);
    assert_eq!(on(&gpu, &long).argmax(1).unwrap(), long.argmax(1).unwrap());
    let ties = Tensor::from_vec(
        vec![1.0, 3.0, 3.0, 2.0, f32::NAN, 5.0, f32::NAN, 0.0],
        [2, 4],
    )
    .unwrap();
    assert_eq!(on(&gpu, &ties).argmax(1).unwrap(), vec![1, 0]);
    assert_eq!(ties.argmax(1).unwrap(), vec![1, 0]);
    // max_all and cross-entropy (which subtracts the row max) on the GPU.
    check_parity(
        "max_all",
        &gpu,
        std::slice::from_ref(&long),
        &|t| t[0].max_all(),
        0.0,
        0.0,
    );
    let logits = randn(&mut r, &[6, 11], 2.0);
    let targets = [0, 3, 10, 5, 5, 1];
    check_parity(
        "cross_entropy",
        &gpu,
        &[logits],
        &|t| t[0].cross_entropy_with_logits(&targets),
        1e-5,
        1e-5,
    );
}

#[test]
fn gpu_shape_ops_match_the_cpu() {
    let Some(gpu) = gpu_or_skip("gpu_shape_ops_match_the_cpu") else {
        return;
    };
    let mut r = rng(5);
    let x = randn(&mut r, &[2, 3, 4, 5], 1.0);
    for perm in [[0, 1, 3, 2], [3, 2, 1, 0], [1, 0, 2, 3], [2, 0, 3, 1]] {
        check_parity(
            &format!("permute {perm:?}"),
            &gpu,
            std::slice::from_ref(&x),
            &|t| t[0].permute(&perm),
            0.0,
            0.0,
        );
    }
    let small = randn(&mut r, &[3, 1, 5], 1.0);
    check_parity(
        "broadcast_to",
        &gpu,
        std::slice::from_ref(&small),
        &|t| t[0].broadcast_to([2, 3, 4, 5]),
        0.0,
        1e-6,
    );
    let (a, b, c) = (
        randn(&mut r, &[2, 3, 4], 1.0),
        randn(&mut r, &[2, 3, 4], 1.0),
        randn(&mut r, &[2, 3, 4], 1.0),
    );
    for dim in 0..3 {
        check_parity(
            &format!("concat {dim}"),
            &gpu,
            &[a.clone(), b.clone(), c.clone()],
            &|t| Tensor::concat(t, dim),
            0.0,
            0.0,
        );
        let len = x.dims()[dim] - 1;
        check_parity(
            &format!("narrow {dim}"),
            &gpu,
            std::slice::from_ref(&x),
            &|t| t[0].narrow(dim, 1, len),
            0.0,
            0.0,
        );
        check_parity(
            &format!("pad {dim}"),
            &gpu,
            std::slice::from_ref(&a),
            &|t| t[0].pad_dim(dim, 2, 1),
            0.0,
            0.0,
        );
    }
    // index_select with repeated indices; its backward is index_add (repeats accumulate).
    let table = randn(&mut r, &[7, 3, 2], 1.0);
    let idx = [6, 0, 3, 3, 6, 1, 3];
    for dim in [0, 1] {
        let idx: Vec<usize> = idx.iter().map(|&i| i % table.dims()[dim]).collect();
        check_parity(
            &format!("index_select {dim}"),
            &gpu,
            std::slice::from_ref(&table),
            &|t| t[0].index_select(dim, &idx),
            1e-6,
            1e-6,
        );
        let rows = randn(&mut r, &[2, idx.len(), 3], 1.0);
        check_parity(
            "index_add",
            &gpu,
            &[rows],
            &|t| t[0].index_add_into_zeros(1, &idx, 9),
            1e-6,
            1e-6,
        );
    }
    // Reshape shares the buffer on the GPU too.
    let g = on(&gpu, &x);
    assert!(g.reshape([6, 20]).unwrap().same_storage(&g));
}

#[test]
fn gpu_matmul_matches_the_cpu_in_every_layout() {
    let Some(gpu) = gpu_or_skip("gpu_matmul_matches_the_cpu_in_every_layout") else {
        return;
    };
    let mut r = rng(6);
    // Tiled (64 x 64 blocks), skinny (M or N < 16: one workgroup per output for long K, one
    // thread per output otherwise), and `matmul_128` (128 x 128 blocks, 8 x 8 per thread, for
    // products of 64 blocks or more; the plans are asserted in src/ops/matmul.rs's unit tests).
    for (m, k, n) in [
        (2001, 37, 1931),
        (200, 1100, 150),
        (1, 1, 1),
        (7, 33, 19),
        (65, 17, 130),
        (64, 64, 64),
        (3, 200, 2),
        (5, 300, 70),
        (70, 300, 3),
        (1, 513, 1),
        (2, 9, 300),
    ] {
        for (lt, rt) in [(false, false), (false, true), (true, false), (true, true)] {
            let a = randn(&mut r, &if lt { [k, m] } else { [m, k] }, 1.0);
            let b = randn(&mut r, &if rt { [n, k] } else { [k, n] }, 1.0);
            let layout = MatmulLayout::new(lt, rt);
            check_parity(
                &format!("matmul {m}x{k}x{n} {layout:?}"),
                &gpu,
                &[a, b],
                &|t| t[0].matmul_with(&t[1], layout),
                RED.0,
                RED.1,
            );
        }
    }
    // Batched, with a broadcast batch dim on either side.
    let a = randn(&mut r, &[3, 2, 7, 9], 1.0);
    let b = randn(&mut r, &[9, 5], 1.0);
    check_parity(
        "batched [3,2,7,9] @ [9,5]",
        &gpu,
        &[a, b],
        &|t| t[0].matmul(&t[1]),
        RED.0,
        RED.1,
    );
    let a = randn(&mut r, &[64, 130, 600], 1.0);
    let b = randn(&mut r, &[600, 129], 1.0);
    check_parity(
        "batched matmul_128 [64,130,600] @ [600,129]",
        &gpu,
        &[a, b],
        &|t| t[0].matmul(&t[1]),
        RED.0,
        RED.1,
    );
    let a = randn(&mut r, &[1, 7, 300], 1.0);
    let b = randn(&mut r, &[4, 5, 300], 1.0);
    check_parity(
        "batched skinny [1,7,300] @ [4,5,300]^T",
        &gpu,
        &[a, b],
        &|t| t[0].matmul_with(&t[1], MatmulLayout::new(false, true)),
        RED.0,
        RED.1,
    );
    // linear = matmul with the weight read transposed, plus a broadcast bias.
    let (x, w, bias) = (
        randn(&mut r, &[5, 13], 1.0),
        randn(&mut r, &[3, 13], 1.0),
        randn(&mut r, &[3], 1.0),
    );
    check_parity(
        "linear",
        &gpu,
        &[x, w, bias],
        &|t| t[0].linear(&t[1], Some(&t[2])),
        RED.0,
        RED.1,
    );
}

#[test]
fn gpu_conv2d_and_its_gradients_match_the_cpu() {
    let Some(gpu) = gpu_or_skip("gpu_conv2d_and_its_gradients_match_the_cpu") else {
        return;
    };
    let mut r = rng(7);
    // (n, c_in, h, w, c_out, k, stride, padding): odd sizes, stride 2, padding, batch 1, a
    // 1x1 kernel, more output channels than one 64-row tile.
    for (n, ci, h, w, co, k, s, p) in [
        (3, 5, 7, 9, 4, 3, 2, 1),
        (1, 1, 28, 28, 6, 4, 2, 1),
        (2, 7, 5, 5, 3, 5, 1, 2),
        (3, 2, 9, 7, 5, 1, 3, 0),
        (1, 3, 6, 5, 70, 3, 1, 1),
        // The kernel covers the whole image (taken as one matmul): stride 1 and 2.
        (2, 3, 4, 4, 5, 4, 1, 0),
        (3, 20, 4, 4, 1, 4, 2, 0),
        // A long depth (5 * 22 * 22 positions) behind a one-tile weight gradient: split-K over
        // 37 workgroup layers, the last one ragged.
        (5, 2, 23, 23, 3, 4, 1, 1),
    ] {
        let x = randn(&mut r, &[n, ci, h, w], 1.0);
        let wt = randn(&mut r, &[co, ci, k, k], 0.5);
        let params = Conv2dParams::new(s, p).unwrap();
        let what = format!("conv2d n{n} ci{ci} {h}x{w} co{co} k{k} s{s} p{p}");
        // Forward, dx (conv_transpose2d kernel) and dw (conv2d_weight_grad kernel).
        check_parity(
            &what,
            &gpu,
            &[x.clone(), wt.clone()],
            &|t| t[0].conv2d(&t[1], params),
            RED.0,
            RED.1,
        );
        // The weight gradient as an op of its own, and its own gradients (second order).
        let oh = params.out_size(h, k).unwrap();
        let ow = params.out_size(w, k).unwrap();
        let gy = randn(&mut r, &[n, co, oh, ow], 1.0);
        let wg = Conv2dWeightGradParams {
            conv: params,
            kernel_h: k,
            kernel_w: k,
        };
        check_parity(
            &format!("weight grad of {what}"),
            &gpu,
            &[x, gy],
            &|t| t[0].conv2d_weight_grad(&t[1], wg),
            RED.0,
            RED.1,
        );
    }
}

#[test]
fn gpu_conv_transpose2d_and_its_gradients_match_the_cpu() {
    let Some(gpu) = gpu_or_skip("gpu_conv_transpose2d_and_its_gradients_match_the_cpu") else {
        return;
    };
    let mut r = rng(8);
    // (n, c_in, h, w, c_out, k, stride, padding, output_padding)
    for (n, ci, h, w, co, k, s, p, op) in [
        (3, 5, 7, 9, 4, 3, 2, 1, 1),
        (2, 6, 1, 1, 7, 7, 1, 0, 0),
        (1, 4, 7, 7, 1, 4, 2, 1, 0),
        (2, 3, 5, 4, 2, 5, 3, 2, 2),
        (1, 9, 3, 3, 66, 4, 2, 1, 1),
        // At least 16 output channels: the per-phase GEMM (fewer: a thread per output).
        (3, 5, 7, 9, 20, 3, 2, 1, 1),
        (2, 3, 5, 4, 17, 5, 3, 2, 2),
        (2, 4, 6, 5, 16, 3, 1, 1, 0),
    ] {
        let x = randn(&mut r, &[n, ci, h, w], 1.0);
        let wt = randn(&mut r, &[ci, co, k, k], 0.5);
        let params = ConvTranspose2dParams::new(s, p, op).unwrap();
        let what = format!("conv_transpose2d n{n} ci{ci} {h}x{w} co{co} k{k} s{s} p{p} op{op}");
        check_parity(
            &what,
            &gpu,
            &[x, wt],
            &|t| t[0].conv_transpose2d(&t[1], params),
            RED.0,
            RED.1,
        );
    }
}

#[test]
fn gpu_batch_norm_matches_the_cpu_in_training_and_eval() {
    let Some(gpu) = gpu_or_skip("gpu_batch_norm_matches_the_cpu_in_training_and_eval") else {
        return;
    };
    let mut r = rng(9);
    let bn = BatchNormParams::default();
    for shape in [&[5usize, 3, 4, 6][..], &[1, 4, 3, 3], &[7, 5], &[64, 2, 3]] {
        let c = shape[1];
        let x = randn(&mut r, shape, 2.0).add_scalar(3.0);
        let (gamma, beta) = (uniform(&mut r, &[c], 0.5, 1.5), randn(&mut r, &[c], 1.0));
        // Training: the fused statistics kernel and its fused backward.
        check_parity(
            &format!("batch_norm train {shape:?}"),
            &gpu,
            &[x.clone(), gamma.clone(), beta.clone()],
            &|t| t[0].batch_norm(None, Some(&t[1]), Some(&t[2]), true, bn),
            1e-4,
            1e-4,
        );
        // Running statistics are updated on the device, in place.
        let (rm, rv) = (Tensor::zeros(c, &CPU), Tensor::ones(c, &CPU));
        let (grm, grv) = (on(&gpu, &rm), on(&gpu, &rv));
        x.batch_norm(
            Some(RunningStats {
                mean: &rm,
                var: &rv,
            }),
            None,
            None,
            true,
            bn,
        )
        .unwrap();
        on(&gpu, &x)
            .batch_norm(
                Some(RunningStats {
                    mean: &grm,
                    var: &grv,
                }),
                None,
                None,
                true,
                bn,
            )
            .unwrap();
        assert_matches("running mean", &grm, &rm, 1e-5, 1e-5);
        assert_matches("running var", &grv, &rv, 1e-5, 1e-4);
        // Eval: the running statistics normalise.
        check_parity(
            &format!("batch_norm eval {shape:?}"),
            &gpu,
            &[x.clone(), gamma, beta],
            &|t| {
                let (m, v) = (on(&t[0].device(), &rm), on(&t[0].device(), &rv));
                t[0].batch_norm(
                    Some(RunningStats { mean: &m, var: &v }),
                    Some(&t[1]),
                    Some(&t[2]),
                    false,
                    bn,
                )
            },
            1e-5,
            1e-5,
        );
    }
}

#[test]
fn gpu_pooling_and_upsampling_match_the_cpu() {
    let Some(gpu) = gpu_or_skip("gpu_pooling_and_upsampling_match_the_cpu") else {
        return;
    };
    let mut r = rng(10);
    let x = randn(&mut r, &[2, 3, 7, 9], 1.0);
    check_parity(
        "avg_pool2x2 (odd)",
        &gpu,
        &[x],
        &|t| t[0].avg_pool2x2(),
        1e-6,
        1e-6,
    );
    let y = randn(&mut r, &[2, 3, 4, 5], 1.0);
    check_parity(
        "upsample",
        &gpu,
        std::slice::from_ref(&y),
        &|t| t[0].upsample_nearest2x(),
        1e-6,
        1e-6,
    );
    check_parity(
        "upsample to odd",
        &gpu,
        &[y],
        &|t| t[0].upsample_nearest2x_to(9, 11),
        1e-6,
        1e-6,
    );
}

#[test]
fn gpu_losses_match_the_cpu() {
    let Some(gpu) = gpu_or_skip("gpu_losses_match_the_cpu") else {
        return;
    };
    let mut r = rng(11);
    let x = randn(&mut r, &[9, 1], 3.0);
    let t = uniform(&mut r, &[9, 1], 0.0, 1.0);
    let labels = Tensor::from_vec(
        (0..9)
            .map(|i| if i % 3 == 0 { 1.0 } else { -1.0 })
            .collect(),
        [9, 1],
    )
    .unwrap();
    check_parity(
        "bce_with_logits",
        &gpu,
        &[x.clone(), t.clone()],
        &|a| a[0].bce_with_logits(&a[1]),
        1e-5,
        1e-5,
    );
    check_parity(
        "mse",
        &gpu,
        &[x.clone(), t.clone()],
        &|a| a[0].mse(&a[1]),
        1e-5,
        1e-5,
    );
    check_parity("l1", &gpu, &[x.clone(), t], &|a| a[0].l1(&a[1]), 1e-5, 1e-5);
    check_parity(
        "hinge",
        &gpu,
        &[x, labels],
        &|a| a[0].hinge(&a[1]),
        1e-5,
        1e-5,
    );
}

#[test]
fn gpu_creation_and_in_place_ops_match_the_cpu() {
    let Some(gpu) = gpu_or_skip("gpu_creation_and_in_place_ops_match_the_cpu") else {
        return;
    };
    for n in [0, 1, 257, 70_001] {
        assert_eq!(Tensor::full(2.5, n, &gpu).to_vec(), vec![2.5; n]);
    }
    assert_eq!(Tensor::zeros([2, 3], &gpu).to_vec(), vec![0.0; 6]);
    assert_eq!(
        Tensor::arange(5, &gpu).to_vec(),
        vec![0.0, 1.0, 2.0, 3.0, 4.0]
    );
    // Random tensors: drawn on the host, so the same seed gives the same numbers anywhere.
    let (mut r1, mut r2) = (rng(12), rng(12));
    let a = Tensor::randn(0.0, 1.0, [3, 5], &mut r1, &CPU);
    let b = Tensor::randn(0.0, 1.0, [3, 5], &mut r2, &gpu);
    assert_eq!(a.to_vec(), b.to_vec());
    // In-place updates.
    let mut r = rng(13);
    let (d, s) = (randn(&mut r, &[300], 1.0), randn(&mut r, &[300], 1.0));
    let (gd, gs) = (on(&gpu, &d), on(&gpu, &s));
    d.axpby_in_place(0.9, &s, 0.1, 1.5).unwrap();
    gd.axpby_in_place(0.9, &gs, 0.1, 1.5).unwrap();
    assert_matches("axpby_in_place", &gd, &d, 1e-6, 1e-6);
    // From identical inputs (the GPU's axpby may round differently, e.g. with a fused
    // multiply-add on a real GPU), so clamp's result must match exactly.
    gd.copy_from(&d).unwrap();
    d.clamp_in_place(-0.3, 0.4).unwrap();
    gd.clamp_in_place(-0.3, 0.4).unwrap();
    assert_matches("clamp_in_place", &gd, &d, 0.0, 0.0);
    d.affine_in_place(2.0, 1.0).unwrap();
    gd.affine_in_place(2.0, 1.0).unwrap();
    assert_matches("affine_in_place", &gd, &d, 1e-6, 1e-6);
    gd.copy_from(&gs).unwrap();
    assert_matches("copy_from (gpu to gpu)", &gd, &s, 0.0, 0.0);
    gd.copy_from(&d).unwrap();
    assert_matches("copy_from (cpu to gpu)", &gd, &d, 0.0, 0.0);
    gd.fill_in_place(-1.0).unwrap();
    assert_eq!(gd.to_vec(), vec![-1.0; 300]);
    gd.write_from_slice(&s.to_vec()).unwrap();
    assert_matches("write_from_slice", &gd, &s, 0.0, 0.0);
    // A recorded op's output refuses in-place writes on the GPU as on the CPU.
    let leaf = on(&gpu, &s);
    leaf.set_requires_grad(true);
    let y = leaf.exp();
    assert!(matches!(y.fill_in_place(0.0), Err(Error::Autograd(_))));
}

#[test]
fn gpu_optimizers_update_like_the_cpu() {
    use ganforge::optim::{Adam, AdamConfig, Optimizer, RmsProp, RmsPropConfig, Sgd, SgdConfig};
    let Some(gpu) = gpu_or_skip("gpu_optimizers_update_like_the_cpu") else {
        return;
    };
    let mut r = rng(14);
    let p0 = randn(&mut r, &[7, 37], 1.0);
    let grads: Vec<Tensor> = (0..3).map(|_| randn(&mut r, &[7, 37], 1.0)).collect();
    type Make = Box<dyn Fn(Vec<Tensor>) -> Box<dyn Optimizer>>;
    let makers: Vec<(&str, Make)> = vec![
        (
            "adam",
            Box::new(|p| {
                Box::new(Adam::new(
                    p,
                    AdamConfig {
                        lr: 1e-2,
                        betas: (0.5, 0.999),
                        eps: 1e-8,
                        weight_decay: 0.01,
                    },
                ))
            }),
        ),
        (
            "adam defaults",
            Box::new(|p| Box::new(Adam::new(p, AdamConfig::default()))),
        ),
        (
            "sgd",
            Box::new(|p| {
                Box::new(Sgd::new(
                    p,
                    SgdConfig {
                        lr: 0.1,
                        ..Default::default()
                    },
                ))
            }),
        ),
        (
            "sgd momentum",
            Box::new(|p| {
                Box::new(Sgd::new(
                    p,
                    SgdConfig {
                        lr: 0.1,
                        momentum: 0.9,
                        dampening: 0.1,
                        weight_decay: 0.01,
                        ..Default::default()
                    },
                ))
            }),
        ),
        (
            "sgd nesterov",
            Box::new(|p| {
                Box::new(Sgd::new(
                    p,
                    SgdConfig {
                        lr: 0.1,
                        momentum: 0.9,
                        nesterov: true,
                        ..Default::default()
                    },
                ))
            }),
        ),
        (
            "rmsprop",
            Box::new(|p| {
                Box::new(RmsProp::new(
                    p,
                    RmsPropConfig {
                        lr: 1e-2,
                        ..Default::default()
                    },
                ))
            }),
        ),
        (
            "rmsprop centered momentum",
            Box::new(|p| {
                Box::new(RmsProp::new(
                    p,
                    RmsPropConfig {
                        lr: 1e-2,
                        momentum: 0.5,
                        centered: true,
                        weight_decay: 0.1,
                        ..Default::default()
                    },
                ))
            }),
        ),
        (
            "rmsprop momentum",
            Box::new(|p| {
                Box::new(RmsProp::new(
                    p,
                    RmsPropConfig {
                        lr: 1e-2,
                        momentum: 0.5,
                        ..Default::default()
                    },
                ))
            }),
        ),
        (
            "rmsprop centered",
            Box::new(|p| {
                Box::new(RmsProp::new(
                    p,
                    RmsPropConfig {
                        lr: 1e-2,
                        centered: true,
                        ..Default::default()
                    },
                ))
            }),
        ),
    ];
    for (name, make) in makers {
        let (pc, pg) = (p0.detach().to_device(&CPU).unwrap(), on(&gpu, &p0));
        pc.set_requires_grad(true);
        pg.set_requires_grad(true);
        let (mut oc, mut og) = (make(vec![pc.clone()]), make(vec![pg.clone()]));
        for g in &grads {
            pc.set_grad(Some(g.clone()));
            pg.set_grad(Some(on(&gpu, g)));
            oc.step().unwrap();
            og.step().unwrap();
        }
        assert_matches(
            &format!("{name}: parameter after 3 steps"),
            &pg,
            &pc,
            1e-6,
            1e-5,
        );
        for ((kc, tc), (kg, tg)) in oc.state_dict().iter().zip(og.state_dict()) {
            assert_eq!(kc, &kg);
            let (want, got) = (tc.to_vec(), tg.to_vec());
            let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
            common::assert_close(&format!("{name}: {kc}"), &got, &want, 1e-6, 1e-5);
        }
    }
    // WGAN weight clipping is a kernel on the parameter's buffer.
    let (pc, pg) = (p0.detach(), on(&gpu, &p0));
    ganforge::nn::clip_parameters(std::slice::from_ref(&pc), 0.3).unwrap();
    ganforge::nn::clip_parameters(std::slice::from_ref(&pg), 0.3).unwrap();
    assert_matches("clip_parameters", &pg, &pc, 0.0, 0.0);
}

/// The WGAN-GP critic loss needs the gradient of a gradient: `autograd::grad` with
/// `create_graph` through conv2d, leaky relu, (batch norm,) linear, then the penalty's
/// backward into the critic's weights. The GPU must give the CPU's weight gradients.
#[test]
fn gpu_second_order_gradient_penalty_matches_the_cpu() {
    use ganforge::bench::w1_discriminator;
    use ganforge::nn::Module;
    let Some(gpu) = gpu_or_skip("gpu_second_order_gradient_penalty_matches_the_cpu") else {
        return;
    };
    let n = 3;
    let mut r = rng(15);
    let real = uniform(&mut r, &[n, 1, 28, 28], -1.0, 1.0);
    let fake = uniform(&mut r, &[n, 1, 28, 28], -1.0, 1.0);
    let eps = uniform(&mut r, &[n, 1, 1, 1], 0.0, 1.0);
    for norm in [false, true] {
        let mut grads = Vec::new();
        for dev in [CPU, gpu.clone()] {
            let d = w1_discriminator(norm, &mut rng(16), &dev).unwrap();
            let (real, fake, eps) = (on(&dev, &real), on(&dev, &fake), on(&dev, &eps));
            let x_hat = eps
                .mul(&real)
                .unwrap()
                .add(&eps.affine(-1.0, 1.0).mul(&fake).unwrap())
                .unwrap();
            x_hat.set_requires_grad(true);
            let score = d.forward(&x_hat).unwrap().sum_all().unwrap();
            let g = autograd::grad(&[score], None, std::slice::from_ref(&x_hat), true).unwrap()[0]
                .clone()
                .unwrap();
            let gp = g
                .flatten(1)
                .unwrap()
                .sqr()
                .unwrap()
                .sum(&[1], false)
                .unwrap()
                .sqrt()
                .add_scalar(-1.0)
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap();
            let loss = d
                .forward(&fake)
                .unwrap()
                .mean_all()
                .unwrap()
                .sub(&d.forward(&real).unwrap().mean_all().unwrap())
                .unwrap()
                .add(&gp.mul_scalar(10.0))
                .unwrap();
            loss.backward().unwrap();
            let named: Vec<(String, Tensor, f32)> = d
                .named_parameters()
                .into_iter()
                .map(|(k, p)| {
                    (
                        k,
                        p.grad().expect("every weight gets a gradient"),
                        loss.to_scalar().unwrap(),
                    )
                })
                .collect();
            grads.push(named);
        }
        let (cpu, gpu_grads) = (&grads[0], &grads[1]);
        let (lc, lg) = (cpu[0].2 as f64, gpu_grads[0].2 as f64);
        assert!(
            (lc - lg).abs() <= 1e-4 + 1e-4 * lc.abs(),
            "norm {norm}: loss cpu {lc} gpu {lg}"
        );
        for ((k, gc, _), (_, gg, _)) in cpu.iter().zip(gpu_grads) {
            assert_matches(
                &format!("gp (norm {norm}): d loss / d {k}"),
                gg,
                gc,
                2e-4,
                2e-3,
            );
        }
    }
}

#[test]
fn gpu_devices_are_explicit() {
    let Some(gpu) = gpu_or_skip("gpu_devices_are_explicit") else {
        return;
    };
    // auto takes a hardware GPU, and leaves a software one (lavapipe) to --device gpu.
    let (dev, line) = Device::auto();
    let software = matches!(&gpu, Device::Gpu(g) if g.info().device_type == "Cpu");
    if software {
        assert!(!dev.is_gpu() && line.contains("software"), "{line}");
    } else {
        assert!(dev.is_gpu() && line.starts_with("gpu: "), "{line}");
    }
    let a = Tensor::ones([2, 2], &CPU);
    let b = Tensor::ones([2, 2], &gpu);
    // Mixing devices is an error naming the op, not a silent copy.
    match a.add(&b) {
        Err(Error::DeviceMismatch { op, .. }) => assert_eq!(op, "add"),
        other => panic!("expected a device mismatch, got {other:?}"),
    }
    assert_eq!(b.device(), gpu);
    assert_eq!(b.to_device(&CPU).unwrap().device(), CPU);
    // An oversized tensor is a typed error naming the op, never a panic.
    let limit = match &gpu {
        Device::Gpu(g) => g.info().max_storage_binding,
        Device::Cpu => unreachable!(),
    };
    if limit < (1 << 30) {
        let big = Tensor::zeros((limit as usize / 4) + 1, &gpu);
        match big.add_scalar(1.0).sum_all() {
            Err(Error::Gpu { op, .. }) => assert_eq!(op, "full"),
            other => panic!(
                "expected a GPU error, got {:?}",
                other.map(|t| t.dims().to_vec())
            ),
        }
        // The error is reported once; the device keeps working.
        let ok = Tensor::ones(3, &gpu)
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(ok, 3.0);
    }
}
