//! A bank whose disk fills (docs/RELIABILITY.md, "Operator mistakes and sick disks"): its
//! writes fail as transient storage trouble, payments touching it are refused or aborted with
//! no money moved, and once space is freed it pays again and the audit is clean.

use std::process::Command;
use std::time::Duration;

use crate::support::disk::{fill, Tmpfs};
use crate::support::network::{bank_balances, pay_request, ManualNetwork};
use crate::support::{strife_bin, wait_until, BankStart};
use strife_proto::v1 as pb;

fn audit_clean(network: &crate::support::network::ManualNetwork) -> (bool, String) {
    let output = Command::new(strife_bin())
        .args(["audit", "--json", "--etcd", &network.etcd.endpoint, "--dir"])
        .arg(network.network.path())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test]
async fn a_full_bank_disk_moves_no_money_and_recovers_when_space_is_freed() {
    let mut network = ManualNetwork::alice_and_bob().await;
    // Move bank0's (alice's, the debit side) dir onto a small tmpfs: the same database and
    // files, so it opens as itself.
    assert!(network.banks[0].process.terminate(Duration::from_secs(10)));
    let bank_dir = network.network.layout().bank_dir("bank0");
    let saved = network.network.path().join("bank0-saved");
    std::fs::rename(&bank_dir, &saved).unwrap();
    let Some(_tmpfs) = Tmpfs::mount(&bank_dir, "4m") else {
        return;
    };
    for entry in std::fs::read_dir(&saved).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), bank_dir.join(entry.file_name())).unwrap();
        }
    }
    network.banks[0] = BankStart::new(&network.network, "bank0")
        .etcd(&network.etcd.endpoint)
        .arg("--lease-ttl")
        .arg("2")
        .start();
    let mut alice = network.gateway_client("alice");
    // The gateway learns bank0's new address from etcd; the first payments may still find
    // the old one.
    let first = wait_until(Duration::from_secs(20), || {
        let mut alice = alice.clone();
        async move { alice.pay(pay_request("before-full")).await.is_ok() }
    })
    .await;
    assert!(first, "pays before the disk fills");

    let filler = bank_dir.join("filler");
    fill(&filler);
    // Pay until a write at bank0 needs space it no longer has (the WAL only grows now and
    // then, so the first few payments may still fit).
    let mut refused = None;
    for attempt in 0..400 {
        let key = format!("full-{attempt}");
        let before = bank_balances(&network).await;
        match alice.pay(pay_request(&key)).await {
            Ok(reply) if reply.get_ref().status == pb::PaymentStatus::Committed as i32 => {}
            outcome => {
                refused = Some((key, outcome, before));
                break;
            }
        }
    }
    let (key, outcome, before) = refused.expect("some payment must hit bank0's full disk");
    eprintln!("{key} on bank0's full disk: {outcome:?}");
    match &outcome {
        // Refused at the gateway: the transient code, so clients retry with the same key.
        Err(status) => {
            assert_eq!(
                status.code(),
                tonic::Code::Unavailable,
                "storage trouble is transient: {status:?}"
            );
            assert!(
                status.message().contains("storage write failed at bank.db"),
                "names the bank's file: {status:?}"
            );
        }
        // Or the gateway decided: the payment aborted.
        Ok(reply) => assert_eq!(
            reply.get_ref().status,
            pb::PaymentStatus::Aborted as i32,
            "{reply:?}"
        ),
    }
    assert_eq!(bank_balances(&network).await, before, "no money moved");

    // Space again: payments go through, and once every decision has reached both banks the
    // audit is clean.
    std::fs::remove_file(&filler).unwrap();
    let last = std::cell::RefCell::new(String::new());
    let paid = wait_until(Duration::from_secs(30), || {
        let mut alice = alice.clone();
        let last = &last;
        async move {
            let outcome = alice.pay(pay_request("after-full")).await;
            let done = outcome
                .as_ref()
                .is_ok_and(|reply| reply.get_ref().status == pb::PaymentStatus::Committed as i32);
            *last.borrow_mut() = format!("{outcome:?}");
            done
        }
    })
    .await;
    assert!(paid, "pays once space is back: {last:?}");
    let clean = wait_until(Duration::from_secs(30), || async {
        audit_clean(&network).0
    })
    .await;
    assert!(clean, "audit must be clean: {}", audit_clean(&network).1);
}
