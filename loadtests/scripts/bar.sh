#!/usr/bin/env bash
# Measures the whole performance bar (docs/performance.md) with a release build: every scenario,
# each against the gateway and, where it applies, every baseline in the same run (direct, nginx,
# HAProxy as a WebSocket proxy, HAProxy as an L4 byte relay). Writes each report (JSON) and console
# log into OUT_DIR. Takes about 40 minutes on 2 cores, a third of it waiting for TIME_WAIT sockets
# to expire between phases; everything is loopback and stops by itself.
#
#   cargo build --release -p gateway -p workspace -p loadtests
#   loadtests/scripts/bar.sh OUT_DIR
#
# AETHER_LOAD overrides the harness binary (default target/release/aether-load; it finds the
# gateway and the workspace service next to itself).
set -uo pipefail

[ $# -eq 1 ] || { sed -n '2,12p' "$0"; exit 2; }
root=$(cd "$(dirname "$0")/../.." && pwd)
L=${AETHER_LOAD:-$root/target/release/aether-load}
[ -x "$L" ] || { echo "no harness at $L: build it first (see above)" >&2; exit 2; }
mkdir -p "$1" && cd "$1" || exit 2
failed=0
run() {
  local json=${*: -1}
  echo "== $(date -u +%T) aether-load ${*:2}"
  "$@" > "${json%.json}.log" 2>&1
  local rc=$?
  [ $rc -eq 0 ] || { echo "   exit $rc (see ${json%.json}.log)"; failed=1; }
}
run "$L" hold    --spawn --baseline all --clients 5000 --duration 10s --json hold-5000.json
run "$L" hold    --spawn --clients 9000 --procs 2 --source-ips 127.0.0.2-127.0.0.9 --duration 10s --json hold-9000.json
for i in 1 2; do
  run "$L" connect --spawn --baseline all --rate 0 --concurrency 16 --duration 10s --json connect-max-$i.json
done
run "$L" connect --spawn --baseline all --rate 1000 --duration 10s --json connect-1000.json
for i in 1 2; do
  run "$L" relay --spawn --baseline all --mode latency --clients 1000 --rate 2000 --duration 10s --json relay-latency-$i.json
  run "$L" relay --spawn --baseline all --mode throughput --duration 10s --json relay-throughput-$i.json
done
for i in 1 2 3; do
  run "$L" wake --spawn --clients 5000 --json wake-5000-$i.json
done
for i in 1 2; do
  run "$L" churn --spawn --clients 6 --workspaces 3 --duration 30s --gap 1s..5s --json churn-sparse-$i.json
done
echo "== $(date -u +%T) done"
exit $failed
