//! Only the gateway's certificate may call a bank: every other caller is refused, and none of
//! their calls changes anything.

use std::time::Duration;

use crate::support::{bank_client, BankStart, Network};
use strife_common::layout::KeyPairPaths;
use strife_common::net::connection::PeerRole;
use strife_common::net::tls::TlsMaterial;
use strife_pki::{CertificateAuthority, Validity};
use strife_proto::v1::{self as pb, bank_client::BankClient};
use tonic::transport::{Certificate, ClientTlsConfig};
use tonic::Code;

fn open_request(request_id: &str) -> pb::OpenAccountRequest {
    pb::OpenAccountRequest {
        request_id: request_id.into(),
        owner: "mallory".into(),
        holder_name: String::new(),
        currency: "USD".into(),
        opening_deposit_minor: 1_000_000,
    }
}

async fn account_count(network: &Network, address: &str) -> usize {
    let mut gateway = network.gateway_bank_client("bank0", address);
    gateway
        .list_accounts(pb::ListAccountsRequest {})
        .await
        .expect("the gateway itself is admitted")
        .into_inner()
        .accounts
        .len()
}

/// Writes a certificate from a CA that is not ours, claiming to be the gateway.
fn foreign_gateway_identity(dir: &std::path::Path) -> KeyPairPaths {
    let foreign_ca = CertificateAuthority::generate().unwrap();
    let issued = foreign_ca
        .issue(PeerRole::Gateway, "gateway", Validity::default_leaf())
        .unwrap();
    crate::support::write_identity(dir, "foreign-gateway", issued)
}

#[tokio::test]
async fn a_connection_without_a_client_certificate_is_refused() {
    let network = Network::setup(&["bank0"], &[]);
    let bank = BankStart::new(&network, "bank0").start();
    let address = bank.address.to_string();
    let ca = std::fs::read(network.layout().ca().cert).unwrap();
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let mut anonymous = BankClient::new(channel);
    let refused = anonymous.open_account(open_request("anon")).await;
    assert!(refused.is_err(), "no client certificate must be refused");
    assert_eq!(account_count(&network, &address).await, 0);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let network = Network::setup(&["bank0"], &[]);
    let bank = BankStart::new(&network, "bank0").start();
    let address = bank.address.to_string();
    let foreign = foreign_gateway_identity(network.path());
    let tls = TlsMaterial::load(&network.layout().ca().cert, &foreign).unwrap();
    let refused = bank_client(&tls, "bank0", &address)
        .open_account(open_request("foreign"))
        .await;
    assert!(refused.is_err(), "a foreign CA's 'gateway' must be refused");
    assert_eq!(account_count(&network, &address).await, 0);
}

#[tokio::test]
async fn users_admin_and_other_banks_are_permission_denied() {
    let network = Network::setup(&["bank0", "bank1"], &["alice"]);
    let bank = BankStart::new(&network, "bank0").start();
    let address = bank.address.to_string();
    let layout = network.layout();
    let impostors = [
        layout.user_identity("alice"),
        layout.user_identity("admin"),
        layout.bank_identity("bank1"),
        layout.bank_identity("bank0"),
    ];
    for identity in impostors {
        let mut client = bank_client(&network.tls(&identity), "bank0", &address);
        let status = client
            .open_account(open_request("impostor"))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{}",
            identity.cert.display()
        );
        let status = client
            .get_balance(pb::GetBalanceRequest {
                account_number: "bank0-00000001".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        let status = client
            .abort(pb::LegRequest {
                settle_minor: 0,
                payment_id: "p".into(),
                role: pb::LegRole::Debit as i32,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
    }
    assert_eq!(account_count(&network, &address).await, 0);
    let mut gateway = network.gateway_bank_client("bank0", &address);
    let no_tombstone = gateway
        .get_leg(pb::LegRequest {
            settle_minor: 0,
            payment_id: "p".into(),
            role: pb::LegRole::Debit as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(
        no_tombstone.code(),
        Code::NotFound,
        "the refused abort left nothing behind"
    );
}

#[tokio::test]
async fn a_certificate_name_with_line_breaks_cannot_forge_bank_log_lines() {
    let network = Network::setup(&["bank0"], &[]);
    let bank = BankStart::new(&network, "bank0").start();
    let address = bank.address.to_string();
    // Our own CA signs a user certificate whose CN carries a line break and a terminal escape
    // (a mis-issued certificate, or a CA operator's typo).
    let ca = CertificateAuthority::load(&network.layout().ca()).unwrap();
    let issued = ca
        .issue(
            PeerRole::User,
            "eve\nFORGED level=INFO gateway admitted\u{1b}[2J",
            Validity::default_leaf(),
        )
        .unwrap();
    let paths = crate::support::write_identity(network.path(), "eve", issued);
    let mut client = bank_client(&network.tls(&paths), "bank0", &address);
    let status = client.open_account(open_request("eve")).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let logged = crate::support::wait_until(Duration::from_secs(5), || async {
        bank.process
            .log_text()
            .contains("refused a non-gateway caller")
    })
    .await;
    assert!(logged, "the refusal is logged");
    let log = bank.process.log_text();
    assert!(
        log.lines().all(|line| !line.starts_with("FORGED")),
        "no forged line:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "no raw escape sequence");
    assert!(
        log.contains("eve\\nFORGED"),
        "the name is there, escaped:\n{log}"
    );
}
