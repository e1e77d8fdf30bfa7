//! The effective configuration: built-in defaults, then a TOML file, then `PAGEWIRE_*` environment
//! variables, then command-line flags. Validated once at start; secrets never printed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use pagewire_core::Secret;
use pagewire_server::Role;
use serde::{Deserialize, Serialize};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "pagewire.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Every setting of `pagewire serve`. The top-level names match the environment variables
/// (`listen` is `PAGEWIRE_LISTEN`); nested ones use `__` (`PAGEWIRE_DELIVERY__CONCURRENCY`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Connections held open at once (webhooks, admin API and dashboard together); at the bound
    /// new connections wait in the kernel's backlog until one closes, so that a flood of
    /// connections cannot take the node's memory.
    pub max_connections: usize,
    /// Seconds a connection may wait for a request (or for the rest of a request's head) before it
    /// is closed: idle connections do not hold the bound.
    pub idle_timeout_secs: u64,
    /// Where the embedded database, the generated master key and the admin token hash live.
    pub data_dir: PathBuf,
    /// `sqlite://path` (default: `pagewire.db` in the data dir), or `postgres://…` for a PostgreSQL
    /// database that several nodes share.
    pub database_url: Option<Secret>,
    /// The operator's bearer token. Default: generated on first start, its hash kept in the data dir.
    pub admin_token: Option<Secret>,
    /// 32 bytes (64 hex digits or base64) that seal secrets at rest. Default: generated into the
    /// data dir (mode 0600).
    pub master_key: Option<Secret>,
    /// Let endpoints use loopback and private addresses (local development and tests only).
    pub allow_private_endpoints: bool,
    /// Non-public networks endpoints may use all the same, as CIDRs (`["10.20.0.0/16"]`).
    pub endpoint_allowed_networks: Vec<String>,
    /// Refuse endpoint URLs that are not https.
    pub https_only_endpoints: bool,
    /// The Graph API's base URL (a fake one in tests).
    pub graph_url: String,
    /// The Graph API version in every call's path.
    pub graph_version: String,
    /// The gateway's address as Meta reaches it (`https://hooks.example.com`): the callback URL
    /// `PUT /v1/apps/{app_id}/subscription` gives Meta is `<public_url>/webhooks/meta/<app_id>`.
    pub public_url: Option<String>,
    /// `all`, `ingress` (HTTP only) or `worker` (delivery only).
    pub role: Role,
    pub log_format: LogFormat,
    /// Days during which Meta's redeliveries of an item are recognized and dropped, counted from
    /// the item's time (Meta retries WhatsApp webhooks for up to 7 days).
    pub dedup_window_days: u64,
    /// Days final events, deliveries, attempts and raw POSTs are kept (a tenant can have its own;
    /// a raw POST stays as long as any of its events, whose items are read from it).
    pub retention_days: u64,
    pub delivery: DeliverySection,
    pub api: ApiSection,
    pub ingest: IngestSection,
}

/// How ingress commits what it accepts (group commit).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSection {
    /// Most webhook requests in one transaction (1 commits each request on its own: a baseline for
    /// measuring what group commit buys, not for production).
    pub max_requests: usize,
    /// Most events in one transaction.
    pub max_events: usize,
    /// Webhook requests waiting to be written; beyond this the node answers 503 `overloaded`
    /// (Meta sends again) instead of holding ever more requests in memory.
    pub queue: usize,
    /// Webhook requests handled at once; beyond this the node answers 503 `overloaded` before
    /// reading the body.
    pub max_in_flight: usize,
    /// Transactions written at once; unset: 1 on SQLite (one connection writes), 4 on PostgreSQL
    /// (batches fill while others commit).
    pub writers: Option<usize>,
    /// Microseconds a batch waits for more requests when the previous commit has just ended (under
    /// load), so that commits stay large enough to keep up; 0: never. A batch that holds
    /// `linger_requests` stops waiting, so a writer holds the queue from the others no longer.
    pub linger_us: u64,
    /// Requests after which a lingering batch stops waiting and commits (with what is already
    /// queued).
    pub linger_requests: usize,
}

impl Default for IngestSection {
    fn default() -> Self {
        let defaults = pagewire_server::IngestConfig::default();
        Self {
            max_requests: defaults.max_requests,
            max_events: defaults.max_events,
            queue: defaults.queue,
            max_in_flight: defaults.max_in_flight,
            writers: None,
            linger_us: u64::try_from(defaults.linger.as_micros()).unwrap_or(u64::MAX),
            linger_requests: defaults.linger_requests,
        }
    }
}

/// The `/v1` admin API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// Seconds a token from `POST /v1/auth/token` is valid.
    pub token_ttl_secs: u64,
    /// Requests per second one credential may make, on average (0 turns the limit off).
    pub rate_limit_per_second: u32,
    /// Requests one credential may make at once before the average applies.
    pub rate_limit_burst: u32,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            token_ttl_secs: 900,
            rate_limit_per_second: 20,
            rate_limit_burst: 100,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySection {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Whole-request timeout of a delivery, in seconds.
    pub request_timeout_secs: u64,
    /// How often due retries are looked for, in milliseconds.
    pub poll_interval_ms: u64,
    /// Seconds to wait before each retry; the delivery gives up after the last. Each wait is spread
    /// by ±20 %.
    pub retry_schedule_secs: Vec<u64>,
    /// Days an endpoint may fail without a single success before it is disabled.
    pub disable_after_days: u64,
    /// A forward proxy every delivery goes through (`http://user:password@proxy.internal:3128`),
    /// once its target's own addresses pass the destination policy. Proxies named in the
    /// environment (`HTTP_PROXY`, …) are never used. Redacted when printed: it may hold a password.
    pub proxy: Option<Secret>,
}

impl Default for DeliverySection {
    fn default() -> Self {
        Self {
            concurrency: 512,
            request_timeout_secs: 15,
            poll_interval_ms: 1000,
            retry_schedule_secs: vec![5, 300, 1800, 7200, 18_000, 36_000, 50_400, 72_000, 86_400],
            disable_after_days: 5,
            proxy: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_connections: 1024,
            idle_timeout_secs: 30,
            data_dir: PathBuf::from("./pagewire-data"),
            database_url: None,
            admin_token: None,
            master_key: None,
            allow_private_endpoints: false,
            endpoint_allowed_networks: Vec::new(),
            https_only_endpoints: false,
            graph_url: String::from("https://graph.facebook.com"),
            graph_version: String::from("v21.0"),
            public_url: None,
            role: Role::All,
            log_format: LogFormat::Text,
            dedup_window_days: 7,
            retention_days: 30,
            delivery: DeliverySection::default(),
            api: ApiSection::default(),
            ingest: IngestSection::default(),
        }
    }
}

/// Values given as flags; `None` leaves the layers below in force.
#[derive(Debug, Default, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_private_endpoints: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

impl Config {
    /// Layers defaults, the TOML file, the environment and the flags, then validates.
    pub fn load(file: Option<&Path>, flags: &FlagOverrides) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.is_file() {
                    bail!("the config file {} does not exist", path.display());
                }
                figment = figment.merge(Toml::file(path));
            }
            None => figment = figment.merge(Toml::file(DEFAULT_CONFIG_FILE)),
        }
        // Variables other commands read (`--config`, `simulate`, `receive`) are not settings.
        let env = Env::prefixed("PAGEWIRE_")
            .split("__")
            .ignore(&["config", "simulate_app_secret", "receive_secret"]);
        let config: Config = figment
            .merge(env)
            .merge(Serialized::defaults(flags))
            .extract()
            .context("the configuration is not valid")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.delivery.concurrency == 0 {
            bail!("delivery.concurrency must be at least 1");
        }
        if self.delivery.request_timeout_secs == 0 || self.delivery.request_timeout_secs > 300 {
            bail!("delivery.request_timeout_secs must be between 1 and 300");
        }
        if self.delivery.disable_after_days == 0 || self.delivery.disable_after_days > 365 {
            bail!("delivery.disable_after_days must be between 1 and 365");
        }
        if self.delivery.retry_schedule_secs.len() > 50 || self.delivery.retry_schedule_secs.contains(&0) {
            bail!("delivery.retry_schedule_secs takes at most 50 waits of at least one second");
        }
        self.destinations()?;
        self.delivery_proxy()?;
        if self.dedup_window_days == 0 || self.dedup_window_days > 365 {
            bail!("dedup_window_days must be between 1 and 365");
        }
        if self.retention_days < self.dedup_window_days || self.retention_days > 3650 {
            bail!(
                "retention_days must be between dedup_window_days ({}) and 3650",
                self.dedup_window_days
            );
        }
        if let Some(token) = &self.admin_token {
            if token.expose().len() < 16 {
                bail!("PAGEWIRE_ADMIN_TOKEN must be at least 16 characters");
            }
        }
        if let Some(key) = &self.master_key {
            pagewire_core::MasterKey::parse(key.expose())
                .context("PAGEWIRE_MASTER_KEY must be 32 bytes as 64 hex digits or base64")?;
        }
        if let Some(url) = &self.database_url {
            let url = url.expose();
            if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                bail!("PAGEWIRE_DATABASE_URL must start with sqlite:, postgres:// or postgresql://");
            }
        }
        Ok(())
    }

    /// Where endpoint URLs may point.
    pub fn destinations(&self) -> anyhow::Result<pagewire_delivery::DestinationPolicy> {
        let allowed_networks = self
            .endpoint_allowed_networks
            .iter()
            .map(|net| {
                net.parse()
                    .with_context(|| format!("endpoint_allowed_networks: `{net}` is not a CIDR"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(pagewire_delivery::DestinationPolicy {
            allow_private: self.allow_private_endpoints,
            allowed_networks,
            https_only: self.https_only_endpoints,
        })
    }

    /// The proxy deliveries go through, if one is set (an empty value sets none).
    pub fn delivery_proxy(&self) -> anyhow::Result<Option<pagewire_delivery::DeliveryProxy>> {
        self.delivery
            .proxy
            .as_ref()
            .filter(|url| !url.expose().trim().is_empty())
            .map(|url| {
                pagewire_delivery::DeliveryProxy::parse(url.expose().trim())
                    .context("PAGEWIRE_DELIVERY__PROXY (delivery.proxy) is not a usable proxy URL")
            })
            .transpose()
    }

    /// The configuration as TOML, every secret shown as `[redacted]`.
    pub fn to_redacted_toml(&self) -> anyhow::Result<String> {
        toml::to_string_pretty(self).context("rendering the configuration")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = Config::default();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.data_dir, PathBuf::from("./pagewire-data"));
        assert!(!config.allow_private_endpoints);
    }

    #[test]
    fn printing_redacts_secrets() -> anyhow::Result<()> {
        let config = Config {
            admin_token: Some(Secret::new(String::from("pwadm_supersecretvalue"))),
            master_key: Some(Secret::new("ab".repeat(32))),
            database_url: Some(Secret::new(String::from("postgres://u:hunter2@db/pagewire"))),
            delivery: DeliverySection {
                proxy: Some(Secret::new(String::from(
                    "http://pagewire:proxypass@proxy.internal:3128",
                ))),
                ..DeliverySection::default()
            },
            ..Config::default()
        };
        let printed = config.to_redacted_toml()?;
        assert!(!printed.contains("supersecret"));
        assert!(!printed.contains("abab"));
        assert!(!printed.contains("hunter2"));
        assert!(!printed.contains("proxypass"));
        assert!(printed.contains("[redacted]"));
        Ok(())
    }

    #[test]
    fn a_delivery_proxy_must_be_an_http_or_https_url() -> anyhow::Result<()> {
        let with_proxy = |url: &str| Config {
            delivery: DeliverySection {
                proxy: Some(Secret::new(url.to_owned())),
                ..DeliverySection::default()
            },
            ..Config::default()
        };
        assert!(with_proxy("http://u:p@proxy.internal:3128").delivery_proxy()?.is_some());
        assert!(with_proxy("").delivery_proxy()?.is_none(), "empty sets none");
        assert!(Config::default().delivery_proxy()?.is_none());
        for bad in [
            "socks5://proxy.internal:1080",
            "proxy.internal:3128",
            "http://proxy.internal/path",
        ] {
            let error = with_proxy(bad).validate().err().map(|e| format!("{e:#}"));
            assert!(
                error.as_deref().is_some_and(|e| e.contains("PAGEWIRE_DELIVERY__PROXY")),
                "{bad}: {error:?}"
            );
        }
        Ok(())
    }
}
