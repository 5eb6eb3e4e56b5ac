//! `strife dev`: a whole local network in one command — etcd, two banks and the gateway on
//! loopback, demo users `alice` and `bob` with funded accounts — and a clean shutdown on
//! Ctrl-C. Every process is a real child process (this same binary for banks and gateway);
//! their logs go to `<dir>/logs/`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use strife_common::etcd::access::{self, EtcdAccess};
use strife_common::layout::Layout;
use strife_common::metadata::Credentials;
use strife_common::net::tls::{ExpectedPeer, TlsMaterial};
use strife_common::runtime::free_port_for_child;
use strife_gateway::roles::Role;
use strife_gateway::scopes::Scope;
use strife_proto::v1::{self as pb, gateway_client::GatewayClient};
use tonic::Code;

const BANKS: [&str; 2] = ["bank0", "bank1"];
/// Demo users: name, bank, opening deposit in minor units.
const DEMO_USERS: [(&str, &str, i64); 2] = [("alice", "bank0", 10_000), ("bob", "bank1", 5_000)];
const STARTUP_LIMIT: Duration = Duration::from_secs(30);
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);

/// What `strife dev` is told.
#[derive(Debug, Clone)]
pub struct DevConfig {
    pub dir: PathBuf,
    /// Gateway listen address (port 0: pick a free one).
    pub gateway_listen: String,
    /// etcd client port (0: pick a free one).
    pub etcd_port: u16,
    pub json: bool,
    /// Gateway replicas to start (more than one needs a shared store).
    pub replicas: u32,
    /// The gateways' store: embedded SQLite under the data dir, or a private PostgreSQL
    /// cluster (`dev_postgres.rs`).
    pub store: DevStore,
    /// Give the gateway and each bank `--metrics-listen 127.0.0.1:0` and print their URLs.
    pub metrics: bool,
}

/// Which store `strife dev` gives the gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DevStore {
    Sqlite,
    Postgres,
}

/// Where a process of the network serves its metrics.
struct MetricsUrl {
    /// `bank0`, `gateway`, or with several replicas each replica's id (`gateway-2`).
    process: String,
    url: String,
}

/// The first gateway serves the web console on a free loopback port.
const WEB_ARGS: [&str; 2] = ["--web-listen", "127.0.0.1:0"];
/// Every gateway serves the HTTP API on a free loopback port.
const HTTP_ARGS: [&str; 2] = ["--http-listen", "127.0.0.1:0"];
/// Every gateway serves gRPC with API keys on a free loopback port.
const GRPC_API_KEY_ARGS: [&str; 2] = ["--grpc-api-key-listen", "127.0.0.1:0"];

/// `--metrics-listen` on a free loopback port, for `--metrics`.
const METRICS_ARGS: [&str; 2] = ["--metrics-listen", "127.0.0.1:0"];

struct ChildProcess {
    name: &'static str,
    child: Child,
}

/// The running network; stops everything when dropped.
struct Network {
    children: Vec<ChildProcess>,
}

impl Drop for Network {
    fn drop(&mut self) {
        // Newest first: gateway, banks, then etcd.
        for entry in self.children.iter_mut().rev() {
            terminate(&mut entry.child);
        }
    }
}

fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill(2) on our own child's pid has no memory-safety implications.
    #[allow(unsafe_code)] // libc calls with no safe wrapper; SAFETY above
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + SHUTDOWN_LIMIT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn find_etcd() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
        .context("etcd is not installed: install it with `sudo apt-get install -y etcd-server` (or put any etcd v3 binary on PATH) and run this again")
}

/// Makes a child get SIGTERM if `strife dev` itself dies (even by SIGKILL), so a crashed dev
/// network never leaves orphans holding its ports.
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child's own process state.
    #[allow(unsafe_code)] // libc calls with no safe wrapper; SAFETY above
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

/// Spawns `command` with stderr to `log` and waits for its first stdout line.
fn spawn_ready(
    name: &'static str,
    mut command: Command,
    log: &Path,
) -> anyhow::Result<(ChildProcess, String)> {
    die_with_parent(&mut command);
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file));
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = sender.send(line);
        }
        for _ in lines {}
    });
    let entry = ChildProcess { name, child };
    match receiver.recv_timeout(STARTUP_LIMIT) {
        Ok(line) => Ok((entry, line)),
        Err(_) => anyhow::bail!("{name} did not start; see {}", log.display()),
    }
}

fn address_of(line: &str) -> anyhow::Result<String> {
    field_of(line, "address")
}

fn field_of(line: &str, field: &str) -> anyhow::Result<String> {
    let ready: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("unexpected ready line {line:?}"))?;
    ready[field]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("ready line without {field}: {line}"))
}

/// The metrics URL a process printed in its JSON ready line (when started with `--metrics`).
fn metrics_url(process: &str, line: &str) -> anyhow::Result<MetricsUrl> {
    let address = field_of(line, "metrics_address")?;
    Ok(MetricsUrl {
        process: process.to_owned(),
        url: format!("http://{address}/metrics"),
    })
}

/// Runs the network until Ctrl-C / SIGTERM.
pub fn run(config: DevConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.replicas >= 1 && (config.replicas == 1 || config.store == DevStore::Postgres),
        "{} gateway replicas need a shared store: add `--store postgres` (the embedded SQLite \
         store belongs to one gateway)",
        config.replicas
    );
    let etcd_binary = find_etcd()?;
    let layout = Layout::new(&config.dir);
    // Setup keeps whatever exists and adds what is missing (e.g. the etcd certificates of a
    // data dir made by an older version), so it runs every time.
    {
        let options = strife_pki::SetupOptions {
            dir: config.dir.clone(),
            banks: BANKS.iter().map(|bank| (*bank).to_owned()).collect(),
            users: DEMO_USERS
                .iter()
                .map(|(user, _, _)| (*user).to_owned())
                .collect(),
            force: false,
            hosts: Default::default(),
        };
        strife_pki::setup(&options)?;
    }
    let logs = config.dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let strife = std::env::current_exe().context("locating the strife binary")?;
    // Declared before the network, so it stops after every gateway did.
    let postgres = match config.store {
        DevStore::Sqlite => None,
        DevStore::Postgres => Some(crate::dev_postgres::start(
            &config.dir,
            &logs.join("postgres.log"),
        )?),
    };
    let mut network = Network {
        children: Vec::new(),
    };

    let etcd_port = if config.etcd_port == 0 {
        free_port_for_child()?
    } else {
        config.etcd_port
    };
    let peer_port = free_port_for_child()?;
    let etcd_url = format!("https://127.0.0.1:{etcd_port}");
    let etcd_log = std::fs::File::create(logs.join("etcd.log"))?;
    let mut etcd_command = Command::new(&etcd_binary);
    die_with_parent(&mut etcd_command);
    let etcd = etcd_command
        .arg("--name")
        .arg("strife-dev")
        .arg("--data-dir")
        .arg(config.dir.join("etcd"))
        .arg("--listen-client-urls")
        .arg(&etcd_url)
        .arg("--advertise-client-urls")
        .arg(&etcd_url)
        .arg("--listen-peer-urls")
        .arg(format!("http://127.0.0.1:{peer_port}"))
        .arg("--initial-advertise-peer-urls")
        .arg(format!("http://127.0.0.1:{peer_port}"))
        .arg("--initial-cluster")
        .arg(format!("strife-dev=http://127.0.0.1:{peer_port}"))
        .args(strife_common::etcd::access::server_tls_args(&layout))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(etcd_log))
        .spawn()
        .context("starting etcd")?;
    network.children.push(ChildProcess {
        name: "etcd",
        child: etcd,
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let etcd_root = EtcdAccess::new(vec![etcd_url.clone()], &layout, access::ROOT_USER)?;
    runtime.block_on(wait_for_etcd(&etcd_root))?;
    let banks: Vec<String> = BANKS.iter().map(|bank| (*bank).to_owned()).collect();
    runtime
        .block_on(access::lock_down(&etcd_root, &banks))
        .context("locking etcd down (users, roles, auth)")?;

    let mut metrics = Vec::new();
    for bank in BANKS {
        let mut command = Command::new(&strife);
        command
            .args(["bank", "--json", "--id", bank, "--etcd", &etcd_url, "--dir"])
            .arg(&config.dir);
        if config.metrics {
            command.args(METRICS_ARGS);
        }
        let (child, line) = spawn_ready("bank", command, &logs.join(format!("{bank}.log")))?;
        network.children.push(child);
        if config.metrics {
            metrics.push(metrics_url(bank, &line)?);
        }
    }
    let mut gateway_addresses = Vec::new();
    let mut console = None;
    let mut http_urls = Vec::new();
    let mut grpc_api_key_addresses = Vec::new();
    for replica in 1..=config.replicas {
        // The first replica takes the advertised address; the others a free port each.
        let listen = if replica == 1 {
            config.gateway_listen.clone()
        } else {
            "127.0.0.1:0".to_owned()
        };
        let replica_id = format!("gateway-{replica}");
        let mut command = Command::new(&strife);
        command
            .args([
                "gateway", "--json", "--etcd", &etcd_url, "--listen", &listen,
            ])
            .args(["--replica-id", &replica_id, "--dir"])
            .arg(&config.dir);
        if config.metrics {
            command.args(METRICS_ARGS);
        }
        if replica == 1 {
            command.args(WEB_ARGS);
        }
        command.args(HTTP_ARGS).args(GRPC_API_KEY_ARGS);
        if let Some(postgres) = &postgres {
            // Through the environment: a URL with a password stays off command lines.
            command.env("STRIFE_GATEWAY_STORE", &postgres.url);
            if postgres.created && replica == 1 {
                // A new, empty database: the first replica creates the schema.
                command.arg("--initialize");
            }
        }
        let log_name = if config.replicas == 1 {
            "gateway.log".to_owned()
        } else {
            format!("{replica_id}.log")
        };
        let (gateway, line) = spawn_ready("gateway", command, &logs.join(log_name))?;
        network.children.push(gateway);
        gateway_addresses.push(address_of(&line)?);
        if replica == 1 {
            console = Some(format!("https://{}/", field_of(&line, "web_address")?));
        }
        http_urls.push(format!("https://{}/v1/", field_of(&line, "http_address")?));
        grpc_api_key_addresses.push(field_of(&line, "grpc_api_key_address")?);
        if config.metrics {
            let index = usize::try_from(replica - 1).unwrap_or(0);
            // One entry per replica: with several, each under its own id.
            let name = if config.replicas == 1 {
                "gateway"
            } else {
                replica_id.as_str()
            };
            metrics.insert(index, metrics_url(name, &line)?);
        }
    }
    let gateway_address = gateway_addresses.join(",");
    let (passwords, api_keys) =
        runtime.block_on(create_demo_users(&layout, &gateway_addresses[0]))?;
    let info = strife_common::etcd::discovery::NetworkInfo {
        etcd: etcd_url.clone(),
        gateway: gateway_address.clone(),
        store: postgres.as_ref().map(|postgres| postgres.url.clone()),
        console: console.clone(),
        http: http_urls.first().cloned(),
    };
    std::fs::write(layout.network_file(), serde_json::to_vec_pretty(&info)?)?;
    print_ready(
        &config,
        &gateway_address,
        &etcd_url,
        &passwords,
        &metrics,
        console.as_deref(),
        &Served {
            http_urls: &http_urls,
            grpc_api_key_addresses: &grpc_api_key_addresses,
            api_keys: &api_keys,
        },
    )?;
    if let Some(postgres) = &postgres {
        eprintln!(
            "gateways share PostgreSQL at {} (password in {}/postgres/password, or under /var/tmp when run as root)",
            postgres.redacted_url,
            config.dir.display()
        );
    }

    runtime.block_on(async {
        loop {
            tokio::select! {
                _ = strife_common::runtime::wait_for_signal() => break,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    for entry in network.children.iter_mut() {
                        if let Ok(Some(status)) = entry.child.try_wait() {
                            eprintln!("{} exited unexpectedly ({status}); stopping the network. Logs are in {}", entry.name, logs.display());
                            return;
                        }
                    }
                }
            }
        }
    });
    eprintln!("stopping the local network…");
    drop(network);
    drop(postgres);
    eprintln!("stopped.");
    Ok(())
}

async fn wait_for_etcd(etcd: &EtcdAccess) -> anyhow::Result<()> {
    let deadline = Instant::now() + STARTUP_LIMIT;
    loop {
        let attempt = async {
            let mut client = etcd.connect().await?;
            client.get("strife-dev-probe", None).await?;
            Ok::<_, anyhow::Error>(())
        };
        if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(2), attempt).await {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "etcd did not come up; see logs/etcd.log"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The demo users' passwords, made once per data dir and kept in `dev-passwords.json` (0600).
fn demo_passwords(dir: &Path) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let path = dir.join("dev-passwords.json");
    if let Ok(bytes) = std::fs::read(&path) {
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(&bytes) {
            return Ok(map);
        }
    }
    let mut map = serde_json::Map::new();
    for (user, _, _) in DEMO_USERS {
        map.insert(
            user.to_owned(),
            serde_json::Value::String(demo_password(user)),
        );
    }
    write_private_json(&path, &map)?;
    Ok(map)
}

/// A random password that meets the gateway's policy (16 letters and digits, never containing
/// the user name: a draw that happens to is drawn again).
fn demo_password(user: &str) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    loop {
        let password = format!("demo-{}", Alphanumeric.sample_string(&mut rand::rng(), 16));
        if strife_common::password::check_password(user, &password).is_ok() {
            return password;
        }
    }
}

type AdminClient = GatewayClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Credentials>,
>;

/// Registers alice and bob and funds one account each, once per data dir. Retries while the
/// gateway has not yet seen the banks in etcd.
async fn create_demo_users(
    layout: &Layout,
    gateway: &str,
) -> anyhow::Result<(
    serde_json::Map<String, serde_json::Value>,
    serde_json::Map<String, serde_json::Value>,
)> {
    let passwords = demo_passwords(layout.root())?;
    let tls = TlsMaterial::load(&layout.ca().cert, &layout.user_identity("admin"))?;
    let channel = tls
        .endpoint(gateway, &ExpectedPeer::Gateway, Duration::from_secs(10))?
        .connect_lazy();
    let admin_password = strife_pki::read_admin_password(layout)?;
    let mut admin: AdminClient =
        GatewayClient::with_interceptor(channel, Credentials::new("admin", &admin_password)?);
    for (user, bank, deposit_minor) in DEMO_USERS {
        let password = passwords
            .get(user)
            .and_then(|value| value.as_str())
            .unwrap_or_default()
            .to_owned();
        match admin
            .register_user(pb::RegisterUserRequest {
                username: user.into(),
                password,
            })
            .await
        {
            Ok(_) => {}
            Err(status) if status.code() == Code::AlreadyExists => {}
            Err(status) => anyhow::bail!("registering {user}: {}", status.message()),
        }
        let deadline = Instant::now() + STARTUP_LIMIT;
        loop {
            let balances = admin
                .get_balances(pb::GetBalancesRequest {
                    username: user.into(),
                })
                .await;
            if let Ok(balances) = &balances {
                if !balances.get_ref().accounts.is_empty() {
                    break;
                }
            }
            let opened = admin
                .open_account(pb::GatewayOpenAccountRequest {
                    username: user.into(),
                    bank_id: bank.into(),
                    currency: "USD".into(),
                    opening_deposit: Some(pb::Money {
                        amount_minor: deposit_minor,
                        currency: "USD".into(),
                    }),
                    holder_name: user.to_uppercase(),
                    // One key for every retry below: a retry after a lost reply returns the
                    // account the first try opened instead of opening a second one.
                    idempotency_key: format!("dev-demo-{user}"),
                })
                .await;
            match opened {
                Ok(_) => break,
                // A bank that has not registered yet is, to the gateway, one the network
                // does not have (`unknown_bank`): wait for it as for one that is down.
                Err(status) if not_there_yet(&status) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => anyhow::bail!("opening {user}'s account: {}", status.message()),
            }
        }
    }
    let keys = demo_api_keys(layout.root(), &mut admin).await?;
    Ok((passwords, keys))
}

/// The API keys `strife dev` hands out (alice's for her own payments, the admin's with every
/// scope), made once per data dir and kept in `dev-api-keys.json` (0600).
async fn demo_api_keys(
    dir: &Path,
    admin: &mut AdminClient,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let path = dir.join(DEV_API_KEYS_FILE);
    if let Ok(bytes) = std::fs::read(&path) {
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(&bytes) {
            return Ok(map);
        }
    }
    let mut map = serde_json::Map::new();
    // Alice's key holds what a client's key may; the admin's every scope.
    let scopes_of = |role: Role| -> Vec<String> {
        Scope::ALL
            .into_iter()
            .filter(|scope| scope.open_to(role))
            .map(|scope| scope.as_str().to_owned())
            .collect()
    };
    for (owner, scopes) in [
        ("alice", scopes_of(Role::Client)),
        ("admin", scopes_of(Role::Admin)),
    ] {
        let created = admin
            .create_api_key(pb::CreateApiKeyRequest {
                owner: owner.into(),
                scopes,
                description: "made by strife dev".into(),
                expires_in_seconds: 0,
            })
            .await
            .map_err(|status| {
                anyhow::anyhow!("creating {owner}'s API key: {}", status.message())
            })?;
        map.insert(owner.to_owned(), created.into_inner().secret.into());
    }
    write_private_json(&path, &map)?;
    Ok(map)
}

/// Where `strife dev` keeps the demo API keys.
pub const DEV_API_KEYS_FILE: &str = "dev-api-keys.json";

/// Writes `map` to `path`, readable by its owner only, synced.
fn write_private_json(
    path: &Path,
    map: &serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(serde_json::to_string_pretty(map)?.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Whether opening an account failed only because its bank is not (yet) reachable.
fn not_there_yet(status: &tonic::Status) -> bool {
    status.code() == Code::Unavailable
        || strife_common::failure::error_reason(status).as_deref()
            == Some(strife_common::reason::UNKNOWN_BANK)
}

/// What the gateways serve beyond gRPC and the console, for the ready line.
struct Served<'a> {
    /// Each replica's HTTP API base URL.
    http_urls: &'a [String],
    /// Each replica's address of gRPC with API keys.
    grpc_api_key_addresses: &'a [String],
    api_keys: &'a serde_json::Map<String, serde_json::Value>,
}

fn print_ready(
    config: &DevConfig,
    gateway: &str,
    etcd: &str,
    passwords: &serde_json::Map<String, serde_json::Value>,
    metrics: &[MetricsUrl],
    console: Option<&str>,
    served: &Served<'_>,
) -> anyhow::Result<()> {
    let dir = config.dir.display();
    let mut stdout = std::io::stdout().lock();
    if config.json {
        let mut line = serde_json::json!({"event": "ready", "dir": dir.to_string(), "gateway": gateway, "etcd": etcd, "passwords": passwords});
        if !metrics.is_empty() {
            line["metrics"] = metrics
                .iter()
                .map(|entry| (entry.process.clone(), entry.url.clone().into()))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        if let Some(console) = console {
            line["console"] = console.into();
        }
        line["http"] = served.http_urls.into();
        line["grpc_api_key"] = served.grpc_api_key_addresses.into();
        line["api_keys"] = served.api_keys.clone().into();
        writeln!(stdout, "{line}")?;
    } else {
        let alice = passwords
            .get("alice")
            .and_then(|value| value.as_str())
            .unwrap_or_default();
        writeln!(
            stdout,
            "Strife local network is ready: etcd {etcd}, banks bank0 and bank1, gateway {gateway}."
        )?;
        writeln!(
            stdout,
            "Logs: {dir}/logs/. Demo users: alice (100.00 USD at bank0), bob (50.00 USD at bank1)."
        )?;
        if !metrics.is_empty() {
            let urls: Vec<String> = metrics
                .iter()
                .map(|entry| format!("{} {}", entry.process, entry.url))
                .collect();
            writeln!(stdout, "Metrics (Prometheus): {}.", urls.join(", "))?;
        }
        if let Some(console) = console {
            let bob = passwords
                .get("bob")
                .and_then(|value| value.as_str())
                .unwrap_or_default();
            writeln!(
                stdout,
                "Web console: {console} (certificate from this network's CA, {dir}/pki/ca.crt)."
            )?;
            writeln!(
                stdout,
                "  Logins: alice / {alice}, bob / {bob}, admin / the password in {dir}/admin-password."
            )?;
        }
        if let Some(http) = served.http_urls.first() {
            writeln!(
                stdout,
                "HTTP API: {http} (OpenAPI: {http}openapi.json). API keys (alice's, the admin's): {dir}/{DEV_API_KEYS_FILE}."
            )?;
            writeln!(
                stdout,
                "  curl --cacert {dir}/pki/ca.crt -H \"Authorization: Bearer $(jq -r .alice {dir}/{DEV_API_KEYS_FILE})\" {http}balances"
            )?;
        }
        if let Some(address) = served.grpc_api_key_addresses.first() {
            writeln!(
                stdout,
                "gRPC with API keys: {address} (strife.v1.Gateway; metadata `authorization: Bearer <key>`)."
            )?;
        }
        writeln!(stdout)?;
        writeln!(stdout, "Try, in another terminal:")?;
        writeln!(stdout, "  export STRIFE_PASSWORD={alice}")?;
        writeln!(
            stdout,
            "  strife client --dir {dir} --gateway {gateway} --user alice balance"
        )?;
        writeln!(stdout, "  strife client --dir {dir} --gateway {gateway} --user alice pay --to bob --amount 12.50")?;
        writeln!(
            stdout,
            "  strife client --dir {dir} --gateway {gateway} --user alice history"
        )?;
        writeln!(
            stdout,
            "(bob's password is in {dir}/dev-passwords.json; `strife` is target/release/strife)"
        )?;
        writeln!(stdout)?;
        writeln!(stdout, "ready — press Ctrl-C to stop everything.")?;
    }
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_passwords_meet_the_policy() {
        for _ in 0..200 {
            for (user, _, _) in super::DEMO_USERS {
                let password = super::demo_password(user);
                assert_eq!(
                    strife_common::password::check_password(user, &password),
                    Ok(())
                );
            }
        }
    }
}
