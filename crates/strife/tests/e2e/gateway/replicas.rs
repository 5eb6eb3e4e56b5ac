//! Several gateway replicas: clients fail over between them with the same idempotency key,
//! and banks find every live replica in etcd for their decision queries.

use std::time::Duration;

use crate::support::network::ManualNetwork;
use crate::support::{free_port, wait_until};

#[tokio::test]
async fn a_client_given_several_gateways_pays_through_the_one_that_is_up() {
    let mut network = ManualNetwork::alice_and_bob().await;
    let live = network.gateway_address.clone();
    // Nothing listens here: connecting is refused, so nothing can have been sent there.
    let down = format!("127.0.0.1:{}", free_port());

    for (order, key) in [
        (format!("{down},{live}"), "failover-down-first"),
        (format!("{live},{down}"), "failover-live-first"),
    ] {
        network.gateway_address = order.clone();
        let (code, paid) = network.client(
            "alice",
            &["pay", "--to", "bob", "--amount", "1.00", "--key", key],
        );
        assert_eq!(code, 0, "{order}: {paid}");
        assert_eq!(paid["payment"]["status"], "COMMITTED", "{order}: {paid}");
    }
    network.gateway_address = format!("{down},{live}");
    let (code, replayed) = network.client(
        "alice",
        &[
            "pay",
            "--to",
            "bob",
            "--amount",
            "1.00",
            "--key",
            "failover-down-first",
        ],
    );
    assert_eq!(code, 0, "a retry through the list replays: {replayed}");

    network.gateway_address = live;
    assert_eq!(
        network.available_minor("alice"),
        9_800,
        "paid twice, not three times"
    );
    assert_eq!(network.available_minor("bob"), 200);

    // Every replica down: the payment is queued, as with one gateway.
    network.gateway_address = format!("{down},127.0.0.1:{}", free_port());
    let (code, queued) = network.client("alice", &["pay", "--to", "bob", "--amount", "1.00"]);
    assert_eq!(code, 75, "{queued}");
}

#[tokio::test]
async fn the_gateway_registers_its_replica_id_and_address_in_etcd() {
    let mut network = ManualNetwork::alice_and_bob().await;
    let replicas = network.etcd.gateway_entries().await;
    assert_eq!(replicas.len(), 1, "{replicas:?}");
    assert_eq!(replicas[0].address, network.gateway_address);
    assert_eq!(
        replicas[0].id, network.gateway_replica_id,
        "the ready line names the id it registered"
    );

    // Restarted on its (now fixed) port: the id is derived from host and port, and the old
    // entry left with the old process (its lease was revoked at shutdown).
    network.stop_gateway();
    network.start_gateway(&[]);
    let port = network
        .gateway_address
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let expected = network.gateway_replica_id.clone();
    let registered = wait_until(Duration::from_secs(10), || async {
        let replicas = network.etcd.gateway_entries().await;
        replicas.len() == 1 && replicas[0].id == expected
    })
    .await;
    let replicas = network.etcd.gateway_entries().await;
    assert!(registered, "{replicas:?}");
    assert!(
        replicas[0].id.ends_with(&format!("-{port}")),
        "derived from host and port: {}",
        replicas[0].id
    );
}
