//! An expired certificate from our own CA is refused by every server, and a process refuses
//! to start with an expired certificate of its own.

use std::process::Command;
use std::time::Duration;

use crate::support::network::{Credentials, ManualNetwork};
use crate::support::{bank_client, strife_bin};
use strife_common::layout::KeyPairPaths;
use strife_common::net::connection::PeerRole;
use strife_common::net::tls::{ExpectedPeer, TlsMaterial};
use strife_pki::{CertificateAuthority, Validity};
use strife_proto::v1 as pb;
use time::OffsetDateTime;

/// Issues, from the network's own CA, a certificate that expired yesterday.
fn expired(network: &ManualNetwork, role: PeerRole, name: &str) -> KeyPairPaths {
    let layout = network.network.layout();
    let ca = CertificateAuthority::load(&layout.ca()).unwrap();
    let now = OffsetDateTime::now_utc();
    let validity = Validity {
        not_before: now - time::Duration::days(30),
        not_after: now - time::Duration::days(1),
    };
    let issued = ca.issue(role, name, validity).unwrap();
    let paths =
        crate::support::write_identity(network.network.path(), &format!("expired-{name}"), issued);
    paths
}

/// Loads TLS material without the start-up expiry check (a client that would skip it).
fn material(network: &ManualNetwork, paths: &KeyPairPaths) -> TlsMaterial {
    TlsMaterial::load_unchecked(&network.network.layout().ca().cert, paths).unwrap()
}

#[tokio::test]
async fn expired_certificates_are_refused_by_gateway_and_banks() {
    let network = ManualNetwork::start(&["bank0"], &["alice"]).await;
    network.fund("alice", "bank0", "10.00").await;

    let gateway_tls = material(&network, &expired(&network, PeerRole::Gateway, "gateway"));
    let mut bank = bank_client(
        &gateway_tls,
        &network.banks[0].id,
        &network.banks[0].address.to_string(),
    );
    assert!(
        bank.list_accounts(pb::ListAccountsRequest {})
            .await
            .is_err(),
        "a bank must refuse an expired gateway certificate"
    );

    let alice_tls = material(&network, &expired(&network, PeerRole::User, "alice"));
    let channel = alice_tls
        .endpoint(
            &network.gateway_address,
            &ExpectedPeer::Gateway,
            Duration::from_secs(5),
        )
        .unwrap()
        .connect_lazy();
    let credentials =
        Credentials::new("alice", &crate::support::network::password_of("alice")).unwrap();
    let mut gateway = pb::gateway_client::GatewayClient::with_interceptor(channel, credentials);
    assert!(
        gateway
            .get_balances(pb::GetBalancesRequest::default())
            .await
            .is_err(),
        "the gateway must refuse an expired user certificate"
    );

    // The same calls with valid certificates work: the refusals were about expiry.
    network
        .bank(0)
        .list_accounts(pb::ListAccountsRequest {})
        .await
        .unwrap();
    network
        .gateway_client("alice")
        .get_balances(pb::GetBalancesRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_bank_refuses_to_start_with_an_expired_certificate() {
    let mut network = ManualNetwork::start(&["bank0"], &[]).await;
    // Only one bank0 may run on a data dir; this test restarts it with the expired pair.
    network.banks[0].process.kill();
    let paths = expired(&network, PeerRole::Bank, "bank0");
    let layout = network.network.layout();
    std::fs::copy(&paths.cert, layout.bank_identity("bank0").cert).unwrap();
    std::fs::copy(&paths.key, layout.bank_identity("bank0").key).unwrap();
    let output = Command::new(strife_bin())
        .args([
            "bank",
            "--id",
            "bank0",
            "--etcd",
            "http://127.0.0.1:1",
            "--dir",
        ])
        .arg(network.network.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("expired"), "{stderr}");
}
