#!/usr/bin/env bash
# Cancel latency of `ccci run` (SPEC §11, issue 4). Prints figures; asserts nothing.
#
#   ci/bench-cancel.sh [RUNS]        (default 20 runs per figure; CCCI_BIN to skip the build)
#
# Figures, each as median and p99 (nearest rank) over RUNS runs of the real release binary:
#   (a) SIGTERM → teardown started        (a signal sent to ccci)
#   (b) step shell SIGKILLed → teardown started (Drone's cancel: only PDEATHSIG tells ccci)
#   (c) SIGTERM → every child gone
#
# Method. Each run uses a throwaway world (lock dir, runs dir, abra home, domain suffix) and the
# fixture abra with FIXTURE_ABRA_MODE=hang:new: ccci fetches the fixture recipe, takes the app
# lock, and `abra app new` hangs — so the run holds its lock and a cancel leads to a real
# teardown (with `hang:fetch` there is no lock and teardown is skipped). No swarm deploy happens
# (`app new` hangs before creating anything); only dockerd's read-only listings are used.
#   t0 = $EPOCHREALTIME taken by this script right before `kill` (bash builtin, no fork).
#   t1 = the timestamp ccci's run.log gives the event (RFC3339 with milliseconds, taken when the
#        event is logged, from the same wall clock):
#        (a), (b) the teardown banner `==== teardown ====`, logged after the running child was
#                 stopped and right before `alarm(budget)` and the first teardown step;
#        (c) the spawn path's `abra finished in …: … stopped: run cancelled` line, which it
#            writes only after terminate_group() saw the child's process group empty (TERM,
#            grace, KILL, sweep) and the leader was reaped — i.e. every child of the step gone.
#   latency = t1 - t0, so it includes signal delivery, the signal thread's wake-up of the main
#   thread's wait, stopping the child group (the fixture exits on TERM at once) and scheduling.
#   Resolution: 1 ms (run.log's timestamps).
# For (b) the wrapper `ci/drone-step.sh` is the step: `dash -e step.sh` whose line is
# `exec ci/drone-step.sh --recipe hello`, SIGKILLed like Drone does. ccci is then init's child;
# the script waits for its run.lock to be free (the process exited) before the next run.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=${1:-20}
[ "$runs" -ge 1 ] || { echo "usage: $0 [RUNS]" >&2; exit 2; }

if [ -z "${CCCI_BIN:-}" ]; then
	(cd "$root" && cargo build --release --quiet)
	CCCI_BIN=${CARGO_TARGET_DIR:-$root/target}/release/ccci
fi
[ -x "$CCCI_BIN" ] || { echo "bench-cancel: no ccci binary at $CCCI_BIN" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "bench-cancel: dockerd is unreachable (ci/swarm.sh up)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/ccci-bench-cancel.XXXXXX")
started_pids=()
cleanup() {
	local p
	for p in "${started_pids[@]}"; do
		kill -KILL "$p" 2>/dev/null || :
		wait "$p" 2>/dev/null || :
	done
	# Anything a run of this bench started that is still around (only after an interrupted
	# bench: a finished run leaves nothing) carries its run token.
	grep -lsz "^CCCI_RUN_TOKEN=bench-$$-" /proc/[0-9]*/environ | cut -d/ -f3 | xargs -r kill -KILL 2>/dev/null || :
	rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work"/{abra/servers/default,runs,lock,tests,recipes,bin,secrets}
"$root/fixtures/make-catalogue.sh" "$work/abra/catalogue"
"$root/fixtures/recipes/make-repo.sh" hello "$work/recipes/hello" >/dev/null
cat >"$work/bin/abra" <<EOF
#!/bin/sh
# ccci gives its children an explicit environment; CCCI_RUN_ID is part of it.
export FIXTURE_RECIPES='$work/recipes' FIXTURE_ABRA_LOG="$work/abra-\${CCCI_RUN_ID:-none}.log" FIXTURE_ABRA_MODE='hang:new'
exec '$root/fixtures/abra' "\$@"
EOF
chmod +x "$work/bin/abra"
printf 'exec %q --recipe hello --stages install\n' "$root/ci/drone-step.sh" >"$work/step.sh"

cat >"$work/ccci.env" <<EOT
CCCI_ABRA=$work/bin/abra
CCCI_ABRA_HOME=$work/abra
CCCI_RUNS_DIR=$work/runs
CCCI_APP_LOCK_DIR=$work/lock
CCCI_TESTS_DIR=$work/tests
CCCI_SECRETS_DIR=$work/secrets
CCCI_DOMAIN_SUFFIX=bench$$.test
CCCI_HEALTH_URL=off
CCCI_KILL_GRACE=10
EOT
export CCCI_CONFIG="$work/ccci.env" CCCI_BIN
unset INVOCATION_ID CCCI_EXPECT_PPID CCCI_WATCH_PID CCCI_DEADLINE CCCI_TEARDOWN_BUDGET RECIPE REF PR SRC STAGES \
	CCCI_QUICK DRONE_BUILD_NUMBER

now_ms() { # $EPOCHREALTIME → integer milliseconds
	local t=${EPOCHREALTIME/./}
	echo $((t / 1000))
}

log_ms() { # RUN_LOG NEEDLE → the line's timestamp in ms since the epoch
	local line
	line=$(grep -m1 -F -- "$2" "$1") || { echo "bench-cancel: no line with '$2' in $1" >&2; return 1; }
	date -u -d "${line%% *}" +%s%3N
}

wait_hang() { # ABRA_LOG
	local i
	for ((i = 0; i < 3000; i++)); do
		grep -q '^hang .* app new' "$1" 2>/dev/null && return 0
		sleep 0.01
	done
	echo "bench-cancel: abra never reached the hang ($1)" >&2
	return 1
}

a=() b=() c=()
n=0
one_run() { # MODE: signal | pdeathsig
	local mode=$1 id pid t0 t1 dir abra_log
	n=$((n + 1))
	id=bench-$$-$n
	dir=$work/runs/$id
	abra_log=$work/abra-$id.log
	export CCCI_RUN_ID=$id
	if [ "$mode" = signal ]; then
		"$CCCI_BIN" run --recipe hello --stages install </dev/null 2>/dev/null &
		pid=$!
		started_pids+=("$pid")
		wait_hang "$abra_log"
		t0=$(now_ms)
		kill -TERM "$pid"
		wait "$pid" || :
		t1=$(log_ms "$dir/run.log" '==== teardown ====')
		a+=($((t1 - t0)))
		t1=$(log_ms "$dir/run.log" '` stopped: run cancelled')
		c+=($((t1 - t0)))
	else
		dash -e "$work/step.sh" </dev/null 2>/dev/null &
		pid=$!
		started_pids+=("$pid")
		wait_hang "$abra_log"
		t0=$(now_ms)
		kill -KILL "$pid"
		wait "$pid" 2>/dev/null || :
		# ccci is init's child now: its run.lock is free once it exited.
		until [ -f "$dir/results.json" ] && flock -n "$dir/run.lock" true; do sleep 0.01; done
		t1=$(log_ms "$dir/run.log" '==== teardown ====')
		b+=($((t1 - t0)))
	fi
	grep -q '"exit_code": 143' "$dir/results.json" || { echo "bench-cancel: run $id did not exit 143" >&2; return 1; }
}

stats() { # NAME TARGET VALUES…
	local name=$1 target=$2
	shift 2
	local sorted k med p99
	mapfile -t sorted < <(printf '%s\n' "$@" | sort -n)
	k=${#sorted[@]}
	med=${sorted[$(((k + 1) / 2 - 1))]}
	p99=${sorted[$(((99 * k + 99) / 100 - 1))]}
	printf '%-44s %4d %10s %8s  %s\n' "$name" "$k" "$med" "$p99" "$target"
}

echo "bench-cancel: $runs runs per figure, $CCCI_BIN" >&2
for ((r = 0; r < runs; r++)); do
	one_run signal
	one_run pdeathsig
done

printf '%-44s %4s %10s %8s  %s\n' "figure" "n" "median ms" "p99 ms" "target"
stats "(a) SIGTERM -> teardown started" "p99 <= 100 ms" "${a[@]}"
stats "(b) step shell SIGKILLed -> teardown started" "p99 <= 100 ms" "${b[@]}"
stats "(c) SIGTERM -> every child gone" "-" "${c[@]}"
