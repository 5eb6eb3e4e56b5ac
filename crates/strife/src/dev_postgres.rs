//! `strife dev --store postgres`: a private PostgreSQL cluster for the dev network, made with
//! the installed server binaries (Debian's `postgresql` package: `apt-get install -y
//! postgresql`), listening on 127.0.0.1 on a free port and a private socket directory, and
//! stopped with the network.
//!
//! The cluster lives in `<dir>/postgres/` (its data, socket directory and superuser password,
//! all private). PostgreSQL refuses to run as root; when `strife dev` runs as root, the server
//! runs as the `postgres` system user instead, and since that user cannot enter the 0700 data
//! dir, the cluster then lives in `/var/tmp/strife-dev-postgres-<hash of dir>/` (0700, owned
//! by `postgres`). Authentication: SCRAM password over TCP (the password is generated once
//! and kept 0600 next to the cluster); the URL reaches gateways through their environment,
//! never a command line.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The cluster's superuser (the gateways log in as it; it owns the `strife` database).
const SUPERUSER: &str = "strife";
/// The database the gateways share.
const DATABASE: &str = "strife";
/// Longest wait for the server to accept connections.
const START_LIMIT: Duration = Duration::from_secs(60);

/// A running private cluster.
pub struct DevPostgres {
    child: Child,
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
        // SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        #[allow(unsafe_code)]
        // SAFETY: kill(2) on our own child's pid has no memory-safety implications.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The directory of the PostgreSQL server binaries: `$STRIFE_PG_BINDIR`, `pg_config
/// --bindir`, the newest `/usr/lib/postgresql/*/bin`, or `initdb` on PATH.
pub fn bindir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("STRIFE_PG_BINDIR") {
        return Ok(PathBuf::from(dir));
    }
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_server(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let dir = entry.path().join("bin");
            has_server(&dir).then_some((version, dir))
        })
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|dir| has_server(dir))
        .context(
            "the PostgreSQL server is not installed (no initdb/postgres found); \
             install it with `apt-get install -y postgresql`, or run `strife dev` without \
             `--store postgres` (embedded SQLite)",
        )
}

/// When we are root: the (uid, gid) PostgreSQL must run as.
fn server_user() -> anyhow::Result<Option<(u32, u32)>> {
    #[allow(unsafe_code)]
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new("postgres")?;
    #[allow(unsafe_code)]
    // SAFETY: getpwnam gets a valid C string and returns a pointer to static storage or null;
    // two integers are read from it at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    anyhow::ensure!(
        !entry.is_null(),
        "running as root, PostgreSQL must run as the `postgres` user, which does not exist \
         (install the `postgresql` package, or run strife dev as an ordinary user)"
    );
    #[allow(unsafe_code)]
    // SAFETY: checked non-null above.
    let ids = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok(Some(ids))
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

fn private_dir(path: &Path, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", path.display()))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .with_context(|| format!("handing {} to the postgres user", path.display()))?;
    }
    Ok(())
}

fn as_server_user(command: &mut Command, owner: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
    command.env("LC_ALL", "C").env_remove("PGDATA")
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
    let bin = bindir()?;
    let owner = server_user()?;
    let root = cluster_root(dir, owner)?;
    forget_if_stale(dir, &root)?;
    private_dir(&root, owner)?;
    let data = root.join("data");
    let socket_dir = root.join("run");
    private_dir(&socket_dir, owner)?;
    let password_file = root.join("password");
    if !data.join("PG_VERSION").is_file() {
        let password = new_password();
        std::fs::write(&password_file, &password)
            .with_context(|| format!("writing {}", password_file.display()))?;
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&password_file, Some(uid), Some(gid))?;
        }
        eprintln!(
            "creating a private PostgreSQL cluster in {}",
            data.display()
        );
        let output = as_server_user(&mut Command::new(bin.join("initdb")), owner)
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", password_file.display()))
            .args(["-E", "UTF8", "--no-locale"])
            .output()
            .context("running initdb")?;
        anyhow::ensure!(
            output.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let password = std::fs::read_to_string(&password_file)
        .with_context(|| format!("reading {}", password_file.display()))?
        .trim()
        .to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = as_server_user(&mut Command::new(bin.join("postgres")), owner)
        .arg("-D")
        .arg(&data)
        .args(["-c", "listen_addresses=127.0.0.1", "-p", &port.to_string()])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", socket_dir.display()))
        // Durable commits are the point (the gateway also asks for them per session).
        .args(["-c", "fsync=on", "-c", "synchronous_commit=on"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file.try_clone()?))
        .stderr(Stdio::from(log_file))
        .spawn()
        .context("starting postgres")?;
    let mut cluster = DevPostgres {
        child,
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
        if let Ok(Some(status)) = cluster.child.try_wait() {
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
