#!/usr/bin/env bash
# Load benchmark of affinityd's Analyse: 8 parallel client loops x 25 calls of
# `affinityctl --bus ADDRESS --json analyse FILE` against a daemon this script starts on a private
# dbus-daemon (unix socket in a temporary directory, nothing on the network), with a small model it
# trains (affinity-lab, 1 tiny epoch) and imports. Reports throughput, p50/p99 latency, the number
# of successful calls, and the daemon's VmRSS before (right after the model is imported and made the
# default, i.e. loaded and warmed up by the daemon) and after the load; fails when it grew by more
# than 10 %.
#
#   bench/load_analyse.sh            (binaries from $BIN, default .build/release, else .build-daemon2/release)
#   CLIENTS=8 CALLS=25 QUEUE_LIMIT=16 CALL_TIMEOUT=300 WARM_ROUNDS=0 MODEL=weights.safetensors bench/load_analyse.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-8}
CALLS=${CALLS:-25}
QUEUE_LIMIT=${QUEUE_LIMIT:-16}   # affinityd's analyse_queue_limit (its default is 16)
CALL_TIMEOUT=${CALL_TIMEOUT:-300}
if [[ -z "${BIN:-}" ]]; then
    BIN=.build/release
    [[ -x $BIN/affinityctl && -x $BIN/affinityd ]] || BIN=.build-daemon2/release
fi
for b in affinityctl affinityd affinity-lab; do
    [[ -x $BIN/$b ]] || { echo "load_analyse: $BIN/$b is not built" >&2; exit 2; }
done
CTL=$(realpath "$BIN/affinityctl")

WORK=$(mktemp -d /tmp/affinity-load.XXXXXX)
BUS_PID="" DAEMON_PID=""
cleanup() {
    [[ -n $DAEMON_PID ]] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null || true
    [[ -n $BUS_PID ]] && kill "$BUS_PID" 2>/dev/null && wait "$BUS_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# A private bus on a unix socket under $WORK.
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
[[ $ADDRESS == unix:* ]] || { echo "load_analyse: dbus-daemon gave no address" >&2; exit 1; }

# Data: phantom slices (one 512x512 slice is the image analysed); a model: one tiny training epoch.
"$BIN/affinity-lab" phantoms --out "$WORK/set" --count 6 --seed 3 --size 512 > /dev/null
IMAGE=$(find "$WORK/set" -name '*.png' -path '*classification*' | sort | head -n1)
[[ -n $IMAGE ]] || IMAGE=$(find "$WORK/set" -name '*.png' | sort | head -n1)
# MODEL=weights.safetensors uses those weights instead of training.
if [[ -z "${MODEL:-}" ]]; then
    "$BIN/affinity-lab" train --data "$WORK/set" --out "$WORK/run" --epochs 1 --affinities 8 --image-size 128 --seed 3 \
        > "$WORK/train.log" 2>&1 || { cat "$WORK/train.log" >&2; exit 1; }
    MODEL=$WORK/run/model.safetensors
fi
[[ -f $MODEL ]] || { echo "load_analyse: training wrote no model.safetensors" >&2; ls "$WORK/run" >&2; exit 1; }

printf 'analyse_queue_limit = %s\nlog_level = warning\n' "$QUEUE_LIMIT" > "$WORK/affinityd.conf"
"$BIN/affinityd" --bus "$ADDRESS" --state-dir "$WORK/state" --config "$WORK/affinityd.conf" --authorization none \
    2> "$WORK/affinityd.log" &
DAEMON_PID=$!
for _ in $(seq 300); do
    "$CTL" --bus "$ADDRESS" --json status > /dev/null 2>&1 && break
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$WORK/affinityd.log" >&2; exit 1; }
    sleep 0.1
done
"$CTL" --bus "$ADDRESS" --json models import "$MODEL" --name load-bench --set-default > "$WORK/import.json"

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$DAEMON_PID/status"; }
# SetDefaultModel (--set-default) has loaded the model and run the daemon's warm-up analysis on
# each worker before replying: the "before" figure is taken right after it, with no call of ours.
RSS_COLD=$(rss_kb)
RSS_BEFORE=$RSS_COLD

client_loop() {  # $1: loop index; one line per call: "<ok 0|1> <milliseconds>"
    local i start end rc
    for ((i = 0; i < CALLS; i++)); do
        start=$(date +%s%N)
        rc=0
        timeout "$CALL_TIMEOUT" "$CTL" --bus "$ADDRESS" --json analyse "$IMAGE" > "$WORK/out.$1.$i.json" 2> "$WORK/err.$1.$i" || rc=$?
        end=$(date +%s%N)
        if [[ $rc == 0 ]] && grep -q '"class_index"' "$WORK/out.$1.$i.json" && ! grep -q '"error"' "$WORK/out.$1.$i.json"; then
            echo "1 $(( (end - start) / 1000000 ))"
        else
            echo "0 $(( (end - start) / 1000000 )) rc=$rc $(head -c 300 "$WORK/err.$1.$i" | tr '\n' ' ')"
        fi
    done > "$WORK/times.$1"
}

# WARM_ROUNDS extra rounds of the same load, unmeasured except for RSS, show whether RSS keeps
# growing (a leak) or settles (allocator arenas and caches sized for CLIENTS concurrent requests).
for ((r = 0; r < ${WARM_ROUNDS:-0}; r++)); do
    for ((c = 0; c < CLIENTS; c++)); do client_loop "$c" & done
    wait $(jobs -p | grep -vx "$DAEMON_PID" | grep -vx "$BUS_PID") 2>/dev/null || true
    echo "warm-up round $((r + 1)): $(awk '$1 == 1' "$WORK"/times.* | wc -l)/$((CLIENTS * CALLS)) ok, daemon VmRSS $(rss_kb) kB"
    RSS_BEFORE=$(rss_kb)
done

T0=$(date +%s%N)
for ((c = 0; c < CLIENTS; c++)); do client_loop "$c" & done
wait $(jobs -p | grep -vx "$DAEMON_PID" | grep -vx "$BUS_PID") 2>/dev/null || true
T1=$(date +%s%N)
RSS_AFTER=$(rss_kb)

cat "$WORK"/times.* > "$WORK/all"
TOTAL=$((CLIENTS * CALLS))
OK=$(awk '$1 == 1' "$WORK/all" | wc -l)
FAILED=$(awk '$1 == 0' "$WORK/all" | wc -l)
QUEUEFULL=$(grep -c QueueFull "$WORK/all" || true)
awk '$1 == 1 { print $2 }' "$WORK/all" | sort -n > "$WORK/lat"
pct() { awk -v p="$1" '{ a[NR] = $1 } END { if (NR == 0) { print "n/a"; exit } i = int(p * NR + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; print a[i] }' "$WORK/lat"; }
WALL_MS=$(( (T1 - T0) / 1000000 ))
echo "affinityd Analyse load: $CLIENTS clients x $CALLS calls = $TOTAL calls, analyse_queue_limit = $QUEUE_LIMIT, $(nproc) cores"
echo "image: $(basename "$IMAGE") ($(stat -c %s "$IMAGE") bytes); model: $(basename "$MODEL")"
echo "succeeded: $OK/$TOTAL (failed $FAILED, QueueFull $QUEUEFULL)"
awk -v n="$OK" -v ms="$WALL_MS" 'BEGIN { printf "wall: %.1f s, throughput: %.3f calls/s\n", ms / 1000, n / (ms / 1000) }'
echo "latency per call (client side, incl. affinityctl start-up): p50 $(pct 0.50) ms, p99 $(pct 0.99) ms, min $(head -n1 "$WORK/lat") ms, max $(tail -n1 "$WORK/lat") ms"
awk -v c="$RSS_COLD" -v b="$RSS_BEFORE" -v a="$RSS_AFTER" 'BEGIN {
    printf "daemon VmRSS: %d kB after import, %d kB before the measured load, %d kB after it (%+.1f %%)\n", c, b, a, 100 * (a - b) / b }'
if (( FAILED > 0 )); then
    echo "failures:"; awk '$1 == 0' "$WORK/all" | head -n 5
    exit 1
fi
# Growth is what would show a leak; the daemon may end lower, since it gives the memory it held
# while busy back when the queue empties.
awk -v b="$RSS_BEFORE" -v a="$RSS_AFTER" 'BEGIN { exit (a > 1.1 * b) ? 1 : 0 }' || { echo "RSS grew by more than 10 %"; exit 1; }
