//! Layers and optimizers.
//!
//! - Adam, SGD and RMSprop over several steps against f64 references written here from the
//!   PyTorch formulas (weight decay, momentum, dampening, nesterov, centered), with one
//!   parameter that has no gradient on some steps (it must be skipped, state untouched);
//! - optimizer state dicts: PyTorch names, round trip (a resumed run continues bit for bit),
//!   errors for a missing entry, a wrong shape and an unknown key;
//! - layer output shapes, PyTorch parameter names ("0.weight", "main.0.weight"), default
//!   init bounds (ConvTranspose2d's fan_in from weight dim 1);
//! - module state dicts: round trip, errors naming a missing key, an unexpected key, and a
//!   shape mismatch (key and both shapes), and nothing written on a failed load;
//! - BatchNorm training vs eval against f64, running statistics and num_batches_tracked;
//! - dcgan_init statistics; spectral norm's sigma against the largest singular value from an
//!   f64 power iteration (and a diagonal matrix), its gradient against finite differences;
//! - weight clipping, dropout, embedding, layer norm;
//! - end to end: an MLP fitting sin(x) with Adam must cut its loss by 10x.

mod common;

use common::{assert_close, f64s, randn, rng};
use ganforge::nn::init::dcgan_init;
use ganforge::nn::{
    clip_parameters, prefixed, BatchNorm, Conv2d, Conv2dConfig, ConvTranspose2d,
    ConvTranspose2dConfig, Dropout, Embedding, Flatten, LayerNorm, LeakyRelu, Linear, LinearConfig,
    Module, Relu, Reshape, Sequential, Sigmoid, SpectralNorm, Tanh,
};
use ganforge::ops::norm::BatchNormParams;
use ganforge::optim::{Adam, AdamConfig, Optimizer, RmsProp, RmsPropConfig, Sgd, SgdConfig};
use ganforge::{autograd, Device, Error, Rng, Tensor};
use std::collections::HashMap;

const CPU: Device = Device::Cpu;

fn names(named: &[(String, Tensor)]) -> Vec<String> {
    named.iter().map(|(n, _)| n.clone()).collect()
}

fn to_map(named: Vec<(String, Tensor)>) -> HashMap<String, Tensor> {
    named.into_iter().collect()
}

fn linear(i: usize, o: usize, bias: bool, rng: &mut Rng) -> Linear {
    Linear::new(
        LinearConfig {
            in_features: i,
            out_features: o,
            bias,
        },
        rng,
        &CPU,
    )
    .unwrap()
}

fn conv(ci: usize, co: usize, k: usize, s: usize, p: usize, bias: bool, rng: &mut Rng) -> Conv2d {
    Conv2d::new(
        Conv2dConfig {
            in_channels: ci,
            out_channels: co,
            kernel_size: k,
            stride: s,
            padding: p,
            bias,
        },
        rng,
        &CPU,
    )
    .unwrap()
}

fn convt(
    ci: usize,
    co: usize,
    k: usize,
    s: usize,
    p: usize,
    bias: bool,
    rng: &mut Rng,
) -> ConvTranspose2d {
    ConvTranspose2d::new(
        ConvTranspose2dConfig {
            in_channels: ci,
            out_channels: co,
            kernel_size: k,
            stride: s,
            padding: p,
            output_padding: 0,
            bias,
        },
        rng,
        &CPU,
    )
    .unwrap()
}

fn bn(c: usize) -> BatchNorm {
    BatchNorm::new(c, BatchNormParams::default(), &CPU).unwrap()
}

fn err_text(e: Error) -> String {
    assert!(
        matches!(e, Error::StateDict(_)),
        "expected a StateDict error, got {e:?}"
    );
    e.to_string()
}

// ---------------------------------------------------------------------------------------------
// Optimizers against f64 references
// ---------------------------------------------------------------------------------------------

/// One f64 reference optimizer: updates parameter `i` (data `p`) from gradient `g`.
trait RefOpt {
    fn update(&mut self, i: usize, p: &mut [f64], g: &[f64]);
}

/// `g + wd * p`.
fn decayed(g: &[f64], p: &[f64], wd: f64) -> Vec<f64> {
    g.iter().zip(p).map(|(g, p)| g + wd * p).collect()
}

/// torch/optim/adam.py, written the textbook way (`beta1*m + (1-beta1)*g`).
struct RefAdam {
    lr: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    wd: f64,
    st: HashMap<usize, (Vec<f64>, Vec<f64>, i32)>,
}

impl RefOpt for RefAdam {
    fn update(&mut self, i: usize, p: &mut [f64], g: &[f64]) {
        let g = decayed(g, p, self.wd);
        let (m, v, t) = self
            .st
            .entry(i)
            .or_insert_with(|| (vec![0.0; p.len()], vec![0.0; p.len()], 0));
        *t += 1;
        let bc1 = 1.0 - self.b1.powi(*t);
        let bc2 = 1.0 - self.b2.powi(*t);
        for j in 0..p.len() {
            m[j] = self.b1 * m[j] + (1.0 - self.b1) * g[j];
            v[j] = self.b2 * v[j] + (1.0 - self.b2) * g[j] * g[j];
            let denom = v[j].sqrt() / bc2.sqrt() + self.eps;
            p[j] -= self.lr / bc1 * m[j] / denom;
        }
    }
}

/// torch/optim/sgd.py.
struct RefSgd {
    lr: f64,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    wd: f64,
    bufs: HashMap<usize, Vec<f64>>,
}

impl RefOpt for RefSgd {
    fn update(&mut self, i: usize, p: &mut [f64], g: &[f64]) {
        let mut d = decayed(g, p, self.wd);
        if self.momentum != 0.0 {
            let buf = match self.bufs.get_mut(&i) {
                None => self.bufs.entry(i).or_insert_with(|| d.clone()),
                Some(buf) => {
                    for j in 0..p.len() {
                        buf[j] = self.momentum * buf[j] + (1.0 - self.dampening) * d[j];
                    }
                    buf
                }
            };
            if self.nesterov {
                for j in 0..p.len() {
                    d[j] += self.momentum * buf[j];
                }
            } else {
                d = buf.clone();
            }
        }
        for j in 0..p.len() {
            p[j] -= self.lr * d[j];
        }
    }
}

/// torch/optim/rmsprop.py.
struct RefRmsProp {
    lr: f64,
    alpha: f64,
    eps: f64,
    wd: f64,
    momentum: f64,
    centered: bool,
    /// (square_avg, grad_avg, momentum_buffer)
    st: HashMap<usize, [Vec<f64>; 3]>,
}

impl RefOpt for RefRmsProp {
    fn update(&mut self, i: usize, p: &mut [f64], g: &[f64]) {
        let g = decayed(g, p, self.wd);
        let n = p.len();
        let [sq, ga, buf] = self
            .st
            .entry(i)
            .or_insert_with(|| [vec![0.0; n], vec![0.0; n], vec![0.0; n]]);
        for j in 0..n {
            sq[j] = self.alpha * sq[j] + (1.0 - self.alpha) * g[j] * g[j];
            let avg = if self.centered {
                ga[j] = self.alpha * ga[j] + (1.0 - self.alpha) * g[j];
                (sq[j] - ga[j] * ga[j]).sqrt() + self.eps
            } else {
                sq[j].sqrt() + self.eps
            };
            if self.momentum > 0.0 {
                buf[j] = self.momentum * buf[j] + g[j] / avg;
                p[j] -= self.lr * buf[j];
            } else {
                p[j] -= self.lr * g[j] / avg;
            }
        }
    }
}

/// Two parameters; on odd steps parameter 1 has no gradient and must be skipped. The
/// parameters are checked against the reference after every step, and must have moved by
/// more than `min_move` somewhere by the end.
fn check_optimizer(
    what: &str,
    make: &dyn Fn(Vec<Tensor>) -> Box<dyn Optimizer>,
    reference: &mut dyn RefOpt,
    steps: usize,
    seed: u64,
    min_move: f64,
) {
    let mut r = rng(seed);
    let params = vec![randn(&mut r, &[3, 4], 1.0), randn(&mut r, &[5], 1.0)];
    for p in &params {
        p.set_requires_grad(true);
    }
    let start: Vec<Vec<f64>> = params.iter().map(f64s).collect();
    let mut want = start.clone();
    let mut opt = make(params.clone());
    for s in 0..steps {
        for (i, p) in params.iter().enumerate() {
            if i == 1 && s % 2 == 1 {
                p.set_grad(None);
                continue;
            }
            // Gradients of varied scale, so eps and the bias corrections matter.
            let scale = [1.0, 0.01, 3.0][s % 3];
            let g = randn(&mut r, p.dims(), scale);
            reference.update(i, &mut want[i], &f64s(&g));
            p.set_grad(Some(g));
        }
        opt.step().unwrap();
        for (i, p) in params.iter().enumerate() {
            assert_close(
                &format!("{what}: step {s}, param {i}"),
                &p.to_vec(),
                &want[i],
                2e-6,
                2e-5,
            );
        }
    }
    for (i, p) in params.iter().enumerate() {
        let moved = p
            .to_vec()
            .iter()
            .zip(&start[i])
            .any(|(a, b)| (*a as f64 - b).abs() > min_move);
        assert!(moved, "{what}: param {i} did not move");
    }
    opt.zero_grad();
    assert!(
        params.iter().all(|p| p.grad().is_none()),
        "{what}: zero_grad left a gradient"
    );
}

#[test]
fn adam_matches_reference() {
    for (k, (lr, b1, b2, eps, wd)) in [
        (1e-3, 0.9, 0.999, 1e-8, 0.0), // PyTorch defaults
        (2e-2, 0.5, 0.999, 1e-8, 0.0), // DCGAN betas, a larger lr
        (1e-2, 0.9, 0.99, 1e-3, 0.1),  // weight decay and a large eps
        (5e-2, 0.0, 0.9, 1e-8, 0.01),  // WGAN-GP betas
    ]
    .into_iter()
    .enumerate()
    {
        let cfg = AdamConfig {
            lr: lr as f32,
            betas: (b1 as f32, b2 as f32),
            eps: eps as f32,
            weight_decay: wd as f32,
        };
        let mut reference = RefAdam {
            lr,
            b1,
            b2,
            eps,
            wd,
            st: HashMap::new(),
        };
        check_optimizer(
            &format!("adam {cfg:?}"),
            &|p| Box::new(Adam::new(p, cfg)),
            &mut reference,
            9,
            100 + k as u64,
            1e-3,
        );
    }
    assert_eq!(
        AdamConfig::default(),
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0
        }
    );
}

#[test]
fn sgd_matches_reference() {
    for (k, (lr, momentum, dampening, nesterov, wd)) in [
        (0.1, 0.0, 0.0, false, 0.0),
        (0.05, 0.9, 0.0, false, 0.0),
        (0.05, 0.9, 0.3, false, 0.01),
        (0.05, 0.8, 0.0, true, 0.0),
        (0.02, 0.9, 0.0, true, 0.05),
        (0.1, 0.0, 0.0, false, 0.2),
    ]
    .into_iter()
    .enumerate()
    {
        let cfg = SgdConfig {
            lr: lr as f32,
            momentum: momentum as f32,
            dampening: dampening as f32,
            nesterov,
            weight_decay: wd as f32,
        };
        let mut reference = RefSgd {
            lr,
            momentum,
            dampening,
            nesterov,
            wd,
            bufs: HashMap::new(),
        };
        check_optimizer(
            &format!("sgd {cfg:?}"),
            &|p| Box::new(Sgd::new(p, cfg)),
            &mut reference,
            9,
            200 + k as u64,
            1e-3,
        );
    }
}

#[test]
fn rmsprop_matches_reference() {
    for (k, (lr, alpha, eps, wd, momentum, centered)) in [
        (1e-2, 0.99, 1e-8, 0.0, 0.0, false), // PyTorch defaults
        (5e-3, 0.9, 1e-6, 0.0, 0.0, true),
        (5e-3, 0.99, 1e-8, 0.0, 0.9, false),
        (5e-3, 0.95, 1e-8, 0.1, 0.5, true),
        (5e-5, 0.99, 1e-8, 0.0, 0.0, false), // WGAN's RMSprop lr
    ]
    .into_iter()
    .enumerate()
    {
        let cfg = RmsPropConfig {
            lr: lr as f32,
            alpha: alpha as f32,
            eps: eps as f32,
            weight_decay: wd as f32,
            momentum: momentum as f32,
            centered,
        };
        let mut reference = RefRmsProp {
            lr,
            alpha,
            eps,
            wd,
            momentum,
            centered,
            st: HashMap::new(),
        };
        // With lr 5e-5 over 9 steps the parameters move by ~5e-4.
        let min_move = if lr < 1e-4 { 1e-4 } else { 1e-3 };
        check_optimizer(
            &format!("rmsprop {cfg:?}"),
            &|p| Box::new(RmsProp::new(p, cfg)),
            &mut reference,
            9,
            300 + k as u64,
            min_move,
        );
    }
    assert_eq!(RmsPropConfig::default().lr, 1e-2);
    assert_eq!(RmsPropConfig::default().alpha, 0.99);
    assert_eq!(RmsPropConfig::default().eps, 1e-8);
}

/// Builds an optimizer over the given parameters.
type MakeOpt = Box<dyn Fn(Vec<Tensor>) -> Box<dyn Optimizer>>;

/// Runs `steps` steps with gradients from `r`.
fn run_steps(opt: &mut dyn Optimizer, params: &[Tensor], r: &mut Rng, steps: usize) {
    for _ in 0..steps {
        for p in params {
            p.set_grad(Some(randn(r, p.dims(), 1.0)));
        }
        opt.step().unwrap();
    }
}

fn copies(params: &[Tensor]) -> Vec<Tensor> {
    params
        .iter()
        .map(|p| {
            let c = Tensor::from_vec(p.to_vec(), p.dims().to_vec()).unwrap();
            c.set_requires_grad(true);
            c
        })
        .collect()
}

#[test]
fn optimizer_state_dict_names_and_round_trip() {
    let makers: Vec<(&str, Vec<&str>, MakeOpt)> = vec![
        (
            "adam",
            vec!["step", "exp_avg", "exp_avg_sq"],
            Box::new(|p| {
                Box::new(Adam::new(
                    p,
                    AdamConfig {
                        lr: 0.01,
                        ..Default::default()
                    },
                ))
            }),
        ),
        (
            "sgd",
            vec!["momentum_buffer"],
            Box::new(|p| {
                Box::new(Sgd::new(
                    p,
                    SgdConfig {
                        lr: 0.05,
                        momentum: 0.9,
                        ..Default::default()
                    },
                ))
            }),
        ),
        (
            "rmsprop",
            vec!["step", "square_avg", "momentum_buffer", "grad_avg"],
            Box::new(|p| {
                Box::new(RmsProp::new(
                    p,
                    RmsPropConfig {
                        momentum: 0.5,
                        centered: true,
                        ..Default::default()
                    },
                ))
            }),
        ),
    ];
    for (what, state_names, make) in makers {
        let mut r = rng(7);
        let params = vec![randn(&mut r, &[4, 3], 1.0), randn(&mut r, &[6], 1.0)];
        let mut a = make(params.clone());
        assert!(
            a.state_dict().is_empty(),
            "{what}: state before the first step"
        );
        run_steps(a.as_mut(), &params, &mut r, 3);
        let sd = a.state_dict();
        let mut want = Vec::new();
        for i in 0..2 {
            for n in &state_names {
                want.push(format!("state.{i}.{n}"));
            }
        }
        assert_eq!(names(&sd), want, "{what}: state names");
        let map = to_map(sd);
        if let Some(step) = map.get("state.0.step") {
            assert_eq!(step.rank(), 0, "{what}: step is 0-dim");
            assert_eq!(step.to_scalar().unwrap(), 3.0, "{what}: step count");
        }
        assert_eq!(
            map[&format!("state.1.{}", state_names[1 % state_names.len()])].dims(),
            &[6]
        );

        // Resume: a fresh optimizer over copies of the parameters, loaded from the state
        // dict, must continue bit for bit.
        let params_b = copies(&params);
        let mut b = make(params_b.clone());
        b.load_state_dict(&map).unwrap();
        let mut ra = rng(99);
        let mut rb = rng(99);
        run_steps(a.as_mut(), &params, &mut ra, 2);
        run_steps(b.as_mut(), &params_b, &mut rb, 2);
        for (pa, pb) in params.iter().zip(&params_b) {
            assert_eq!(pa.to_vec(), pb.to_vec(), "{what}: resumed run differs");
        }
        // The loaded state is a copy: stepping b did not change the dict's tensors... and
        // a's own state moved on identically.
        for ((na, ta), (nb, tb)) in a.state_dict().iter().zip(b.state_dict().iter()) {
            assert_eq!(na, nb);
            assert_eq!(ta.to_vec(), tb.to_vec(), "{what}: {na} after resuming");
        }

        // A missing entry names the key (with one entry per parameter, removing it just
        // means that parameter has no state yet).
        let last = format!("state.1.{}", state_names.last().unwrap());
        let mut missing = map.clone();
        missing.remove(&last);
        if state_names.len() > 1 {
            let e = err_text(b.load_state_dict(&missing).unwrap_err());
            assert!(e.contains(&last) && e.contains("missing"), "{what}: {e}");
        } else {
            b.load_state_dict(&missing).unwrap();
            assert_eq!(b.state_dict().len(), 1, "{what}");
        }
        // A wrong shape names the key and both shapes.
        let key = format!("state.0.{}", state_names.last().unwrap());
        let mut wrong = map.clone();
        wrong.insert(key.clone(), Tensor::zeros([3, 4], &CPU));
        let e = err_text(b.load_state_dict(&wrong).unwrap_err());
        assert!(
            e.contains(&key) && e.contains("[3, 4]") && e.contains("[4, 3]"),
            "{what}: {e}"
        );
        // Unknown names and parameter indices are refused.
        for bad in ["state.0.bogus", "state.2.step", "param_groups.0.lr"] {
            let mut extra = map.clone();
            extra.insert(bad.to_string(), Tensor::zeros((), &CPU));
            let e = err_text(b.load_state_dict(&extra).unwrap_err());
            assert!(e.contains(bad), "{what}: {e}");
        }
        // An empty dict clears the state.
        b.load_state_dict(&HashMap::new()).unwrap();
        assert!(b.state_dict().is_empty());
    }
}

#[test]
fn optimizer_set_lr_and_skip_without_grad() {
    let p = Tensor::from_vec(vec![1.0, 2.0], [2]).unwrap();
    p.set_requires_grad(true);
    let mut opt = Sgd::new(
        vec![p.clone()],
        SgdConfig {
            lr: 0.5,
            ..Default::default()
        },
    );
    opt.step().unwrap(); // no gradient: nothing happens
    assert_eq!(p.to_vec(), vec![1.0, 2.0]);
    p.set_grad(Some(Tensor::from_vec(vec![1.0, -1.0], [2]).unwrap()));
    opt.set_lr(0.25);
    assert_eq!(opt.lr(), 0.25);
    opt.step().unwrap();
    assert_eq!(p.to_vec(), vec![0.75, 2.25]);

    let mut adam = Adam::new(vec![p.clone()], AdamConfig::default());
    adam.step().unwrap();
    adam.step().unwrap();
    assert_eq!(
        adam.state_dict()[0].1.to_scalar().unwrap(),
        2.0,
        "steps counted with a gradient"
    );
}

// ---------------------------------------------------------------------------------------------
// Layers: shapes, names, init
// ---------------------------------------------------------------------------------------------

#[test]
fn layer_shapes_and_names() {
    let mut r = rng(1);
    let x = randn(&mut r, &[4, 3], 1.0);
    let l = linear(3, 5, true, &mut r);
    assert_eq!(l.forward(&x).unwrap().dims(), &[4, 5]);
    assert_eq!(names(&l.named_parameters()), ["weight", "bias"]);
    assert_eq!(l.weight.dims(), &[5, 3]);
    assert_eq!(
        names(&linear(3, 5, false, &mut r).named_parameters()),
        ["weight"]
    );
    // Linear on [N, L, in] too.
    assert_eq!(
        l.forward(&randn(&mut r, &[2, 7, 3], 1.0)).unwrap().dims(),
        &[2, 7, 5]
    );

    let img = randn(&mut r, &[2, 3, 8, 8], 1.0);
    let c = conv(3, 6, 4, 2, 1, true, &mut r);
    let y = c.forward(&img).unwrap();
    assert_eq!(y.dims(), &[2, 6, 4, 4]);
    assert_eq!(c.weight.dims(), &[6, 3, 4, 4]);
    let ct = convt(6, 3, 4, 2, 1, false, &mut r);
    assert_eq!(ct.forward(&y).unwrap().dims(), &[2, 3, 8, 8]);
    assert_eq!(ct.weight.dims(), &[6, 3, 4, 4]);
    assert_eq!(names(&ct.named_parameters()), ["weight"]);
    // output_padding: (4 - 1)*2 - 2 + 3 + 1 = 8.
    let ct2 = ConvTranspose2d::new(
        ConvTranspose2dConfig {
            in_channels: 2,
            out_channels: 1,
            kernel_size: 3,
            stride: 2,
            padding: 1,
            output_padding: 1,
            bias: true,
        },
        &mut r,
        &CPU,
    )
    .unwrap();
    assert_eq!(
        ct2.forward(&randn(&mut r, &[1, 2, 4, 4], 1.0))
            .unwrap()
            .dims(),
        &[1, 1, 8, 8]
    );

    // Invalid configs are refused at construction.
    let mut bad = ct2.config;
    bad.output_padding = 2;
    assert!(ConvTranspose2d::new(bad, &mut r, &CPU).is_err());
    let mut bad = c.config;
    bad.stride = 0;
    assert!(Conv2d::new(bad, &mut r, &CPU).is_err());
    assert!(Dropout::new(1.0, &mut r).is_err());

    // Flatten / Reshape keep the batch dim.
    let f = Flatten.forward(&img).unwrap();
    assert_eq!(f.dims(), &[2, 192]);
    let back = Reshape(vec![3, 8, 8]).forward(&f).unwrap();
    assert_eq!(back.dims(), &[2, 3, 8, 8]);
    assert_eq!(back.to_vec(), img.to_vec());

    // Activations.
    let v = Tensor::from_vec(vec![-2.0, 0.5], [1, 2]).unwrap();
    assert_eq!(Relu.forward(&v).unwrap().to_vec(), vec![0.0, 0.5]);
    assert_eq!(
        LeakyRelu(0.2).forward(&v).unwrap().to_vec(),
        vec![-0.4, 0.5]
    );
    assert_close(
        "tanh",
        &Tanh.forward(&v).unwrap().to_vec(),
        &[(-2f64).tanh(), 0.5f64.tanh()],
        1e-6,
        1e-6,
    );
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    assert_close(
        "sigmoid",
        &Sigmoid.forward(&v).unwrap().to_vec(),
        &[sig(-2.0), sig(0.5)],
        1e-6,
        1e-6,
    );
}

/// The DCGAN generator of the PyTorch example, scaled down (nz 8, ngf 4, 1 channel, 16x16).
fn tiny_dcgan_generator(r: &mut Rng) -> Sequential {
    Sequential::new()
        .push(convt(8, 16, 4, 1, 0, false, r))
        .push(bn(16))
        .push(Relu)
        .push(convt(16, 8, 4, 2, 1, false, r))
        .push(bn(8))
        .push(Relu)
        .push(convt(8, 1, 4, 2, 1, false, r))
        .push(Tanh)
}

#[test]
fn sequential_names_follow_pytorch() {
    let mut r = rng(2);
    let g = tiny_dcgan_generator(&mut r);
    assert_eq!(g.len(), 8);
    let z = randn(&mut r, &[2, 8, 1, 1], 1.0);
    assert_eq!(g.forward(&z).unwrap().dims(), &[2, 1, 16, 16]);
    assert_eq!(
        names(&g.named_parameters()),
        ["0.weight", "1.weight", "1.bias", "3.weight", "4.weight", "4.bias", "6.weight"]
    );
    assert_eq!(
        names(&g.named_buffers()),
        [
            "1.running_mean",
            "1.running_var",
            "1.num_batches_tracked",
            "4.running_mean",
            "4.running_var",
            "4.num_batches_tracked"
        ]
    );
    // state_dict = parameters then buffers; `prefixed` gives the example's "main." names.
    let sd = prefixed("main", g.state_dict());
    assert_eq!(sd.len(), 13);
    assert_eq!(sd[0].0, "main.0.weight");
    assert_eq!(sd[7].0, "main.1.running_mean");
    assert_eq!(sd[0].1.dims(), &[8, 16, 4, 4]);
    assert_eq!(g.parameters().len(), 7);
    assert!(g.parameters().iter().all(|p| p.requires_grad()));
    assert!(g.named_buffers().iter().all(|(_, b)| !b.requires_grad()));
    assert_eq!(names(&prefixed("", g.named_parameters()))[0], "0.weight");

    // Backward reaches every parameter; Module::zero_grad clears them.
    g.forward(&z)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(g.parameters().iter().all(|p| p.grad().is_some()));
    g.zero_grad();
    assert!(g.parameters().iter().all(|p| p.grad().is_none()));
}

#[test]
fn default_init_bounds() {
    // Weights ~ U(-1/sqrt(fan_in), +): all inside the bound, and the largest close to it.
    let mut r = rng(3);
    let check = |what: &str, t: &Tensor, fan_in: usize| {
        let b = 1.0 / (fan_in as f32).sqrt();
        let max = t.to_vec().iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(
            max <= b && max > 0.9 * b,
            "{what}: max |w| {max}, bound {b}"
        );
    };
    let l = linear(50, 40, true, &mut r);
    check("linear weight", &l.weight, 50);
    check("linear bias", l.bias.as_ref().unwrap(), 50);
    let c = conv(3, 32, 4, 2, 1, true, &mut r);
    check("conv weight", &c.weight, 3 * 16);
    check("conv bias", c.bias.as_ref().unwrap(), 3 * 16);
    // ConvTranspose2d: fan_in from weight dim 1 (C_out), not C_in: bound 1/sqrt(3*16)
    // rather than 1/sqrt(32*16).
    let ct = convt(32, 3, 4, 2, 1, true, &mut r);
    check("conv_transpose weight", &ct.weight, 3 * 16);
    let b = bn(5);
    assert_eq!(b.weight.to_vec(), vec![1.0; 5]);
    assert_eq!(b.bias.to_vec(), vec![0.0; 5]);
    assert_eq!(b.running_var.to_vec(), vec![1.0; 5]);
    let e = Embedding::new(100, 50, &mut r, &CPU).unwrap();
    let w = f64s(&e.weight);
    let mean = w.iter().sum::<f64>() / w.len() as f64;
    let std = (w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
    assert!(
        mean.abs() < 0.05 && (std - 1.0).abs() < 0.05,
        "embedding N(0,1): {mean} {std}"
    );
}

// ---------------------------------------------------------------------------------------------
// Module state dicts
// ---------------------------------------------------------------------------------------------

fn mlp(r: &mut Rng) -> Sequential {
    Sequential::new()
        .push(linear(3, 5, true, r))
        .push(bn(5))
        .push(LeakyRelu(0.2))
        .push(linear(5, 2, true, r))
}

#[test]
fn module_state_dict_round_trip_and_errors() {
    let a = mlp(&mut rng(10));
    let b = mlp(&mut rng(11));
    let x = randn(&mut rng(12), &[6, 3], 1.0);
    a.forward(&x).unwrap(); // moves a's running stats and num_batches_tracked
    a.set_training(false);
    b.set_training(false);
    let ya = a.forward(&x).unwrap().to_vec();
    assert_ne!(ya, b.forward(&x).unwrap().to_vec());

    let map = to_map(a.state_dict());
    b.load_state_dict(&map, true).unwrap();
    assert_eq!(b.forward(&x).unwrap().to_vec(), ya, "loaded model differs");
    for ((na, ta), (nb, tb)) in a.state_dict().iter().zip(b.state_dict().iter()) {
        assert_eq!(na, nb);
        assert_eq!(ta.to_vec(), tb.to_vec(), "{na}");
        assert!(!ta.same_storage(tb), "{na}: load must copy, not share");
    }
    assert_eq!(map["1.num_batches_tracked"].to_scalar().unwrap(), 1.0);
    // Loading into itself is fine (the data may share storage).
    a.load_state_dict(&to_map(a.state_dict()), true).unwrap();

    let c = mlp(&mut rng(13));
    let before: Vec<Vec<f32>> = c.state_dict().iter().map(|(_, t)| t.to_vec()).collect();
    let unchanged = |c: &Sequential| {
        let now: Vec<Vec<f32>> = c.state_dict().iter().map(|(_, t)| t.to_vec()).collect();
        assert_eq!(now, before, "a failed load must not write anything");
    };

    // Missing key: named, strict only.
    let mut missing = map.clone();
    missing.remove("0.bias");
    let e = err_text(c.load_state_dict(&missing, true).unwrap_err());
    assert!(e.contains("missing") && e.contains("0.bias"), "{e}");
    unchanged(&c);

    // Unexpected key: named, strict only.
    let mut extra = map.clone();
    extra.insert("5.weight".into(), Tensor::zeros([2], &CPU));
    let e = err_text(c.load_state_dict(&extra, true).unwrap_err());
    assert!(e.contains("unexpected") && e.contains("5.weight"), "{e}");
    unchanged(&c);

    // Wrong shape: key and both shapes, strict or not.
    let mut wrong = map.clone();
    wrong.insert("0.weight".into(), Tensor::zeros([5, 4], &CPU));
    for strict in [true, false] {
        let e = err_text(c.load_state_dict(&wrong, strict).unwrap_err());
        assert!(
            e.contains("0.weight") && e.contains("[5, 4]") && e.contains("[5, 3]"),
            "{e}"
        );
        unchanged(&c);
    }

    // Non-strict: loads what is there, ignores the rest.
    c.load_state_dict(&missing, false).unwrap();
    c.load_state_dict(&extra, false).unwrap();
    c.set_training(false);
    assert_eq!(c.forward(&x).unwrap().to_vec(), ya);
}

// ---------------------------------------------------------------------------------------------
// BatchNorm
// ---------------------------------------------------------------------------------------------

/// Per-channel (mean, biased var, unbiased var) of `[N, C, ...]` data, in f64.
fn channel_stats(x: &[f32], dims: &[usize]) -> Vec<(f64, f64, f64)> {
    let c = dims[1];
    let inner: usize = dims[2..].iter().product();
    (0..c)
        .map(|ch| {
            let vals: Vec<f64> = (0..dims[0])
                .flat_map(|n| (0..inner).map(move |i| (n * c + ch) * inner + i))
                .map(|i| x[i] as f64)
                .collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let ss = vals.iter().map(|v| (v - m).powi(2)).sum::<f64>();
            (m, ss / vals.len() as f64, ss / (vals.len() - 1) as f64)
        })
        .collect()
}

/// `(x - mean[c]) / sqrt(var[c] + eps) * w[c] + b[c]` in f64.
fn bn_ref(x: &[f32], dims: &[usize], mean: &[f64], var: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    let c = dims[1];
    let inner: usize = dims[2..].iter().product();
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / inner) % c;
            (v as f64 - mean[ch]) / (var[ch] + 1e-5).sqrt() * w[ch] + b[ch]
        })
        .collect()
}

#[test]
fn batch_norm_train_eval_and_buffers() {
    for dims in [vec![8, 3], vec![4, 3, 5], vec![4, 3, 3, 2]] {
        let mut r = rng(20);
        let layer = bn(3);
        // Non-trivial affine parameters.
        let w = Tensor::from_vec(vec![0.5, 2.0, -1.0], [3]).unwrap();
        let b = Tensor::from_vec(vec![0.1, -0.3, 0.7], [3]).unwrap();
        let mut sd = HashMap::new();
        sd.insert("weight".to_string(), w.clone());
        sd.insert("bias".to_string(), b.clone());
        layer.load_state_dict(&sd, false).unwrap();
        let (wv, bv) = (f64s(&w), f64s(&b));

        let mut rm = vec![0.0f64; 3];
        let mut rv = vec![1.0f64; 3];
        for step in 1..=3 {
            let x = randn(&mut r, &dims, 2.0).add_scalar(1.5);
            let xv = x.to_vec();
            let stats = channel_stats(&xv, &dims);
            let y = layer.forward(&x).unwrap();
            let mean: Vec<f64> = stats.iter().map(|s| s.0).collect();
            let var: Vec<f64> = stats.iter().map(|s| s.1).collect();
            assert_close(
                &format!("bn train {dims:?}"),
                &y.to_vec(),
                &bn_ref(&xv, &dims, &mean, &var, &wv, &bv),
                1e-4,
                1e-4,
            );
            for ch in 0..3 {
                rm[ch] = 0.9 * rm[ch] + 0.1 * stats[ch].0;
                rv[ch] = 0.9 * rv[ch] + 0.1 * stats[ch].2; // unbiased
            }
            assert_close(
                "running_mean",
                &layer.running_mean.to_vec(),
                &rm,
                1e-5,
                1e-5,
            );
            assert_close("running_var", &layer.running_var.to_vec(), &rv, 1e-5, 1e-5);
            assert_eq!(layer.num_batches_tracked.to_scalar().unwrap(), step as f32);
        }

        // Eval: the running statistics normalise; nothing is updated.
        layer.set_training(false);
        assert!(!layer.is_training());
        let x = randn(&mut r, &dims, 1.0);
        let y = layer.forward(&x).unwrap();
        assert_close(
            &format!("bn eval {dims:?}"),
            &y.to_vec(),
            &bn_ref(&x.to_vec(), &dims, &rm, &rv, &wv, &bv),
            1e-5,
            1e-5,
        );
        assert_close(
            "running_mean after eval",
            &layer.running_mean.to_vec(),
            &rm,
            1e-5,
            1e-5,
        );
        assert_eq!(layer.num_batches_tracked.to_scalar().unwrap(), 3.0);
        assert_eq!(layer.num_batches_tracked.rank(), 0);
    }
}

#[test]
fn set_training_propagates_through_sequential() {
    let mut r = rng(21);
    let net = Sequential::new()
        .push(linear(4, 4, true, &mut r))
        .push(bn(4))
        .push(Dropout::new(0.5, &mut r).unwrap());
    let x = randn(&mut r, &[16, 4], 1.0);
    net.set_training(false);
    let y1 = net.forward(&x).unwrap().to_vec();
    let y2 = net.forward(&x).unwrap().to_vec();
    assert_eq!(
        y1, y2,
        "eval must be deterministic (no dropout, running stats)"
    );
    assert_eq!(net.named_buffers()[2].1.to_scalar().unwrap(), 0.0);
    net.set_training(true);
    let y3 = net.forward(&x).unwrap().to_vec();
    assert_ne!(y1, y3);
    assert_eq!(net.named_buffers()[2].1.to_scalar().unwrap(), 1.0);
}

// ---------------------------------------------------------------------------------------------
// dcgan_init, clipping, dropout, embedding, layer norm
// ---------------------------------------------------------------------------------------------

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let s = (v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n).sqrt();
    (m, s)
}

#[test]
fn dcgan_init_statistics() {
    let mut r = rng(30);
    let net = Sequential::new()
        .push(convt(64, 64, 4, 2, 1, false, &mut r)) // 65536 weights
        .push(bn(64))
        .push(conv(64, 32, 4, 2, 1, true, &mut r))
        .push(Flatten)
        .push(linear(128, 256, true, &mut r));
    // BN bias away from 0 first, so zeroing it is observable.
    let bn_bias = &net.named_parameters()[2].1;
    assert_eq!(net.named_parameters()[2].0, "1.bias");
    bn_bias.write_storage(|s| s.as_cpu_mut().fill(0.5)).unwrap();
    let conv_bias_before = net.named_parameters()[4].1.to_vec();

    dcgan_init(&net, &mut r).unwrap();
    let p: HashMap<String, Tensor> = net.named_parameters().into_iter().collect();
    for (key, n) in [
        ("0.weight", 65536),
        ("2.weight", 32768),
        ("4.weight", 32768),
    ] {
        let (m, s) = mean_std(&p[key].to_vec());
        assert_eq!(p[key].elem_count(), n);
        assert!(m.abs() < 1e-3, "{key}: mean {m}");
        assert!((s - 0.02).abs() < 5e-4, "{key}: std {s}");
    }
    let (m, s) = mean_std(&p["1.weight"].to_vec());
    assert!(
        (m - 1.0).abs() < 0.01 && (s - 0.02).abs() < 0.006,
        "bn weight: {m} {s}"
    );
    assert_eq!(p["1.bias"].to_vec(), vec![0.0; 64]);
    assert_eq!(
        p["2.bias"].to_vec(),
        conv_bias_before,
        "conv bias is left alone"
    );
}

#[test]
fn clip_parameters_in_place() {
    let p = Tensor::from_vec(vec![-0.5, -0.01, 0.0, 0.005, 0.02], [5]).unwrap();
    p.set_requires_grad(true);
    let q = Tensor::from_vec(vec![3.0, -3.0], [2]).unwrap();
    clip_parameters(&[p.clone(), q.clone()], 0.01).unwrap();
    assert_eq!(p.to_vec(), vec![-0.01, -0.01, 0.0, 0.005, 0.01]);
    assert_eq!(q.to_vec(), vec![0.01, -0.01]);
    assert!(clip_parameters(&[p], -1.0).is_err());
}

#[test]
fn dropout_masks_and_scales() {
    let mut r = rng(31);
    let d = Dropout::new(0.3, &mut r).unwrap();
    let x = Tensor::ones([100, 100], &CPU);
    let y = d.forward(&x).unwrap().to_vec();
    let zeros = y.iter().filter(|&&v| v == 0.0).count() as f64 / y.len() as f64;
    assert!((zeros - 0.3).abs() < 0.02, "dropped fraction {zeros}");
    let scale = 1.0 / 0.7f32;
    assert!(y.iter().all(|&v| v == 0.0 || (v - scale).abs() < 1e-6));
    assert_ne!(y, d.forward(&x).unwrap().to_vec(), "a new mask each call");
    d.set_training(false);
    assert_eq!(d.forward(&x).unwrap().to_vec(), x.to_vec());
}

#[test]
fn embedding_lookup_and_gradient() {
    let mut r = rng(32);
    let e = Embedding::new(5, 3, &mut r, &CPU).unwrap();
    let w = e.weight.to_vec();
    let y = e.forward_indices(&[4, 0, 4]).unwrap();
    assert_eq!(y.dims(), &[3, 3]);
    assert_eq!(&y.to_vec()[..3], &w[12..15]);
    assert_eq!(&y.to_vec()[3..6], &w[0..3]);
    let idx = Tensor::from_vec(vec![1.0, 2.0, 3.0, 1.0], [2, 2]).unwrap();
    let y = e.forward(&idx).unwrap();
    assert_eq!(y.dims(), &[2, 2, 3]);
    assert_eq!(&y.to_vec()[9..12], &w[3..6]);
    y.sum_all().unwrap().backward().unwrap();
    let g = e.weight.grad().unwrap().to_vec();
    assert_eq!(
        g,
        vec![0., 0., 0., 2., 2., 2., 1., 1., 1., 1., 1., 1., 0., 0., 0.]
    );
    for bad in [5.0, -1.0, 1.5] {
        assert!(
            e.forward(&Tensor::from_vec(vec![bad], [1]).unwrap())
                .is_err(),
            "index {bad}"
        );
    }
}

#[test]
fn layer_norm_normalises_trailing_dims() {
    let mut r = rng(33);
    let ln = LayerNorm::new(vec![4, 5], 1e-5, &CPU).unwrap();
    assert_eq!(names(&ln.named_parameters()), ["weight", "bias"]);
    let x = randn(&mut r, &[3, 4, 5], 3.0).add_scalar(2.0);
    let y = ln.forward(&x).unwrap().to_vec();
    for row in y.chunks(20) {
        let (m, s) = mean_std(row);
        assert!(m.abs() < 1e-5 && (s - 1.0).abs() < 1e-3, "{m} {s}");
    }
    assert!(ln.forward(&randn(&mut r, &[3, 5, 4], 1.0)).is_err());
    assert!(LayerNorm::new(vec![], 1e-5, &CPU).is_err());
}

// ---------------------------------------------------------------------------------------------
// Spectral norm
// ---------------------------------------------------------------------------------------------

/// Largest singular value of a row-major `[h, w]` matrix by power iteration on `W^T W` in f64.
fn top_singular_value(m: &[f64], h: usize, w: usize) -> f64 {
    let mut v = vec![1.0; w];
    let mut sigma = 0.0;
    for _ in 0..5000 {
        let u: Vec<f64> = (0..h)
            .map(|i| (0..w).map(|j| m[i * w + j] * v[j]).sum())
            .collect();
        let mut nv: Vec<f64> = (0..w)
            .map(|j| (0..h).map(|i| m[i * w + j] * u[i]).sum())
            .collect();
        let n = nv.iter().map(|x| x * x).sum::<f64>().sqrt();
        nv.iter_mut().for_each(|x| *x /= n);
        sigma = n.sqrt(); // ||W^T W v|| -> sigma^2
        v = nv;
    }
    sigma
}

#[test]
fn spectral_norm_sigma_converges() {
    let mut r = rng(40);
    // A known matrix: diag(3, 2, 1) has sigma_max 3.
    let l = linear(3, 3, false, &mut r);
    l.weight
        .write_storage(|s| {
            s.as_cpu_mut()
                .copy_from_slice(&[3., 0., 0., 0., 2., 0., 0., 0., 1.])
        })
        .unwrap();
    let sn = SpectralNorm::new(l, &mut r).unwrap();
    let x = randn(&mut r, &[2, 3], 1.0);
    for _ in 0..60 {
        sn.forward(&x).unwrap();
    }
    assert!(
        (sn.sigma().unwrap() - 3.0).abs() < 1e-4,
        "sigma {}",
        sn.sigma().unwrap()
    );

    // A random Linear and Conv2d against an f64 power iteration run to convergence.
    let lin = SpectralNorm::new(linear(10, 6, true, &mut r), &mut r).unwrap();
    let cv = SpectralNorm::new(conv(3, 8, 3, 1, 1, true, &mut r), &mut r).unwrap();
    let ct = SpectralNorm::new(convt(4, 6, 3, 2, 1, true, &mut r), &mut r).unwrap();
    assert_eq!(lin.weight_u.dims(), &[6]);
    assert_eq!(lin.weight_v.dims(), &[10]);
    assert_eq!(cv.weight_u.dims(), &[8]);
    assert_eq!(cv.weight_v.dims(), &[27]);
    assert_eq!(
        ct.weight_u.dims(),
        &[6],
        "ConvTranspose2d: dim 1 is the output dim"
    );
    assert_eq!(ct.weight_v.dims(), &[36]);
    let xl = randn(&mut r, &[2, 10], 1.0);
    let xc = randn(&mut r, &[1, 3, 5, 5], 1.0);
    let xt = randn(&mut r, &[1, 4, 3, 3], 1.0);
    for _ in 0..300 {
        lin.forward(&xl).unwrap();
        cv.forward(&xc).unwrap();
        ct.forward(&xt).unwrap();
    }
    let w = f64s(&lin.layer.weight);
    let want = top_singular_value(&w, 6, 10);
    assert!(
        (lin.sigma().unwrap() as f64 - want).abs() < 1e-4 * want,
        "linear: {} vs {want}",
        lin.sigma().unwrap()
    );
    let w = f64s(&cv.layer.weight);
    let want = top_singular_value(&w, 8, 27);
    assert!(
        (cv.sigma().unwrap() as f64 - want).abs() < 1e-4 * want,
        "conv: {} vs {want}",
        cv.sigma().unwrap()
    );
    // ConvTranspose2d: the matrix is the weight with dims 0 and 1 swapped, [C_out, C_in*k*k].
    let wt = f64s(&ct.layer.weight.permute(&[1, 0, 2, 3]).unwrap());
    let want = top_singular_value(&wt, 6, 36);
    assert!(
        (ct.sigma().unwrap() as f64 - want).abs() < 1e-4 * want,
        "convT: {} vs {want}",
        ct.sigma().unwrap()
    );

    // The normalised weight has sigma_max 1, and the forward uses it.
    lin.set_training(false);
    let wn = lin.normalized_weight().unwrap();
    let s = top_singular_value(&f64s(&wn), 6, 10);
    assert!((s - 1.0).abs() < 1e-4, "normalised sigma {s}");
    let y = lin.forward(&xl).unwrap();
    let direct = xl.linear(&wn, lin.layer.bias.as_ref()).unwrap();
    assert_eq!(y.to_vec(), direct.to_vec());
}

#[test]
fn spectral_norm_names_and_modes() {
    let mut r = rng(41);
    let net = Sequential::new()
        .push(SpectralNorm::new(conv(1, 4, 3, 2, 1, true, &mut r), &mut r).unwrap())
        .push(LeakyRelu(0.2))
        .push(Flatten)
        .push(SpectralNorm::new(linear(64, 1, true, &mut r), &mut r).unwrap());
    assert_eq!(
        names(&net.named_parameters()),
        ["0.bias", "0.weight_orig", "3.bias", "3.weight_orig"]
    );
    assert_eq!(
        names(&net.named_buffers()),
        ["0.weight_u", "0.weight_v", "3.weight_u", "3.weight_v"]
    );
    let x = randn(&mut r, &[2, 1, 8, 8], 1.0);
    assert_eq!(net.forward(&x).unwrap().dims(), &[2, 1]);
    let u = |net: &Sequential| net.named_buffers()[0].1.to_vec();
    // Training: each forward does a power iteration step (u moves); eval: u stays.
    let u0 = u(&net);
    net.forward(&x).unwrap();
    assert_ne!(u(&net), u0);
    net.set_training(false);
    let u1 = u(&net);
    let y1 = net.forward(&x).unwrap().to_vec();
    assert_eq!(u(&net), u1);
    assert_eq!(net.forward(&x).unwrap().to_vec(), y1);
    let norm: f64 = u1.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "u is a unit vector: {norm}");
}

#[test]
fn spectral_norm_gradient_reaches_weight_orig() {
    // In eval mode the output is a fixed function of weight_orig (u, v frozen), so its
    // gradient can be checked against finite differences. It includes the sigma term
    // -(sum(G * W) / sigma^2) u v^T, so plain G / sigma would fail.
    let mut r = rng(42);
    let sn = SpectralNorm::new(linear(5, 4, true, &mut r), &mut r).unwrap();
    for _ in 0..3 {
        sn.forward(&randn(&mut r, &[1, 5], 1.0)).unwrap(); // move u, v off their start
    }
    sn.set_training(false);
    let x = randn(&mut r, &[3, 5], 1.0);
    let wts = randn(&mut r, &[3, 4], 1.0);
    let loss = |sn: &SpectralNorm<Linear>| {
        sn.forward(&x)
            .unwrap()
            .mul(&wts)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    loss(&sn).backward().unwrap();
    let w = &sn.layer.weight;
    let g = w.grad().expect("weight_orig has a gradient").to_vec();
    assert!(sn.layer.bias.as_ref().unwrap().grad().is_some());
    let base = w.to_vec();
    let eps = 1e-2f32;
    let mut fd = Vec::new();
    for i in 0..base.len() {
        let at = |d: f32| {
            let mut data = base.clone();
            data[i] += d;
            w.write_storage(|s| s.as_cpu_mut().copy_from_slice(&data))
                .unwrap();
            let _g = autograd::no_grad();
            loss(&sn).to_scalar().unwrap() as f64
        };
        fd.push((at(eps) - at(-eps)) / (2.0 * eps as f64));
    }
    w.write_storage(|s| s.as_cpu_mut().copy_from_slice(&base))
        .unwrap();
    assert_close("d loss / d weight_orig", &g, &fd, 2e-3, 2e-3);

    // Training mode too: the gradient flows (u, v are constants there).
    sn.set_training(true);
    w.zero_grad();
    loss(&sn).backward().unwrap();
    assert!(w.grad().unwrap().to_vec().iter().any(|&v| v != 0.0));
}

// ---------------------------------------------------------------------------------------------
// End to end
// ---------------------------------------------------------------------------------------------

#[test]
fn mlp_fits_sine_with_adam() {
    let mut r = rng(50);
    let net = Sequential::new()
        .push(linear(1, 32, true, &mut r))
        .push(Tanh)
        .push(linear(32, 1, true, &mut r));
    let n = 64;
    let xs: Vec<f32> = (0..n)
        .map(|i| -2.0 + 4.0 * i as f32 / (n - 1) as f32)
        .collect();
    let ys: Vec<f32> = xs.iter().map(|x| x.sin()).collect();
    let x = Tensor::from_vec(xs, [n, 1]).unwrap();
    let y = Tensor::from_vec(ys, [n, 1]).unwrap();
    let mut opt = Adam::new(
        net.parameters(),
        AdamConfig {
            lr: 1e-2,
            ..Default::default()
        },
    );
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..300 {
        opt.zero_grad();
        let loss = net.forward(&x).unwrap().mse(&y).unwrap();
        loss.backward().unwrap();
        opt.step().unwrap();
        last = loss.to_scalar().unwrap();
        first.get_or_insert(last);
    }
    let first = first.unwrap();
    assert!(
        last < first / 10.0,
        "loss {first} -> {last}: expected a 10x drop"
    );
}

#[test]
fn linear_regression_with_sgd_momentum_recovers_weights() {
    let mut r = rng(51);
    let l = linear(3, 1, true, &mut r);
    let x = randn(&mut r, &[128, 3], 1.0);
    let true_w = Tensor::from_vec(vec![1.5, -2.0, 0.5], [1, 3]).unwrap();
    let y = x
        .linear(&true_w, Some(&Tensor::from_vec(vec![0.3], [1]).unwrap()))
        .unwrap();
    let mut opt = Sgd::new(
        l.parameters(),
        SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            ..Default::default()
        },
    );
    for _ in 0..200 {
        opt.zero_grad();
        l.forward(&x).unwrap().mse(&y).unwrap().backward().unwrap();
        opt.step().unwrap();
    }
    assert_close("weights", &l.weight.to_vec(), &[1.5, -2.0, 0.5], 1e-3, 0.0);
    assert_close(
        "bias",
        &l.bias.as_ref().unwrap().to_vec(),
        &[0.3],
        1e-3,
        0.0,
    );
}
