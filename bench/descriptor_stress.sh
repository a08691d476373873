#!/usr/bin/env bash
# The descriptor stress test (issue 21) run longer than in scripts/test: ROUNDS analyses per caller
# (default 30), RUNS times (default 3), with the ownership check on. Prints each run's time and a
# tally; exits non-zero if any run failed. A figure, not a test: run it after a change to the Bus,
# the daemon's fd handling or the plugin readers.
#
#   bench/descriptor_stress.sh [ROUNDS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-30}
runs=${2:-3}
swift build -c release -Xswiftc -enable-testing --build-tests >/dev/null
failed=0
for ((i = 1; i <= runs; i++)); do
    start=$(date +%s)
    if AFFINITY_STRESS_ROUNDS=$rounds scripts/test --skip-build --filter DescriptorStressTests >"/tmp/descriptor-stress-$i.log" 2>&1; then
        verdict=passed
    else
        verdict=FAILED
        failed=$((failed + 1))
    fi
    echo "run $i: $verdict in $(($(date +%s) - start)) s ($rounds analyses per caller, 6 callers; log /tmp/descriptor-stress-$i.log)"
done
echo "$((runs - failed)) passed, $failed failed"
((failed == 0))
