//! `WatchPayments` end to end: events in decision order, only the caller's own (all for the
//! admin), resumable from a cursor across a gateway restart, and live delivery.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::network::{password_of, ManualNetwork};
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
