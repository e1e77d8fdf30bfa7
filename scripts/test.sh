#!/usr/bin/env bash
# Runs every test of the workspace. This is the README's test command, and CI's.
# After the cargo tests, scripts/schemathesis.sh fuzzes the admin API of a live gateway against
# openapi.yaml (set PAGEWIRE_SKIP_SCHEMATHESIS=1 to leave it out, e.g. when filtering tests).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-features --locked "$@"
if [[ "${PAGEWIRE_SKIP_SCHEMATHESIS:-0}" != 1 ]]; then
  bash scripts/schemathesis.sh
fi
