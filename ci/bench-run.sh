#!/usr/bin/env bash
# ccci's own cost in a real run (SPEC §11). Prints figures; asserts nothing.
#
#   ci/bench-run.sh [RUNS]      (default 3; CCCI_BIN to skip the build)
#
# (1) self_cpu_ms of a full green five-stage run of the fixture `hello` recipe on the real swarm
#     (RUSAGE_SELF of ccci: its children — abra, docker, git — excluded), next to the wall time of
#     the run, most of which is docker work ccci waits for.
# (2) per-run recipe tree creation: `ccci run --src <local path>` on a generated 5,000-commit
#     repository (git fast-import), measured from ccci's own `fetched … in N` log line (clone
#     into the per-run ABRA_DIR, checkout, head lookup), next to a bare `git clone` of the same
#     repository timed by this script.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=${1:-3}
if [ -z "${CCCI_BIN:-}" ]; then
  (cd "$root" && cargo build --release --quiet)
  CCCI_BIN=${CARGO_TARGET_DIR:-$root/target}/release/ccci
fi
work=$(mktemp -d /tmp/ccci-bench-run.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{abra/servers/default,runs,lock,recipes,tests/hello,bin}
"$root/fixtures/make-catalogue.sh" "$work/abra/catalogue"
"$root/fixtures/recipes/make-repo.sh" hello "$work/recipes/hello"
cat >"$work/bin/abra" <<EOT
#!/bin/sh
export FIXTURE_RECIPES="$work/recipes" FIXTURE_ABRA_MODE="\${BENCH_ABRA_MODE:-}"
exec "$root/fixtures/abra" "\$@"
EOT
chmod +x "$work/bin/abra"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'extra_env: { HTTP_PORT: "%s" }\ntimeouts: { deploy: 120 }\n' "$port" >"$work/tests/hello/ccci.yml"
printf '#!/bin/sh\ncurl -fsS http://127.0.0.1:%s/ >/dev/null\n' "$port" >"$work/tests/hello/test_http"
chmod +x "$work/tests/hello/test_http"

cat >"$work/ccci.env" <<EOT
CCCI_ABRA=$work/bin/abra
CCCI_ABRA_HOME=$work/abra
CCCI_RUNS_DIR=$work/runs
CCCI_APP_LOCK_DIR=$work/lock
CCCI_TESTS_DIR=$work/tests
CCCI_DOMAIN_SUFFIX=bench.ccci.test
CCCI_HEALTH_URL=http://127.0.0.1:$port/
EOT
ccci() {
  env -i PATH="$PATH" HOME="$work" LANG=C.UTF-8 CCCI_CONFIG="$work/ccci.env" \
    BENCH_ABRA_MODE="${BENCH_ABRA_MODE:-}" CCCI_RUN_ID="${CCCI_RUN_ID:?}" "$@"
}

# Median and p99 (nearest rank) of the numbers on stdin.
stats() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) { print "- -"; exit } m = v[int((NR + 1) / 2)]; i = int(NR * 0.99 + 0.999); if (i < 1) i = 1; if (i > NR) i = NR; print m, v[i] }'; }

cpu=() wall=()
for i in $(seq 1 "$runs"); do
  id="cpu-$i"
  CCCI_RUN_ID=$id ccci "$CCCI_BIN" run --recipe hello >/dev/null 2>&1 || { echo "bench-run: run $id failed (see $work/runs/$id/run.log)" >&2; exit 1; }
  cpu+=("$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["self_cpu_ms"])' "$work/runs/$id/results.json")")
  wall+=("$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["duration_ms"])' "$work/runs/$id/results.json")")
done
read -r cpu_m cpu_p <<<"$(printf '%s\n' "${cpu[@]}" | stats)"
read -r wall_m wall_p <<<"$(printf '%s\n' "${wall[@]}" | stats)"

# A 5,000-commit repository, made with git fast-import (one file changed per commit).
big="$work/recipes/big"
git init -q -b main "$big"
python3 - "$big" <<'PY' | git -C "$big" fast-import --quiet
import sys
n = 5000
for i in range(1, n + 1):
    data = f"commit {i}\n".encode()
    sys.stdout.write(f"blob\nmark :{i}\ndata {len(data)}\n")
    sys.stdout.flush(); sys.stdout.buffer.write(data); sys.stdout.write("\n")
    msg = f"c{i}".encode()
    sys.stdout.write(f"commit refs/heads/main\ncommitter bench <b@example.invalid> {1700000000 + i} +0000\ndata {len(msg)}\n")
    sys.stdout.flush(); sys.stdout.buffer.write(msg); sys.stdout.write("\n")
    sys.stdout.write(f"M 100644 :{i} file.txt\n\n")
PY
git -C "$big" checkout -q main
fetch_ms=() clone_ms=()
for i in $(seq 1 "$runs"); do
  id="tree-$i"
  BENCH_ABRA_MODE=fail:new CCCI_RUN_ID=$id ccci "$CCCI_BIN" run --recipe big --src "$big" --stages install >/dev/null 2>&1 || true
  line=$(grep -m1 'fetched big' "$work/runs/$id/run.log")
  fetch_ms+=("$(sed -E 's/.* in ([0-9.]+)(ms|s)$/\1 \2/' <<<"$line" | awk '{ print ($2 == "s") ? $1 * 1000 : $1 }')")
  t0=$EPOCHREALTIME
  git clone -q --no-hardlinks "$big" "$work/plain-$i"
  t1=$EPOCHREALTIME
  clone_ms+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", (b - a) * 1000 }')")
  rm -rf "$work/plain-$i"
done
read -r f_m f_p <<<"$(printf '%s\n' "${fetch_ms[@]}" | stats)"
read -r c_m c_p <<<"$(printf '%s\n' "${clone_ms[@]}" | stats)"

printf '%-58s %4s %10s %10s  %s\n' figure n median p99 "comparison / target"
printf '%-58s %4s %10s %10s  %s\n' "self_cpu_ms of a green five-stage hello run (ms)" "$runs" "$cpu_m" "$cpu_p" "target <= 20 ms"
printf '%-58s %4s %10s %10s  %s\n' "  wall time of that run (ms, mostly docker work)" "$runs" "$wall_m" "$wall_p" ""
printf '%-58s %4s %10s %10s  %s\n' "tree creation, 5,000-commit repo from a local path (ms)" "$runs" "$f_m" "$f_p" "bare git clone: median ${c_m} ms, p99 ${c_p} ms"
