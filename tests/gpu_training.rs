//! Whole training runs on the GPU against the same runs on the CPU.
//!
//! - W1 (src/bench.rs): DCGAN on 1x28x28 with batch norm, BCE with logits, Adam(2e-4,
//!   (0.5, 0.999)), exactly the W1 networks and step, at batch 2 (lavapipe runs GPU kernels
//!   on the CPU, slowly) for 10 steps from a fixed seed.
//!
//!   Tolerance, stated: the GPU sums in other orders (f32 tree reductions, tiled GEMMs), so its
//!   losses differ from the CPU's in the last bits, and GAN training amplifies last-bit
//!   differences: Adam's first steps move every weight by about `lr` whatever the size of its
//!   gradient, so a weight whose gradient is near zero can step either way. Measured on the CPU
//!   alone, perturbing the initial weights by 1e-6 (relative) moves the losses by ~1e-3 after
//!   3 steps and ~1e-2 after 5. So the test calibrates itself: a second CPU run from weights
//!   perturbed by 1e-6 measures that sensitivity, and the GPU must stay within
//!   `1e-4 + 1e-4 |cpu| + 4 * (largest perturbed-run gap so far)` of the CPU at every step.
//!   The first step must agree to `1e-4 + 1e-4 |cpu|`, before any amplification.
//! - Every GAN family of `src/gan` (vanilla, DCGAN, CGAN, WGAN with clipping and RMSprop,
//!   WGAN-GP with its second-order penalty, LSGAN, SNGAN with spectral norm; EMA and label
//!   smoothing on) on 2-D points, 4 steps each, same losses on both devices.
//!
//! - During a GPU step nothing but the two scalar losses comes back to the host, and nothing
//!   but the step's data (the real batch and z) goes to the GPU (thread-local counters).

mod common;
mod gpu_support;

use ganforge::bench::{w1_discriminator, w1_generator, NZ};
use ganforge::gan::{DataShape, Gan, GanConfig, Generator, ModelKind};
use ganforge::nn::{Module, Sequential};
use ganforge::optim::{Adam, AdamConfig, Optimizer};
use ganforge::{Device, Rng, Tensor};
use gpu_support::gpu_or_skip;
use std::collections::HashMap;
use std::time::Instant;

/// One W1 GAN step, the same as `Bench::gan_step`: D on real (target `ones`) and detached fake
/// (target `zeros`), then G through the updated D. Returns `(loss_d, loss_g)`, not read back.
#[allow(clippy::too_many_arguments)]
fn w1_step(
    g: &Sequential,
    d: &Sequential,
    opt_g: &mut Adam,
    opt_d: &mut Adam,
    real: &Tensor,
    z: &Tensor,
    ones: &Tensor,
    zeros: &Tensor,
) -> (Tensor, Tensor) {
    opt_d.zero_grad();
    let fake = g.forward(z).unwrap();
    let loss_d = d
        .forward(real)
        .unwrap()
        .bce_with_logits(ones)
        .unwrap()
        .add(
            &d.forward(&fake.detach())
                .unwrap()
                .bce_with_logits(zeros)
                .unwrap(),
        )
        .unwrap();
    loss_d.backward().unwrap();
    opt_d.step().unwrap();
    opt_g.zero_grad();
    let loss_g = d.forward(&fake).unwrap().bce_with_logits(ones).unwrap();
    loss_g.backward().unwrap();
    opt_g.step().unwrap();
    (loss_d, loss_g)
}

/// `steps` W1 GAN steps at `batch`; returns `(loss_d, loss_g)` per step. With `perturb`,
/// every initial weight is scaled by `1 +- perturb` (alternating signs) first.
fn w1_run(dev: &Device, steps: usize, batch: usize, perturb: f32) -> Vec<(f32, f32)> {
    let mut rng = Rng::new(0);
    let g = w1_generator(&mut rng, dev).unwrap();
    let d = w1_discriminator(true, &mut rng, dev).unwrap();
    if perturb != 0.0 {
        for p in g.parameters().iter().chain(d.parameters().iter()) {
            let v: Vec<f32> = p
                .to_vec()
                .iter()
                .enumerate()
                .map(|(i, w)| w * (1.0 + if i % 2 == 0 { perturb } else { -perturb }))
                .collect();
            p.write_from_slice(&v).unwrap();
        }
    }
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
    let ones = Tensor::ones([batch, 1], dev);
    let zeros = Tensor::zeros([batch, 1], dev);
    let mut losses = Vec::new();
    for _ in 0..steps {
        let real = Tensor::rand_uniform(-1.0, 1.0, [batch, 1, 28, 28], &mut rng, dev);
        let z = Tensor::randn(0.0, 1.0, [batch, NZ], &mut rng, dev);
        let (loss_d, loss_g) = w1_step(&g, &d, &mut opt_g, &mut opt_d, &real, &z, &ones, &zeros);
        losses.push((loss_d.to_scalar().unwrap(), loss_g.to_scalar().unwrap()));
    }
    losses
}

#[test]
fn gpu_w1_dcgan_training_gives_the_cpu_losses() {
    let Some(gpu) = gpu_or_skip("gpu_w1_dcgan_training_gives_the_cpu_losses") else {
        return;
    };
    let (steps, batch) = (10, 2);
    let t = Instant::now();
    let cpu = w1_run(&Device::Cpu, steps, batch, 0.0);
    let cpu_s = t.elapsed().as_secs_f64();
    let nudged = w1_run(&Device::Cpu, steps, batch, 1e-6);
    let t = Instant::now();
    let on_gpu = w1_run(&gpu, steps, batch, 0.0);
    let gpu_s = t.elapsed().as_secs_f64();
    println!("step  loss      cpu        gpu        |gpu-cpu|  |cpu(1e-6)-cpu|");
    let mut sensitivity = [0.0f64; 2];
    for i in 0..steps {
        let rows = [
            ("loss_d", cpu[i].0, on_gpu[i].0, nudged[i].0),
            ("loss_g", cpu[i].1, on_gpu[i].1, nudged[i].1),
        ];
        for (k, (what, c, g, n)) in rows.into_iter().enumerate() {
            let (c, g, n) = (c as f64, g as f64, n as f64);
            let (gap, nudge) = ((g - c).abs(), (n - c).abs());
            sensitivity[k] = sensitivity[k].max(nudge);
            println!("{i:>4}  {what}  {c:<9.6}  {g:<9.6}  {gap:<9.2e}  {nudge:.2e}");
            let base = 1e-4 + 1e-4 * c.abs();
            let allowed = if i == 0 {
                base
            } else {
                base + 4.0 * sensitivity[k]
            };
            assert!(
                gap <= allowed,
                "step {i}: {what} cpu {c} gpu {g}: gap {gap:e} > {allowed:e} (a 1e-6 nudge of \
                 the CPU run moved it by {nudge:e})"
            );
        }
    }
    // The run trains: G's loss moves.
    assert!((cpu[0].1 - cpu[steps - 1].1).abs() > 1e-3, "{cpu:?}");
    println!("W1 at batch {batch}, {steps} steps: cpu {cpu_s:.1} s, gpu {gpu_s:.1} s");
}

#[test]
fn gpu_every_gan_family_trains_like_the_cpu() {
    let Some(gpu) = gpu_or_skip("gpu_every_gan_family_trains_like_the_cpu") else {
        return;
    };
    for model in ModelKind::ALL {
        let shape = DataShape::points(if model == ModelKind::Cgan { 3 } else { 0 });
        let mut cfg = GanConfig::defaults_for_data(model, &shape);
        cfg.hidden = 32;
        cfg.latent_dim = 8;
        cfg.n_critic = cfg.n_critic.min(2);
        cfg.ema_decay = 0.9;
        if model.supports_label_smoothing() {
            cfg.label_smoothing = 0.1;
        }
        let mut runs = Vec::new();
        for dev in [Device::Cpu, gpu.clone()] {
            let mut rng = Rng::new(7);
            let mut gan = Gan::new(&cfg, &shape, &mut rng, &dev).unwrap();
            let mut data = Rng::new(8);
            let mut losses = Vec::new();
            for _ in 0..4 {
                let real = Tensor::randn(0.0, 1.0, [16, 2], &mut data, &dev);
                let labels: Vec<usize> = (0..16).map(|i| i % 3).collect();
                let labels = (model == ModelKind::Cgan).then_some(&labels[..]);
                losses.extend(gan.train_step(&real, labels, &mut rng).unwrap());
            }
            let z = Tensor::randn(0.0, 1.0, [5, cfg.latent_dim], &mut data, &dev);
            let labels = [0, 1, 2, 0, 1];
            let labels = (model == ModelKind::Cgan).then_some(&labels[..]);
            let sample = gan.generate(&z, labels, true).unwrap().to_vec();
            runs.push((losses, sample));
        }
        let ((lc, sc), (lg, sg)) = (&runs[0], &runs[1]);
        assert_eq!(lc.len(), lg.len(), "{model:?}");
        for ((name, c), (_, g)) in lc.iter().zip(lg) {
            assert!(
                (c - g).abs() <= 1e-4 + 1e-3 * c.abs(),
                "{model:?}: {name} cpu {c} gpu {g}"
            );
        }
        let want: Vec<f64> = sc.iter().map(|&v| v as f64).collect();
        common::assert_close(&format!("{model:?}: EMA samples"), sg, &want, 1e-4, 1e-3);
    }
}

/// The R1 penalty on a DCGAN (batch norm in D, so its second-order rules run too) gives the
/// CPU's losses and penalty on the GPU, on the steps it is due (every 2nd here).
#[test]
fn gpu_r1_penalty_on_a_dcgan_matches_the_cpu() {
    let Some(gpu) = gpu_or_skip("gpu_r1_penalty_on_a_dcgan_matches_the_cpu") else {
        return;
    };
    let shape = DataShape::image(1, 28, 28, 0);
    let mut cfg = GanConfig::defaults_for_data(ModelKind::Dcgan, &shape);
    (cfg.ngf, cfg.ndf, cfg.latent_dim) = (4, 4, 8);
    (cfg.r1_gamma, cfg.r1_every) = (1.0, 2);
    let mut runs = Vec::new();
    for dev in [Device::Cpu, gpu.clone()] {
        let mut rng = Rng::new(17);
        let mut gan = Gan::new(&cfg, &shape, &mut rng, &dev).unwrap();
        let mut data = Rng::new(18);
        let mut logs = Vec::new();
        for _ in 0..3 {
            let real = Tensor::rand_uniform(-1.0, 1.0, [4, 1, 28, 28], &mut data, &dev);
            logs.extend(gan.train_step(&real, None, &mut rng).unwrap());
        }
        runs.push(logs);
    }
    let (cpu, gpu_logs) = (&runs[0], &runs[1]);
    assert_eq!(cpu.iter().filter(|(k, _)| k == "r1").count(), 2, "{cpu:?}");
    assert_eq!(cpu.len(), gpu_logs.len());
    for ((name, c), (gname, g)) in cpu.iter().zip(gpu_logs) {
        assert_eq!(name, gname);
        assert!(
            (c - g).abs() <= 1e-4 + 1e-3 * c.abs(),
            "{name}: cpu {c} gpu {g}"
        );
    }
}

/// Standing statistics (the EMA generator's batch norm, recomputed from its own
/// training-mode passes with the in-place running-average ops) give the same running
/// statistics and eval-mode samples on the GPU as on the CPU.
#[test]
fn gpu_standing_statistics_match_the_cpu() {
    let Some(gpu) = gpu_or_skip("gpu_standing_statistics_match_the_cpu") else {
        return;
    };
    let shape = DataShape::image(1, 28, 28, 10);
    let cfg = GanConfig {
        conditional: true,
        latent_dim: 8,
        ngf: 4,
        ndf: 4,
        ..GanConfig::defaults_for(ModelKind::Dcgan)
    };
    let cpu_g = Generator::new(&cfg, &shape, &mut Rng::new(3), &Device::Cpu).unwrap();
    let gpu_g = Generator::new(&cfg, &shape, &mut Rng::new(4), &gpu).unwrap();
    let weights: HashMap<String, Tensor> = cpu_g.state_dict().into_iter().collect();
    gpu_g.load_state_dict(&weights, true).unwrap();
    for g in [&cpu_g, &gpu_g] {
        g.set_training(false);
        g.standing_stats(3, 16, &mut Rng::new(5)).unwrap();
        assert!(!g.is_training(), "the mode is restored");
    }
    let (cpu_bufs, gpu_bufs) = (cpu_g.named_buffers(), gpu_g.named_buffers());
    assert_eq!(cpu_bufs.len(), gpu_bufs.len(), "buffer count");
    assert!(!cpu_bufs.is_empty(), "the generator has batch-norm buffers");
    for ((name, c), (_, g)) in cpu_bufs.iter().zip(gpu_bufs) {
        let want: Vec<f64> = c.to_vec().iter().map(|&v| v as f64).collect();
        common::assert_close(name, &g.try_to_vec().unwrap(), &want, 1e-5, 1e-4);
    }
    let z = Tensor::randn(0.0, 1.0, [6, 8], &mut Rng::new(6), &Device::Cpu);
    let labels = [0, 1, 2, 7, 8, 9];
    let want: Vec<f64> = cpu_g
        .generate(&z, Some(&labels))
        .unwrap()
        .to_vec()
        .iter()
        .map(|&v| v as f64)
        .collect();
    let got = gpu_g
        .generate(&z.to_device(&gpu).unwrap(), Some(&labels))
        .unwrap()
        .try_to_vec()
        .unwrap();
    common::assert_close("eval-mode samples", &got, &want, 1e-4, 1e-3);
    // Noise drawn on the CPU (as `--eval-every`'s monitor and `sample` draw it) is taken over.
    let got = gpu_g.generate(&z, Some(&labels)).unwrap();
    assert_eq!(got.device(), gpu, "samples stay on G's device");
    common::assert_close("CPU noise", &got.try_to_vec().unwrap(), &want, 1e-4, 1e-3);
}

/// `ganforge train --device gpu --eval-every N` measures the generator during training (the
/// monitor draws its noise on the CPU; the first real-GPU run stopped there with "tensors on
/// different devices").
#[test]
fn gpu_train_with_eval_every_logs_the_measures() {
    if gpu_or_skip("gpu_train_with_eval_every_logs_the_measures").is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("ganforge-gpu-eval-every-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ganforge"))
        .args([
            "train", "--device", "gpu", "--data", "ring8", "--steps", "20",
        ])
        .args(["--batch-size", "32", "--hidden", "16", "--eval-every", "10"])
        .arg("--out")
        .arg(&dir)
        .output()
        .expect("run ganforge");
    assert!(
        out.status.success(),
        "train failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = ganforge::io::read_metrics(&dir.join("metrics.jsonl")).unwrap();
    let measured: Vec<u64> = rows
        .iter()
        .filter(|(_, v)| v.contains_key("modes_covered_ring8"))
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(measured, vec![10, 20]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gpu_training_step_moves_only_data_in_and_losses_out() {
    use ganforge::backend::gpu::transfer_stats;
    let Some(gpu) = gpu_or_skip("gpu_training_step_moves_only_data_in_and_losses_out") else {
        return;
    };
    // Step 1 creates the optimizer state; step 2 is a steady-state step.
    let before = std::cell::Cell::new(None);
    let mut rng = Rng::new(3);
    let g = w1_generator(&mut rng, &gpu).unwrap();
    let d = w1_discriminator(true, &mut rng, &gpu).unwrap();
    let (mut opt_g, mut opt_d) = (
        Adam::new(g.parameters(), AdamConfig::default()),
        Adam::new(d.parameters(), AdamConfig::default()),
    );
    let batch = 2;
    for step in 0..2 {
        if step == 1 {
            before.set(Some(transfer_stats()));
        }
        let real = Tensor::rand_uniform(-1.0, 1.0, [batch, 1, 28, 28], &mut rng, &gpu);
        let z = Tensor::randn(0.0, 1.0, [batch, NZ], &mut rng, &gpu);
        let ones = Tensor::ones([batch, 1], &gpu);
        let zeros = Tensor::zeros([batch, 1], &gpu);
        let (loss_d, loss_g) = w1_step(&g, &d, &mut opt_g, &mut opt_d, &real, &z, &ones, &zeros);
        assert!(loss_d.to_scalar().unwrap().is_finite() && loss_g.to_scalar().unwrap().is_finite());
    }
    let (a, b) = (before.get().unwrap(), transfer_stats());
    let real_bytes = (batch * 28 * 28 * 4) as u64;
    let z_bytes = (batch * NZ * 4) as u64;
    assert_eq!(
        (b.uploads - a.uploads, b.upload_bytes - a.upload_bytes),
        (2, real_bytes + z_bytes),
        "uploads in one step: only the real batch and z"
    );
    assert_eq!(
        (
            b.readbacks - a.readbacks,
            b.readback_bytes - a.readback_bytes
        ),
        (2, 8),
        "readbacks in one step: only the two f32 losses"
    );
}
