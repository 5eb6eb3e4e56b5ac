//! A bank's etcd registration against a real etcd: it appears on start, vanishes within the
//! lease TTL after SIGKILL, comes back after etcd restarts empty, and leaves on SIGTERM.

use std::time::{Duration, Instant};

use crate::support::{wait_until, BankStart, Etcd, Network};
use strife_common::etcd::discovery::ServiceEntry;
use strife_common::etcd::keys::bank_key;

const LEASE_TTL_SECS: u64 = 2;

async fn registered_address(etcd: &Etcd, bank_id: &str) -> Option<String> {
    let value = etcd.get(&bank_key(bank_id)).await?;
    let entry: ServiceEntry = serde_json::from_slice(&value).ok()?;
    Some(entry.address)
}

#[tokio::test]
async fn key_appears_on_start_and_vanishes_within_the_ttl_after_sigkill() {
    let network = Network::setup(&["bank0"], &[]);
    let etcd = Etcd::start(&network).await;
    let mut bank = BankStart::new(&network, "bank0")
        .etcd(&etcd.endpoint)
        .arg("--lease-ttl")
        .arg(&LEASE_TTL_SECS.to_string())
        .start();
    let address = bank.address.to_string();
    let appeared = wait_until(Duration::from_secs(1), || async {
        registered_address(&etcd, "bank0").await.as_deref() == Some(address.as_str())
    })
    .await;
    assert!(
        appeared,
        "bank key not in etcd within 1 s; log:\n{}",
        bank.process.log_text()
    );

    bank.process.kill();
    let killed_at = Instant::now();
    // etcd checks lease expiry on its own clock; allow one extra second of its granularity.
    let gone = wait_until(Duration::from_secs(LEASE_TTL_SECS + 1), || async {
        registered_address(&etcd, "bank0").await.is_none()
    })
    .await;
    assert!(
        gone,
        "key still present {:?} after SIGKILL",
        killed_at.elapsed()
    );
}

#[tokio::test]
async fn bank_registers_again_after_etcd_restarts_empty() {
    let network = Network::setup(&["bank0"], &[]);
    let mut etcd = Etcd::start(&network).await;
    let bank = BankStart::new(&network, "bank0")
        .etcd(&etcd.endpoint)
        .arg("--lease-ttl")
        .arg(&LEASE_TTL_SECS.to_string())
        .start();
    let address = bank.address.to_string();
    assert!(
        wait_until(Duration::from_secs(1), || async {
            registered_address(&etcd, "bank0").await.is_some()
        })
        .await
    );

    etcd.restart_empty().await;
    let back = wait_until(Duration::from_secs(15), || async {
        registered_address(&etcd, "bank0").await.as_deref() == Some(address.as_str())
    })
    .await;
    assert!(
        back,
        "bank did not re-register; log:\n{}",
        bank.process.log_text()
    );
}

#[tokio::test]
async fn sigterm_deregisters_at_once() {
    let network = Network::setup(&["bank0"], &[]);
    let etcd = Etcd::start(&network).await;
    // A long TTL, so a key that disappears quickly can only have been removed on purpose.
    let mut bank = BankStart::new(&network, "bank0")
        .etcd(&etcd.endpoint)
        .arg("--lease-ttl")
        .arg("30")
        .start();
    assert!(
        wait_until(Duration::from_secs(1), || async {
            registered_address(&etcd, "bank0").await.is_some()
        })
        .await
    );
    assert!(
        bank.process.terminate(Duration::from_secs(5)),
        "bank did not exit on SIGTERM"
    );
    let gone = wait_until(Duration::from_secs(2), || async {
        registered_address(&etcd, "bank0").await.is_none()
    })
    .await;
    assert!(
        gone,
        "key not removed on clean shutdown; log:\n{}",
        bank.process.log_text()
    );
}
