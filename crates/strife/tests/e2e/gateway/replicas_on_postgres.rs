//! Gateway replicas sharing one PostgreSQL database (issue 13), on real processes: three
//! replicas, one set of banks, one etcd ([`ReplicaNetwork`]). Payments go through every
//! replica; a replica SIGKILLed mid-load leaves nothing in doubt past the documented bound
//! (lease TTL + takeover scan + decision window) and nothing paid twice by clients that failed
//! over with the same key; one key sent to two replicas at once pays once; a replica cut off
//! from etcd (lease revoked, then stalled past its lease) while it keeps its database
//! connection loses its payments to a survivor but never contradicts it; PostgreSQL restarted
//! mid-load loses nothing. `strife audit --store` is clean after each.
//!
//! What "nothing paid twice, nothing lost" is checked against: every client's own record of
//! what it was told per idempotency key ([`ClientRecord`]), the shared log read directly
//! (superuser session), the banks' legs, the balances, the audit, and the replicas' logs (a
//! bank refusing a decision would mean two replicas sent contradicting ones).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strife_proto::v1 as pb;
use tonic::Code;

use crate::support::network::GatewayClient;
use crate::support::network::{leg_states, prepared_payment_ids};
use crate::support::replicas::{decision_window, lease_ttl, prepare_timeout};
use crate::support::replicas::{
    now_unix_ms, payments_by_id, stored_payments, unfinished_count, unfinished_of, Answer,
    ClientRecord, FailoverPayer, ReplicaNetwork, StoredPayment, ABORTED, COMMITTED, PENDING,
    TAKEOVER_SCAN,
};
use crate::support::wait_until;

const BANKS: [&str; 2] = ["bank0", "bank1"];
const USERS: [&str; 6] = ["u0", "u1", "u2", "u3", "u4", "u5"];
/// Each user starts with 100.00 and pays at most 1.00 at a time, a few dozen times: no payment
/// is refused for funds, so every key ends COMMITTED and the balances follow from the clients'
/// records alone.
const START_MINOR: i64 = 10_000;
/// Longest a client keeps retrying one key before the test calls it lost.
const KEY_LIMIT: Duration = Duration::from_secs(60);
/// Scheduling slack on a loaded 2-core machine, on top of a documented bound.
const SLACK: Duration = Duration::from_secs(5);

/// Three replicas, users `USERS` with 100.00 each at the banks in turn.
async fn three_replicas() -> ReplicaNetwork {
    let network = ReplicaNetwork::start(3, &BANKS, &USERS).await;
    for (index, user) in USERS.iter().enumerate() {
        network
            .fund(user, BANKS[index % BANKS.len()], "100.00")
            .await;
    }
    network
}

fn pay_request(key: &str, to: &str, amount_minor: i64) -> pb::PayRequest {
    pb::PayRequest {
        idempotency_key: key.into(),
        to_username: to.into(),
        amount: Some(pb::Money {
            amount_minor,
            currency: "USD".into(),
        }),
        ..pb::PayRequest::default()
    }
}

/// Users paying each other concurrently through the replicas, each starting at its own
/// replica and failing over with the same key ([`FailoverPayer`]).
struct Load {
    stop: Arc<AtomicBool>,
    /// Keys that got their final answer so far.
    answered: Arc<AtomicUsize>,
    /// Calls that got a non-final answer (a replica down, the store down, "in progress").
    failures: Arc<AtomicUsize>,
    workers: Vec<tokio::task::JoinHandle<Vec<ClientRecord>>>,
}

impl Load {
    /// `timeout` bounds each call (a stalled replica's clients wait this long for it).
    fn start(network: &ReplicaNetwork, tag: &str, timeout: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicUsize::new(0));
        let workers = USERS
            .iter()
            .enumerate()
            .map(|(index, user)| {
                let mut payer = FailoverPayer::new(network, user, index, timeout);
                payer.failures = Arc::clone(&failures);
                let stop = Arc::clone(&stop);
                let answered = Arc::clone(&answered);
                let tag = tag.to_owned();
                tokio::spawn(async move {
                    let mut rng = StdRng::seed_from_u64(index as u64 + 1);
                    let mut records = Vec::new();
                    let mut sequence = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let mut payee = rng.random_range(0..USERS.len() - 1);
                        if payee >= index {
                            payee += 1;
                        }
                        let key = format!("{tag}-{}-{sequence}", USERS[index]);
                        sequence += 1;
                        let amount = rng.random_range(1..=100);
                        let record = payer
                            .pay(&key, USERS[payee], amount, KEY_LIMIT)
                            .await
                            .unwrap_or_else(|| panic!("{key}: no final answer in {KEY_LIMIT:?}"));
                        records.push(record);
                        answered.fetch_add(1, Ordering::Relaxed);
                        // Pacing, so a 2-core machine keeps up with six payers and a nemesis.
                        tokio::time::sleep(Duration::from_millis(rng.random_range(5..30))).await;
                    }
                    records
                })
            })
            .collect();
        Load {
            stop,
            answered,
            failures,
            workers,
        }
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    fn failures(&self) -> usize {
        self.failures.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until `more` further keys have been answered.
    async fn progress(&self, more: usize, limit: Duration, network: &ReplicaNetwork) {
        let target = self.answered() + more;
        let progressed = wait_until(limit, || async { self.answered() >= target }).await;
        assert!(
            progressed,
            "the load made no progress ({} of {target} keys answered):\n{}",
            self.answered(),
            network.logs()
        );
    }

    /// Stops the payers once their current key has its final answer; every record.
    async fn finish(self) -> Vec<ClientRecord> {
        self.stop.store(true, Ordering::Relaxed);
        let mut records = Vec::new();
        for worker in self.workers {
            records.extend(
                tokio::time::timeout(KEY_LIMIT + SLACK, worker)
                    .await
                    .expect("a payer did not finish")
                    .expect("a payer panicked"),
            );
        }
        records
    }
}

/// Waits until nothing is undecided or unacknowledged in the shared log and no bank holds a
/// leg PREPARED.
async fn assert_quiet(network: &ReplicaNetwork, limit: Duration) {
    let db = network.db().await;
    let finished = wait_until(limit, || async { unfinished_count(&db).await == 0 }).await;
    assert!(
        finished,
        "payments still unfinished in the shared log: {:?}\n{}",
        stored_payments(&db)
            .await
            .into_iter()
            .filter(|payment| !payment.finished)
            .collect::<Vec<_>>(),
        network.logs()
    );
    let released = wait_until(limit, || async {
        prepared_payment_ids(network).await.is_empty()
    })
    .await;
    assert!(
        released,
        "legs left PREPARED: {:?}",
        prepared_payment_ids(network).await
    );
}

/// Exactly once, against the clients' own records: one COMMITTED payment per key at most;
/// every key a client was told COMMITTED has exactly that payment, COMMITTED; every key it
/// was refused has none; no COMMITTED payment that no client was told about; and every
/// balance is what the clients' committed payments make it. Returns how many keys were sent
/// more than once (retried with the same key).
async fn assert_exactly_once(network: &ReplicaNetwork, records: &[ClientRecord]) -> usize {
    let db = network.db().await;
    let stored = stored_payments(&db).await;
    let mut committed: HashMap<(String, String), Vec<&StoredPayment>> = HashMap::new();
    for payment in stored.iter().filter(|payment| payment.status == COMMITTED) {
        committed
            .entry((payment.from_user.clone(), payment.key.clone()))
            .or_default()
            .push(payment);
    }
    for ((user, key), payments) in &committed {
        assert_eq!(
            payments.len(),
            1,
            "{user}/{key} committed more than once: {payments:?}"
        );
    }
    let mut told: BTreeSet<(String, String)> = BTreeSet::new();
    let mut balances: BTreeMap<&str, i64> = USERS.iter().map(|user| (*user, START_MINOR)).collect();
    let mut retried = 0;
    for record in records {
        let id = (record.user.clone(), record.key.clone());
        assert!(told.insert(id.clone()), "{id:?} recorded twice");
        if record.tries > 1 {
            retried += 1;
        }
        match &record.answer {
            Answer::Committed(payment_id) => {
                let stored = committed.get(&id).map(Vec::as_slice).unwrap_or_default();
                assert!(
                    stored.len() == 1 && &stored[0].payment_id == payment_id,
                    "{id:?}: the client was told {payment_id} COMMITTED, the log has {stored:?}"
                );
                *balances.get_mut(record.user.as_str()).unwrap() -= record.amount_minor;
                *balances.get_mut(record.to_user.as_str()).unwrap() += record.amount_minor;
            }
            Answer::Refused(code, message) => {
                assert!(
                    !committed.contains_key(&id),
                    "{id:?}: refused ({code:?}: {message}) yet COMMITTED in the log"
                );
            }
        }
    }
    for id in committed.keys() {
        assert!(
            told.contains(id),
            "{id:?} is COMMITTED but no client was told so"
        );
    }
    for (user, expected) in balances {
        assert_eq!(
            network.available_minor(user),
            expected,
            "{user}'s balance is not what the clients' committed payments make it"
        );
    }
    retried
}

/// No replica sent a bank a decision the bank had already seen the opposite of.
fn assert_no_contradiction_logged(network: &ReplicaNetwork) {
    for index in 0..network.replicas.len() {
        let log = network.log(index);
        assert!(
            !log.contains("coordinator and bank disagree"),
            "{} sent a bank a decision contradicting the bank's:\n{}",
            network.replicas[index].id,
            log.lines()
                .filter(|line| line.contains("disagree"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// How many times replicas other than `dead` logged taking over `dead`'s payments.
fn takeovers_of(network: &ReplicaNetwork, dead: usize) -> usize {
    let from = format!("from={}", network.replicas[dead].id);
    (0..network.replicas.len())
        .filter(|index| *index != dead)
        .map(|index| {
            network
                .log(index)
                .lines()
                .filter(|line| {
                    line.contains("took over the unfinished payments")
                        && line.split_whitespace().any(|field| field == from)
                })
                .count()
        })
        .sum()
}

/// The bank the nemesis stalls to hold payments in phase 1.
const STALLED_BANK: usize = 1;

/// What a replica left when it was stopped.
struct Stopped {
    /// When it was stopped (Unix ms, and for measuring).
    at_unix_ms: i64,
    at: Instant,
    /// Its unfinished payments as of then.
    unfinished: Vec<StoredPayment>,
    /// Those of them certainly still in phase 1 (no decision attempted yet).
    phase_one: Vec<String>,
}

/// Stops replica `index` (SIGSTOP) at a moment when it certainly has payments in phase 1:
/// `STALLED_BANK` is stalled (SIGSTOP, so prepares to it hang), and the replica is stopped
/// once it has a PENDING payment touching that bank that was created after the stall and is
/// younger than the prepare timeout — its task is still waiting for the vote and has not
/// reached its decision. The bank resumes right after. The replica does not run another
/// instruction after the stop, so the caller may SIGKILL it (a crash at that instant) or
/// SIGCONT it (a stall).
async fn stop_in_phase_one(network: &ReplicaNetwork, index: usize) -> Stopped {
    let db = network.db().await;
    let id = network.replicas[index].id.clone();
    let bank = network.banks[STALLED_BANK].id.clone();
    // Created after the stall began and less than `age_ms` before `at`: its prepare timer
    // (started after `created_unix_ms`, firing a prepare timeout later) had not fired at `at`.
    let timeout_ms = prepare_timeout().as_millis() as i64;
    let young = |payment: &StoredPayment, stalled_at: i64, at: i64, age_ms: i64| {
        payment.status == PENDING
            && (payment.from_bank == bank || payment.to_bank == bank)
            && payment.created_unix_ms >= stalled_at
            && at - payment.created_unix_ms < age_ms
    };
    for attempt in 0..20 {
        network.pause_bank(STALLED_BANK);
        let stalled_at = now_unix_ms();
        // Bounded well inside the bank's etcd lease (2 s).
        let ready = wait_until(Duration::from_millis(1_000), || async {
            let now = now_unix_ms();
            unfinished_of(&db, &id)
                .await
                .iter()
                .any(|payment| young(payment, stalled_at, now, timeout_ms * 6 / 10))
        })
        .await;
        if !ready {
            network.resume_bank(STALLED_BANK);
            eprintln!("attempt {attempt}: no young payment of {id} on {bank}; letting it recover");
            // Let the bank serve again before the next stall: back to back, stalls add up
            // past its etcd lease, and a bank gone from etcd gets no payments to hold.
            let resumed_at = now_unix_ms();
            let serving = wait_until(Duration::from_secs(15), || {
                committed_through_since(&db, &id, &bank, resumed_at)
            })
            .await;
            assert!(
                serving,
                "{bank} committed nothing through {id} after its stall"
            );
            continue;
        }
        network.pause(index);
        let at = Instant::now();
        let at_unix_ms = now_unix_ms();
        let unfinished = unfinished_of(&db, &id).await;
        network.resume_bank(STALLED_BANK);
        let phase_one: Vec<String> = unfinished
            .iter()
            .filter(|payment| young(payment, stalled_at, at_unix_ms, timeout_ms * 9 / 10))
            .map(|payment| payment.payment_id.clone())
            .collect();
        if !phase_one.is_empty() {
            return Stopped {
                at_unix_ms,
                at,
                unfinished,
                phase_one,
            };
        }
        network.resume(index);
    }
    panic!("could not stop {id} with a payment in phase 1");
}

/// Whether `coordinator` has committed a payment touching `bank` created at or after `since`.
async fn committed_through_since(
    db: &tokio_postgres::Client,
    coordinator: &str,
    bank: &str,
    since: i64,
) -> bool {
    db.query_one(
        "SELECT EXISTS (SELECT 1 FROM payments WHERE coordinator = $1 AND status = $2 \
         AND (from_bank = $3 OR to_bank = $3) AND created_unix_ms >= $4)",
        &[&coordinator, &COMMITTED, &bank, &since],
    )
    .await
    .unwrap()
    .get(0)
}

/// Whether payment `payment_id` is out of doubt: decided in the log and no leg PREPARED at
/// any bank.
async fn out_of_doubt(network: &ReplicaNetwork, stored: &StoredPayment) -> bool {
    let prepared = pb::LegState::Prepared as i32;
    stored.status != PENDING
        && !leg_states(network, &stored.payment_id)
            .await
            .contains(&prepared)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_one_postgres_pay_through_each_fail_over_and_audit_clean() {
    let mut network = ReplicaNetwork::start(3, &BANKS, &["alice", "bob"]).await;
    network.fund("alice", "bank0", "100.00").await;
    network.fund("bob", "bank1", "0").await;

    // Each replica is in etcd under its own id with its own address.
    let mut registered: Vec<(String, String)> = network
        .etcd
        .gateway_entries()
        .await
        .into_iter()
        .map(|entry| (entry.id, entry.address))
        .collect();
    registered.sort();
    let expected: Vec<(String, String)> = network
        .replicas
        .iter()
        .map(|replica| (replica.id.clone(), replica.address.clone()))
        .collect();
    assert_eq!(registered, expected);

    // A payment through each replica: it commits, the replica that took it coordinates it in
    // the shared log, and the next replica answers the same key with the same payment.
    let db = network.db().await;
    for index in 0..3 {
        let key = format!("through-r{index}");
        let mut alice = network.client_at(index, "alice", Duration::from_secs(10));
        let paid = alice
            .pay(pay_request(&key, "bob", 100))
            .await
            .unwrap_or_else(|status| panic!("{key}: {status:?}\n{}", network.logs()))
            .into_inner();
        assert_eq!(paid.status, pb::PaymentStatus::Committed as i32);
        let stored = payments_by_id(&db, std::slice::from_ref(&paid.payment_id)).await;
        assert_eq!(stored[0].coordinator, network.replicas[index].id);
        let mut next = network.client_at((index + 1) % 3, "alice", Duration::from_secs(10));
        let replayed = next
            .pay(pay_request(&key, "bob", 100))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            replayed, paid,
            "another replica answers the key from the shared log"
        );
    }

    // The CLI given every replica (`--gateway a,b,c`) pays.
    let (code, paid) = network.client("alice", &["pay", "--to", "bob", "--amount", "1.00"]);
    assert_eq!(code, 0, "{paid}");
    assert_eq!(paid["payment"]["status"], "COMMITTED", "{paid}");

    // The first replica in the list stopped: the CLI pays through the next one.
    network.terminate(0);
    let (code, paid) = network.client(
        "alice",
        &["pay", "--to", "bob", "--amount", "1.00", "--key", "r0-down"],
    );
    assert_eq!(code, 0, "{paid}");
    let payment_id = paid["payment"]["payment_id"].as_str().unwrap().to_owned();
    let stored = payments_by_id(&db, &[payment_id]).await;
    assert_eq!(stored[0].coordinator, "r1", "paid through the next replica");
    network.start_replica(0);

    let (code, history) = network.client("bob", &["history"]);
    assert_eq!(code, 0, "{history}");
    assert_eq!(
        history["payments"].as_array().unwrap().len(),
        5,
        "{history}"
    );
    assert_eq!(network.available_minor("alice"), 10_000 - 300 - 200);
    assert_eq!(network.available_minor("bob"), 500);
    let report = network.assert_audit_clean(Duration::from_secs(15)).await;
    assert_eq!(report["payments_committed"], 5, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_load_leaves_nothing_in_doubt_past_the_bound_or_paid_twice() {
    let mut network = three_replicas().await;
    let load = Load::start(&network, "kill", Duration::from_secs(10));
    load.progress(30, Duration::from_secs(30), &network).await;

    // SIGKILL r1 while it has payments in phase 1 (stopped first, so what it left is known).
    let victim = 1;
    let stopped = stop_in_phase_one(&network, victim).await;
    network.kill(victim);
    let killed = stopped.at;
    let killed_at = stopped.at_unix_ms;

    // Each payment it left ends decided, with no leg PREPARED at any bank, within the
    // documented bound: lease TTL + takeover scan + decision window (+ slack).
    let bound = lease_ttl() + TAKEOVER_SCAN + decision_window() + SLACK;
    let db = network.db().await;
    let ids: Vec<String> = stopped
        .unfinished
        .iter()
        .map(|payment| payment.payment_id.clone())
        .collect();
    let mut out_of_doubt_after: BTreeMap<String, Duration> = BTreeMap::new();
    let deadline = killed + bound;
    let resolved = loop {
        for payment in payments_by_id(&db, &ids).await {
            if !out_of_doubt_after.contains_key(&payment.payment_id)
                && out_of_doubt(&network, &payment).await
            {
                out_of_doubt_after.insert(payment.payment_id.clone(), killed.elapsed());
            }
        }
        if out_of_doubt_after.len() == ids.len() {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let now = payments_by_id(&db, &ids).await;
    assert!(
        resolved,
        "payments of the killed replica still in doubt {bound:?} after its death: {now:?}\n{}",
        network.logs()
    );
    // Measurements (docs/BENCHMARKS.md): when each was decided, and out of doubt.
    let state_at_kill = |payment: &StoredPayment| {
        let before = stopped
            .unfinished
            .iter()
            .find(|left| left.payment_id == payment.payment_id)
            .unwrap();
        if stopped.phase_one.contains(&payment.payment_id) {
            "phase 1"
        } else if before.status == PENDING {
            "PENDING"
        } else {
            "decided, unacknowledged"
        }
    };
    for payment in &now {
        eprintln!(
            "in doubt after SIGKILL: {} ({}, {} ms old) → status {} ({}) decided at {:+} ms, out of doubt at +{} ms, coordinator now {}",
            payment.payment_id,
            state_at_kill(payment),
            killed_at - payment.created_unix_ms,
            payment.status,
            payment.reason_code.as_deref().unwrap_or("-"),
            payment.decided_unix_ms.map_or(0, |decided| decided - killed_at),
            out_of_doubt_after[&payment.payment_id].as_millis(),
            payment.coordinator,
        );
    }
    let longest = out_of_doubt_after
        .values()
        .max()
        .copied()
        .unwrap_or_default();
    eprintln!(
        "MEASURED: {} payments left by the killed replica ({} in phase 1), longest in doubt {} ms (bound {} ms)",
        ids.len(),
        stopped.phase_one.len(),
        longest.as_millis(),
        bound.as_millis()
    );
    // Those in phase 1 had no decision anywhere: a survivor (or a bank's question to one)
    // aborts them once their deadline passes.
    for payment in now
        .iter()
        .filter(|payment| stopped.phase_one.contains(&payment.payment_id))
    {
        assert_eq!(payment.status, ABORTED, "{payment:?}");
    }

    // A survivor claimed them (one statement, logged); nothing is left on the dead replica.
    let claimed = wait_until(Duration::from_secs(10), || async {
        unfinished_of(&db, "r1").await.is_empty() && takeovers_of(&network, victim) >= 1
    })
    .await;
    assert!(
        claimed,
        "no survivor took over r1's payments:\n{}",
        network.logs()
    );

    // The killed replica comes back (same id, same port) and serves again; its log shows a
    // clean start with nothing of its own left to recover.
    network.start_replica(victim);
    let log = network.log(victim);
    assert!(
        !log.contains("recovery aborted payments"),
        "r1 found payments of its own after the takeover:\n{log}"
    );
    load.progress(30, Duration::from_secs(60), &network).await;
    let records = load.finish().await;

    assert_quiet(&network, Duration::from_secs(30)).await;
    let retried = assert_exactly_once(&network, &records).await;
    let failed_over = records
        .iter()
        .filter(|record| record.replicas.len() > 1)
        .count();
    eprintln!(
        "{} keys paid, {retried} retried with the same key, {failed_over} answered after failing over",
        records.len()
    );
    assert!(failed_over > 0, "no client failed over");
    assert_no_contradiction_logged(&network);
    network.assert_audit_clean(Duration::from_secs(30)).await;
}

/// Sends `request` until it is answered with its payment (bounded); the payment id.
async fn answered_payment(client: &mut GatewayClient, request: &pb::PayRequest) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match client.pay(request.clone()).await {
            Ok(payment) => return payment.into_inner().payment_id,
            Err(status)
                if matches!(status.code(), Code::Aborted | Code::Unavailable)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("{}: {status:?}", request.idempotency_key),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_sent_to_two_replicas_at_once_pays_once() {
    let network = ReplicaNetwork::start(2, &BANKS, &["alice", "bob"]).await;
    network.fund("alice", "bank0", "100.00").await;
    network.fund("bob", "bank1", "0").await;
    let mut first = network.client_at(0, "alice", Duration::from_secs(10));
    let mut second = network.client_at(1, "alice", Duration::from_secs(10));
    // Connected and authenticated on both before the races.
    first
        .get_balances(pb::GetBalancesRequest::default())
        .await
        .unwrap();
    second
        .get_balances(pb::GetBalancesRequest::default())
        .await
        .unwrap();

    const ROUNDS: i64 = 50;
    let mut total = 0;
    let mut in_progress_answers = 0;
    for round in 0..ROUNDS {
        let request = pay_request(&format!("twice-{round}"), "bob", 10 + round);
        total += 10 + round;
        let (one, two) = tokio::join!(first.pay(request.clone()), second.pay(request.clone()));
        let mut ids = BTreeSet::new();
        for answer in [one, two] {
            match answer {
                Ok(payment) => {
                    ids.insert(payment.into_inner().payment_id);
                }
                // The other replica holds the key: "in progress, retry with the same key".
                Err(status) if status.code() == Code::Aborted => in_progress_answers += 1,
                // A transient abort (a bank slow on a loaded machine): retried with the key.
                Err(status) if status.code() == Code::Unavailable => {}
                Err(status) => panic!("round {round}: {status:?}"),
            }
        }
        // Whoever was told "in progress" asks again until the payment is answered; both
        // replicas then answer the same payment.
        for client in [&mut first, &mut second] {
            ids.insert(answered_payment(client, &request).await);
        }
        assert_eq!(
            ids.len(),
            1,
            "round {round}: one key, several payments: {ids:?}"
        );
    }
    eprintln!("{ROUNDS} rounds, {in_progress_answers} answers were \"in progress\"");

    // One COMMITTED payment per key in the shared log (one attempt, unless a bank was too
    // slow and the key's retry ran a second), and the money moved once per key.
    let db = network.db().await;
    let per_key: Vec<(String, i64, i64)> = db
        .query(
            "SELECT idempotency_key, count(*), count(*) FILTER (WHERE status = 2) \
             FROM payments WHERE idempotency_key LIKE 'twice-%' GROUP BY idempotency_key",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(per_key.len(), ROUNDS as usize);
    for (key, attempts, committed) in &per_key {
        assert_eq!(*committed, 1, "{key}: {attempts} attempts");
    }
    let retried = per_key
        .iter()
        .filter(|(_, attempts, _)| *attempts > 1)
        .count();
    eprintln!("{retried} keys needed a second attempt");
    let (code, history) = network.client("alice", &["history", "--limit", "100"]);
    assert_eq!(code, 0, "{history}");
    assert_eq!(
        history["payments"].as_array().unwrap().len(),
        ROUNDS as usize,
        "{history}"
    );
    assert_eq!(network.available_minor("alice"), 10_000 - total);
    assert_eq!(network.available_minor("bob"), total);
    network.assert_audit_clean(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_etcd_but_not_from_postgres_cannot_contradict_a_survivor() {
    let network = three_replicas().await;
    // Long call timeouts: a client of the stalled replica waits for that replica's own answer
    // after it resumes, so what it tells clients is checked too.
    let load = Load::start(&network, "cut", Duration::from_secs(30));
    load.progress(30, Duration::from_secs(30), &network).await;
    let victim = 2;
    let victim_id = network.replicas[victim].id.clone();

    // 1. Its lease revoked while it runs (its keep-alive finds out and registers again): a
    // survivor that scans in that window claims its unfinished payments, which it is still
    // running. Repeated until a survivor did.
    let mut claimed = false;
    for _ in 0..20 {
        let before = takeovers_of(&network, victim);
        assert!(
            network.revoke_lease(victim).await,
            "{victim_id} had no lease"
        );
        claimed = wait_until(Duration::from_secs(3), || async {
            takeovers_of(&network, victim) > before
        })
        .await;
        let back = wait_until(Duration::from_secs(10), || async {
            network.registered().await.contains(&victim_id)
        })
        .await;
        assert!(
            back,
            "{victim_id} did not register again after losing its lease"
        );
        if claimed {
            break;
        }
    }
    assert!(
        claimed,
        "no survivor claimed the payments of a replica without a lease"
    );
    load.progress(20, Duration::from_secs(30), &network).await;

    // 2. Stalled (SIGSTOP) with payments in phase 1, its database sessions open, until its
    // lease lapses and a survivor claims its payments and decides them (past their deadline,
    // nobody runs their phase 1 any more: abort).
    let stopped = stop_in_phase_one(&network, victim).await;
    let stall = stopped.at;
    let frozen = stopped.phase_one.clone();
    let db = network.db().await;
    let bound = lease_ttl() + TAKEOVER_SCAN + decision_window() + SLACK;
    let taken = wait_until(bound, || async {
        payments_by_id(&db, &frozen)
            .await
            .iter()
            .all(|payment| payment.status != PENDING && payment.coordinator != victim_id)
    })
    .await;
    let decided = payments_by_id(&db, &frozen).await;
    assert!(
        taken,
        "the stalled replica's payments were not claimed and decided: {decided:?}\n{}",
        network.logs()
    );
    eprintln!(
        "MEASURED: {} payments of the stalled replica in phase 1, claimed and decided {} ms after the stall (decisions at {:?} ms)",
        frozen.len(),
        stall.elapsed().as_millis(),
        decided
            .iter()
            .map(|payment| payment.decided_unix_ms.map(|at| at - stopped.at_unix_ms))
            .collect::<Vec<_>>()
    );
    for payment in &decided {
        assert_eq!(
            (payment.status, payment.reason_code.as_deref()),
            (ABORTED, Some("decision_timeout")),
            "{payment:?}"
        );
    }
    assert!(!network.registered().await.contains(&victim_id));

    // Resumed: its own tasks for those payments run on, reach their decision write, and adopt
    // what the survivor stored; it registers again and keeps serving.
    network.resume(victim);
    let back = wait_until(Duration::from_secs(10), || async {
        network.registered().await.contains(&victim_id)
    })
    .await;
    assert!(back, "{victim_id} did not register again after its stall");
    load.progress(30, Duration::from_secs(60), &network).await;
    let records = load.finish().await;
    assert_quiet(&network, Duration::from_secs(30)).await;

    // What the survivor decided for the frozen payments is what every bank applied and what
    // every client (the resumed replica's included) was told.
    let aborted = pb::LegState::Aborted as i32;
    let told: HashMap<&str, &ClientRecord> = records
        .iter()
        .filter_map(|record| match &record.answer {
            Answer::Committed(payment_id) => Some((payment_id.as_str(), record)),
            Answer::Refused(..) => None,
        })
        .collect();
    let log = network.log(victim);
    let mut adopted = 0;
    for payment in payments_by_id(&db, &frozen).await {
        let legs = leg_states(&network, &payment.payment_id).await;
        assert_eq!(payment.status, ABORTED, "{payment:?}");
        assert!(
            legs.iter().all(|state| *state == aborted),
            "{payment:?}: a bank holds {legs:?}"
        );
        assert!(
            !told.contains_key(payment.payment_id.as_str()),
            "{payment:?} is ABORTED, yet a client was told it COMMITTED"
        );
        // Its own task, resumed in phase 1, went on to its decision write and adopted the
        // survivor's abort (logged), or — on a machine slow enough that the write did not
        // answer within the store-call bound — wrote nothing of its own; either way it
        // answered its client that the payment did not go through (a transient abort:
        // UNAVAILABLE, retry with the key).
        let own: Vec<&str> = log
            .lines()
            .filter(|line| line.contains(&payment.payment_id))
            .collect();
        if own
            .iter()
            .any(|line| line.contains("adopting the stored decision"))
        {
            adopted += 1;
        }
        assert!(
            own.iter().any(|line| line.contains("INFO request")
                && line.contains("/strife.v1.Gateway/Pay")
                && line.contains("status=Unavailable")),
            "{victim_id} did not answer {} as not done:\n{}",
            payment.payment_id,
            own.join("\n")
        );
    }
    eprintln!(
        "the resumed replica adopted the stored decision of {adopted} of its {} frozen payments",
        frozen.len()
    );
    assert_exactly_once(&network, &records).await;
    assert_no_contradiction_logged(&network);
    network.assert_audit_clean(Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_load_replicas_reconnect_and_nothing_is_lost() {
    let mut network = three_replicas().await;
    let load = Load::start(&network, "pg", Duration::from_secs(10));
    load.progress(30, Duration::from_secs(30), &network).await;

    // PostgreSQL stops under the load, with payments certainly in flight: STALLED_BANK is
    // stalled, so the payments touching it wait in phase 1, and the store goes away before
    // they can write their decisions.
    let failures = load.failures();
    let db = network.db().await;
    let bank = network.banks[STALLED_BANK].id.clone();
    // A stall may catch every payer already waiting on a payment made before it, so that
    // none makes a new one within the bank's etcd lease; then the bank is let go, serves
    // again, and is stalled anew (bounded).
    let mut waiting = false;
    for attempt in 0..20 {
        network.pause_bank(STALLED_BANK);
        let stalled_at = now_unix_ms();
        // Bounded well inside the bank's etcd lease (2 s).
        waiting = wait_until(Duration::from_secs(1), || async {
            stored_payments(&db).await.iter().any(|payment| {
                payment.status == PENDING
                    && (payment.from_bank == bank || payment.to_bank == bank)
                    && payment.created_unix_ms >= stalled_at
            })
        })
        .await;
        if waiting {
            break;
        }
        network.resume_bank(STALLED_BANK);
        eprintln!("attempt {attempt}: no payment on {bank} waited in phase 1; letting it recover");
        let resumed_at = now_unix_ms();
        let serving = wait_until(Duration::from_secs(15), || async {
            stored_payments(&db).await.iter().any(|payment| {
                payment.status == COMMITTED
                    && (payment.from_bank == bank || payment.to_bank == bank)
                    && payment.created_unix_ms >= resumed_at
            })
        })
        .await;
        assert!(serving, "{bank} committed nothing after its stall");
    }
    let in_flight: Vec<String> = stored_payments(&db)
        .await
        .into_iter()
        .filter(|payment| payment.status == PENDING)
        .map(|payment| payment.payment_id)
        .collect();
    drop(db);
    network.postgres.stop();
    network.resume_bank(STALLED_BANK);
    assert!(waiting, "no payment waited in phase 1");

    // While it is down every replica answers UNAVAILABLE (retryable, nothing recorded), and
    // the clients keep retrying their keys.
    let mut refused_while_down = Vec::new();
    for index in 0..network.replicas.len() {
        let key = format!("while-down-{index}");
        let mut client = network.client_at(index, "u0", Duration::from_secs(10));
        let status = client
            .pay(pay_request(&key, "u1", 50))
            .await
            .expect_err("paid while the store is down");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        refused_while_down.push(key);
    }
    let seen = wait_until(Duration::from_secs(20), || async {
        load.failures() >= failures + 6
    })
    .await;
    assert!(seen, "the clients did not notice the store going down");
    network.postgres.start_again().await;

    // The replicas reconnect on their own: the load goes on.
    load.progress(40, Duration::from_secs(60), &network).await;
    let mut records = load.finish().await;
    // The keys refused while the store was down pay now, once.
    let mut payer = FailoverPayer::new(&network, "u0", 0, Duration::from_secs(10));
    for key in &refused_while_down {
        records.push(payer.pay(key, "u1", 50, KEY_LIMIT).await.expect(key));
    }

    // Everything in flight at the stop ended COMMITTED or ABORTED, and every payment a client
    // was answered is in the log, findable through any replica.
    assert_quiet(&network, Duration::from_secs(30)).await;
    let db = network.db().await;
    let stored = stored_payments(&db).await;
    assert!(stored.iter().all(|payment| payment.status != PENDING));
    let ended: Vec<(i32, Option<String>)> = payments_by_id(&db, &in_flight)
        .await
        .into_iter()
        .map(|payment| (payment.status, payment.reason_code))
        .collect();
    assert_eq!(ended.len(), in_flight.len(), "in-flight payments lost");
    eprintln!("payments in flight when PostgreSQL stopped ended: {ended:?}");
    let mut admin = (0..3)
        .map(|index| network.client_at(index, "admin", Duration::from_secs(10)))
        .collect::<Vec<_>>();
    for (n, record) in records.iter().enumerate() {
        if let Answer::Committed(payment_id) = &record.answer {
            let found = admin[n % 3]
                .get_payment(pb::GetPaymentRequest {
                    payment_id: payment_id.clone(),
                })
                .await
                .unwrap_or_else(|status| panic!("{payment_id} lost: {status:?}"))
                .into_inner();
            assert_eq!(found.status, pb::PaymentStatus::Committed as i32);
        }
    }
    let aborted_in_flight = stored
        .iter()
        .filter(|payment| payment.status == ABORTED)
        .count();
    eprintln!(
        "{} keys paid across the restart, {aborted_in_flight} attempts aborted (retried)",
        records.len()
    );
    assert_exactly_once(&network, &records).await;
    for index in 0..network.replicas.len() {
        assert!(
            network.log(index).contains("PostgreSQL store call failed"),
            "{} did not see the outage",
            network.replicas[index].id
        );
    }
    assert_no_contradiction_logged(&network);
    network.assert_audit_clean(Duration::from_secs(30)).await;
}

/// A second process given a live replica's `--replica-id` (at another address) would recover
/// and finish that replica's payments beside it and fight over its etcd key: it is refused,
/// naming the id, the live address and the flag, once the key has outlived its lease TTL;
/// the live replica keeps its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_under_a_live_replicas_id_is_refused() {
    let network = ReplicaNetwork::start(1, &["bank0"], &[]).await;
    let live = &network.replicas[0];
    let mut command = std::process::Command::new(crate::support::strife_bin());
    command
        .args(["gateway", "--json", "--listen", "127.0.0.1:0", "--etcd"])
        .arg(&network.etcd.endpoint)
        .args(["--lease-ttl", &lease_ttl().as_secs().to_string()])
        .args(["--replica-id", &live.id, "--dir"])
        .arg(network.network.network.path())
        .env("STRIFE_GATEWAY_STORE", network.database.url());
    let (code, stderr) =
        crate::support::run_expecting_exit(command, lease_ttl() + Duration::from_secs(30));
    assert!(
        matches!(code, Some(code) if code != 0),
        "the second replica started: {stderr}"
    );
    for expected in [live.id.as_str(), live.address.as_str(), "--replica-id"] {
        assert!(stderr.contains(expected), "{expected:?} missing: {stderr}");
    }
    let entries = network.etcd.gateway_entries().await;
    assert_eq!(
        entries
            .iter()
            .map(|entry| (entry.id.as_str(), entry.address.as_str()))
            .collect::<Vec<_>>(),
        vec![(live.id.as_str(), live.address.as_str())],
        "the live replica's key changed"
    );
}
