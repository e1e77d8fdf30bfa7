//! `pagewire-bench`: the load harness. It runs a real `pagewire serve` process (built with
//! `cargo build --release -p pagewire`), feeds it signed Meta webhooks through the test kit's
//! simulator, and counts every event at its own receivers, so throughput, loss and duplicates are
//! measured rather than assumed.
//!
//! ```sh
//! cargo build --release -p pagewire -p pagewire-bench
//! target/release/pagewire-bench delivery --events 100000
//! ```

mod gateway;
mod receiver;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use pagewire_testkit::{Kind, MetaBody};
use serde::Serialize;
use serde_json::json;

use crate::gateway::{Gateway, Role};
use crate::receiver::{Counter, HangingEndpoint};

const APP_ID: &str = "4242424242";
const APP_SECRET: &str = "bench-app-secret-0123456789abcdef";
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
    /// A setting for the gateway, as `PAGEWIRE_NAME=value` or `RUST_LOG=filter` (repeatable).
    #[arg(long = "gateway-env", value_parser = parse_setting)]
    gateway_env: Vec<(String, String)>,
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
    },
}

#[derive(Debug, Serialize)]
struct Phase {
    name: &'static str,
    events: u64,
    ingest_seconds: f64,
    ingest_events_per_second: f64,
    delivery_seconds: f64,
    delivery_events_per_second: f64,
    lost: u64,
    duplicated: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.pagewire.is_file() {
        bail!(
            "{} does not exist: run `cargo build --release -p pagewire` first",
            args.pagewire.display()
        );
    }
    let phases = match args.scenario {
        Scenario::Delivery {
            events,
            batch,
            concurrency,
        } => {
            let env = &args.gateway_env;
            let run = Run {
                binary: &args.pagewire,
                env,
                events,
                batch,
                concurrency,
            };
            let alone = delivery(&run, "fast endpoint alone", false).await?;
            let beside = delivery(&run, "beside a dead endpoint", true).await?;
            vec![alone, beside]
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&phases)?);
    } else {
        println!(
            "{:<24} {:>9} {:>14} {:>16} {:>6} {:>11}",
            "phase", "events", "ingest ev/s", "delivery ev/s", "lost", "duplicated"
        );
        for p in &phases {
            println!(
                "{:<24} {:>9} {:>14.0} {:>16.0} {:>6} {:>11}",
                p.name, p.events, p.ingest_events_per_second, p.delivery_events_per_second, p.lost, p.duplicated
            );
        }
        if let [alone, beside] = phases.as_slice() {
            println!(
                "beside a dead endpoint, the fast one keeps {:.0} % of its delivery throughput",
                100.0 * beside.delivery_events_per_second / alone.delivery_events_per_second
            );
        }
    }
    if phases.iter().any(|p| p.lost > 0) {
        bail!("events were lost");
    }
    Ok(())
}

/// What every phase of a delivery run shares.
struct Run<'a> {
    binary: &'a std::path::Path,
    env: &'a [(String, String)],
    events: u64,
    batch: u64,
    concurrency: u32,
}

/// One measured run on a fresh data directory.
async fn delivery(run: &Run<'_>, name: &'static str, dead: bool) -> anyhow::Result<Phase> {
    let Run {
        binary,
        env,
        events,
        batch,
        concurrency: fast_concurrency,
    } = *run;
    let data = tempfile::tempdir()?;
    let counter = Counter::start().await?;
    let hanging = HangingEndpoint::start().await?;

    // Fill the backlog with a node that only ingests.
    let ingress = Gateway::start(binary, data.path(), Role::Ingress, env).await?;
    let key = ingress.onboard(APP_ID, APP_SECRET, PAGE_ID).await?;
    ingress
        .create_endpoint(&key, json!({"url": counter.url(), "max_concurrency": fast_concurrency}))
        .await?;
    if dead {
        ingress.create_endpoint(&key, json!({"url": hanging.url()})).await?;
    }
    let started = Instant::now();
    send_backlog(&ingress.url("/webhooks/meta"), events, batch).await?;
    let ingest_seconds = started.elapsed().as_secs_f64();
    ingress.stop().await?;

    // Drain it with a node that only delivers.
    let worker = Gateway::start(binary, data.path(), Role::Worker, env).await?;
    let started = Instant::now();
    counter
        .wait_for(events, Duration::from_secs(600))
        .await
        .context("the backlog was not delivered in time")?;
    let delivery_seconds = started.elapsed().as_secs_f64();
    worker.stop().await?;

    let (unique, duplicated) = counter.counts();
    Ok(Phase {
        name,
        events,
        ingest_seconds,
        ingest_events_per_second: events as f64 / ingest_seconds,
        delivery_seconds,
        delivery_events_per_second: events as f64 / delivery_seconds,
        lost: events.saturating_sub(unique),
        duplicated,
    })
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if name.starts_with("PAGEWIRE_") || name == "RUST_LOG" => {
            Ok((name.to_owned(), value.to_owned()))
        }
        _ => Err(String::from("expected PAGEWIRE_NAME=value or RUST_LOG=filter")),
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
