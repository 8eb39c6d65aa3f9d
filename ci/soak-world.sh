# shellcheck shell=bash
# The soak's world (sourced by ci/soak.sh): process and docker helpers, the cleanup, the domain
# keys with their recipes and tests, and the abra/docker wrappers and host config files that
# every run and janitor of the soak uses.
# shellcheck disable=SC2154,SC2034 # root, work, tag, suffix, ns, ... are set, and the keys (K_*) used, by ci/soak.sh

now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
ms_sleep() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }
proc_state() { # PID -> the state letter, or nothing when gone
	local s
	s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
	s=${s##*) }
	printf '%s' "${s%% *}"
}
alive() { local s; s=$(proc_state "$1"); [ -n "$s" ] && [ "$s" != Z ] && [ "$s" != X ]; }

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
	local kind i
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

# On every exit: stop the drivers, janitors and the watch; let runs still alive tear down (their
# parents are gone or going: PDEATHSIG), kill what is left, remove every docker object of the
# soak's namespace and the world (unless SOAK_KEEP=1).
cleanup() {
	[ -z "$cleaned" ] || return 0
	cleaned=1
	trap - INT TERM HUP
	touch "$work/stop" 2>/dev/null
	local p left i
	for p in "${driver_pids[@]}" "${jan_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
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

# Domain keys: one recipe name per key, so every domain gets its own host port (host-mode
# published ports collide between parallel apps). Key k = (recipe, pr, ref) -> one domain. The
# last key (recipe `hardlink`) is reserved for the `hardlink` fault: no other run uses its domain.
make_keys() {
	local k j kind recipe pr ref h p port
	mapfile -t ports < <(python3 "$root/ci/soak_check.py" ports "$nkeys")
	"$root/fixtures/recipes/make-repo.sh" hello "$work/recipes/hello" >/dev/null || return 1
	"$root/fixtures/recipes/make-repo.sh" sick "$work/recipes/sick" >/dev/null || return 1
	for ((k = 0; k < nkeys; k++)); do
		if [ "$k" -eq "$key_hardlink" ]; then
			kind=hello j=0 recipe=hardlink
		elif [ "$k" -lt "$keys_hello" ]; then
			kind=hello j=$k recipe=hello
		else
			kind=sick j=$((k - keys_hello)) recipe=sick
		fi
		[ "$j" -eq 0 ] || recipe=$kind$j
		# A copy under another name declares that name (TYPE), as a real recipe does.
		[ -d "$work/recipes/$recipe" ] ||
			"$root/fixtures/recipes/make-repo.sh" "$kind" "$work/recipes/$recipe" "$recipe" >/dev/null || return 1
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
			cat >"$work/tests/$recipe/ccci.yml" <<-EOT
				extra_env: { HTTP_PORT: "$port" }
				timeouts: { deploy: 90, http: 20, test: 30 }
				health: { url: "http://127.0.0.1:$port/" }
			EOT
			cat >"$work/tests/$recipe/test_http" <<-EOT
				#!/bin/sh
				# The app serves its greeting; then linger a moment (a window for faults inside a test).
				curl -fsS "http://127.0.0.1:$port/" | grep -q '^hello ' || exit 1
				sleep 1
			EOT
			chmod +x "$work/tests/$recipe/test_http"
		else
			cat >"$work/tests/$recipe/ccci.yml" <<-EOT
				extra_env: { HTTP_PORT: "$port" }
				timeouts: { deploy: 20, http: 5 }
				health: { url: "http://127.0.0.1:$port/" }
			EOT
		fi
	done
}

# The abra the runs and janitors use: the fixture, with per-run misbehaviours read from
# modes/<run id> (and modes/<run id>.teardown, applied only to the run's own teardown calls,
# never to a janitor's), an event log per run, and one timestamped line per call in
# logs/calls.log. The docker they use is the real one; removals are logged the same way, so the
# checker can prove that nothing was removed under a live holder. The caller is the run id, or
# for a janitor its role (each role has a host file whose CCCI_ABRA/CCCI_DOCKER name wrappers
# that say who they are).
make_wrappers() {
	local role
	cat >"$work/bin/abra" <<-EOT
		#!/bin/sh
		W='$work'
		id=\${CCCI_RUN_ID:-\${SOAK_CALLER:-janitor}}
		mode=
		[ ! -f "\$W/modes/\$id" ] || mode=\$(cat "\$W/modes/\$id")
		if [ "\${CCCI_STAGE:-}" = teardown ] && [ -f "\$W/modes/\$id.teardown" ]; then
			mode="\${mode:+\$mode,}\$(cat "\$W/modes/\$id.teardown")"
		fi
		printf '%s %s %s abra %s\n' "\$(date +%s.%N)" "\$id" "\${CCCI_STAGE:--}" "\$*" >>"\$W/logs/calls.log"
		export FIXTURE_RECIPES="\$W/recipes" FIXTURE_ABRA_LOG="\$W/logs/abra-\$id.log" FIXTURE_ABRA_MODE="\$mode"
		exec '$root/fixtures/abra' "\$@"
	EOT
	cat >"$work/bin/docker" <<-EOT
		#!/bin/sh
		case "\$1 \${2:-}" in
		"stack rm" | "service rm" | "volume rm" | "secret rm" | "config rm" | "network rm" | "container rm" | "rm "*)
			printf '%s %s %s docker %s\n' "\$(date +%s.%N)" "\${CCCI_RUN_ID:-\${SOAK_CALLER:-janitor}}" "\${CCCI_STAGE:--}" "\$*" >>'$work/logs/calls.log'
			;;
		esac
		exec '$real_docker' "\$@"
	EOT
	chmod +x "$work/bin/abra" "$work/bin/docker"
	# Host settings live in a host config file, as on a real host (`ccci run` refuses host
	# settings from the environment that disagree with it). CCCI_MAX_DEADLINE is the cap the
	# `dlcap` fault exceeds.
	cat >"$work/ccci.env" <<-EOT
		CCCI_ABRA=$work/bin/abra
		CCCI_DOCKER=$work/bin/docker
		CCCI_ABRA_HOME=$work/abra
		CCCI_RUNS_DIR=$work/runs
		CCCI_APP_LOCK_DIR=$work/lock
		CCCI_TESTS_DIR=$work/tests
		CCCI_SECRETS_DIR=$work/secrets
		CCCI_DOMAIN_SUFFIX=$suffix
		CCCI_KILL_GRACE=1
		CCCI_MAX_DEADLINE=$max_deadline
	EOT
	for role in jan1 jan2 watch final; do
		mkdir -p "$work/bin/$role"
		for prog in abra docker; do
			printf '#!/bin/sh\nexport SOAK_CALLER=%s\nexec %q "$@"\n' "$role" "$work/bin/$prog" >"$work/bin/$role/$prog"
			chmod +x "$work/bin/$role/$prog"
		done
		sed "s|^CCCI_ABRA=.*|CCCI_ABRA=$work/bin/$role/abra|; s|^CCCI_DOCKER=.*|CCCI_DOCKER=$work/bin/$role/docker|" \
			"$work/ccci.env" >"$work/host-$role.env"
	done
}
