#!/usr/bin/env bash
# ccci's reads of dockerd: the Engine API (CCCI_DOCKER_READS=api, the default) next to the docker
# CLI path it replaced (CCCI_DOCKER_READS=cli), side by side in one run (issue 17). Prints
# figures (median and p99, nearest rank); asserts nothing.
#
#   ci/bench-reads.sh [RUNS]     (default 3 green runs per path; CCCI_BIN to skip the build)
#
# (1) Green five-stage runs of the fixture `hello` recipe on the real swarm (the demo), the two
#     paths alternating: ccci's own CPU (`self_cpu_ms`, RUSAGE_SELF: children excluded), the
#     docker processes ccci itself spawned (counted by a CCCI_DOCKER wrapper that logs each
#     call; abra's own docker calls are not ccci's), the readiness detection lag (from dockerd's
#     event timestamps: the last event of the stack before ccci logged `is ready`, for each wait
#     that started before the swarm converged; recorded by a `docker events` listener of this
#     script, so both paths are measured the same way), and the run's wall time.
# (2) A janitor sweep over BENCH_LIVE live run apps (locks held by real processes) and
#     BENCH_STALE stale lockfiles, discovery answered by stubs on both paths (the API path: a
#     stub Engine API on a unix socket; the CLI path: a stub docker program; abra: a stub
#     program), every probe real — next to the bare floor measured in the same run: a C loop that
#     only probes and unlinks the same lockfiles (open O_NOFOLLOW, flock LOCK_NB, identity
#     check, unlink).
#
# Env: BENCH_SWEEPS=7 BENCH_LIVE=1000 BENCH_STALE=10000 BENCH_SKIP_RUNS=1 BENCH_SKIP_SWEEP=1
#      BENCH_KEEP=1 (keep the work dir: run dirs, docker-calls.log, the recorded events)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=${1:-3}
if [ -z "${CCCI_BIN:-}" ]; then
  (cd "$root" && cargo build --release --quiet)
  CCCI_BIN=${CARGO_TARGET_DIR:-$root/target}/release/ccci
fi
command -v python3 >/dev/null || { echo "bench-reads: needs python3" >&2; exit 1; }
command -v cc >/dev/null || { echo "bench-reads: needs a C compiler (cc) for the floor" >&2; exit 1; }
work=$(mktemp -d /tmp/ccci-bench-reads.XXXXXX)
events_pid=
cleanup() {
  if [ -n "$events_pid" ]; then kill "$events_pid" 2>/dev/null || true; fi
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "bench-reads: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# ---- (1) green five-stage runs, both paths ------------------------------------------------------
if [ "${BENCH_SKIP_RUNS:-0}" != 1 ]; then
  mkdir -p "$work"/{abra/servers/default,runs,lock,recipes,tests/hello,bin,events}
  "$root/fixtures/make-catalogue.sh" "$work/abra/catalogue"
  "$root/fixtures/recipes/make-repo.sh" hello "$work/recipes/hello"
  cat >"$work/bin/abra" <<EOT
#!/bin/sh
export FIXTURE_RECIPES="$work/recipes"
exec "$root/fixtures/abra" "\$@"
EOT
  # ccci's own docker processes, one line each (ccci passes no unknown variable to children, so
  # the log path is fixed; runs are sequential).
  cat >"$work/bin/docker" <<EOT
#!/bin/sh
echo "\$*" >>"$work/docker-calls.log"
exec docker "\$@"
EOT
  chmod +x "$work/bin/abra" "$work/bin/docker"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf 'extra_env: { HTTP_PORT: "%s" }\ntimeouts: { deploy: 120 }\n' "$port" >"$work/tests/hello/ccci.yml"
  printf '#!/bin/sh\ncurl -fsS http://127.0.0.1:%s/ >/dev/null\n' "$port" >"$work/tests/hello/test_http"
  chmod +x "$work/tests/hello/test_http"
  for path in api cli; do
    cat >"$work/ccci-$path.env" <<EOT
CCCI_ABRA=$work/bin/abra
CCCI_DOCKER=$work/bin/docker
CCCI_DOCKER_READS=$path
CCCI_ABRA_HOME=$work/abra
CCCI_RUNS_DIR=$work/runs
CCCI_APP_LOCK_DIR=$work/lock
CCCI_TESTS_DIR=$work/tests
CCCI_DOMAIN_SUFFIX=bench.ccci.test
CCCI_HEALTH_URL=http://127.0.0.1:$port/
EOT
  done
  for i in $(seq 1 "$runs"); do
    for path in api cli; do
      id="$path-$i"
      : >"$work/docker-calls.log"
      docker events --format '{{json .}}' >"$work/events/$id.jsonl" &
      events_pid=$!
      sleep 0.3
      env -i PATH="$PATH" HOME="$work" LANG=C.UTF-8 CCCI_CONFIG="$work/ccci-$path.env" CCCI_RUN_ID="$id" \
        "$CCCI_BIN" run --recipe hello >/dev/null 2>&1 || { echo "bench-reads: run $id failed (see $work/runs/$id/run.log)" >&2; exit 1; }
      sleep 0.3
      kill "$events_pid"; wait "$events_pid" 2>/dev/null || true; events_pid=
      cp "$work/docker-calls.log" "$work/runs/$id/docker-calls.log"
    done
  done
  PYTHONPATH="$root/ci" python3 - "$work" "$runs" <<'PY'
import datetime, json, os, re, sys
work, runs = sys.argv[1], int(sys.argv[2])

from benchlib import hold_locks, med, pct

def ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()

CONTAINER = {"create", "start", "die", "destroy", "kill", "stop", "health_status"}
SERVICE = {"create", "update", "remove"}
fig = {}
for path in ("api", "cli"):
    cpu, spawns, wall, lags, kinds = [], [], [], [], {}
    for i in range(1, runs + 1):
        d = os.path.join(work, "runs", f"{path}-{i}")
        r = json.load(open(os.path.join(d, "results.json")))
        assert r["outcome"] == "pass", (path, i, r["outcome"])
        cpu.append(r["self_cpu_ms"])
        wall.append(r["duration_ms"])
        calls = [l.split()[:2] for l in open(os.path.join(d, "docker-calls.log")) if l.strip()]
        spawns.append(len(calls))
        for c in calls:
            k = " ".join(c)
            kinds[k] = kinds.get(k, 0) + 1
        log = open(os.path.join(d, "run.log")).read().splitlines()
        stack = next(re.search(r"\(stack (\S+)\)", l).group(1) for l in log if "(stack " in l)
        evs = []
        for line in open(os.path.join(work, "events", f"{path}-{i}.jsonl")):
            e = json.loads(line)
            t = e.get("timeNano", 0) / 1e9
            typ, act, attrs = e.get("Type"), e.get("Action", ""), (e.get("Actor") or {}).get("Attributes") or {}
            verb = act.split(":")[0].strip()
            if typ == "container" and verb in CONTAINER and attrs.get("com.docker.stack.namespace") == stack:
                evs.append((t, f"container {act}"))
            elif typ == "service" and verb in SERVICE and attrs.get("name", "").startswith(stack + "_"):
                evs.append((t, f"service {act}"))
        evs.sort()
        start = None
        for l in log:
            m = re.match(r"(\S+)\s+\S+\s+(.*)$", l)
            if not m:
                continue
            t, msg = ts(m.group(1)), m.group(2)
            if msg.startswith(f"waiting until {stack} is ready"):
                start = t
            elif " is ready (after " in msg and start is not None:
                before = [e for e in evs if e[0] <= t + 0.0005]
                if before and before[-1][0] >= start:
                    lags.append((t - before[-1][0]) * 1000)
                start = None
    fig[path] = dict(cpu=cpu, spawns=spawns, wall=wall, lags=lags, kinds=kinds)

def row(name, xs, target, unit="ms"):
    a, c = fig["api"][xs], fig["cli"][xs]
    print(f"{name:<46} {med(a):>9.0f} {pct(a, 99):>9.0f} {med(c):>9.0f} {pct(c, 99):>9.0f}  {target}")

print(f"1. green five-stage hello runs on the real swarm ({runs} per path, alternating)")
print(f"{'figure':<46} {'api med':>9} {'api p99':>9} {'cli med':>9} {'cli p99':>9}  target")
row("self_cpu_ms of the run (ms)", "cpu", "<= 20 ms")
row("docker processes ccci spawned per run", "spawns", "<= 10")
row(f"readiness detection lag (ms; n={len(fig['api']['lags'])}/{len(fig['cli']['lags'])})", "lags", "p99 <= 50 ms")
row("wall time of the run (ms)", "wall", "drops by the polling slack")
for path in ("api", "cli"):
    k = fig[path]["kinds"]
    print(f"  docker processes by kind, {path} path, all runs: " + ", ".join(f"{n}x {c}" for c, n in sorted(k.items(), key=lambda x: -x[1])))
PY
fi

# ---- (2) the janitor sweep, both paths, and the floor --------------------------------------------
if [ "${BENCH_SKIP_SWEEP:-0}" != 1 ]; then
  cat >"$work/floor.c" <<'C'
/* The floor of a sweep: probe and unlink every lockfile of a dir, nothing else. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    DIR *d = opendir(argv[1]);
    int dfd = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        int fd = openat(dfd, e->d_name, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) continue;
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            struct stat x, y;
            if (fstat(fd, &x) == 0 && fstatat(dfd, e->d_name, &y, AT_SYMLINK_NOFOLLOW) == 0 &&
                x.st_dev == y.st_dev && x.st_ino == y.st_ino)
                unlinkat(dfd, e->d_name, 0);
        }
        close(fd);
    }
    closedir(d);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.3f\n", (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6);
    return 0;
}
C
  cc -O2 -o "$work/floor" "$work/floor.c"
  PYTHONPATH="$root/ci" python3 - "$CCCI_BIN" "$work" "${BENCH_SWEEPS:-7}" "${BENCH_LIVE:-1000}" "${BENCH_STALE:-10000}" <<'PY'
import http.server, json, os, resource, shutil, socketserver, subprocess, sys, threading, time
ccci, work, sweeps, live, stale = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])

from benchlib import hold_locks, med, pct

tmpfs = os.environ.get("BENCH_TMPFS") or next((d for d in ("/dev/shm", "/run/lock") if os.access(d, os.W_OK)), work)
base = os.path.join(tmpfs, "ccci-bench-reads-" + os.path.basename(work))
os.makedirs(base)
fstype = subprocess.run(["stat", "-f", "-c", "%T", base], capture_output=True, text=True).stdout.strip()
suffix = "bench.test"
live_domains = [f"live-{i:06x}.{suffix}" for i in range(live)]
stale_domains = [f"old-{i:06x}.{suffix}" for i in range(stale)]
stacks = [x.replace(".", "_") for x in live_domains]
lock_dir, runs, home, bindir = (os.path.join(base, x) for x in ("lock", "runs", "abra", "bin"))
for x in (lock_dir, runs, os.path.join(home, "servers", "default"), bindir):
    os.makedirs(x)
with open(os.path.join(base, "apps.json"), "w") as f:
    json.dump({"default": {"apps": [{"appName": x, "domain": x, "recipe": "hello", "server": "default"} for x in live_domains]}}, f)
with open(os.path.join(base, "stacks.txt"), "w") as f:
    f.write("".join(s + "\n" for s in stacks))
for name, body in (("abra", f'case "$*" in *"app ls"*) cat "{base}/apps.json";; *) echo "stub abra";; esac\n'),
                   ("docker", f'[ "$1 $2" = "volume ls" ] && cat "{base}/stacks.txt"\nexit 0\n')):
    with open(os.path.join(bindir, name), "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(os.path.join(bindir, name), 0o755)

# A stub Engine API: the same stacks as the stub CLI, as labelled volumes; every other list empty.
VOLUMES = json.dumps({"Volumes": [{"Name": s + "_data", "Driver": "local", "Mountpoint": "/x", "Scope": "local",
                                    "Options": {}, "Labels": {"com.docker.stack.namespace": s}} for s in stacks],
                      "Warnings": []}).encode()
VERSION = json.dumps({"Version": "20.10.24", "ApiVersion": "1.41", "MinAPIVersion": "1.12", "Os": "linux", "Arch": "amd64"}).encode()
class Api(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        p = self.path.split("?")[0]
        body = VERSION if p.endswith("/version") else VOLUMES if p.endswith("/volumes") else b"[]"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
    def address_string(self):
        return "stub"
class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
sock = os.path.join(base, "docker.sock")
srv = Server(sock, Api)
threading.Thread(target=srv.serve_forever, daemon=True).start()

lock_paths = [os.path.join(lock_dir, f"cc-ci-app-{x}.lock") for x in live_domains]
holders = hold_locks(lock_paths)
common = {"PATH": os.environ["PATH"], "CCCI_CONFIG": "/dev/null", "CCCI_ABRA": os.path.join(bindir, "abra"),
          "CCCI_DOCKER": os.path.join(bindir, "docker"), "CCCI_ABRA_HOME": home, "CCCI_RUNS_DIR": runs,
          "CCCI_APP_LOCK_DIR": lock_dir, "CCCI_DOMAIN_SUFFIX": suffix, "CCCI_LOG": "warn"}
envs = {"api": dict(common, CCCI_DOCKER_READS="api", DOCKER_HOST="unix://" + sock),
        "cli": dict(common, CCCI_DOCKER_READS="cli")}
def fill():
    for x in stale_domains:
        open(os.path.join(lock_dir, f"cc-ci-app-{x}.lock"), "w").close()
out = {k: ([], []) for k in envs}
floor = []
for _ in range(sweeps):
    for path, env in envs.items():
        fill()
        t = time.perf_counter()
        o = subprocess.run([ccci, "janitor", "--json"], env=env, capture_output=True)
        wall = (time.perf_counter() - t) * 1000
        rep = json.loads(o.stdout)
        left = sum(1 for a in rep["apps"] if a["action"] == "left")
        unlinked = sum(1 for l in rep["lockfiles"] if l["action"] == "unlinked")
        if o.returncode != 0 or left != live or unlinked != stale or rep["discovery"]["docker"]["listed"] != live:
            raise SystemExit(f"sweep ({path}): exit {o.returncode}, left {left}/{live}, unlinked {unlinked}/{stale}, docker listed {rep['discovery']['docker']['listed']}\n{o.stderr.decode()}")
        out[path][0].append(rep["duration_ms"])
        out[path][1].append(wall)
    fill()
    floor.append(float(subprocess.run([os.path.join(work, "floor"), lock_dir], capture_output=True, text=True, check=True).stdout))
for h in holders:
    h.stdin.close()
    h.wait()
srv.shutdown()
shutil.rmtree(base)
print()
print(f"2. janitor sweep: {live} live run apps + {stale} stale lockfiles ({sweeps} sweeps per path; lock dir on {fstype})")
print(f"{'figure':<46} {'api med':>9} {'api p99':>9} {'cli med':>9} {'cli p99':>9}  target")
a, c = out["api"], out["cli"]
print(f"{'sweep, duration_ms of the report':<46} {med(a[0]):>9.0f} {pct(a[0], 99):>9.0f} {med(c[0]):>9.0f} {pct(c[0], 99):>9.0f}  <= 60 ms")
print(f"{'janitor process, wall (start, sweep, JSON)':<46} {med(a[1]):>9.0f} {pct(a[1], 99):>9.0f} {med(c[1]):>9.0f} {pct(c[1], 99):>9.0f}")
print(f"{'floor: C loop, probe + unlink only':<46} {med(floor):>9.1f} {pct(floor, 99):>9.1f}  (the same lockfiles, same run)")
PY
fi
