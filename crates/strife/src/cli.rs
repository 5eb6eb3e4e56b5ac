//! Command-line definitions and dispatch. Each subcommand only parses its flags and hands a
//! config to the crate that owns the process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use strife_common::etcd::discovery::DEFAULT_ETCD;
use strife_common::layout::DEFAULT_DIR;
use strife_common::limits::{
    DEFAULT_GATEWAY_ADDRESS, MAX_CONNECTIONS, MAX_PREPARE_TIMEOUT, MIN_MAX_CONNECTIONS,
    MIN_PREPARE_TIMEOUT,
};
use strife_ledger::store::StoreLocation;

/// `--store`'s default. The flag is a plain string, parsed after clap (see
/// [`store_location`]): clap would echo a value it refuses, password and all.
const STORE_DEFAULT: &str = StoreLocation::DEFAULT;

/// Parses `--store`; errors never repeat a password from the URL.
fn store_location(text: &str, dir: &std::path::Path) -> anyhow::Result<StoreLocation> {
    StoreLocation::parse(text, &strife_common::layout::Layout::new(dir))
}

/// Strife: a payment network with banks, a two-phase-commit gateway and an offline-capable client.
#[derive(Debug, Parser)]
#[command(name = "strife", version, about)]
pub struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the CA and the certificates of the gateway, banks, admin and users.
    Setup(SetupArgs),
    /// Run one bank server.
    Bank(BankArgs),
    /// Run the payment gateway (2PC coordinator).
    Gateway(GatewayArgs),
    /// Run a whole local network (etcd, two banks, gateway, demo users) until Ctrl-C.
    Dev(DevArgs),
    /// Reconcile every bank's journal with the gateway's payment log (exit 1 on any violation).
    Audit(AuditArgs),
    /// Drive payments against a running network and report throughput and latency.
    Bench(BenchArgs),
    /// Use Strife as a person: pay, see balances and history, manage the offline outbox.
    Client(strife_client::ClientArgs),
    /// Lock a TLS etcd down: users and roles for the gateway and every bank in setup.json,
    /// then auth on (run once per etcd cluster, and again after adding a bank).
    EtcdLockdown(EtcdLockdownArgs),
}

#[derive(Debug, clap::Args)]
struct EtcdLockdownArgs {
    /// Data directory made by `strife setup` (its pki/etcd/ holds the root certificate).
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// etcd endpoint(s), comma-separated (https://).
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_ETCD)]
    etcd: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct AuditArgs {
    /// Data directory of the network to audit.
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// etcd endpoint(s), comma-separated, where the banks are registered (default: from
    /// <dir>/network.json, else the standard one).
    #[arg(long, value_delimiter = ',')]
    etcd: Option<Vec<String>>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Audit a network with payments under way: read each bank and the gateway from a
    /// consistent snapshot and report payments caught half-done as in flight, not violations.
    #[arg(long)]
    live: bool,
    /// The gateway's store, as given to `strife gateway --store` (`sqlite` or a PostgreSQL
    /// URL, read-only here); default: the one a `strife dev` network in `--dir` uses, else
    /// `sqlite`.
    #[arg(long, env = "STRIFE_AUDIT_STORE", hide_env_values = true)]
    store: Option<String>,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Data directory of the running network (`strife dev`).
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// Gateway address (default: from <dir>/network.json, else 127.0.0.1:50050).
    #[arg(long)]
    gateway: Option<String>,
    /// etcd endpoint (default: from <dir>/network.json, else the standard one).
    #[arg(long)]
    etcd: Option<String>,
    /// Payers to create (payments go round a ring of them).
    #[arg(long, default_value_t = 8)]
    payers: usize,
    /// Payments in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to drive load, e.g. 20s.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Offered load in payments/s (default: as fast as the concurrency allows).
    #[arg(long)]
    rate: Option<u32>,
    /// HTTP/2 connections shared by the tasks (raw-rpc mode and `--http2`).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Measure bare mTLS unary calls to a bank instead of payments.
    #[arg(long)]
    raw_rpc: bool,
    /// Pay through the HTTP API (an API key per payer, HTTP/1.1 keep-alive, one connection
    /// per task) instead of gRPC; the URL defaults to the one in <dir>/network.json.
    #[arg(long)]
    http: bool,
    /// The HTTP API's base URL for `--http` (e.g. https://127.0.0.1:8444/v1/).
    #[arg(long, requires = "http")]
    http_url: Option<String>,
    /// With `--http`: HTTP/2 instead of HTTP/1.1, the tasks sharing `--connections`
    /// connections (each request a stream).
    #[arg(long, requires = "http")]
    http2: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// The gateway's store, for the audit at the end (`sqlite` or the gateway's PostgreSQL
    /// URL); default: the one a `strife dev` network in `--dir` uses, else `sqlite`.
    #[arg(long, env = "STRIFE_BENCH_STORE", hide_env_values = true)]
    store: Option<String>,
}

#[derive(Debug, clap::Args)]
struct DevArgs {
    /// TOML file with settings (keys are these flags' long names, kebab-case); flags and
    /// STRIFE_<PROCESS>_<FLAG> environment variables override it. See docs/OPERATIONS.md.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (set up on first run).
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// Gateway listen address (port 0 picks a free one).
    #[arg(long, default_value = DEFAULT_GATEWAY_ADDRESS)]
    gateway_listen: String,
    /// etcd client port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 23790)]
    etcd_port: u16,
    /// Print the ready line as JSON.
    #[arg(long)]
    json: bool,
    /// Gateway replicas to run (more than one needs `--store postgres`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    replicas: u32,
    /// The gateways' store: `sqlite` (embedded, one gateway) or `postgres` (a private
    /// PostgreSQL cluster under the data dir, shared by every replica).
    #[arg(long, value_enum, default_value = "sqlite")]
    store: crate::dev::DevStore,
    /// Serve Prometheus metrics from the gateway and each bank, each on a free loopback port
    /// (`--metrics-listen 127.0.0.1:0`); their URLs are printed with the ready output.
    #[arg(long)]
    metrics: bool,
}

/// Connection bounds a server takes (see `strife_common::net::listener`).
#[derive(Debug, clap::Args)]
struct ConnectionArgs {
    /// Open client connections at most; past it new ones are closed at once.
    #[arg(long, default_value_t = MAX_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(MIN_MAX_CONNECTIONS as i64..=1_000_000))]
    max_connections: u32,
    /// Open connections one certificate may hold (gateway); more are refused per request.
    #[arg(long, default_value_t = strife_common::limits::MAX_CONNECTIONS_PER_PEER as u32,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_connections_per_certificate: u32,
    /// Close a connection that carries no bytes for this long, e.g. `120s`.
    #[arg(long, default_value = "120s", value_parser = parse_idle_timeout)]
    idle_timeout: Duration,
}

impl ConnectionArgs {
    fn limits(&self) -> strife_common::net::listener::ListenerLimits {
        let defaults = strife_common::net::listener::ListenerLimits::default();
        strife_common::net::listener::ListenerLimits {
            max_connections: self.max_connections as usize,
            max_silent: defaults.max_silent.min(self.max_connections as usize / 2),
            idle_timeout: self.idle_timeout,
            max_per_peer: self.max_connections_per_certificate as usize,
            ..defaults
        }
    }
}

/// `--metrics-listen`: where a gateway or bank serves Prometheus metrics.
#[derive(Debug, clap::Args)]
struct MetricsArgs {
    /// Serve Prometheus metrics (`GET /metrics`, text format) on this address, e.g.
    /// `127.0.0.1:9464`; port 0 picks a free one (printed in the ready line). Off unless
    /// given. Plain HTTP without authentication: keep it on loopback or an operations network.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

/// `--prepare-timeout`, within `limits::MIN_PREPARE_TIMEOUT ..= MAX_PREPARE_TIMEOUT`.
fn parse_prepare_timeout(text: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if !(MIN_PREPARE_TIMEOUT..=MAX_PREPARE_TIMEOUT).contains(&timeout) {
        return Err(format!(
            "--prepare-timeout must be between {} and {}",
            humantime::format_duration(MIN_PREPARE_TIMEOUT),
            humantime::format_duration(MAX_PREPARE_TIMEOUT)
        ));
    }
    Ok(timeout)
}

fn parse_idle_timeout(text: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(86_400) {
        return Err("--idle-timeout must be between 100ms and 24h".into());
    }
    Ok(timeout)
}

#[derive(Debug, clap::Args)]
struct GatewayArgs {
    /// TOML file with settings (keys are these flags' long names, kebab-case); flags and
    /// STRIFE_<PROCESS>_<FLAG> environment variables override it. See docs/OPERATIONS.md.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    connections: ConnectionArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    /// Data directory (made by `strife setup`).
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = DEFAULT_GATEWAY_ADDRESS)]
    listen: SocketAddr,
    /// etcd endpoint(s), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_ETCD)]
    etcd: Vec<String>,
    /// How long phase 1 waits for each bank's vote, e.g. `2s` or `500ms` (10ms to 5s: a whole
    /// payment must end before the client's 10 s call timeout).
    #[arg(long, default_value = "2s", value_parser = parse_prepare_timeout)]
    prepare_timeout: Duration,
    /// Seconds the gateway's etcd lease lives without keep-alive.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(i64).range(1..=60))]
    lease_ttl: i64,
    /// Password checks per user name per window; the failure reaching it locks the name.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    lockout_threshold: u32,
    /// The window and the first lockout, in seconds (each consecutive lockout doubles, up to 15 min).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    lockout_secs: u64,
    /// Whose gRPC logins (certificate + password) a lock of their web console logins leaves
    /// alone: `admin` — anyone who reaches the console can lock the admin's console logins, but
    /// never its certificate + password, while other users' console locks block their gRPC
    /// logins too — or `all`: a console lock never blocks a gRPC login.
    #[arg(long, value_enum, default_value = "admin")]
    console_lockout_spares: ConsoleLockoutSpares,
    /// Print the ready line as JSON.
    #[arg(long)]
    json: bool,
    /// Where users, linked accounts and the payment log live: `sqlite` (the data dir's
    /// gateway/gateway.db) or a PostgreSQL URL such as
    /// postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=verify-full&sslrootcert=CA.pem (see
    /// docs/OPERATIONS.md). A password given as a flag is visible to other local users in the
    /// process list: put the URL in the config file or STRIFE_GATEWAY_STORE instead.
    #[arg(long, default_value = STORE_DEFAULT, hide_env_values = true)]
    store: String,
    /// Start with a new, empty database although this gateway has run before (its database
    /// is missing or empty). Without it such a start is refused, so a lost database is
    /// restored from backup instead of silently replaced. With a PostgreSQL store: create the
    /// schema in an empty database (a new network's first start).
    #[arg(long)]
    initialize: bool,
    /// This replica's name in etcd (letters, digits, '-', '_'); default `<host>-<port>`.
    /// Every replica of one network needs its own.
    #[arg(long)]
    replica_id: Option<String>,
    /// Close a connection that has made no accepted request this long after it opened, e.g.
    /// `10s` (1s to 1h): a connection counts against its certificate's share
    /// (--max-connections-per-certificate) from its first request, so one certificate cannot
    /// hold every slot with idle handshakes.
    #[arg(long, default_value = "10s", value_parser = parse_first_request_timeout)]
    first_request_timeout: Duration,
    /// Serve the web console over HTTPS on this address, e.g. `127.0.0.1:8443` (port 0 picks
    /// a free one, printed in the ready line), with the certificate `strife setup` issues
    /// (pki/web.crt). Off unless given.
    #[arg(long, value_name = "ADDR")]
    web_listen: Option<SocketAddr>,
    /// Serve the HTTP/JSON API (`/v1/`, API keys) over HTTPS on this address, e.g.
    /// `127.0.0.1:8444` (port 0 picks a free one, printed in the ready line), with the same
    /// certificate as the console (pki/web.crt). Off unless given.
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
    /// Serve `strife.v1.Gateway` over gRPC to callers with an API key (`authorization: Bearer
    /// sk_…` metadata) instead of a client certificate, on this address, e.g.
    /// `127.0.0.1:8445`, with server-authenticated TLS (pki/web.crt). Off unless given.
    #[arg(long, value_name = "ADDR")]
    grpc_api_key_listen: Option<SocketAddr>,
}

/// `--console-lockout-spares` (see `strife_ledger::lockout::ConsoleSpares`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ConsoleLockoutSpares {
    Admin,
    All,
}

impl From<ConsoleLockoutSpares> for strife_ledger::lockout::ConsoleSpares {
    fn from(spares: ConsoleLockoutSpares) -> Self {
        match spares {
            ConsoleLockoutSpares::Admin => strife_ledger::lockout::ConsoleSpares::Admin,
            ConsoleLockoutSpares::All => strife_ledger::lockout::ConsoleSpares::All,
        }
    }
}

fn parse_first_request_timeout(text: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(3_600) {
        return Err("--first-request-timeout must be between 1s and 1h".into());
    }
    Ok(timeout)
}

#[derive(Debug, clap::Args)]
struct SetupArgs {
    /// Data directory.
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// Comma-separated bank ids.
    #[arg(long, value_delimiter = ',', default_value = "bank0,bank1")]
    banks: Vec<String>,
    /// Comma-separated user names (the admin is always created).
    #[arg(long, value_delimiter = ',')]
    users: Vec<String>,
    /// Replace existing keys.
    #[arg(long)]
    force: bool,
    /// Hosts a server certificate is issued for, as `process=host[+host…]`, comma-separated:
    /// `--host gateway=gw.example.com,bank0=10.0.0.5+bank0.example.com`. Unlisted processes
    /// get loopback. Peers are pinned by role and name either way.
    #[arg(long = "host", value_delimiter = ',', value_parser = parse_host)]
    hosts: Vec<(String, Vec<String>)>,
    /// Revoke these certificates instead (NAME, bank/NAME or user/NAME, comma-separated):
    /// added to pki/ca.crl, which running servers re-read within a second.
    #[arg(long, value_delimiter = ',')]
    revoke: Vec<String>,
}

/// `bank0=10.0.0.5+bank0.example.com` → (`bank0`, [`10.0.0.5`, `bank0.example.com`]).
fn parse_host(text: &str) -> Result<(String, Vec<String>), String> {
    let (process, hosts) = text
        .split_once('=')
        .ok_or_else(|| format!("--host {text:?}: expected process=host[+host…]"))?;
    let hosts: Vec<String> = hosts
        .split('+')
        .map(str::trim)
        .filter(|host| !host.is_empty())
        .map(str::to_owned)
        .collect();
    if process.is_empty() || hosts.is_empty() {
        return Err(format!("--host {text:?}: expected process=host[+host…]"));
    }
    if let Some(bad) = hosts.iter().find(|host| {
        !host
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b':'))
    }) {
        return Err(format!(
            "--host {text:?}: {bad:?} is not a host name or IP address"
        ));
    }
    Ok((process.to_owned(), hosts))
}

#[derive(Debug, clap::Args)]
struct BankArgs {
    /// TOML file with settings (keys are these flags' long names, kebab-case); flags and
    /// STRIFE_<PROCESS>_<FLAG> environment variables override it. See docs/OPERATIONS.md.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    connections: ConnectionArgs,
    #[command(flatten)]
    metrics: MetricsArgs,
    /// Data directory (made by `strife setup`).
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// This bank's id (its certificate must exist).
    #[arg(long)]
    id: String,
    /// Address to listen on; port 0 picks a free one (printed on start).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Address to announce in etcd instead of the bound one (e.g. a proxy in front of it).
    #[arg(long)]
    advertise: Option<String>,
    /// etcd endpoint(s), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_ETCD)]
    etcd: Vec<String>,
    /// Seconds the etcd lease lives without keep-alive.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(i64).range(1..=60))]
    lease_ttl: i64,
    /// Coordinator (gateway replica) addresses for decision queries, comma-separated;
    /// default: every replica registered in etcd.
    #[arg(long, value_delimiter = ',')]
    coordinator: Vec<String>,
    /// Milliseconds between in-doubt resolution rounds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    resolve_interval_ms: u64,
    /// Print the ready line as JSON.
    #[arg(long)]
    json: bool,
    /// Start with a new, empty database although this bank has run before (its database is
    /// missing or empty). Without it such a start is refused: a fresh bank reissues account
    /// numbers from 1, so a lost database must be restored from backup, not replaced.
    #[arg(long)]
    initialize: bool,
}

impl Cli {
    /// Parses the command line with the settings of a `--config` file and the `STRIFE_*`
    /// environment merged in (see [`crate::config`]); exits like clap on a usage error.
    pub fn parse_merged() -> anyhow::Result<Self> {
        use clap::{CommandFactory, FromArgMatches};
        let command = crate::config::with_env(Self::command());
        let args = crate::config::apply(&command, std::env::args_os().collect())?;
        let matches = command.get_matches_from(args);
        Self::from_arg_matches(&matches).map_err(|error| error.exit())
    }

    pub fn run(self) -> anyhow::Result<u8> {
        // Everything a Strife process creates (keys, databases and their WAL, outboxes, logs,
        // markers) is its own business: files 0600, directories 0700, whatever the caller's
        // umask. Set before the first file is created.
        // SAFETY: umask(2) only changes this process's file-creation mask; it cannot fail.
        #[allow(unsafe_code)] // libc calls with no safe wrapper; SAFETY above
        unsafe {
            libc::umask(0o077);
        }
        let _log = strife_common::logging::init(self.log_json);
        match self.command {
            Command::Setup(args) => run_setup(args).map(|()| 0),
            Command::Client(args) => strife_client::run(args, strife_http::model::webhook_body),
            Command::Audit(args) => run_audit(args),
            Command::Bench(args) => run_bench(args),
            Command::EtcdLockdown(args) => run_etcd_lockdown(args).map(|()| 0),
            Command::Dev(args) => {
                tracing::debug!(config = ?args.config, "dev settings");
                crate::dev::run(crate::dev::DevConfig {
                    dir: args.dir,
                    gateway_listen: args.gateway_listen,
                    etcd_port: args.etcd_port,
                    json: args.json,
                    replicas: args.replicas,
                    store: args.store,
                    metrics: args.metrics,
                })
                .map(|()| 0)
            }
            Command::Bank(args) => {
                tracing::info!(
                    config = ?args.config,
                    id = %args.id,
                    listen = %args.listen,
                    lease_ttl = args.lease_ttl,
                    resolve_interval_ms = args.resolve_interval_ms,
                    max_connections = args.connections.max_connections,
                    idle_timeout = %humantime::format_duration(args.connections.idle_timeout),
                    metrics_listen = ?args.metrics.metrics_listen,
                    "bank settings"
                );
                let config = strife_bank::BankConfig {
                    dir: args.dir,
                    bank_id: args.id,
                    listen: args.listen,
                    advertise: args.advertise,
                    etcd_endpoints: args.etcd,
                    lease_ttl_secs: args.lease_ttl,
                    coordinator: args.coordinator,
                    resolve_interval: Duration::from_millis(args.resolve_interval_ms),
                    listener_limits: args.connections.limits(),
                    json: args.json,
                    initialize: args.initialize,
                    metrics_listen: args.metrics.metrics_listen,
                };
                runtime()?.block_on(strife_bank::run(config)).map(|()| 0)
            }
            Command::Gateway(args) => {
                // The effective settings after flags, environment and file are merged: what
                // an operator checks when a config file does not seem to apply.
                let store = store_location(&args.store, &args.dir)?;
                tracing::info!(
                    config = ?args.config,
                    store = %store.describe(),
                    listen = %args.listen,
                    prepare_timeout = %humantime::format_duration(args.prepare_timeout),
                    lease_ttl = args.lease_ttl,
                    max_connections = args.connections.max_connections,
                    idle_timeout = %humantime::format_duration(args.connections.idle_timeout),
                    metrics_listen = ?args.metrics.metrics_listen,
                    web_listen = ?args.web_listen,
                    http_listen = ?args.http_listen,
                    grpc_api_key_listen = ?args.grpc_api_key_listen,
                    lockout_threshold = args.lockout_threshold,
                    lockout_secs = args.lockout_secs,
                    console_lockout_spares = ?args.console_lockout_spares,
                    "gateway settings"
                );
                let config = strife_gateway::GatewayConfig {
                    dir: args.dir,
                    listen: args.listen,
                    etcd_endpoints: args.etcd,
                    prepare_timeout: args.prepare_timeout,
                    listener_limits: strife_common::net::listener::ListenerLimits {
                        first_request_timeout: Some(args.first_request_timeout),
                        ..args.connections.limits()
                    },
                    lease_ttl_secs: args.lease_ttl,
                    lockout: strife_gateway::LockoutPolicy {
                        threshold: args.lockout_threshold,
                        duration: Duration::from_secs(args.lockout_secs),
                        console_spares: args.console_lockout_spares.into(),
                    },
                    json: args.json,
                    initialize: args.initialize,
                    replica_id: args.replica_id,
                    metrics_listen: args.metrics.metrics_listen,
                    store,
                };
                // The web console, the HTTP API and gRPC with API keys are transports of their
                // own over the gateway's service.
                let mut side: Vec<Box<dyn strife_gateway::transport::SideTransportPlan>> =
                    Vec::new();
                if let Some(address) = args.web_listen {
                    side.push(Box::new(strife_console::ConsolePlan { address }));
                }
                if let Some(address) = args.http_listen {
                    side.push(Box::new(strife_http::HttpApiPlan { address }));
                }
                if let Some(address) = args.grpc_api_key_listen {
                    side.push(Box::new(strife_gateway::ApiKeyGrpcPlan { address }));
                }
                runtime()?
                    .block_on(strife_gateway::run(config, side))
                    .map(|()| 0)
            }
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run_etcd_lockdown(args: EtcdLockdownArgs) -> anyhow::Result<()> {
    let layout = strife_common::layout::Layout::new(&args.dir);
    let manifest = strife_common::setup_manifest::SetupManifest::load(&layout)?;
    anyhow::ensure!(
        args.etcd
            .iter()
            .all(|endpoint| endpoint.starts_with("https://")),
        "etcd-lockdown needs https:// endpoints (start etcd with TLS; see docs/SECURITY.md)"
    );
    let root = strife_common::etcd::access::EtcdAccess::new(
        args.etcd.clone(),
        &layout,
        strife_common::etcd::access::ROOT_USER,
    )?;
    runtime()?.block_on(strife_common::etcd::access::lock_down(
        &root,
        &manifest.banks,
    ))?;
    println!(
        "etcd at {} locked down: auth on; strife-gateway and {} bank user(s) limited to their own keys",
        args.etcd.join(","),
        manifest.banks.len()
    );
    Ok(())
}

fn run_setup(args: SetupArgs) -> anyhow::Result<()> {
    if !args.revoke.is_empty() {
        let layout = strife_common::layout::Layout::new(&args.dir);
        for moved in strife_pki::revoke(&layout, &args.revoke)? {
            println!("revoked  {} (key deleted)", moved.display());
        }
        println!("revocation list: {}", layout.ca_crl().display());
        return Ok(());
    }
    let options = strife_pki::SetupOptions {
        dir: args.dir,
        banks: args.banks,
        users: args.users,
        force: args.force,
        hosts: args.hosts.into_iter().collect(),
    };
    let examples_dir = options.dir.join("examples");
    let report = strife_pki::setup(&options)?;
    for path in &report.created {
        println!("created  {}", path.display());
    }
    // Regenerated on every setup from the flags themselves, so they list exactly the keys
    // this binary accepts; they are examples to copy, not files a process reads.
    std::fs::create_dir_all(&examples_dir)
        .with_context(|| format!("cannot create {}", examples_dir.display()))?;
    let command = <Cli as clap::CommandFactory>::command();
    for process in crate::config::PROCESSES {
        let path = examples_dir.join(format!("{process}.toml"));
        std::fs::write(&path, crate::config::example(&command, process)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote    {}", path.display());
    }
    for path in &report.kept {
        println!("kept     {} (use --force to replace)", path.display());
    }
    match &report.new_admin_password {
        Some(password) => {
            println!();
            println!("admin password: {password}");
            println!(
                "(shown once; stored with mode 0600 in {})",
                report.admin_password_file.display()
            );
        }
        None => println!(
            "admin password unchanged (in {})",
            report.admin_password_file.display()
        ),
    }
    Ok(())
}

/// `<dir>/network.json` if a dev network wrote one.
fn network_info(dir: &std::path::Path) -> Option<strife_common::etcd::discovery::NetworkInfo> {
    strife_common::etcd::discovery::NetworkInfo::load(&strife_common::layout::Layout::new(dir))
}

fn run_bench(args: BenchArgs) -> anyhow::Result<u8> {
    let info = network_info(&args.dir);
    let config = strife_bench::BenchConfig {
        gateway: args
            .gateway
            .or_else(|| info.as_ref().map(|info| info.gateway.clone()))
            .unwrap_or_else(|| DEFAULT_GATEWAY_ADDRESS.into()),
        etcd: args
            .etcd
            .or_else(|| info.as_ref().map(|info| info.etcd.clone()))
            .unwrap_or_else(|| DEFAULT_ETCD.into()),
        store: store_location(
            &args
                .store
                .clone()
                .or_else(|| info.as_ref().and_then(|info| info.store.clone()))
                .unwrap_or_else(|| STORE_DEFAULT.to_owned()),
            &args.dir,
        )?,
        dir: args.dir,
        payers: args.payers,
        concurrency: args.concurrency,
        duration: args.duration,
        rate: args.rate,
        connections: args.connections,
        raw_rpc: args.raw_rpc,
        http: match (args.http, args.http_url) {
            (false, _) => None,
            (true, Some(url)) => Some(url),
            (true, None) => Some(
                info.as_ref()
                    .and_then(|info| info.http.clone())
                    .context("--http: no HTTP API URL in <dir>/network.json; give --http-url")?,
            ),
        },
        http2: args.http2,
        progress: !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let report = runtime()?.block_on(strife_bench::run(&config))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.human());
    }
    Ok(if report.audit_clean == Some(false) {
        1
    } else {
        0
    })
}

fn run_audit(args: AuditArgs) -> anyhow::Result<u8> {
    let etcd_endpoints = match args.etcd {
        Some(endpoints) => endpoints,
        None => vec![network_info(&args.dir)
            .map(|info| info.etcd)
            .unwrap_or_else(|| DEFAULT_ETCD.into())],
    };
    let store = args
        .store
        .or_else(|| network_info(&args.dir).and_then(|info| info.store))
        .unwrap_or_else(|| STORE_DEFAULT.to_owned());
    let config = strife_audit::AuditConfig {
        store: store_location(&store, &args.dir)?,
        dir: args.dir,
        etcd_endpoints,
        live: args.live,
    };
    let report = runtime()?.block_on(strife_audit::audit(&config))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.human());
    }
    Ok(if report.is_clean() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use strife_common::limits::{DEFAULT_PREPARE_TIMEOUT, IDLE_TIMEOUT};

    /// clap defaults are strings; they must say what `limits.rs` says.
    #[test]
    fn flag_defaults_are_the_limits() {
        let gateway = Cli::command();
        let gateway = gateway
            .find_subcommand("gateway")
            .expect("a gateway subcommand");
        let default_of = |name: &str| {
            gateway
                .get_arguments()
                .find(|argument| argument.get_id() == name)
                .and_then(|argument| argument.get_default_values().first().cloned())
                .and_then(|value| value.to_str().map(str::to_owned))
                .expect("a default")
        };
        assert_eq!(
            parse_prepare_timeout(&default_of("prepare_timeout")),
            Ok(DEFAULT_PREPARE_TIMEOUT)
        );
        assert_eq!(
            parse_idle_timeout(&default_of("idle_timeout")),
            Ok(IDLE_TIMEOUT)
        );
        // The lockout spares the admin's gRPC logins unless told otherwise.
        assert_eq!(default_of("console_lockout_spares"), "admin");
        match Cli::try_parse_from(["strife", "gateway"]).unwrap().command {
            Command::Gateway(gateway) => assert_eq!(
                strife_ledger::lockout::ConsoleSpares::from(gateway.console_lockout_spares),
                strife_ledger::lockout::ConsoleSpares::default()
            ),
            other => panic!("unexpected {other:?}"),
        }
        match Cli::try_parse_from(["strife", "gateway", "--console-lockout-spares", "all"])
            .unwrap()
            .command
        {
            Command::Gateway(gateway) => {
                assert_eq!(gateway.console_lockout_spares, ConsoleLockoutSpares::All)
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            Cli::try_parse_from(["strife", "gateway", "--console-lockout-spares", "nobody"])
                .is_err()
        );
    }

    #[test]
    fn metrics_listen_is_an_optional_setting_of_gateway_and_bank() {
        let command = Cli::command();
        for process in ["gateway", "bank"] {
            let text = crate::config::example(&command, process).unwrap();
            assert!(
                text.contains("# metrics-listen = \"127.0.0.1:9464\"   # unset by default"),
                "{text}"
            );
            assert!(text.contains("without authentication"), "{text}");
        }
        let off = Cli::try_parse_from(["strife", "bank", "--id", "bank0"]).unwrap();
        let on = Cli::try_parse_from(["strife", "gateway", "--metrics-listen", "127.0.0.1:9464"])
            .unwrap();
        match (off.command, on.command) {
            (Command::Bank(bank), Command::Gateway(gateway)) => {
                assert_eq!(bank.metrics.metrics_listen, None);
                assert_eq!(
                    gateway.metrics.metrics_listen,
                    Some("127.0.0.1:9464".parse().unwrap())
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(Cli::try_parse_from(["strife", "gateway", "--metrics-listen", "nowhere"]).is_err());
    }

    /// Every line of every example file, uncommented, is a setting its process accepts: no
    /// empty placeholder that fails to parse once someone removes the `#`.
    #[test]
    fn every_example_setting_parses_when_uncommented() {
        let command = crate::config::with_env(Cli::command());
        for process in crate::config::PROCESSES {
            let sub = command.find_subcommand(process).unwrap();
            let text = crate::config::example(&command, process).unwrap();
            let mut settings = 0;
            for line in text.lines() {
                let Some(setting) = line.strip_prefix("# ") else {
                    continue;
                };
                let Some((key, _)) = setting.split_once(" = ") else {
                    continue;
                };
                if !sub.get_arguments().any(|arg| arg.get_long() == Some(key)) {
                    continue; // help text that happens to contain " = "
                }
                settings += 1;
                assert!(
                    !setting.contains("\"\""),
                    "{process}: placeholder in {line:?}"
                );
                let table: toml::Table = setting
                    .parse()
                    .unwrap_or_else(|error| panic!("{process}: {line:?}: {error}"));
                let path = std::path::Path::new("example.toml");
                crate::config::file_arguments(sub, &table, path, &[], &|_| false)
                    .unwrap_or_else(|error| panic!("{process}: {line:?}: {error:#}"));
            }
            assert!(settings >= 4, "{process}: {settings} settings in\n{text}");
        }
    }

    #[test]
    fn dev_metrics_is_off_by_default() {
        let parsed = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Dev(dev) => dev.metrics,
            other => panic!("unexpected {other:?}"),
        };
        assert!(!parsed(&["strife", "dev"]));
        assert!(parsed(&["strife", "dev", "--metrics"]));
    }

    #[test]
    fn prepare_timeouts_past_the_cap_are_refused() {
        assert!(parse_prepare_timeout("5s").is_ok());
        assert!(parse_prepare_timeout("6s").is_err());
        assert!(parse_prepare_timeout("60s").is_err());
        assert!(parse_prepare_timeout("1ms").is_err());
    }
}
