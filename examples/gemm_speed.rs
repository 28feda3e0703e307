use ganforge::backend::cpu::gemm::{gemm, microkernel, MatRef};
use std::time::Instant;
fn main() {
    println!(
        "kernel {} threads {}",
        microkernel().name,
        rayon::current_num_threads()
    );
    for &(m, n, k) in &[
        (256, 256, 256),
        (512, 512, 512),
        (1024, 1024, 1024),
        (2048, 2048, 2048),
        (3136, 2048, 256),
        (3136, 128, 1024),
        (64, 12544, 100),
        (64, 784, 1024),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0.0f32; m * n];
        let mut ts = vec![];
        for _ in 0..7 {
            let t = Instant::now();
            gemm(
                m,
                n,
                k,
                MatRef::row_major(&a, k),
                MatRef::row_major(&b, n),
                &mut c,
                n,
                false,
            );
            ts.push(t.elapsed().as_secs_f64());
        }
        ts.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let gf = 2.0 * (m * n * k) as f64 / ts[3] / 1e9;
        println!(
            "{m}x{n}x{k}: {:.2} ms  {:.1} GFLOP/s (best {:.1})",
            ts[3] * 1e3,
            gf,
            2.0 * (m * n * k) as f64 / ts[0] / 1e9
        );
    }
}
