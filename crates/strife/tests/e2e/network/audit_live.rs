//! `strife audit --live` (docs/RELIABILITY.md): on a network with payments under way it
//! reads consistent snapshots, reports half-done payments as in flight, never as violations,
//! and still catches real damage — including an account whose owner at the bank is not the
//! user the gateway links it to (`owner_mismatch`, both modes).

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::network::ManualNetwork;
use crate::support::{strife_bin, wait_until, BankStart};
use serde_json::Value;
use strife_proto::v1 as pb;

const BANKS: [&str; 2] = ["bank0", "bank1"];
const USERS: [&str; 6] = ["u0", "u1", "u2", "u3", "u4", "u5"];

/// Runs `strife audit --json` (plus `extra`) against the network: (exit code, report).
fn audit(network: &ManualNetwork, extra: &[&str]) -> (Option<i32>, Value) {
    let output = Command::new(strife_bin())
        .args(["audit", "--json", "--etcd", &network.etcd.endpoint])
        .args(extra)
        .arg("--dir")
        .arg(network.network.path())
        .output()
        .unwrap();
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "audit printed no JSON report: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

fn violation_kinds(report: &Value) -> Vec<String> {
    report["violations"]
        .as_array()
        .map(|violations| {
            violations
                .iter()
                .filter_map(|violation| violation["kind"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn funded_network() -> ManualNetwork {
    let network = ManualNetwork::start(&BANKS, &USERS).await;
    for (index, user) in USERS.iter().enumerate() {
        network
            .fund(user, BANKS[index % BANKS.len()], "100.00")
            .await;
    }
    network
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_live_under_load_reports_in_flight_payments_never_violations() {
    let network = funded_network().await;
    let stop = Arc::new(AtomicBool::new(false));
    // A ring of payers across both banks, back to back: most of the time some payment is
    // between its gateway log entry and its last leg.
    let payers: Vec<_> = USERS
        .iter()
        .enumerate()
        .map(|(index, user)| {
            let mut client = network.gateway_client(user);
            let payee = USERS[(index + 1) % USERS.len()].to_owned();
            let stop = stop.clone();
            let user = user.to_string();
            tokio::spawn(async move {
                let mut committed = 0usize;
                let mut sequence = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    sequence += 1;
                    let request = pb::PayRequest {
                        idempotency_key: format!("live-{user}-{sequence}"),
                        to_username: payee.clone(),
                        amount: Some(pb::Money {
                            amount_minor: 1 + (sequence % 7) as i64,
                            currency: "USD".into(),
                        }),
                        ..pb::PayRequest::default()
                    };
                    if client.pay(request).await.is_ok() {
                        committed += 1;
                    }
                }
                committed
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(40);
    let mut runs = 0;
    let mut saw_in_flight = false;
    while (runs < 5 || !saw_in_flight) && Instant::now() < deadline {
        let (code, report) = tokio::task::block_in_place(|| audit(&network, &["--live"]));
        runs += 1;
        assert_eq!(
            code,
            Some(0),
            "run {runs}: --live must not flag payments in flight: {report}"
        );
        assert!(violation_kinds(&report).is_empty(), "{report}");
        assert_eq!(report["live"], true);
        let count = report["in_flight_count"].as_u64().unwrap();
        assert_eq!(
            count as usize,
            report["in_flight"].as_array().unwrap().len(),
            "{report}"
        );
        saw_in_flight |= count > 0;
    }
    stop.store(true, Ordering::Relaxed);
    let mut committed = 0;
    for payer in payers {
        committed += payer.await.unwrap();
    }
    assert!(committed > 0, "the load committed nothing");
    assert!(
        saw_in_flight,
        "{runs} live audits under load never caught a payment in flight"
    );

    // Quiet again: the plain audit agrees, and a live one has nothing in flight once phase 2
    // has reached both banks.
    let quiet = wait_until(Duration::from_secs(20), || async {
        tokio::task::block_in_place(|| {
            let (code, report) = audit(&network, &["--live"]);
            code == Some(0) && report["in_flight_count"] == 0
        })
    })
    .await;
    assert!(quiet, "live audit never settled to no payments in flight");
    let (code, report) = tokio::task::block_in_place(|| audit(&network, &[]));
    assert_eq!(code, Some(0), "{report}");
    // The report for people says what was in flight, next to the money.
    let human = Command::new(strife_bin())
        .args(["audit", "--live", "--etcd", &network.etcd.endpoint, "--dir"])
        .arg(network.network.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(human.status.success(), "{text}");
    assert!(text.contains("in flight: 0 payments"), "{text}");
    assert!(text.contains("violations: none"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_live_still_catches_a_tampered_bank_and_an_owner_mismatch() {
    let mut network = funded_network().await;
    let (code, report) = audit(&network, &["--live"]);
    assert_eq!(code, Some(0), "{report}");

    // Offline damage at bank0: one balance no longer matches its journal (money from
    // nowhere), and one account's owner is no longer the user the gateway linked it to.
    assert!(network.banks[0].process.terminate(Duration::from_secs(10)));
    let db = network.network.layout().bank_db("bank0");
    {
        let connection = rusqlite::Connection::open(&db).unwrap();
        let changed = connection
            .execute(
                "UPDATE accounts SET balance_minor = balance_minor + 1
                 WHERE id = (SELECT MIN(id) FROM accounts)",
                [],
            )
            .unwrap();
        assert_eq!(changed, 1);
        let changed = connection
            .execute(
                "UPDATE accounts SET owner = 'mallory' WHERE id = (SELECT MAX(id) FROM accounts)",
                [],
            )
            .unwrap();
        assert_eq!(changed, 1);
    }
    network.banks[0] = BankStart::new(&network.network, "bank0")
        .etcd(&network.etcd.endpoint)
        .arg("--lease-ttl")
        .arg("2")
        .start();

    for mode in [&["--live"][..], &[][..]] {
        // The restarted bank re-registers its new address; wait for the audit to reach it.
        let mut last = None;
        wait_until(Duration::from_secs(20), || {
            let (code, report) = audit(&network, mode);
            let reached = !violation_kinds(&report)
                .iter()
                .any(|kind| kind == "bank_unreachable");
            last = Some((code, report));
            async move { reached }
        })
        .await;
        // Reached or not, the last audit must report the damage.
        let (code, report) = last.unwrap();
        assert_eq!(
            code,
            Some(1),
            "{mode:?}: damage must fail the audit: {report}"
        );
        let kinds = violation_kinds(&report);
        for expected in ["journal_mismatch", "money_not_conserved", "owner_mismatch"] {
            assert!(
                kinds.iter().any(|kind| kind == expected),
                "{mode:?}: {expected} missing: {report}"
            );
        }
        assert_eq!(report["in_flight_count"], 0, "{report}");
    }
}
