//! One conv2d and two conv_transpose2d, forward and backward, on the CPU and on the GPU,
//! compared element by element with each other and with the index formula written as a loop.
//!
//! ```text
//! cargo run --release --example conv_cpu_vs_gpu
//! ```
//!
//! With no GPU adapter it says so and exits 0 (unless `GANFORGE_REQUIRE_GPU=1`, as in CI,
//! where a missing adapter is an error). Without a hardware GPU, Mesa's lavapipe (a Vulkan
//! driver that runs on the CPU; `apt install mesa-vulkan-drivers`) is a GPU for this purpose.
//!
//! conv2d (`src/ops/conv2d.rs`), x: [N, C_in, H, W], w: [C_out, C_in, KH, KW]:
//!
//! ```text
//! out[n, co, oh, ow] = sum over ci, kh, kw of
//!                      w[co, ci, kh, kw] * x[n, ci, oh*s - p + kh, ow*s - p + kw]
//!                      (x is 0 outside the image: that is the padding)
//! OH = (H + 2p - KH) / s + 1   (floor)
//! ```
//!
//! conv_transpose2d (`src/ops/conv_transpose2d.rs`), w: [C_in, C_out, KH, KW], is the adjoint
//! of conv2d with respect to x: every input pixel *scatters* into the output with the same
//! index map,
//!
//! ```text
//! out[n, co, ih*s - p + kh, iw*s - p + kw] += x[n, ci, ih, iw] * w[ci, co, kh, kw]
//! OH = (H - 1)*s - 2p + KH + output_padding
//! ```
//!
//! On the CPU both are GEMMs (conv2d: `W @ im2col(x)`; conv_transpose2d: `W^T @ x`, then
//! col2im); on the GPU, implicit GEMMs in `shaders/conv2d.wgsl` and
//! `shaders/conv_transpose2d.wgsl` that compute each im2col element when they load it.
//! The backward pass runs the other two convolution kernels: conv2d's input gradient is a
//! conv_transpose2d, its weight gradient is `conv2d_weight_grad`, and conv_transpose2d's
//! input gradient is a conv2d.

use ganforge::ops::{Conv2dParams, ConvTranspose2dParams};
use ganforge::{Device, Result, Rng, Tensor};

fn main() -> Result<()> {
    let gpu = match Device::gpu() {
        Ok(d) => d,
        Err(e) => {
            let required = std::env::var("GANFORGE_REQUIRE_GPU").is_ok_and(|v| v == "1");
            println!("no GPU adapter, nothing to compare: {e}");
            println!("(install mesa-vulkan-drivers for lavapipe, a software Vulkan GPU)");
            if required {
                eprintln!("GANFORGE_REQUIRE_GPU=1: a missing GPU is an error");
                std::process::exit(1);
            }
            return Ok(());
        }
    };
    if let Device::Gpu(g) = &gpu {
        println!("GPU: {}", g.info());
    }
    // Device::auto() is what `ganforge train --device auto` uses: it takes a hardware GPU and
    // leaves a software one (lavapipe) alone, since the CPU kernels are faster than it.
    println!("Device::auto() would pick: {}", Device::auto().1);

    let mut rng = Rng::new(42);
    let cpu = Device::Cpu;

    // conv2d: odd sizes, stride 2, padding 1 (a DCGAN discriminator layer in miniature).
    let x = Tensor::randn(0.0, 1.0, [2, 3, 9, 11], &mut rng, &cpu);
    let w = Tensor::randn(0.0, 0.3, [5, 3, 3, 3], &mut rng, &cpu);
    let p = Conv2dParams {
        stride: 2,
        padding: 1,
    };
    let reference = conv2d_by_formula(&x, &w, p);
    compare(
        "conv2d [2,3,9,11] * [5,3,3,3], s2 p1",
        &gpu,
        &x,
        &w,
        reference,
        |x, w| x.conv2d(w, p),
    )?;

    // conv_transpose2d with 3 output channels: the GPU runs one thread per output element
    // (`conv_transpose2d_thread`), as for an image generator's last layer.
    let x = Tensor::randn(0.0, 1.0, [2, 4, 5, 6], &mut rng, &cpu);
    let w = Tensor::randn(0.0, 0.3, [4, 3, 4, 4], &mut rng, &cpu);
    let pt = ConvTranspose2dParams {
        stride: 2,
        padding: 1,
        output_padding: [1, 0],
    };
    let reference = conv_transpose2d_by_formula(&x, &w, pt);
    compare(
        "conv_transpose2d [2,4,5,6] * [4,3,4,4], s2 p1 op(1,0)",
        &gpu,
        &x,
        &w,
        reference,
        |x, w| x.conv_transpose2d(w, pt),
    )?;

    // 16 output channels: the GPU runs the implicit GEMM, one per stride phase
    // (`conv_transpose2d_forward`, workgroup_id.z = the phase).
    let x = Tensor::randn(0.0, 1.0, [2, 8, 4, 4], &mut rng, &cpu);
    let w = Tensor::randn(0.0, 0.3, [8, 16, 4, 4], &mut rng, &cpu);
    let pt = ConvTranspose2dParams {
        stride: 2,
        padding: 1,
        output_padding: [0, 0],
    };
    let reference = conv_transpose2d_by_formula(&x, &w, pt);
    compare(
        "conv_transpose2d [2,8,4,4] * [8,16,4,4], s2 p1",
        &gpu,
        &x,
        &w,
        reference,
        |x, w| x.conv_transpose2d(w, pt),
    )?;

    println!("CPU and GPU agree");
    Ok(())
}

/// Runs `f` on CPU tensors and on their GPU copies; compares the outputs with each other and
/// with `reference` (the formula, in f64), then the gradients of `sum(out * r)` (r random)
/// with respect to x and w on both devices.
fn compare(
    what: &str,
    gpu: &Device,
    x: &Tensor,
    w: &Tensor,
    reference: Vec<f64>,
    f: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
) -> Result<()> {
    // Forward and backward on one device; everything copied back to the host.
    let run = |dev: &Device| -> Result<Run> {
        let (xd, wd) = (x.to_device(dev)?, w.to_device(dev)?);
        xd.set_requires_grad(true);
        wd.set_requires_grad(true);
        let out = f(&xd, &wd)?;
        // The same random weights on both devices (drawn on the host, then uploaded).
        let r = Tensor::rand_uniform(-1.0, 1.0, out.dims().to_vec(), &mut Rng::new(7), dev);
        out.mul(&r)?.sum_all()?.backward()?;
        Ok(Run {
            out: out.try_to_vec()?,
            dx: xd.grad().expect("x requires a gradient").try_to_vec()?,
            dw: wd.grad().expect("w requires a gradient").try_to_vec()?,
            dims: out.dims().to_vec(),
        })
    };
    let (c, g) = (run(&Device::Cpu)?, run(gpu)?);
    println!("{what} -> output {:?}", c.dims);
    let formula: Vec<f32> = reference.iter().map(|&v| v as f32).collect();
    report("  output, CPU vs formula", &c.out, &formula);
    report("  output, GPU vs CPU    ", &g.out, &c.out);
    report("  dL/dx,  GPU vs CPU    ", &g.dx, &c.dx);
    report("  dL/dw,  GPU vs CPU    ", &g.dw, &c.dw);
    Ok(())
}

/// What one device computed.
struct Run {
    out: Vec<f32>,
    dx: Vec<f32>,
    dw: Vec<f32>,
    dims: Vec<usize>,
}

/// Prints the largest elementwise difference and fails beyond float rounding.
fn report(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let (mut max_abs, mut max_ref) = (0.0f32, 0.0f32);
    for (g, w) in got.iter().zip(want) {
        max_abs = max_abs.max((g - w).abs());
        max_ref = max_ref.max(w.abs());
    }
    println!("{what}: max |diff| = {max_abs:.2e} (largest value {max_ref:.2})");
    assert!(
        max_abs <= 1e-4 * (1.0 + max_ref),
        "{what}: difference {max_abs} is more than rounding"
    );
}

/// conv2d's index formula, literally, in f64.
fn conv2d_by_formula(x: &Tensor, w: &Tensor, p: Conv2dParams) -> Vec<f64> {
    let (xd, wd) = (x.dims(), w.dims());
    let (n_n, ci_n, h, wi) = (xd[0], xd[1], xd[2], xd[3]);
    let (co_n, kh_n, kw_n) = (wd[0], wd[2], wd[3]);
    let oh_n = (h + 2 * p.padding - kh_n) / p.stride + 1;
    let ow_n = (wi + 2 * p.padding - kw_n) / p.stride + 1;
    let (xv, wv) = (x.to_vec(), w.to_vec());
    let mut out = vec![0.0f64; n_n * co_n * oh_n * ow_n];
    for n in 0..n_n {
        for co in 0..co_n {
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let mut acc = 0.0f64;
                    for ci in 0..ci_n {
                        for kh in 0..kh_n {
                            for kw in 0..kw_n {
                                // the input pixel this tap reads; outside the image = padding
                                let ih = (oh * p.stride + kh) as isize - p.padding as isize;
                                let iw = (ow * p.stride + kw) as isize - p.padding as isize;
                                if ih < 0 || iw < 0 || ih >= h as isize || iw >= wi as isize {
                                    continue;
                                }
                                let (ih, iw) = (ih as usize, iw as usize);
                                acc += wv[((co * ci_n + ci) * kh_n + kh) * kw_n + kw] as f64
                                    * xv[((n * ci_n + ci) * h + ih) * wi + iw] as f64;
                            }
                        }
                    }
                    out[((n * co_n + co) * oh_n + oh) * ow_n + ow] = acc;
                }
            }
        }
    }
    out
}

/// conv_transpose2d's index formula (the scatter form), literally, in f64.
fn conv_transpose2d_by_formula(x: &Tensor, w: &Tensor, p: ConvTranspose2dParams) -> Vec<f64> {
    let (xd, wd) = (x.dims(), w.dims());
    let (n_n, ci_n, h, wi) = (xd[0], xd[1], xd[2], xd[3]);
    let (co_n, kh_n, kw_n) = (wd[1], wd[2], wd[3]);
    let oh_n = (h - 1) * p.stride + kh_n + p.output_padding[0] - 2 * p.padding;
    let ow_n = (wi - 1) * p.stride + kw_n + p.output_padding[1] - 2 * p.padding;
    let (xv, wv) = (x.to_vec(), w.to_vec());
    let mut out = vec![0.0f64; n_n * co_n * oh_n * ow_n];
    for n in 0..n_n {
        for ci in 0..ci_n {
            for ih in 0..h {
                for iw in 0..wi {
                    let xval = xv[((n * ci_n + ci) * h + ih) * wi + iw] as f64;
                    for co in 0..co_n {
                        for kh in 0..kh_n {
                            for kw in 0..kw_n {
                                // where this input pixel lands; outside the output = dropped
                                let oh = (ih * p.stride + kh) as isize - p.padding as isize;
                                let ow = (iw * p.stride + kw) as isize - p.padding as isize;
                                if oh < 0 || ow < 0 || oh >= oh_n as isize || ow >= ow_n as isize {
                                    continue;
                                }
                                let (oh, ow) = (oh as usize, ow as usize);
                                out[((n * co_n + co) * oh_n + oh) * ow_n + ow] +=
                                    xval * wv[((ci * co_n + co) * kh_n + kh) * kw_n + kw] as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    out
}
