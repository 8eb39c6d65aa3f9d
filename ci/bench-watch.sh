#!/usr/bin/env bash
# Owner SIGKILL → reap started, with `ccci janitor --watch` running (median and p99 over N
# kills), next to the timer's expected wait (half its 15-minute interval). Never asserted.
#
#   CCCI_BIN=target/release/ccci ci/bench-watch.sh [N]     (N ≥ 20; default 30)
#
# Each round: a python holder takes a run-app lockfile and writes holder info, then is
# SIGKILLed; the watch's `released` JSON line (written when its pidfd fired and it starts the
# sweep's decision) carries the time the reap started. Needs python3 and a reachable dockerd
# (the reap lists what is left of the app).
set -euo pipefail
n=${1:-30}
bin=${CCCI_BIN:-ccci}
tmp=$(mktemp -d)
watch_pid=
cleanup() {
  [ -z "$watch_pid" ] || kill -TERM "$watch_pid" 2>/dev/null || true
  [ -z "$watch_pid" ] || wait "$watch_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/lock" "$tmp/runs" "$tmp/abra/servers/default"
chmod 700 "$tmp/lock"
cat >"$tmp/env" <<CONF
CCCI_ABRA=/bin/true
CCCI_ABRA_HOME=$tmp/abra
CCCI_APP_LOCK_DIR=$tmp/lock
CCCI_RUNS_DIR=$tmp/runs
CCCI_DOMAIN_SUFFIX=bench.test
CCCI_KILL_GRACE=1
CONF
CCCI_CONFIG="$tmp/env" "$bin" -q janitor --watch --json >"$tmp/watch.jsonl" 2>"$tmp/watch.log" &
watch_pid=$!
until grep -q '"event":"sweep"' "$tmp/watch.jsonl" 2>/dev/null; do sleep 0.05; done
for i in $(seq 1 "$n"); do
  domain=$(printf 'b%03d-%06x.bench.test' "$((i % 1000))" "$i")
  lock="$tmp/lock/cc-ci-app-$domain.lock"
  python3 -c '
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b"{\"pid\":%d,\"run_id\":\"bench\",\"recipe\":\"b\",\"started\":\"\",\"deadline_secs\":60,\"budget_secs\":60}\n" % os.getpid())
print("held", flush=True)
time.sleep(600)' "$lock" >"$tmp/holder" &
  holder=$!
  until [ -s "$tmp/holder" ]; do sleep 0.01; done
  sleep 0.2 # let the watch arm its pidfd (inotify saw the holder info)
  t0=$(date +%s%N)
  kill -KILL "$holder"
  wait "$holder" 2>/dev/null || true
  until grep -q "\"event\":\"released\".*\"domain\":\"$domain\"" "$tmp/watch.jsonl"; do sleep 0.005; done
  at=$(grep "\"event\":\"released\".*\"domain\":\"$domain\"" "$tmp/watch.jsonl" | head -1 | sed 's/.*"at":"\([^"]*\)".*/\1/')
  t1=$(date -d "$at" +%s%N)
  echo $(( (t1 - t0) / 1000 )) >>"$tmp/us"
  : >"$tmp/holder"
done
sort -n "$tmp/us" >"$tmp/sorted"
count=$(wc -l <"$tmp/sorted")
med=$(sed -n "$(( (count + 1) / 2 ))p" "$tmp/sorted")
p99=$(sed -n "$(( (count * 99 + 99) / 100 ))p" "$tmp/sorted")
# The watch's timestamps have millisecond resolution: figures below 1 ms read as 0–1 ms.
printf 'janitor --watch: owner SIGKILL → reap started over %d kills: median %d.%03d ms, p99 %d.%03d ms\n' \
  "$count" $((med / 1000)) $((med % 1000)) $((p99 / 1000)) $((p99 % 1000))
echo "janitor timer (OnCalendar=*:0/15): expected wait for the next sweep 7.5 min (450000 ms), worst 15 min"
