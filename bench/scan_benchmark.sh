#!/usr/bin/env bash
# Whole-scan benchmark (issue 15; a figure, not a test): a SLICES-slice SIZE×SIZE phantom chest CT
# written as a DICOM series (affinity-lab phantom-scan, one file per slice), analysed end to end by
# affinityd through `affinityctl analyse-scan` (a folder descriptor, the label volume made), beside
# `affinity-lab bench predict` on one 512×512 slice with the same weights, in the same run. And the
# daemon's peak memory (VmHWM): a fresh daemon after one Analyse of one slice, a fresh daemon after
# the scan. The goal: seconds per analysed slice within 1.1× of the single-slice time, peak memory
# within 1.2× of the one-slice daemon's.
#
#   bench/scan_benchmark.sh                      (SLICES=300 SIZE=512 SYNTAX=explicit, binaries in .build/release)
#   SLICES=40 SYNTAX=jpeg-ls bench/scan_benchmark.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SLICES=${SLICES:-300}
SIZE=${SIZE:-512}
SYNTAX=${SYNTAX:-explicit}
BIN=${BIN:-.build/release}
for b in affinityctl affinityd affinity-lab; do
    [[ -x $BIN/$b ]] || { echo "scan_benchmark: $BIN/$b is not built (scripts/setup)" >&2; exit 2; }
done
WEIGHTS=models/phantom-demo/weights.safetensors
WORK=$(mktemp -d /tmp/affinity-scan-bench.XXXXXX)
BUS_PID="" DAEMON_PID=""
stop_daemon() {
    if [[ -n $DAEMON_PID ]]; then kill "$DAEMON_PID" 2>/dev/null || true; wait "$DAEMON_PID" 2>/dev/null || true; fi
    DAEMON_PID=""
}
cleanup() {
    stop_daemon
    if [[ -n $BUS_PID ]]; then kill "$BUS_PID" 2>/dev/null || true; wait "$BUS_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

cat > "$WORK/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir=$WORK</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
CONF
dbus-daemon --config-file="$WORK/bus.conf" --nofork --print-address=1 > "$WORK/bus.address" 2>/dev/null &
BUS_PID=$!
for _ in $(seq 100); do [[ -s $WORK/bus.address ]] && break; sleep 0.05; done
ADDRESS=$(head -n1 "$WORK/bus.address")

# A fresh daemon with an empty store: it imports the bundled demo model and makes it the default.
start_daemon() {
    rm -rf "$WORK/state"
    AFFINITY_BUNDLED_MODELS=$PWD/models "$BIN/affinityd" --bus "$ADDRESS" --state-dir "$WORK/state" --authorization none --plugin-dir "$BIN" \
        2> "$WORK/daemon.log" &
    DAEMON_PID=$!
    for _ in $(seq 600); do
        state=$("$BIN/affinityctl" --bus "$ADDRESS" status --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null || true)
        [[ $state == ready ]] && return 0
        sleep 0.1
    done
    echo "scan_benchmark: affinityd did not become ready" >&2; cat "$WORK/daemon.log" >&2; exit 1
}
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$DAEMON_PID/status"; }

echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
echo "writing a $SLICES-slice ${SIZE}x${SIZE} DICOM series ($SYNTAX)…"
t0=$(date +%s.%N)
"$BIN/affinity-lab" phantom-scan --out "$WORK/series" --slices "$SLICES" --size "$SIZE" --syntax "$SYNTAX" --seed 7 > /dev/null
t1=$(date +%s.%N)
echo "  written in $(python3 -c "print(f'{$t1-$t0:.1f}')") s, $(du -sh "$WORK/series" | cut -f1)"

# One slice, offline: the engine's own time per predict (median of 5).
single=$("$BIN/affinity-lab" bench predict --weights "$WEIGHTS" --image samples/covid-19.png --json \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["median_s"])')

# One slice through a fresh daemon: its peak memory.
start_daemon
"$BIN/affinityctl" --bus "$ADDRESS" analyse samples/covid-19.png > /dev/null
hwm_one=$(hwm_kib)
stop_daemon

# The scan through a fresh daemon, end to end (reading the headers, assembling, every slice, the label volume).
start_daemon
t0=$(date +%s.%N)
"$BIN/affinityctl" --bus "$ADDRESS" analyse-scan "$WORK/series" --mask-out "$WORK/lesions.nii.gz" --json > "$WORK/scan.json"
t1=$(date +%s.%N)
hwm_scan=$(hwm_kib)
stop_daemon

python3 - "$WORK/scan.json" "$single" "$t0" "$t1" "$hwm_one" "$hwm_scan" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
single, t0, t1, hwm_one, hwm_scan = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
wall = t1 - t0
analysed = r["analysed_slices"]
per = wall / max(1, analysed)
print(f"scan: {r['slice_count']} slices, {analysed} analysed, verdict {r['verdict']['class']}, "
      f"{r['lesion_volume_ml']:.1f} mL of {r['lung_volume_ml']:.1f} mL ({r['opacity_percent']:.1f}%)")
print(f"end to end: {wall:.1f} s, {per:.3f} s per analysed slice (the job alone: {r['timings']['total']:.1f} s)")
print(f"affinity-lab bench predict (one 512x512 slice): {single:.3f} s")
print(f"ratio per analysed slice / single slice: {per / single:.2f} (goal <= 1.1)")
print(f"peak memory (VmHWM): one slice {hwm_one / 1024:.0f} MiB, the scan {hwm_scan / 1024:.0f} MiB, ratio {hwm_scan / hwm_one:.2f} (goal <= 1.2)")
PY
