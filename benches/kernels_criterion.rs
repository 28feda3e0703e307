//! Criterion benches of the CPU kernels at the shapes of the reference workloads
//! (`../shared/anchors/perf.md`): GEMM 256..2048, conv2d and conv_transpose2d forward and
//! backward (dx + dw) at the W1/W2 layer shapes, batch norm forward and forward+backward.
//! Throughput is set to the FLOP count (2 * MACs per pass), so criterion's "elem/s" reads as
//! FLOP/s. Run: `RAYON_NUM_THREADS=2 cargo bench --bench kernels_criterion`.
//! (`cargo bench --bench kernels` prints the same shapes as one table.)

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ganforge::autograd;
use ganforge::ops::{BatchNormParams, Conv2dParams, ConvTranspose2dParams};
use ganforge::{Device, Rng, Tensor};
use std::time::Duration;

fn leaf(t: Tensor) -> Tensor {
    t.set_requires_grad(true);
    t
}

fn gemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm");
    let mut rng = Rng::new(1);
    for n in [256usize, 512, 1024, 2048] {
        let a = Tensor::randn(0.0, 1.0, [n, n], &mut rng, &Device::Cpu);
        let b = Tensor::randn(0.0, 1.0, [n, n], &mut rng, &Device::Cpu);
        group.throughput(Throughput::Elements(2 * (n * n * n) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| {
            bench.iter(|| a.matmul(&b).unwrap())
        });
    }
    group.finish();
}

/// (name, N, C_in, H, C_out, k, stride, padding)
type ConvShape = (
    &'static str,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

const CONVS: [ConvShape; 4] = [
    ("W1 D.c1 1->64 28->14", 64, 1, 28, 64, 4, 2, 1),
    ("W1 D.c2 64->128 14->7", 64, 64, 14, 128, 4, 2, 1),
    ("W2 D.c2 64->128 32->16", 64, 64, 32, 128, 4, 2, 1),
    ("W2 D.c4 256->512 8->4", 64, 256, 8, 512, 4, 2, 1),
];

const CONV_TS: [ConvShape; 4] = [
    ("W1 G.ct1 100->256 1->7", 64, 100, 1, 256, 7, 1, 0),
    ("W1 G.ct2 256->128 7->14", 64, 256, 7, 128, 4, 2, 1),
    ("W1 G.ct3 128->1 14->28", 64, 128, 14, 1, 4, 2, 1),
    ("W2 G.ct4 128->64 16->32", 64, 128, 16, 64, 4, 2, 1),
];

fn conv2d(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv2d");
    let mut rng = Rng::new(2);
    for (name, n, ci, h, co, k, s, p) in CONVS {
        let params = Conv2dParams {
            stride: s,
            padding: p,
        };
        let oh = params.out_size(h, k).unwrap();
        let flops = 2 * (n * co * oh * oh * ci * k * k) as u64;
        let x = leaf(Tensor::randn(
            0.0,
            1.0,
            [n, ci, h, h],
            &mut rng,
            &Device::Cpu,
        ));
        let w = leaf(Tensor::randn(
            0.0,
            0.02,
            [co, ci, k, k],
            &mut rng,
            &Device::Cpu,
        ));
        group.throughput(Throughput::Elements(flops));
        group.bench_function(BenchmarkId::new("fwd", name), |b| {
            b.iter(|| x.detach().conv2d(&w.detach(), params).unwrap())
        });
        let y = x.conv2d(&w, params).unwrap();
        let g = Tensor::randn(0.0, 1.0, y.dims().to_vec(), &mut rng, &Device::Cpu);
        group.throughput(Throughput::Elements(2 * flops));
        group.bench_function(BenchmarkId::new("bwd dx+dw", name), |b| {
            b.iter(|| {
                let inputs = [x.clone(), w.clone()];
                autograd::grad(
                    std::slice::from_ref(&y),
                    Some(std::slice::from_ref(&g)),
                    &inputs,
                    false,
                )
                .unwrap()
            })
        });
    }
    group.finish();
}

fn conv_transpose2d(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv_transpose2d");
    let mut rng = Rng::new(3);
    for (name, n, ci, h, co, k, s, p) in CONV_TS {
        let params = ConvTranspose2dParams {
            stride: s,
            padding: p,
            output_padding: [0, 0],
        };
        let flops = 2 * (n * ci * h * h * co * k * k) as u64;
        let x = leaf(Tensor::randn(
            0.0,
            1.0,
            [n, ci, h, h],
            &mut rng,
            &Device::Cpu,
        ));
        let w = leaf(Tensor::randn(
            0.0,
            0.02,
            [ci, co, k, k],
            &mut rng,
            &Device::Cpu,
        ));
        group.throughput(Throughput::Elements(flops));
        group.bench_function(BenchmarkId::new("fwd", name), |b| {
            b.iter(|| x.detach().conv_transpose2d(&w.detach(), params).unwrap())
        });
        let y = x.conv_transpose2d(&w, params).unwrap();
        let g = Tensor::randn(0.0, 1.0, y.dims().to_vec(), &mut rng, &Device::Cpu);
        group.throughput(Throughput::Elements(2 * flops));
        group.bench_function(BenchmarkId::new("bwd dx+dw", name), |b| {
            b.iter(|| {
                let inputs = [x.clone(), w.clone()];
                autograd::grad(
                    std::slice::from_ref(&y),
                    Some(std::slice::from_ref(&g)),
                    &inputs,
                    false,
                )
                .unwrap()
            })
        });
    }
    group.finish();
}

fn batch_norm(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch_norm_train");
    let mut rng = Rng::new(4);
    for (c_n, h) in [(256usize, 7usize), (128, 14), (64, 32)] {
        let name = format!("[64, {c_n}, {h}, {h}]");
        let x = leaf(Tensor::randn(
            0.0,
            1.0,
            [64, c_n, h, h],
            &mut rng,
            &Device::Cpu,
        ));
        let gamma = leaf(Tensor::ones(c_n, &Device::Cpu));
        let beta = leaf(Tensor::zeros(c_n, &Device::Cpu));
        let bn = |x: &Tensor| {
            x.batch_norm(
                None,
                Some(&gamma),
                Some(&beta),
                true,
                BatchNormParams::default(),
            )
            .unwrap()
        };
        group.throughput(Throughput::Elements((64 * c_n * h * h) as u64));
        group.bench_function(BenchmarkId::new("fwd", &name), |b| {
            b.iter(|| bn(&x.detach()))
        });
        group.bench_function(BenchmarkId::new("fwd+bwd", &name), |b| {
            b.iter(|| {
                let y = bn(&x).sum_all().unwrap();
                autograd::grad(&[y], None, &[x.clone(), gamma.clone(), beta.clone()], false)
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = kernels;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = gemm, conv2d, conv_transpose2d, batch_norm
}
criterion_main!(kernels);
