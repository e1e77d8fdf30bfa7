#!/usr/bin/env bash
# Runs every test of the workspace. This is the README's test command, and CI's.
# After the cargo tests, scripts/schemathesis.sh fuzzes the admin API of a live gateway against
# openapi.yaml (set PAGEWIRE_SKIP_SCHEMATHESIS=1 to leave it out, e.g. when filtering tests).
set -euo pipefail
cd "$(dirname "$0")/.."

# The store's contract suite also runs on a real PostgreSQL, which the tests start themselves from
# the machine's server programs (crates/store/src/testing/pg_server.rs). A clean machine (CI) gets
# them here; the tests fail, and say why, when they are missing.
have_postgres() {
  [[ -x "${PAGEWIRE_PG_BIN:-/nonexistent}/initdb" ]] ||
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null ||
    command -v initdb >/dev/null
}
if ! have_postgres; then
  if command -v apt-get >/dev/null; then
    echo "installing PostgreSQL for the store's tests" >&2
    sudo=""
    if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  else
    echo "PostgreSQL's server programs (initdb, postgres) are missing and apt-get is not available:" >&2
    echo "install PostgreSQL (e.g. brew install postgresql@16) and run this again." >&2
    exit 1
  fi
fi

cargo test --workspace --all-features --locked "$@"
if [[ "${PAGEWIRE_SKIP_SCHEMATHESIS:-0}" != 1 ]]; then
  bash scripts/schemathesis.sh
fi
