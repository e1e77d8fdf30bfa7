//! Where an SQLite node's commits write: the pages of a copy of its database log (WAL), commit by
//! commit, counted by the table or index each page belongs to.
//!
//! Every page a commit changes is appended to the log whole (a page of the database's size, 8 KiB
//! in those the node creates), and copied into the database file later: what a webhook costs the
//! disk is the pages its commit changes, shared with the others of the commit. A table's rows fill
//! pages in order; an index takes a leaf page wherever its key lands (an index led by the tenant:
//! one place per tenant in each commit), and every b-tree whose leaf fills rewrites the pages
//! above it.
//!
//! The copy is taken while the load runs (the log of the last checkpoint's cycle: its frames carry
//! the salts of the log's header); the pages are attributed from the `dbstat` table of the
//! database once the node has stopped (in an append-only run a page stays with its b-tree).

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;
use sqlx::{ConnectOptions as _, Connection as _};

/// The log's header, then each frame's header before its page.
const WAL_HEADER: usize = 32;
const FRAME_HEADER: usize = 24;

/// Pages per commit written by one b-tree.
#[derive(Debug, Clone, Serialize)]
pub struct BtreePages {
    pub name: String,
    pub leaf: f64,
    pub interior: f64,
}

/// What the commits of a log copy wrote.
#[derive(Debug, Clone, Serialize)]
pub struct CommitPages {
    pub commits: usize,
    /// The database's page size, in bytes.
    pub page_size: u32,
    pub pages_per_commit: f64,
    /// Largest first.
    pub btrees: Vec<BtreePages>,
}

/// The page numbers of each commit in `wal`, a copy of a database log: the frames after the header
/// that carry its salts (older ones are left from earlier cycles of the log), up to the last
/// commit frame (one with the database's size in pages).
pub fn commits(wal: &[u8]) -> Vec<Vec<u32>> {
    let be = |at: usize| {
        wal.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (Some(page_size), Some(salt1), Some(salt2)) = (be(8), be(16), be(20)) else {
        return Vec::new();
    };
    let frame = FRAME_HEADER + page_size as usize;
    let mut commits = Vec::new();
    let mut pending = Vec::new();
    let mut at = WAL_HEADER;
    while at + frame <= wal.len() {
        let (Some(page), Some(size_after), Some(s1), Some(s2)) = (be(at), be(at + 4), be(at + 8), be(at + 12)) else {
            break;
        };
        if (s1, s2) != (salt1, salt2) {
            break;
        }
        pending.push(page);
        if size_after != 0 {
            commits.push(std::mem::take(&mut pending));
        }
        at += frame;
    }
    commits
}

/// The commits' pages counted by b-tree, attributed with the `dbstat` table of the database at
/// `db` (opened read-only).
pub async fn attribute(db: &Path, commits: &[Vec<u32>]) -> anyhow::Result<CommitPages> {
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .with_context(|| format!("opening {}", db.display()))?;
    let owners: Vec<(i64, String, String)> = sqlx::query_as("SELECT pageno, name, pagetype FROM dbstat")
        .fetch_all(&mut conn)
        .await
        .context("reading dbstat")?;
    let (page_size,): (u32,) = sqlx::query_as("PRAGMA page_size")
        .fetch_one(&mut conn)
        .await
        .context("reading the page size")?;
    conn.close().await?;
    let owners: HashMap<i64, (String, bool)> = owners
        .into_iter()
        .map(|(page, name, kind)| (page, (name, kind == "leaf")))
        .collect();
    let mut counted: HashMap<&str, (u64, u64)> = HashMap::new();
    for page in commits.iter().flatten() {
        let (name, leaf) = owners
            .get(&i64::from(*page))
            .map_or(("(free or past the end)", true), |(name, leaf)| (name.as_str(), *leaf));
        let entry = counted.entry(name).or_default();
        if leaf {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    let n = commits.len().max(1) as f64;
    let mut btrees: Vec<BtreePages> = counted
        .into_iter()
        .map(|(name, (leaf, interior))| BtreePages {
            name: name.to_owned(),
            leaf: leaf as f64 / n,
            interior: interior as f64 / n,
        })
        .collect();
    btrees.sort_by(|a, b| (b.leaf + b.interior).total_cmp(&(a.leaf + a.interior)));
    Ok(CommitPages {
        commits: commits.len(),
        page_size,
        pages_per_commit: commits.iter().map(Vec::len).sum::<usize>() as f64 / n,
        btrees,
    })
}

impl CommitPages {
    pub fn print(&self, name: &str) {
        println!(
            "\n{name}: {} commits in the log's copy, {:.1} pages ({} KiB) each",
            self.commits,
            self.pages_per_commit,
            self.page_size / 1024
        );
        println!(
            "{:<36} {:>8} {:>9} {:>7}",
            "table or index", "leaf", "interior", "share"
        );
        for b in &self.btrees {
            println!(
                "{:<36} {:>8.2} {:>9.2} {:>6.0} %",
                b.name,
                b.leaf,
                b.interior,
                (b.leaf + b.interior) * 100.0 / self.pages_per_commit.max(f64::MIN_POSITIVE)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log of page size 8 with two commits of the current salts, then a frame left from an
    /// earlier cycle.
    #[test]
    fn reads_the_commits_of_the_current_cycle() {
        let mut wal = vec![0_u8; WAL_HEADER];
        wal[8..12].copy_from_slice(&8_u32.to_be_bytes());
        wal[16..24].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let frame = |page: u32, size_after: u32, salts: [u8; 8]| {
            let mut f = vec![0_u8; FRAME_HEADER + 8];
            f[0..4].copy_from_slice(&page.to_be_bytes());
            f[4..8].copy_from_slice(&size_after.to_be_bytes());
            f[8..16].copy_from_slice(&salts);
            f
        };
        let current = [1, 2, 3, 4, 5, 6, 7, 8];
        for (page, size_after, salts) in [
            (5, 0, current),
            (9, 0, current),
            (1, 40, current),
            (7, 41, current),
            (3, 0, [9; 8]),
            (4, 42, [9; 8]),
        ] {
            wal.extend(frame(page, size_after, salts));
        }
        assert_eq!(commits(&wal), vec![vec![5, 9, 1], vec![7]]);
        assert!(commits(&wal[..10]).is_empty());
    }
}
