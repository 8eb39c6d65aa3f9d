#!/usr/bin/env bash
# Runs every test of ccci on a fresh Debian machine: installs what is missing (docker.io,
# busybox-static, git, curl, shellcheck, etcd-server, …), brings up a local single-node swarm when absent,
# runs shellcheck over the scripts, fmt, clippy, `cargo test` for all targets, the fixture
# self-test and the chaos soak, and stops what it started.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v git >/dev/null 2>&1 || need+=(git)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v flock >/dev/null 2>&1 || need+=(util-linux)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v dash >/dev/null 2>&1 || need+=(dash)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v nix-instantiate >/dev/null 2>&1 || need+=(nix-bin)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v xmllint >/dev/null 2>&1 || need+=(libxml2-utils)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
# The cross-host app lease's tests run a 3-member etcd cluster on loopback; the partition test
# puts a "host" in a network namespace (iproute2).
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  echo "test.sh: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "test.sh: shellcheck over ci/ and fixtures/"
scripts=()
while IFS= read -r -d '' f; do
  case $f in
  *.sh) scripts+=("$f") ;;
  *) head -n 1 "$f" | grep -qE '^#!.*[/ ](ba|da)?sh$' && scripts+=("$f") ;;
  esac
done < <(find ci fixtures -type f -print0 | sort -z)
shellcheck -x "${scripts[@]}"

ci/swarm.sh up
trap 'ci/swarm.sh down || true' EXIT

echo "test.sh: cargo fmt --check"
cargo fmt --all -- --check
echo "test.sh: cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "test.sh: cargo test --all-targets"
log=$(mktemp)
cargo test --all-targets -- --test-threads="${CCCI_TEST_THREADS:-4}" 2>&1 | tee "$log"
# The real-kernel suite must have been built and run, not silently dropped.
grep -q "concurrency_suite_is_compiled ... ok" "$log" || { echo "test.sh: the concurrency suite did not run" >&2; exit 1; }
rm -f "$log"

# The fixture abra against the swarm on its own (life cycle, backup/restore under a terminal,
# upgrade, misbehaviour modes): when the stand-in drifts, this says so before ccci's tests do.
echo "test.sh: fixtures/selftest.sh"
fixtures/selftest.sh

echo "test.sh: chaos soak (ci/soak.sh 40, with the binary cargo test built)"
CCCI_BIN="${CARGO_TARGET_DIR:-target}/debug/ccci" ci/soak.sh 40
