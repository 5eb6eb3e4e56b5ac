//! Operator mistakes and sick disks must never misdirect money (docs/RELIABILITY.md,
//! "Operator mistakes and sick disks"): real processes on real data dirs, each mistake made
//! for real — a second process on the same dir, an emptied database, a foreign key file.

mod support;

use std::process::Command;
use std::time::Duration;

use strife_common::discovery::{bank_key, ServiceEntry, GATEWAY_KEY};
use support::network::ManualNetwork;
use support::{run_expecting_exit, strife_bin, wait_until};

/// How long a refused start may take to exit.
const REFUSAL_LIMIT: Duration = Duration::from_secs(15);

async fn alice_and_bob() -> ManualNetwork {
    let network = ManualNetwork::start(&["bank0", "bank1"], &["alice", "bob"]).await;
    network.fund("alice", "bank0", "100.00").await;
    network.fund("bob", "bank1", "0").await;
    network
}

fn bank_command(network: &ManualNetwork, bank_id: &str) -> Command {
    let mut command = Command::new(strife_bin());
    command
        .args(["bank", "--json", "--lease-ttl", "2", "--id", bank_id])
        .args(["--etcd", &network.etcd.endpoint, "--dir"])
        .arg(network.network.path());
    command
}

fn gateway_command(network: &ManualNetwork) -> Command {
    let mut command = Command::new(strife_bin());
    command
        .args([
            "gateway",
            "--json",
            "--lease-ttl",
            "2",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--etcd", &network.etcd.endpoint, "--dir"])
        .arg(network.network.path());
    command
}

async fn registered(network: &ManualNetwork, key: &str) -> Option<ServiceEntry> {
    let value = network.etcd.get(key).await?;
    serde_json::from_slice(&value).ok()
}

fn pays(network: &ManualNetwork, key: &str) -> bool {
    let (code, paid) = network.client(
        "alice",
        &["pay", "--to", "bob", "--amount", "1.00", "--key", key],
    );
    code == 0 && paid["payment"]["status"] == "COMMITTED"
}

#[tokio::test]
async fn a_second_bank_on_the_same_dir_is_refused_and_the_first_keeps_working() {
    let network = alice_and_bob().await;
    let first_pid = network.banks[0].process.child.id();
    let lock = network.network.layout().bank_lock("bank0");

    let (code, stderr) = run_expecting_exit(bank_command(&network, "bank0"), REFUSAL_LIMIT);
    assert!(
        code.is_some_and(|code| code != 0),
        "second bank exit {code:?}: {stderr}"
    );
    assert!(
        stderr.contains(&lock.display().to_string()),
        "names the lock file: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {first_pid}")),
        "names the holder: {stderr}"
    );

    let address = network.banks[0].address.to_string();
    let entry = registered(&network, &bank_key("bank0")).await;
    assert_eq!(entry.map(|entry| entry.address), Some(address.clone()));
    assert!(pays(&network, "after-second-bank"), "payments still work");

    // Even if something else overwrites or deletes the key, the running bank puts it back.
    let mut etcd = etcd_client::Client::connect([network.etcd.endpoint.as_str()], None)
        .await
        .unwrap();
    etcd.put(
        bank_key("bank0"),
        r#"{"id":"bank0","address":"127.0.0.1:9"}"#,
        None,
    )
    .await
    .unwrap();
    let restored = wait_until(Duration::from_secs(10), || async {
        registered(&network, &bank_key("bank0"))
            .await
            .is_some_and(|entry| entry.address == address)
    })
    .await;
    assert!(restored, "an overwritten registration was put back");
    etcd.delete(bank_key("bank0"), None).await.unwrap();
    let restored = wait_until(Duration::from_secs(10), || async {
        registered(&network, &bank_key("bank0"))
            .await
            .is_some_and(|entry| entry.address == address)
    })
    .await;
    assert!(restored, "a deleted registration was put back");
    assert!(
        network.banks[0]
            .process
            .log_text()
            .contains("putting it back"),
        "the takeover was logged"
    );
}

#[tokio::test]
async fn a_second_gateway_on_the_same_dir_is_refused_and_the_first_keeps_working() {
    let network = alice_and_bob().await;
    let first_pid = network.gateway.as_ref().unwrap().child.id();
    let lock = network.network.layout().gateway_lock();

    let (code, stderr) = run_expecting_exit(gateway_command(&network), REFUSAL_LIMIT);
    assert!(
        code.is_some_and(|code| code != 0),
        "second gateway exit {code:?}: {stderr}"
    );
    assert!(
        stderr.contains(&lock.display().to_string()),
        "names the lock file: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {first_pid}")),
        "names the holder: {stderr}"
    );

    let entry = registered(&network, GATEWAY_KEY).await;
    assert_eq!(
        entry.map(|entry| entry.address),
        Some(network.gateway_address.clone())
    );
    assert!(
        pays(&network, "after-second-gateway"),
        "payments still work"
    );
    assert_eq!(network.available_minor("alice"), 9_900);
}
