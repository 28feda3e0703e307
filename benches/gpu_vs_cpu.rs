//! GPU against CPU: every heavy kernel at the W1 DCGAN layer shapes (`src/bench.rs`,
//! `../shared/anchors/perf.md`), then whole W1 training steps, printed as one table:
//! op, shape, CPU ms, GPU ms, GFLOP/s on each.
//!
//! Run: `cargo bench --bench gpu_vs_cpu [-- --batch N --reps R --steps S --big --matmul-only]`
//! (defaults: batch 64, 5 reps, 5 steps; `--big` adds W2's 64x64 layers and matmul 2048-4096).
//! Times are medians after one untimed warm-up. A GPU timing ends with
//! `Device::synchronize` (a readback that waits for the queue), so the GPU has finished the
//! work inside the timed region; a training step ends with its losses read back, as in
//! training. Each kernel's output is checked against the CPU's before it is timed.
//!
//! FLOPs: matmul `2*M*N*K`; conv2d `2*N*C_out*OH*OW*C_in*KH*KW`; conv_transpose2d
//! `2*N*C_in*H*W*C_out*KH*KW`; each gradient (dx or dw) counts the same as the forward; the
//! step counts perf.md's formula (`ganforge::bench::step_gflop`, scaled to the batch).
//!
//! On Mesa's lavapipe (a software Vulkan driver: the "GPU" is the same CPU, emulated) the GPU
//! column is 10-40x slower than the CPU one; it shows the kernels run, not how fast a GPU is.

use ganforge::bench::{step_gflop, w1_discriminator, w1_generator, Workload, NZ};
use ganforge::nn::Module;
use ganforge::ops::{BatchNormParams, Conv2dParams, Conv2dWeightGradParams, ConvTranspose2dParams};
use ganforge::optim::{Adam, AdamConfig, Optimizer};
use ganforge::{Device, Rng, Tensor};
use std::time::Instant;

/// Median ms of `reps` runs of `f` (after one warm-up), waiting for `dev` inside the timing.
fn time_ms(dev: &Device, reps: usize, f: &dyn Fn() -> Tensor) -> f64 {
    drop(f());
    dev.synchronize().expect("gpu");
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            let y = f();
            dev.synchronize().expect("gpu");
            let ms = t.elapsed().as_secs_f64() * 1e3;
            drop(y);
            ms
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Kernel throughput on the GPU: median over `reps` of `count` products queued back to back
/// with one wait at the end, per product. Each single timing of `time_ms` also pays one submit
/// and one readback (tens of microseconds), which is most of a 1024^3 product on a large GPU.
fn time_queued_ms(dev: &Device, reps: usize, count: usize, f: &dyn Fn() -> Tensor) -> f64 {
    drop(f());
    dev.synchronize().expect("gpu");
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            let ys: Vec<Tensor> = (0..count).map(|_| f()).collect();
            dev.synchronize().expect("gpu");
            let ms = t.elapsed().as_secs_f64() * 1e3 / count as f64;
            drop(ys);
            ms
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn gflops(flops: f64, ms: f64) -> String {
    if flops > 0.0 {
        format!("{:9.2}", flops / ms / 1e6)
    } else {
        format!("{:>9}", "-")
    }
}

fn row(op: &str, shape: &str, cpu_ms: f64, gpu_ms: f64, flops: f64) {
    println!(
        "| {op:<24} | {shape:<30} | {cpu_ms:10.2} | {gpu_ms:10.2} | {} | {} |",
        gflops(flops, cpu_ms),
        gflops(flops, gpu_ms)
    );
}

/// Times `f(inputs)` on the CPU and on GPU copies of the inputs, after checking that both
/// give the same values.
fn compare(
    gpu: &Device,
    reps: usize,
    op: &str,
    shape: &str,
    flops: f64,
    inputs: &[Tensor],
    f: &dyn Fn(&[Tensor]) -> Tensor,
) {
    let on_gpu: Vec<Tensor> = inputs.iter().map(|t| t.to_device(gpu).unwrap()).collect();
    let (c, g) = (f(inputs).to_vec(), f(&on_gpu).to_vec());
    let scale = c.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-3);
    let worst = c
        .iter()
        .zip(&g)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst <= 1e-3 * scale,
        "{op} {shape}: GPU differs from CPU by {worst} (scale {scale})"
    );
    let cpu_ms = time_ms(&Device::Cpu, reps, &|| f(inputs));
    let gpu_ms = time_ms(gpu, reps, &|| f(&on_gpu));
    row(op, shape, cpu_ms, gpu_ms, flops);
}

/// `steps` W1 GAN steps at `batch` on `dev` (the step of `Bench::gan_step`), after one
/// untimed step; returns the median ms.
fn w1_steps(dev: &Device, batch: usize, steps: usize) -> f64 {
    let mut rng = Rng::new(0);
    let g = w1_generator(&mut rng, dev).unwrap();
    let d = w1_discriminator(true, &mut rng, dev).unwrap();
    let adam = |params| {
        Adam::new(
            params,
            AdamConfig {
                lr: 2e-4,
                betas: (0.5, 0.999),
                ..AdamConfig::default()
            },
        )
    };
    let (mut opt_g, mut opt_d) = (adam(g.parameters()), adam(d.parameters()));
    let mut times = Vec::new();
    for i in 0..=steps {
        let t = Instant::now();
        let real = Tensor::rand_uniform(-1.0, 1.0, [batch, 1, 28, 28], &mut rng, dev);
        let z = Tensor::randn(0.0, 1.0, [batch, NZ], &mut rng, dev);
        let ones = Tensor::ones([batch, 1], dev);
        let zeros = Tensor::zeros([batch, 1], dev);
        opt_d.zero_grad();
        let fake = g.forward(&z).unwrap();
        let loss_d = d
            .forward(&real)
            .unwrap()
            .bce_with_logits(&ones)
            .unwrap()
            .add(
                &d.forward(&fake.detach())
                    .unwrap()
                    .bce_with_logits(&zeros)
                    .unwrap(),
            )
            .unwrap();
        loss_d.backward().unwrap();
        opt_d.step().unwrap();
        opt_g.zero_grad();
        let loss_g = d.forward(&fake).unwrap().bce_with_logits(&ones).unwrap();
        loss_g.backward().unwrap();
        opt_g.step().unwrap();
        // Reading the losses back waits for the GPU.
        let (ld, lg) = (loss_d.to_scalar().unwrap(), loss_g.to_scalar().unwrap());
        assert!(ld.is_finite() && lg.is_finite());
        if i > 0 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (mut batch, mut reps, mut steps, mut big) = (64usize, 5usize, 5usize, false);
    let mut matmul_only = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        match flag.as_str() {
            "--batch" => batch = value(),
            "--reps" => reps = value(),
            "--steps" => steps = value(),
            "--big" => big = true,
            "--matmul-only" => matmul_only = true,
            other => {
                panic!("unknown argument {other}: --batch N --reps R --steps S --big --matmul-only")
            }
        }
    }
    let gpu = match Device::gpu() {
        Ok(g) => g,
        Err(e) => {
            println!("no GPU: {e}");
            return;
        }
    };
    if let Device::Gpu(g) = &gpu {
        println!("gpu: {}", g.info());
    }
    println!(
        "cpu: {} threads; batch {batch}; medians of {reps} (kernels) / {steps} (steps)",
        rayon::current_num_threads()
    );
    println!(
        "| {:<24} | {:<30} | {:>10} | {:>10} | {:>9} | {:>9} |",
        "op", "shape", "CPU ms", "GPU ms", "CPU GF/s", "GPU GF/s"
    );
    println!(
        "|{:-<26}|{:-<32}|{:-<12}|{:-<12}|{:-<11}|{:-<11}|",
        "", "", "", "", "", ""
    );
    let mut rng = Rng::new(1);
    let cpu = Device::Cpu;

    let sizes: &[usize] = if big {
        &[256, 1024, 2048, 4096]
    } else {
        &[256, 512]
    };
    for &n in sizes {
        let a = Tensor::randn(0.0, 1.0, [n, n], &mut rng, &cpu);
        let b = Tensor::randn(0.0, 1.0, [n, n], &mut rng, &cpu);
        let flops = 2.0 * (n * n * n) as f64;
        let product = |t: &[Tensor]| t[0].matmul(&t[1]).unwrap();
        compare(
            &gpu,
            reps,
            "matmul",
            &format!("{n}^3"),
            flops,
            &[a.clone(), b.clone()],
            &product,
        );
        // The same product 10 times in one submission: the kernel's own throughput.
        let on_gpu = [a.to_device(&gpu).unwrap(), b.to_device(&gpu).unwrap()];
        let cpu_ms = time_ms(&cpu, reps, &|| product(&[a.clone(), b.clone()]));
        let gpu_ms = time_queued_ms(&gpu, reps, 10, &|| product(&on_gpu));
        row(
            "matmul, 10 queued",
            &format!("{n}^3"),
            cpu_ms,
            gpu_ms,
            flops,
        );
    }

    if matmul_only {
        return;
    }
    // (name, c_in, h, c_out, k, stride, padding): conv2d layers of the discriminators.
    let mut convs = vec![
        ("W1 D.c1", 1, 28, 64, 4, 2, 1),
        ("W1 D.c2", 64, 14, 128, 4, 2, 1),
    ];
    // Transposed convolutions of the generators (same tuple, h is the input size).
    let mut convts = vec![
        ("W1 G.ct1", NZ, 1, 256, 7, 1, 0),
        ("W1 G.ct2", 256, 7, 128, 4, 2, 1),
        ("W1 G.ct3", 128, 14, 1, 4, 2, 1),
    ];
    if big {
        convs.extend([
            ("W2 D.c2", 64, 32, 128, 4, 2, 1),
            ("W2 D.c3", 128, 16, 256, 4, 2, 1),
        ]);
        convts.extend([
            ("W2 G.ct3", 256, 8, 128, 4, 2, 1),
            ("W2 G.ct4", 128, 16, 64, 4, 2, 1),
        ]);
    }
    for (name, ci, h, co, k, s, p) in convs {
        let params = Conv2dParams::new(s, p).unwrap();
        let oh = params.out_size(h, k).unwrap();
        let x = Tensor::randn(0.0, 1.0, [batch, ci, h, h], &mut rng, &cpu);
        let w = Tensor::randn(0.0, 0.02, [co, ci, k, k], &mut rng, &cpu);
        let gy = Tensor::randn(0.0, 1.0, [batch, co, oh, oh], &mut rng, &cpu);
        let flops = 2.0 * (batch * co * oh * oh * ci * k * k) as f64;
        let shape = format!("{ci}->{co} k{k}s{s}p{p} {h}->{oh}");
        compare(
            &gpu,
            reps,
            &format!("conv2d {name}"),
            &shape,
            flops,
            &[x.clone(), w.clone()],
            &|t| t[0].conv2d(&t[1], params).unwrap(),
        );
        let extra = h + 2 * p - ((oh - 1) * s + k);
        let tp = ConvTranspose2dParams {
            stride: s,
            padding: p,
            output_padding: [extra, extra],
        };
        compare(
            &gpu,
            reps,
            &format!("  dx {name}"),
            &shape,
            flops,
            &[gy.clone(), w],
            &|t| t[0].conv_transpose2d(&t[1], tp).unwrap(),
        );
        let wp = Conv2dWeightGradParams {
            conv: params,
            kernel_h: k,
            kernel_w: k,
        };
        compare(
            &gpu,
            reps,
            &format!("  dw {name}"),
            &shape,
            flops,
            &[x, gy],
            &|t| t[0].conv2d_weight_grad(&t[1], wp).unwrap(),
        );
    }
    for (name, ci, h, co, k, s, p) in convts {
        let params = ConvTranspose2dParams::new(s, p, 0).unwrap();
        let oh = params.out_size(h, k, 0).unwrap();
        let x = Tensor::randn(0.0, 1.0, [batch, ci, h, h], &mut rng, &cpu);
        let w = Tensor::randn(0.0, 0.02, [ci, co, k, k], &mut rng, &cpu);
        let gy = Tensor::randn(0.0, 1.0, [batch, co, oh, oh], &mut rng, &cpu);
        let flops = 2.0 * (batch * ci * h * h * co * k * k) as f64;
        let shape = format!("{ci}->{co} k{k}s{s}p{p} {h}->{oh}");
        compare(
            &gpu,
            reps,
            &format!("convT {name}"),
            &shape,
            flops,
            &[x.clone(), w.clone()],
            &|t| t[0].conv_transpose2d(&t[1], params).unwrap(),
        );
        let conv = params.as_conv();
        compare(
            &gpu,
            reps,
            &format!("  dx {name}"),
            &shape,
            flops,
            &[gy.clone(), w],
            &|t| t[0].conv2d(&t[1], conv).unwrap(),
        );
        let wp = Conv2dWeightGradParams {
            conv,
            kernel_h: k,
            kernel_w: k,
        };
        compare(
            &gpu,
            reps,
            &format!("  dw {name}"),
            &shape,
            flops,
            &[gy, x],
            &|t| t[0].conv2d_weight_grad(&t[1], wp).unwrap(),
        );
    }

    // D's last layer: linear 6272 -> 1.
    let x = Tensor::randn(0.0, 1.0, [batch, 6272], &mut rng, &cpu);
    let w = Tensor::randn(0.0, 0.02, [1, 6272], &mut rng, &cpu);
    compare(
        &gpu,
        reps,
        "linear W1 D.fc",
        "6272->1",
        2.0 * (batch * 6272) as f64,
        &[x, w],
        &|t| t[0].linear(&t[1], None).unwrap(),
    );
    // Batch norm (training mode) forward and its fused backward.
    for (c, h) in [(256, 7), (128, 14)] {
        let x = Tensor::randn(0.0, 1.0, [batch, c, h, h], &mut rng, &cpu);
        let g = Tensor::randn(0.0, 1.0, [batch, c, h, h], &mut rng, &cpu);
        let shape = format!("[{batch}, {c}, {h}, {h}]");
        compare(
            &gpu,
            reps,
            "batch_norm fwd",
            &shape,
            0.0,
            std::slice::from_ref(&x),
            &|t| {
                t[0].batch_norm(None, None, None, true, BatchNormParams::default())
                    .unwrap()
            },
        );
        compare(
            &gpu,
            reps,
            "batch_norm fwd+bwd",
            &shape,
            0.0,
            &[x, g],
            &|t| {
                let x = t[0].detach();
                x.set_requires_grad(true);
                let y = x.batch_normalize(1e-5).unwrap().0;
                ganforge::autograd::grad(&[y], Some(&[t[1].clone()]), &[x], false).unwrap()[0]
                    .clone()
                    .unwrap()
            },
        );
    }

    // Whole W1 training steps (D and G, Adam): perf.md's FLOP count scaled to the batch.
    let step_flops = step_gflop(Workload::W1)[0].1 * 1e9 * batch as f64 / 64.0;
    let cpu_ms = w1_steps(&cpu, batch, steps);
    let gpu_ms = w1_steps(&gpu, batch, steps);
    row(
        "W1 training step",
        &format!("batch {batch}"),
        cpu_ms,
        gpu_ms,
        step_flops,
    );
    if let Device::Gpu(g) = &gpu {
        let (hits, misses, held) = g.pool_stats();
        println!(
            "gpu buffer pool: {hits} reuses, {misses} allocations, {} MiB held; {} pipelines",
            held >> 20,
            g.pipelines_created()
        );
    }
}
