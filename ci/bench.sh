#!/usr/bin/env bash
# Every figure of SPEC §11, printed (median and p99, next to its comparison) and never asserted.
#
#   ci/bench.sh           full sizes (a few minutes)
#   ci/bench.sh --quick   small sizes, for a quick look
#
# Parts: ci/bench_locks.py (lock handoff; janitor sweep growth), ci/bench_lease.py (the
# cross-host app lease on a 3-member loopback etcd: handoff after a release next to the local
# flock handoff, takeover after a crash against TTL + 1 s; needs etcd-server), ci/bench-cancel.sh
# (cancel latency), ci/bench-watch.sh (owner SIGKILL → reap started under janitor --watch),
# ci/bench-run.sh (ccci's own CPU in a green run; per-run tree creation), ci/bench-reads.sh (the
# Engine API next to the CLI read path, in one run: self_cpu_ms, docker processes per run,
# readiness detection lag, wall time, the janitor sweep against its floor). Needs a local swarm
# for the last two parts (ci/swarm.sh up).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
quick=0
[ "${1:-}" = "--quick" ] && quick=1
(cd "$root" && cargo build --release --quiet)
bin=${CARGO_TARGET_DIR:-$root/target}/release/ccci
echo "bench: $("$bin" --version) on $(nproc) cores, $(uname -r), $(date -u +%FT%TZ)"
if [ $quick = 1 ]; then
  CCCI="$bin" BENCH_HANDOFFS=20 BENCH_SWEEPS=3 BENCH_SIZES="100 1000" "$root/ci/bench_locks.py"
  CCCI="$bin" BENCH_HANDOFFS=10 BENCH_CRASHES=3 "$root/ci/bench_lease.py"
  CCCI_BIN="$bin" "$root/ci/bench-cancel.sh" 10
  CCCI_BIN="$bin" "$root/ci/bench-watch.sh" 20
  CCCI_BIN="$bin" "$root/ci/bench-run.sh" 1
  CCCI_BIN="$bin" BENCH_SWEEPS=3 "$root/ci/bench-reads.sh" 1
else
  CCCI="$bin" "$root/ci/bench_locks.py"
  CCCI="$bin" "$root/ci/bench_lease.py"
  CCCI_BIN="$bin" "$root/ci/bench-cancel.sh" 30
  CCCI_BIN="$bin" "$root/ci/bench-watch.sh" 30
  CCCI_BIN="$bin" "$root/ci/bench-run.sh" 5
  CCCI_BIN="$bin" "$root/ci/bench-reads.sh" 5
fi
