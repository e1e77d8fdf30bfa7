//! A `pagewire serve` process for the harness: started on a data directory (and, on PostgreSQL, a
//! database of the harness's own server), onboarded through its API, stopped with SIGTERM.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::receiver::Counter;

const ADMIN_TOKEN: &str = "pwadm_bench_operator_token_0123456789";

/// The database a measured node keeps its state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded SQLite file in the data directory.
    Sqlite,
    /// A database on a PostgreSQL server that the harness starts from the machine's binaries, with
    /// PostgreSQL's default durability (every commit flushed).
    Postgres,
}

/// A fresh data directory (the master key, and the SQLite file) and, on PostgreSQL, a fresh
/// database: what one measured run starts from. The nodes of one run share it.
#[derive(Debug)]
pub struct DataStore {
    dir: tempfile::TempDir,
    database_url: Option<String>,
}

/// Whether the harness measures its PostgreSQL server as it starts, without [`warm_wal`].
static POSTGRES_COLD: AtomicBool = AtomicBool::new(false);
/// Set once the server's WAL is warm.
static WAL_WARMED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

/// Measure the harness's PostgreSQL server brand new: every WAL segment a run fills is created
/// (and zero-filled) as it goes, as in a server's first gigabyte of writes.
pub fn measure_postgres_cold() {
    POSTGRES_COLD.store(true, Ordering::Relaxed);
}

/// Brings the server's WAL to where a server that has run a while has it: about 1 GB written and
/// checkpointed twice, so that the segments are recycled for the runs instead of each being
/// created, zero-filled and synced while commits wait (`wal_init_zero`). About ten seconds, once.
async fn warm_wal(url: &str) -> anyhow::Result<()> {
    eprintln!("warming the PostgreSQL server's WAL (about 1 GB, once; --postgres-cold skips it) ...");
    let mut db = sqlx::PgConnection::connect(url).await?;
    for statement in [
        "CREATE TABLE harness_wal_warmup AS SELECT repeat('x', 900) AS filler FROM generate_series(1, 1000000)",
        "DROP TABLE harness_wal_warmup",
        "CHECKPOINT",
        "CHECKPOINT",
    ] {
        sqlx::query(statement).execute(&mut db).await?;
    }
    db.close().await?;
    Ok(())
}

impl DataStore {
    pub async fn fresh(kind: StoreKind) -> anyhow::Result<Self> {
        let database_url = match kind {
            StoreKind::Sqlite => None,
            StoreKind::Postgres => {
                let url = pagewire_store::testing::pg_server::fresh_durable_database()
                    .await
                    .map_err(|e| anyhow::anyhow!("starting the harness's PostgreSQL server: {e}"))?;
                if !POSTGRES_COLD.load(Ordering::Relaxed) {
                    WAL_WARMED
                        .get_or_try_init(|| warm_wal(&url))
                        .await
                        .context("warming the PostgreSQL server's WAL")?;
                }
                Some(url)
            }
        };
        Ok(Self {
            dir: tempfile::tempdir()?,
            database_url,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// How the harness starts a measured node: the binary, the operator's settings, the store.
#[derive(Debug, Clone, Copy)]
pub struct Node<'a> {
    pub binary: &'a Path,
    /// `PAGEWIRE_…` settings (and `RUST_LOG`, `TOKIO_WORKER_THREADS`) for the node.
    pub env: &'a [(String, String)],
    pub store: StoreKind,
}

impl Node<'_> {
    /// Starts a node on `data` in `role`.
    pub async fn start(&self, data: &DataStore, role: Role) -> anyhow::Result<Gateway> {
        Gateway::start(self.binary, data, role, self.env).await
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Role {
    Ingress,
    Worker,
    All,
}

#[derive(Debug)]
pub struct Gateway {
    child: Child,
    base_url: String,
    client: reqwest::Client,
}

impl Gateway {
    /// Starts `binary serve` with the harness's settings and `settings` (`PAGEWIRE_…` variables).
    pub async fn start(
        binary: &Path,
        data: &DataStore,
        role: Role,
        settings: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let role = match role {
            Role::Ingress => "ingress",
            Role::Worker => "worker",
            Role::All => "all",
        };
        let mut command = Command::new(binary);
        if let Some(url) = &data.database_url {
            command.env("PAGEWIRE_DATABASE_URL", url);
        }
        let mut child = command
            .args(["serve", "--role", role])
            .env("PAGEWIRE_DATA_DIR", data.path())
            .env("PAGEWIRE_LISTEN", "127.0.0.1:0")
            .env("PAGEWIRE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("PAGEWIRE_ALLOW_PRIVATE_ENDPOINTS", "true")
            .env("PAGEWIRE_DELIVERY__POLL_INTERVAL_MS", "100")
            .env("RUST_LOG", "warn")
            .envs(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let base_url = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("pagewire listening on ") {
                    return Ok::<_, std::io::Error>(Some(url.trim().to_owned()));
                }
            }
            Ok(None)
        })
        .await
        .context("pagewire did not start within 30 s")??
        .context("pagewire exited before listening")?;
        Ok(Self {
            child,
            base_url,
            client: reqwest::Client::new(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// POSTs to the admin API; a 429 (the API's rate limit, met when setting up many tenants) is
    /// sent again after its `Retry-After`.
    async fn call(&self, path: &str, token: &str, body: Value) -> anyhow::Result<Value> {
        self.send(reqwest::Method::POST, path, token, body).await
    }

    /// Onboards a Page for the tenant: claimed with its key, approved by the operator (the harness
    /// has no Page access tokens to prove it with).
    async fn onboard_page(&self, tenant_id: &str, key: &str, page_id: &str, app_id: &str) -> anyhow::Result<()> {
        self.call("/v1/pages", key, json!({"page_id": page_id, "app_id": app_id}))
            .await?;
        let path = format!("/v1/tenants/{tenant_id}/pages/{page_id}");
        self.send(reqwest::Method::PUT, &path, ADMIN_TOKEN, json!({})).await?;
        Ok(())
    }

    async fn send(&self, method: reqwest::Method, path: &str, token: &str, body: Value) -> anyhow::Result<Value> {
        loop {
            let response = self
                .client
                .request(method.clone(), self.url(path))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?;
            let status = response.status();
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                let wait = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            let answer: Value = response.json().await?;
            if !status.is_success() {
                bail!("{method} {path} answered {status}: {answer}");
            }
            return Ok(answer);
        }
    }

    /// A tenant with a key, its own app and one Page; returns the key.
    pub async fn onboard(&self, app_id: &str, app_secret: &str, page_id: &str) -> anyhow::Result<String> {
        let tenant = self.call("/v1/tenants", ADMIN_TOKEN, json!({"name": "Bench"})).await?;
        let tenant_id = tenant["id"].as_str().context("no tenant id")?;
        let key = self
            .call(&format!("/v1/tenants/{tenant_id}/api-keys"), ADMIN_TOKEN, json!({}))
            .await?;
        let key = key["key"].as_str().context("no key")?.to_owned();
        self.call(
            "/v1/apps",
            &key,
            json!({"app_id": app_id, "app_secret": app_secret, "verify_token": "bench-harness-verify-token"}),
        )
        .await?;
        self.onboard_page(tenant_id, &key, page_id, app_id).await?;
        Ok(key)
    }

    /// The operator's shared app, to which many tenants' Pages subscribe.
    pub async fn shared_app(&self, app_id: &str, app_secret: &str) -> anyhow::Result<()> {
        self.call(
            "/v1/apps",
            ADMIN_TOKEN,
            json!({"app_id": app_id, "app_secret": app_secret, "verify_token": "bench-shared-app-verify-token"}),
        )
        .await?;
        Ok(())
    }

    /// A tenant with `pages` onboarded under the shared app `app_id`; returns its key.
    pub async fn tenant_with_pages(&self, name: &str, app_id: &str, pages: &[String]) -> anyhow::Result<String> {
        let tenant = self.call("/v1/tenants", ADMIN_TOKEN, json!({"name": name})).await?;
        let tenant_id = tenant["id"].as_str().context("no tenant id")?;
        let key = self
            .call(&format!("/v1/tenants/{tenant_id}/api-keys"), ADMIN_TOKEN, json!({}))
            .await?;
        let key = key["key"].as_str().context("no key")?.to_owned();
        for page in pages {
            self.onboard_page(tenant_id, &key, page, app_id).await?;
        }
        Ok(key)
    }

    /// `tenants` tenants with `pages_per_tenant` Pages each under the shared app `app_id`; returns
    /// each tenant's key and Pages.
    pub async fn tenants_with_pages(
        &self,
        app_id: &str,
        tenants: usize,
        pages_per_tenant: usize,
    ) -> anyhow::Result<Vec<(String, Vec<String>)>> {
        let mut onboarded = Vec::new();
        for t in 0..tenants.max(1) {
            let pages: Vec<String> = (0..pages_per_tenant.max(1))
                .map(|p| format!("1048{t:04}{p:07}"))
                .collect();
            let key = self.tenant_with_pages(&format!("Tenant {t}"), app_id, &pages).await?;
            onboarded.push((key, pages));
        }
        Ok(onboarded)
    }

    /// An endpoint of the tenant with `key` at the harness's receiver, which verifies every request
    /// with the endpoint's secret.
    pub async fn endpoint_at(&self, key: &str, receiver: &Counter, max_concurrency: u32) -> anyhow::Result<()> {
        let endpoint = self
            .create_endpoint(key, json!({"url": receiver.url(), "max_concurrency": max_concurrency}))
            .await?;
        receiver.verify_with(
            endpoint["secret"]
                .as_str()
                .context("the endpoint came without its secret")?,
        )
    }

    /// The gateway's peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Bytes the gateway has sent to storage so far (`write_bytes` of `/proc/<pid>/io`: the
    /// database file, its log and anything else it wrote).
    pub fn written_bytes(&self) -> Option<u64> {
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.child.id()?)).ok()?;
        io.lines()
            .find_map(|l| l.strip_prefix("write_bytes:"))?
            .trim()
            .parse()
            .ok()
    }

    /// CPU time the gateway has used so far (user and system, all threads), in seconds.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds_of(&self.child.id()?.to_string())
    }

    pub async fn create_endpoint(&self, key: &str, body: Value) -> anyhow::Result<Value> {
        self.call("/v1/endpoints", key, body).await
    }

    /// SIGTERM, and wait for the graceful exit.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            Command::new("kill").args(["-TERM", &pid.to_string()]).status().await?;
        }
        match tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!("pagewire exited with {status}");
                }
                Ok(())
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("pagewire did not stop within 60 s of SIGTERM")
            }
        }
    }
}

/// CPU time this process (the harness and its receivers) has used so far, in seconds.
pub fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds_of("self")
}

/// CPU time the harness's PostgreSQL server has used so far, in seconds: its postmaster, the
/// processes it runs (a backend per connection, the WAL writer, the checkpointer, autovacuum), and
/// those that have ended. `None` when no server runs (SQLite).
pub fn database_cpu_seconds() -> Option<f64> {
    let postmaster = pagewire_store::testing::pg_server::durable_server_pid()?;
    let own = ProcStat::of(&postmaster.to_string())?;
    let mut ticks = own.utime + own.stime + own.cutime + own.cstime;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        // A process that ended since the listing is counted in the postmaster's `cutime`.
        if let Some(child) = ProcStat::of(pid).filter(|stat| stat.ppid == postmaster) {
            ticks += child.utime + child.stime;
        }
    }
    Some(ticks / 100.0)
}

/// `utime + stime` from `/proc/<pid>/stat`, in seconds.
fn cpu_seconds_of(pid: &str) -> Option<f64> {
    ProcStat::of(pid).map(|stat| (stat.utime + stat.stime) / 100.0)
}

/// What the harness reads of `/proc/<pid>/stat`: times in the kernel's fixed 100 Hz user ticks.
struct ProcStat {
    ppid: u32,
    utime: f64,
    stime: f64,
    /// Of the children it has waited for.
    cutime: f64,
    cstime: f64,
}

impl ProcStat {
    fn of(pid: &str) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) may hold spaces; fields after it are counted from its `)`.
        let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
        Some(Self {
            ppid: fields.get(1)?.parse().ok()?,
            utime: ticks(11)?,
            stime: ticks(12)?,
            cutime: ticks(13)?,
            cstime: ticks(14)?,
        })
    }
}
