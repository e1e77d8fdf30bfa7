//! End to end: Meta's webhooks into a node that ingests and delivers (`--role all`), every tenant's
//! events to its own endpoint at the harness's receiver. Measures what a tenant lives with: how fast
//! Meta is acknowledged, how long an event takes from Meta's POST to the tenant's app, and whether
//! every event arrived exactly once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use crate::gateway::{DataStore, Node, Role};
use crate::http1::Target;
use crate::ingest::{self, Bodies, Load, Timeline};
use crate::receiver::{Counter, Mode};
use crate::{APP_ID, APP_SECRET};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Steady: webhooks per second, each sent on its schedule (open loop).
    #[arg(long, default_value_t = 5000, conflicts_with = "burst")]
    rate: u64,
    /// Steady: how long to send.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// A burst of this many webhooks, sent as fast as `--connections` in flight allow.
    #[arg(long)]
    burst: Option<u64>,
    /// Burst: requests in flight.
    #[arg(long, default_value_t = 256)]
    connections: usize,
    #[arg(long, default_value_t = 4)]
    tenants: usize,
    #[arg(long, default_value_t = 25)]
    pages_per_tenant: usize,
    /// Each tenant's endpoint's `max_concurrency`.
    #[arg(long, default_value_t = 64)]
    endpoint_concurrency: u32,
    /// Send the mix (batches of 10 and 100 items among one-item bodies) instead of one-item bodies.
    #[arg(long)]
    mix: bool,
}

impl Args {
    /// The burst's size, if this is a burst (else a steady run).
    pub fn burst(&self) -> Option<u64> {
        self.burst
    }

    /// The steady rate, in webhooks per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }
}

/// What an end-to-end run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    name: String,
    webhooks: u64,
    events: u64,
    ingest: ingest::IngestReport,
    /// From a webhook's due time (steady) or send time (burst) to its event's arrival at the
    /// receiver, in milliseconds.
    e2e_p50_ms: Option<f64>,
    e2e_p99_ms: Option<f64>,
    e2e_p999_ms: Option<f64>,
    e2e_max_ms: Option<f64>,
    /// Events delivered per second, from the first webhook sent to the last event received.
    delivered_events_per_second: f64,
    /// How long the last events took to arrive after the last webhook was acknowledged.
    drain_after_last_ack_seconds: f64,
    lost: u64,
    duplicated: u64,
    bad_signatures: u64,
    peak_rss_mb: Option<f64>,
}

impl Report {
    pub fn print(&self) {
        let ms = |v: Option<f64>| v.map_or_else(|| String::from("-"), |v| format!("{v:.1}"));
        println!("{}", self.name);
        println!(
            "  sent        {} webhooks, {} events acknowledged: {:.0} webhooks/s, {:.0} events/s",
            self.webhooks, self.events, self.ingest.requests_per_second, self.ingest.events_per_second
        );
        println!(
            "  ack         p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.1} ms; {} shed (503), {} errors",
            self.ingest.ack_p50_ms,
            self.ingest.ack_p99_ms,
            self.ingest.ack_p999_ms,
            self.ingest.ack_max_ms,
            self.ingest.shed,
            self.ingest.errors
        );
        if let Some(lateness) = self.ingest.lateness() {
            println!("  generator   {lateness}");
        }
        println!(
            "  to customer p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms",
            ms(self.e2e_p50_ms),
            ms(self.e2e_p99_ms),
            ms(self.e2e_p999_ms),
            ms(self.e2e_max_ms)
        );
        println!(
            "  delivered   {:.0} events/s; the last arrived {:.2} s after the last ack",
            self.delivered_events_per_second, self.drain_after_last_ack_seconds
        );
        println!(
            "  lost {}, duplicated {}, bad signatures {}, gateway peak RSS {} MB",
            self.lost,
            self.duplicated,
            self.bad_signatures,
            self.peak_rss_mb
                .map_or_else(|| String::from("-"), |v| format!("{v:.0}"))
        );
    }

    /// Fails the run when Meta was not acknowledged, an event was lost, or a signature was wrong.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.ingest.errors > 0 {
            bail!("{} webhooks were answered with neither 200 nor 503", self.ingest.errors);
        }
        if self.lost > 0 {
            bail!("{} events were lost", self.lost);
        }
        if self.bad_signatures > 0 {
            bail!("{} deliveries did not verify", self.bad_signatures);
        }
        Ok(())
    }
}

pub async fn run(node: &Node<'_>, args: &Args) -> anyhow::Result<Report> {
    let data = DataStore::fresh(node.store).await?;
    let counter = Counter::start(Mode::Fast).await?;
    let gateway = node.start(&data, Role::All).await?;
    gateway.shared_app(APP_ID, APP_SECRET).await?;
    let mut pages = Vec::new();
    for (key, mine) in gateway
        .tenants_with_pages(APP_ID, args.tenants, args.pages_per_tenant)
        .await?
    {
        gateway.endpoint_at(&key, &counter, args.endpoint_concurrency).await?;
        pages.extend(mine);
    }

    let webhooks = args
        .burst
        .unwrap_or_else(|| args.rate.saturating_mul(args.seconds.max(1)));
    let timeline = Arc::new(Timeline::new(webhooks));
    counter.time_with(Arc::clone(&timeline));
    let load = Arc::new(Load {
        target: Target::parse(&gateway.url("/webhooks/meta"))?,
        bodies: Arc::new(Bodies::new(&pages, APP_SECRET, args.mix)),
        timeline: Some(timeline),
    });
    let started = Instant::now();
    let (name, ingest) = match args.burst {
        Some(burst) => (
            format!("burst of {burst} webhooks, {} in flight", args.connections),
            ingest::closed_loop(
                Arc::clone(&load),
                args.connections,
                Duration::from_secs(3600),
                Some(burst),
            )
            .await,
        ),
        None => (
            format!("steady {} webhooks/s for {} s", args.rate, args.seconds.max(1)),
            ingest::open_loop(Arc::clone(&load), args.rate, Duration::from_secs(args.seconds.max(1))).await?,
        ),
    };
    let last_ack = Instant::now();
    // Every acknowledged event must arrive; one of a webhook that was not acknowledged may or may
    // not (Meta would send it again).
    let events = ingest.events;
    let arrived = counter.wait_for(events, Duration::from_secs(600)).await.is_ok();
    let finished = Instant::now();
    let peak_rss = gateway.peak_rss();
    gateway.stop().await?;
    if !arrived {
        eprintln!("not every event arrived within 10 minutes of the last acknowledgement");
    }

    let (unique, duplicated) = counter.counts();
    let latency = counter.latency_ms();
    Ok(Report {
        name,
        webhooks: ingest.requests + ingest.shed + ingest.errors,
        events,
        e2e_p50_ms: latency.map(|l| l.0),
        e2e_p99_ms: latency.map(|l| l.1),
        e2e_p999_ms: latency.map(|l| l.2),
        e2e_max_ms: latency.map(|l| l.3),
        delivered_events_per_second: unique as f64 / finished.duration_since(started).as_secs_f64(),
        drain_after_last_ack_seconds: finished.duration_since(last_ack).as_secs_f64(),
        lost: events.saturating_sub(unique),
        duplicated,
        bad_signatures: counter.bad_signatures(),
        peak_rss_mb: peak_rss.map(|b| b as f64 / (1024.0 * 1024.0)),
        ingest,
    })
}
