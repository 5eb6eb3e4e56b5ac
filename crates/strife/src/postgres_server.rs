//! A private PostgreSQL server run from the installed server binaries (Debian's `postgresql`
//! package: `/usr/lib/postgresql/<version>/bin`, off PATH): finding them, `initdb`, starting
//! `postgres` on a loopback port with its own Unix socket directory, and stopping it.
//!
//! Two callers start their servers here, so both run PostgreSQL the same way:
//! `strife dev --store postgres` (`dev_postgres.rs`: one lasting cluster under the data dir)
//! and the end-to-end tests (`tests/e2e/support/postgres.rs`: a throwaway server per test).
//!
//! PostgreSQL refuses to run as root. When we are root, `initdb` and the server run as the
//! `postgres` system user (the Debian package creates it), and the directories they use are
//! handed to that user ([`server_user`], [`private_dir`]).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

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

/// The (uid, gid) PostgreSQL must run as: `None` unless we are root, then the `postgres`
/// user's.
pub fn server_user() -> anyhow::Result<Option<(u32, u32)>> {
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

/// Makes `path` (and its parents) exist, 0700, owned by `owner` when given: PostgreSQL
/// refuses a data directory others can read, and the server user must own what it writes.
pub fn private_dir(path: &Path, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", path.display()))?;
    give_to(path, owner)
}

/// Hands `path` to `owner` (the server's user when we are root; nothing otherwise).
pub fn give_to(path: &Path, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .with_context(|| format!("handing {} to the postgres user", path.display()))?;
    }
    Ok(())
}

/// `command`, set up to run as the server's user, in the C locale, with no inherited
/// `PGDATA` (the data directory is always named on the command line).
pub fn as_server_user(command: &mut Command, owner: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
    command.env("LC_ALL", "C").env_remove("PGDATA")
}

/// How `initdb` makes a cluster.
#[derive(Debug, Clone)]
pub struct Initdb<'a> {
    /// The superuser it creates.
    pub superuser: &'a str,
    /// pg_hba.conf's method for Unix-socket and for TCP connections (`--auth-local`,
    /// `--auth-host`).
    pub auth_local: &'a str,
    pub auth_host: &'a str,
    /// The superuser's password, read from this file (`--pwfile`); none if absent.
    pub password_file: Option<&'a Path>,
    /// `--no-sync`: skip the fsyncs at the end, for a cluster that may be lost with the machine
    /// (a test template); a lasting cluster keeps them.
    pub no_sync: bool,
}

/// Runs `initdb` on the empty (or missing) directory `data`, UTF-8 with no locale.
pub fn initdb(
    bin: &Path,
    data: &Path,
    owner: Option<(u32, u32)>,
    options: &Initdb<'_>,
) -> anyhow::Result<()> {
    let mut command = Command::new(bin.join("initdb"));
    as_server_user(&mut command, owner)
        .arg("-D")
        .arg(data)
        .args(["-U", options.superuser])
        .arg(format!("--auth-local={}", options.auth_local))
        .arg(format!("--auth-host={}", options.auth_host));
    if let Some(file) = options.password_file {
        command.arg(format!("--pwfile={}", file.display()));
    }
    command.args(["-E", "UTF8", "--no-locale"]);
    if options.no_sync {
        command.arg("--no-sync");
    }
    let output = command.output().context("running initdb")?;
    anyhow::ensure!(
        output.status.success(),
        "initdb failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Where and how to start a server.
#[derive(Debug, Clone)]
pub struct Start<'a> {
    /// The cluster's data directory (made by [`initdb`]).
    pub data: &'a Path,
    /// The TCP port on 127.0.0.1 (the only address it listens on).
    pub port: u16,
    /// The directory of its Unix socket (private; never the system-wide one).
    pub socket_dir: &'a Path,
    /// Where its output goes (created, or truncated).
    pub log: &'a Path,
    /// More `-c name=value` settings. `fsync` is always on: durable commits are the point
    /// of every store this server backs.
    pub settings: &'a [(&'a str, &'a str)],
}

/// A running `postgres` process. Dropping it leaves the process running: stop it with
/// [`Server::stop_fast`] or [`Server::stop_immediately`].
#[derive(Debug)]
pub struct Server {
    child: Child,
}

impl Server {
    /// Starts `postgres` (it is ready only once it accepts connections; the caller checks
    /// that its own way).
    pub fn start(bin: &Path, owner: Option<(u32, u32)>, start: &Start<'_>) -> anyhow::Result<Self> {
        // Opened here and inherited, so the server's user needs no access to it.
        let log = std::fs::File::create(start.log)
            .with_context(|| format!("creating {}", start.log.display()))?;
        let mut command = Command::new(bin.join("postgres"));
        as_server_user(&mut command, owner)
            .arg("-D")
            .arg(start.data)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-p", &start.port.to_string()])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                start.socket_dir.display()
            ))
            .args(["-c", "fsync=on"]);
        for (name, value) in start.settings {
            command.arg("-c").arg(format!("{name}={value}"));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting postgres")?;
        Ok(Server { child })
    }

    /// How the server exited, if it has (e.g. at start: port taken, bad settings; see its
    /// log).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// PostgreSQL's "fast" shutdown (SIGINT: open transactions rolled back, a checkpoint
    /// written), waiting up to `limit` for the exit; returns whether it exited. What to do with
    /// a server that did not is the caller's choice.
    pub fn stop_fast(&mut self, limit: Duration) -> bool {
        self.signal(libc::SIGINT);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// PostgreSQL's "immediate" shutdown (SIGQUIT: every backend ends at once, no checkpoint;
    /// the next start replays the WAL, as after a crash), waiting for the exit.
    pub fn stop_immediately(&mut self) {
        self.signal(libc::SIGQUIT);
        let _ = self.child.wait();
    }

    /// SIGKILL (the postmaster only: its backends notice and exit), waiting for the exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, signal: libc::c_int) {
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        #[allow(unsafe_code)]
        // SAFETY: kill(2) on our own child's pid has no memory-safety implications.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}
