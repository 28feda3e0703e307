//! Kernel benchmark: times the CPU kernels at the DCGAN layer shapes of
//! `../shared/anchors/perf.md` (W1 dcgan-mnist and W2 dcgan-64, batch 64) and prints one table:
//! op, shape, ms (median), GFLOP/s from the counted FLOPs.
//!
//! Run: `cargo bench --bench kernels` (release build). Threads: rayon's default (all cores);
//! set `RAYON_NUM_THREADS=2` to match the reference measurements.
//!
//! FLOPs: matmul `2*M*N*K`; conv2d `2*N*C_out*OH*OW*C_in*KH*KW`; conv_transpose2d
//! `2*N*C_in*H*W*C_out*KH*KW`; each backward pass (dx or dw) counts the same as the forward.

use ganforge::autograd;
use ganforge::ops::{BatchNormParams, Conv2dParams, ConvTranspose2dParams, RunningStats};
use ganforge::{Device, Rng, Tensor};
use std::time::Instant;

/// Median wall time in ms of `reps` runs of `f` after one warm-up.
fn time_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[times.len() / 2]
}

fn row(op: &str, shape: &str, ms: f64, flops: f64) {
    let gflops = if flops > 0.0 {
        format!("{:9.1}", flops / ms / 1e6)
    } else {
        "        -".to_string()
    };
    println!("| {op:<28} | {shape:<34} | {ms:9.2} | {gflops} |");
}

fn main() {
    let dev = Device::Cpu;
    let mut rng = Rng::new(0);
    let reps = 5;
    println!("threads: {}", rayon::current_num_threads());
    println!(
        "| {:<28} | {:<34} | {:>9} | {:>9} |",
        "op", "shape", "ms", "GFLOP/s"
    );
    println!("|{:-<30}|{:-<36}|{:-<11}|{:-<11}|", "", "", "", "");

    for n in [256usize, 512, 1024, 2048] {
        let a = Tensor::randn(0.0, 1.0, [n, n], &mut rng, &dev);
        let b = Tensor::randn(0.0, 1.0, [n, n], &mut rng, &dev);
        let ms = time_ms(reps, || {
            a.matmul(&b).unwrap();
        });
        row(
            "matmul",
            &format!("{n}x{n} @ {n}x{n}"),
            ms,
            2.0 * (n * n * n) as f64,
        );
    }

    // (name, N, C_in, H, C_out, k, stride, padding)
    let convs = [
        ("conv2d D.c1", 64, 1, 28, 64, 4, 2, 1),
        ("conv2d D.c2", 64, 64, 14, 128, 4, 2, 1),
        ("W2 conv2d D.c1", 64, 3, 64, 64, 4, 2, 1),
        ("W2 conv2d D.c2", 64, 64, 32, 128, 4, 2, 1),
        ("W2 conv2d D.c3", 64, 128, 16, 256, 4, 2, 1),
        ("W2 conv2d D.c4", 64, 256, 8, 512, 4, 2, 1),
        ("W2 conv2d D.c5", 64, 512, 4, 1, 4, 1, 0),
    ];
    for (name, n, ci, h, co, k, s, p) in convs {
        let params = Conv2dParams {
            stride: s,
            padding: p,
        };
        let x = Tensor::randn(0.0, 1.0, [n, ci, h, h], &mut rng, &dev);
        let w = Tensor::randn(0.0, 0.02, [co, ci, k, k], &mut rng, &dev);
        let oh = params.out_size(h, k).unwrap();
        let flops = 2.0 * (n * co * oh * oh * ci * k * k) as f64;
        let shape = format!("{ci}->{co} k{k}s{s}p{p} {h}->{oh}");
        row(
            &format!("{name} fwd"),
            &shape,
            time_ms(reps, || {
                x.conv2d(&w, params).unwrap();
            }),
            flops,
        );
        let (xl, wl) = (x.detach(), w.detach());
        xl.set_requires_grad(true);
        wl.set_requires_grad(true);
        let y = xl.conv2d(&wl, params).unwrap();
        let g = Tensor::randn(0.0, 1.0, y.dims().to_vec(), &mut rng, &dev);
        row(
            &format!("{name} bwd (dx+dw)"),
            &shape,
            time_ms(reps, || {
                autograd::grad(
                    std::slice::from_ref(&y),
                    Some(std::slice::from_ref(&g)),
                    &[xl.clone(), wl.clone()],
                    false,
                )
                .unwrap();
            }),
            2.0 * flops,
        );
    }

    let convts = [
        ("convT G.ct1", 64, 100, 1, 256, 7, 1, 0),
        ("convT G.ct2", 64, 256, 7, 128, 4, 2, 1),
        ("convT G.ct3", 64, 128, 14, 1, 4, 2, 1),
        ("W2 convT G.ct1", 64, 100, 1, 512, 4, 1, 0),
        ("W2 convT G.ct2", 64, 512, 4, 256, 4, 2, 1),
        ("W2 convT G.ct3", 64, 256, 8, 128, 4, 2, 1),
        ("W2 convT G.ct4", 64, 128, 16, 64, 4, 2, 1),
        ("W2 convT G.ct5", 64, 64, 32, 3, 4, 2, 1),
    ];
    for (name, n, ci, h, co, k, s, p) in convts {
        let params = ConvTranspose2dParams {
            stride: s,
            padding: p,
            output_padding: [0, 0],
        };
        let x = Tensor::randn(0.0, 1.0, [n, ci, h, h], &mut rng, &dev);
        let w = Tensor::randn(0.0, 0.02, [ci, co, k, k], &mut rng, &dev);
        let oh = params.out_size(h, k, 0).unwrap();
        let flops = 2.0 * (n * ci * h * h * co * k * k) as f64;
        let shape = format!("{ci}->{co} k{k}s{s}p{p} {h}->{oh}");
        row(
            &format!("{name} fwd"),
            &shape,
            time_ms(reps, || {
                x.conv_transpose2d(&w, params).unwrap();
            }),
            flops,
        );
        let (xl, wl) = (x.detach(), w.detach());
        xl.set_requires_grad(true);
        wl.set_requires_grad(true);
        let y = xl.conv_transpose2d(&wl, params).unwrap();
        let g = Tensor::randn(0.0, 1.0, y.dims().to_vec(), &mut rng, &dev);
        row(
            &format!("{name} bwd (dx+dw)"),
            &shape,
            time_ms(reps, || {
                autograd::grad(
                    std::slice::from_ref(&y),
                    Some(std::slice::from_ref(&g)),
                    &[xl.clone(), wl.clone()],
                    false,
                )
                .unwrap();
            }),
            2.0 * flops,
        );
    }

    // W1's two batch norms, then W2's (G: 512@4, 256@8, 128@16, 64@32; D shares 128-512).
    for (c, h) in [
        (256usize, 7usize),
        (128, 14),
        (512, 4),
        (256, 8),
        (128, 16),
        (64, 32),
    ] {
        let x = Tensor::randn(0.0, 1.0, [64, c, h, h], &mut rng, &dev);
        let (gamma, beta) = (Tensor::ones(c, &dev), Tensor::zeros(c, &dev));
        let (rm, rv) = (Tensor::zeros(c, &dev), Tensor::ones(c, &dev));
        let shape = format!("[64, {c}, {h}, {h}]");
        row(
            "batch_norm train fwd",
            &shape,
            time_ms(reps, || {
                let running = RunningStats {
                    mean: &rm,
                    var: &rv,
                };
                x.batch_norm(
                    Some(running),
                    Some(&gamma),
                    Some(&beta),
                    true,
                    BatchNormParams::default(),
                )
                .unwrap();
            }),
            0.0,
        );
        let xl = x.detach();
        xl.set_requires_grad(true);
        row(
            "batch_norm train fwd+bwd",
            &shape,
            time_ms(reps, || {
                let y = xl
                    .batch_norm(
                        None,
                        Some(&gamma),
                        Some(&beta),
                        true,
                        BatchNormParams::default(),
                    )
                    .unwrap();
                autograd::grad(
                    &[y.sum_all().unwrap()],
                    None,
                    std::slice::from_ref(&xl),
                    false,
                )
                .unwrap();
            }),
            0.0,
        );
    }
}
