//! The reference workloads W1-W4 of `../shared/anchors/perf.md`, layer for layer, and a timer
//! that prints results in the same form as the PyTorch script there (`train_torch.py`), so the
//! two can be run alternately and compared in one sitting.
//!
//! - W1 dcgan-mnist: DCGAN on 1x28x28, BN, BCE-with-logits, Adam(2e-4, (0.5, 0.999)).
//! - W2 dcgan-64: pytorch/examples/dcgan on 3x64x64 (the final Sigmoid folded into the loss).
//! - W3 mlp-gan-mnist: MLP G 100-256-512-1024-784, D 784-512-256-1.
//! - W4 wgan-gp-mnist: W1's G, W1's D without BN; critic step with the gradient penalty
//!   (second-order autodiff) and generator step, timed separately.
//!
//! One GAN step (W1-W3), as `GanStep` in perf/gan_models.py: `fake = G(z)`; D loss =
//! BCE(D(real), 1) + BCE(D(fake.detach()), 0); D step; G loss = BCE(D(fake), 1) with the
//! updated D; G step. Batch 64, z ~ N(0, 1), "real" ~ U(-1, 1).

use crate::autograd::{self, no_grad};
use crate::error::{Error, Result};
use crate::nn::{
    init, BatchNorm, Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig, Flatten,
    LeakyRelu, Linear, LinearConfig, Module, Relu, Reshape, Sequential, Tanh,
};
use crate::ops::conv2d::conv2d_flops;
use crate::ops::conv_transpose2d::conv_transpose2d_flops;
use crate::ops::matmul::matmul_flops;
use crate::ops::BatchNormParams;
use crate::optim::{Adam, AdamConfig, Optimizer};
use crate::tensor::{Rng, Tensor};
use crate::Device;
use std::time::Instant;

/// Batch size of every workload.
pub const BATCH: usize = 64;
/// Latent size of every generator.
pub const NZ: usize = 100;
/// The 2-thread fp32 GEMM ceiling of the reference machine (perf.md), GFLOP/s.
pub const CEILING_GFLOPS: f64 = 190.0;

/// The four workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// DCGAN on 1x28x28 (MNIST-sized).
    W1,
    /// DCGAN on 3x64x64 (pytorch/examples/dcgan).
    W2,
    /// MLP GAN on 784-vectors.
    W3,
    /// WGAN-GP on 1x28x28: critic step and generator step.
    W4,
}

impl Workload {
    /// The name the reference script prints ("w1", ...).
    pub fn name(self) -> &'static str {
        match self {
            Workload::W1 => "w1",
            Workload::W2 => "w2",
            Workload::W3 => "w3",
            Workload::W4 => "w4",
        }
    }
}

/// One timed series: a name as printed after `RESULT ganforge`, per-step ms, and the FLOPs of
/// one step (conv/convT/linear only, as perf.md counts them).
#[derive(Clone, Debug)]
pub struct Series {
    /// e.g. "w1", "w4-critic".
    pub name: String,
    /// Wall time of each timed step, ms.
    pub step_ms: Vec<f64>,
    /// FLOPs of one step.
    pub flops: f64,
}

impl Series {
    /// Median step time, ms.
    pub fn median_ms(&self) -> f64 {
        let mut v = self.step_ms.clone();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return f64::NAN;
        }
        if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            0.5 * (v[v.len() / 2 - 1] + v[v.len() / 2])
        }
    }
    /// FLOPs / median time.
    pub fn gflops(&self) -> f64 {
        self.flops / self.median_ms() / 1e6
    }
}

// ---- FLOP counting (perf.md "FLOPs") ---------------------------------------------------------

/// MACs of each layer of a network's forward pass, first layer first.
struct LayerMacs(Vec<f64>);

impl LayerMacs {
    fn total(&self) -> f64 {
        self.0.iter().sum()
    }
    fn first(&self) -> f64 {
        self.0[0]
    }
}

// The MACs are half the FLOPs of each op's own formula (`src/ops/<op>.rs`), the same ones
// `ganforge profile` reports per op.

/// `N*C_out*OH*OW*C_in*k^2`.
fn conv_macs(n: usize, c_in: usize, c_out: usize, out_hw: usize, k: usize) -> f64 {
    conv2d_flops(n, c_in, c_out, (out_hw, out_hw), (k, k)) / 2.0
}
/// `N*C_in*H*W*C_out*k^2`.
fn conv_t_macs(n: usize, c_in: usize, in_hw: usize, c_out: usize, k: usize) -> f64 {
    conv_transpose2d_flops(n, c_in, (in_hw, in_hw), c_out, (k, k)) / 2.0
}
/// `N*in*out` (a `[N, in] x [in, out]` matmul).
fn linear_macs(n: usize, i: usize, o: usize) -> f64 {
    matmul_flops(1, n, o, i) / 2.0
}

/// perf.md's step formula with G forward = g, D forward = d FLOPs (2*MACs) and first layers
/// g0, d0: `[g + 2d + 2(d + (d - d0))] + [d + 2d + (g + (g - g0))]`.
fn gan_step_flops(g: &LayerMacs, d: &LayerMacs) -> f64 {
    let (gf, df) = (2.0 * g.total(), 2.0 * d.total());
    let (g0, d0) = (2.0 * g.first(), 2.0 * d.first());
    (gf + 2.0 * df + 2.0 * (df + (df - d0))) + (df + 2.0 * df + (gf + (gf - g0)))
}

fn w1_macs() -> (LayerMacs, LayerMacs) {
    let n = BATCH;
    let g = LayerMacs(vec![
        conv_t_macs(n, NZ, 1, 256, 7),
        conv_t_macs(n, 256, 7, 128, 4),
        conv_t_macs(n, 128, 14, 1, 4),
    ]);
    let d = LayerMacs(vec![
        conv_macs(n, 1, 64, 14, 4),
        conv_macs(n, 64, 128, 7, 4),
        linear_macs(n, 6272, 1),
    ]);
    (g, d)
}

fn w2_macs() -> (LayerMacs, LayerMacs) {
    let n = BATCH;
    let g = LayerMacs(vec![
        conv_t_macs(n, NZ, 1, 512, 4),
        conv_t_macs(n, 512, 4, 256, 4),
        conv_t_macs(n, 256, 8, 128, 4),
        conv_t_macs(n, 128, 16, 64, 4),
        conv_t_macs(n, 64, 32, 3, 4),
    ]);
    let d = LayerMacs(vec![
        conv_macs(n, 3, 64, 32, 4),
        conv_macs(n, 64, 128, 16, 4),
        conv_macs(n, 128, 256, 8, 4),
        conv_macs(n, 256, 512, 4, 4),
        conv_macs(n, 512, 1, 1, 4),
    ]);
    (g, d)
}

fn w3_macs() -> (LayerMacs, LayerMacs) {
    let n = BATCH;
    let g = LayerMacs(vec![
        linear_macs(n, NZ, 256),
        linear_macs(n, 256, 512),
        linear_macs(n, 512, 1024),
        linear_macs(n, 1024, 784),
    ]);
    let d = LayerMacs(vec![
        linear_macs(n, 784, 512),
        linear_macs(n, 512, 256),
        linear_macs(n, 256, 1),
    ]);
    (g, d)
}

/// The FLOPs of one step of `w` (W4: critic and generator steps), in GFLOP.
pub fn step_gflop(w: Workload) -> Vec<(String, f64)> {
    match w {
        Workload::W1 => vec![(
            "w1".into(),
            gan_step_flops(&w1_macs().0, &w1_macs().1) / 1e9,
        )],
        Workload::W2 => vec![(
            "w2".into(),
            gan_step_flops(&w2_macs().0, &w2_macs().1) / 1e9,
        )],
        Workload::W3 => vec![(
            "w3".into(),
            gan_step_flops(&w3_macs().0, &w3_macs().1) / 1e9,
        )],
        // The double-backward of the gradient penalty is not covered by the simple formula;
        // these are PyTorch's FlopCounterMode totals for the same steps (perf.md).
        Workload::W4 => vec![("w4-critic".into(), 13.63), ("w4-gen".into(), 12.89)],
    }
}

// ---- the networks ----------------------------------------------------------------------------

/// DCGAN's up-sampling layer: a transposed conv with kernel 4, stride 2, padding 1, no bias
/// (it doubles the image size); other layers override fields with struct-update syntax.
fn up(in_channels: usize, out_channels: usize) -> ConvTranspose2dConfig {
    ConvTranspose2dConfig {
        in_channels,
        out_channels,
        kernel_size: 4,
        stride: 2,
        padding: 1,
        output_padding: 0,
        bias: false,
    }
}

/// DCGAN's down-sampling layer: a conv with kernel 4, stride 2, padding 1, no bias (it halves
/// the image size).
fn down(in_channels: usize, out_channels: usize) -> Conv2dConfig {
    Conv2dConfig {
        in_channels,
        out_channels,
        kernel_size: 4,
        stride: 2,
        padding: 1,
        bias: false,
    }
}

fn bn(c: usize, dev: &Device) -> Result<BatchNorm> {
    BatchNorm::new(c, BatchNormParams::default(), dev)
}

fn linear(in_features: usize, out_features: usize, rng: &mut Rng, dev: &Device) -> Result<Linear> {
    let cfg = LinearConfig {
        in_features,
        out_features,
        bias: true,
    };
    Linear::new(cfg, rng, dev)
}

/// W1's generator (also W4's): z -> 256x7x7 -> 128x14x14 -> 1x28x28.
pub fn w1_generator(rng: &mut Rng, dev: &Device) -> Result<Sequential> {
    let first = ConvTranspose2dConfig {
        kernel_size: 7,
        stride: 1,
        padding: 0,
        ..up(NZ, 256)
    };
    let last = ConvTranspose2dConfig {
        bias: true,
        ..up(128, 1)
    };
    Ok(Sequential::new()
        .push(Reshape(vec![NZ, 1, 1]))
        .push(ConvTranspose2d::new(first, rng, dev)?)
        .push(bn(256, dev)?)
        .push(Relu)
        .push(ConvTranspose2d::new(up(256, 128), rng, dev)?)
        .push(bn(128, dev)?)
        .push(Relu)
        .push(ConvTranspose2d::new(last, rng, dev)?)
        .push(Tanh))
}

/// W1's discriminator (`norm`) or W4's critic (no BN, conv2 with bias); outputs logits `[N, 1]`.
pub fn w1_discriminator(norm: bool, rng: &mut Rng, dev: &Device) -> Result<Sequential> {
    let first = Conv2dConfig {
        bias: true,
        ..down(1, 64)
    };
    let second = Conv2dConfig {
        bias: !norm,
        ..down(64, 128)
    };
    let mut d = Sequential::new()
        .push(Conv2d::new(first, rng, dev)?)
        .push(LeakyRelu(0.2))
        .push(Conv2d::new(second, rng, dev)?);
    if norm {
        d = d.push(bn(128, dev)?);
    }
    Ok(d.push(LeakyRelu(0.2))
        .push(Flatten)
        .push(linear(128 * 7 * 7, 1, rng, dev)?))
}

/// W2's generator: pytorch/examples/dcgan with ngf = 64, nc = 3.
pub fn w2_generator(rng: &mut Rng, dev: &Device) -> Result<Sequential> {
    let first = ConvTranspose2dConfig {
        stride: 1,
        padding: 0,
        ..up(NZ, 512)
    };
    let mut g = Sequential::new()
        .push(Reshape(vec![NZ, 1, 1]))
        .push(ConvTranspose2d::new(first, rng, dev)?)
        .push(bn(512, dev)?)
        .push(Relu);
    for (c_in, c_out) in [(512, 256), (256, 128), (128, 64)] {
        g = g
            .push(ConvTranspose2d::new(up(c_in, c_out), rng, dev)?)
            .push(bn(c_out, dev)?)
            .push(Relu);
    }
    Ok(g.push(ConvTranspose2d::new(up(64, 3), rng, dev)?)
        .push(Tanh))
}

/// W2's discriminator (logits; the reference's Sigmoid is folded into BCE-with-logits).
pub fn w2_discriminator(rng: &mut Rng, dev: &Device) -> Result<Sequential> {
    let mut d = Sequential::new()
        .push(Conv2d::new(down(3, 64), rng, dev)?)
        .push(LeakyRelu(0.2));
    for (c_in, c_out) in [(64, 128), (128, 256), (256, 512)] {
        d = d
            .push(Conv2d::new(down(c_in, c_out), rng, dev)?)
            .push(bn(c_out, dev)?)
            .push(LeakyRelu(0.2));
    }
    let last = Conv2dConfig {
        stride: 1,
        padding: 0,
        ..down(512, 1)
    };
    Ok(d.push(Conv2d::new(last, rng, dev)?).push(Flatten))
}

/// W3's MLP generator.
pub fn w3_generator(rng: &mut Rng, dev: &Device) -> Result<Sequential> {
    Ok(Sequential::new()
        .push(linear(NZ, 256, rng, dev)?)
        .push(LeakyRelu(0.2))
        .push(linear(256, 512, rng, dev)?)
        .push(LeakyRelu(0.2))
        .push(linear(512, 1024, rng, dev)?)
        .push(LeakyRelu(0.2))
        .push(linear(1024, 784, rng, dev)?)
        .push(Tanh))
}

/// W3's MLP discriminator (logits).
pub fn w3_discriminator(rng: &mut Rng, dev: &Device) -> Result<Sequential> {
    Ok(Sequential::new()
        .push(linear(784, 512, rng, dev)?)
        .push(LeakyRelu(0.2))
        .push(linear(512, 256, rng, dev)?)
        .push(LeakyRelu(0.2))
        .push(linear(256, 1, rng, dev)?))
}

fn adam(params: Vec<Tensor>) -> Adam {
    Adam::new(
        params,
        AdamConfig {
            lr: 2e-4,
            betas: (0.5, 0.999),
            ..AdamConfig::default()
        },
    )
}

/// A workload's networks, optimizers and data shape, ready to step.
pub struct Bench {
    workload: Workload,
    g: Sequential,
    d: Sequential,
    opt_g: Adam,
    opt_d: Adam,
    real_shape: Vec<usize>,
    rng: Rng,
    dev: Device,
}

impl Bench {
    /// Builds the workload on `dev` with a fixed seed.
    pub fn new(workload: Workload, dev: &Device) -> Result<Bench> {
        let mut rng = Rng::new(0);
        let (g, d, real_shape) = match workload {
            Workload::W1 => (
                w1_generator(&mut rng, dev)?,
                w1_discriminator(true, &mut rng, dev)?,
                vec![BATCH, 1, 28, 28],
            ),
            Workload::W2 => {
                let (g, d) = (
                    w2_generator(&mut rng, dev)?,
                    w2_discriminator(&mut rng, dev)?,
                );
                init::dcgan_init(&g, &mut rng)?;
                init::dcgan_init(&d, &mut rng)?;
                (g, d, vec![BATCH, 3, 64, 64])
            }
            Workload::W3 => (
                w3_generator(&mut rng, dev)?,
                w3_discriminator(&mut rng, dev)?,
                vec![BATCH, 784],
            ),
            Workload::W4 => (
                w1_generator(&mut rng, dev)?,
                w1_discriminator(false, &mut rng, dev)?,
                vec![BATCH, 1, 28, 28],
            ),
        };
        let (opt_g, opt_d) = (adam(g.parameters()), adam(d.parameters()));
        Ok(Bench {
            workload,
            g,
            d,
            opt_g,
            opt_d,
            real_shape,
            rng,
            dev: dev.clone(),
        })
    }

    /// Fresh "real" data U(-1, 1) and noise z ~ N(0, 1).
    fn data(&mut self) -> (Tensor, Tensor) {
        let real =
            Tensor::rand_uniform(-1.0, 1.0, self.real_shape.clone(), &mut self.rng, &self.dev);
        let z = Tensor::randn(0.0, 1.0, [BATCH, NZ], &mut self.rng, &self.dev);
        (real, z)
    }

    /// One non-saturating GAN step (W1-W3); returns the G loss.
    pub fn gan_step(&mut self) -> Result<f32> {
        let (real, z) = self.data();
        let ones = Tensor::ones([BATCH, 1], &self.dev);
        let zeros = Tensor::zeros([BATCH, 1], &self.dev);
        self.opt_d.zero_grad();
        let fake = self.g.forward(&z)?;
        let loss_d = self
            .d
            .forward(&real)?
            .bce_with_logits(&ones)?
            .add(&self.d.forward(&fake.detach())?.bce_with_logits(&zeros)?)?;
        loss_d.backward()?;
        self.opt_d.step()?;
        self.opt_g.zero_grad();
        let loss_g = self.d.forward(&fake)?.bce_with_logits(&ones)?;
        loss_g.backward()?;
        self.opt_g.step()?;
        loss_g.to_scalar()
    }

    /// One WGAN-GP critic step (W4): `L = mean D(fake) - mean D(real) + 10 * GP`, where
    /// `GP = mean_i (||dD(x_hat_i)/dx_hat_i||_2 - 1)^2` and `x_hat = eps*real + (1-eps)*fake`.
    pub fn critic_step(&mut self) -> Result<f32> {
        let (real, z) = self.data();
        self.opt_d.zero_grad();
        let fake = {
            let _guard = no_grad();
            self.g.forward(&z)?
        };
        let eps = Tensor::rand_uniform(0.0, 1.0, [BATCH, 1, 1, 1], &mut self.rng, &self.dev);
        let x_hat = {
            let _guard = no_grad();
            eps.mul(&real)?.add(&eps.affine(-1.0, 1.0).mul(&fake)?)?
        };
        x_hat.set_requires_grad(true);
        let score = self.d.forward(&x_hat)?.sum_all()?;
        let g = autograd::grad(&[score], None, std::slice::from_ref(&x_hat), true)?
            .remove(0)
            .ok_or_else(|| Error::Autograd("critic output does not depend on its input".into()))?;
        let norms = g.flatten(1)?.sqr()?.sum(&[1], false)?.sqrt();
        let gp = norms.add_scalar(-1.0).sqr()?.mean_all()?;
        let loss = self
            .d
            .forward(&fake)?
            .mean_all()?
            .sub(&self.d.forward(&real)?.mean_all()?)?
            .add(&gp.mul_scalar(10.0))?;
        loss.backward()?;
        self.opt_d.step()?;
        loss.to_scalar()
    }

    /// One WGAN generator step (W4): `L = -mean D(G(z))`.
    pub fn generator_step(&mut self) -> Result<f32> {
        let (_, z) = self.data();
        self.opt_g.zero_grad();
        let loss = self.d.forward(&self.g.forward(&z)?)?.mean_all()?.neg();
        loss.backward()?;
        self.opt_g.step()?;
        loss.to_scalar()
    }

    /// Runs `warmup` untimed and `steps` timed steps, as `train_torch.py` does (W4: a
    /// generator step after every 5th critic step, at least 10 timed generator steps).
    pub fn run(&mut self, warmup: usize, steps: usize) -> Result<Vec<Series>> {
        let time = |f: &mut dyn FnMut() -> Result<f32>| -> Result<f64> {
            let t = Instant::now();
            let loss = f()?;
            if !loss.is_finite() {
                return Err(Error::invalid("bench", format!("non-finite loss {loss}")));
            }
            Ok(t.elapsed().as_secs_f64() * 1e3)
        };
        let flops: Vec<f64> = step_gflop(self.workload)
            .iter()
            .map(|(_, f)| f * 1e9)
            .collect();
        if self.workload != Workload::W4 {
            let mut ms = Vec::new();
            for i in 0..warmup + steps {
                let t = time(&mut || self.gan_step())?;
                if i >= warmup {
                    ms.push(t);
                }
            }
            return Ok(vec![Series {
                name: self.workload.name().into(),
                step_ms: ms,
                flops: flops[0],
            }]);
        }
        let (mut critic, mut gen) = (Vec::new(), Vec::new());
        for i in 0..warmup + steps {
            let t = time(&mut || self.critic_step())?;
            if i >= warmup {
                critic.push(t);
            }
            if i % 5 == 4 || i < warmup {
                let t = time(&mut || self.generator_step())?;
                if i >= warmup {
                    gen.push(t);
                }
            }
        }
        while gen.len() < 10 {
            gen.push(time(&mut || self.generator_step())?);
        }
        Ok(vec![
            Series {
                name: "w4-critic".into(),
                step_ms: critic,
                flops: flops[0],
            },
            Series {
                name: "w4-gen".into(),
                step_ms: gen,
                flops: flops[1],
            },
        ])
    }
}

/// The lines a run prints: per-step times and `RESULT ganforge <name> <device> median_ms X`
/// for each series (the form of the PyTorch reference script), then a Markdown table with
/// GFLOP/s and the share of the 190 GFLOP/s ceiling.
pub fn report(series: &[Series], device: &str) -> String {
    let mut out = String::new();
    for s in series {
        let per_step: Vec<String> = s.step_ms.iter().map(|t| format!("{t:.1}")).collect();
        out += &format!(
            "ganforge {} per-step ms: [{}]\n",
            s.name,
            per_step.join(", ")
        );
        out += &format!(
            "RESULT ganforge {} {device} median_ms {:.2}\n",
            s.name,
            s.median_ms()
        );
    }
    out += &format!(
        "\n| workload | median ms/step | GFLOP/step | GFLOP/s | % of {CEILING_GFLOPS} GFLOP/s |\n"
    );
    out += "|---|---|---|---|---|\n";
    for s in series {
        out += &format!(
            "| {} | {:.1} | {:.2} | {:.1} | {:.0}% |\n",
            s.name,
            s.median_ms(),
            s.flops / 1e9,
            s.gflops(),
            100.0 * s.gflops() / CEILING_GFLOPS
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The analytic counts equal perf.md's table (which equals FlopCounterMode).
    #[test]
    fn step_flops_match_the_reference_table() {
        let want = [
            (Workload::W1, 17.93),
            (Workload::W2, 158.86),
            (Workload::W3, 1.077),
        ];
        for (w, gflop) in want {
            let got = step_gflop(w)[0].1;
            assert!(
                (got - gflop).abs() / gflop < 2e-3,
                "{w:?}: {got} GFLOP, perf.md says {gflop}"
            );
        }
        let (g, d) = w1_macs();
        assert!(
            (2.0 * g.total() / 1e9 - 3.500).abs() < 2e-3
                && (2.0 * d.total() / 1e9 - 0.849).abs() < 2e-3
        );
    }

    /// Every workload builds and takes finite steps (shapes as in perf.md).
    #[test]
    fn workloads_step_with_finite_losses() {
        for w in [Workload::W1, Workload::W3, Workload::W4] {
            let mut b = Bench::new(w, &Device::Cpu).unwrap();
            let series = b.run(0, 1).unwrap();
            assert!(
                series
                    .iter()
                    .all(|s| s.step_ms.iter().all(|t| t.is_finite())),
                "{w:?}"
            );
        }
    }
}
