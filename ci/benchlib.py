"""What ccci's benches share: the binary under test, nearest-rank statistics, and live app
locks held by real processes (the janitor sweep's "live run apps"). Imported by
ci/bench_locks.py, ci/bench_lease.py and the Python parts of ci/bench-reads.sh."""

import os
import resource
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ccci_binary():
    """$CCCI, else a release build of this checkout."""
    ccci = os.environ.get("CCCI")
    if not ccci:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        ccci = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release", "ccci")
    return ccci


def pct(xs, p):
    """The p-th percentile, nearest rank; NaN for no samples."""
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, max(0, -(-len(xs) * p // 100) - 1))]


def med(xs):
    """The lower median; NaN for no samples."""
    xs = sorted(xs)
    return xs[(len(xs) - 1) // 2] if xs else float("nan")


# A shell that takes an exclusive flock(1) on "$1", says "h", waits for a line on stdin and
# prints the moment (ns) it lets go: the holder whose release starts a handoff.
FLOCK_HOLDER = 'exec 9<>"$1"; flock 9; echo h; read -r go; t=${EPOCHREALTIME/./}; echo "${t}000"; exit 0'


# A helper process that creates, flocks and fills (holder info, as ccci writes it) each path
# it is given, says "held", and keeps the locks until its stdin closes.
_HOLD = r'''
import fcntl, os, resource, sys
s, h = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (h, h))
fds = []
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, ('{"pid":%d,"run_id":"bench","recipe":"hello","started":"now","deadline_secs":3600,"budget_secs":600}' % os.getpid()).encode())
    fds.append(fd)
print("held", flush=True)
sys.stdin.read()
'''


def hold_locks(paths, per_process=250):
    """Holds every lock in `paths` from real processes (250 each, under the fd limit); returns
    them, to be released by closing their stdin."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    holders = []
    for i in range(0, len(paths), per_process):
        h = subprocess.Popen([sys.executable, "-c", _HOLD] + paths[i:i + per_process],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert h.stdout.readline().strip() == b"held"
        holders.append(h)
    return holders
