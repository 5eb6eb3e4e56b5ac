//! A Jepsen-style bank workload under faults (docs/SPEC.md §8), on real processes: 8 users with
//! accounts on 3 banks pay each other concurrently, retrying with the same idempotency key
//! like the client's outbox, while a nemesis on a seeded schedule SIGKILLs and restarts banks
//! and the gateway, stalls banks and cuts gateway↔bank links (TCP proxies), restarts etcd
//! empty, fills the disk under bank2 (its dir is on a small tmpfs) for a while, and starts a
//! second bank process on a running bank's data dir (it must be refused), and removes a
//! stopped bank's database (its start must be refused) before restoring it. Meanwhile payees
//! refund parts of payments they received, payers authorize holds of 1–4 s that are voided,
//! captured by their payee or left to expire (docs/SPEC.md §4), and the admin sets and removes
//! net debit caps,
//! closes settlement windows and settles them (docs/SPEC.md §9). Then everything heals, the
//! network quiesces, and `strife audit` plus the clients' own records must show: money
//! conserved, no negative balance, every payment a client saw succeed committed on both legs
//! exactly once, nothing applied twice, no hold left PREPARED — and every window's report the
//! sum of its payments (unchanged since its close), positions and reservations equal to their
//! derivation from the log, no payment refunded beyond its amount.
//!
//! The PostgreSQL mode runs the same workload and audit against three gateway replicas on one
//! PostgreSQL database (`ReplicaNetwork`): the clients fail over between replicas with the
//! same key, the gateway fault becomes "SIGKILL one replica" (it stays down at least lease TTL +
//! takeover scan, so a survivor takes its payments over, then restarts), and "crash-restart
//! PostgreSQL" (immediate shutdown, WAL replay on start) joins the faults; each seed has at
//! least one of both.
//!
//! `scripts/test` runs 3 seeds of the SQLite mode and 1 of the PostgreSQL mode. More:
//! `STRIFE_CHAOS_SEEDS=10` / `STRIFE_CHAOS_PG_SEEDS=10 cargo nextest run -E 'test(/chaos/)'`;
//! one seed again: `STRIFE_CHAOS_SEED=1234` (both modes).

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::disk::{fill, Tmpfs};
use crate::support::network::{ManualNetwork, NetworkOptions};
use crate::support::proxy::{Mode, Proxy};
use crate::support::replicas::{lease_ttl, ReplicaNetwork, TAKEOVER_SCAN};
use crate::support::{run_expecting_exit, strife_bin, wait_until, BankProcess, BankStart};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strife_common::net::tls::ExpectedPeer;
use strife_proto::v1 as pb;
use tonic::Code;

const BANKS: [&str; 3] = ["bank0", "bank1", "bank2"];
const USERS: [&str; 8] = ["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7"];
/// Each user keeps paying while the nemesis runs (bounded), then stops.
const MAX_PAYMENTS_PER_USER: usize = 150;
const NEMESIS_STEPS: usize = 8;
const NEMESIS_PAUSE: Duration = Duration::from_millis(350);
const RETRY_LIMIT: usize = 200;
/// The bank whose data dir lives on a small tmpfs, so the nemesis can fill its disk.
const FULL_DISK_BANK: usize = 2;
/// Gateway replicas in the PostgreSQL mode.
const REPLICAS: usize = 3;
/// How long a SIGKILLed replica stays down before the nemesis may restart it: past its lease,
/// so a survivor's takeover scan finds it gone and claims its payments.
fn replica_down_at_least() -> Duration {
    lease_ttl() + TAKEOVER_SCAN
}

/// Which gateway the workload runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    /// One gateway on its embedded SQLite store.
    Sqlite,
    /// `REPLICAS` gateway replicas sharing one PostgreSQL database.
    Postgres,
}

/// The network under test: one gateway, or replicas on PostgreSQL (either way a
/// `ManualNetwork` underneath, with its banks and etcd).
enum Net {
    Sqlite(Box<ManualNetwork>),
    Postgres(Box<ReplicaNetwork>),
}

impl std::ops::Deref for Net {
    type Target = ManualNetwork;
    fn deref(&self) -> &ManualNetwork {
        match self {
            Net::Sqlite(network) => network,
            Net::Postgres(replicas) => replicas,
        }
    }
}

impl std::ops::DerefMut for Net {
    fn deref_mut(&mut self) -> &mut ManualNetwork {
        match self {
            Net::Sqlite(network) => network,
            Net::Postgres(replicas) => replicas,
        }
    }
}

/// What a client learned about one payment it made.
#[derive(Debug, Clone)]
enum Outcome {
    Committed(String),
    /// An authorization that holds funds (what became of it is another outcome, or none).
    Authorized(String, i64),
    Refused,
    GaveUp,
}

struct Cluster {
    network: Net,
    proxies: Vec<Proxy>,
    /// PostgreSQL mode: when each SIGKILLed replica went down (`None`: running).
    replicas_down: Vec<Option<Instant>>,
    /// `FULL_DISK_BANK`'s dir on a tmpfs; `None` where mounting is not permitted (the
    /// disk-full fault is then skipped, loudly). Dropped last: unmounts lazily.
    small_disk: Option<Tmpfs>,
}

impl Cluster {
    async fn start(store: Store) -> Self {
        let mut proxies = Vec::new();
        let mut bank_args = Vec::new();
        for bank in BANKS {
            let proxy = Proxy::start().await;
            bank_args.push((
                bank.to_string(),
                vec![
                    "--advertise".into(),
                    proxy.address().to_string(),
                    "--resolve-interval-ms".into(),
                    "200".into(),
                ],
            ));
            proxies.push(proxy);
        }
        let options = NetworkOptions {
            bank_args,
            ..NetworkOptions::default()
        };
        let network = match store {
            Store::Sqlite => Net::Sqlite(Box::new(
                ManualNetwork::start_with(&BANKS, &USERS, options).await,
            )),
            Store::Postgres => Net::Postgres(Box::new(
                ReplicaNetwork::start_with(REPLICAS, &BANKS, &USERS, options).await,
            )),
        };
        for (proxy, bank) in proxies.iter().zip(&network.banks) {
            proxy.set_target(bank.address);
        }
        let mut cluster = Cluster {
            network,
            proxies,
            replicas_down: vec![None; REPLICAS],
            small_disk: None,
        };
        cluster.move_to_small_disk(FULL_DISK_BANK);
        for (index, user) in USERS.iter().enumerate() {
            cluster
                .network
                .fund(user, BANKS[index % BANKS.len()], "100.00")
                .await;
        }
        cluster
    }

    /// Moves bank `index`'s data dir (the same files, so it opens as itself) onto a 4 MiB
    /// tmpfs and restarts it there.
    fn move_to_small_disk(&mut self, index: usize) {
        assert!(self.network.banks[index]
            .process
            .terminate(Duration::from_secs(10)));
        let bank_dir = self.network.network.layout().bank_dir(BANKS[index]);
        let saved = self
            .network
            .network
            .path()
            .join(format!("{}-saved", BANKS[index]));
        std::fs::rename(&bank_dir, &saved).unwrap();
        self.small_disk = Tmpfs::mount(&bank_dir, "4m");
        for entry in std::fs::read_dir(&saved).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), bank_dir.join(entry.file_name())).unwrap();
            }
        }
        let started = self.start_bank(index);
        self.proxies[index].set_target(started.address);
        self.network.banks[index] = started;
    }

    fn restart_bank(&mut self, index: usize) {
        self.network.banks[index].process.kill();
        let restarted = self.start_bank(index);
        self.proxies[index].set_target(restarted.address);
        self.network.banks[index] = restarted;
    }

    fn start_bank(&self, index: usize) -> BankProcess {
        BankStart::new(&self.network.network, BANKS[index])
            .etcd(&self.network.etcd.endpoint)
            .arg("--lease-ttl")
            .arg("2")
            .arg("--advertise")
            .arg(&self.proxies[index].address().to_string())
            .arg("--resolve-interval-ms")
            .arg("200")
            .start()
    }

    /// A second `strife bank` for a running bank's id and data dir: must be refused (the
    /// dir's lock) without disturbing the first. Returns the refusal.
    async fn second_bank_on_the_same_dir(&self, index: usize) -> String {
        let mut command = Command::new(strife_bin());
        command
            .args(["bank", "--json", "--lease-ttl", "2", "--id", BANKS[index]])
            .args(["--etcd", &self.network.etcd.endpoint, "--dir"])
            .arg(self.network.network.path());
        let (code, stderr) = tokio::task::spawn_blocking(move || {
            run_expecting_exit(command, Duration::from_secs(15))
        })
        .await
        .unwrap();
        assert!(
            code.is_some_and(|code| code != 0),
            "a second {} on the same data dir must be refused (exit {code:?}): {stderr}",
            BANKS[index]
        );
        stderr
    }

    /// Stops bank `index`, takes its database away (as a mistaken cleanup would) and starts it:
    /// it must refuse rather than start fresh and reissue account numbers. Then puts the
    /// database back (the operator restores it) and restarts it for real.
    async fn bank_database_removed_then_restored(&mut self, index: usize) -> String {
        self.network.banks[index].process.kill();
        let bank_dir = self.network.network.layout().bank_dir(BANKS[index]);
        // Inside the bank's dir: the same filesystem (bank2's is a tmpfs), so renames work.
        let aside = bank_dir.join("db-aside");
        std::fs::create_dir_all(&aside).unwrap();
        // The database with its WAL and shared memory: a SIGKILLed bank's latest commits may
        // live only in the WAL.
        let moved: Vec<_> = std::fs::read_dir(&bank_dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .filter(|name| name.to_string_lossy().starts_with("bank.db"))
            .collect();
        for name in &moved {
            std::fs::rename(bank_dir.join(name), aside.join(name)).unwrap();
        }
        let mut command = Command::new(strife_bin());
        command
            .args(["bank", "--json", "--lease-ttl", "2", "--id", BANKS[index]])
            .args(["--etcd", &self.network.etcd.endpoint, "--dir"])
            .arg(self.network.network.path());
        let (code, stderr) = tokio::task::spawn_blocking(move || {
            run_expecting_exit(command, Duration::from_secs(15))
        })
        .await
        .unwrap();
        assert!(
            code.is_some_and(|code| code != 0),
            "{} without its database must refuse to start (exit {code:?}): {stderr}",
            BANKS[index]
        );
        for name in &moved {
            std::fs::rename(aside.join(name), bank_dir.join(name)).unwrap();
        }
        std::fs::remove_dir(&aside).unwrap();
        let restarted = self.start_bank(index);
        self.proxies[index].set_target(restarted.address);
        self.network.banks[index] = restarted;
        stderr
    }

    /// Fills `FULL_DISK_BANK`'s tmpfs for `hold`, then frees it. `false` if there is no
    /// tmpfs.
    async fn disk_full_for(&self, hold: Duration) -> bool {
        if self.small_disk.is_none() {
            return false;
        }
        let filler = self
            .network
            .network
            .layout()
            .bank_dir(BANKS[FULL_DISK_BANK])
            .join("filler");
        let to_fill = filler.clone();
        tokio::task::spawn_blocking(move || fill(&to_fill))
            .await
            .unwrap();
        tokio::time::sleep(hold).await;
        std::fs::remove_file(&filler).unwrap();
        true
    }

    /// SQLite mode: SIGKILLs the gateway and starts it again. PostgreSQL mode: SIGKILLs
    /// replica `pick % REPLICAS` (it is restarted later, see [`Self::restart_replicas`]), or
    /// restarts it if it is already down; one replica always stays up.
    fn restart_gateway(&mut self, pick: usize) -> String {
        match &mut self.network {
            Net::Sqlite(network) => {
                if let Some(mut gateway) = network.gateway.take() {
                    gateway.kill();
                }
                network.start_gateway(&[]);
                "SIGKILL+restart gateway".to_string()
            }
            Net::Postgres(replicas) => {
                let index = pick % REPLICAS;
                let id = replicas.replicas[index].id.clone();
                let up = self
                    .replicas_down
                    .iter()
                    .filter(|down| down.is_none())
                    .count();
                if self.replicas_down[index].is_some() {
                    replicas.start_replica(index);
                    self.replicas_down[index] = None;
                    format!("restart replica {id}")
                } else if up > 1 {
                    replicas.kill(index);
                    self.replicas_down[index] = Some(Instant::now());
                    format!("SIGKILL replica {id}")
                } else {
                    format!("SIGKILL replica {id} skipped (the last one up)")
                }
            }
        }
    }

    /// PostgreSQL mode: restarts the replicas that have been down at least
    /// [`replica_down_at_least`] (all of them with `all`). Returns what it did.
    fn restart_replicas(&mut self, all: bool) -> Vec<String> {
        let Net::Postgres(replicas) = &mut self.network else {
            return Vec::new();
        };
        let mut restarted = Vec::new();
        for (index, down) in self.replicas_down.iter_mut().enumerate() {
            if down.is_some_and(|since| all || since.elapsed() >= replica_down_at_least()) {
                replicas.start_replica(index);
                *down = None;
                restarted.push(format!("restart replica {}", replicas.replicas[index].id));
            }
        }
        restarted
    }

    /// PostgreSQL mode: crashes the database server (immediate shutdown: backends end at
    /// once, no checkpoint) and starts it again on the same data dir and port (WAL replay).
    async fn crash_restart_postgres(&mut self) -> String {
        let Net::Postgres(replicas) = &mut self.network else {
            return "PostgreSQL restart skipped (SQLite mode)".to_string();
        };
        replicas.postgres.stop_immediately();
        replicas.postgres.start_again().await;
        "crash+restart PostgreSQL".to_string()
    }

    /// Every gateway address (the replicas' in the PostgreSQL mode).
    fn gateway_addresses(&self) -> Vec<String> {
        match &self.network {
            Net::Sqlite(network) => vec![network.gateway_address.clone()],
            Net::Postgres(replicas) => replicas.addresses(),
        }
    }

    /// `strife audit --json` for this cluster's gateway store: (clean, report).
    fn audit(&self) -> (bool, serde_json::Value) {
        let mut command = Command::new(strife_bin());
        command
            .args([
                "audit",
                "--json",
                "--etcd",
                &self.network.etcd.endpoint,
                "--dir",
            ])
            .arg(self.network.network.path());
        if let Net::Postgres(replicas) = &self.network {
            command.args(["--store", &replicas.database.url()]);
        }
        let output = command.output().unwrap();
        let report: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
        (output.status.success(), report)
    }

    /// The admin's gRPC client (replica 0's in the PostgreSQL mode).
    fn admin_client(&self) -> crate::support::network::GatewayClient {
        match &self.network {
            Net::Sqlite(network) => network.gateway_client("admin"),
            Net::Postgres(replicas) => replicas.client_at(0, "admin", Duration::from_secs(10)),
        }
    }
}

/// Payments a user received, which it may refund: (payee index, payment id, amount).
type Received = Arc<Mutex<Vec<(usize, String, i64)>>>;

/// A workload user's client: its credentials over every gateway replica.
type ChaosClient = pb::gateway_client::GatewayClient<
    tonic::service::interceptor::InterceptedService<
        strife_common::net::failover::Failover,
        crate::support::network::Credentials,
    >,
>;

/// Whether a refusal is the gateway's final answer (anything else is retried with the key).
fn is_final(code: Code) -> bool {
    matches!(
        code,
        Code::FailedPrecondition | Code::NotFound | Code::InvalidArgument
    )
}

/// Calls `call` until it answers finally (ok or a final refusal), like a client retrying with
/// the same key; `None` if it never did.
async fn until_final<T, Fut>(
    rng: &mut StdRng,
    stop: &AtomicBool,
    mut call: impl FnMut() -> Fut,
) -> Option<Result<T, tonic::Status>>
where
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    for _ in 0..RETRY_LIMIT {
        match call().await {
            Ok(value) => return Some(Ok(value)),
            Err(status) if is_final(status.code()) => return Some(Err(status)),
            Err(_) => {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(50..250))).await;
            }
        }
    }
    None
}

/// The admin's settlement work while the nemesis runs: sets and removes net debit caps,
/// closes the open window (by id, so a retry never closes a second one) and settles closed
/// windows. Returns every report a close answered, to check later that none changed.
async fn settlement_admin(
    admin: crate::support::network::GatewayClient,
    seed: u64,
    nemesis_done: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Vec<pb::SettlementReport> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5e77_1e00);
    let mut reports = Vec::new();
    let mut to_settle: Vec<u64> = Vec::new();
    while !nemesis_done.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(150..400))).await;
        match rng.random_range(0..3) {
            0 => {
                let request = pb::SetNetDebitCapRequest {
                    bank_id: BANKS[rng.random_range(0..BANKS.len())].into(),
                    currency: "USD".into(),
                    cap_minor: (!rng.random_bool(0.3)).then(|| rng.random_range(5_000..40_000)),
                };
                let _ = until_final(&mut rng, &stop, || {
                    let (mut admin, request) = (admin.clone(), request.clone());
                    async move { admin.set_net_debit_cap(request).await }
                })
                .await;
            }
            1 => {
                let listed = until_final(&mut rng, &stop, || {
                    let mut admin = admin.clone();
                    async move {
                        admin
                            .list_settlement_windows(pb::ListSettlementWindowsRequest::default())
                            .await
                    }
                })
                .await;
                let Some(Ok(listed)) = listed else { continue };
                let Some(open) = listed
                    .into_inner()
                    .windows
                    .first()
                    .map(|window| window.window_id)
                else {
                    continue;
                };
                let request = pb::CloseSettlementWindowRequest { window_id: open };
                match until_final(&mut rng, &stop, || {
                    let mut admin = admin.clone();
                    async move { admin.close_settlement_window(request).await }
                })
                .await
                {
                    Some(Ok(report)) => {
                        reports.push(report.into_inner());
                        to_settle.push(open);
                    }
                    // An earlier try closed it and its answer was lost.
                    Some(Err(status)) if status.code() == Code::FailedPrecondition => {
                        to_settle.push(open)
                    }
                    other => panic!("closing window {open}: {other:?}"),
                }
            }
            _ => {
                let Some(&window_id) = to_settle.first() else {
                    continue;
                };
                let request = pb::MarkSettledRequest { window_id };
                match until_final(&mut rng, &stop, || {
                    let mut admin = admin.clone();
                    async move { admin.mark_settled(request).await }
                })
                .await
                {
                    // Settled now, or by an earlier try whose answer was lost.
                    Some(Ok(_)) => {
                        to_settle.remove(0);
                    }
                    Some(Err(status)) if status.code() == Code::FailedPrecondition => {
                        to_settle.remove(0);
                    }
                    _ => {}
                }
            }
        }
    }
    reports
}

/// One user's workload: pays random others — and now and then refunds part of a payment it
/// received — retrying each with its key until the gateway gives a final answer.
#[allow(clippy::too_many_arguments)]
async fn workload(
    gateways: Vec<String>,
    dir: std::path::PathBuf,
    user: usize,
    seed: u64,
    received: Received,
    held: Received,
    nemesis_done: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Vec<Outcome> {
    let mut rng = StdRng::seed_from_u64(seed ^ ((user as u64 + 1) * 0x9e37_79b9));
    let layout = strife_common::layout::Layout::new(&dir);
    let tls = strife_common::net::tls::TlsMaterial::load(
        &layout.ca().cert,
        &layout.user_identity(USERS[user]),
    )
    .unwrap();
    let credentials = crate::support::network::Credentials::new(
        USERS[user],
        &crate::support::network::password_of(USERS[user]),
    )
    .unwrap();
    // One channel over every gateway replica: a call the current replica cannot take goes to
    // the next with the same bytes (same idempotency key); with one gateway, to it again.
    let replicas = gateways
        .iter()
        .map(|address| {
            let channel = tls
                .endpoint(address, &ExpectedPeer::Gateway, Duration::from_secs(3))
                .unwrap()
                .connect_lazy();
            (address.clone(), channel)
        })
        .collect();
    let failover = strife_common::net::failover::Failover::new(replicas).unwrap();
    let client: ChaosClient =
        pb::gateway_client::GatewayClient::with_interceptor(failover, credentials);
    let mut outcomes = Vec::new();
    for sequence in 0..MAX_PAYMENTS_PER_USER {
        if nemesis_done.load(Ordering::Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..60))).await;
        let refundable = {
            let received = received.lock().unwrap();
            let mine: Vec<&(usize, String, i64)> = received
                .iter()
                .filter(|(payee, _, _)| *payee == user)
                .collect();
            (!mine.is_empty() && rng.random_bool(0.2))
                .then(|| mine[rng.random_range(0..mine.len())].clone())
        };
        // A payee captures an authorization made to it (whichever worker made it).
        let capturable = {
            let mut held = held.lock().unwrap();
            let mine = held.iter().position(|(payee, _, _)| *payee == user);
            mine.filter(|_| rng.random_bool(0.5))
                .map(|index| held.swap_remove(index))
        };
        if let Some((_, payment_id, amount_minor)) = capturable {
            // All of it, or a part (the rest of the hold is released).
            let amount = rng.random_bool(0.5).then(|| pb::Money {
                amount_minor: rng.random_range(1..=amount_minor.max(1)),
                currency: "USD".into(),
            });
            let request = pb::CaptureRequest { payment_id, amount };
            let outcome = until_final(&mut rng, &stop, || {
                let (mut client, request) = (client.clone(), request.clone());
                async move { client.capture(request).await }
            })
            .await;
            outcomes.push(match outcome {
                Some(Ok(captured)) => {
                    let captured = captured.into_inner();
                    let moved = captured.amount.map_or(0, |amount| amount.amount_minor);
                    let payment_id = captured.payment_id;
                    let refundable = (user, payment_id.clone(), moved);
                    received.lock().unwrap().push(refundable);
                    Outcome::Committed(payment_id)
                }
                // Expired first: nothing moved.
                Some(Err(_)) => Outcome::Refused,
                None => Outcome::GaveUp,
            });
            continue;
        }
        if let Some((_, payment_id, amount_minor)) = refundable {
            let request = pb::RefundRequest {
                payment_id,
                amount: Some(pb::Money {
                    amount_minor: rng.random_range(1..=amount_minor.max(2) / 2),
                    currency: "USD".into(),
                }),
                idempotency_key: format!("chaos-refund-{seed}-{user}-{sequence}"),
                reason: "chaos".into(),
                // Retried through every fault with the same map: it belongs to the key's request.
                metadata: [("chaos_seed".to_owned(), seed.to_string())].into(),
            };
            let outcome = until_final(&mut rng, &stop, || {
                let (mut client, request) = (client.clone(), request.clone());
                async move { client.refund(request).await }
            })
            .await;
            outcomes.push(match outcome {
                Some(Ok(refund)) => Outcome::Committed(refund.into_inner().payment_id),
                Some(Err(_)) => Outcome::Refused,
                None => Outcome::GaveUp,
            });
            continue;
        }
        let mut payee = rng.random_range(0..USERS.len());
        if payee == user {
            payee = (payee + 1) % USERS.len();
        }
        if rng.random_bool(0.15) {
            let outcome = authorize(&client, &mut rng, &stop, seed, user, payee, sequence).await;
            if let Outcome::Authorized(payment_id, amount_minor) = &outcome {
                // Then: the payer voids it, the payee captures it later, or it expires.
                match rng.random_range(0..3) {
                    0 => {
                        let request = pb::VoidRequest {
                            payment_id: payment_id.clone(),
                        };
                        let voided = until_final(&mut rng, &stop, || {
                            let (mut client, request) = (client.clone(), request.clone());
                            async move { client.void(request).await }
                        })
                        .await;
                        if voided.is_none() {
                            outcomes.push(Outcome::GaveUp);
                        }
                    }
                    1 => held
                        .lock()
                        .unwrap()
                        .push((payee, payment_id.clone(), *amount_minor)),
                    _ => {}
                }
            }
            outcomes.push(outcome);
            continue;
        }
        let request = pb::PayRequest {
            idempotency_key: format!("chaos-{seed}-{user}-{sequence}"),
            to_username: USERS[payee].into(),
            amount: Some(pb::Money {
                amount_minor: rng.random_range(1..3_000),
                currency: "USD".into(),
            }),
            metadata: [("sequence".to_owned(), sequence.to_string())].into(),
            ..pb::PayRequest::default()
        };
        let outcome = until_final(&mut rng, &stop, || {
            let (mut client, request) = (client.clone(), request.clone());
            async move { client.pay(request).await }
        })
        .await;
        outcomes.push(match outcome {
            Some(Ok(payment)) => {
                let payment = payment.into_inner();
                let amount_minor = payment.amount.map_or(0, |amount| amount.amount_minor);
                received
                    .lock()
                    .unwrap()
                    .push((payee, payment.payment_id.clone(), amount_minor));
                Outcome::Committed(payment.payment_id)
            }
            Some(Err(_)) => Outcome::Refused,
            None => Outcome::GaveUp,
        });
    }
    outcomes
}

/// One authorization of 1–4 seconds, retried with its key through every fault.
async fn authorize(
    client: &ChaosClient,
    rng: &mut StdRng,
    stop: &AtomicBool,
    seed: u64,
    user: usize,
    payee: usize,
    sequence: usize,
) -> Outcome {
    let request = pb::AuthorizeRequest {
        idempotency_key: format!("chaos-hold-{seed}-{user}-{sequence}"),
        to_username: USERS[payee].into(),
        amount: Some(pb::Money {
            amount_minor: rng.random_range(1..3_000),
            currency: "USD".into(),
        }),
        expires_in_seconds: rng.random_range(1..=4),
        metadata: [("sequence".to_owned(), sequence.to_string())].into(),
        ..pb::AuthorizeRequest::default()
    };
    let outcome = until_final(rng, stop, || {
        let (mut client, request) = (client.clone(), request.clone());
        async move { client.authorize(request).await }
    })
    .await;
    match outcome {
        Some(Ok(held)) => {
            let held = held.into_inner();
            let amount_minor = held.amount.map_or(0, |amount| amount.amount_minor);
            Outcome::Authorized(held.payment_id, amount_minor)
        }
        Some(Err(_)) => Outcome::Refused,
        None => Outcome::GaveUp,
    }
}

async fn run_seed(seed: u64, store: Store) {
    eprintln!("chaos seed {seed}, {store:?} (rerun with STRIFE_CHAOS_SEED={seed})");
    let cluster = Arc::new(tokio::sync::Mutex::new(Cluster::start(store).await));
    let (gateways, dir) = {
        let cluster = cluster.lock().await;
        (
            cluster.gateway_addresses(),
            cluster.network.network.path().to_owned(),
        )
    };
    let stop = Arc::new(AtomicBool::new(false));
    let nemesis_done = Arc::new(AtomicBool::new(false));
    let received: Received = Arc::default();
    let workers: Vec<_> = (0..USERS.len())
        .map(|user| {
            tokio::spawn(workload(
                gateways.clone(),
                dir.clone(),
                user,
                seed,
                Arc::clone(&received),
                Arc::default(),
                Arc::clone(&nemesis_done),
                Arc::clone(&stop),
            ))
        })
        .collect();
    let admin = cluster.lock().await.admin_client();
    let settlement = tokio::spawn(settlement_admin(
        admin,
        seed,
        Arc::clone(&nemesis_done),
        Arc::clone(&stop),
    ));

    // The nemesis: a printed, seeded schedule.
    let mut rng = StdRng::seed_from_u64(seed);
    let faults = Arc::new(Mutex::new(Vec::new()));
    // The data-dir mistake happens in every seed (on top of that step's fault), not only when
    // the dice pick it: it is cheap and the refusal is asserted right there.
    let mistake_step = rng.random_range(0..NEMESIS_STEPS);
    // The PostgreSQL mode's own faults happen in every seed too: a replica SIGKILLed in the
    // first half, the database crash-restarted in the second (drawn only in that mode, so the
    // SQLite mode's schedules stay what they were).
    let (kill_step, database_step) = match store {
        Store::Sqlite => (None, None),
        Store::Postgres => (
            Some(rng.random_range(0..NEMESIS_STEPS / 2)),
            Some(rng.random_range(NEMESIS_STEPS / 2..NEMESIS_STEPS)),
        ),
    };
    let fault_kinds = match store {
        Store::Sqlite => 8,
        Store::Postgres => 9,
    };
    for step in 0..NEMESIS_STEPS {
        tokio::time::sleep(NEMESIS_PAUSE).await;
        let mut cluster = cluster.lock().await;
        for restarted in cluster.restart_replicas(false) {
            eprintln!("  nemesis: {restarted}");
            faults.lock().unwrap().push(restarted);
        }
        let bank = rng.random_range(0..BANKS.len());
        let fault = match rng.random_range(0..fault_kinds) {
            0 => {
                cluster.restart_bank(bank);
                format!("SIGKILL+restart {}", BANKS[bank])
            }
            1 => cluster.restart_gateway(bank),
            8 => cluster.crash_restart_postgres().await,
            2 => {
                cluster.proxies[bank].set_mode(Mode::Stall);
                format!("stall {}", BANKS[bank])
            }
            3 => {
                cluster.proxies[bank].set_mode(Mode::Drop);
                format!("cut link to {}", BANKS[bank])
            }
            4 => {
                cluster.network.etcd.restart_empty().await;
                "restart etcd (empty)".to_string()
            }
            5 => {
                let refusal = cluster.second_bank_on_the_same_dir(bank).await;
                eprintln!("  second {} refused: {}", BANKS[bank], refusal.trim());
                format!("second process on {}'s data dir", BANKS[bank])
            }
            6 => {
                let refusal = cluster.bank_database_removed_then_restored(bank).await;
                eprintln!(
                    "  {} without bank.db refused: {}",
                    BANKS[bank],
                    refusal.trim()
                );
                format!(
                    "{}'s database removed (start refused), restored",
                    BANKS[bank]
                )
            }
            _ => {
                // Payments touching the bank fail (transiently) while its disk is full; the
                // workload retries them with their keys.
                if cluster.disk_full_for(NEMESIS_PAUSE).await {
                    format!("disk full at {}", BANKS[FULL_DISK_BANK])
                } else {
                    "disk full skipped (no tmpfs)".to_string()
                }
            }
        };
        eprintln!("  nemesis: {fault}");
        faults.lock().unwrap().push(fault);
        if kill_step == Some(step) {
            let fault = cluster.restart_gateway(step);
            eprintln!("  nemesis: {fault}");
            faults.lock().unwrap().push(fault);
        }
        if database_step == Some(step) {
            let fault = cluster.crash_restart_postgres().await;
            eprintln!("  nemesis: {fault}");
            faults.lock().unwrap().push(fault);
        }
        if step == mistake_step {
            let other = rng.random_range(0..BANKS.len());
            let refusal = cluster.second_bank_on_the_same_dir(other).await;
            eprintln!("  second {} refused: {}", BANKS[other], refusal.trim());
            faults
                .lock()
                .unwrap()
                .push(format!("second process on {}'s data dir", BANKS[other]));
        }
        // Heal link faults after a while so the run makes progress.
        if rng.random_bool(0.6) {
            tokio::time::sleep(NEMESIS_PAUSE).await;
            for proxy in &cluster.proxies {
                proxy.set_mode(Mode::Forward);
            }
        }
    }
    {
        let mut cluster = cluster.lock().await;
        for proxy in &cluster.proxies {
            proxy.set_mode(Mode::Forward);
        }
        for restarted in cluster.restart_replicas(true) {
            eprintln!("  heal: {restarted}");
        }
    }
    nemesis_done.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut outcomes = Vec::new();
    for worker in workers {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, worker).await {
            Ok(result) => outcomes.extend(result.unwrap()),
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                panic!("seed {seed}: workload did not finish after healing");
            }
        }
    }

    let left = deadline.saturating_duration_since(Instant::now());
    let closes = match tokio::time::timeout(left, settlement).await {
        Ok(result) => result.unwrap(),
        Err(_) => {
            stop.store(true, Ordering::Relaxed);
            panic!("seed {seed}: the settlement admin did not finish after healing");
        }
    };

    // Quiescence: the audit is clean once every decision has reached every bank.
    let cluster = cluster.lock().await;
    let clean = wait_until(Duration::from_secs(60), || async { cluster.audit().0 }).await;
    let (_, report) = cluster.audit();
    assert!(
        clean,
        "seed {seed}: audit not clean after healing. faults: {:?}\n{report}",
        faults.lock().unwrap()
    );

    // Every payment a client saw succeed is COMMITTED (the audit checked both legs applied once).
    let committed: BTreeSet<String> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Outcome::Committed(payment_id) => Some(payment_id.clone()),
            _ => None,
        })
        .collect();
    let mut admin = cluster.admin_client();
    for payment_id in &committed {
        let payment = admin
            .get_payment(pb::GetPaymentRequest {
                payment_id: payment_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            payment.status,
            pb::PaymentStatus::Committed as i32,
            "seed {seed}: {payment_id}"
        );
    }
    assert_eq!(
        report["payments_committed"].as_u64().unwrap() as usize,
        committed.len(),
        "seed {seed}: the gateway committed exactly what clients saw succeed"
    );
    // A closed window never changes: each report a close answered is the report now (only
    // its state may have moved on to SETTLED).
    for closed in &closes {
        let window_id = closed.window.as_ref().unwrap().window_id;
        let now = admin
            .get_settlement_report(pb::GetSettlementReportRequest { window_id })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (&now.bilateral, &now.nets),
            (&closed.bilateral, &closed.nets),
            "seed {seed}: window {window_id} changed after its close"
        );
    }
    let gave_up = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Outcome::GaveUp))
        .count();
    let refused = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Outcome::Refused))
        .count();
    let authorized = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Outcome::Authorized(..)))
        .count();
    eprintln!(
        "seed {seed} ({store:?}): {} payments, authorizations, captures and refunds tried, {} committed, {authorized} authorized, {refused} refused, {gave_up} gave up; {} windows closed ({}); faults {:?}; audit clean",
        outcomes.len(),
        committed.len(),
        closes.len(),
        report["settlement"],
        faults.lock().unwrap()
    );
    assert_eq!(
        gave_up, 0,
        "seed {seed}: a payment never got a final answer"
    );
}

/// `STRIFE_CHAOS_SEED`, else seeds 1..=`$count_variable` (default `default`).
fn seeds(count_variable: &str, default: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var("STRIFE_CHAOS_SEED") {
        return vec![seed.parse().expect("STRIFE_CHAOS_SEED is a number")];
    }
    let count: u64 = std::env::var(count_variable)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default);
    (1..=count).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_workload_under_crashes_stalls_partitions_and_etcd_restarts_keeps_every_invariant() {
    for seed in seeds("STRIFE_CHAOS_SEEDS", 3) {
        run_seed(seed, Store::Sqlite).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_postgres_under_replica_kills_and_database_crashes_keep_every_invariant() {
    for seed in seeds("STRIFE_CHAOS_PG_SEEDS", 1) {
        run_seed(seed, Store::Postgres).await;
    }
}
