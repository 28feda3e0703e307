use ganforge::ops::{Conv2dParams, ConvTranspose2dParams};
use ganforge::{autograd, Device, Rng, Tensor};
fn main() {
    let dev = Device::Cpu;
    let mut rng = Rng::new(1);
    let x = Tensor::randn(0.0, 1.0, [2, 3, 7, 9], &mut rng, &dev);
    x.set_requires_grad(true);
    let w = Tensor::randn(0.0, 0.3, [4, 3, 3, 3], &mut rng, &dev);
    w.set_requires_grad(true);
    let y = x
        .conv2d(
            &w,
            Conv2dParams {
                stride: 2,
                padding: 1,
            },
        )
        .unwrap()
        .leaky_relu(0.2);
    println!("y {:?}", y.dims());
    let s = y.sum_all().unwrap();
    let gx = autograd::grad(&[s.clone()], None, &[x.clone()], true).unwrap()[0]
        .clone()
        .unwrap();
    let gp = gx.sqr().unwrap().sum_all().unwrap();
    gp.backward().unwrap();
    println!(
        "gp {} w.grad {:?}",
        gp.to_scalar().unwrap(),
        w.grad().unwrap().dims()
    );
    // finite difference on w[0]
    let eps = 1e-3;
    let f = |wv: &Tensor| {
        let x2 = x.detach();
        x2.set_requires_grad(true);
        let y = x2
            .conv2d(
                wv,
                Conv2dParams {
                    stride: 2,
                    padding: 1,
                },
            )
            .unwrap()
            .leaky_relu(0.2)
            .sum_all()
            .unwrap();
        let g = autograd::grad(&[y], None, &[x2], true).unwrap()[0]
            .clone()
            .unwrap();
        g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap() as f64
    };
    let mut wp = w.to_vec();
    wp[5] += eps;
    let mut wm = w.to_vec();
    wm[5] -= eps;
    let fd = (f(&Tensor::from_vec(wp, [4, 3, 3, 3]).unwrap())
        - f(&Tensor::from_vec(wm, [4, 3, 3, 3]).unwrap()))
        / (2.0 * eps as f64);
    println!("fd {fd} analytic {}", w.grad().unwrap().to_vec()[5]);
    let t = Tensor::randn(0.0, 1.0, [2, 3, 7, 9], &mut rng, &dev);
    let ct = t
        .conv_transpose2d(
            &Tensor::randn(0.0, 1.0, [3, 5, 4, 4], &mut rng, &dev),
            ConvTranspose2dParams::new(2, 1, 1).unwrap(),
        )
        .unwrap();
    println!("convT {:?}", ct.dims());
}
