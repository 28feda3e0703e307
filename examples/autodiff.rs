//! Autodiff, from scalars to a second-order gradient, in four small parts.
//!
//! Run it with `cargo run --release --example autodiff` (it also runs under `cargo test`).
//!
//! 1. Scalars: a small expression, its gradients by `backward()`, checked against the
//!    derivatives worked out by hand; then the tape that the expression recorded.
//! 2. micrograd's README expression (Karpathy's micrograd), whose values PyTorch computes as
//!    g = 24.7041, dg/da = 138.8338, dg/db = 645.5773.
//! 3. Tensors: a tiny linear layer and a mean-squared-error loss; the weight gradient is
//!    checked against its closed form, and one SGD step lowers the loss.
//! 4. Second order: `autograd::grad(.., create_graph = true)` returns a gradient that is
//!    itself recorded on the tape, so a penalty on it can be differentiated again (what the
//!    WGAN-GP gradient penalty does); checked against finite differences.
//!
//! How it works (see `src/autograd/mod.rs`): every op result remembers its `Op` and inputs
//! (define-by-run, like PyTorch). `backward()` sorts that graph topologically and walks it
//! from the output back to the leaves, calling one backward rule per node
//! (`src/autograd/rules.rs`) and adding up the contributions that reach each tensor.

use ganforge::nn::{Linear, LinearConfig, Module};
use ganforge::optim::{Optimizer, Sgd, SgdConfig};
use ganforge::tensor::TensorId;
use ganforge::{autograd, Device, Result, Rng, Tensor};
use std::collections::HashMap;

fn main() -> Result<()> {
    scalars()?;
    micrograd()?;
    linear_layer()?;
    second_order()?;
    println!("\nall checks passed");
    Ok(())
}

/// A leaf scalar (a 0-dim tensor) whose gradient we want.
fn leaf(v: f32) -> Tensor {
    let t = Tensor::scalar(v);
    t.set_requires_grad(true);
    t
}

/// The value of a one-element tensor.
fn val(t: &Tensor) -> f32 {
    t.to_vec()[0]
}

/// The gradient `backward()` left on a leaf.
fn grad_of(t: &Tensor) -> f32 {
    val(&t.grad().expect("backward() reached this leaf"))
}

fn check(what: &str, got: f32, want: f32, tol: f32) {
    let ok = (got - want).abs() <= tol * (1.0 + want.abs());
    println!(
        "  {what:<28} {got:>12.6}   expected {want:>12.6}   {}",
        if ok { "ok" } else { "MISMATCH" }
    );
    assert!(ok, "{what}: got {got}, expected {want}");
}

// ---- 1. scalars ---------------------------------------------------------------------------

fn scalars() -> Result<()> {
    println!("1. f(x, y) = tanh(x*y + y^2) at x = 0.5, y = -0.7");
    let (x, y) = (leaf(0.5), leaf(-0.7));
    let u = x.mul(&y)?.add(&y.sqr()?)?; // u = x*y + y^2
    let f = u.tanh(); // f = tanh(u)
    f.backward()?;

    // By hand: df/du = 1 - tanh(u)^2, du/dx = y, du/dy = x + 2y (the chain rule).
    let (xv, yv) = (0.5f32, -0.7f32);
    let fv = (xv * yv + yv * yv).tanh();
    let dfdu = 1.0 - fv * fv;
    check("f", val(&f), fv, 1e-6);
    check("df/dx = (1 - f^2) * y", grad_of(&x), dfdu * yv, 1e-5);
    check(
        "df/dy = (1 - f^2) * (x + 2y)",
        grad_of(&y),
        dfdu * (xv + 2.0 * yv),
        1e-5,
    );

    println!("  the tape f recorded, leaves first (each node: op(inputs)):");
    print_tape(&f);

    // backward() *accumulates* into .grad(), like PyTorch: a second call doubles it.
    let first = grad_of(&x);
    f.backward()?;
    check("dx after a 2nd backward()", grad_of(&x), 2.0 * first, 1e-6);
    x.zero_grad(); // what optimizer.zero_grad() does before every step
    assert!(x.grad().is_none());
    Ok(())
}

/// Prints every node reachable from `out`, inputs before the nodes that use them (the order
/// `backward()` visits them in, reversed), numbered `%0`, `%1`, ...
fn print_tape(out: &Tensor) {
    fn visit(t: &Tensor, number: &mut HashMap<TensorId, usize>) -> usize {
        if let Some(&n) = number.get(&t.id()) {
            return n;
        }
        let line = match t.op() {
            None => "leaf".to_string(),
            Some(op) => {
                let ins: Vec<String> = op
                    .inputs()
                    .iter()
                    .map(|i| format!("%{}", visit(i, number)))
                    .collect();
                format!("{}({})", op.name(), ins.join(", "))
            }
        };
        let n = number.len();
        number.insert(t.id(), n);
        println!("    %{n} = {line:<16} value {:>8.4}", val(t));
        n
    }
    visit(out, &mut HashMap::new());
}

// ---- 2. micrograd's example ---------------------------------------------------------------

fn micrograd() -> Result<()> {
    println!("\n2. micrograd's README expression");
    let (a, b) = (leaf(-4.0), leaf(2.0));
    let c = a.add(&b)?; //                          c = a + b
    let d = a.mul(&b)?.add(&b.powf(3.0))?; //       d = a * b + b**3
    let c = c.add(&c.add_scalar(1.0))?; //          c += c + 1
    let c = c.add(&c.add_scalar(1.0).add(&a.neg())?)?; // c += 1 + c + (-a)
    let d = d.add(&d.mul_scalar(2.0).add(&b.add(&a)?.relu())?)?; // d += d * 2 + (b + a).relu()
    let d = d.add(&d.mul_scalar(3.0).add(&b.sub(&a)?.relu())?)?; // d += 3 * d + (b - a).relu()
    let e = c.sub(&d)?; //                          e = c - d
    let f = e.sqr()?; //                            f = e**2
    let g = f.mul_scalar(0.5); //                   g = f / 2.0
    let g = g.add(&f.powf(-1.0).mul_scalar(10.0))?; // g += 10.0 / f
    g.backward()?;
    check("g", val(&g), 24.7041, 1e-4);
    check("dg/da", grad_of(&a), 138.8338, 1e-4);
    check("dg/db", grad_of(&b), 645.5773, 1e-4);
    Ok(())
}

// ---- 3. a linear layer --------------------------------------------------------------------

fn linear_layer() -> Result<()> {
    println!("\n3. y = x W^T + b (Linear 3 -> 2), L = mean((y - t)^2)");
    let dev = Device::Cpu;
    let mut rng = Rng::new(0);
    let layer = Linear::new(
        LinearConfig {
            in_features: 3,
            out_features: 2,
            bias: true,
        },
        &mut rng,
        &dev,
    )?;
    let x = Tensor::randn(0.0, 1.0, [4, 3], &mut rng, &dev);
    let t = Tensor::randn(0.0, 1.0, [4, 2], &mut rng, &dev);
    let y = layer.forward(&x)?;
    let loss = y.mse(&t)?;
    loss.backward()?;

    // By hand: dL/dy = 2 (y - t) / 8 (8 = number of elements), and y = x W^T + b, so
    // dL/dW[o, i] = sum_n dL/dy[n, o] * x[n, i]   and   dL/db[o] = sum_n dL/dy[n, o].
    let (yv, tv, xv) = (y.to_vec(), t.to_vec(), x.to_vec());
    let dy: Vec<f32> = yv
        .iter()
        .zip(&tv)
        .map(|(y, t)| 2.0 * (y - t) / 8.0)
        .collect();
    let dw = layer.weight.grad().expect("weight grad").to_vec();
    let db = layer
        .bias
        .as_ref()
        .and_then(|b| b.grad())
        .expect("bias grad")
        .to_vec();
    for o in 0..2 {
        for i in 0..3 {
            let want: f32 = (0..4).map(|n| dy[n * 2 + o] * xv[n * 3 + i]).sum();
            check(&format!("dL/dW[{o},{i}]"), dw[o * 3 + i], want, 1e-5);
        }
        let want: f32 = (0..4).map(|n| dy[n * 2 + o]).sum();
        check(&format!("dL/db[{o}]"), db[o], want, 1e-5);
    }

    // One SGD step, p <- p - lr * dL/dp, must lower the loss.
    let mut opt = Sgd::new(
        layer.parameters(),
        SgdConfig {
            lr: 0.1,
            ..SgdConfig::default()
        },
    );
    opt.step()?;
    opt.zero_grad();
    let after = layer.forward(&x)?.mse(&t)?;
    println!(
        "  loss before an SGD step (lr 0.1): {:.5}, after: {:.5}",
        val(&loss),
        val(&after)
    );
    assert!(val(&after) < val(&loss));
    Ok(())
}

// ---- 4. second order ----------------------------------------------------------------------

/// `P(W) = sum_n (||d/dx_n sum tanh(x W^T)||^2)`: a gradient penalty in miniature.
/// `create_graph = true` keeps the inner gradient on the tape so P can be differentiated.
fn penalty(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let out = x.matmul(&w.t()?)?.tanh().sum_all()?;
    let gx = autograd::grad(&[out], None, std::slice::from_ref(x), true)?[0]
        .clone()
        .expect("out depends on x");
    gx.sqr()?.sum_all()
}

fn second_order() -> Result<()> {
    println!("\n4. second order: d/dW of ||d/dx sum tanh(x W^T)||^2");
    let mut rng = Rng::new(1);
    let x = Tensor::randn(0.0, 1.0, [3, 4], &mut rng, &Device::Cpu);
    x.set_requires_grad(true); // we differentiate with respect to x first
    let w_data: Vec<f32> = (0..8).map(|_| rng.uniform(-0.8, 0.8)).collect();
    let w = Tensor::from_vec(w_data.clone(), [2, 4])?;
    w.set_requires_grad(true);

    // The inner backward ran tanh's rule g * (1 - y^2), matmul's rule g W, ...: all recorded.
    // The outer backward differentiates those rules themselves (y = tanh(..) depends on W).
    let p = penalty(&x, &w)?;
    let dw = autograd::grad(
        std::slice::from_ref(&p),
        None,
        std::slice::from_ref(&w),
        false,
    )?[0]
        .clone()
        .expect("P depends on W")
        .to_vec();

    // Central finite differences on each weight, in f64 around the f32 evaluations.
    let h = 1e-2f32;
    for (k, &analytic) in dw.iter().enumerate() {
        let at = |delta: f32| -> Result<f64> {
            let mut v = w_data.clone();
            v[k] += delta;
            let wk = Tensor::from_vec(v, [2, 4])?;
            Ok(val(&penalty(&x, &wk)?) as f64)
        };
        let numeric = (at(h)? - at(-h)?) / (2.0 * h as f64);
        check(&format!("dP/dW[{}]", k), analytic, numeric as f32, 2e-2);
    }
    println!("  P = {:.5}", val(&p));
    Ok(())
}
