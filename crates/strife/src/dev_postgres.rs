//! `strife dev --store postgres`: a private PostgreSQL cluster for the dev network, made with
//! the installed server binaries (Debian's `postgresql` package: `apt-get install -y
//! postgresql`; how they are found, run and stopped: `postgres_server.rs`), listening on
//! 127.0.0.1 on a free port and a private socket directory, and stopped with the network.
//!
//! The cluster lives in `<dir>/postgres/` (its data, socket directory and superuser password,
//! all private). PostgreSQL refuses to run as root; when `strife dev` runs as root, the server
//! runs as the `postgres` system user instead, and since that user cannot enter the 0700 data
//! dir, the cluster then lives in `/var/tmp/strife-dev-postgres-<hash of dir>/` (0700, owned
//! by `postgres`). Authentication: SCRAM password over TCP (the password is generated once
//! and kept 0600 next to the cluster); the URL reaches gateways through their environment,
//! never a command line.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::postgres_server::{self, Initdb, Server, Start};

/// The cluster's superuser (the gateways log in as it; it owns the `strife` database).
const SUPERUSER: &str = "strife";
/// The database the gateways share.
const DATABASE: &str = "strife";
/// Longest wait for the server to accept connections.
const START_LIMIT: Duration = Duration::from_secs(60);

/// A running private cluster.
pub struct DevPostgres {
    server: Server,
    /// `postgresql://…` for `strife gateway --store`, with the password.
    pub url: String,
    /// The same without the password, for printing.
    pub redacted_url: String,
    /// The `strife` database was created by this start: the first gateway must create the
    /// schema in it (`--initialize`).
    pub created: bool,
}

impl Drop for DevPostgres {
    fn drop(&mut self) {
        // PostgreSQL's fast shutdown; SIGKILL only if that takes longer than 20 s.
        if !self.server.stop_fast(Duration::from_secs(20)) {
            self.server.kill();
        }
    }
}

/// Where the cluster lives for data dir `dir` (see the module docs for root).
fn cluster_root(dir: &Path, as_user: Option<(u32, u32)>) -> anyhow::Result<PathBuf> {
    if as_user.is_none() {
        return Ok(dir.join("postgres"));
    }
    let absolute =
        std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    use blake2::Digest;
    let digest = blake2::Blake2s256::digest(absolute.as_os_str().as_encoded_bytes());
    let tag: String = digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    Ok(PathBuf::from(format!("/var/tmp/strife-dev-postgres-{tag}")))
}

/// A cluster outside the data dir (the root case) belongs to the data dir only while both
/// hold the same random id: a data dir deleted and made again (a new network, new CA) must
/// not meet the old network's database — the gateway would rightly refuse it.
fn forget_if_stale(dir: &Path, root: &Path) -> anyhow::Result<()> {
    if root.starts_with(dir) {
        return Ok(());
    }
    let ours = dir.join("postgres-cluster-id");
    let theirs = root.join("cluster-id");
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .ok()
            .map(|id| id.trim().to_owned())
    };
    match (read(&ours), read(&theirs)) {
        (Some(ours), Some(theirs)) if ours == theirs => return Ok(()),
        _ => {}
    }
    if root.exists() {
        eprintln!(
            "discarding {}: it belonged to an earlier network in {}",
            root.display(),
            dir.display()
        );
        std::fs::remove_dir_all(root).with_context(|| format!("removing {}", root.display()))?;
    }
    let id = new_password();
    std::fs::write(&ours, &id).with_context(|| format!("writing {}", ours.display()))?;
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    std::fs::write(&theirs, &id).with_context(|| format!("writing {}", theirs.display()))?;
    Ok(())
}

/// A password made of letters and digits (safe in a URL without escaping).
fn new_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..24)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

/// Starts (creating on first use) the dev network's cluster; its log goes to `log`.
pub fn start(dir: &Path, log: &Path) -> anyhow::Result<DevPostgres> {
    let bin = postgres_server::bindir()?;
    let owner = postgres_server::server_user()?;
    let root = cluster_root(dir, owner)?;
    forget_if_stale(dir, &root)?;
    postgres_server::private_dir(&root, owner)?;
    let data = root.join("data");
    let socket_dir = root.join("run");
    postgres_server::private_dir(&socket_dir, owner)?;
    let password_file = root.join("password");
    if !data.join("PG_VERSION").is_file() {
        let password = new_password();
        std::fs::write(&password_file, &password)
            .with_context(|| format!("writing {}", password_file.display()))?;
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600))?;
        postgres_server::give_to(&password_file, owner)?;
        eprintln!(
            "creating a private PostgreSQL cluster in {}",
            data.display()
        );
        postgres_server::initdb(
            &bin,
            &data,
            owner,
            &Initdb {
                superuser: SUPERUSER,
                auth_local: "peer",
                auth_host: "scram-sha-256",
                password_file: Some(&password_file),
                no_sync: false,
            },
        )?;
    }
    let password = std::fs::read_to_string(&password_file)
        .with_context(|| format!("reading {}", password_file.display()))?
        .trim()
        .to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let server = Server::start(
        &bin,
        owner,
        &Start {
            data: &data,
            port,
            socket_dir: &socket_dir,
            log,
            // Durable commits are the point (the gateway also asks for them per session).
            settings: &[("synchronous_commit", "on")],
        },
    )?;
    let mut cluster = DevPostgres {
        server,
        url: format!(
            "postgresql://{SUPERUSER}:{password}@127.0.0.1:{port}/{DATABASE}?sslmode=disable"
        ),
        redacted_url: format!("postgresql://{SUPERUSER}@127.0.0.1:{port}/{DATABASE}"),
        created: false,
    };
    wait_ready(&mut cluster, &bin, port, log)?;
    cluster.created = create_database(&bin, port, &password)?;
    Ok(cluster)
}

fn psql(
    bin: &Path,
    port: u16,
    password: &str,
    database: &str,
    sql: &str,
) -> anyhow::Result<std::process::Output> {
    // psql is in the client package, beside or outside the server binaries.
    let program = if bin.join("psql").is_file() {
        bin.join("psql")
    } else {
        PathBuf::from("psql")
    };
    Command::new(program)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            SUPERUSER,
            "-d",
            database,
        ])
        .args(["-v", "ON_ERROR_STOP=1", "-Atc", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .context("running psql")
}

fn wait_ready(cluster: &mut DevPostgres, bin: &Path, port: u16, log: &Path) -> anyhow::Result<()> {
    let password = cluster
        .url
        .split_once(':')
        .and_then(|(_, rest)| rest.split_once(':'))
        .and_then(|(_, rest)| rest.split_once('@'))
        .map(|(password, _)| password.to_owned())
        .unwrap_or_default();
    let deadline = Instant::now() + START_LIMIT;
    loop {
        if let Some(status) = cluster.server.exited() {
            anyhow::bail!("postgres exited at start ({status}); see {}", log.display());
        }
        if psql(bin, port, &password, "postgres", "SELECT 1")
            .is_ok_and(|output| output.status.success())
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "postgres did not accept connections within {} s; see {}",
            START_LIMIT.as_secs(),
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Creates the database if it is missing; says whether it did.
fn create_database(bin: &Path, port: u16, password: &str) -> anyhow::Result<bool> {
    let exists = psql(
        bin,
        port,
        password,
        "postgres",
        &format!("SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"),
    )?;
    if String::from_utf8_lossy(&exists.stdout).trim() == "1" {
        return Ok(false);
    }
    let created = psql(
        bin,
        port,
        password,
        "postgres",
        &format!("CREATE DATABASE {DATABASE}"),
    )?;
    anyhow::ensure!(
        created.status.success(),
        "creating the {DATABASE} database failed: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    Ok(true)
}
