//! `pagewire tenant …` and `pagewire key …`: the operator's commands for tenants and their API keys.
//!
//! They work on the database directly, found exactly as `pagewire serve` finds it (the data dir or
//! `PAGEWIRE_DATABASE_URL`, and the master key), and create and migrate it like `pagewire migrate`
//! when it does not exist yet, so a tenant can be set up before the first start. They can run while
//! the gateway runs: SQLite lets both write, and the gateway reads keys from the database on every
//! request, so a revocation applies at once.

use std::path::PathBuf;

use anyhow::{bail, Context};
use pagewire_core::clock::rfc3339_ms;
use pagewire_core::{ApiKeyId, Clock, SystemClock, TenantId};
use pagewire_server::auth::{generate_token, hash_api_key, API_KEY_PREFIX};
use pagewire_store::{ApiKey, KeyRole, NewApiKey, Store, StoreError, Tenant};
use serde::Serialize;

use crate::config::{Config, FlagOverrides};
use crate::serve;

/// The longest name a tenant or a key may have, as the admin API allows.
const MAX_NAME: usize = 200;

/// Where the database is: the options of `pagewire serve` that find it.
#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    /// Data directory [env: PAGEWIRE_DATA_DIR] [default: ./pagewire-data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl DbArgs {
    pub fn overrides(&self) -> FlagOverrides {
        FlagOverrides {
            data_dir: self.data_dir.clone(),
            ..FlagOverrides::default()
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and print its id.
    Create {
        /// The tenant's name (1 to 200 characters).
        name: String,
        /// Print the tenant as JSON (id, name, created_at).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List the tenants.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
}

impl TenantCommand {
    pub fn db(&self) -> &DbArgs {
        match self {
            Self::Create { db, .. } | Self::List { db, .. } => db,
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Create an API key for a tenant and print it; it is shown only this once.
    Create {
        /// The tenant the key belongs to (ten_…).
        #[arg(long = "tenant", value_name = "TENANT_ID")]
        tenant_id: TenantId,
        /// A name to tell the key apart (1 to 200 characters).
        #[arg(long)]
        name: Option<String>,
        /// What the key may do.
        #[arg(long, value_enum, default_value_t = RoleArg::Admin)]
        role: RoleArg,
        /// Print {id, tenant_id, name, role, key} as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// List a tenant's API keys, revoked ones included (the keys themselves are never kept).
    List {
        /// The tenant whose keys to list (ten_…).
        #[arg(long = "tenant", value_name = "TENANT_ID")]
        tenant_id: TenantId,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke one of a tenant's API keys; it stops working at once.
    Revoke {
        /// The tenant the key belongs to (ten_…).
        #[arg(long = "tenant", value_name = "TENANT_ID")]
        tenant_id: TenantId,
        /// The key to revoke (key_…).
        key_id: ApiKeyId,
        #[command(flatten)]
        db: DbArgs,
    },
}

impl KeyCommand {
    pub fn db(&self) -> &DbArgs {
        match self {
            Self::Create { db, .. } | Self::List { db, .. } | Self::Revoke { db, .. } => db,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleArg {
    /// Everything the tenant may do.
    Admin,
    /// Reads only.
    #[value(name = "read_only", alias = "read-only")]
    ReadOnly,
}

impl From<RoleArg> for KeyRole {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Admin => KeyRole::Admin,
            RoleArg::ReadOnly => KeyRole::ReadOnly,
        }
    }
}

#[derive(Debug, Serialize)]
struct TenantView {
    id: TenantId,
    name: String,
    created_at: String,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        Self {
            id: t.id,
            name: t.name,
            created_at: rfc3339_ms(t.created_at),
        }
    }
}

#[derive(Debug, Serialize)]
struct CreatedKeyView {
    id: ApiKeyId,
    tenant_id: TenantId,
    name: Option<String>,
    role: &'static str,
    /// Shown once; only its hash is kept.
    key: String,
}

#[derive(Debug, Serialize)]
struct KeyView {
    id: ApiKeyId,
    tenant_id: TenantId,
    name: Option<String>,
    role: &'static str,
    prefix: String,
    created_at: String,
    last_used_at: Option<String>,
    revoked_at: Option<String>,
}

impl From<ApiKey> for KeyView {
    fn from(key: ApiKey) -> Self {
        Self {
            id: key.id,
            tenant_id: key.tenant_id,
            name: key.name,
            role: key.role.as_str(),
            prefix: key.prefix,
            created_at: rfc3339_ms(key.created_at),
            last_used_at: key.last_used_at.map(rfc3339_ms),
            revoked_at: key.revoked_at.map(rfc3339_ms),
        }
    }
}

pub async fn tenant(config: Config, command: TenantCommand) -> anyhow::Result<()> {
    let store = open(&config).await?;
    let result = match command {
        TenantCommand::Create { name, json, .. } => create_tenant(store.store(), &name, json).await,
        TenantCommand::List { json, .. } => list_tenants(store.store(), &config, json).await,
    };
    store.close().await;
    result
}

pub async fn key(config: Config, command: KeyCommand) -> anyhow::Result<()> {
    let store = open(&config).await?;
    let result = match command {
        KeyCommand::Create {
            tenant_id,
            name,
            role,
            json,
            ..
        } => create_key(store.store(), &tenant_id, name.as_deref(), role.into(), json).await,
        KeyCommand::List { tenant_id, json, .. } => list_keys(store.store(), &tenant_id, json).await,
        KeyCommand::Revoke { tenant_id, key_id, .. } => revoke_key(store.store(), &tenant_id, &key_id).await,
    };
    store.close().await;
    result
}

/// The database `pagewire serve` would use, created and migrated if need be.
async fn open(config: &Config) -> anyhow::Result<serve::Database> {
    serve::prepare_data_dir(&config.data_dir)?;
    let key = serve::master_key(config)?;
    serve::open_store(config, key).await
}

/// The admin API's rule for names: not blank, at most [`MAX_NAME`] long.
fn check_name(what: &str, name: &str) -> anyhow::Result<()> {
    if name.trim().is_empty() {
        bail!("the {what} name must not be empty");
    }
    if name.len() > MAX_NAME {
        bail!("the {what} name must be at most {MAX_NAME} characters");
    }
    Ok(())
}

async fn require_tenant(store: &dyn Store, tenant_id: &TenantId) -> anyhow::Result<Tenant> {
    match store.get_tenant(tenant_id).await {
        Ok(tenant) => Ok(tenant),
        Err(StoreError::NotFound) => bail!("no tenant {tenant_id}"),
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading tenant {tenant_id}"))),
    }
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn create_tenant(store: &dyn Store, name: &str, json: bool) -> anyhow::Result<()> {
    check_name("tenant", name)?;
    let tenant = store
        .create_tenant(name.trim(), SystemClock.now_ms())
        .await
        .context("creating the tenant")?;
    tracing::debug!(tenant_id = %tenant.id, "tenant created");
    if json {
        print_json(&TenantView::from(tenant))
    } else {
        println!("{}", tenant.id);
        Ok(())
    }
}

async fn list_tenants(store: &dyn Store, config: &Config, json: bool) -> anyhow::Result<()> {
    let tenants = store.list_tenants().await.context("listing the tenants")?;
    if json {
        return print_json(&tenants.into_iter().map(TenantView::from).collect::<Vec<_>>());
    }
    if tenants.is_empty() {
        eprintln!(
            "no tenants in {}; create one with `pagewire tenant create NAME`",
            where_data_is(config)
        );
        return Ok(());
    }
    let rows = tenants
        .into_iter()
        .map(|t| vec![t.id.to_string(), t.name, rfc3339_ms(t.created_at)])
        .collect::<Vec<_>>();
    print!("{}", table(&["ID", "NAME", "CREATED"], &rows));
    Ok(())
}

/// The data dir, or the database URL without anything secret in it.
fn where_data_is(config: &Config) -> String {
    match &config.database_url {
        Some(_) => String::from("the database at PAGEWIRE_DATABASE_URL"),
        None => config.data_dir.display().to_string(),
    }
}

async fn create_key(
    store: &dyn Store,
    tenant_id: &TenantId,
    name: Option<&str>,
    role: KeyRole,
    json: bool,
) -> anyhow::Result<()> {
    if let Some(name) = name {
        check_name("key", name)?;
    }
    require_tenant(store, tenant_id).await?;
    let key = generate_token(API_KEY_PREFIX);
    let prefix = key.get(..7).context("a generated key is too short")?;
    let record = store
        .create_api_key(
            NewApiKey {
                tenant_id,
                name,
                role,
                key_hash: &hash_api_key(&key),
                prefix,
            },
            SystemClock.now_ms(),
        )
        .await
        .context("creating the API key")?;
    eprintln!(
        "API key {} ({}) for tenant {tenant_id}. It is shown only this once; keep it safe:",
        record.id,
        role.as_str()
    );
    if json {
        print_json(&CreatedKeyView {
            id: record.id,
            tenant_id: record.tenant_id,
            name: record.name,
            role: record.role.as_str(),
            key,
        })
    } else {
        println!("{key}");
        Ok(())
    }
}

async fn list_keys(store: &dyn Store, tenant_id: &TenantId, json: bool) -> anyhow::Result<()> {
    require_tenant(store, tenant_id).await?;
    let keys = store.list_api_keys(tenant_id).await.context("listing the API keys")?;
    if json {
        return print_json(&keys.into_iter().map(KeyView::from).collect::<Vec<_>>());
    }
    if keys.is_empty() {
        eprintln!("tenant {tenant_id} has no API keys; create one with `pagewire key create --tenant {tenant_id}`");
        return Ok(());
    }
    let rows = keys
        .into_iter()
        .map(|k| {
            vec![
                k.id.to_string(),
                k.name.unwrap_or_else(|| String::from("-")),
                k.role.as_str().to_owned(),
                format!("{}…", k.prefix),
                rfc3339_ms(k.created_at),
                k.last_used_at.map_or_else(|| String::from("never"), rfc3339_ms),
                k.revoked_at.map_or_else(|| String::from("-"), rfc3339_ms),
            ]
        })
        .collect::<Vec<_>>();
    print!(
        "{}",
        table(
            &["ID", "NAME", "ROLE", "PREFIX", "CREATED", "LAST USED", "REVOKED"],
            &rows
        )
    );
    Ok(())
}

async fn revoke_key(store: &dyn Store, tenant_id: &TenantId, key_id: &ApiKeyId) -> anyhow::Result<()> {
    require_tenant(store, tenant_id).await?;
    let now = SystemClock.now_ms();
    let key = match store.revoke_api_key(tenant_id, key_id, now).await {
        Ok(key) => key,
        Err(StoreError::NotFound) => bail!("no API key {key_id} for tenant {tenant_id}"),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("revoking API key {key_id}"))),
    };
    match key.revoked_at {
        Some(at) if at != now => println!(
            "API key {key_id} of tenant {tenant_id} was already revoked at {}",
            rfc3339_ms(at)
        ),
        _ => println!("revoked API key {key_id} of tenant {tenant_id}"),
    }
    Ok(())
}

/// Left-aligned columns two spaces apart, the header first.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width.saturating_sub(cell.chars().count())));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_line_ends() {
        let rows = vec![
            vec![String::from("ten_1"), String::from("Acme Bots"), String::from("x")],
            vec![String::from("ten_22"), String::from("Zoë"), String::from("y")],
        ];
        assert_eq!(
            table(&["ID", "NAME", "CREATED"], &rows),
            "ID      NAME       CREATED\nten_1   Acme Bots  x\nten_22  Zoë        y\n"
        );
    }

    #[test]
    fn names_follow_the_api_rules() {
        assert!(check_name("tenant", "Acme").is_ok());
        assert!(check_name("tenant", "  ").is_err());
        assert!(check_name("tenant", &"a".repeat(MAX_NAME)).is_ok());
        assert!(check_name("tenant", &"a".repeat(MAX_NAME + 1)).is_err());
    }
}
