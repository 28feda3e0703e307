#!/usr/bin/env bash
# Runs ganforge's W1-W4 training-step benchmark and the PyTorch reference
# (../shared/anchors/perf/train_torch.py) alternately, ROUNDS times, pinned to 2 cores with
# 2 threads each, and prints a table of medians and the ratio ganforge / PyTorch.
#
# Usage: scripts/bench_vs_torch.sh [ROUNDS] [WORKLOADS...]     (default: 2 rounds, w1 w3 w4 w2)
# Needs: a Python with torch (set PYTHON=/path/to/python; `pip install torch` works here).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
shift || true
WORKLOADS=${*:-w1 w3 w4 w2}
PYTHON=${PYTHON:-python3}
PERF=../shared/anchors/perf
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 RAYON_NUM_THREADS=2
cargo build --release --bench workloads 2>/dev/null
BIN=$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/workloads-* | grep -v '\.d$' | head -1)
LOG=$(mktemp)
echo "machine: $(lscpu | sed -n 's/Model name: *//p'), $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
  for w in $WORKLOADS; do
    # Each process's peak resident memory (whole process, KiB) comes from GNU time.
    /usr/bin/time -f "PEAK ganforge $w %M" -o "$LOG.rss" taskset -c 0,1 "$BIN" "$w" --warmup 3 --steps 10 | grep '^RESULT' | tee -a "$LOG"
    cat "$LOG.rss" >> "$LOG"
    (cd "$PERF" && /usr/bin/time -f "PEAK torch $w %M" -o "$LOG.rss" taskset -c 0,1 "$PYTHON" train_torch.py "$w" --warmup 3 --steps 10) | grep '^RESULT' | tee -a "$LOG"
    cat "$LOG.rss" >> "$LOG"
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$LOG" <<'PY'
import sys, statistics, collections
runs = collections.defaultdict(list)
peak = collections.defaultdict(list)
for line in open(sys.argv[1]):
    kind, who, name, *rest = line.split()
    if kind == "PEAK":
        peak[(who, name)].append(int(rest[-1]) / 1024)
        continue
    if name.startswith("w4-iter"):
        continue
    runs[(who, name)].append(float(rest[-1]))
names = sorted({n for _, n in runs})
print("\n| workload | ganforge runs (ms) | PyTorch runs (ms) | ganforge median | PyTorch median | ratio |")
print("|---|---|---|---|---|---|")
for n in names:
    g, t = runs.get(("ganforge", n), []), runs.get(("torch", n), [])
    if g and t:
        mg, mt = statistics.median(g), statistics.median(t)
        print(f"| {n} | {', '.join(f'{x:.1f}' for x in g)} | {', '.join(f'{x:.1f}' for x in t)} | {mg:.1f} | {mt:.1f} | {mg / mt:.2f} |")
print("\n| process (all its workloads' steps) | ganforge peak RSS (MiB) | PyTorch peak RSS (MiB) |")
print("|---|---|---|")
for w in sorted({n for _, n in peak}):
    g, t = peak.get(("ganforge", w), []), peak.get(("torch", w), [])
    if g and t:
        print(f"| {w} | {max(g):.0f} | {max(t):.0f} |")
PY
