# shellcheck shell=bash
# One run of the soak, the faults injected into it, and the janitors that race it (sourced by
# ci/soak.sh). drive() writes $work/res/<run id> (key=value lines) for ci/soak_check.py.
# shellcheck disable=SC2154 # root, work, tag, the schedule (S_*) and the keys (K_*) are set by ci/soak.sh

lock_path() { printf '%s/lock/cc-ci-app-%s.lock' "$work" "$1"; }
as_nobody() { setpriv --reuid 65534 --regid 65534 --clear-groups "$@"; }
# What another uid can do with FILE: "stat's exit:the mode it saw:cat's exit:cat's stderr". stat
# needs only search permission on the dirs above, so it tells whether the probe reached the file;
# cat must then fail (lockfiles are 0600): flock(2) needs only a read-only fd.
probe() {
	local mode s=0 c=0 e
	mode=$(as_nobody stat -c %a -- "$1" 2>/dev/null) || s=$?
	e=$(as_nobody /bin/cat -- "$1" 2>&1 >/dev/null) || c=$?
	printf '%s:%s:%s:%s' "$s" "$mode" "$c" "$(printf '%s' "$e" | tr '\n' ' ' | cut -c1-160)"
}
file_state() { # FILE -> "sha1 mtime_ns" (what the checker compares)
	local m
	m=$(stat -c %.9Y -- "$1") || return 1
	printf '%s %s' "$(sha1sum <"$1" | cut -d' ' -f1)" "${m/./}"
}
# The janitor-loop sweeps that started after the list LIST_FILE was taken and have ended.
sweeps_since() { # LIST_FILE
	local f n=0
	for f in "$work"/jan/jan[12]-*.json; do
		[ -e "$f" ] && ! grep -qxF -- "$f" "$1" && [ -e "${f%.json}.rc" ] && n=$((n + 1))
	done
	echo "$n"
}

drive() { # I
	local i=$1 id=$tag-$1 k=${S_key[$1]}
	local recipe=${K_recipe[k]} fault=${S_fault[i]} via=${S_via[i]} trig=${S_trig[i]}
	local rdir=$work/runs/$id alog=$work/logs/abra-$id.log dom=${K_domain[k]} extra=()
	local res=$work/res/$id cpid='' wpid='' waitpid t_start t_trig='' t_inject='' injected=0 rc='' t_end
	local overran=0 ccci_gone=1 leak='' c i2 serial victim lp state n kids
	[ -z "${S_mode[i]}" ] || printf '%s' "${S_mode[i]}" >"$work/modes/$id"
	[ -z "${S_tmode[i]}" ] || printf '%s' "${S_tmode[i]}" >"$work/modes/$id.teardown"
	local args=(--recipe "$recipe" --stages "${S_stages[i]}" --deadline "${S_deadline[i]}"
		--teardown-budget "${S_budget[i]}")
	[ "${K_pr[k]}" = 0 ] || args+=(--pr "${K_pr[k]}")
	[ -z "${K_ref[k]}" ] || args+=(--ref "${K_ref[k]}")
	if [ "$fault" = hardlink ]; then
		# A file of the soak hard-linked at the reserved domain's lock path, one such run at a time.
		exec {serial}>"$work/hardlink.serial"
		flock "$serial"
		victim=$work/victims/$id lp=$(lock_path "$dom")
		printf 'soak %s: a file of the soak, not a lockfile\n' "$id" >"$victim"
		touch -d @1600000000 "$victim"
		state=$(file_state "$victim")
		extra+=("victim_sum=${state% *}" "victim_mtime_ns=${state#* }")
		printf '%s\n' "$work"/jan/jan[12]-*.json >"$work/jan-before-$id"
		ln "$victim" "$lp" || echo "soak: $id: cannot plant the hard link $lp" >&2
	fi
	t_start=$(now_ms)
	if [ "$via" = direct ]; then
		env -i --default-signal "${run_env[@]}" CCCI_RUN_ID="$id" "$CCCI_BIN" run "${args[@]}" \
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
		env -i --default-signal "${run_env[@]}" CCCI_RUN_ID="$id" CCCI_BIN="$CCCI_BIN" \
			sh -e "$work/steps/$id.sh" </dev/null >/dev/null 2>"$work/err/$id" &
		wpid=$!
		waitpid=$wpid
		for ((c = 0; c < 500; c++)); do # the wrapper's child, once it has exec'd ccci
			kids=() # one line of pids without a newline: read fails at EOF yet fills kids
			read -ra kids 2>/dev/null <"/proc/$wpid/task/$wpid/children" || :
			for cpid in "${kids[@]}"; do
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
		held) grep -qs 'app lock held:' "$rdir/run.log" ;;
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
				foreign) # another uid tries to read the lockfiles of a live run
					extra+=("probe_t=$t_inject" "probe_app_path=$(lock_path "$dom")"
						"probe_app=$(probe "$(lock_path "$dom")")"
						"probe_host=$(probe "$work/lock/cc-ci-host.lock")"
						"probe_run=$(probe "$rdir/run.lock")")
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
	if [ "$fault" = hardlink ]; then
		# Keep the link until a janitor loop has swept all through it (bounded), then remove it.
		for ((c = 0; c < 300; c++)); do
			n=$(sweeps_since "$work/jan-before-$id")
			[ "$n" -eq 0 ] || break
			sleep 0.1
		done
		# Still our link? (No janitor, watch or run-start janitor may have unlinked or replaced it.)
		[ ! "$lp" -ef "$victim" ] || { extra+=(link_intact=1) && rm -f "$lp"; }
		state=$(file_state "$victim")
		extra+=("link_sweeps=$n" "victim_sum_after=${state% *}" "victim_mtime_ns_after=${state#* }")
		[ -e "$lp" ] || extra+=(link_removed=1)
		exec {serial}>&-
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
		[ ${#extra[@]} -eq 0 ] || printf '%s\n' "${extra[@]}"
	} >"$res.tmp" && mv "$res.tmp" "$res"
}

# One `ccci janitor --json` sweep under ROLE's host file; OUT.{json,err,rc} under $work/jan.
janitor() { # ROLE OUT ARGS...
	local role=$1 out=$work/jan/$2
	shift 2
	env -i --default-signal "${base_env[@]}" CCCI_CONFIG="$work/host-$role.env" "$CCCI_BIN" janitor --json "$@" \
		</dev/null >"$out.json" 2>"$out.err"
	echo $? >"$out.rc"
}
jan_loop() { # K: sweeps every 1-3 s until the stop file appears
	local k=$1 n=0 s
	RANDOM=$((seed + 1000 * k))
	while [ ! -e "$work/stop" ]; do
		n=$((n + 1))
		janitor "jan$k" "jan$k-$n" --prune-after 3650 --deadline 120
		for ((s = 10 + RANDOM % 21; s > 0; s--)); do
			[ ! -e "$work/stop" ] || break
			sleep 0.1
		done
	done
}
