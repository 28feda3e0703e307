//! The W1-W4 training-step benchmark (`../shared/anchors/perf.md`): prints each workload's
//! per-step times and `RESULT ganforge <workload> cpu median_ms X`, the form the PyTorch
//! reference script prints, then a table with GFLOP/s and % of the 190 GFLOP/s ceiling.
//!
//! Run: `RAYON_NUM_THREADS=2 cargo bench --bench workloads [-- w1 w3 --steps 10 --warmup 3]`
//! (`ganforge bench --workload w1` runs the same code from the binary.)

use ganforge::bench::{report, Bench, Workload};
use ganforge::Device;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut workloads = Vec::new();
    let (mut steps, mut warmup) = (10usize, 3usize);
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--steps" => {
                steps = args[i + 1].parse().expect("--steps N");
                i += 1;
            }
            "--warmup" => {
                warmup = args[i + 1].parse().expect("--warmup N");
                i += 1;
            }
            "w1" => workloads.push(Workload::W1),
            "w2" => workloads.push(Workload::W2),
            "w3" => workloads.push(Workload::W3),
            "w4" => workloads.push(Workload::W4),
            other => panic!("unknown argument {other}: expected w1..w4, --steps N, --warmup N"),
        }
        i += 1;
    }
    if workloads.is_empty() {
        workloads = vec![Workload::W1, Workload::W3, Workload::W4, Workload::W2];
    }
    println!("threads: {}", rayon::current_num_threads());
    let mut all = Vec::new();
    for w in workloads {
        let mut bench = Bench::new(w, &Device::Cpu).expect("workload builds");
        all.extend(bench.run(warmup, steps).expect("workload runs"));
    }
    print!("{}", report(&all, "cpu"));
}
