#!/usr/bin/env python3
"""Lock and janitor figures of SPEC §11, printed and never asserted:

1. lock handoff latency between processes (holder exits -> waiter holds), median and p99: ccci's
   own acquire (`ccci lock-wait`), util-linux flock(1) waiting on the same file, and a 10 ms ->
   500 ms jittered polling loop;
2. a janitor sweep over N live run apps (locks held by real processes) and 10 x N stale
   lockfiles, discovery answered by stub abra/docker programs, probes real; N = 10, 100, 1000
   (1,000 live + 10,000 stale is the §11 target), next to a plain Python probe loop over the same
   lockfiles.

Usage: ci/bench_locks.py            (builds a release ccci unless CCCI points at one)
Env:   CCCI=path/to/ccci  BENCH_HANDOFFS=50  BENCH_SWEEPS=7  BENCH_SIZES="100 1000 10000"  BENCH_TMPFS=dir
"""

import atexit
import fcntl
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import FLOCK_HOLDER as HOLDER, ROOT as root, ccci_binary, hold_locks, pct

ccci = ccci_binary()
if not shutil.which("flock"):
    sys.exit("bench-locks: needs flock(1) from util-linux")
handoffs = int(os.environ.get("BENCH_HANDOFFS", "50"))
sweeps = int(os.environ.get("BENCH_SWEEPS", "7"))
sizes = [int(s) for s in os.environ.get("BENCH_SIZES", "100 1000 10000").split()]
version = subprocess.run([ccci, "--version"], capture_output=True, text=True, check=True).stdout.strip()
print(f"ccci: {version}   host: {platform.system()} {platform.release()}, {len(os.sched_getaffinity(0))} cpu(s)")
print()
work = tempfile.mkdtemp(prefix="ccci-bench-locks.", dir="/tmp")
atexit.register(shutil.rmtree, work, True)


def row(name, xs, unit="ms"):
    print(f"  {name:<44} median {statistics.median(xs):9.3f} {unit}   p99 {pct(xs, 99):9.3f} {unit}   (n={len(xs)})")

# ---- 1. handoff latency ------------------------------------------------------------------
path = os.path.join(work, "handoff.lock")

def blocked_waiter():
    st = os.stat(path)
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as f:
        return any(len(l.split()) > 6 and l.split()[1] == "->" and l.split()[6] == ident for l in f)


def holder():
    """A small bash holder: it takes the lock, waits for 'go', stamps the time and exits (its
    exit releases the lock). Small, so its own exit costs little."""
    h = subprocess.Popen(["bash", "-c", HOLDER, "_", path], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert h.stdout.readline().strip() == b"h"
    return h

POLL = r'''
import fcntl, os, random, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
delay = 0.010
while True:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
    except BlockingIOError:
        time.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(0.5, delay * 2)
print(time.time_ns(), flush=True)
'''
FLOCK1 = 'exec 9<>"$1"; flock 9; t=${EPOCHREALTIME/./}; echo "${t}000"'
FLOCK2 = 'import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDWR)\nfcntl.flock(fd, fcntl.LOCK_EX)\nprint(time.time_ns(), flush=True)'

def handoff(cmd, blocks):
    h = holder()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    if blocks:
        end = time.time() + 10
        while not blocked_waiter():
            if time.time() > end:
                raise SystemExit(f"waiter {cmd[0]} never blocked")
            time.sleep(0.001)
        time.sleep(0.02)
    else:
        time.sleep(random.uniform(0.2, 1.2))
    h.stdin.write(b"go\n")
    h.stdin.flush()
    released = int(h.stdout.readline())
    h.wait()
    out = p.stdout.read().split()
    p.wait()
    return (int(out[-1]) - released) / 1e6

have_lock_wait = subprocess.run([ccci, "lock-wait", "--help"], capture_output=True).returncode == 0
print(f"1. lock handoff latency, holder exits -> waiter holds ({handoffs} handoffs each)")
if have_lock_wait:
    row("ccci acquire (event-driven wait, own thread)", [handoff([ccci, "lock-wait", path], True) for _ in range(handoffs)])
else:
    print("  ccci acquire: this build has no hidden `lock-wait` subcommand; skipped")
row("blocking flock(2) (python, in its main thread)", [handoff([sys.executable, "-c", FLOCK2, path], True) for _ in range(handoffs)])
row("util-linux flock(1), blocking", [handoff(["bash", "-c", FLOCK1, "_", path], True) for _ in range(handoffs)])
row("polling loop, 10 ms -> 500 ms jittered backoff", [handoff([sys.executable, "-c", POLL, path], False) for _ in range(handoffs)])
print()

# ---- 2. janitor sweep ----------------------------------------------------------------------

def python_probe_loop(lock_dir):
    """The reference: the same probe in plain Python (open, LOCK_NB, identity check, unlink)."""
    t = time.perf_counter()
    for name in os.listdir(lock_dir):
        p = os.path.join(lock_dir, name)
        try:
            fd = os.open(p, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            a, b = os.fstat(fd), os.lstat(p)
            if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
                os.unlink(p)
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
    return (time.perf_counter() - t) * 1000

# /run/lock is a tmpfs on real hosts: measure there too (unlinking costs twice as much on ext4).
tmpfs = os.environ.get("BENCH_TMPFS") or next((d for d in ("/dev/shm", "/run/lock") if os.access(d, os.W_OK)), work)
tmpfs = os.path.join(tmpfs, "ccci-bench-" + os.path.basename(work))
os.makedirs(tmpfs)
atexit.register(shutil.rmtree, tmpfs, True)
fstype = subprocess.run(["stat", "-f", "-c", "%T", tmpfs], capture_output=True, text=True).stdout.strip()
print("2. janitor sweep: N live run apps (locks held by real processes) + 10 x N stale lockfiles")
print(f"   lock dir on {fstype} ({tmpfs}); discovery by stub abra/docker programs; every probe real")
for stale in sizes:
    live = max(1, stale // 10)
    d = os.path.join(tmpfs, f"sweep-{stale}")
    lock_dir, runs, home, bindir = (os.path.join(d, x) for x in ("lock", "runs", "abra", "bin"))
    for x in (lock_dir, runs, os.path.join(home, "servers", "default"), bindir):
        os.makedirs(x)
    suffix = "bench.test"
    live_domains = [f"live-{i:06x}.{suffix}" for i in range(live)]
    stale_domains = [f"old-{i:06x}.{suffix}" for i in range(stale)]
    with open(os.path.join(d, "apps.json"), "w") as f:
        json.dump({"default": {"apps": [{"appName": x, "domain": x, "recipe": "hello", "server": "default"} for x in live_domains]}}, f)
    with open(os.path.join(d, "stacks.txt"), "w") as f:
        f.write("".join(x.replace(".", "_") + "\n" for x in live_domains))
    for name, body in (("abra", f'case "$*" in *"app ls"*) cat "{d}/apps.json";; *) echo "stub abra";; esac\n'),
                       ("docker", f'[ "$1 $2" = "volume ls" ] && cat "{d}/stacks.txt"\nexit 0\n')):
        with open(os.path.join(bindir, name), "w") as f:
            f.write("#!/bin/sh\n" + body)
        os.chmod(os.path.join(bindir, name), 0o755)
    lock_paths = [os.path.join(lock_dir, f"cc-ci-app-{x}.lock") for x in live_domains]
    holders = hold_locks(lock_paths)
    env = {"PATH": os.environ["PATH"], "CCCI_CONFIG": "/dev/null", "CCCI_ABRA": os.path.join(bindir, "abra"),
           "CCCI_DOCKER": os.path.join(bindir, "docker"), "CCCI_ABRA_HOME": home, "CCCI_RUNS_DIR": runs,
           "CCCI_APP_LOCK_DIR": lock_dir, "CCCI_DOMAIN_SUFFIX": suffix, "CCCI_LOG": "warn"}
    inner, wall, ref = [], [], []
    for _ in range(sweeps):
        for x in stale_domains:
            open(os.path.join(lock_dir, f"cc-ci-app-{x}.lock"), "w").close()
        t = time.perf_counter()
        o = subprocess.run([ccci, "janitor", "--json"], env=env, capture_output=True)
        wall.append((time.perf_counter() - t) * 1000)
        rep = json.loads(o.stdout)
        left = sum(1 for a in rep["apps"] if a["action"] == "left")
        unlinked = sum(1 for l in rep["lockfiles"] if l["action"] == "unlinked")
        if o.returncode != 0 or left != live or unlinked != stale:
            raise SystemExit(f"sweep {stale}: exit {o.returncode}, left {left}/{live}, unlinked {unlinked}/{stale}\n{o.stderr.decode()}")
        inner.append(rep["duration_ms"])
        for x in stale_domains:
            open(os.path.join(lock_dir, f"cc-ci-app-{x}.lock"), "w").close()
        ref.append(python_probe_loop(lock_dir))
    for h in holders:
        h.stdin.close()
        h.wait()
    print(f"  {live:>5} live + {stale:>6} stale lockfiles:")
    row("ccci janitor sweep (duration_ms)", inner)
    row("ccci janitor process, wall (incl. start, JSON)", wall)
    row("reference: plain Python probe loop, no discovery", ref)
    shutil.rmtree(d)
shutil.rmtree(tmpfs)
