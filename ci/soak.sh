#!/usr/bin/env bash
# Chaos soak (issue 9): many `ccci run`s of the fixture recipes on the real swarm, P at a time,
# some sharing a domain, while two `ccci janitor` loops race them, with faults injected at random
# points of a schedule that a printed seed reproduces. Then a final janitor sweep, and the
# invariants are checked and printed with counts. See docs/reliability.md.
#
#   ci/soak.sh N [--seed S] [--parallel P] [--plan]
#
#   N            number of runs (>= 6: every fault type happens at least once)
#   --seed S     seed of the schedule (bash RANDOM=S); printed; the same seed gives the same
#                schedule (which run gets which recipe, domain, stages, fault, trigger and delay)
#   --parallel P runs at once [3]
#   --plan       print the schedule (tab-separated) and its hash, and exit: no swarm, no runs
#
# Environment: CCCI_BIN (skip the build), SOAK_KEEP=1 (keep the temp world for post-mortems),
# SOAK_RUN_BOUND (seconds a run may take before it is SIGKILLed and counted as a violation [240]).
# Exit 0 when every invariant holds, 1 on any violation, 2 on bad usage.
#
# Fault types (each forced at least once, the rest of the runs drawn at random):
#   kill9      SIGKILL of ccci                              (nothing written; the janitor reaps)
#   term       SIGTERM (to ccci, or to the Drone wrapper, which forwards it)        -> 143
#   dronekill  SIGKILL of the wrapper shell `sh -e step.sh` whose line is
#              `exec ci/drone-step.sh …` (the real Drone cancel: ccci's PDEATHSIG)  -> 143
#   int2       SIGINT twice (the second one during teardown skips a teardown step)  -> 130
#   deadline   --deadline 3..8 (with a slow fixture step, so that it really fires)  -> 142
#   wedged     `app undeploy` hangs in teardown, --teardown-budget 3 -> teardown abandoned, exit 4
# Signals are sent when an observable event happened (an abra call starting or ending in the
# fixture's event log, the lock wait or a custom test starting in run.log) plus a random delay.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() { # [EXIT CODE]: 0 prints on stdout (--help), anything else on stderr
	if [ "${1:-2}" = 0 ]; then
		sed -n '7,14p' "$0" | sed 's/^# \{0,1\}//'
	else
		sed -n '7,14p' "$0" | sed 's/^# \{0,1\}//' >&2
	fi
	exit "${1:-2}"
}

N= seed= P=3 plan=
while [ $# -gt 0 ]; do
	case $1 in
	--plan) plan=1 ;;
	--seed) [ $# -ge 2 ] || usage; seed=$2; shift ;;
	--seed=*) seed=${1#*=} ;;
	--parallel) [ $# -ge 2 ] || usage; P=$2; shift ;;
	--parallel=*) P=${1#*=} ;;
	-h | --help) usage 0 ;;
	-*) echo "soak: unknown option $1" >&2; usage ;;
	*) [ -z "$N" ] || usage; N=$1 ;;
	esac
	shift
done
[[ "$N" =~ ^[0-9]+$ ]] && [ "$N" -ge 6 ] || { echo "soak: N must be a number >= 6 (one run per fault type at least)" >&2; usage; }
[[ "$P" =~ ^[0-9]+$ ]] && [ "$P" -ge 1 ] || { echo "soak: --parallel must be a positive number" >&2; usage; }
if [ -z "$seed" ]; then
	seed=$(($(od -An -N4 -tu4 /dev/urandom) % 1000000))
fi
[[ "$seed" =~ ^[0-9]+$ ]] || { echo "soak: --seed must be a number" >&2; usage; }
run_bound=${SOAK_RUN_BOUND:-240}

if [ -n "$plan" ]; then
	: # the schedule needs neither ccci nor the swarm
elif [ -z "${CCCI_BIN:-}" ]; then
	(cd "$root" && cargo build --release --quiet) || exit 1
	CCCI_BIN=${CARGO_TARGET_DIR:-$root/target}/release/ccci
fi
for c in docker python3 setsid sha1sum dash git; do
	command -v "$c" >/dev/null 2>&1 || { echo "soak: $c is missing" >&2; exit 1; }
done
if [ -z "$plan" ]; then
	[ -x "$CCCI_BIN" ] || { echo "soak: no ccci binary at $CCCI_BIN" >&2; exit 1; }
	[ "$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" = active ] ||
		{ echo "soak: dockerd is unreachable or not a swarm manager (ci/swarm.sh up)" >&2; exit 1; }
fi
real_docker=$(command -v docker)
ccci_exe=
if [ -z "$plan" ]; then
	ccci_exe=$(readlink -f "$CCCI_BIN")
	CCCI_BIN=$ccci_exe # runs, wrappers and janitors do not depend on the soak's cwd
fi

now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
t_soak0=$(now_ms)

# --- the world ----------------------------------------------------------------------------------
tag=sk$$ # run ids are $tag-<n>; every process of the soak carries SOAK_TAG=$tag or a run token
suffix=$tag.soak.test
ns=${suffix//./_}
work=$(mktemp -d "${TMPDIR:-/tmp}/ccci-soak.XXXXXX")
mkdir -p "$work"/{abra/servers/default,runs,lock,tests,recipes,bin,secrets,modes,logs,res,err,steps,jan}
"$root/fixtures/make-catalogue.sh" "$work/abra/catalogue"

driver_pids=() jan_pids=()
cleaned=
cleanup() {
	[ -z "$cleaned" ] || return 0
	cleaned=1
	trap - INT TERM HUP
	touch "$work/stop" 2>/dev/null
	local p left i
	for p in "${driver_pids[@]}" "${jan_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
	# ccci processes of the soak (runs, janitors) still alive after an interrupted soak: let them
	# tear down (their parents are gone or going: PDEATHSIG), then kill what is left.
	for ((i = 0; i < 100; i++)); do
		left=$(soak_pids)
		[ -n "$left" ] || break
		[ "$i" -ne 0 ] || for p in $left; do kill -TERM "$p" 2>/dev/null; done
		sleep 0.3
	done
	for p in $(soak_pids) $(token_pids "$tag-"); do kill -KILL "$p" 2>/dev/null; done
	for p in "${driver_pids[@]}" "${jan_pids[@]}"; do wait "$p" 2>/dev/null; done
	remove_docker_leftovers
	if [ "${SOAK_KEEP:-}" = 1 ]; then
		echo "soak: world kept in $work (SOAK_KEEP=1)" >&2
	else
		rm -rf "$work"
	fi
}
trap 'cleanup' EXIT
trap 'echo "soak: interrupted" >&2; exit 130' INT
trap 'echo "soak: terminated" >&2; exit 143' TERM HUP

# Pids whose environment (as exec'd) has an entry matching the regex ^$1.
pids_with_env() {
	grep -lsz -- "^$1" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3 | while read -r p; do
		[ "$p" != "$$" ] && [ "$p" != "$BASHPID" ] && printf '%s\n' "$p"
	done
}
soak_pids() { pids_with_env "SOAK_TAG=$tag\$"; }
token_pids() { pids_with_env "CCCI_RUN_TOKEN=$1"; }

# Every docker object of the soak's apps (the stack namespace ends with the soak's suffix).
docker_leftovers() {
	local kind
	"$real_docker" service ls --format '{{.Name}}' 2>/dev/null | grep -F -- "_$ns" | sed 's/^/service /'
	"$real_docker" ps -a --format '{{.ID}} {{.Label "com.docker.stack.namespace"}} {{.Names}}' 2>/dev/null |
		awk -v ns="_$ns" 'index($2 " " $3, ns) { print "container " $1 }'
	for kind in volume secret config network; do
		"$real_docker" "$kind" ls --format '{{.Name}} {{.Label "com.docker.stack.namespace"}}' 2>/dev/null |
			awk -v ns="_$ns" -v k="$kind" 'index($0, ns) { print k " " $1 }'
	done
}
remove_docker_leftovers() {
	local kind name i
	[ -n "$(docker_leftovers)" ] || return 0
	echo "soak: removing docker leftovers of $suffix" >&2
	docker_leftovers | awk '$1 == "service" { print $2 }' | xargs -r "$real_docker" service rm >/dev/null 2>&1
	for ((i = 0; i < 60; i++)); do
		docker_leftovers | awk '$1 == "container" { print $2 }' | xargs -r "$real_docker" rm -f >/dev/null 2>&1
		docker_leftovers | grep -q '^container ' || break
		sleep 0.5
	done
	for kind in volume secret config network; do
		docker_leftovers | awk -v k="$kind" '$1 == k { print $2 }' | xargs -r "$real_docker" "$kind" rm >/dev/null 2>&1
	done
}

# Recipes: one recipe name per domain key, so every domain gets its own host port (host-mode
# published ports collide between parallel apps). Key k = (recipe, pr, ref) → one domain.
keys_hello=6 keys_sick=2
nkeys=$((keys_hello + keys_sick))
mapfile -t ports < <(python3 - "$nkeys" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
for s in socks: print(s.getsockname()[1])
PY
)
"$root/fixtures/recipes/make-repo.sh" hello "$work/recipes/hello" >/dev/null || exit 1
"$root/fixtures/recipes/make-repo.sh" sick "$work/recipes/sick" >/dev/null || exit 1
K_recipe=() K_pr=() K_ref=() K_domain=() K_kind=()
for ((k = 0; k < nkeys; k++)); do
	if [ "$k" -lt "$keys_hello" ]; then kind=hello; else kind=sick; fi
	j=$((k < keys_hello ? k : k - keys_hello))
	if [ "$j" -eq 0 ]; then recipe=$kind; else recipe=$kind$j; fi
	# A copy under another name declares that name (TYPE), as a real recipe does.
	[ -d "$work/recipes/$recipe" ] || "$root/fixtures/recipes/make-repo.sh" "$kind" "$work/recipes/$recipe" "$recipe" >/dev/null || exit 1
	pr=$((j % 3 == 1 ? 10 + j : 0))
	ref=
	[ $((j % 2)) -eq 1 ] && ref=main
	h=$(printf '%s|%s|%s' "$recipe" "$pr" "$ref" | sha1sum)
	p=${recipe//[^a-z0-9]/}
	K_recipe[k]=$recipe K_pr[k]=$pr K_ref[k]=$ref K_kind[k]=$kind
	K_domain[k]=${p:0:4}-${h:0:6}.$suffix
	port=${ports[k]}
	mkdir -p "$work/tests/$recipe"
	if [ "$kind" = hello ]; then
		cat >"$work/tests/$recipe/ccci.yml" <<EOT
extra_env: { HTTP_PORT: "$port" }
timeouts: { deploy: 90, http: 20, test: 30 }
health: { url: "http://127.0.0.1:$port/" }
EOT
		cat >"$work/tests/$recipe/test_http" <<EOT
#!/bin/sh
# The app serves its greeting; then linger a moment (a window for faults inside a test).
curl -fsS "http://127.0.0.1:$port/" | grep -q '^hello ' || exit 1
sleep 1
EOT
		chmod +x "$work/tests/$recipe/test_http"
	else
		cat >"$work/tests/$recipe/ccci.yml" <<EOT
extra_env: { HTTP_PORT: "$port" }
timeouts: { deploy: 20, http: 5 }
health: { url: "http://127.0.0.1:$port/" }
EOT
	fi
done

# The abra the runs use: the fixture, with per-run misbehaviours read from modes/<run id> (and
# modes/<run id>.teardown, applied only to the run's own teardown calls, never to a janitor's), an
# event log per run, and one timestamped line per call in logs/calls.log.
cat >"$work/bin/abra" <<EOT
#!/bin/sh
W='$work'
id=\${CCCI_RUN_ID:-janitor}
mode=
[ ! -f "\$W/modes/\$id" ] || mode=\$(cat "\$W/modes/\$id")
if [ "\${CCCI_STAGE:-}" = teardown ] && [ -f "\$W/modes/\$id.teardown" ]; then
	mode="\${mode:+\$mode,}\$(cat "\$W/modes/\$id.teardown")"
fi
printf '%s %s %s abra %s\n' "\$(date +%s.%N)" "\$id" "\${CCCI_STAGE:--}" "\$*" >>"\$W/logs/calls.log"
export FIXTURE_RECIPES="\$W/recipes" FIXTURE_ABRA_LOG="\$W/logs/abra-\$id.log" FIXTURE_ABRA_MODE="\$mode"
exec '$root/fixtures/abra' "\$@"
EOT
# The docker ccci uses (runs and janitors): the real one; removals are logged with a timestamp
# and the caller, so the checker can prove that nothing was removed under a live holder.
cat >"$work/bin/docker" <<EOT
#!/bin/sh
case "\$1 \${2:-}" in
"stack rm" | "service rm" | "volume rm" | "secret rm" | "config rm" | "network rm" | "container rm" | "rm "*)
	printf '%s %s %s docker %s\n' "\$(date +%s.%N)" "\${CCCI_RUN_ID:-janitor}" "\${CCCI_STAGE:--}" "\$*" >>'$work/logs/calls.log'
	;;
esac
exec '$real_docker' "\$@"
EOT
chmod +x "$work/bin/abra" "$work/bin/docker"

# Host settings live in a host config file, as on a real host (`ccci run` refuses host settings
# from the environment that disagree with it).
cat >"$work/ccci.env" <<EOT
CCCI_ABRA=$work/bin/abra
CCCI_DOCKER=$work/bin/docker
CCCI_ABRA_HOME=$work/abra
CCCI_RUNS_DIR=$work/runs
CCCI_APP_LOCK_DIR=$work/lock
CCCI_TESTS_DIR=$work/tests
CCCI_SECRETS_DIR=$work/secrets
CCCI_DOMAIN_SUFFIX=$suffix
CCCI_KILL_GRACE=1
EOT
base_env=(PATH="$PATH" HOME="$work" LANG=C.UTF-8 SOAK_TAG="$tag" CCCI_CONFIG="$work/ccci.env")
[ -z "${DOCKER_HOST:-}" ] || base_env+=(DOCKER_HOST="$DOCKER_HOST")

# --- the schedule (every random choice is made here, from RANDOM=$seed) --------------------------
RANDOM=$seed
faults=(kill9 term dronekill int2 deadline wedged)
forced=("${faults[@]}")
for ((k = ${#forced[@]} - 1; k > 0; k--)); do
	j=$((RANDOM % (k + 1)))
	t=${forced[k]} forced[k]=${forced[j]} forced[j]=$t
done
declare -A forced_at=()
for f in "${forced[@]}"; do
	while :; do
		j=$((RANDOM % N))
		[ -z "${forced_at[$j]:-}" ] && break
	done
	forced_at[$j]=$f
done
S_key=() S_stages=() S_fault=() S_via=() S_trig=() S_delay=() S_deadline=() S_budget=() S_mode=()
S_tmode=() S_gap=() S_termto=()
for ((i = 0; i < N; i++)); do
	if [ -n "${forced_at[$i]:-}" ]; then
		f=${forced_at[$i]}
	else
		r=$((RANDOM % 100))
		if [ "$r" -lt 40 ]; then f=none; else f=${faults[$(((r - 40) / 10))]}; fi
	fi
	if [ "$i" -gt 0 ] && [ $((RANDOM % 100)) -lt 25 ]; then
		key=${S_key[i - 1]} # the same domain as the previous run, which is most likely in flight
	elif [ $((RANDOM % 100)) -lt 15 ]; then
		key=$((keys_hello + RANDOM % keys_sick))
	else
		key=$((RANDOM % keys_hello))
	fi
	if [ "${K_kind[key]}" = sick ]; then
		stages=install
	elif [ $((RANDOM % 2)) -eq 0 ]; then
		stages=install
	else
		stages=install,custom
	fi
	via=direct
	if [ "$f" = dronekill ] || [ $((RANDOM % 100)) -lt 30 ]; then via=wrapper; fi
	mode= tmode= deadline=150 budget=60 trig=- delay=0 gap=0 termto=ccci
	if [ -n "${forced_at[$i]:-}" ]; then
		# A forced fault must really happen: a trigger well before teardown, a short delay.
		trigs=(new deploy)
		trig=${trigs[$((RANDOM % 2))]}
		delay=$((RANDOM % 300))
	else
		trigs=(fetch wait new deploy ready test)
		trig=${trigs[$((RANDOM % 6))]}
		[ "$trig" != test ] || [ "$stages" = install,custom ] || trig=ready
		delay=$((RANDOM % 800))
	fi
	case $f in
	deadline)
		deadline=$((3 + RANDOM % 6))
		trig=-
		if [ -n "${forced_at[$i]:-}" ]; then
			mode=slow=15:deploy
		else
			slows=(slow=15:fetch slow=15:new slow=15:deploy "")
			mode=${slows[$((RANDOM % 4))]}
		fi
		;;
	wedged) budget=3 tmode=hang:undeploy trig=- ;;
	int2)
		gap=$((100 + RANDOM % 1400))
		[ $((RANDOM % 2)) -eq 0 ] || tmode=slow=3:undeploy
		;;
	term) [ "$via" = direct ] || [ $((RANDOM % 2)) -eq 0 ] || termto=wrapper ;;
	none) trig=- ;;
	esac
	[ "$trig" != - ] || delay=0
	# Now and then a grandchild that double-forks out of its process group (carrying the token):
	# often for a run that is SIGKILLed (then only the janitor's straggler sweep can stop it).
	esc=10
	[ "$f" != kill9 ] || esc=50
	if [ $((RANDOM % 100)) -lt "$esc" ]; then mode=${mode:+$mode,}escape:new; fi
	S_key[i]=$key S_stages[i]=$stages S_fault[i]=$f S_via[i]=$via S_trig[i]=$trig S_delay[i]=$delay
	S_deadline[i]=$deadline S_budget[i]=$budget S_mode[i]=$mode S_tmode[i]=$tmode S_gap[i]=$gap
	S_termto[i]=$termto
done

{
	printf 'i\tid\tkey\trecipe\tpr\tref\tapp\tkind\tstages\tfault\tforced\tvia\ttrig\tdelay_ms\tdeadline\tbudget\tmode\tteardown_mode\tgap_ms\tterm_to\n'
	for ((i = 0; i < N; i++)); do
		k=${S_key[i]}
		printf '%s\t' "$i" "$tag-$i" "$k" "${K_recipe[k]}" "${K_pr[k]}" "${K_ref[k]:--}" "${K_domain[k]%%.*}" \
			"${K_kind[k]}" "${S_stages[i]}" "${S_fault[i]}" "$([ -n "${forced_at[$i]:-}" ] && echo 1 || echo 0)" \
			"${S_via[i]}" "${S_trig[i]}" "${S_delay[i]}" "${S_deadline[i]}" "${S_budget[i]}" "${S_mode[i]:--}" \
			"${S_tmode[i]:--}" "${S_gap[i]}"
		printf '%s\n' "${S_termto[i]}"
	done
} >"$work/schedule.tsv"
sched_sum=$(cut -f3- "$work/schedule.tsv" | sha1sum | cut -c1-12)
if [ -n "$plan" ]; then
	cut -f1,3- "$work/schedule.tsv"
	echo "soak: seed=$seed runs=$N schedule=$sched_sum"
	exit 0
fi
echo "soak: seed=$seed runs=$N parallel=$P schedule=$sched_sum suffix=$suffix world=$work"

# --- one run: start it, wait for its trigger, inject its fault, wait for its end --------------------
# Writes $work/res/<id> (key=value lines) for the checker.
ms_sleep() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }
proc_state() { # PID -> the state letter, or nothing when gone
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
	s=${s##*) }
	printf '%s' "${s%% *}"
}
alive() { local s; s=$(proc_state "$1"); [ -n "$s" ] && [ "$s" != Z ] && [ "$s" != X ]; }

drive() {
	local i=$1 id=$tag-$1 k=${S_key[$1]}
	local recipe=${K_recipe[k]} fault=${S_fault[i]} via=${S_via[i]} trig=${S_trig[i]}
	local rdir=$work/runs/$id alog=$work/logs/abra-$id.log
	local res=$work/res/$id cpid= wpid= waitpid t_start t_trig= t_inject= injected=0 rc= t_end
	local overran=0 ccci_gone=1 leak= c i2
	[ -z "${S_mode[i]}" ] || printf '%s' "${S_mode[i]}" >"$work/modes/$id"
	[ -z "${S_tmode[i]}" ] || printf '%s' "${S_tmode[i]}" >"$work/modes/$id.teardown"
	local args=(--recipe "$recipe" --stages "${S_stages[i]}" --deadline "${S_deadline[i]}"
		--teardown-budget "${S_budget[i]}")
	[ "${K_pr[k]}" = 0 ] || args+=(--pr "${K_pr[k]}")
	[ -z "${K_ref[k]}" ] || args+=(--ref "${K_ref[k]}")
	t_start=$(now_ms)
	if [ "$via" = direct ]; then
		env -i --default-signal "${base_env[@]}" CCCI_RUN_ID="$id" "$CCCI_BIN" run "${args[@]}" \
			</dev/null >/dev/null 2>"$work/err/$id" &
		cpid=$!
		waitpid=$cpid
	else
		# Drone's step script: the step shell `sh -e` execs the wrapper, which is ccci's parent.
		{
			printf 'exec %q' "$root/ci/drone-step.sh"
			printf ' %q' "${args[@]}"
			printf '\n'
		} >"$work/steps/$id.sh"
		env -i --default-signal "${base_env[@]}" CCCI_RUN_ID="$id" CCCI_BIN="$CCCI_BIN" \
			sh -e "$work/steps/$id.sh" </dev/null >/dev/null 2>"$work/err/$id" &
		wpid=$!
		waitpid=$wpid
		for ((c = 0; c < 500; c++)); do # the wrapper's child, once it has exec'd ccci
			for cpid in $(cat "/proc/$wpid/task/$wpid/children" 2>/dev/null); do
				[ "$(readlink "/proc/$cpid/exe" 2>/dev/null)" = "$ccci_exe" ] && break 2
			done
			cpid=
			alive "$wpid" || break
			sleep 0.01
		done
	fi
	local bound=$((t_start + run_bound * 1000))

	seen() {
		case $1 in
		fetch) grep -qs '^start [0-9]* recipe fetch' "$alog" ;;
		new) grep -qs '^start [0-9]* app new' "$alog" ;;
		deploy) grep -qs '^start [0-9]* app deploy' "$alog" ;;
		ready) grep -qs '^end [0-9]* app deploy rc=0' "$alog" ;;
		wait) grep -qs 'is in flight' "$rdir/run.log" || grep -qs '^start [0-9]* app new' "$alog" ;;
		test) grep -qs '\$ .*/tests/test_' "$rdir/run.log" ;;
		esac
	}
	[ -n "$cpid" ] || echo "soak: $id: ccci never showed up under the wrapper $wpid" >&2
	if [ "$trig" != - ] && [ -n "$cpid" ]; then
		while alive "$cpid" && [ "$(now_ms)" -lt "$bound" ]; do
			if seen "$trig"; then t_trig=$(now_ms); break; fi
			sleep 0.02
		done
		if [ -n "$t_trig" ]; then
			ms_sleep "${S_delay[i]}"
			if alive "$cpid"; then
				t_inject=$(now_ms)
				injected=1
				case $fault in
				kill9) kill -KILL "$cpid" ;;
				term) if [ "${S_termto[i]}" = wrapper ]; then kill -TERM "$wpid"; else kill -TERM "$cpid"; fi ;;
				dronekill) kill -KILL "$wpid" ;;
				int2)
					kill -INT "$cpid"
					ms_sleep "${S_gap[i]}"
					if alive "$cpid"; then kill -INT "$cpid"; else injected=half; fi
					;;
				esac
			fi
		fi
	fi
	# Wait for the end, within the bound (a run that overstays is SIGKILLed: a violation).
	while alive "$waitpid"; do
		if [ "$(now_ms)" -ge "$bound" ]; then
			overran=1
			kill -KILL "$waitpid" "$cpid" 2>/dev/null
			break
		fi
		sleep 0.05
	done
	wait "$waitpid"
	rc=$?
	t_end=$(now_ms)
	if [ -n "$cpid" ] && [ "$waitpid" != "$cpid" ]; then
		# ccci outlives a SIGKILLed wrapper (it tears down after its PDEATHSIG): wait for it too.
		while alive "$cpid"; do
			if [ "$(now_ms)" -ge "$bound" ]; then
				overran=1
				kill -KILL "$cpid" 2>/dev/null
				ccci_gone=0
				break
			fi
			sleep 0.05
		done
		t_end=$(now_ms)
	fi
	# No process started by the run outlives it — unless ccci itself was SIGKILLed (then its
	# stragglers are the janitor's job, checked at the end).
	if ! { [ "$fault" = kill9 ] && [ "$injected" = 1 ]; }; then
		for ((i2 = 0; i2 < 20; i2++)); do
			leak=$(token_pids "$id:" | tr '\n' ' ')
			[ -n "$leak" ] || break
			sleep 0.1
		done
		if [ -n "$leak" ]; then
			leak=$(for c in $leak; do printf '%s:%s;' "$c" "$(tr '\0' ' ' <"/proc/$c/cmdline" 2>/dev/null | cut -c1-80)"; done)
		fi
	fi
	{
		echo "id=$id"
		echo "cpid=$cpid"
		echo "wpid=$wpid"
		echo "t_start=$t_start"
		echo "t_trig=$t_trig"
		echo "t_inject=$t_inject"
		echo "injected=$injected"
		echo "rc=$rc"
		echo "t_end=$t_end"
		echo "overran=$overran"
		echo "ccci_gone=$ccci_gone"
		echo "leak=$leak"
	} >"$res.tmp" && mv "$res.tmp" "$res"
}

# --- the janitor loops --------------------------------------------------------------------------
jan_loop() { # K
	local k=$1 n=0 s
	RANDOM=$((seed + 1000 * k))
	while [ ! -e "$work/stop" ]; do
		n=$((n + 1))
		env -i --default-signal "${base_env[@]}" "$CCCI_BIN" janitor --json --prune-after 36500 --deadline 120 \
			</dev/null >"$work/jan/$k-$n.json" 2>"$work/jan/$k-$n.err"
		echo $? >"$work/jan/$k-$n.rc"
		for ((s = 10 + RANDOM % 21; s > 0; s--)); do
			[ ! -e "$work/stop" ] || break
			sleep 0.1
		done
	done
}
for k in 1 2; do
	jan_loop "$k" &
	jan_pids+=($!)
done

# --- drive the schedule --------------------------------------------------------------------------
soak_bound=$((t_soak0 + (600 + N * 60) * 1000))
next=0 active=() done_n=0 aborted=
print_start() {
	local i=$1 k=${S_key[$1]} f=${S_fault[$1]}
	printf 'soak: start %3d/%d %s %s %s via=%s fault=%s' "$((i + 1))" "$N" "$tag-$i" "${K_domain[k]%%.*}" \
		"${S_stages[i]}" "${S_via[i]}" "$f"
	[ "${S_trig[i]}" = - ] || printf '@%s+%sms' "${S_trig[i]}" "${S_delay[i]}"
	[ "$f" != deadline ] || printf ' deadline=%ss' "${S_deadline[i]}"
	[ -z "${S_mode[i]}" ] || printf ' abra=%s' "${S_mode[i]}"
	[ -z "${S_tmode[i]}" ] || printf ' teardown-abra=%s' "${S_tmode[i]}"
	printf '\n'
}
while [ "$next" -lt "$N" ] || [ ${#active[@]} -gt 0 ]; do
	still=()
	for p in "${active[@]}"; do
		if kill -0 "$p" 2>/dev/null; then still+=("$p"); else wait "$p" 2>/dev/null; done_n=$((done_n + 1)); fi
	done
	active=("${still[@]}")
	if [ "$(now_ms)" -ge "$soak_bound" ] && [ -z "$aborted" ]; then
		echo "soak: the soak's own time bound is spent: no new runs" >&2
		aborted=1
		next=$N
	fi
	while [ ${#active[@]} -lt "$P" ] && [ "$next" -lt "$N" ]; do
		print_start "$next"
		drive "$next" 2>"$work/err/driver-$next" & # bash's job notices ("Killed") go there
		active+=($!)
		driver_pids+=($!)
		next=$((next + 1))
	done
	sleep 0.2
done
echo "soak: all $N runs ended after $((($(now_ms) - t_soak0) / 1000)) s; stopping the janitor loops"
touch "$work/stop"
for p in "${jan_pids[@]}"; do wait "$p" 2>/dev/null; done

# --- final sweep: until a sweep finds nothing to do (bounded) -----------------------------------
final_ok=0
for ((s = 1; s <= 10; s++)); do
	env -i --default-signal "${base_env[@]}" "$CCCI_BIN" janitor --json --prune-after 36500 --deadline 300 \
		</dev/null >"$work/jan/final-$s.json" 2>"$work/jan/final-$s.err"
	rc=$?
	echo $rc >"$work/jan/final-$s.rc"
	work_left=$(python3 - "$work/jan/final-$s.json" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except Exception as e:
    print("unreadable report"); sys.exit()
n = len([a for a in r["apps"]]) + len(r["lockfiles"]) + len([s for s in r["stragglers"]])
print(n if n else "")
PY
)
	echo "soak: final janitor sweep $s: exit $rc, ${work_left:-nothing} to do"
	if [ "$rc" -eq 0 ] && [ -z "$work_left" ]; then final_ok=1; break; fi
	sleep 1
done

# --- the invariants --------------------------------------------------------------------------------
env -i "${base_env[@]}" "$CCCI_BIN" locks --json >"$work/locks.json" 2>"$work/locks.err"
docker_leftovers >"$work/leftovers.txt"
{ soak_pids; token_pids "$tag-"; } | sort -un | while read -r p; do
	printf '%s %s\n' "$p" "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-100)"
done >"$work/procs.txt"
python3 - "$work" "$tag" "$suffix" "$seed" "$N" "$final_ok" "$sched_sum" <<'PY'
import glob, json, os, re, sys, fcntl
from datetime import datetime, timezone

work, tag, suffix, seed, N, final_ok, sched = sys.argv[1:8]
N = int(N)
ns = suffix.replace(".", "_")
violations = []

def v(msg):
    violations.append(msg)

def kv(path):
    d = {}
    try:
        for line in open(path):
            if "=" in line:
                k, _, val = line.rstrip("\n").partition("=")
                d[k] = val
    except FileNotFoundError:
        return None
    return d

def ts(s):  # run.log timestamp -> epoch seconds
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()

rows = [l.rstrip("\n").split("\t") for l in open(f"{work}/schedule.tsv")]
head, rows = rows[0], rows[1:]
sched_rows = [dict(zip(head, r)) for r in rows]

EXIT_OF = {"pass": {0, 4}, "fail": {1}, "error": {70}, "lock-timeout": {75}, "cancelled": {130, 143}, "deadline": {142}}
FAULT_OUTCOME = {"term": ("cancelled", 143), "dronekill": ("cancelled", 143), "int2": ("cancelled", 130),
                 "deadline": ("deadline", 142)}
REQUIRED = ["schema", "recipe", "run_id", "finished", "stages", "outcome", "exit_code", "teardown", "domain",
            "flags", "rungs", "level", "started", "duration_ms", "provenance"]

happened = {f: 0 for f in ["kill9", "term", "dronekill", "int2", "deadline", "wedged"]}
scheduled = {f: 0 for f in list(happened) + ["none"]}
late = {f: 0 for f in happened}
outcomes, teardowns, exits = {}, {}, {}
waited = 0
holds = {}  # domain -> [(t0, t1, run id)]
runs_checked = 0
killed = 0

def bump(d, k):
    d[k] = d.get(k, 0) + 1

for s in sched_rows:
    rid, fault, kind, dom = s["id"], s["fault"], s["kind"], s["app"] + "." + suffix
    scheduled[fault] += 1
    res = kv(f"{work}/res/{rid}")
    rdir = f"{work}/runs/{rid}"
    if res is None:
        v(f"{rid}: the run never reported (soak aborted?)")
        continue
    if not res["cpid"]:
        v(f"{rid}: the soak never found the run's ccci process (no fault could be injected)")
    if res["overran"] == "1":
        v(f"{rid}: overran its bound and was SIGKILLed (fault {fault})")
    if res["leak"]:
        v(f"{rid}: processes of the run outlived it: {res['leak']}")
    rc = int(res["rc"]) if res["rc"] else None
    injected = res["injected"]
    # lock hold interval from run.log (a subset of the real one: logged after acquiring, last line
    # before exit)
    t_acq = t_last = None
    try:
        for line in open(f"{rdir}/run.log", errors="replace"):
            m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z) ", line)
            if not m:
                continue
            t_last = ts(m.group(1))
            if "app lock held:" in line and t_acq is None:
                t_acq = t_last
            if "is in flight" in line:
                waited += 1
    except FileNotFoundError:
        pass
    if t_acq is not None and t_last is not None:
        holds.setdefault(dom, []).append((t_acq, t_last, rid))

    was_killed = (fault == "kill9" and injected == "1" and rc == 137)
    if was_killed:
        happened["kill9"] += 1
        killed += 1
        bump(outcomes, "killed")
        continue
    if fault == "kill9" and injected == "1":
        late["kill9"] += 1  # the SIGKILL met a ccci that was already exiting
    runs_checked += 1
    try:
        r = json.load(open(f"{rdir}/results.json"))
    except Exception as e:
        v(f"{rid}: no complete results.json ({e.__class__.__name__}); fault {fault}, exit {rc}")
        continue
    missing = [k for k in REQUIRED if k not in r]
    if missing or len(r.get("stages", [])) != 5 or "result" not in r.get("teardown", {}):
        v(f"{rid}: incomplete results.json (missing {missing})")
        continue
    out, code, td = r["outcome"], r["exit_code"], r["teardown"]["result"]
    bump(outcomes, out); bump(teardowns, td); bump(exits, code)
    if r["run_id"] != rid or r["domain"] != dom:
        v(f"{rid}: results.json names run {r['run_id']} / domain {r['domain']}, expected {rid} / {dom}")
    if code not in EXIT_OF.get(out, set()):
        v(f"{rid}: outcome {out} with exit_code {code}")
    if out == "pass" and (code == 0) != (td == "clean"):
        v(f"{rid}: outcome pass, exit {code}, teardown {td}")
    if fault == "dronekill":
        if rc != 137:
            v(f"{rid}: the SIGKILLed wrapper exited {rc} (expected 137)")
    elif rc != code:
        v(f"{rid}: exited {rc} but results.json says exit_code {code} (fault {fault}, via {s['via']})")
    natural = "pass" if kind == "hello" else "fail"
    natural_code = 0 if kind == "hello" else 1
    if fault == "wedged":
        if out != natural or td != "abandoned" or code != (4 if kind == "hello" else 1):
            v(f"{rid}: wedged teardown: expected {natural}/abandoned/exit {4 if kind == 'hello' else 1}, got {out}/{td}/exit {code}")
        else:
            happened["wedged"] += 1
        continue
    if fault in FAULT_OUTCOME and (out, code) == FAULT_OUTCOME[fault]:
        happened[fault] += 1
        continue
    # No fault landed (none scheduled, or it arrived too late to matter): the run must be the
    # recipe's natural verdict — a live run that lost its app to a janitor would fail here.
    if fault != "none":
        late[fault] += 1
    if (out, code) != (natural, natural_code) or (kind == "hello" and td != "clean"):
        v(f"{rid}: fault {fault} ({'landed' if injected == '1' else 'not injected'}): expected {natural}/exit {natural_code}"
          f"{'/clean' if kind == 'hello' else ''}, got {out}/exit {code}/teardown {td}")

# Nothing of a run app was removed by anyone but its holder while a live run held its lock.
reaps_under_holder = 0
calls = 0
try:
    for line in open(f"{work}/logs/calls.log"):
        p = line.split()
        if len(p) < 5:
            continue
        t, caller, stage, prog, args = float(p[0]), p[1], p[2], p[3], p[4:]
        destructive = (prog == "abra" and args[:2] in (["app", "undeploy"], ["app", "remove"])) or prog == "docker"
        if not destructive:
            continue
        calls += 1
        doms = set()
        for a in args:
            if a.endswith("." + suffix):
                doms.add(a)
            m = re.match(r"([a-z0-9]{1,4}-[0-9a-f]{6})_" + re.escape(ns), a)
            if m:
                doms.add(m.group(1) + "." + suffix)
        for d in doms:
            for (t0, t1, rid) in holds.get(d, []):
                if rid != caller and t0 < t < t1:
                    reaps_under_holder += 1
                    v(f"{caller} ran `{prog} {' '.join(args)}` at {t:.3f} while {rid} held the lock of {d} "
                      f"({t0:.3f}..{t1:.3f})")
except FileNotFoundError:
    pass

# Janitor loops: sweeps, reaps, failures.
sweeps = reaped = unlinked = strag = jan_fail = 0
jan_errors = []
for f in sorted(glob.glob(f"{work}/jan/*.json")):
    base = f[:-5]
    try:
        rc = int(open(base + ".rc").read())
        r = json.load(open(f))
    except Exception as e:
        jan_fail += 1
        jan_errors.append(f"{os.path.basename(base)}: unreadable report ({e.__class__.__name__})")
        continue
    sweeps += 1
    reaped += sum(1 for a in r["apps"] if a["action"] == "reaped")
    unlinked += sum(1 for l in r["lockfiles"] if l["action"] == "unlinked")
    strag += sum(1 for s in r["stragglers"] if s["action"] in ("terminated", "killed"))
    if rc != 0:
        jan_fail += 1
        errs = r["errors"] + [f"{a['domain']}: {a['reason']}" for a in r["apps"] if a["action"] == "failed"]
        jan_errors.append(f"{os.path.basename(base)}: exit {rc}: {'; '.join(errs)[:300]}")
if final_ok != "1":
    v("the final janitor sweeps never came out clean (exit 0 with nothing to do)")

# Leftovers: docker objects, .env files, lockfiles, held locks, processes.
left = [l.strip() for l in open(f"{work}/leftovers.txt") if l.strip()]
server_files = sorted(os.listdir(f"{work}/abra/servers/default"))
envs = [f for f in server_files if f.endswith(".env")]
# The fixture abra keeps a private marker `<domain>.env.fixture-first` next to the .env (real abra
# has no such file); the janitor's docker routine deletes the .env only, so it may stay behind.
markers = [f for f in server_files if f not in envs]
for l in left:
    v(f"docker leftover: {l}")
for e in envs:
    v(f"app .env leftover: {e}")
lockfiles = sorted(os.listdir(f"{work}/lock"))
held = []
try:
    held = [l["domain"] for l in json.load(open(f"{work}/locks.json"))["locks"] if l["state"] != "free"]
except Exception as e:
    v(f"ccci locks --json failed: {e}")
for h in held:
    v(f"app lock still held: {h}")
for l in lockfiles:
    v(f"lockfile left: {l}")
runlocks_held = 0
for d in glob.glob(f"{work}/runs/*/run.lock"):
    with open(d) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            runlocks_held += 1
            v(f"run.lock still held: {d}")
procs = [l.strip() for l in open(f"{work}/procs.txt") if l.strip()]
for p in procs:
    v(f"process of the soak left: {p}")

missing = [f for f, n in happened.items() if n == 0]
for f in missing:
    v(f"fault type {f} never happened")

def fmt(d):
    return "{" + ",".join(f"{k}:{n}" for k, n in d.items()) + "}"

print("soak: invariants")
print(f"  run apps left (stacks/containers/volumes/secrets/configs/networks): {len(left)}; .env left: {len(envs)}"
      f"{f' (fixture-only marker files left: {len(markers)})' if markers else ''}")
print(f"  processes of soak runs left: {len(procs)}; runs whose processes outlived them: "
      f"{sum(1 for s in sched_rows if (kv(work + '/res/' + s['id']) or {}).get('leak'))}")
print(f"  app locks held: {len(held)}; lockfiles left: {len(lockfiles)}; run.lock held: {runlocks_held}")
print(f"  runs checked (not SIGKILLed): {runs_checked}; killed: {killed}; outcomes {fmt(outcomes)}; "
      f"teardown {fmt(teardowns)}; exit codes {fmt(dict(sorted(exits.items())))}")
print(f"  removals under a live holder: {reaps_under_holder} (of {calls} removal calls checked)")
print(f"  faults scheduled {fmt(scheduled)}; happened {fmt(happened)}; landed too late to matter {fmt(late)}")
print(f"  same-domain lock waits: {waited}")
print(f"  janitor sweeps: {sweeps} (apps reaped {reaped}, lockfiles unlinked {unlinked}, stragglers stopped {strag}, "
      f"non-zero exits {jan_fail})")
for e in jan_errors[:10]:
    print(f"    janitor: {e}")
if violations:
    print(f"soak: {len(violations)} violation(s):")
    for x in violations:
        print(f"  VIOLATION {x}")
    # Evidence (the world is removed on exit unless SOAK_KEEP=1): what each named run did.
    named = sorted({m for x in violations for m in re.findall(re.escape(tag) + r"-\d+", x)},
                   key=lambda r: int(r.rsplit("-", 1)[1]))
    for rid in named[:8]:
        s = next((s for s in sched_rows if s["id"] == rid), None)
        if s:
            print(f"  -- {rid}: " + " ".join(f"{k}={s[k]}" for k in head[2:]))
        print(f"     result: {open(work + '/res/' + rid).read().strip().replace(chr(10), ' ') if os.path.exists(work + '/res/' + rid) else '-'}")
        try:
            lines = open(f"{work}/runs/{rid}/run.log", errors="replace").read().splitlines()
        except FileNotFoundError:
            lines = []
        keep = [l for l in lines if " WARN " in l or " ERROR " in l or "====" in l or "app lock" in l][-25:]
        for l in keep + lines[-3:]:
            print(f"     | {l[:220]}")
passed = outcomes.get("pass", 0)
print(f"soak: seed={seed} runs={N} passed={passed} faults={fmt(happened)} violations={len(violations)}")
sys.exit(1 if violations else 0)
PY
status=$?
if [ "$status" -ne 0 ] && [ "${SOAK_KEEP:-}" != 1 ]; then
	# Evidence before the world goes: the tail of run.log of every run named in a violation.
	echo "soak: reproduce with: ci/soak.sh $N --seed $seed --parallel $P (SOAK_KEEP=1 keeps the world)"
fi
echo "soak: wall time $((($(now_ms) - t_soak0) / 1000)) s"
exit "$status"
