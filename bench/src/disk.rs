//! What the disk under the data directory sustains: sequential 4 MiB writes, durable every 32 MiB,
//! measured second by second. The gateway's own writes are the same kind (log frames appended and
//! synced, then the pages copied into the database file), so its sustained ingest is bounded by
//! this rate divided by the bytes it writes per webhook.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

const CHUNK: usize = 4 << 20;
const CHUNKS_PER_SYNC: usize = 8;

#[derive(Debug, Serialize)]
pub struct DiskReport {
    /// MB (10^6 bytes) made durable in each second of the run.
    pub mb_per_second: Vec<f64>,
    pub first_second_mb: f64,
    /// The median of the last half of the run: what the disk sustains once any burst is spent.
    pub sustained_mb_per_second: f64,
    pub total_mb: f64,
}

impl DiskReport {
    pub fn print(&self) {
        let seconds: Vec<String> = self.mb_per_second.iter().map(|mb| format!("{mb:.0}")).collect();
        println!("durable sequential writes, MB/s by second: {}", seconds.join(" "));
        println!(
            "first second {:.0} MB/s, sustained (median of the last half) {:.0} MB/s, {:.0} MB in all",
            self.first_second_mb, self.sustained_mb_per_second, self.total_mb
        );
    }
}

pub fn run(duration: Duration) -> anyhow::Result<DiskReport> {
    let mut file = tempfile::tempfile().context("creating a file in the temporary directory")?;
    // Incompressible, as the disk or its host may compress.
    let mut chunk = vec![0_u8; CHUNK];
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    for byte in &mut chunk {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state.to_le_bytes()[0];
    }
    let started = Instant::now();
    let mut second_started = started;
    let mut in_second = 0_usize;
    let mut mb_per_second = Vec::new();
    let mut total = 0_usize;
    while started.elapsed() < duration {
        for _ in 0..CHUNKS_PER_SYNC {
            file.write_all(&chunk).context("writing")?;
        }
        file.sync_data().context("syncing")?;
        in_second += CHUNK * CHUNKS_PER_SYNC;
        total += CHUNK * CHUNKS_PER_SYNC;
        let elapsed = second_started.elapsed();
        if elapsed >= Duration::from_secs(1) {
            mb_per_second.push(in_second as f64 / 1e6 / elapsed.as_secs_f64());
            second_started = Instant::now();
            in_second = 0;
        }
    }
    let mut last_half: Vec<f64> = mb_per_second[mb_per_second.len() / 2..].to_vec();
    last_half.sort_by(f64::total_cmp);
    Ok(DiskReport {
        first_second_mb: mb_per_second.first().copied().unwrap_or(0.0),
        sustained_mb_per_second: last_half.get(last_half.len() / 2).copied().unwrap_or(0.0),
        total_mb: total as f64 / 1e6,
        mb_per_second,
    })
}
