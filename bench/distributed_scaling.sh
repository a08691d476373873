#!/usr/bin/env bash
# Data-parallel scaling of Algorithm 1 (issue 19; a figure, not a test): `affinity-lab bench
# train-step --distributed` at 512×512 with the demo model under `mpirun -np 1` and `-np N`, one
# thread per rank, on this machine, ROUNDS times alternately; then each run's step time, slices per
# second, allreduce time and bytes per step, and the scaling efficiency: N-rank slices/s over N ×
# one-rank slices/s (medians over the rounds). Run it on a quiet machine: other work on the cores
# shows up as lost efficiency.
#
#   bench/distributed_scaling.sh                 (N=2 ROUNDS=3 REPEATS=5, binary in .build/release)
#   N=2 ROUNDS=5 MPIRUN_ARGS="--mca btl self,vader" bench/distributed_scaling.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2}
ROUNDS=${ROUNDS:-3}
REPEATS=${REPEATS:-5}
BIN=${BIN:-.build/release}
[[ -x $BIN/affinity-lab ]] || { echo "distributed_scaling: $BIN/affinity-lab is not built (scripts/setup)" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "distributed_scaling: mpirun is missing (scripts/setup installs openmpi-bin)" >&2; exit 2; }
WORK=$(mktemp -d /tmp/affinity-scaling.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
root=()
[[ $(id -u) -eq 0 ]] && root=(--allow-run-as-root)
run() {  # ranks, output file
    AFFINITY_THREADS=1 OPENBLAS_NUM_THREADS=1 mpirun "${root[@]}" --oversubscribe --bind-to core ${MPIRUN_ARGS:-} -np "$1" \
        "$BIN/affinity-lab" bench train-step --distributed --weights models/phantom-demo/weights.safetensors \
        --image samples/covid-19.png --threads 1 --repeats "$REPEATS" --json > "$2"
}
for r in $(seq "$ROUNDS"); do
    run 1 "$WORK/one-$r.json"
    run "$N" "$WORK/many-$r.json"
    echo "round $r done" >&2
done
python3 - "$WORK" "$N" "$ROUNDS" <<'PY'
import json, statistics, sys
work, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
one = [json.load(open(f"{work}/one-{r}.json")) for r in range(1, rounds + 1)]
many = [json.load(open(f"{work}/many-{r}.json")) for r in range(1, rounds + 1)]
def med(runs, key): return statistics.median(r[key] for r in runs)
s1, sn = med(one, "slices_per_s"), med(many, "slices_per_s")
print(f"1 rank : step {med(one, 'median_step_s'):.3f} s, {s1:.4f} slices/s")
print(f"{n} ranks: step {med(many, 'median_step_s'):.3f} s, {sn:.4f} slices/s, allreduce {med(many, 'allreduce_s_per_step'):.4f} s per step, "
      f"{many[0]['allreduce_bytes_per_step'] / 1e6:.1f} MB per rank per step (ring: {many[0]['ring_bytes_sent_per_rank_per_step'] / 1e6:.1f} MB sent per rank)")
print(f"scaling efficiency: {sn / (n * s1) * 100:.1f} %  (per round: "
      + ", ".join(f"{m['slices_per_s'] / (n * o['slices_per_s']) * 100:.0f} %" for o, m in zip(one, many)) + ")")
PY
