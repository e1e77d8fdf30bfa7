//! `pagewire`: the gateway binary.
//!
//! A thin layer over the library crates: it reads the configuration, prepares the data directory
//! (database, master key, admin token), and runs the gateway; `simulate` plays Meta for people
//! trying Pagewire without Facebook.

mod admin;
mod config;
mod receive;
mod serve;
mod simulate;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

// mimalloc: the hot paths allocate many small strings and maps per event, where it is clearly faster
// than the system allocator (`cargo bench -p pagewire-meta`; docs/benchmarks.md says how to compare).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use crate::config::{Config, FlagOverrides, LogFormat};

#[derive(Debug, Parser)]
#[command(name = "pagewire", version, about = "A multi-tenant gateway for Meta webhooks")]
struct Cli {
    /// A TOML config file (default: ./pagewire.toml when present).
    #[arg(long, global = true, env = "PAGEWIRE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway: ingress, admin API and delivery.
    Serve(ServeArgs),
    /// Create or upgrade the database, then exit.
    Migrate(ServeArgs),
    /// Show the effective configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Play Meta: build a realistic webhook, sign it with the app secret, post it.
    Simulate(simulate::SimulateArgs),
    /// Run a local endpoint that prints the events it receives and checks their signatures.
    Receive(receive::ReceiveArgs),
    /// Create and list tenants, working on the database directly.
    Tenant {
        #[command(subcommand)]
        command: admin::TenantCommand,
    },
    /// Create, list and revoke tenants' API keys, working on the database directly.
    Key {
        #[command(subcommand)]
        command: admin::KeyCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration as TOML, secrets redacted.
    Print(ServeArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct ServeArgs {
    /// Address to listen on [env: PAGEWIRE_LISTEN] [default: 127.0.0.1:8080]
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Data directory [env: PAGEWIRE_DATA_DIR] [default: ./pagewire-data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// What this node runs [env: PAGEWIRE_ROLE] [default: all]
    #[arg(long, value_enum)]
    role: Option<RoleArg>,
    /// Allow endpoints on loopback and private networks [env: PAGEWIRE_ALLOW_PRIVATE_ENDPOINTS]
    #[arg(long)]
    allow_private_endpoints: bool,
    /// Log format [env: PAGEWIRE_LOG_FORMAT] [default: text]
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    All,
    Ingress,
    Worker,
}

impl ServeArgs {
    fn overrides(&self) -> FlagOverrides {
        FlagOverrides {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            role: self.role.map(|r| match r {
                RoleArg::All => pagewire_server::Role::All,
                RoleArg::Ingress => pagewire_server::Role::Ingress,
                RoleArg::Worker => pagewire_server::Role::Worker,
            }),
            allow_private_endpoints: self.allow_private_endpoints.then_some(true),
            log_format: self.log_format,
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Serve(args) => {
            let config = Config::load(cli.config.as_deref(), &args.overrides())?;
            init_logging(config.log_format);
            runtime.block_on(serve::serve(config))
        }
        Command::Migrate(args) => {
            let config = Config::load(cli.config.as_deref(), &args.overrides())?;
            init_logging(config.log_format);
            runtime.block_on(serve::migrate(config))
        }
        Command::Config {
            command: ConfigCommand::Print(args),
        } => {
            let config = Config::load(cli.config.as_deref(), &args.overrides())?;
            print!("{}", config.to_redacted_toml()?);
            Ok(())
        }
        Command::Simulate(args) => runtime.block_on(simulate::run(args)),
        Command::Receive(args) => runtime.block_on(receive::run(args)),
        Command::Tenant { command } => {
            let config = Config::load(cli.config.as_deref(), &command.db().overrides())?;
            init_logging(config.log_format);
            runtime.block_on(admin::tenant(config, command))
        }
        Command::Key { command } => {
            let config = Config::load(cli.config.as_deref(), &command.db().overrides())?;
            init_logging(config.log_format);
            runtime.block_on(admin::key(config, command))
        }
    }
}
