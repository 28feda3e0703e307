#!/usr/bin/env bash
# The GPU checks in one go, for a machine with a real GPU (or, for a smoke run, lavapipe):
# build, run every GPU test with an adapter required, then the GPU-vs-CPU benches. Everything
# BENCHMARKS.md needs is printed: the adapter, the test summary, the kernel table, the steps.
#
#   scripts/gpu_bench.sh            # batch 64, W1 and W2 layer shapes, matmul up to 4096
#   QUICK=1 scripts/gpu_bench.sh    # batch 8, small shapes (minutes on lavapipe)
set -euo pipefail
cd "$(dirname "$0")/.."
export GANFORGE_REQUIRE_GPU=1
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

date -u
(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true)
cargo build --release --benches --bin ganforge
echo "== GPU tests (release) =="
cargo test --release gpu 2>&1 | grep -E "^test result|FAILED|panicked|W1 at" || true
echo "== kernels and W1 steps, GPU vs CPU =="
if [ -n "${QUICK:-}" ]; then
    cargo bench --bench gpu_vs_cpu -- --batch 8 --reps 3 --steps 3
else
    cargo bench --bench gpu_vs_cpu -- --batch 64 --reps 5 --steps 5 --big
fi
echo "== training steps on the GPU (RESULT lines as the PyTorch script prints) =="
if [ -n "${QUICK:-}" ]; then
    cargo run --release -- bench --workload w3 --device gpu --steps 3 --warmup 1
else
    cargo run --release -- bench --workload w1 w3 w4 w2 --device gpu --steps 5 --warmup 2
fi
