//! `pagewire-bench`: the load harness. It runs a real `pagewire serve` process (built with
//! `cargo build --release -p pagewire`), feeds it signed Meta webhooks through the test kit's
//! simulator, and counts every event at its own receivers, so throughput, loss and duplicates are
//! measured rather than assumed.
//!
//! ```sh
//! cargo build --release -p pagewire -p pagewire-bench
//! target/release/pagewire-bench delivery --events 100000
//! target/release/pagewire-bench ingest --seconds 10
//! target/release/pagewire-bench ingest --seconds 10 --rate 10000
//! ```

// The receivers share the machine with the gateway: the same allocator keeps their cost low.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod commit_pages;
mod disk;
mod end_to_end;
mod gateway;
mod http1;
mod ingest;
mod receiver;
mod summary;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use pagewire_testkit::{Kind, MetaBody};
use serde::Serialize;
use serde_json::json;

use crate::gateway::{DataStore, Node, Role, StoreKind};
use crate::receiver::{Counter, HangingEndpoint};

pub(crate) const APP_ID: &str = "4242424242";
pub(crate) const APP_SECRET: &str = "bench-app-secret-0123456789abcdef";
const PAGE_ID: &str = "104872345678901";

#[derive(Debug, Parser)]
#[command(name = "pagewire-bench", about = "Load harness for Pagewire")]
struct Args {
    /// The `pagewire` binary to measure.
    #[arg(long, default_value = "target/release/pagewire")]
    pagewire: PathBuf,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also append the results to this file, as one line of JSON (`summary` reads them back into
    /// the targets table).
    #[arg(long)]
    record: Option<PathBuf>,
    /// A setting for the gateway, as `PAGEWIRE_NAME=value`, `RUST_LOG=filter` or
    /// `TOKIO_WORKER_THREADS=n` (repeatable).
    #[arg(long = "gateway-env", value_parser = parse_setting)]
    gateway_env: Vec<(String, String)>,
    /// Where the measured nodes keep their state: the embedded SQLite file, or a PostgreSQL server
    /// that the harness starts from the machine's binaries (initdb, postgres), durable as in
    /// production.
    #[arg(long, value_enum, default_value = "sqlite")]
    store: StoreKind,
    /// A setting for the harness's PostgreSQL server, as `name=value` (`postgres -c`), over
    /// PostgreSQL's defaults: to measure an operator's tuning, e.g. `wal_init_zero=off`
    /// (repeatable; with `--store postgres`).
    #[arg(long = "postgres-setting", value_parser = parse_postgres_setting)]
    postgres_settings: Vec<String>,
    /// Measure the PostgreSQL server brand new. By default the harness first writes about 1 GB of
    /// WAL and checkpoints, so that the server recycles its WAL segments as one that has run a
    /// while does; a new server creates and zero-fills every segment it fills, and commits wait
    /// for it (with `--store postgres`).
    #[arg(long)]
    postgres_cold: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Ingest a backlog with an ingress-only node, then drain it with a worker-only node: delivery
    /// events per second to a fast receiver, alone and beside an endpoint that never answers.
    Delivery {
        /// Events in the backlog.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Items per webhook POST.
        #[arg(long, default_value_t = 100)]
        batch: u64,
        /// The fast endpoint's `max_concurrency`.
        #[arg(long, default_value_t = 256)]
        concurrency: u32,
        /// How the measured receiver answers: `fast`, `slow:<ms>ms`, `failing:<n>` (every nth
        /// request answers 500 and is retried).
        #[arg(long, default_value = "fast")]
        receiver: receiver::Mode,
        /// What sits beside it in the second phase: `hanging` (accepts, never answers) or `down`
        /// (connection refused).
        #[arg(long, default_value = "hanging")]
        beside: Beside,
        /// Repeat both phases this many times and report the median (the machine's noise shows
        /// in the spread).
        #[arg(long, default_value_t = 1)]
        runs: usize,
    },
    /// Webhooks into a node that ingests and delivers, each tenant's events to its endpoint at the
    /// harness's receiver: acknowledgement latency, ingest-to-customer latency, loss and
    /// duplicates. Steady at `--rate` for `--seconds`, or a burst of `--burst` webhooks as fast as
    /// `--connections` in flight allow.
    EndToEnd(end_to_end::Args),
    /// What the machine's disk sustains: 4 MiB writes to a file in the data directory's place
    /// (the temporary directory), each 32 MiB made durable (`fdatasync`), reported second by
    /// second. Cloud disks often take a burst at one speed and then throttle to another; a
    /// gateway's sustained ingest is bounded by the second divided by the bytes it writes per
    /// webhook (the ingest scenario reports them).
    Disk {
        /// How long to write.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Signed one-item webhooks (about 1 KiB) for many Pages of several tenants into a node that
    /// only ingests: acknowledged requests per second and acknowledgement latency. Closed loop at
    /// maximum unless `--rate` asks for an open loop at a fixed rate.
    Ingest {
        /// How long to send.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Closed loop: requests in flight.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Open loop: webhooks per second, each sent on its schedule.
        #[arg(long)]
        rate: Option<u64>,
        /// Tenants, whose Pages subscribe to the operator's shared app.
        #[arg(long, default_value_t = 4)]
        tenants: usize,
        /// Pages of each tenant; the webhooks go round all of them.
        #[arg(long, default_value_t = 25)]
        pages_per_tenant: usize,
        /// Also run the same load against the naive baseline: one commit per request.
        #[arg(long)]
        with_baseline: bool,
        /// Send the mix (batches of 10 and 100 items among one-item bodies) instead of one-item
        /// bodies only.
        #[arg(long)]
        mix: bool,
        /// SQLite: also report where the commits' pages went (each table and index), from a copy
        /// of the database log taken at four fifths of the run.
        #[arg(long)]
        commit_pages: bool,
    },
    /// The targets table of `docs/benchmarks.md`, per store, from the results that runs with
    /// `--record <file>` appended to the file (`scripts/bench.sh` records every run).
    Summary {
        /// The file the runs recorded their results in.
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Beside {
    Hanging,
    Down,
}

#[derive(Debug, Serialize)]
struct Phase {
    name: &'static str,
    events: u64,
    ingest_seconds: f64,
    ingest_events_per_second: f64,
    delivery_seconds: f64,
    delivery_events_per_second: f64,
    /// Peak resident memory of the node that ingested the backlog, and of the one that drained it.
    ingress_peak_rss_mb: Option<f64>,
    worker_peak_rss_mb: Option<f64>,
    /// CPU time of the worker node per delivered event, in microseconds.
    gateway_cpu_us_per_event: Option<f64>,
    /// CPU time of the harness (its receivers) per delivered event, in microseconds.
    harness_cpu_us_per_event: Option<f64>,
    /// CPU time of the PostgreSQL server per delivered event, in microseconds (`None` on SQLite).
    database_cpu_us_per_event: Option<f64>,
    lost: u64,
    duplicated: u64,
    /// Requests the receiver refused because their signature did not verify.
    bad_signatures: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Scenario::Summary { file } = &args.scenario {
        return summary::print(file);
    }
    if !args.pagewire.is_file() {
        bail!(
            "{} does not exist: run `cargo build --release -p pagewire` first",
            args.pagewire.display()
        );
    }
    if !args.postgres_settings.is_empty() {
        if args.store != StoreKind::Postgres {
            bail!("--postgres-setting needs --store postgres");
        }
        pagewire_store::testing::pg_server::set_durable_settings(args.postgres_settings.clone())
            .map_err(|e| anyhow::anyhow!("setting up the harness's PostgreSQL server: {e}"))?;
    }
    if args.postgres_cold {
        if args.store != StoreKind::Postgres {
            bail!("--postgres-cold needs --store postgres");
        }
        gateway::measure_postgres_cold();
    }
    let node = Node {
        binary: &args.pagewire,
        env: &args.gateway_env,
        store: args.store,
    };
    if let Scenario::Disk { seconds } = args.scenario {
        let report = disk::run(Duration::from_secs(seconds.max(1)))?;
        record(args.record.as_deref(), args.store, "disk", json!({}), &report)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            report.print();
        }
        return Ok(());
    }
    if let Scenario::EndToEnd(load) = &args.scenario {
        let report = end_to_end::run(&node, load).await?;
        let settings = json!({"burst": load.burst(), "rate": load.rate()});
        record(args.record.as_deref(), args.store, "end-to-end", settings, &report)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            report.print();
        }
        return report.check();
    }
    if let Scenario::Ingest {
        seconds,
        connections,
        rate,
        tenants,
        pages_per_tenant,
        with_baseline,
        mix,
        commit_pages,
    } = args.scenario
    {
        let load = IngestLoad {
            seconds,
            connections,
            rate,
            tenants,
            pages_per_tenant,
            mix,
            commit_pages,
        };
        let mut reports = vec![ingest_run(&node, &load, "group commit").await?];
        if with_baseline {
            let mut env = args.gateway_env.clone();
            env.push((String::from("PAGEWIRE_INGEST__MAX_REQUESTS"), String::from("1")));
            let baseline = Node { env: &env, ..node };
            reports.push(ingest_run(&baseline, &load, "one commit per request").await?);
        }
        let settings = json!({"connections": connections, "rate": rate, "mix": mix});
        record(args.record.as_deref(), args.store, "ingest", settings, &reports)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&reports)?);
        } else {
            println!(
                "{:<48} {:>9} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8} {:>8} {:>8}",
                "run",
                "acked",
                "req/s",
                "events/s",
                "p50 ms",
                "p99 ms",
                "p99.9 ms",
                "max ms",
                "RSS MB",
                "shed",
                "errors",
                "CPU µs",
                "gen µs",
                "KiB/req"
            );
            for r in &reports {
                println!(
                    "{:<48} {:>9} {:>10.0} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.1} {:>8.0} {:>7} {:>7} {:>8.0} {:>8.0} {:>8.1}",
                    r.name,
                    r.requests,
                    r.requests_per_second,
                    r.events_per_second,
                    r.ack_p50_ms,
                    r.ack_p99_ms,
                    r.ack_p999_ms,
                    r.ack_max_ms,
                    r.peak_rss_mb.unwrap_or(0.0),
                    r.shed,
                    r.errors,
                    r.gateway_cpu_us_per_request.unwrap_or(0.0),
                    r.harness_cpu_us_per_request.unwrap_or(0.0),
                    r.gateway_written_kib_per_request.unwrap_or(0.0)
                );
            }
            for r in &reports {
                if let Some(lateness) = r.lateness() {
                    println!("{}: {lateness}", r.name);
                }
            }
            for r in &reports {
                if let Some(pages) = &r.commit_pages {
                    pages.print(&r.name);
                }
            }
        }
        if reports.iter().any(|r| r.errors > 0) {
            bail!("some webhooks were answered with neither 200 nor 503, or not at all");
        }
        return Ok(());
    }
    let phases = match args.scenario {
        Scenario::Ingest { .. } | Scenario::EndToEnd(_) | Scenario::Disk { .. } | Scenario::Summary { .. } => {
            unreachable!("handled above")
        }
        Scenario::Delivery {
            events,
            batch,
            concurrency,
            receiver,
            beside,
            runs,
        } => {
            let run = Run {
                node,
                events,
                batch,
                concurrency,
                mode: receiver,
            };
            let mut phases = Vec::new();
            for _ in 0..runs.max(1) {
                phases.push(delivery(&run, "fast endpoint alone", None).await?);
                phases.push(delivery(&run, "beside a dead endpoint", Some(beside)).await?);
            }
            record(
                args.record.as_deref(),
                args.store,
                "delivery",
                json!({"events": events, "batch": batch}),
                &phases,
            )?;
            phases
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&phases)?);
    } else {
        println!(
            "{:<24} {:>9} {:>12} {:>14} {:>9} {:>10} {:>9} {:>9} {:>9} {:>5} {:>5}",
            "phase",
            "events",
            "ingest ev/s",
            "delivery ev/s",
            "gw µs/ev",
            "rcv µs/ev",
            "db µs/ev",
            "in RSS MB",
            "out RSS MB",
            "lost",
            "dup"
        );
        let us = |v: Option<f64>| v.map_or_else(|| String::from("-"), |v| format!("{v:.1}"));
        for p in &phases {
            println!(
                "{:<24} {:>9} {:>12.0} {:>14.0} {:>9} {:>10} {:>9} {:>9} {:>9} {:>5} {:>5}",
                p.name,
                p.events,
                p.ingest_events_per_second,
                p.delivery_events_per_second,
                us(p.gateway_cpu_us_per_event),
                us(p.harness_cpu_us_per_event),
                us(p.database_cpu_us_per_event),
                p.ingress_peak_rss_mb
                    .map_or_else(|| String::from("-"), |v| format!("{v:.0}")),
                p.worker_peak_rss_mb
                    .map_or_else(|| String::from("-"), |v| format!("{v:.0}")),
                p.lost,
                p.duplicated
            );
        }
        let median = |name: &str| {
            let mut rates: Vec<f64> = phases
                .iter()
                .filter(|p| p.name == name)
                .map(|p| p.delivery_events_per_second)
                .collect();
            rates.sort_by(f64::total_cmp);
            rates.get(rates.len() / 2).copied().unwrap_or(0.0)
        };
        let (alone, beside) = (median("fast endpoint alone"), median("beside a dead endpoint"));
        let runs = phases.len() / 2;
        println!(
            "median of {runs} run{}: {alone:.0} events/s alone, {beside:.0} beside a dead endpoint ({:.0} %)",
            if runs == 1 { "" } else { "s" },
            100.0 * beside / alone
        );
    }
    if phases.iter().any(|p| p.lost > 0) {
        bail!("events were lost");
    }
    if phases.iter().any(|p| p.bad_signatures > 0) {
        bail!("some deliveries did not carry a valid Standard Webhooks signature");
    }
    Ok(())
}

/// The ingest load.
struct IngestLoad {
    seconds: u64,
    connections: usize,
    rate: Option<u64>,
    tenants: usize,
    pages_per_tenant: usize,
    mix: bool,
    commit_pages: bool,
}

/// One ingest run on a fresh data directory with an ingress-only node.
async fn ingest_run(node: &Node<'_>, load: &IngestLoad, label: &str) -> anyhow::Result<ingest::IngestReport> {
    let data = DataStore::fresh(node.store).await?;
    let gateway = node.start(&data, Role::Ingress).await?;
    gateway.shared_app(APP_ID, APP_SECRET).await?;
    let pages: Vec<String> = gateway
        .tenants_with_pages(APP_ID, load.tenants, load.pages_per_tenant)
        .await?
        .into_iter()
        .flat_map(|(_, pages)| pages)
        .collect();
    let load_spec = std::sync::Arc::new(ingest::Load {
        target: http1::Target::parse(&gateway.url("/webhooks/meta"))?,
        bodies: std::sync::Arc::new(ingest::Bodies::new(&pages, APP_SECRET, load.mix)),
        timeline: None,
    });
    let duration = Duration::from_secs(load.seconds.max(1));
    let cpu_before = (gateway.cpu_seconds(), gateway::own_cpu_seconds());
    let written_before = gateway.written_bytes();
    // The database log as it is at four fifths of the run (a cycle's worth of commits under load).
    let log_copy = (load.commit_pages && node.store == StoreKind::Sqlite).then(|| {
        let log = data.path().join("pagewire.db-wal");
        let at = duration.mul_f64(0.8);
        tokio::spawn(async move {
            tokio::time::sleep(at).await;
            tokio::fs::read(&log).await
        })
    });
    let mut report = match load.rate {
        Some(rate) => ingest::open_loop(load_spec, rate, duration).await?,
        None => ingest::closed_loop(load_spec, load.connections, duration, None).await,
    };
    report.name = format!("{label}: {}", report.name);
    let per_request = |before: Option<f64>, after: Option<f64>| {
        before
            .zip(after)
            .map(|(before, after)| (after - before) * 1e6 / report.requests.max(1) as f64)
    };
    report.gateway_cpu_us_per_request = per_request(cpu_before.0, gateway.cpu_seconds());
    report.harness_cpu_us_per_request = per_request(cpu_before.1, gateway::own_cpu_seconds());
    report.gateway_written_kib_per_request = written_before
        .zip(gateway.written_bytes())
        .map(|(before, after)| after.saturating_sub(before) as f64 / 1024.0 / report.requests.max(1) as f64);
    report.peak_rss_mb = gateway.peak_rss().map(|b| b as f64 / (1024.0 * 1024.0));
    gateway.stop().await?;
    if let Some(copy) = log_copy {
        let log = copy.await?.context("copying the database log")?;
        let commits = commit_pages::commits(&log);
        report.commit_pages = Some(commit_pages::attribute(&data.path().join("pagewire.db"), &commits).await?);
    }
    Ok(report)
}

/// What every phase of a delivery run shares.
struct Run<'a> {
    node: Node<'a>,
    events: u64,
    batch: u64,
    concurrency: u32,
    mode: receiver::Mode,
}

/// One measured run on a fresh data directory.
async fn delivery(run: &Run<'_>, name: &'static str, dead: Option<Beside>) -> anyhow::Result<Phase> {
    let Run {
        node,
        events,
        batch,
        concurrency: fast_concurrency,
        mode,
    } = *run;
    let data = DataStore::fresh(node.store).await?;
    let counter = Counter::start(mode).await?;
    let hanging = HangingEndpoint::start().await?;

    // Fill the backlog with a node that only ingests.
    let ingress = node.start(&data, Role::Ingress).await?;
    let key = ingress.onboard(APP_ID, APP_SECRET, PAGE_ID).await?;
    ingress.endpoint_at(&key, &counter, fast_concurrency).await?;
    match dead {
        Some(Beside::Hanging) => {
            ingress.create_endpoint(&key, json!({"url": hanging.url()})).await?;
        }
        Some(Beside::Down) => {
            ingress
                .create_endpoint(&key, json!({"url": receiver::down_url().await?}))
                .await?;
        }
        None => {}
    }
    let started = Instant::now();
    send_backlog(&ingress.url("/webhooks/meta"), events, batch).await?;
    let ingest_seconds = started.elapsed().as_secs_f64();
    let ingress_rss = ingress.peak_rss();
    ingress.stop().await?;

    // Drain it with a node that only delivers.
    let worker = node.start(&data, Role::Worker).await?;
    let started = Instant::now();
    let cpu_before = (
        worker.cpu_seconds(),
        gateway::own_cpu_seconds(),
        gateway::database_cpu_seconds(),
    );
    counter
        .wait_for(events, Duration::from_secs(600))
        .await
        .context("the backlog was not delivered in time")?;
    let delivery_seconds = started.elapsed().as_secs_f64();
    let cpu_after = (
        worker.cpu_seconds(),
        gateway::own_cpu_seconds(),
        gateway::database_cpu_seconds(),
    );
    let worker_rss = worker.peak_rss();
    worker.stop().await?;
    let mb = |bytes: Option<u64>| bytes.map(|b| b as f64 / (1024.0 * 1024.0));
    let per_event = |before: Option<f64>, after: Option<f64>| Some((after? - before?) * 1e6 / events as f64);

    let (unique, duplicated) = counter.counts();
    Ok(Phase {
        name,
        events,
        ingest_seconds,
        ingest_events_per_second: events as f64 / ingest_seconds,
        delivery_seconds,
        delivery_events_per_second: events as f64 / delivery_seconds,
        ingress_peak_rss_mb: mb(ingress_rss),
        worker_peak_rss_mb: mb(worker_rss),
        gateway_cpu_us_per_event: per_event(cpu_before.0, cpu_after.0),
        harness_cpu_us_per_event: per_event(cpu_before.1, cpu_after.1),
        database_cpu_us_per_event: per_event(cpu_before.2, cpu_after.2),
        lost: events.saturating_sub(unique),
        bad_signatures: counter.bad_signatures(),
        duplicated,
    })
}

/// Appends a scenario's results to the file of `--record`, when given.
fn record(
    file: Option<&std::path::Path>,
    store: StoreKind,
    scenario: &str,
    settings: serde_json::Value,
    result: &impl Serialize,
) -> anyhow::Result<()> {
    match file {
        Some(file) => summary::Record::new(store, scenario, settings, result)?.append(file),
        None => Ok(()),
    }
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value))
            if name.starts_with("PAGEWIRE_") || name == "RUST_LOG" || name == "TOKIO_WORKER_THREADS" =>
        {
            Ok((name.to_owned(), value.to_owned()))
        }
        _ => Err(String::from(
            "expected PAGEWIRE_NAME=value, RUST_LOG=filter or TOKIO_WORKER_THREADS=n",
        )),
    }
}

/// `name=value` for `postgres -c`: a parameter's name (letters, digits, `_` and `.`) and a value.
fn parse_postgres_setting(s: &str) -> Result<String, String> {
    match s.split_once('=') {
        Some((name, value))
            if !name.is_empty()
                && !value.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') =>
        {
            Ok(s.to_owned())
        }
        _ => Err(String::from("expected name=value, as `postgres -c` takes it")),
    }
}

/// Posts `events` items in bodies of `batch`, 16 requests in flight, a realistic mix of kinds.
async fn send_backlog(url: &str, events: u64, batch: u64) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let kinds = [
        Kind::Message,
        Kind::Postback,
        Kind::QuickReply,
        Kind::Read,
        Kind::Message,
    ];
    let bodies: Vec<Vec<u8>> = (0..events.div_ceil(batch))
        .map(|b| {
            let first = b * batch;
            let items = (first..(first + batch).min(events))
                .map(|n| {
                    let psid = format!("61000000{:08}", n % 5000);
                    let kind = kinds[usize::try_from(n % 5).unwrap_or(0)];
                    kind.item(
                        PAGE_ID,
                        &psid,
                        1_747_231_892_100 + i64::try_from(n).unwrap_or(0),
                        "Hej äöå 👋",
                        n,
                    )
                })
                .collect();
            MetaBody::page().messaging(PAGE_ID, 1_747_231_892_100, items).to_bytes()
        })
        .collect();
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for body in bodies {
        let permit = std::sync::Arc::clone(&semaphore).acquire_owned().await?;
        let client = client.clone();
        let url = url.to_owned();
        tasks.spawn(async move {
            let _permit = permit;
            let response = pagewire_testkit::post_signed(&client, &url, APP_SECRET, body).await?;
            if !response.status().is_success() {
                bail!("the gateway answered {}", response.status());
            }
            Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_postgres_setting;

    #[test]
    fn postgres_settings_are_a_name_and_a_value() {
        assert_eq!(
            parse_postgres_setting("wal_init_zero=off").as_deref(),
            Ok("wal_init_zero=off")
        );
        assert_eq!(
            parse_postgres_setting("max_wal_size=8GB").as_deref(),
            Ok("max_wal_size=8GB")
        );
        for bad in ["wal_init_zero", "=off", "wal_init_zero=", "two words=1", "a;b=1"] {
            assert!(parse_postgres_setting(bad).is_err(), "{bad}");
        }
    }
}
