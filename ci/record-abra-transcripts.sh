#!/usr/bin/env bash
# Records real abra transcripts for ccci's contract test (tests/contract.rs): for every
# call ccci makes, the `--help` text and a sample of stdout/stderr/exit code, taken from a
# throwaway app on a host with the real abra, docker in swarm mode and backupbot deployed.
# Secret values are never recorded. Takes about 15 minutes (one deploy, one backup, one
# restore, one lint).
#
# Usage: ci/record-abra-transcripts.sh [--recipe NAME] [--server NAME] [--suffix DOMAIN]
#                                      [--out DIR] [--keep]
#   --recipe  a small backup-capable recipe from the catalogue [custom-html]
#   --server  the abra server of this host [$CCCI_SERVER or default]
#   --suffix  the run-app domain suffix [$CCCI_DOMAIN_SUFFIX or ci.commoninternet.net]
#   --out     where to write [tests/abra_contract/<abra version>/]
#   --keep    keep the scratch ABRA_DIR (its path is printed)
# Run it as the CI user (whose abra home has servers/<server>/ and the catalogue), from a
# ccci checkout. The throwaway app is named like a run app (abra-<6 hex>.<suffix>), so if this
# script dies half-way, `ccci janitor` reaps it.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
recipe=custom-html
server=${CCCI_SERVER:-default}
suffix=${CCCI_DOMAIN_SUFFIX:-ci.commoninternet.net}
out=
keep=
while [ $# -gt 0 ]; do
	case $1 in
	--recipe) recipe=$2; shift ;;
	--server) server=$2; shift ;;
	--suffix) suffix=$2; shift ;;
	--out) out=$2; shift ;;
	--keep) keep=1 ;;
	-h | --help) sed -n '2,17p' "$0"; exit 0 ;;
	*) echo "record: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done

for p in abra docker git script sed; do
	command -v "$p" >/dev/null || { echo "record: $p is not on PATH" >&2; exit 1; }
done
home=${CCCI_ABRA_HOME:-$(getent passwd "$(id -un)" | cut -d: -f6)/.abra}
[ -d "$home/servers/$server" ] || { echo "record: $home/servers/$server is missing (abra server add --local)" >&2; exit 1; }
[ -d "$home/catalogue/.git" ] || { echo "record: $home/catalogue is not a catalogue clone" >&2; exit 1; }

version_line=$(abra --version | head -n 1)
version=${version_line##* }
out=${out:-$root/tests/abra_contract/$version}
mkdir -p "$out"
echo "record: abra $version -> $out"

# A scratch ABRA_DIR laid out as ccci's per-run one: the canonical servers/ and catalogue/,
# a fresh recipes/.
scratch=$(mktemp -d /tmp/ccci-record.XXXXXX)
mkdir "$scratch/recipes"
ln -s "$home/servers" "$scratch/servers"
ln -s "$home/catalogue" "$scratch/catalogue"
export ABRA_DIR=$scratch
domain=abra-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n').$suffix
stack=${domain//./_}
env_file=$home/servers/$server/$domain.env
host=$(hostname)

cleanup() {
	set +e
	if docker service ls -q --filter "label=com.docker.stack.namespace=$stack" | grep -q .; then
		abra app undeploy -n -o "$domain" </dev/null >/dev/null 2>&1
	fi
	[ ! -e "$env_file" ] || abra app remove -n -o -f "$domain" </dev/null >/dev/null 2>&1
	if [ -n "$keep" ]; then echo "record: kept $scratch"; else rm -rf "$scratch"; fi
}
trap cleanup EXIT

# Nothing identifying the host goes into the repository.
mask() { sed -e "s/$host/<host>/g" -e "s#$scratch#<abra dir>#g" -e "s#$home#<abra home>#g"; }

# rec NAME [--pty] ARGS...: runs `abra ARGS`, stdin /dev/null, and keeps NAME.{argv,stdout,
# stderr,rc}. With --pty it runs under a terminal (script(1)) as ccci runs it: one merged
# stream, kept as NAME.stdout.
rec() {
	local name=$1 pty=
	shift
	if [ "$1" = --pty ]; then pty=1; shift; fi
	printf '%s\n' "$*" >"$out/$name.argv"
	local rc=0
	if [ -n "$pty" ]; then
		local cmd
		cmd=$(printf '%q ' abra "$@")
		script -qec "$cmd" /dev/null </dev/null >"$out/$name.raw" 2>&1 || rc=$?
		tr -d '\r' <"$out/$name.raw" | mask >"$out/$name.stdout"
		rm -f "$out/$name.raw" "$out/$name.stderr"
	else
		abra "$@" </dev/null >"$out/$name.raw" 2>"$out/$name.err" || rc=$?
		mask <"$out/$name.raw" >"$out/$name.stdout"
		mask <"$out/$name.err" >"$out/$name.stderr"
		rm -f "$out/$name.raw" "$out/$name.err"
	fi
	echo "$rc" >"$out/$name.rc"
	echo "record: $name: exit $rc"
	return 0
}

# --- help of every command ccci calls -------------------------------------------------
abra --help </dev/null 2>&1 | mask >"$out/root.help"
for c in "app new" "app secret generate" "app deploy" "app undeploy" "app remove" "app ls" \
	"app backup create" "app restore" "recipe fetch" "recipe lint"; do
	# shellcheck disable=SC2086
	abra $c --help </dev/null 2>&1 | mask >"$out/${c// /-}.help"
done
rec version --version

# --- one life cycle of a throwaway app, with ccci's argv --------------------------------
checks=$out/host-checks.txt
: >"$checks"
rec recipe-fetch recipe fetch -n "$recipe"
rec app-new app new -n -o -C "--server=$server" "--domain=$domain" "$recipe"
{
	echo "== .env after app new (DOMAIN/TYPE/RECIPE/STACK_NAME/COMPOSE_FILE lines)"
	grep -nE '^(DOMAIN|TYPE|RECIPE|STACK_NAME|COMPOSE_FILE)=' "$env_file" | mask
} >>"$checks"
# ccci's overrides.
sed -i -e 's/^LETS_ENCRYPT_ENV=.*/LETS_ENCRYPT_ENV=/' "$env_file"
printf 'DOMAIN=%s\nSTACK_NAME=%s\n' "$domain" "$stack" >>"$env_file"

# Secret values are printed once on stdout: only their count is kept.
rc=0
abra app secret generate -n -o -C -a -m "$domain" </dev/null >"$scratch/secrets.out" 2>"$out/app-secret-generate.stderr" || rc=$?
echo "app secret generate -n -o -C -a -m $domain" >"$out/app-secret-generate.argv"
printf '<%s line(s) withheld: secret values>\n' "$(wc -l <"$scratch/secrets.out")" >"$out/app-secret-generate.stdout"
echo "$rc" >"$out/app-secret-generate.rc"
rm -f "$scratch/secrets.out"
{
	echo "== secrets of the app and their labels (abra-fidelity R8)"
	docker secret ls --format '{{.Name}} {{.Labels}}' | grep -F "${stack}_" || echo "(none)"
} >>"$checks"

rec app-deploy --pty app deploy -n -o -C -c --no-domain-checks "$domain"
rec app-deploy.notty app deploy -n -o -C -c --no-domain-checks -f "$domain"
rec app-deploy.usage app deploy -n --bogus "$domain"
rec app-deploy.fail --pty app deploy -n -o -C -c --no-domain-checks "$domain" # already deployed
{
	echo "== .env after deploy (TYPE rewrite, abra-fidelity R7)"
	grep -nE '^(TYPE|RECIPE)=' "$env_file"
	echo "== service labels"
	docker service inspect "${stack}_app" --format '{{json .Spec.Labels}}' 2>&1 | mask
} >>"$checks"
echo "record: waiting for the app to converge"
for _ in $(seq 1 300); do
	if ! docker service ls --filter "label=com.docker.stack.namespace=$stack" --format '{{.Replicas}}' |
		awk -F'[/ ]' '$1 != $2 { bad = 1 } END { exit bad }'; then
		sleep 2
		continue
	fi
	break
done

rec app-ls app ls -n -o -m
rec app-backup-create --pty app backup create -n -o -C "$domain"
rec app-backup-create.notty app backup create -n -o -C "$domain"
{
	echo "== the snapshots backupbot holds for the app (compare with the id the contract test prints)"
	abra app backup snapshots -n "$domain" </dev/null 2>&1 | mask || true
} >>"$checks"
rec app-restore --pty app restore -n -o -C "$domain"
rec recipe-lint --pty recipe lint -n -o "$recipe"
rec recipe-lint.notty recipe lint -n -o "$recipe"
rec app-undeploy app undeploy -n -o "$domain"
sleep 5
rec app-remove app remove -n -o -f "$domain"
{
	echo "== what remains of the stack after undeploy + remove"
	for k in service volume secret config network; do
		docker "$k" ls --format '{{.Name}}' | grep -F "${stack}" | sed "s/^/$k: /"
	done
	echo "(end)"
} >>"$checks"

# Only the version line is known for sure; the contract test prints what it reads from the rest.
cat >"$out/meta.json" <<EOF
{
  "abra": "$version",
  "synthetic": false,
  "recorded": "$(date -u +%Y-%m-%dT%H:%M:%SZ) with ci/record-abra-transcripts.sh (recipe $recipe)",
  "note": "Recorded from a real abra; calls ccci runs under a terminal were recorded under script(1), their .stdout is the merged stream. *.notty samples are the same call without a terminal. host-checks.txt has the .env, secret-label and residue checks of abra-fidelity §8.",
  "sources": {},
  "expect": { "version": { "version": "$version_line" } }
}
EOF
echo "record: done; now run: cargo test --test integration contract -- --nocapture"
