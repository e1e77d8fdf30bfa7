#!/usr/bin/env bash
# Every scenario of docs/benchmarks.md, in the order of its tables: builds the release binaries,
# then runs the load harness (each run starts `pagewire serve` on a fresh data directory) and the
# criterion micro-benchmarks. 20 to 33 minutes on a 2-core machine, by its speed that day (SQLite about two thirds). Pass `--quick` for a short
# pass over every scenario (minutes, figures not comparable). Before the micro-benchmarks it prints
# the targets table, per store, from the results the runs recorded (target/bench-results.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
quick=0
[[ "${1:-}" == --quick ]] && quick=1
cargo build --release --locked -p pagewire -p pagewire-bench
# Every run appends its results here; the last step reads them back into the targets table.
results=target/bench-results.jsonl
: >"$results"
bench=(target/release/pagewire-bench --record "$results")
scale() { if ((quick)); then echo "$2"; else echo "$1"; fi; }

section() { printf '\n== %s\n\n' "$*"; }

section "The disk: durable sequential writes, second by second (what sustained ingest is bounded by)"
"${bench[@]}" disk --seconds "$(scale 20 3)"
section "Ingest: closed loop (64 in flight), with the one-commit-per-request baseline, and where each commit's pages go"
"${bench[@]}" ingest --seconds "$(scale 10 2)" --with-baseline --commit-pages
section "Ingest: closed loop with 256 in flight (one commit takes more requests)"
"${bench[@]}" ingest --seconds "$(scale 10 2)" --connections 256
section "Ingest: closed loop with 512 in flight (the node's default limit of requests in flight)"
"${bench[@]}" ingest --seconds "$(scale 10 2)" --connections 512
section "Ingest: the mix of 1-, 10- and 100-item bodies, closed loop"
"${bench[@]}" ingest --seconds "$(scale 10 2)" --mix
section "Ingest: open loop at 2,000, 5,000 and 10,000 webhooks/s"
"${bench[@]}" ingest --seconds "$(scale 10 2)" --rate 2000
"${bench[@]}" ingest --seconds "$(scale 10 2)" --rate 5000
"${bench[@]}" ingest --seconds "$(scale 10 2)" --rate 10000
section "Ingest: closed loop for a minute (past the disk's burst)"
"${bench[@]}" ingest --seconds "$(scale 60 3)"
section "Delivery: a 100,000-event backlog to a fast receiver, alone and beside a hanging endpoint"
"${bench[@]}" delivery --events "$(scale 100000 20000)" --runs "$(scale 3 1)"
section "End to end: steady 5,000 webhooks/s for a minute"
"${bench[@]}" end-to-end --rate 5000 --seconds "$(scale 60 5)"
section "End to end: a burst of 50,000 webhooks"
"${bench[@]}" end-to-end --burst "$(scale 50000 5000)"
section "Backlog: 1,000,000 events (peak memory of the ingesting and the draining node)"
"${bench[@]}" delivery --events "$(scale 1000000 50000)"
# The same scenarios on PostgreSQL: the harness starts a server from the machine's binaries
# (durable, PostgreSQL's defaults) and gives every run a fresh database.
pg=(--store postgres)
section "PostgreSQL: ingest, closed loop, with the one-commit-per-request baseline"
"${bench[@]}" "${pg[@]}" ingest --seconds "$(scale 10 2)" --with-baseline
section "PostgreSQL: ingest, closed loop with 256 in flight"
"${bench[@]}" "${pg[@]}" ingest --seconds "$(scale 10 2)" --connections 256
section "PostgreSQL: ingest, closed loop with 512 in flight"
"${bench[@]}" "${pg[@]}" ingest --seconds "$(scale 10 2)" --connections 512
section "PostgreSQL: ingest, open loop at 5,000 webhooks/s"
"${bench[@]}" "${pg[@]}" ingest --seconds "$(scale 10 2)" --rate 5000
section "PostgreSQL: delivery of a 100,000-event backlog, alone and beside a hanging endpoint"
"${bench[@]}" "${pg[@]}" delivery --events "$(scale 100000 20000)" --runs "$(scale 3 1)"
section "PostgreSQL: end to end, steady 5,000 webhooks/s for a minute"
"${bench[@]}" "${pg[@]}" end-to-end --rate 5000 --seconds "$(scale 60 5)"
section "PostgreSQL: end to end, a burst of 50,000 webhooks"
"${bench[@]}" "${pg[@]}" end-to-end --burst "$(scale 50000 5000)"
section "PostgreSQL: backlog of 1,000,000 events"
"${bench[@]}" "${pg[@]}" delivery --events "$(scale 1000000 50000)"
section "The targets (from the runs above; the table of docs/benchmarks.md)"
"${bench[@]}" summary "$results"
section "Micro-benchmarks"
cargo bench --locked -p pagewire-meta --bench normalize -- --noplot
cargo bench --locked -p pagewire-delivery --bench signing -- --noplot
