#!/usr/bin/env bash
# Chaos soak (issue 9, issue 14): many `ccci run`s of the fixture recipes on the real swarm, P at
# a time, some sharing a domain, while two `ccci janitor` loops and a `ccci janitor --watch` race
# them, with faults injected at random points of a schedule that a printed seed reproduces. Then
# a final janitor sweep, and ci/soak_check.py checks the invariants and prints them with counts.
# See docs/reliability.md.
#
#   ci/soak.sh N [--seed S] [--parallel P] [--plan]
#
#   N            number of runs (>= 10: every fault type happens at least once)
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
#   foreign    while the run holds its app lock, uid 65534 tries to read its lockfiles (app lock,
#              host lock, run.lock): refused every time; the run has its natural verdict
#   hardlink   a file of the soak hard-linked at the lock path of a domain reserved for this
#              fault: the run fails (exit 1), the file is untouched, every janitor skips it
#   dlmax      --deadline 18446744073709551615                  -> exit 2, nothing created
#   dlcap      --deadline one above the host's CCCI_MAX_DEADLINE -> exit 2, nothing created
# Signals are sent when an observable event happened (an abra call starting or ending in the
# fixture's event log, the lock wait, the lock held or a custom test starting in run.log) plus a
# random delay.
# shellcheck source-path=SCRIPTDIR
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() { # [EXIT CODE]: 0 prints on stdout (--help), anything else on stderr
	if [ "${1:-2}" = 0 ]; then
		sed -n '8,15p' "$0" | sed 's/^# \{0,1\}//'
	else
		sed -n '8,15p' "$0" | sed 's/^# \{0,1\}//' >&2
	fi
	exit "${1:-2}"
}

N='' seed='' P=3 plan=''
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
faults=(kill9 term dronekill int2 deadline wedged foreign hardlink dlmax dlcap)
if ! [[ "$N" =~ ^[0-9]+$ ]] || [ "$N" -lt ${#faults[@]} ]; then
	echo "soak: N must be a number >= ${#faults[@]} (one run per fault type at least)" >&2
	usage
fi
if ! [[ "$P" =~ ^[0-9]+$ ]] || [ "$P" -lt 1 ]; then echo "soak: --parallel must be a positive number" >&2; usage; fi
[ -n "$seed" ] || seed=$(($(od -An -N4 -tu4 /dev/urandom) % 1000000))
[[ "$seed" =~ ^[0-9]+$ ]] || { echo "soak: --seed must be a number" >&2; usage; }
run_bound=${SOAK_RUN_BOUND:-240}

if [ -z "$plan" ] && [ -z "${CCCI_BIN:-}" ]; then
	(cd "$root" && cargo build --release --quiet) || exit 1
	CCCI_BIN=${CARGO_TARGET_DIR:-$root/target}/release/ccci
fi
for c in docker python3 setsid setpriv flock sha1sum dash git; do
	command -v "$c" >/dev/null 2>&1 || { echo "soak: $c is missing" >&2; exit 1; }
done
ccci_exe=''
if [ -z "$plan" ]; then
	[ -x "$CCCI_BIN" ] || { echo "soak: no ccci binary at $CCCI_BIN" >&2; exit 1; }
	[ "$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" = active ] ||
		{ echo "soak: dockerd is unreachable or not a swarm manager (ci/swarm.sh up)" >&2; exit 1; }
	ccci_exe=$(readlink -f "$CCCI_BIN")
	CCCI_BIN=$ccci_exe # runs, wrappers and janitors do not depend on the soak's cwd
fi
real_docker=$(command -v docker)
# shellcheck source=soak-world.sh
. "$root/ci/soak-world.sh"
# shellcheck source=soak-run.sh
. "$root/ci/soak-run.sh"
t_soak0=$(now_ms)

# --- the world ----------------------------------------------------------------------------------
tag=sk$$ # run ids are $tag-<n>; every process of the soak carries SOAK_TAG=$tag or a run token
suffix=$tag.soak.test
ns=${suffix//./_}
max_deadline=600 # the host's CCCI_MAX_DEADLINE (runs ask for 150 s at most)
work=$(mktemp -d "${TMPDIR:-/tmp}/ccci-soak.XXXXXX")
mkdir -p "$work"/{abra/servers/default,runs,lock,tests,recipes,bin,secrets,modes,logs,res,err,steps,jan,victims}
# Another uid must reach the lock dir and the run dirs (only the 0600 lockfiles may stop it:
# the `foreign` fault), and nothing else of the world.
chmod 0711 "$work"
chmod 0700 "$work/secrets" "$work/abra"
"$root/fixtures/make-catalogue.sh" "$work/abra/catalogue"
driver_pids=() jan_pids=() cleaned=''
trap 'cleanup' EXIT
trap 'echo "soak: interrupted" >&2; exit 130' INT
trap 'echo "soak: terminated" >&2; exit 143' TERM HUP

keys_hello=6 keys_sick=2
key_hardlink=$((keys_hello + keys_sick))
nkeys=$((key_hardlink + 1))
K_recipe=() K_pr=() K_ref=() K_domain=() K_kind=()
make_keys || exit 1
make_wrappers
base_env=(PATH="$PATH" HOME="$work" LANG=C.UTF-8 SOAK_TAG="$tag")
[ -z "${DOCKER_HOST:-}" ] || base_env+=(DOCKER_HOST="$DOCKER_HOST")
run_env=("${base_env[@]}" CCCI_CONFIG="$work/ccci.env")

# --- the schedule (every random choice is made here, from RANDOM=$seed) --------------------------
RANDOM=$seed
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
	else # 30 % no fault, 7 % each fault type
		r=$((RANDOM % 100))
		if [ "$r" -lt 30 ]; then f=none; else f=${faults[$(((r - 30) / 7))]}; fi
	fi
	if [ "$f" = hardlink ]; then
		key=$key_hardlink
	elif [ "$i" -gt 0 ] && [ "${S_key[i - 1]}" != "$key_hardlink" ] && [ $((RANDOM % 100)) -lt 25 ]; then
		key=${S_key[i - 1]} # the same domain as the previous run, which is most likely in flight
	elif [ $((RANDOM % 100)) -lt 15 ]; then
		key=$((keys_hello + RANDOM % keys_sick))
	else
		key=$((RANDOM % keys_hello))
	fi
	if [ "${K_kind[key]}" = sick ] || [ $((RANDOM % 2)) -eq 0 ]; then
		stages=install
	else
		stages=install,custom
	fi
	via=direct
	if [ "$f" = dronekill ] || [ $((RANDOM % 100)) -lt 30 ]; then via=wrapper; fi
	mode='' tmode='' deadline=150 budget=60 trig=- delay=0 gap=0 termto=ccci
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
	foreign) # the lock is held from the `held` line to the start of teardown
		case $trig in fetch | wait | new) trig=held ;; esac
		;;
	hardlink) trig=- ;;
	dlmax) deadline=18446744073709551615 trig=- via=direct ;;
	dlcap) deadline=$((max_deadline + 1)) trig=- via=direct ;;
	none) trig=- ;;
	esac
	[ "$trig" != - ] || delay=0
	# Now and then a grandchild that double-forks out of its process group (carrying the token):
	# often for a run that is SIGKILLed (then only the janitor's straggler sweep can stop it).
	case $f in kill9) esc=50 ;; hardlink | dlmax | dlcap) esc=0 ;; *) esc=10 ;; esac
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
printf '%s\n' "tag=$tag" "suffix=$suffix" "seed=$seed" "runs=$N" "parallel=$P" "schedule=$sched_sum" >"$work/meta"
echo "soak: seed=$seed runs=$N parallel=$P schedule=$sched_sum suffix=$suffix world=$work"

# --- the janitors: two sweeping loops and one watch ---------------------------------------------
for k in 1 2; do
	jan_loop "$k" &
	jan_pids+=($!)
done
env -i --default-signal "${base_env[@]}" CCCI_CONFIG="$work/host-watch.env" "$CCCI_BIN" janitor --watch --json \
	--sweep-every 7 --prune-after 3650 --deadline 120 </dev/null >"$work/watch.jsonl" 2>"$work/watch.err" &
watch_pid=$!
jan_pids+=("$watch_pid")

# --- drive the schedule --------------------------------------------------------------------------
soak_bound=$((t_soak0 + (600 + N * 60) * 1000))
next=0 active=() aborted=''
print_start() {
	local i=$1 k=${S_key[$1]} f=${S_fault[$1]}
	printf 'soak: start %3d/%d %s %s %s via=%s fault=%s' "$((i + 1))" "$N" "$tag-$i" "${K_domain[k]%%.*}" \
		"${S_stages[i]}" "${S_via[i]}" "$f"
	[ "${S_trig[i]}" = - ] || printf '@%s+%sms' "${S_trig[i]}" "${S_delay[i]}"
	case $f in deadline | dlmax | dlcap) printf ' deadline=%ss' "${S_deadline[i]}" ;; esac
	[ -z "${S_mode[i]}" ] || printf ' abra=%s' "${S_mode[i]}"
	[ -z "${S_tmode[i]}" ] || printf ' teardown-abra=%s' "${S_tmode[i]}"
	printf '\n'
}
while [ "$next" -lt "$N" ] || [ ${#active[@]} -gt 0 ]; do
	still=()
	for p in "${active[@]}"; do
		if kill -0 "$p" 2>/dev/null; then still+=("$p"); else wait "$p" 2>/dev/null; fi
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
echo "soak: all $N runs ended after $((($(now_ms) - t_soak0) / 1000)) s; stopping the janitors"
touch "$work/stop"
kill -TERM "$watch_pid" 2>/dev/null
for ((i = 0; i < 300; i++)); do alive "$watch_pid" || break; sleep 0.1; done
alive "$watch_pid" && { echo "soak: janitor --watch ignored SIGTERM for 30 s: SIGKILL" >&2; kill -KILL "$watch_pid"; }
wait "$watch_pid"
echo $? >"$work/watch.rc"
for p in "${jan_pids[@]}"; do wait "$p" 2>/dev/null; done

# --- final sweep: until a sweep finds nothing to do (bounded) -----------------------------------
for ((s = 1; s <= 10; s++)); do
	janitor final "final-$s" --prune-after 3650 --deadline 300
	left=$(python3 "$root/ci/soak_check.py" left "$work/jan/final-$s.json")
	echo "soak: final janitor sweep $s: exit $(cat "$work/jan/final-$s.rc"), ${left:-nothing} to do"
	[ "$(cat "$work/jan/final-$s.rc")" != 0 ] || [ -n "$left" ] || break
	sleep 1
done

# --- the end state, and the invariants ----------------------------------------------------------
env -i "${run_env[@]}" "$CCCI_BIN" locks --json >"$work/locks.json" 2>"$work/locks.err"
docker_leftovers >"$work/leftovers.txt"
{ soak_pids; token_pids "$tag-"; } | sort -un | while read -r p; do
	printf '%s %s\n' "$p" "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-100)"
done >"$work/procs.txt"
python3 "$root/ci/soak_check.py" check "$work"
status=$?
if [ "$status" -ne 0 ] && [ "${SOAK_KEEP:-}" != 1 ]; then
	echo "soak: reproduce with: ci/soak.sh $N --seed $seed --parallel $P (SOAK_KEEP=1 keeps the world)"
fi
echo "soak: wall time $((($(now_ms) - t_soak0) / 1000)) s"
exit "$status"
