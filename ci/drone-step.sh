#!/bin/sh
# The Drone exec-runner step for ccci (SPEC §9). Use it as the step's command:
#
#     commands:
#       - exec ci/drone-step.sh
#
# `exec` matters: on a cancel Drone SIGKILLs the step shell and nothing else, so this shell must
# be ccci's parent — its death fires ccci's parent-death signal (SIGTERM), which starts the
# teardown. Run as a grandchild of the step shell it would outlive the SIGKILL and ccci would
# never hear of the cancel.
#
# What it does:
# - starts `setsid ccci run "$@"` in the background with CCCI_EXPECT_PPID=$$, so ccci refuses to
#   start (exit 3) if this shell is not its parent — e.g. when it already died;
# - forwards a TERM (and HUP/INT) of this shell to ccci's process group;
# - keeps waiting for ccci after forwarding (teardown takes a while);
# - exits with ccci's exit code, with its traps cleared first so a green run stays green under
#   `set -e`.
# Drone shows every non-zero exit as a failed step; a PR bridge should read the code (or
# results.json's `outcome`): 1 is the recipe's failure, 69 (`infra`) means CI could not test it
# (dockerd, the forge, the disk, abra; post "CI could not test this", not red), 75 a lock wait
# that timed out, 130/142/143 a cancel or the deadline (docs/exit-codes.md).
# Drone passes RECIPE REF PR SRC STAGES CCCI_QUICK as environment; ccci reads them itself.
# The ccci program is $CCCI_BIN, else `ccci` on PATH. Works under dash and bash, and inlined into a
# `sh -e` step script as well.

# No job control: a background job must stay in this shell's process group, so that it is not a
# group leader and setsid(1) calls setsid() in place instead of forking (a fork would make ccci's
# parent a short-lived setsid process).
set +m 2>/dev/null || :

ccci_bin=${CCCI_BIN:-ccci}
if ! command -v "$ccci_bin" >/dev/null 2>&1; then
	echo "drone-step.sh: ccci not found: set CCCI_BIN or put ccci on PATH" >&2
	exit 127
fi

ccci_pid=
ccci_caught=
ccci_pending=

# Forwards a signal to ccci's process group (ccci leads it after setsid). Until setsid() has run
# the group does not exist yet: then the pid alone. `kill -s SIG -- -PGID` is the form dash takes.
ccci_forward() { # SIGNAL
	ccci_caught=1
	if [ -z "$ccci_pid" ]; then
		ccci_pending=$1
		return 0
	fi
	kill -s "$1" -- "-$ccci_pid" 2>/dev/null || kill -s "$1" "$ccci_pid" 2>/dev/null || :
}
trap 'ccci_forward TERM' TERM
trap 'ccci_forward HUP' HUP
trap 'ccci_forward INT' INT

CCCI_EXPECT_PPID=$$ setsid "$ccci_bin" run "$@" &
ccci_pid=$!
if [ -n "$ccci_pending" ]; then
	ccci_forward "$ccci_pending"
fi

# `wait` returns early (status > 128) when a trapped signal arrives while ccci still runs: wait
# again. Both dash and bash hand out a finished job's status again on a repeated `wait`, so a
# signal that lands just after ccci exited costs nothing.
ccci_status=
while :; do
	ccci_caught=
	ccci_st=0
	wait "$ccci_pid" || ccci_st=$?
	if [ "$ccci_st" -eq 127 ] && [ -n "$ccci_status" ]; then
		break # the job was already collected: the previous status was ccci's own
	fi
	ccci_status=$ccci_st
	[ -n "$ccci_caught" ] || break
done

trap - TERM HUP INT EXIT
exit "$ccci_status"
