#!/usr/bin/env bash
# tests/chaos.sh — `make chaos`: every partition scenario of tests/e2e/partition/ CHAOS_RUNS
# times (default 10) on the real node (each in a fresh namespace and set), then one table row
# per scenario, printed and written to bench/results/<date>-chaos.md (CHAOS_OUT to write
# elsewhere). `make test` runs each scenario once. A run whose history Porcupine finds not
# linearizable fails its test; the table still counts it (its history and drawing are in
# target/e2e/artifacts/*.history.{jsonl,html}).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${CHAOS_RUNS:-10}
OUT=${CHAOS_OUT:-$ROOT/bench/results/$(date -u +%F)-chaos.md}
ROWS=$(mktemp)
trap 'rm -f "$ROWS"' EXIT

started=$(date +%s)
rc=0
VIGIL_CHAOS_RUNS=$RUNS VIGIL_CHAOS_OUT=$ROWS "$ROOT/tests/e2e.sh" partition || rc=$?
took=$(($(date +%s) - started))

python3 - "$ROWS" "$OUT" "$RUNS" "$took" <<'PY'
import statistics, subprocess, sys
rows_file, out, runs, took = sys.argv[1:]
by = {}
for line in open(rows_file):
    f = line.rstrip("\n").split("\t")
    if len(f) != 12:
        continue
    # The last fields: Porcupine's verdicts (1 linearizable, 0 not, ? undecided, - no history
    # recorded), of the history and of it with the unconfirmed reads counted.
    by.setdefault(f[0], []).append([int(x) for x in f[1:9]] + f[9:])
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                        text=True).stdout.strip()
head = ("| scenario | runs | writes | acknowledged | plain lost (total / worst run) | "
        "acknowledged lost | split-brain windows | longest unavailability (median / worst) | "
        "linearizable (runs linearizable / runs checked) | "
        "with unconfirmed reads too (linearizable / not / undecided) | "
        "old master took writes after the cut (worst run; the fence bound, fence_deadline at downAfter 1000 ms, is 800 ms) |")
lines = [
    f"# make chaos, {runs} runs per scenario (commit {commit}, {took} s)",
    "",
    "Partitions by iptables inside the pods' network namespaces on the real node "
    "(tests/e2e/partition/), downAfter 1000 ms; a sampler on the node writes SET + WAIT "
    "<quorum> (1 of 3, 2 of 5) to every instance every 20 ms. A split-brain window is two "
    "instances each taking writes in overlapping stretches; unavailability is the longest "
    "time from the cut with no instance taking a write. In the scenarios that fail over, four "
    "Sentinel clients also record a history of SET + WAIT <quorum> writes and quorum-confirmed "
    "GETs on three keys, checked by Porcupine (tests/clients/linearizability; what it checks is "
    "written at the top of its main.go); '-' where no history is recorded. The last column "
    "counts every read whose GET was answered, confirmed by the quorum or not (bare GETs on "
    "whatever the endpoint named master): reported only, as Redis does not make those "
    "linearizable.",
    "",
    head,
    "|" + "---|" * 11,
]
for name, rs in sorted(by.items()):
    unavailable = [r[7] for r in rs]
    checked = [r[8] for r in rs if r[8] != "-"]
    verdict = f"{checked.count('1')} / {len(checked)}" if checked else "-"
    loose = [r[9] for r in rs if r[9] != "-"]
    loose = (f"{loose.count('1')} / {loose.count('0')} / {loose.count('?')}"
             if loose else "-")
    window = [int(r[10]) for r in rs if len(r) > 10 and r[10] != "-"]
    window = f"{max(window)} ms ({len(window)} runs)" if window else "-"
    lines.append(
        f"| {name} | {len(rs)} | {sum(r[0] for r in rs)} | {sum(r[2] for r in rs)} | "
        f"{sum(r[3] for r in rs)} / {max(r[3] for r in rs)} | {sum(r[4] for r in rs)} | "
        f"{sum(r[5] for r in rs)} | {statistics.median(unavailable):.0f} ms / "
        f"{max(unavailable)} ms | {verdict} | {loose} | {window} |")
text = "\n".join(lines) + "\n"
print(text)
open(out, "w").write(text)
print(f"chaos: written to {out}")
PY
exit "$rc"
