//! The targets table: every run of `scripts/bench.sh` appends its results to one file
//! (`--record`), and `pagewire-bench summary` reads them back and prints where each target of the
//! load harness's issue stands, per store, as `docs/benchmarks.md` shows it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::gateway::StoreKind;

/// One scenario's results, as one line of the record file.
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    pub store: StoreKind,
    /// `ingest`, `delivery`, `end-to-end` or `disk`.
    pub scenario: String,
    /// What tells runs of a scenario apart: `rate` (open loop), `connections`, `mix` and `events`
    /// (the backlog), `burst`.
    pub settings: Value,
    /// What `--json` prints for the scenario.
    pub result: Value,
}

impl Record {
    pub fn new(store: StoreKind, scenario: &str, settings: Value, result: &impl Serialize) -> anyhow::Result<Self> {
        Ok(Self {
            store,
            scenario: String::from(scenario),
            settings,
            result: serde_json::to_value(result)?,
        })
    }

    /// Appends the record to `path` as one line of JSON.
    pub fn append(&self, path: &Path) -> anyhow::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {} to record the results", path.display()))?;
        writeln!(file, "{}", serde_json::to_string(self)?)?;
        Ok(())
    }

    fn setting(&self, name: &str) -> Option<&Value> {
        self.settings.get(name).filter(|v| !v.is_null())
    }

    fn results(&self) -> impl Iterator<Item = &Value> {
        self.result.as_array().into_iter().flatten()
    }
}

/// Reads the records at `path` and prints the targets table.
pub fn print(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let records = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<Vec<Record>, _>>()
        .with_context(|| format!("{} holds a line that is not a record", path.display()))?;
    print!("{}", table(&records));
    Ok(())
}

/// A target: its row's label, and for each store what was measured and whether it is met (`None`
/// when no run measured it).
struct Row {
    target: &'static str,
    cell: fn(&[&Record]) -> Option<(String, bool)>,
}

const ROWS: &[Row] = &[
    Row {
        target: "ingest: SQLite at least 30,000 webhooks/s, PostgreSQL at least 20,000",
        cell: ingest,
    },
    Row {
        target: "ack p99 under 10 ms at 10,000 webhooks/s",
        cell: ack_at_10000,
    },
    Row {
        target: "delivery at least 25,000 events/s to a fast receiver",
        cell: delivery,
    },
    Row {
        target: "one dead endpoint beside it: at least 90 %",
        cell: beside_dead,
    },
    Row {
        target: "steady 5,000 webhooks/s end to end: ingest-to-customer p99 under 250 ms",
        cell: steady,
    },
    Row {
        target: "peak RSS under 200 MB with a 1-million-event backlog",
        cell: backlog_memory,
    },
    Row {
        target: "no event lost or duplicated",
        cell: no_loss,
    },
];

/// The table, in Markdown.
fn table(records: &[Record]) -> String {
    let of = |store: StoreKind| records.iter().filter(|r| r.store == store).collect::<Vec<_>>();
    let (sqlite, postgres) = (of(StoreKind::Sqlite), of(StoreKind::Postgres));
    let mut out = String::from("| target | SQLite | PostgreSQL |\n|---|---|---|\n");
    let cell = |row: &Row, records: &[&Record]| match (row.cell)(records) {
        Some((measured, true)) => format!("{measured}: met"),
        Some((measured, false)) => format!("{measured}: **not met**"),
        None => String::from("not measured"),
    };
    for row in ROWS {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            row.target,
            cell(row, &sqlite),
            cell(row, &postgres)
        );
    }
    out
}

fn number(v: &Value, field: &str) -> Option<f64> {
    v.get(field)?.as_f64()
}

/// Thousands separated by commas, as the docs write them.
fn count(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The best closed loop of one-item bodies with group commit.
fn ingest(records: &[&Record]) -> Option<(String, bool)> {
    let target = match records.first()?.store {
        StoreKind::Sqlite => 30_000.0,
        StoreKind::Postgres => 20_000.0,
    };
    let (rate, connections) = records
        .iter()
        .filter(|r| {
            r.scenario == "ingest" && r.setting("rate").is_none() && r.setting("mix") != Some(&Value::Bool(true))
        })
        .flat_map(|r| {
            let connections = r.setting("connections").and_then(Value::as_u64).unwrap_or(0);
            r.results()
                .filter(|v| {
                    v.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.starts_with("group commit"))
                })
                .filter_map(move |v| Some((number(v, "requests_per_second")?, connections)))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))?;
    Some((format!("{} with {connections} in flight", count(rate)), rate >= target))
}

fn ack_at_10000(records: &[&Record]) -> Option<(String, bool)> {
    let p99 = records
        .iter()
        .filter(|r| r.scenario == "ingest" && r.setting("rate").and_then(Value::as_u64) == Some(10_000))
        .flat_map(|r| r.results())
        .filter_map(|v| number(v, "ack_p99_ms"))
        .max_by(f64::total_cmp)?;
    Some((format!("{p99:.2} ms"), p99 < 10.0))
}

/// Delivery phases of the backlogs under a million events (the million is the memory scenario).
fn phases<'a>(records: &'a [&Record], million: bool) -> impl Iterator<Item = &'a Value> {
    records
        .iter()
        .filter(move |r| {
            r.scenario == "delivery"
                && r.setting("events")
                    .and_then(Value::as_u64)
                    .is_some_and(|events| (events >= 1_000_000) == million)
        })
        .flat_map(|r| r.results())
}

fn median_rate(records: &[&Record], phase: &str) -> Option<f64> {
    let mut rates: Vec<f64> = phases(records, false)
        .filter(|v| v.get("name").and_then(Value::as_str) == Some(phase))
        .filter_map(|v| number(v, "delivery_events_per_second"))
        .collect();
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied()
}

fn delivery(records: &[&Record]) -> Option<(String, bool)> {
    let alone = median_rate(records, "fast endpoint alone")?;
    Some((format!("{} events/s (median)", count(alone)), alone >= 25_000.0))
}

fn beside_dead(records: &[&Record]) -> Option<(String, bool)> {
    let alone = median_rate(records, "fast endpoint alone")?;
    let beside = median_rate(records, "beside a dead endpoint")?;
    let ratio = beside / alone;
    Some((
        format!("{} events/s ({:.0} %)", count(beside), 100.0 * ratio),
        ratio >= 0.9,
    ))
}

fn steady(records: &[&Record]) -> Option<(String, bool)> {
    let p99 = records
        .iter()
        .filter(|r| {
            r.scenario == "end-to-end"
                && r.setting("burst").is_none()
                && r.setting("rate")
                    .and_then(Value::as_u64)
                    .is_some_and(|rate| rate >= 5_000)
        })
        .filter_map(|r| number(&r.result, "e2e_p99_ms"))
        .max_by(f64::total_cmp)?;
    Some((format!("{p99:.1} ms"), p99 < 250.0))
}

fn backlog_memory(records: &[&Record]) -> Option<(String, bool)> {
    let peaks: Vec<f64> = phases(records, true)
        .flat_map(|v| [number(v, "ingress_peak_rss_mb"), number(v, "worker_peak_rss_mb")])
        .flatten()
        .collect();
    let peak = peaks.iter().copied().max_by(f64::total_cmp)?;
    Some((format!("{peak:.0} MB at most"), peak < 200.0))
}

fn no_loss(records: &[&Record]) -> Option<(String, bool)> {
    let mut measured = false;
    let (mut lost, mut duplicated) = (0.0, 0.0);
    for r in records {
        let results: Vec<&Value> = match r.scenario.as_str() {
            "delivery" => r.results().collect(),
            "end-to-end" => vec![&r.result],
            _ => continue,
        };
        for v in results {
            measured = true;
            lost += number(v, "lost").unwrap_or(0.0);
            duplicated += number(v, "duplicated").unwrap_or(0.0);
        }
    }
    measured.then(|| {
        (
            format!("{} lost, {} duplicated", count(lost), count(duplicated)),
            lost == 0.0 && duplicated == 0.0,
        )
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SQLITE: StoreKind = StoreKind::Sqlite;
    const POSTGRES: StoreKind = StoreKind::Postgres;

    fn record(store: StoreKind, scenario: &str, settings: Value, result: Value) -> Record {
        Record {
            store,
            scenario: scenario.into(),
            settings,
            result,
        }
    }

    fn ingest_run(connections: u64, rate: Option<u64>, per_second: f64, p99: f64) -> Value {
        json!({"connections": connections, "rate": rate, "mix": false, "result": [
            {"name": format!("group commit: closed loop, {connections} in flight"), "requests_per_second": per_second, "ack_p99_ms": p99},
            {"name": "one commit per request: closed loop", "requests_per_second": 99_999.0, "ack_p99_ms": 1.0},
        ]})
    }

    fn from(store: StoreKind, scenario: &str, run: Value) -> Record {
        let result = run["result"].clone();
        record(store, scenario, run, result)
    }

    /// An end-to-end run: a burst of `burst` webhooks, or steady at `rate`.
    fn e2e(store: StoreKind, burst: Option<u64>, rate: u64, p99: f64, duplicated: u64) -> Record {
        record(
            store,
            "end-to-end",
            json!({"burst": burst, "rate": rate}),
            json!({"e2e_p99_ms": p99, "lost": 0, "duplicated": duplicated}),
        )
    }

    /// A delivery run of a backlog of `events`.
    fn backlog(store: StoreKind, events: u64, phases: Vec<Value>) -> Record {
        record(store, "delivery", json!({ "events": events }), Value::Array(phases))
    }

    fn phase(name: &str, rate: f64, rss: f64, lost: u64) -> Value {
        json!({"name": name, "delivery_events_per_second": rate, "ingress_peak_rss_mb": rss,
               "worker_peak_rss_mb": rss, "lost": lost, "duplicated": 0})
    }

    #[test]
    fn the_table_says_per_store_what_each_target_came_to() {
        let records = vec![
            from(SQLITE, "ingest", ingest_run(64, None, 19_160.0, 9.0)),
            from(SQLITE, "ingest", ingest_run(512, None, 30_188.0, 30.0)),
            from(SQLITE, "ingest", ingest_run(0, Some(10_000), 9_996.0, 8.12)),
            backlog(
                SQLITE,
                100_000,
                vec![
                    phase("fast endpoint alone", 29_025.0, 90.0, 0),
                    phase("beside a dead endpoint", 28_367.0, 90.0, 0),
                    phase("fast endpoint alone", 26_825.0, 90.0, 0),
                    phase("beside a dead endpoint", 29_698.0, 90.0, 0),
                    phase("fast endpoint alone", 28_679.0, 90.0, 0),
                    phase("beside a dead endpoint", 28_846.0, 90.0, 0),
                ],
            ),
            backlog(SQLITE, 1_000_000, vec![phase("fast endpoint alone", 1.0, 168.0, 0)]),
            e2e(SQLITE, None, 5_000, 18.0, 0),
            e2e(SQLITE, Some(50_000), 5_000, 900.0, 1),
            // Below the target's rate: it says nothing of the target.
            e2e(POSTGRES, None, 200, 20.0, 0),
            from(POSTGRES, "ingest", ingest_run(256, None, 19_999.0, 20.0)),
            backlog(
                POSTGRES,
                100_000,
                vec![
                    phase("fast endpoint alone", 16_744.0, 60.0, 2),
                    phase("beside a dead endpoint", 14_000.0, 60.0, 0),
                ],
            ),
        ];
        let table = table(&records);
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows[0], "| target | SQLite | PostgreSQL |");
        let row = |start: &str| {
            rows.iter()
                .find(|r| r.starts_with(&format!("| {start}")))
                .copied()
                .unwrap_or_else(|| panic!("no row starts with {start:?} in:\n{table}"))
        };
        // The best closed loop of group commit, not the baseline's nor an open loop's.
        assert_eq!(
            row("ingest"),
            "| ingest: SQLite at least 30,000 webhooks/s, PostgreSQL at least 20,000 \
             | 30,188 with 512 in flight: met | 19,999 with 256 in flight: **not met** |"
        );
        assert!(row("ack p99").contains("| 8.12 ms: met | not measured |"));
        // Medians of the 100,000-event backlog; the million only counts for memory.
        assert!(row("delivery").contains("| 28,679 events/s (median): met | 16,744 events/s (median): **not met** |"));
        assert!(
            row("one dead endpoint").contains("| 28,846 events/s (101 %): met | 14,000 events/s (84 %): **not met** |")
        );
        // The burst has no latency target, and a slower steady run does not count.
        assert!(row("steady").contains("| 18.0 ms: met | not measured |"));
        assert!(row("peak RSS").contains("| 168 MB at most: met | not measured |"));
        assert!(row("no event").contains("| 0 lost, 1 duplicated: **not met** | 2 lost, 0 duplicated: **not met** |"));
    }

    #[test]
    fn records_go_to_the_file_one_per_line_and_come_back() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("results.jsonl");
        let first = Record::new(StoreKind::Sqlite, "ingest", json!({"connections": 64}), &json!([]))?;
        first.append(&path)?;
        Record::new(
            StoreKind::Postgres,
            "disk",
            json!({}),
            &json!({"sustained_mb_per_s": 294}),
        )?
        .append(&path)?;
        let text = std::fs::read_to_string(&path)?;
        let back: Vec<Record> = text.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
        assert_eq!(back.len(), 2);
        assert_eq!((back[0].store, back[1].store), (SQLITE, POSTGRES));
        assert_eq!(back[1].result["sustained_mb_per_s"], 294);
        Ok(())
    }
}
