//! Parity with PyTorch on real layers, against fixtures that `scripts/make_fixtures.py` wrote
//! with torch 2.15 (float32, CPU, fixed seed). The fixtures are committed: these tests need no
//! Python, and a missing fixture is a failure, not a skip. The script's docstring defines every
//! stored key and the exact order of the DCGAN step.
//!
//! Every stored tensor is either an input or is compared (each fixture checks at the end that no
//! key went unused), with `|got - want| <= atol + 1e-4 * |want|`, `atol = 1e-5 * min(1, max|want|)`
//! (see [`Fixture::check`]).

mod common;

use common::assert_close;
use ganforge::nn::{
    prefixed, BatchNorm, Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig, Flatten,
    LeakyRelu, Linear, LinearConfig, Module, Relu, Sequential, Tanh,
};
use ganforge::ops::conv2d::Conv2dParams;
use ganforge::ops::norm::{BatchNormParams, RunningStats};
use ganforge::ops::ConvTranspose2dParams;
use ganforge::optim::{Adam, AdamConfig, Optimizer};
use ganforge::{autograd, Device, Rng, Tensor};
use safetensors::{Dtype, SafeTensors};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

const RTOL: f64 = 1e-4;

/// One fixture file; remembers which keys were read so [`Fixture::finish`] can insist that
/// every stored tensor took part.
struct Fixture {
    name: &'static str,
    st: SafeTensors<'static>,
    used: RefCell<BTreeSet<String>>,
}

impl Fixture {
    fn load(name: &'static str) -> Fixture {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("fixture {path} is missing ({e}); it is committed, regenerate it with scripts/make_fixtures.py")
        });
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        let st = SafeTensors::deserialize(bytes)
            .unwrap_or_else(|e| panic!("fixture {path} is not valid safetensors: {e}"));
        Fixture {
            name,
            st,
            used: RefCell::new(BTreeSet::new()),
        }
    }

    fn raw(&self, key: &str) -> (Vec<usize>, Vec<f32>) {
        let view = self
            .st
            .tensor(key)
            .unwrap_or_else(|e| panic!("{}: no tensor {key}: {e}", self.name));
        assert_eq!(view.dtype(), Dtype::F32, "{}: {key} is not f32", self.name);
        let data = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        self.used.borrow_mut().insert(key.to_string());
        (view.shape().to_vec(), data)
    }

    /// A stored tensor as a plain (untracked) ganforge tensor.
    fn t(&self, key: &str) -> Tensor {
        let (shape, data) = self.raw(key);
        Tensor::from_vec(data, shape).unwrap()
    }

    /// A stored tensor as a leaf that requires a gradient.
    fn leaf(&self, key: &str) -> Tensor {
        let t = self.t(key);
        t.set_requires_grad(true);
        t
    }

    /// Compares `got` with the stored `key` (shape and values) to
    /// `|got - want| <= atol + 1e-4 * |want|` with `atol = 1e-5 * min(1, max|want|)`: an
    /// absolute floor is needed for entries near zero (sums of many terms that cancel carry an
    /// absolute, not relative, rounding error), and scaling it keeps it meaningful for tensors
    /// whose entries are all small (gradients of order 1e-3). Scalars are stored as 1-element
    /// tensors and match any 1-element result.
    fn check(&self, key: &str, got: &Tensor) {
        let (shape, want) = self.raw(key);
        if shape.iter().product::<usize>() != 1 {
            assert_eq!(got.dims(), &shape[..], "{}: {key}: shape", self.name);
        }
        let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
        let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
        let atol = (1e-5 * scale.min(1.0)).max(1e-12);
        let got = got.to_vec();
        let what = format!("{}: {key}", self.name);
        assert_close(&what, &got, &want, atol, RTOL);
        report(&what, &got, &want);
    }

    /// Like [`Fixture::check`] for a gradient that autodiff may report as `None` (no path);
    /// that must then be all zeros in the fixture.
    fn check_grad(&self, key: &str, got: &Option<Tensor>, like: &Tensor) {
        match got {
            Some(g) => self.check(key, g),
            None => self.check(key, &like.zeros_like()),
        }
    }

    /// Every stored tensor whose key starts with `prefix`, keyed by the rest of its name.
    fn with_prefix(&self, prefix: &str) -> HashMap<String, Tensor> {
        self.st
            .names()
            .into_iter()
            .filter_map(|k| Some((k.strip_prefix(prefix)?.to_string(), self.t(k))))
            .collect()
    }

    /// Fails if some stored tensor was never read.
    fn finish(&self) {
        let used = self.used.borrow();
        let unused: Vec<&str> = self
            .st
            .names()
            .into_iter()
            .filter(|n| !used.contains(*n))
            .collect();
        assert!(
            unused.is_empty(),
            "{}: stored but never checked: {unused:?}",
            self.name
        );
    }
}

/// Prints the largest absolute difference and the largest relative one (over the entries
/// with `|want| >= 1e-3 * max|want|`, where a relative error means something). Run with
/// `--nocapture` to see them.
fn report(what: &str, got: &[f32], want: &[f64]) {
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    let (mut abs, mut rel) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        let d = (g as f64 - w).abs();
        abs = abs.max(d);
        if w.abs() >= 1e-3 * scale && w != 0.0 {
            rel = rel.max(d / w.abs());
        }
    }
    eprintln!(
        "{what:<48} max|want| {scale:9.3e}  max abs diff {abs:9.3e}  max rel diff {rel:9.3e}"
    );
}

fn grads(loss: &Tensor, wrt: &[Tensor]) -> Vec<Option<Tensor>> {
    autograd::grad(std::slice::from_ref(loss), None, wrt, false).unwrap()
}

const CONV_S2P1: Conv2dParams = Conv2dParams {
    stride: 2,
    padding: 1,
};

#[test]
fn conv_transpose2d_output_padding_matches_pytorch() {
    let f = Fixture::load("conv_transpose2d_output_padding.safetensors");
    let (x, w, b) = (f.leaf("x"), f.leaf("weight"), f.leaf("bias"));
    let params = ConvTranspose2dParams {
        stride: 2,
        padding: 1,
        output_padding: [1, 1],
    };
    let out = x.conv_transpose2d_bias(&w, Some(&b), params).unwrap();
    f.check("out", &out);
    let loss = out.mul(&f.t("w_rand")).unwrap().sum_all().unwrap();
    let g = grads(&loss, &[x.clone(), w.clone(), b.clone()]);
    f.check_grad("grad.x", &g[0], &x);
    f.check_grad("grad.weight", &g[1], &w);
    f.check_grad("grad.bias", &g[2], &b);
    f.finish();
}

fn batch_norm_case(f: &Fixture, p: &str) {
    let k = |s: &str| format!("{p}.{s}");
    let (x, gamma, beta) = (f.leaf(&k("x")), f.leaf(&k("weight")), f.leaf(&k("bias")));
    let (rm, rv) = (f.t(&k("running_mean")), f.t(&k("running_var")));
    let bn = BatchNormParams {
        eps: 1e-5,
        momentum: 0.1,
    };
    let running = RunningStats {
        mean: &rm,
        var: &rv,
    };
    let out = x
        .batch_norm(Some(running), Some(&gamma), Some(&beta), true, bn)
        .unwrap();
    f.check(&k("out"), &out);
    f.check(&k("running_mean_after"), &rm);
    f.check(&k("running_var_after"), &rv);
    let loss = out.mul(&f.t(&k("w_rand"))).unwrap().sum_all().unwrap();
    let g = grads(&loss, &[x.clone(), gamma.clone(), beta.clone()]);
    f.check_grad(&k("grad.x"), &g[0], &x);
    f.check_grad(&k("grad.weight"), &g[1], &gamma);
    f.check_grad(&k("grad.bias"), &g[2], &beta);
}

#[test]
fn batch_norm_training_matches_pytorch() {
    let f = Fixture::load("batch_norm_train.safetensors");
    batch_norm_case(&f, "bn2d");
    batch_norm_case(&f, "bn1d");
    f.finish();
}

/// The W4 critic (W1's D without BN, every layer with bias), functional form.
struct Critic {
    /// `[conv1.w, conv1.b, conv2.w, conv2.b, fc.w, fc.b]`, PyTorch's parameter order.
    params: Vec<Tensor>,
}

impl Critic {
    const NAMES: [&'static str; 6] = [
        "main.0.weight",
        "main.0.bias",
        "main.2.weight",
        "main.2.bias",
        "main.5.weight",
        "main.5.bias",
    ];

    fn forward(&self, x: &Tensor) -> Tensor {
        let p = &self.params;
        x.conv2d_bias(&p[0], Some(&p[1]), CONV_S2P1)
            .unwrap()
            .leaky_relu(0.2)
            .conv2d_bias(&p[2], Some(&p[3]), CONV_S2P1)
            .unwrap()
            .leaky_relu(0.2)
            .flatten(1)
            .unwrap()
            .linear(&p[4], Some(&p[5]))
            .unwrap()
    }
}

#[test]
fn gradient_penalty_second_order_matches_pytorch() {
    let f = Fixture::load("gradient_penalty.safetensors");
    let d = Critic {
        params: Critic::NAMES
            .iter()
            .map(|n| f.leaf(&format!("D.{n}")))
            .collect(),
    };
    let (real, fake, eps) = (f.t("real"), f.t("fake"), f.t("eps"));
    let x_hat = eps
        .mul(&real)
        .unwrap()
        .add(&eps.affine(-1.0, 1.0).mul(&fake).unwrap())
        .unwrap();
    f.check("x_hat", &x_hat);
    let x_hat = x_hat.detach();
    x_hat.set_requires_grad(true);

    let d_x_hat = d.forward(&x_hat);
    f.check("d_x_hat", &d_x_hat);
    let g = autograd::grad(
        &[d_x_hat.sum_all().unwrap()],
        None,
        std::slice::from_ref(&x_hat),
        true,
    )
    .unwrap()[0]
        .clone()
        .expect("D(x_hat) depends on x_hat");
    f.check("g", &g);
    let n = g.dims()[0];
    let norms = g
        .reshape([n, g.elem_count() / n])
        .unwrap()
        .sqr()
        .unwrap()
        .sum(&[1], false)
        .unwrap()
        .sqrt();
    let gp = norms.add_scalar(-1.0).sqr().unwrap().mean_all().unwrap();
    f.check("gp", &gp);

    // Second order: gp's gradient goes back through the gradient graph that create_graph
    // recorded. The conv biases (and the last bias) reach gp only through LeakyReLU's
    // piecewise-constant slope, so their gradients are exactly zero on both sides.
    let g_gp = grads(&gp, &d.params);
    let loss = d
        .forward(&fake)
        .mean_all()
        .unwrap()
        .sub(&d.forward(&real).mean_all().unwrap())
        .unwrap()
        .add(&gp.mul_scalar(10.0))
        .unwrap();
    f.check("loss", &loss);
    let g_loss = grads(&loss, &d.params);
    for (i, name) in Critic::NAMES.iter().enumerate() {
        f.check_grad(&format!("grad_gp.D.{name}"), &g_gp[i], &d.params[i]);
        f.check_grad(&format!("grad_loss.D.{name}"), &g_loss[i], &d.params[i]);
    }
    f.finish();
}

/// A PyTorch-style model whose layers live in a `Sequential` attribute named `main`, so its
/// state-dict keys read `main.0.weight`, `main.1.running_mean`, ... as in the fixture.
struct Net {
    main: Sequential,
    /// The generator views its input `[N, nz]` as `[N, nz, 1, 1]` first.
    as_image: bool,
}

impl Module for Net {
    fn forward(&self, x: &Tensor) -> ganforge::Result<Tensor> {
        if self.as_image {
            let (n, nz) = x.shape().dims2("generator input")?;
            self.main.forward(&x.reshape([n, nz, 1, 1])?)
        } else {
            self.main.forward(x)
        }
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        prefixed("main", self.main.named_parameters())
    }
    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        prefixed("main", self.main.named_buffers())
    }
    fn set_training(&self, training: bool) {
        self.main.set_training(training)
    }
}

fn conv_t(
    cin: usize,
    cout: usize,
    k: usize,
    s: usize,
    p: usize,
    bias: bool,
    rng: &mut Rng,
) -> ConvTranspose2d {
    let cfg = ConvTranspose2dConfig {
        in_channels: cin,
        out_channels: cout,
        kernel_size: k,
        stride: s,
        padding: p,
        output_padding: 0,
        bias,
    };
    ConvTranspose2d::new(cfg, rng, &Device::Cpu).unwrap()
}

fn conv(cin: usize, cout: usize, bias: bool, rng: &mut Rng) -> Conv2d {
    let cfg = Conv2dConfig {
        in_channels: cin,
        out_channels: cout,
        kernel_size: 4,
        stride: 2,
        padding: 1,
        bias,
    };
    Conv2d::new(cfg, rng, &Device::Cpu).unwrap()
}

fn bn(c: usize) -> BatchNorm {
    let params = BatchNormParams {
        eps: 1e-5,
        momentum: 0.1,
    };
    BatchNorm::new(c, params, &Device::Cpu).unwrap()
}

/// W1's generator with the fixture's widths (nz 8, ngf 4).
fn dcgan_generator(nz: usize, ngf: usize, rng: &mut Rng) -> Net {
    let main = Sequential::new()
        .push(conv_t(nz, 4 * ngf, 7, 1, 0, false, rng))
        .push(bn(4 * ngf))
        .push(Relu)
        .push(conv_t(4 * ngf, 2 * ngf, 4, 2, 1, false, rng))
        .push(bn(2 * ngf))
        .push(Relu)
        .push(conv_t(2 * ngf, 1, 4, 2, 1, true, rng))
        .push(Tanh);
    Net {
        main,
        as_image: true,
    }
}

/// W1's discriminator with the fixture's width (ndf 4), producing logits.
fn dcgan_discriminator(ndf: usize, rng: &mut Rng) -> Net {
    let linear = LinearConfig {
        in_features: 2 * ndf * 7 * 7,
        out_features: 1,
        bias: true,
    };
    let main = Sequential::new()
        .push(conv(1, ndf, true, rng))
        .push(LeakyRelu(0.2))
        .push(conv(ndf, 2 * ndf, false, rng))
        .push(bn(2 * ndf))
        .push(LeakyRelu(0.2))
        .push(Flatten)
        .push(Linear::new(linear, rng, &Device::Cpu).unwrap());
    Net {
        main,
        as_image: false,
    }
}

/// Loads `net` (strictly) from the fixture's `{prefix}.*` tensors. PyTorch keeps
/// `num_batches_tracked` as int64 and the fixture holds f32 only, so those counters (not stored)
/// start at 0, as in the fresh PyTorch model.
fn load_net(f: &Fixture, net: &Net, prefix: &str) {
    let mut sd = f.with_prefix(&format!("{prefix}."));
    for (name, t) in net.named_buffers() {
        if name.ends_with("num_batches_tracked") {
            sd.insert(name, t.zeros_like());
        }
    }
    net.load_state_dict(&sd, true)
        .unwrap_or_else(|e| panic!("loading {prefix}: {e}"));
}

/// Checks every BN buffer of `net` against `{stage}.{prefix}.{name}`, and the batch counters.
fn check_buffers(f: &Fixture, net: &Net, stage: &str, prefix: &str, batches: f32) {
    for (name, t) in net.named_buffers() {
        if name.ends_with("num_batches_tracked") {
            assert_eq!(t.to_vec(), vec![batches], "{prefix}.{name}");
        } else {
            f.check(&format!("{stage}.{prefix}.{name}"), &t);
        }
    }
}

/// One W1 step on the DCGAN pair, in the fixture's order (see scripts/make_fixtures.py):
/// fake = G(z); D loss on real and fake.detach(), one backward, D's Adam step; G loss through
/// the updated D, G's Adam step.
#[test]
fn dcgan_pair_step_matches_pytorch() {
    let f = Fixture::load("dcgan_pair.safetensors");
    // The layers' own init is overwritten by the fixture's DCGAN init.
    let mut rng = Rng::new(0);
    let g = dcgan_generator(8, 4, &mut rng);
    let d = dcgan_discriminator(4, &mut rng);
    load_net(&f, &g, "G");
    load_net(&f, &d, "D");
    let adam = AdamConfig {
        lr: 2e-4,
        betas: (0.5, 0.999),
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let mut opt_d = Adam::new(d.parameters(), adam);
    let mut opt_g = Adam::new(g.parameters(), adam);
    let (z, real) = (f.t("z"), f.t("real"));

    // 1. G forward.
    let fake = g.forward(&z).unwrap();
    f.check("fake", &fake);

    // 2-4. D loss on real then detached fake, one backward on the sum, Adam step.
    opt_d.zero_grad();
    let d_real = d.forward(&real).unwrap();
    let d_fake = d.forward(&fake.detach()).unwrap();
    f.check("d_real", &d_real);
    f.check("d_fake", &d_fake);
    check_buffers(&f, &d, "after_d", "D", 2.0);
    let loss_d = d_real
        .bce_with_logits(&d_real.ones_like())
        .unwrap()
        .add(&d_fake.bce_with_logits(&d_fake.zeros_like()).unwrap())
        .unwrap();
    f.check("loss_d", &loss_d);
    loss_d.backward().unwrap();
    for (name, p) in d.named_parameters() {
        let grad = p
            .grad()
            .unwrap_or_else(|| panic!("D.{name} has no gradient"));
        f.check(&format!("grad.D.{name}"), &grad);
    }
    opt_d.step().unwrap();

    // 5-7. G loss through the updated D (same `fake`), backward, Adam step on G.
    opt_g.zero_grad();
    let d_fake_g = d.forward(&fake).unwrap();
    f.check("d_fake_g", &d_fake_g);
    let loss_g = d_fake_g.bce_with_logits(&d_fake_g.ones_like()).unwrap();
    f.check("loss_g", &loss_g);
    loss_g.backward().unwrap();
    for (name, p) in g.named_parameters() {
        let grad = p
            .grad()
            .unwrap_or_else(|| panic!("G.{name} has no gradient"));
        f.check(&format!("grad.G.{name}"), &grad);
    }
    opt_g.step().unwrap();

    // After one Adam step each parameter moved by about lr * sign(grad). Besides the values
    // themselves (rtol 1e-4 of a ~0.02 weight is 1% of the 2e-4 step), check the step itself
    // to 0.1%, plus 2e-7 for the f32 rounding of parameters up to ~1 (BN gamma).
    for (prefix, net) in [("G", &g), ("D", &d)] {
        for (name, p) in net.named_parameters() {
            let key = format!("adam.{prefix}.{name}");
            f.check(&key, &p);
            let (_, before) = f.raw(&format!("{prefix}.{name}"));
            let (_, after) = f.raw(&key);
            let step: Vec<f32> = p.to_vec().iter().zip(&before).map(|(a, b)| a - b).collect();
            let want: Vec<f64> = after
                .iter()
                .zip(&before)
                .map(|(&a, &b)| a as f64 - b as f64)
                .collect();
            assert_close(
                &format!("{key} - {prefix}.{name}"),
                &step,
                &want,
                2e-7,
                1e-3,
            );
            report(&format!("step of {key}"), &step, &want);
        }
    }
    check_buffers(&f, &g, "final", "G", 1.0);
    check_buffers(&f, &d, "final", "D", 3.0);
    f.finish();
}
