//! A real PostgreSQL server for the tests: the installed binaries (Debian's
//! `/usr/lib/postgresql/<version>/bin`, installed by `scripts/test`), a data directory in a
//! temporary directory, its own Unix socket directory and a free loopback port, stopped when
//! dropped. `fsync` stays on, as in production.
//!
//! `initdb` takes seconds on a small machine, so it runs once per build directory: its result
//! is kept as a template under `CARGO_TARGET_TMPDIR` and every server starts from a copy.
//! Within one test, one server serves every database the test needs
//! ([`Postgres::create_database`]: a database and a role with a password per call).
//!
//! Finding, running (as the `postgres` user when the tests run as root) and stopping the
//! server is the `strife` library's, the code `strife dev --store postgres` runs
//! (`crates/strife/src/postgres_server.rs`); here is what only tests need: the template,
//! pg_hba.conf rules, TLS, databases with their own roles, restarts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use strife::postgres_server::{self, Initdb, Server};

use super::{free_port, wait_until};

/// The superuser `initdb` creates; trusted over the private Unix socket only.
const SUPERUSER: &str = "strife_admin";

/// Directory of the PostgreSQL server binaries (the library's search: `$STRIFE_PG_BINDIR`,
/// `pg_config`, `/usr/lib/postgresql/*/bin`, PATH).
pub fn bindir() -> PathBuf {
    postgres_server::bindir().expect(
        "PostgreSQL server binaries (initdb, postgres) must be installed: scripts/test installs \
         the `postgresql` package",
    )
}

/// The OS user the server runs as when we are root: (uid, gid).
fn server_user() -> Option<(u32, u32)> {
    postgres_server::server_user().expect("a user to run PostgreSQL as")
}

/// The initdb'd data directory every server is copied from, made once per build dir.
fn template() -> PathBuf {
    let bindir = bindir();
    let tag: String = bindir
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let template = root.join(format!("postgres-template{tag}"));
    if template.join("data").join("PG_VERSION").is_file() {
        return template;
    }
    // Built under a private name and renamed into place, so a concurrent test either sees
    // no template or a whole one.
    let building = root.join(format!(
        "postgres-template-building-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    postgres_server::private_dir(&building, server_user()).unwrap();
    // The pg_hba.conf initdb writes is replaced at every start ([`Postgres::start`]).
    postgres_server::initdb(
        &bindir,
        &building.join("data"),
        server_user(),
        &Initdb {
            superuser: SUPERUSER,
            auth_local: "trust",
            auth_host: "trust",
            password_file: None,
            // A template the next build dir makes again if it is lost: no fsyncs.
            no_sync: true,
        },
    )
    .unwrap();
    if std::fs::rename(&building, &template).is_err() {
        // Another test made it first.
        let _ = std::fs::remove_dir_all(&building);
    }
    template
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// TLS for the server: its certificate and key (PEM), and the CA a client must trust.
pub struct ServerTls {
    pub certificate_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

impl ServerTls {
    /// A fresh CA and a server certificate for localhost / 127.0.0.1.
    pub fn generate() -> Self {
        let ca = strife_pki::CertificateAuthority::generate_named("Test PostgreSQL CA").unwrap();
        let hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let issued = ca
            .issue_etcd(
                "postgres",
                Some(&hosts),
                strife_pki::Validity::default_leaf(),
            )
            .unwrap();
        ServerTls {
            certificate_pem: issued.certificate_pem,
            key_pem: issued.key_pem,
            ca_pem: ca.certificate_pem(),
        }
    }
}

/// A running PostgreSQL server.
pub struct Postgres {
    root: tempfile::TempDir,
    pub port: u16,
    tls: bool,
    server: Option<Server>,
    generation: u32,
}

impl Postgres {
    /// A server with plain connections: trust for the superuser over its Unix socket,
    /// passwords (SCRAM) over TCP on 127.0.0.1.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A server that accepts TCP connections only over TLS with `tls`'s certificate.
    pub async fn start_tls(tls: &ServerTls) -> Self {
        Self::start_with(Some(tls)).await
    }

    async fn start_with(tls: Option<&ServerTls>) -> Self {
        let template = template();
        let root = tempfile::Builder::new()
            .prefix("strife-pg-")
            .tempdir()
            .unwrap();
        postgres_server::give_to(root.path(), server_user()).unwrap();
        let data = root.path().join("data");
        let copied = Command::new("cp")
            .arg("-a")
            .arg(template.join("data"))
            .arg(&data)
            .status()
            .unwrap();
        assert!(copied.success(), "copying the PostgreSQL template failed");
        let mut hba = String::from("local all all trust\n");
        match tls {
            Some(tls) => {
                for (name, pem) in [
                    ("server.crt", &tls.certificate_pem),
                    ("server.key", &tls.key_pem),
                ] {
                    let path = data.join(name);
                    std::fs::write(&path, pem).unwrap();
                    std::fs::set_permissions(
                        &path,
                        std::os::unix::fs::PermissionsExt::from_mode(0o600),
                    )
                    .unwrap();
                    postgres_server::give_to(&path, server_user()).unwrap();
                }
                hba.push_str("hostssl all all 127.0.0.1/32 scram-sha-256\n");
            }
            None => hba.push_str("host all all 127.0.0.1/32 scram-sha-256\n"),
        }
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        let mut server = Postgres {
            root,
            port: 0,
            tls: tls.is_some(),
            server: None,
            generation: 0,
        };
        for _ in 0..3 {
            server.port = free_port();
            if server.try_spawn().await {
                return server;
            }
            eprintln!(
                "PostgreSQL did not start; trying another port. Its log:\n{}",
                server.log_text()
            );
        }
        panic!("PostgreSQL did not start on three ports");
    }

    fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.root.path()
    }

    /// Starts the server process; true once it answers, false if it exited or did not answer
    /// within 30 s.
    async fn try_spawn(&mut self) -> bool {
        self.generation += 1;
        let log = self
            .root
            .path()
            .join(format!("postgres-{}.log", self.generation));
        let mut settings = vec![
            ("max_connections", "300"),
            ("shared_buffers", "32MB"),
            ("logging_collector", "off"),
        ];
        if self.tls {
            settings.push(("ssl", "on"));
        }
        let server = Server::start(
            &bindir(),
            server_user(),
            &postgres_server::Start {
                data: &self.data_dir(),
                port: self.port,
                socket_dir: self.socket_dir(),
                log: &log,
                settings: &settings,
            },
        )
        .expect("spawn postgres");
        self.server = Some(server);
        let mut exited = false;
        let up = wait_until(Duration::from_secs(30), || {
            exited = exited
                || self
                    .server
                    .as_mut()
                    .is_some_and(|server| server.exited().is_some());
            let exited = exited;
            let ready = self.superuser_connect("postgres");
            async move {
                if exited {
                    return true;
                }
                match ready.await {
                    Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
        up && !exited
    }

    /// A superuser session over the Unix socket.
    fn superuser_connect(
        &self,
        database: &str,
    ) -> impl std::future::Future<Output = Result<tokio_postgres::Client, tokio_postgres::Error>>
    {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.socket_dir())
            .port(self.port)
            .user(SUPERUSER)
            .dbname(database)
            .connect_timeout(Duration::from_secs(2));
        async move {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            Ok(client)
        }
    }

    /// A superuser client on `database`.
    pub async fn admin(&self, database: &str) -> tokio_postgres::Client {
        self.superuser_connect(database)
            .await
            .expect("superuser connection")
    }

    /// A fresh database owned by a fresh role with a password; returns its details.
    pub async fn create_database(&self, name: &str) -> Database {
        let admin = self.admin("postgres").await;
        let password = format!("pw-{name}-{}", unique());
        // Two calls: CREATE DATABASE may not share a (implicit) transaction.
        admin
            .batch_execute(&format!("CREATE ROLE {name} LOGIN PASSWORD '{password}'"))
            .await
            .expect("create role");
        admin
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {name}"))
            .await
            .expect("create database");
        Database {
            name: name.to_owned(),
            user: name.to_owned(),
            password,
            port: self.port,
        }
    }

    /// Fast shutdown (SIGINT: sessions are ended, a checkpoint written), waiting for the
    /// server to exit (after 20 s, an immediate shutdown).
    pub fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            if !server.stop_fast(Duration::from_secs(20)) {
                server.stop_immediately();
            }
        }
    }

    /// Immediate shutdown (SIGQUIT: every backend ends at once, no checkpoint; the next start
    /// replays the WAL, as after a crash), waiting for the server to exit.
    pub fn stop_immediately(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.stop_immediately();
        }
    }

    /// Whether the server process is running (not stopped by the test).
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Starts the stopped server again on the same data directory and port.
    pub async fn start_again(&mut self) {
        assert!(self.server.is_none(), "PostgreSQL is still running");
        assert!(
            self.try_spawn().await,
            "PostgreSQL did not start again:\n{}",
            self.log_text()
        );
    }

    /// Stops the server (fast shutdown) and starts it again on the same data directory and
    /// port.
    pub async fn restart(&mut self) {
        self.stop();
        self.start_again().await;
    }

    /// Everything the server logged (all its runs).
    pub fn log_text(&self) -> String {
        (1..=self.generation)
            .map(|generation| {
                std::fs::read_to_string(self.root.path().join(format!("postgres-{generation}.log")))
                    .unwrap_or_default()
            })
            .collect()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate shutdown: the postmaster ends every backend and exits at once.
        self.stop_immediately();
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0)
}

/// A database on a test server, with a role that owns it.
#[derive(Debug, Clone)]
pub struct Database {
    pub name: String,
    pub user: String,
    pub password: String,
    pub port: u16,
}

impl Database {
    /// `postgresql://user:password@127.0.0.1:port/name` (plain TCP on loopback).
    pub fn url(&self) -> String {
        format!(
            "postgresql://{}:{}@127.0.0.1:{}/{}",
            self.user, self.password, self.port, self.name
        )
    }

    /// The URL for a TLS server: verify-full against `ca_file`, host `host`.
    pub fn tls_url(&self, host: &str, ca_file: &Path) -> String {
        format!(
            "postgresql://{}:{}@{host}:{}/{}?sslmode=verify-full&sslrootcert={}",
            self.user,
            self.password,
            self.port,
            self.name,
            ca_file.display()
        )
    }
}
