#!/usr/bin/env bash
# The main job on the bundled demo recipe: builds ccci, brings up a local single-node swarm
# when absent, runs `ccci run --recipe hello` through the fixture abra (it deploys for real on
# the swarm), and shows the summary. Stops what it started; leaves the run dir for reading.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

missing=()
for pkg in docker.io busybox-static git curl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "demo: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release --quiet
ci/swarm.sh up
trap 'ci/swarm.sh down || true' EXIT

world=${CCCI_DEMO_DIR:-$(mktemp -d /tmp/ccci-demo.XXXXXX)}
mkdir -p "$world"/{abra/servers/default,runs,lock,recipes,tests/hello,bin}
[ -d "$world/abra/catalogue" ] || "$root/fixtures/make-catalogue.sh" "$world/abra/catalogue"
[ -d "$world/recipes/hello" ] || fixtures/recipes/make-repo.sh hello "$world/recipes/hello"
cat >"$world/bin/abra" <<EOT
#!/bin/sh
export FIXTURE_RECIPES="$world/recipes" FIXTURE_ABRA_LOG="$world/abra.log"
exec "$root/fixtures/abra" "\$@"
EOT
chmod +x "$world/bin/abra"
port=${CCCI_DEMO_PORT:-18080}
# Trusted customisation: the host port the demo app publishes, and one functional test.
cat >"$world/tests/hello/ccci.yml" <<EOT
extra_env: { HTTP_PORT: "$port" }
timeouts: { deploy: 120, http: 60 }
EOT
cat >"$world/tests/hello/test_serves_hello" <<EOT
#!/bin/sh
# The app answers with its greeting.
curl -fsS "http://127.0.0.1:$port/" | grep -q '^hello '
EOT
chmod +x "$world/tests/hello/test_serves_hello"

# The demo's host settings, in a host config file as on a real CI host (in `ccci run`, host
# settings come from the host file, not from the environment).
cat >"$world/ccci.env" <<EOT
CCCI_ABRA=$world/bin/abra
CCCI_ABRA_HOME=$world/abra
CCCI_RUNS_DIR=$world/runs
CCCI_APP_LOCK_DIR=$world/lock
CCCI_TESTS_DIR=$world/tests
CCCI_DOMAIN_SUFFIX=demo.ccci.test
CCCI_HEALTH_URL=http://127.0.0.1:$port/
EOT

set +e
env -u INVOCATION_ID -u DRONE \
  CCCI_CONFIG="$world/ccci.env" \
  CCCI_RUN_ID="demo-$(date +%s)" \
  target/release/ccci run --recipe hello "$@"
code=$?
set -e
echo
echo "demo: ccci exited $code; run dirs (results.json, run.log) are in $world/runs"
exit $code
