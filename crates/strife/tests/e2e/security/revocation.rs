//! `strife setup --revoke` takes effect on running servers within seconds, without a restart:
//! the gateway refuses a revoked user, a bank refuses a revoked gateway certificate.

use std::process::Command;
use std::time::Duration;

use crate::support::network::ManualNetwork;
use crate::support::{strife_bin, wait_until};
use strife_proto::v1 as pb;
use tonic::Code;

fn revoke(network: &ManualNetwork, name: &str) {
    let output = Command::new(strife_bin())
        .args(["setup", "--revoke", name, "--dir"])
        .arg(network.network.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_by_running_servers() {
    let network = ManualNetwork::start(&["bank0"], &["alice", "bob"]).await;
    network.fund("alice", "bank0", "10.00").await;
    network.fund("bob", "bank0", "0").await;
    // Loaded before revocation, so the client still presents the old certificate.
    let mut alice = network.gateway_client("alice");
    let mut bob = network.gateway_client("bob");
    alice
        .get_balances(pb::GetBalancesRequest::default())
        .await
        .unwrap();

    revoke(&network, "alice");
    let refused = wait_until(Duration::from_secs(10), || {
        let mut alice = alice.clone();
        async move {
            matches!(
                alice.get_balances(pb::GetBalancesRequest::default()).await,
                Err(status) if status.code() == Code::Unauthenticated
            )
        }
    })
    .await;
    assert!(
        refused,
        "the gateway still admits alice's revoked certificate"
    );
    bob.get_balances(pb::GetBalancesRequest::default())
        .await
        .expect("bob is not revoked");

    // A bank refuses the gateway's certificate once it is revoked.
    let mut bank = network.bank(0);
    bank.list_accounts(pb::ListAccountsRequest {})
        .await
        .unwrap();
    revoke(&network, "gateway");
    let refused = wait_until(Duration::from_secs(10), || {
        let mut bank = bank.clone();
        async move {
            matches!(
                bank.list_accounts(pb::ListAccountsRequest {}).await,
                Err(status) if status.code() == Code::Unauthenticated
            )
        }
    })
    .await;
    assert!(
        refused,
        "the bank still admits the revoked gateway certificate"
    );
}
