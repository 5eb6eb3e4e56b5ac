//! Test harness for end-to-end tests: real `strife` processes (the built binary), real etcd,
//! real TLS material from `strife setup`, real SQLite files in a temporary directory, and a
//! real PostgreSQL server where a test needs one ([`postgres`]).
//! Nothing here is a mock; the only in-process pieces are the test's own gRPC clients and,
//! where a test needs one, a stand-in coordinator serving the real wire protocol.

#![allow(dead_code)]

pub mod browser;
pub mod dev;
pub mod disk;
pub mod load;
pub mod network;
pub mod postgres;
pub mod proxy;
pub mod raw_h2;
pub mod replicas;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use strife_common::etcd::access::EtcdAccess;
use strife_common::layout::{KeyPairPaths, Layout};
use strife_common::net::tls::{ExpectedPeer, TlsMaterial};
use strife_proto::v1::bank_client::BankClient;
use tonic::transport::Channel;

/// A TLS client that trusts only the CA at `ca` (the project CA): how a browser or an HTTP
/// client that was given `pki/ca.crt` sees the web listeners.
pub fn trusting_only(ca: &Path) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    std::sync::Arc::new(config)
}

/// How long a test waits for a SIGTERMed gateway to exit: what the gateway promises an
/// orchestrator (the drain, payments still running, orphan aborts, deregistration) and a
/// margin for a machine busy with the rest of the suite. Shorter waits flaked under load.
pub const GATEWAY_EXIT_WAIT: Duration =
    Duration::from_secs(strife_common::limits::GATEWAY_SHUTDOWN_LIMIT.as_secs() + 5);

/// The `strife` binary under test.
pub fn strife_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_strife"))
}

/// Polls `condition` until it holds or `limit` passes; returns whether it held.
pub async fn wait_until<F, Fut>(limit: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A free loopback port for etcd, which cannot be handed a socket: the one place a port is
/// chosen ahead (below the ephemeral range, see `free_port_for_child`).
pub fn free_port() -> u16 {
    strife_common::runtime::free_port_for_child().expect("a free loopback port")
}

/// A data directory made by the real `strife setup`.
pub struct Network {
    pub dir: tempfile::TempDir,
}

impl Network {
    pub fn setup(banks: &[&str], users: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut command = Command::new(strife_bin());
        command.arg("setup").arg("--dir").arg(dir.path());
        command.arg("--banks").arg(banks.join(","));
        if !users.is_empty() {
            command.arg("--users").arg(users.join(","));
        }
        let output = command.output().expect("run strife setup");
        assert!(
            output.status.success(),
            "setup failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Network { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn layout(&self) -> Layout {
        Layout::new(self.dir.path())
    }

    /// TLS material of one of the network's identities (as the test's client).
    pub fn tls(&self, identity: &KeyPairPaths) -> TlsMaterial {
        TlsMaterial::load(&self.layout().ca().cert, identity).expect("load TLS material")
    }

    /// A bank client presenting the gateway's certificate.
    pub fn gateway_bank_client(&self, bank_id: &str, address: &str) -> BankClient<Channel> {
        bank_client(
            &self.tls(&self.layout().gateway_identity()),
            bank_id,
            address,
        )
    }
}

/// Writes a certificate and its key (0600, as setup does: looser keys are refused) as
/// `<dir>/<stem>.crt` / `.key`, for tests that present identities setup did not make.
pub fn write_identity(
    dir: &Path,
    stem: &str,
    issued: strife_pki::IssuedCertificate,
) -> KeyPairPaths {
    use std::os::unix::fs::OpenOptionsExt;
    let paths = KeyPairPaths {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    };
    std::fs::write(&paths.cert, issued.certificate_pem).expect("write certificate");
    let mut key = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&paths.key)
        .expect("create key file");
    std::io::Write::write_all(&mut key, issued.key_pem.as_bytes()).expect("write key");
    paths
}

/// A bank client over mutual TLS with `tls`, talking only to the bank `bank_id`.
pub fn bank_client(tls: &TlsMaterial, bank_id: &str, address: &str) -> BankClient<Channel> {
    let channel = tls
        .endpoint(
            address,
            &ExpectedPeer::Bank(bank_id.to_owned()),
            Duration::from_secs(10),
        )
        .expect("endpoint")
        .connect_lazy();
    BankClient::new(channel)
}

/// A running child process, killed (SIGKILL) when dropped.
pub struct Process {
    pub child: Child,
    pub log: PathBuf,
}

impl Process {
    /// SIGKILL: no chance to clean up, like a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (bounded) for a clean exit; returns whether it exited in time.
    pub fn terminate(&mut self, limit: Duration) -> bool {
        // SAFETY: kill(2) on our own child's pid has no memory-safety implications.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGTERM, then waits up to `limit` for the exit: its status and how long it took, or
    /// `None` if it was still running (it is SIGKILLed when dropped).
    pub fn terminate_with_status(
        &mut self,
        limit: Duration,
    ) -> Option<(std::process::ExitStatus, Duration)> {
        let started = Instant::now();
        // SAFETY: kill(2) on our own child's pid has no memory-safety implications.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some((status, started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A bank process and the address it printed.
pub struct BankProcess {
    pub id: String,
    pub process: Process,
    pub address: SocketAddr,
    /// Its JSON ready line (e.g. `metrics_address` when it serves metrics).
    pub ready: serde_json::Value,
}

/// Options for starting a bank.
pub struct BankStart<'a> {
    pub network: &'a Network,
    pub bank_id: &'a str,
    /// etcd endpoint; `None` points at a closed port (registration just keeps retrying).
    pub etcd: Option<String>,
    pub extra_args: Vec<String>,
}

impl<'a> BankStart<'a> {
    pub fn new(network: &'a Network, bank_id: &'a str) -> Self {
        BankStart {
            network,
            bank_id,
            etcd: None,
            extra_args: Vec::new(),
        }
    }

    pub fn etcd(mut self, endpoint: &str) -> Self {
        self.etcd = Some(endpoint.to_owned());
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.extra_args.push(arg.to_owned());
        self
    }

    /// Starts the bank and waits (bounded) for its ready line.
    pub fn start(self) -> BankProcess {
        let etcd = self.etcd.unwrap_or_else(|| "http://127.0.0.1:1".to_owned());
        let log = self
            .network
            .path()
            .join(format!("{}-{}.log", self.bank_id, unique_suffix()));
        let mut command = Command::new(strife_bin());
        command
            .arg("bank")
            .arg("--dir")
            .arg(self.network.path())
            .arg("--id")
            .arg(self.bank_id)
            .arg("--etcd")
            .arg(&etcd)
            .arg("--json")
            .args(&self.extra_args);
        let (process, line) = spawn_with_ready_line(command, &log);
        let ready: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("bank ready line is not JSON: {line:?}"));
        let address = ready["address"]
            .as_str()
            .expect("address in ready line")
            .parse()
            .expect("socket address");
        BankProcess {
            id: self.bank_id.to_owned(),
            process,
            address,
            ready,
        }
    }
}

fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0)
}

/// Spawns `command` with stderr to `log`, and waits up to 20 s for its first stdout line.
pub fn spawn_with_ready_line(mut command: Command, log: &Path) -> (Process, String) {
    let log_file = std::fs::File::create(log).expect("create log");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file));
    let mut child = command.spawn().expect("spawn strife");
    let stdout = child.stdout.take().expect("stdout");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = sender.send(line);
        }
        // Keep draining so the child never blocks on a full pipe.
        for _ in lines {}
    });
    let process = Process {
        child,
        log: log.to_owned(),
    };
    match receiver.recv_timeout(Duration::from_secs(20)) {
        Ok(line) => (process, line),
        Err(_) => panic!("no ready line; log:\n{}", process.log_text()),
    }
}

/// Runs `command` expecting it to exit by itself within `limit` (a refusal to start); kills
/// it if it does not. Returns its exit code (`None` if it had to be killed or died by a
/// signal) and everything it wrote to stderr.
pub fn run_expecting_exit(mut command: Command, limit: Duration) -> (Option<i32>, String) {
    use std::io::Read;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn strife");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = reader.join().unwrap_or_default();
    (status.and_then(|status| status.code()), text)
}

/// A real etcd server on loopback with its own data directory, locked down as in production:
/// TLS with client certificates from the network's etcd CA, auth on, one role per process.
pub struct Etcd {
    pub endpoint: String,
    /// The network's data dir (its `pki/etcd/` has the certificates).
    layout: Layout,
    /// Bank ids that get an etcd user.
    banks: Vec<String>,
    client_port: u16,
    peer_port: u16,
    data_root: tempfile::TempDir,
    generation: u32,
    process: Option<Process>,
}

impl Etcd {
    /// Starts etcd (installed by `scripts/test`) and waits until it answers. Should another
    /// process take a chosen port first, etcd exits, and it is tried again on new ports.
    pub async fn start(network: &Network) -> Self {
        let banks = strife_common::setup_manifest::SetupManifest::load(&network.layout())
            .expect("setup.json")
            .banks;
        for _ in 0..3 {
            let client_port = free_port();
            let peer_port = free_port();
            let mut etcd = Etcd {
                endpoint: format!("https://127.0.0.1:{client_port}"),
                layout: network.layout(),
                banks: banks.clone(),
                client_port,
                peer_port,
                data_root: tempfile::tempdir().expect("tempdir"),
                generation: 0,
                process: None,
            };
            if etcd.try_spawn().await {
                return etcd;
            }
            eprintln!(
                "etcd did not start; trying other ports. Its log:\n{}",
                etcd.log_text()
            );
        }
        panic!("etcd did not start on three pairs of ports");
    }

    async fn spawn(&mut self) {
        assert!(
            self.try_spawn().await,
            "etcd did not start:\n{}",
            self.log_text()
        );
    }

    /// Starts etcd on this instance's ports; true once it answers, false if it exited or did
    /// not answer within 20 s.
    async fn try_spawn(&mut self) -> bool {
        self.generation += 1;
        let data_dir = self
            .data_root
            .path()
            .join(format!("data-{}", self.generation));
        let log = self
            .data_root
            .path()
            .join(format!("etcd-{}.log", self.generation));
        let client_url = format!("https://127.0.0.1:{}", self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let log_file = std::fs::File::create(&log).expect("etcd log");
        let child = Command::new("etcd")
            .arg("--name")
            .arg("strife-test")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("strife-test={peer_url}"))
            .args(strife_common::etcd::access::server_tls_args(&self.layout))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("etcd must be installed (scripts/test installs etcd-server)");
        let mut process = Process { child, log };
        let root = self.access(strife_common::etcd::access::ROOT_USER);
        let mut exited = false;
        let up = wait_until(Duration::from_secs(20), || {
            exited = exited || matches!(process.child.try_wait(), Ok(Some(_)));
            let root = root.clone();
            let exited = exited;
            async move { exited || etcd_get(&root, "health-probe").await.is_ok() }
        })
        .await;
        self.process = Some(process);
        if !up || exited {
            return false;
        }
        strife_common::etcd::access::lock_down(&root, &self.banks)
            .await
            .expect("lock etcd down");
        true
    }

    /// Access to this etcd as etcd user `user` (`root`, `strife-gateway`, `strife-bank-<id>`).
    pub fn access(&self, user: &str) -> EtcdAccess {
        EtcdAccess::new(vec![self.endpoint.clone()], &self.layout, user).expect("etcd access")
    }

    /// A client logged in as etcd's root (to play an attacker who got write access anyway).
    pub async fn root_client(&self) -> etcd_client::Client {
        self.access(strife_common::etcd::access::ROOT_USER)
            .connect()
            .await
            .expect("etcd root client")
    }

    /// SIGKILLs etcd.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts etcd again on the same port with an empty data dir, so every key is gone and
    /// only re-registration can bring one back.
    pub async fn restart_empty(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Everything etcd logged so far (all its runs).
    pub fn log_text(&self) -> String {
        (1..=self.generation)
            .map(|generation| {
                let path = self.data_root.path().join(format!("etcd-{generation}.log"));
                std::fs::read_to_string(path).unwrap_or_default()
            })
            .collect()
    }

    /// Every gateway replica registered now (empty if etcd cannot be read).
    pub async fn gateway_entries(&self) -> Vec<strife_common::etcd::discovery::ServiceEntry> {
        let root = self.access(strife_common::etcd::access::ROOT_USER);
        let Ok(mut client) = root.connect().await else {
            return Vec::new();
        };
        let options = etcd_client::GetOptions::new().with_prefix();
        let read = client.get(strife_common::etcd::keys::GATEWAYS_PREFIX, Some(options));
        match tokio::time::timeout(Duration::from_secs(2), read).await {
            Ok(Ok(response)) => response
                .kvs()
                .iter()
                .filter_map(|kv| {
                    strife_common::etcd::discovery::gateway_entry_from_kv(kv.key(), kv.value()).ok()
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The value at `key`, if any.
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let root = self.access(strife_common::etcd::access::ROOT_USER);
        etcd_get(&root, key).await.ok().flatten()
    }
}

async fn etcd_get(etcd: &EtcdAccess, key: &str) -> Result<Option<Vec<u8>>, String> {
    let mut client = etcd.connect().await.map_err(|error| format!("{error:#}"))?;
    let response = tokio::time::timeout(Duration::from_secs(2), client.get(key, None))
        .await
        .map_err(|_| "get timeout".to_owned())?
        .map_err(|error| error.to_string())?;
    Ok(response.kvs().first().map(|kv| kv.value().to_vec()))
}
