//! `WatchPayments` end to end: events in decision order, only the caller's own (all for the
//! admin), resumable from a cursor across a gateway restart, and live delivery; under a
//! concurrent load, watchers that hang up and resume, or live through a restart, get every
//! payment exactly once, in the one decision order.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use strife_proto::v1 as pb;

use crate::support::load::{Answer, Load};
use crate::support::network::{password_of, GatewayClient, ManualNetwork};
use crate::support::{strife_bin, wait_until};

async fn alice_bob_carol() -> ManualNetwork {
    let network = ManualNetwork::start(&["bank0", "bank1"], &["alice", "bob", "carol"]).await;
    network.fund("alice", "bank0", "10.00").await;
    network.fund("bob", "bank1", "0").await;
    network.fund("carol", "bank1", "0").await;
    network
}

fn watch_command(network: &ManualNetwork, user: &str, args: &[&str]) -> Command {
    let mut command = Command::new(strife_bin());
    command
        .args(["client", "--json", "--gateway", &network.gateway_address])
        .args(["--user", user, "--dir"])
        .arg(network.network.path())
        .arg("watch")
        .args(args)
        .env("STRIFE_PASSWORD", password(network, user));
    command
}

fn password(network: &ManualNetwork, user: &str) -> String {
    if user == "admin" {
        strife_pki::read_admin_password(&network.network.layout()).unwrap()
    } else {
        password_of(user)
    }
}

/// Runs a bounded watch to its end: (exit code, one JSON document per printed line).
fn watch(network: &ManualNetwork, user: &str, args: &[&str]) -> (i32, Vec<Value>) {
    let output = watch_command(network, user, args).output().unwrap();
    let events = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    (output.status.code().unwrap_or(-1), events)
}

fn pay(network: &ManualNetwork, amount: &str, key: &str) -> Value {
    let (_, paid) = network.client(
        "alice",
        &["pay", "--to", "bob", "--amount", amount, "--key", key],
    );
    paid
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|event| {
            event["payment"]["payment_id"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn watchers_see_their_own_decided_payments_in_order_and_resume_without_gaps() {
    let mut network = alice_bob_carol().await;
    let committed = pay(&network, "4.00", "events-1");
    assert_eq!(committed["payment"]["status"], "COMMITTED", "{committed}");
    let refused = pay(&network, "50.00", "events-2");
    assert_eq!(refused["reason_code"], "insufficient_funds", "{refused}");
    // A refusal answers with a status, not the payment: its id is in the history.
    let (_, history) = network.client("alice", &["history"]);
    assert_eq!(
        history["payments"][0]["idempotency_key"], "events-2",
        "{history}"
    );
    let paid = [
        committed["payment"]["payment_id"]
            .as_str()
            .unwrap()
            .to_owned(),
        history["payments"][0]["payment_id"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
    ];

    // The payee, from the start of the log: both, in decision order, with their outcome.
    let (code, events) = watch(&network, "bob", &["--since", "0", "--max-events", "2"]);
    assert_eq!(code, 0, "{events:?}");
    assert_eq!(ids(&events), paid);
    assert_eq!(events[0]["payment"]["status"], "COMMITTED");
    assert_eq!(events[1]["payment"]["reason_code"], "insufficient_funds");
    let first_cursor = events[0]["cursor"].as_str().unwrap().to_owned();

    // The admin sees every payment; someone not involved sees none.
    let (code, all) = watch(&network, "admin", &["--since", "0", "--max-events", "2"]);
    assert_eq!((code, ids(&all)), (0, paid.to_vec()));
    let (code, none) = watch(&network, "carol", &["--since", "0", "--max-seconds", "2"]);
    assert_eq!((code, none.len()), (0, 0), "{none:?}");

    // Resuming after the first event, across a gateway restart: exactly the second.
    network.stop_gateway();
    network.start_gateway(&[]);
    let (code, resumed) = watch(
        &network,
        "bob",
        &["--since", &first_cursor, "--max-seconds", "3"],
    );
    assert_eq!(code, 0, "{resumed:?}");
    assert_eq!(ids(&resumed), vec![paid[1].clone()], "no gap, no duplicate");

    // A cursor the server never gave out is a clear INVALID_ARGUMENT.
    let (code, refused) = watch(&network, "bob", &["--since", "yesterday"]);
    assert_eq!(code, 1);
    assert_eq!(
        refused.last().map(|doc| doc["code"].clone()),
        Some("InvalidArgument".into())
    );
}

#[tokio::test]
async fn a_live_watch_prints_a_payment_as_it_is_decided() {
    let network = alice_bob_carol().await;
    let mut watcher = watch_command(
        &network,
        "bob",
        &["--max-events", "1", "--max-seconds", "30"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let stdout = watcher.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    // "From now" starts when the gateway gets the request, which the test cannot observe:
    // pay until the watcher reports one of these payments.
    let mut paid = Vec::new();
    let mut printed = None;
    let seen = wait_until(Duration::from_secs(20), || {
        let key = format!("live-{}", paid.len());
        let payment = pay(&network, "0.01", &key);
        paid.push(
            payment["payment"]["payment_id"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        );
        if let Ok(line) = receiver.recv_timeout(Duration::from_millis(300)) {
            printed = Some(line);
        }
        let done = printed.is_some();
        async move { done }
    })
    .await;
    assert!(seen, "the watcher printed nothing");
    let event: Value = serde_json::from_str(printed.as_deref().unwrap_or("")).unwrap();
    let id = event["payment"]["payment_id"].as_str().unwrap().to_owned();
    assert!(paid.contains(&id), "{id} is one of ours: {paid:?}");
    let status = watcher.wait().unwrap();
    assert!(status.success(), "stops after --max-events");
}

/// What one watcher received, in order: (cursor, payment id). Cursors are opaque (sealed to
/// the watcher), so order is checked by comparing watchers, not by reading cursors.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A `WatchPayments` follower over the raw gRPC API that resumes like `strife client watch`:
/// when its stream ends or fails (or it hangs up on purpose every `drop_every` events), it
/// opens a new one from the last cursor it received, retrying while the gateway is down.
struct Watcher {
    seen: Seen,
    streams: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    fn start(client: &GatewayClient, since: &str, drop_every: Option<usize>) -> Watcher {
        let seen: Seen = Arc::default();
        let streams = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(follow(
            client.clone(),
            since.to_owned(),
            drop_every,
            Arc::clone(&seen),
            Arc::clone(&streams),
        ));
        Watcher {
            seen,
            streams,
            task,
        }
    }

    fn seen(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }

    /// Streams opened so far (1 + every resume).
    fn streams(&self) -> usize {
        self.streams.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until it has received at least `count` events.
    async fn wait_for(&self, count: usize) -> bool {
        wait_until(Duration::from_secs(30), || {
            let received = self.seen.lock().unwrap().len();
            async move { received >= count }
        })
        .await
    }

    /// Waits (bounded) until it has received payment `id`.
    async fn wait_for_payment(&self, id: &str) -> bool {
        wait_until(Duration::from_secs(30), || {
            let received = self.seen.lock().unwrap().iter().any(|(_, seen)| seen == id);
            async move { received }
        })
        .await
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow(
    mut client: GatewayClient,
    mut cursor: String,
    drop_every: Option<usize>,
    seen: Seen,
    streams: Arc<AtomicUsize>,
) {
    loop {
        let opened = client
            .watch_payments(pb::WatchPaymentsRequest {
                since: cursor.clone(),
            })
            .await;
        if let Ok(response) = opened {
            streams.fetch_add(1, Ordering::SeqCst);
            let mut stream = response.into_inner();
            let mut received = 0;
            while let Ok(Some(event)) = stream.message().await {
                let id = event.payment.map(|payment| payment.payment_id).unwrap();
                seen.lock().unwrap().push((event.cursor.clone(), id));
                cursor = event.cursor;
                received += 1;
                if drop_every.is_some_and(|every| received >= every) {
                    break; // Hang up mid-stream: the stream is dropped here.
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every payment in the gateway's log, by id (alice makes them all), read from her history.
async fn logged_payments(network: &ManualNetwork) -> HashSet<String> {
    let mut alice = network.gateway_client("alice");
    let mut ids = HashSet::new();
    let mut page_token = String::new();
    loop {
        let page = alice
            .list_history(pb::ListHistoryRequest {
                page_size: 100,
                page_token: page_token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        for payment in page.payments {
            assert_ne!(
                payment.status,
                pb::PaymentStatus::Pending as i32,
                "the load is over: {payment:?}"
            );
            ids.insert(payment.payment_id);
        }
        if page.next_page_token.is_empty() {
            return ids;
        }
        page_token = page.next_page_token;
    }
}

/// A watcher's events are the log's payments exactly: each payment once, none missing, each
/// under a cursor of its own.
fn assert_complete(name: &str, seen: &[(String, String)], logged: &HashSet<String>) {
    let cursors: HashSet<&String> = seen.iter().map(|(cursor, _)| cursor).collect();
    assert_eq!(cursors.len(), seen.len(), "{name}: a cursor given twice");
    let ids: HashSet<String> = seen.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids.len(), seen.len(), "{name}: a payment delivered twice");
    assert_eq!(&ids, logged, "{name}: not exactly the logged payments");
}

/// `tasks` × `per_task` payments from alice to bob, each answered (bounded in time).
async fn run_load(
    alice: &GatewayClient,
    prefix: &str,
    tasks: usize,
    per_task: usize,
) -> Vec<Answer> {
    let load = Load::start(alice, "bob", tasks, prefix, Some(per_task)).finish();
    tokio::time::timeout(Duration::from_secs(60), load)
        .await
        .expect("the load ends within 60 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_a_concurrent_load_in_order_and_resume_without_gaps_across_a_restart() {
    let mut network = ManualNetwork::start(&["bank0", "bank1"], &["alice", "bob"]).await;
    network.fund("alice", "bank0", "100.00").await;
    network.fund("bob", "bank1", "0").await;
    let admin = network.gateway_client("admin");
    // One watcher follows along; one hangs up every 25 events and resumes from its cursor.
    let steady = Watcher::start(&admin, "0", None);
    let hanging_up = Watcher::start(&admin, "0", Some(25));

    const TASKS: usize = 8;
    const PER_TASK: usize = 12;
    let alice = network.gateway_client("alice");
    let first = run_load(&alice, "events-a", TASKS, PER_TASK).await;
    assert!(first.iter().all(Answer::answered), "{first:?}");
    let before_restart = logged_payments(&network).await;
    assert!(before_restart.len() >= TASKS * PER_TASK);
    for watcher in [&steady, &hanging_up] {
        assert!(watcher.wait_for(before_restart.len()).await);
    }
    let streams_before_restart = steady.streams();

    // A restart mid-watch: both streams end with the drain, and both watchers resume from
    // their last cursor on the new process, which numbers on from its durable log.
    network.stop_gateway();
    network.start_gateway(&[]);
    let alice = network.gateway_client("alice");
    let second = run_load(&alice, "events-b", TASKS, PER_TASK).await;
    assert!(second.iter().all(Answer::answered), "{second:?}");
    // One more payment after the load: events come in decision order, so once a watcher has
    // it, any late duplicate of an earlier payment would already have arrived.
    let marker = pay(&network, "0.01", "events-marker");
    let marker = marker["payment"]["payment_id"].as_str().unwrap().to_owned();
    let logged = logged_payments(&network).await;
    assert!(logged.len() > before_restart.len() + TASKS * PER_TASK);
    for watcher in [&steady, &hanging_up] {
        assert!(
            watcher.wait_for_payment(&marker).await,
            "{} of {} events; gateway log:\n{}",
            watcher.seen().len(),
            logged.len(),
            network.gateway_log()
        );
    }
    assert_complete("steady", &steady.seen(), &logged);
    assert_complete("hanging up", &hanging_up.seen(), &logged);
    assert!(
        steady.streams() > streams_before_restart,
        "the steady watcher resumed after the restart"
    );
    assert!(
        hanging_up.streams() >= logged.len() / 25,
        "hung up and resumed {} times",
        hanging_up.streams()
    );

    // Everyone sees the one decision order: a new watcher from the start gets the same list.
    let fresh = Watcher::start(&network.gateway_client("admin"), "0", None);
    assert!(fresh.wait_for(logged.len()).await);
    assert_eq!(fresh.seen(), steady.seen(), "one order for every watcher");
    assert_eq!(hanging_up.seen(), steady.seen());
}

/// The first `count` events of `client`'s watch from `since` (bounded in time).
async fn first_events(
    client: &mut GatewayClient,
    since: &str,
    count: usize,
) -> Vec<pb::PaymentEvent> {
    let mut stream = client
        .watch_payments(pb::WatchPaymentsRequest {
            since: since.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while events.len() < count {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
        events.push(next.expect("an event within 10 s").unwrap().unwrap());
    }
    events
}

#[tokio::test]
async fn cursors_and_page_tokens_reveal_nothing_of_other_users_and_open_only_for_their_owner() {
    let network = alice_bob_carol().await;
    // bob's two payments have carol's three between them in the decision order.
    pay(&network, "1.00", "private-bob-1");
    for index in 0..3 {
        let (_, paid) = network.client(
            "alice",
            &[
                "pay",
                "--to",
                "carol",
                "--amount",
                "0.10",
                "--key",
                &format!("private-carol-{index}"),
            ],
        );
        assert_eq!(paid["payment"]["status"], "COMMITTED", "{paid}");
    }
    pay(&network, "1.00", "private-bob-2");

    let mut bob = network.gateway_client("bob");
    let events = first_events(&mut bob, "0", 2).await;
    let cursors: Vec<&str> = events.iter().map(|event| event.cursor.as_str()).collect();
    for cursor in &cursors {
        // Not a position: 32 hex digits that look random.
        assert_eq!(cursor.len(), 32, "{cursor}");
        assert!(
            cursor.bytes().all(|byte| byte.is_ascii_hexdigit()),
            "{cursor}"
        );
    }
    assert_ne!(cursors[0], cursors[1]);
    // bob resumes from his own cursor: exactly his second payment.
    let resumed = first_events(&mut bob, cursors[0], 1).await;
    assert_eq!(resumed[0].payment, events[1].payment);
    // carol (or anyone else) cannot use bob's cursor: INVALID_ARGUMENT naming `since`.
    let refused = network
        .gateway_client("carol")
        .watch_payments(pb::WatchPaymentsRequest {
            since: cursors[0].to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("since"), "{refused:?}");

    // History page tokens are sealed the same way, and only for their owner.
    let mut alice = network.gateway_client("alice");
    let page = alice
        .list_history(pb::ListHistoryRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let token = page.next_page_token;
    assert_eq!(token.len(), 32, "{token}");
    let next = alice
        .list_history(pb::ListHistoryRequest {
            page_size: 2,
            page_token: token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next.payments.len(), 2, "the next page follows");
    assert!(next
        .payments
        .iter()
        .all(|payment| !page.payments.contains(payment)));
    let refused = bob
        .list_history(pb::ListHistoryRequest {
            page_size: 2,
            page_token: token,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("page_token"), "{refused:?}");
}
