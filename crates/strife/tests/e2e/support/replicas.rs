//! N gateway replicas on one PostgreSQL database, with one set of banks and one etcd: the
//! production shape of issue 13, on real processes. Every replica has its own `--replica-id`
//! (`r0`, `r1`, …), its own loopback port (fixed after its first start, so clients keep their
//! address list across restarts) and its own log per run; all share the network's data dir
//! (certificates; a shared store takes no `LOCK`) and get the store through
//! `STRIFE_GATEWAY_STORE`, the first one with `--initialize`.
//!
//! Faults a test can inject: SIGKILL and restart a replica, SIGSTOP/SIGCONT it (a stall: it
//! keeps its sockets, its etcd lease lapses), revoke its etcd lease while it runs, and stop or
//! restart the PostgreSQL server under all of them. What a test can observe besides the
//! processes' answers: the database itself (a superuser session), etcd, each replica's log.

use std::collections::BTreeSet;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use strife_proto::v1 as pb;
use tonic::Code;

use super::network::{GatewayClient, ManualNetwork, NetworkOptions};
use super::postgres::{Database, Postgres};
use super::{strife_bin, wait_until, Process};

/// The replicas' etcd lease TTL: 2 s (what every test gateway uses), or
/// `$STRIFE_TEST_LEASE_TTL_SECS` (to measure at the production default, 5).
pub fn lease_ttl() -> Duration {
    Duration::from_secs(env_number("STRIFE_TEST_LEASE_TTL_SECS").unwrap_or(2))
}

/// The replicas' prepare timeout: 1 s, or `$STRIFE_TEST_PREPARE_TIMEOUT_MS` (the production
/// default is 2000).
pub fn prepare_timeout() -> Duration {
    Duration::from_millis(env_number("STRIFE_TEST_PREPARE_TIMEOUT_MS").unwrap_or(1_000))
}

/// A payment's decision window: prepare timeout + `limits::DECISION_GRACE`.
pub fn decision_window() -> Duration {
    prepare_timeout() + strife_common::limits::DECISION_GRACE
}

/// How often a replica looks for dead replicas' payments (`takeover::TAKEOVER_INTERVAL`).
pub const TAKEOVER_SCAN: Duration = strife_gateway::TAKEOVER_INTERVAL;

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|text| {
        text.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {text:?}"))
    })
}

/// One gateway replica.
pub struct Replica {
    pub id: String,
    /// `127.0.0.1:0` until the first start, then the port it got, kept across restarts.
    pub address: String,
    pub process: Option<Process>,
    /// Its pid while it runs (also while stopped by SIGSTOP).
    pub pid: Option<u32>,
    /// Every run's log, oldest first.
    logs: Vec<PathBuf>,
}

/// etcd, banks, a PostgreSQL server with the gateway's database, and N replicas on it.
pub struct ReplicaNetwork {
    pub network: ManualNetwork,
    pub postgres: Postgres,
    pub database: Database,
    pub replicas: Vec<Replica>,
}

impl Deref for ReplicaNetwork {
    type Target = ManualNetwork;
    fn deref(&self) -> &ManualNetwork {
        &self.network
    }
}

impl DerefMut for ReplicaNetwork {
    fn deref_mut(&mut self) -> &mut ManualNetwork {
        &mut self.network
    }
}

impl ReplicaNetwork {
    /// Starts PostgreSQL, etcd, `banks` (with `options.bank_args`) and `count` replicas; the
    /// network's `gateway_address` becomes the list of every replica (`a,b,c`, what the CLI
    /// takes), so `client`, `fund` and `available_minor` go through the failover list.
    /// Returns once every replica is registered in etcd (a replica not yet there counts as
    /// dead for the others' takeover).
    pub async fn start(count: usize, banks: &[&str], users: &[&str]) -> Self {
        Self::start_with(count, banks, users, NetworkOptions::default()).await
    }

    pub async fn start_with(
        count: usize,
        banks: &[&str],
        users: &[&str],
        mut options: NetworkOptions,
    ) -> Self {
        let postgres = Postgres::start().await;
        let database = postgres.create_database("gateway").await;
        options
            .gateway_env
            .push(("STRIFE_GATEWAY_STORE".into(), database.url()));
        options.without_gateway = true;
        let network = ManualNetwork::start_with(banks, users, options).await;
        let mut replicas = ReplicaNetwork {
            network,
            postgres,
            database,
            replicas: (0..count)
                .map(|index| Replica {
                    id: format!("r{index}"),
                    address: "127.0.0.1:0".into(),
                    process: None,
                    pid: None,
                    logs: Vec::new(),
                })
                .collect(),
        };
        for index in 0..count {
            replicas.start_replica(index);
        }
        replicas.network.gateway_address = replicas.address_list();
        let ids: BTreeSet<String> = replicas.replicas.iter().map(|r| r.id.clone()).collect();
        let all_registered = wait_until(Duration::from_secs(15), || async {
            replicas.registered().await.is_superset(&ids)
        })
        .await;
        assert!(all_registered, "replicas did not all register in etcd");
        replicas
    }

    /// Starts replica `index` (again, on the same address and id). Its first start ever on
    /// a fresh database (replica 0's) creates the schema (`--initialize`).
    pub fn start_replica(&mut self, index: usize) {
        assert!(
            self.replicas[index].process.is_none(),
            "{} is running",
            self.replicas[index].id
        );
        let replica = &self.replicas[index];
        let log = self.network.network.path().join(format!(
            "gateway-{}-run{}.log",
            replica.id,
            replica.logs.len() + 1
        ));
        let mut args = vec![
            "--replica-id".to_owned(),
            replica.id.clone(),
            "--lease-ttl".into(),
            lease_ttl().as_secs().to_string(),
            "--prepare-timeout".into(),
            format!("{}ms", prepare_timeout().as_millis()),
        ];
        if index == 0 && replica.logs.is_empty() {
            args.push("--initialize".into());
        }
        let (process, ready) = self
            .network
            .spawn_gateway(&replica.address, &args, &[], &log);
        assert_eq!(ready["replica_id"], replica.id.as_str(), "{ready}");
        let replica = &mut self.replicas[index];
        replica.address = ready["address"].as_str().unwrap().to_owned();
        replica.pid = Some(process.child.id());
        replica.process = Some(process);
        replica.logs.push(log);
    }

    /// SIGKILLs replica `index` (a crash: no deregistration, its lease lapses after the TTL).
    pub fn kill(&mut self, index: usize) {
        let replica = &mut self.replicas[index];
        if let Some(mut process) = replica.process.take() {
            process.kill();
        }
        replica.pid = None;
    }

    /// SIGTERM: a clean stop (running payments finish, the lease is revoked).
    pub fn terminate(&mut self, index: usize) {
        let replica = &mut self.replicas[index];
        if let Some(mut process) = replica.process.take() {
            assert!(
                process.terminate(Duration::from_secs(20)),
                "{} did not stop",
                replica.id
            );
        }
        replica.pid = None;
    }

    /// SIGSTOP: the replica stalls with every socket open (its database sessions included),
    /// stops renewing its etcd lease, and resumes where it was on [`Self::resume`].
    pub fn pause(&self, index: usize) {
        self.signal(index, libc::SIGSTOP);
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self, index: usize) {
        self.signal(index, libc::SIGCONT);
    }

    fn signal(&self, index: usize, signal: libc::c_int) {
        send_signal(self.replicas[index].pid.expect("the replica runs"), signal);
    }

    /// SIGSTOP bank `index`: its prepares hang (payments stay in phase 1 until their prepare
    /// timeout), then [`Self::resume_bank`].
    pub fn pause_bank(&self, index: usize) {
        send_signal(self.network.banks[index].process.child.id(), libc::SIGSTOP);
    }

    pub fn resume_bank(&self, index: usize) {
        send_signal(self.network.banks[index].process.child.id(), libc::SIGCONT);
    }

    /// Everything replica `index` logged, all its runs.
    pub fn log(&self, index: usize) -> String {
        self.replicas[index]
            .logs
            .iter()
            .map(|path| std::fs::read_to_string(path).unwrap_or_default())
            .collect()
    }

    /// Every replica's log, each under a header (for failure messages).
    pub fn logs(&self) -> String {
        (0..self.replicas.len())
            .map(|index| {
                let log = self.log(index);
                // The tail: a whole log of a loaded replica is too long for a message.
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!(
                    "---- {} (last 40 lines) ----\n{}\n",
                    self.replicas[index].id,
                    tail.join("\n")
                )
            })
            .collect()
    }

    /// The replicas' addresses, in index order.
    pub fn addresses(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.address.clone()).collect()
    }

    /// `a,b,c`: what `strife client --gateway` takes.
    pub fn address_list(&self) -> String {
        self.addresses().join(",")
    }

    /// `user`'s gRPC client for replica `index`, each call bounded by `timeout`.
    pub fn client_at(&self, index: usize, user: &str, timeout: Duration) -> GatewayClient {
        self.network.gateway_client_at(
            &self.replicas[index].address,
            user,
            user,
            &self.network.password(user),
            timeout,
        )
    }

    /// The replica ids registered in etcd now.
    pub async fn registered(&self) -> BTreeSet<String> {
        self.network
            .etcd
            .gateway_entries()
            .await
            .into_iter()
            .map(|entry| entry.id)
            .collect()
    }

    /// Revokes the etcd lease under replica `index`'s key, as etcd would once the replica's
    /// keep-alives stopped arriving: its key is gone at once (the replica, which still runs,
    /// registers again under a new lease at its next keep-alive). Returns whether there was
    /// a key to revoke.
    pub async fn revoke_lease(&self, index: usize) -> bool {
        let key = strife_common::etcd::keys::gateway_key(&self.replicas[index].id);
        let mut root = self.network.etcd.root_client().await;
        let Ok(found) = root.get(key, None).await else {
            return false;
        };
        let Some(lease) = found.kvs().first().map(|kv| kv.lease()) else {
            return false;
        };
        lease != 0 && root.lease_revoke(lease).await.is_ok()
    }

    /// A superuser session on the gateway's database (to observe the shared log directly).
    pub async fn db(&self) -> tokio_postgres::Client {
        self.postgres.admin(&self.database.name).await
    }

    /// `strife audit --json --store <url>`: (exit code, report).
    pub fn audit(&self) -> (Option<i32>, Value) {
        let output = Command::new(strife_bin())
            .args(["audit", "--json", "--etcd", &self.network.etcd.endpoint])
            .args(["--store", &self.database.url()])
            .arg("--dir")
            .arg(self.network.network.path())
            .output()
            .unwrap();
        let report = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        (output.status.code(), report)
    }

    /// Waits (bounded) until the audit is clean once the network is quiet; the last report.
    pub async fn assert_audit_clean(&self, limit: Duration) -> Value {
        let clean = wait_until(limit, || async { self.audit().0 == Some(0) }).await;
        let (_, report) = self.audit();
        assert!(clean, "audit not clean:\n{report:#}\n{}", self.logs());
        report
    }
}

fn send_signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(sent, 0, "kill({pid}, {signal})");
}

/// One row of the shared `payments` table, as a test reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPayment {
    pub payment_id: String,
    pub from_user: String,
    pub key: String,
    pub to_user: String,
    pub from_bank: String,
    pub to_bank: String,
    pub amount_minor: i64,
    /// 1 PENDING, 2 COMMITTED, 3 ABORTED.
    pub status: i32,
    pub reason_code: Option<String>,
    pub coordinator: String,
    pub finished: bool,
    pub decision_deadline_unix_ms: i64,
    pub created_unix_ms: i64,
    pub decided_unix_ms: Option<i64>,
}

pub const PENDING: i32 = 1;
pub const COMMITTED: i32 = 2;
pub const ABORTED: i32 = 3;

const STORED_COLUMNS: &str = "payment_id, from_user, idempotency_key, to_user, from_bank, \
     to_bank, amount_minor, status, reason_code, coordinator, \
     (status <> 1 AND debit_acked AND credit_acked) AS finished, \
     decision_deadline_unix_ms, created_unix_ms, decided_unix_ms";

fn stored_from_row(row: &tokio_postgres::Row) -> StoredPayment {
    StoredPayment {
        payment_id: row.get(0),
        from_user: row.get(1),
        key: row.get(2),
        to_user: row.get(3),
        from_bank: row.get(4),
        to_bank: row.get(5),
        amount_minor: row.get(6),
        status: row.get::<_, i32>(7),
        reason_code: row.get(8),
        coordinator: row.get(9),
        finished: row.get(10),
        decision_deadline_unix_ms: row.get(11),
        created_unix_ms: row.get(12),
        decided_unix_ms: row.get(13),
    }
}

/// Every payment in the shared log, oldest first.
pub async fn stored_payments(db: &tokio_postgres::Client) -> Vec<StoredPayment> {
    db.query(
        &format!("SELECT {STORED_COLUMNS} FROM payments ORDER BY seq"),
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(stored_from_row)
    .collect()
}

/// `coordinator`'s payments that are undecided or have a leg not yet acknowledged.
pub async fn unfinished_of(db: &tokio_postgres::Client, coordinator: &str) -> Vec<StoredPayment> {
    db.query(
        &format!(
            "SELECT {STORED_COLUMNS} FROM payments WHERE coordinator = $1 \
             AND (status = 1 OR NOT debit_acked OR NOT credit_acked) ORDER BY seq"
        ),
        &[&coordinator],
    )
    .await
    .unwrap()
    .iter()
    .map(stored_from_row)
    .collect()
}

/// How many payments are undecided or have a leg not yet acknowledged (all replicas).
pub async fn unfinished_count(db: &tokio_postgres::Client) -> i64 {
    db.query_one(
        "SELECT count(*) FROM payments WHERE status = 1 OR NOT debit_acked OR NOT credit_acked",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// The payments with these ids.
pub async fn payments_by_id(db: &tokio_postgres::Client, ids: &[String]) -> Vec<StoredPayment> {
    db.query(
        &format!("SELECT {STORED_COLUMNS} FROM payments WHERE payment_id = ANY($1) ORDER BY seq"),
        &[&ids],
    )
    .await
    .unwrap()
    .iter()
    .map(stored_from_row)
    .collect()
}

/// Milliseconds since the Unix epoch (the clock the gateway stamps decisions with).
pub fn now_unix_ms() -> i64 {
    strife_common::time::now_unix_ms()
}

/// What a client was finally told about one payment (one idempotency key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `Pay` answered the payment, COMMITTED.
    Committed(String),
    /// A refusal of the payment itself (final: a retry would get the same).
    Refused(Code, String),
}

/// One payment as the client that made it saw it.
#[derive(Debug, Clone)]
pub struct ClientRecord {
    pub user: String,
    pub key: String,
    pub to_user: String,
    pub amount_minor: i64,
    pub answer: Answer,
    /// Calls made under this key (more than one: retried with the same key).
    pub tries: usize,
    /// Replica indexes the key was sent to.
    pub replicas: BTreeSet<usize>,
    /// The replica that gave the final answer, and when (Unix ms).
    pub answered_by: usize,
    pub answered_unix_ms: i64,
}

/// A user's client over every replica, as `strife client --gateway a,b,c` behaves and a bit
/// more: any answer that is not final (transport failure, deadline, `UNAVAILABLE`, `ABORTED`
/// "in progress", `INTERNAL`, `UNKNOWN`, `RESOURCE_EXHAUSTED`) makes it send the same request
/// — same idempotency key — to the next replica.
pub struct FailoverPayer {
    pub user: String,
    clients: Vec<GatewayClient>,
    current: usize,
    /// Calls that got a non-final answer (all keys; may be shared between payers).
    pub failures: Arc<AtomicUsize>,
}

impl FailoverPayer {
    /// `first` is the replica the first call goes to.
    pub fn new(replicas: &ReplicaNetwork, user: &str, first: usize, timeout: Duration) -> Self {
        FailoverPayer {
            user: user.to_owned(),
            clients: (0..replicas.replicas.len())
                .map(|index| replicas.client_at(index, user, timeout))
                .collect(),
            current: first % replicas.replicas.len(),
            failures: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Pays `amount_minor` to `to` under `key` until a final answer, or `None` after `limit`.
    pub async fn pay(
        &mut self,
        key: &str,
        to: &str,
        amount_minor: i64,
        limit: Duration,
    ) -> Option<ClientRecord> {
        let request = pb::PayRequest {
            idempotency_key: key.to_owned(),
            to_username: to.to_owned(),
            amount: Some(pb::Money {
                amount_minor,
                currency: "USD".into(),
            }),
            ..pb::PayRequest::default()
        };
        let deadline = Instant::now() + limit;
        let mut tries = 0;
        let mut replicas = BTreeSet::new();
        loop {
            let index = self.current;
            tries += 1;
            replicas.insert(index);
            let answer = match self.clients[index].pay(request.clone()).await {
                Ok(payment) => Some(Answer::Committed(payment.into_inner().payment_id)),
                Err(status)
                    if matches!(
                        status.code(),
                        Code::FailedPrecondition | Code::NotFound | Code::InvalidArgument
                    ) =>
                {
                    Some(Answer::Refused(status.code(), status.message().to_owned()))
                }
                Err(_) => None,
            };
            if let Some(answer) = answer {
                return Some(ClientRecord {
                    user: self.user.clone(),
                    key: key.to_owned(),
                    to_user: to.to_owned(),
                    amount_minor,
                    answer,
                    tries,
                    replicas,
                    answered_by: index,
                    answered_unix_ms: now_unix_ms(),
                });
            }
            self.failures.fetch_add(1, Ordering::Relaxed);
            if Instant::now() >= deadline {
                return None;
            }
            // The next replica, after a short back-off (a client's, not synchronisation).
            self.current = (self.current + 1) % self.clients.len();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
