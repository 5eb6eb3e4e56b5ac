//! etcd is locked down the way `strife dev`, the tests and the documented deployment run it:
//! TLS only, client certificates from etcd's own CA, auth on, and each process limited to its
//! own key. Strangers get nothing; a bank cannot touch another bank's routing or the gateway's.

use std::time::Duration;

use crate::support::network::ManualNetwork;
use crate::support::wait_until;
use strife_common::etcd::access::{bank_user, GATEWAY_USER};
use strife_common::etcd::discovery::ServiceEntry;
use strife_common::etcd::keys::{bank_key, gateway_key, GATEWAYS_PREFIX};

fn entry(id: &str) -> Vec<u8> {
    serde_json::to_vec(&ServiceEntry {
        id: id.into(),
        address: "127.0.0.1:9".into(),
    })
    .unwrap()
}

#[tokio::test]
async fn a_client_without_an_etcd_certificate_gets_nothing() {
    let network = ManualNetwork::start(&["bank0"], &["alice"]).await;
    let https = network.etcd.endpoint.clone();
    let plain = https.replace("https://", "http://");

    // Plain HTTP/2 to the TLS port: no answer at all.
    let plain_attempt = async {
        let mut client = etcd_client::Client::connect([plain.as_str()], None).await?;
        client.get(bank_key("bank0"), None).await
    };
    let refused = tokio::time::timeout(Duration::from_secs(5), plain_attempt).await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a plaintext client read etcd"
    );

    // TLS, trusting the etcd CA, but with no client certificate, or with a certificate from
    // the payment network's CA (a user's): the handshake or the request is refused.
    let layout = network.network.layout();
    let etcd_ca = std::fs::read(layout.etcd_ca().cert).unwrap();
    let alice_pem = (
        std::fs::read(layout.user_identity("alice").cert).unwrap(),
        std::fs::read(layout.user_identity("alice").key).unwrap(),
    );
    let configs = [
        etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(&etcd_ca)),
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(&etcd_ca))
            .identity(etcd_client::Identity::from_pem(&alice_pem.0, &alice_pem.1)),
    ];
    for tls in configs {
        let attempt = async {
            let options = etcd_client::ConnectOptions::new().with_tls(tls);
            let mut client = etcd_client::Client::connect([https.as_str()], Some(options)).await?;
            client.get(bank_key("bank0"), None).await?;
            client.put(bank_key("bank0"), entry("bank0"), None).await
        };
        let outcome = tokio::time::timeout(Duration::from_secs(5), attempt).await;
        assert!(
            !matches!(outcome, Ok(Ok(_))),
            "etcd served a client without an etcd certificate"
        );
    }
    // The real bank's registration is untouched and payments still route.
    let registered = network.etcd.get(&bank_key("bank0")).await.unwrap();
    let registered: ServiceEntry = serde_json::from_slice(&registered).unwrap();
    assert_eq!(registered.address, network.banks[0].address.to_string());
}

#[tokio::test]
async fn each_process_may_write_only_its_own_key() {
    let network = ManualNetwork::start(&["bank0", "bank1"], &[]).await;
    let etcd = &network.etcd;
    assert!(
        wait_until(Duration::from_secs(10), || async {
            !etcd.gateway_entries().await.is_empty() && etcd.get(&bank_key("bank1")).await.is_some()
        })
        .await,
        "processes did not register under the lock-down"
    );
    let before_bank1 = etcd.get(&bank_key("bank1")).await;
    let before_gateway = etcd.gateway_entries().await;

    let mut bank0 = etcd.access(&bank_user("bank0")).connect().await.unwrap();
    assert!(bank0
        .put(bank_key("bank1"), entry("bank1"), None)
        .await
        .is_err());
    assert!(bank0
        .put(gateway_key("rogue"), entry("rogue"), None)
        .await
        .is_err());
    assert!(bank0
        .put(bank_key("zz-shadow"), entry("bank0"), None)
        .await
        .is_err());
    assert!(bank0.delete(bank_key("bank1"), None).await.is_err());
    // What it may do: read the gateway replicas' addresses (for decision queries).
    assert!(bank0
        .get(
            GATEWAYS_PREFIX,
            Some(etcd_client::GetOptions::new().with_prefix())
        )
        .await
        .is_ok());

    let mut gateway = etcd.access(GATEWAY_USER).connect().await.unwrap();
    assert!(gateway
        .put(bank_key("bank0"), entry("bank0"), None)
        .await
        .is_err());
    assert!(gateway.delete(bank_key("bank0"), None).await.is_err());
    // What it may do: read the banks.
    let banks = gateway
        .get(
            bank_key(""),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert_eq!(banks.kvs().len(), 2);

    assert_eq!(etcd.get(&bank_key("bank1")).await, before_bank1);
    assert_eq!(etcd.gateway_entries().await, before_gateway);
    assert!(etcd.get(&gateway_key("rogue")).await.is_none());
    assert!(etcd.get(&bank_key("zz-shadow")).await.is_none());
}
