#!/usr/bin/env bash
# Make sure a local single-node Docker Swarm (and the fixture image) is
# available for the ccci tests, and undo exactly what was done.
#
# Usage: ci/swarm.sh up|down|status
#   up      start dockerd if unreachable, init the swarm if not active,
#           build the fixture image; records what it started
#   down    undo only what `up` recorded (leave the swarm, stop that dockerd)
#   status  print dockerd reachability and swarm state
#           (exit 0 when dockerd is reachable and the swarm active, else 1)
#
# Environment:
#   CCCI_DOCKERD_LOG     dockerd log when started here (/tmp/ccci-dockerd.log)
#   CCCI_SWARM_RECORD    record of what `up` did (/tmp/ccci-swarm.started)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
record=${CCCI_SWARM_RECORD:-/tmp/ccci-swarm.started}
dockerd_log=${CCCI_DOCKERD_LOG:-/tmp/ccci-dockerd.log}

say() { printf 'swarm: %s\n' "$*"; }
die() {
	printf 'swarm: error: %s\n' "$*" >&2
	exit 1
}

reachable() { docker info >/dev/null 2>&1; }
swarm_state() { docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown; }

# The record holds one line per action: "dockerd <pid>" and/or "swarm".
recorded_dockerd() { [ -f "$record" ] && awk '$1 == "dockerd" { print $2 }' "$record" | tail -n 1; }
recorded_swarm() { [ -f "$record" ] && grep -qx swarm "$record"; }

# Is PID still the dockerd we started (guards against PID reuse)?
is_our_dockerd() {
	[ -n "$1" ] && [ -r "/proc/$1/comm" ] && [ "$(cat "/proc/$1/comm")" = dockerd ]
}

stop_dockerd() { # PID
	local pid=$1
	is_our_dockerd "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null || true
	# Not our child (started by an earlier invocation): poll instead of wait.
	for _ in $(seq 1 300); do
		is_our_dockerd "$pid" || return 0
		sleep 0.1
	done
	say "dockerd $pid ignored TERM for 30s, killing it"
	kill -KILL "$pid" 2>/dev/null || true
	for _ in $(seq 1 50); do
		is_our_dockerd "$pid" || return 0
		sleep 0.1
	done
	die "dockerd $pid does not go away"
}

cmd_up() {
	if reachable; then
		say "dockerd already reachable"
	else
		command -v dockerd >/dev/null || die "docker is not reachable and dockerd is not installed"
		# A session of its own: dockerd outlives the caller's process group (a CI step or a
		# tool that kills its job's group when the command returns would take dockerd with it,
		# SIGKILLed, with no line in its log). In a script the background child leads no group,
		# so setsid(1) calls setsid() itself and execs: $! stays dockerd's pid.
		setsid dockerd >"$dockerd_log" 2>&1 </dev/null &
		local pid=$! ok=
		echo "dockerd $pid" >>"$record"
		say "started dockerd (pid $pid, log $dockerd_log)"
		for _ in $(seq 1 120); do
			if reachable; then ok=1; break; fi
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.5
		done
		if [ -z "$ok" ]; then
			if kill -0 "$pid" 2>/dev/null; then
				printf 'swarm: error: dockerd did not become reachable within 60s; last log lines:\n' >&2
			else
				printf 'swarm: error: dockerd exited during start-up; last log lines:\n' >&2
			fi
			tail -n 20 "$dockerd_log" >&2 || true
			stop_dockerd "$pid"
			sed -i "/^dockerd $pid\$/d" "$record"
			[ -s "$record" ] || rm -f "$record"
			exit 1
		fi
		say "dockerd is reachable"
	fi

	local state
	state=$(swarm_state)
	if [ "$state" = active ]; then
		say "swarm already active"
	else
		docker swarm init --advertise-addr 127.0.0.1 >/dev/null ||
			die "docker swarm init failed (node state was '$state')"
		echo swarm >>"$record"
		say "initialised swarm (node state was '$state')"
	fi

	local tag
	tag=$("$root/fixtures/image/build.sh") || die "building the fixture image failed"
	say "image $tag ready"
}

cmd_down() {
	if [ ! -f "$record" ]; then
		say "nothing recorded by 'up'; nothing to undo"
		return 0
	fi
	if recorded_swarm; then
		if [ "$(swarm_state)" = active ]; then
			docker swarm leave --force >/dev/null || die "docker swarm leave failed"
			say "left the swarm"
		else
			say "swarm already inactive"
		fi
	fi
	local pid
	pid=$(recorded_dockerd || true)
	if [ -n "$pid" ]; then
		if is_our_dockerd "$pid"; then
			stop_dockerd "$pid"
			say "stopped dockerd (pid $pid)"
		else
			say "dockerd $pid no longer running"
		fi
	fi
	rm -f "$record"
}

cmd_status() {
	local rc=0
	if reachable; then
		say "dockerd: reachable (server $(docker info --format '{{.ServerVersion}}' 2>/dev/null))"
		local state
		state=$(swarm_state)
		say "swarm: $state"
		[ "$state" = active ] || rc=1
	else
		say "dockerd: not reachable"
		say "swarm: unknown"
		rc=1
	fi
	if [ -f "$record" ]; then
		say "recorded by up: $(tr '\n' ' ' <"$record")"
	fi
	return "$rc"
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*)
	echo "usage: $0 up|down|status" >&2
	exit 2
	;;
esac
