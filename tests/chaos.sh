#!/usr/bin/env bash
# tests/chaos.sh — `make chaos`: every partition scenario of tests/e2e/partition.rs CHAOS_RUNS
# times (default 10) on the real node (each in a fresh namespace and set), then one table row
# per scenario, printed and written to bench/results/<date>-chaos.md (CHAOS_OUT to write
# elsewhere). `make test` runs each scenario once.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${CHAOS_RUNS:-10}
OUT=${CHAOS_OUT:-$ROOT/bench/results/$(date -u +%F)-chaos.md}
ROWS=$(mktemp)
trap 'rm -f "$ROWS"' EXIT

started=$(date +%s)
VIGIL_CHAOS_RUNS=$RUNS VIGIL_CHAOS_OUT=$ROWS "$ROOT/tests/e2e.sh" partition
took=$(($(date +%s) - started))

python3 - "$ROWS" "$OUT" "$RUNS" "$took" <<'PY'
import statistics, subprocess, sys
rows_file, out, runs, took = sys.argv[1:]
by = {}
for line in open(rows_file):
    f = line.rstrip("\n").split("\t")
    if len(f) != 9:
        continue
    by.setdefault(f[0], []).append([int(x) for x in f[1:]])
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                        text=True).stdout.strip()
head = ("| scenario | runs | writes | acknowledged | plain lost (total / worst run) | "
        "acknowledged lost | split-brain windows | longest unavailability (median / worst) |")
lines = [
    f"# make chaos, {runs} runs per scenario (commit {commit}, {took} s)",
    "",
    "Partitions by iptables inside the pods' network namespaces on the real node "
    "(tests/e2e/partition.rs), downAfter 1000 ms; a sampler on the node writes SET + WAIT "
    "<quorum> (1 of 3, 2 of 5) to every instance every 20 ms. A split-brain window is two "
    "instances each taking writes in overlapping stretches; unavailability is the longest "
    "time from the cut with no instance taking a write. The linearizability checker "
    "(Porcupine) is not run yet.",
    "",
    head,
    "|" + "---|" * 8,
]
for name, rs in sorted(by.items()):
    unavailable = [r[7] for r in rs]
    lines.append(
        f"| {name} | {len(rs)} | {sum(r[0] for r in rs)} | {sum(r[2] for r in rs)} | "
        f"{sum(r[3] for r in rs)} / {max(r[3] for r in rs)} | {sum(r[4] for r in rs)} | "
        f"{sum(r[5] for r in rs)} | {statistics.median(unavailable):.0f} ms / "
        f"{max(unavailable)} ms |")
text = "\n".join(lines) + "\n"
print(text)
open(out, "w").write(text)
print(f"chaos: written to {out}")
PY
