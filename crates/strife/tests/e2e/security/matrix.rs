//! The security matrix over every RPC of both services (docs/SECURITY.md): each kind of bad
//! identity against each method, each kind of bad input against each method that takes it —
//! and after all of it, nothing changed.

use std::time::Duration;

use crate::support::network::{password_of, Credentials, ManualNetwork};
use strife_common::layout::KeyPairPaths;
use strife_common::net::connection::PeerRole;
use strife_common::net::tls::{ExpectedPeer, TlsMaterial};
use strife_pki::{CertificateAuthority, Validity};
use strife_proto::v1::{
    self as pb, bank_client::BankClient, coordinator_client::CoordinatorClient,
    gateway_client::GatewayClient,
};
use time::OffsetDateTime;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

type Gateway = GatewayClient<InterceptedService<Channel, Credentials>>;

const HUGE: usize = 1 << 20;

/// Calls every gateway method once with a plausible request; returns (method, outcome).
async fn every_gateway_rpc(
    client: &mut Gateway,
    text: &str,
) -> Vec<(&'static str, Result<(), Status>)> {
    let money = |amount_minor| {
        Some(pb::Money {
            amount_minor,
            currency: "USD".into(),
        })
    };
    vec![
        (
            "RegisterUser",
            client
                .register_user(pb::RegisterUserRequest {
                    username: text.into(),
                    password: "long-enough-pw".into(),
                })
                .await
                .map(drop),
        ),
        (
            "OpenAccount",
            client
                .open_account(pb::GatewayOpenAccountRequest {
                    username: text.into(),
                    bank_id: "bank0".into(),
                    currency: "USD".into(),
                    opening_deposit: money(1),
                    holder_name: String::new(),
                    idempotency_key: String::new(),
                })
                .await
                .map(drop),
        ),
        (
            "LinkAccount",
            client
                .link_account(pb::LinkAccountRequest {
                    bank_id: "bank0".into(),
                    account_number: text.into(),
                    holder_name: String::new(),
                })
                .await
                .map(drop),
        ),
        (
            "GetBalances",
            client
                .get_balances(pb::GetBalancesRequest {
                    username: text.into(),
                })
                .await
                .map(drop),
        ),
        (
            "Pay",
            client
                .pay(pb::PayRequest {
                    idempotency_key: text.into(),
                    to_username: "bob".into(),
                    amount: money(1),
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "ListHistory",
            client
                .list_history(pb::ListHistoryRequest {
                    page_size: 1,
                    page_token: text.into(),
                })
                .await
                .map(drop),
        ),
        (
            "GetPayment",
            client
                .get_payment(pb::GetPaymentRequest {
                    payment_id: text.into(),
                })
                .await
                .map(drop),
        ),
        (
            "GetPaymentByKey",
            client
                .get_payment_by_key(pb::GetPaymentByKeyRequest {
                    idempotency_key: text.into(),
                })
                .await
                .map(drop),
        ),
        (
            "Refund",
            client
                .refund(pb::RefundRequest {
                    payment_id: text.into(),
                    amount: money(1),
                    idempotency_key: text.into(),
                    reason: String::new(),
                    metadata: Default::default(),
                })
                .await
                .map(drop),
        ),
        (
            "ListPayments",
            client
                .list_payments(pb::ListPaymentsRequest {
                    counterparty: text.into(),
                    ..pb::ListPaymentsRequest::default()
                })
                .await
                .map(drop),
        ),
        (
            "ListRefunds",
            client
                .list_refunds(pb::ListRefundsRequest {
                    payment_id: text.into(),
                    page_size: 0,
                    page_token: String::new(),
                })
                .await
                .map(drop),
        ),
        (
            "Authorize",
            client
                .authorize(pb::AuthorizeRequest {
                    idempotency_key: text.into(),
                    to_username: text.into(),
                    amount: money(1),
                    expires_in_seconds: 60,
                    ..pb::AuthorizeRequest::default()
                })
                .await
                .map(drop),
        ),
        (
            "Capture",
            client
                .capture(pb::CaptureRequest {
                    amount: None,
                    payment_id: text.into(),
                })
                .await
                .map(drop),
        ),
        (
            "Void",
            client
                .void(pb::VoidRequest {
                    payment_id: text.into(),
                })
                .await
                .map(drop),
        ),
        (
            "SetNetDebitCap",
            client
                .set_net_debit_cap(pb::SetNetDebitCapRequest {
                    bank_id: text.into(),
                    currency: "USD".into(),
                    cap_minor: Some(0),
                })
                .await
                .map(drop),
        ),
        (
            "ListSettlementWindows",
            client
                .list_settlement_windows(pb::ListSettlementWindowsRequest {
                    page_size: 1,
                    page_token: text.into(),
                })
                .await
                .map(drop),
        ),
        (
            "WatchPayments",
            client
                .watch_payments(pb::WatchPaymentsRequest { since: text.into() })
                .await
                .map(drop),
        ),
        (
            "CreateApiKey",
            client
                .create_api_key(pb::CreateApiKeyRequest {
                    owner: text.into(),
                    // A scope no key can hold: even the admin's own key (empty owner) is
                    // refused, so the matrix creates no key.
                    scopes: vec![text.into()],
                    description: text.into(),
                    expires_in_seconds: 0,
                })
                .await
                .map(drop),
        ),
        (
            "ListApiKeys",
            client
                .list_api_keys(pb::ListApiKeysRequest { owner: text.into() })
                .await
                .map(drop),
        ),
        (
            "RevokeApiKey",
            client
                .revoke_api_key(pb::RevokeApiKeyRequest {
                    key_id: text.into(),
                })
                .await
                .map(drop),
        ),
        // The settlement methods below take no text; the window id no window has makes every
        // call a refusal even for the admin, so the matrix never closes or settles a window.
        (
            "GetPositions",
            client
                .get_positions(pb::GetPositionsRequest {})
                .await
                .map(drop),
        ),
        (
            "CloseSettlementWindow",
            client
                .close_settlement_window(pb::CloseSettlementWindowRequest {
                    window_id: u64::MAX,
                })
                .await
                .map(drop),
        ),
        (
            "GetSettlementReport",
            client
                .get_settlement_report(pb::GetSettlementReportRequest {
                    window_id: u64::MAX,
                })
                .await
                .map(drop),
        ),
        (
            "MarkSettled",
            client
                .mark_settled(pb::MarkSettledRequest {
                    window_id: u64::MAX,
                })
                .await
                .map(drop),
        ),
    ]
}

/// Gateway methods whose requests carry no text: the oversized-string rows skip them.
const WITHOUT_TEXT: &[&str] = &[
    "GetPositions",
    "CloseSettlementWindow",
    "GetSettlementReport",
    "MarkSettled",
];

/// Calls every bank method once; returns (method, outcome).
async fn every_bank_rpc(
    client: &mut BankClient<Channel>,
    text: &str,
) -> Vec<(&'static str, Result<(), Status>)> {
    let leg = || pb::LegRequest {
        settle_minor: 0,
        payment_id: text.into(),
        role: pb::LegRole::Debit as i32,
    };
    let prepare = || pb::PrepareRequest {
        payment_id: text.into(),
        role: pb::LegRole::Debit as i32,
        account_number: "bank0-00000001".into(),
        amount: Some(pb::Money {
            amount_minor: 1,
            currency: "USD".into(),
        }),
        decision_deadline_unix_ms: 0,
        owner: String::new(),
    };
    let decision = || pb::LegDecision {
        leg: Some(leg()),
        commit: false,
    };
    vec![
        (
            "OpenAccount",
            client
                .open_account(pb::OpenAccountRequest {
                    request_id: text.into(),
                    owner: "mallory".into(),
                    holder_name: String::new(),
                    currency: "USD".into(),
                    opening_deposit_minor: 1_000_000,
                })
                .await
                .map(drop),
        ),
        (
            "UpdateAccountDetails",
            client
                .update_account_details(pb::UpdateAccountDetailsRequest {
                    account_number: text.into(),
                    holder_name: "x".into(),
                })
                .await
                .map(drop),
        ),
        (
            "GetBalance",
            client
                .get_balance(pb::GetBalanceRequest {
                    account_number: text.into(),
                })
                .await
                .map(drop),
        ),
        ("Prepare", client.prepare(prepare()).await.map(drop)),
        ("Commit", client.commit(leg()).await.map(drop)),
        ("Abort", client.abort(leg()).await.map(drop)),
        ("GetLeg", client.get_leg(leg()).await.map(drop)),
        (
            "ListJournal",
            client
                .list_journal(pb::ListJournalRequest {
                    account_number: text.into(),
                    after_seq: 0,
                    limit: 1,
                })
                .await
                .map(drop),
        ),
        (
            "ListAccounts",
            client
                .list_accounts(pb::ListAccountsRequest {})
                .await
                .map(drop),
        ),
        (
            "PrepareBatch",
            client
                .prepare_batch(pb::PrepareBatchRequest {
                    prepares: vec![prepare()],
                })
                .await
                .map(drop),
        ),
        (
            "FinishBatch",
            client
                .finish_batch(pb::FinishBatchRequest {
                    decisions: vec![decision()],
                })
                .await
                .map(drop),
        ),
        (
            "LegBatch",
            client
                .leg_batch(pb::LegBatchRequest {
                    prepares: vec![prepare()],
                    decisions: vec![decision()],
                })
                .await
                .map(drop),
        ),
    ]
}

fn write_pair(
    network: &ManualNetwork,
    name: &str,
    issued: strife_pki::IssuedCertificate,
) -> KeyPairPaths {
    let paths =
        crate::support::write_identity(network.network.path(), &format!("matrix-{name}"), issued);
    paths
}

/// The identities that must get nowhere, as (label, channel to `address`).
fn bad_channels(
    network: &ManualNetwork,
    role: PeerRole,
    name: &str,
    address: &str,
    target: &ExpectedPeer,
) -> Vec<(&'static str, Channel)> {
    let layout = network.network.layout();
    let ca_pem = std::fs::read(layout.ca().cert).unwrap();
    let no_certificate = Endpoint::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let foreign = CertificateAuthority::generate()
        .unwrap()
        .issue(role, name, Validity::default_leaf())
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let expired_validity = Validity {
        not_before: now - time::Duration::days(30),
        not_after: now - time::Duration::days(1),
    };
    let expired = CertificateAuthority::load(&layout.ca())
        .unwrap()
        .issue(role, name, expired_validity)
        .unwrap();
    let channel = |paths: KeyPairPaths| {
        let tls = TlsMaterial::load_unchecked(&layout.ca().cert, &paths).unwrap();
        tls.endpoint(address, target, Duration::from_secs(5))
            .unwrap()
            .connect_lazy()
    };
    vec![
        ("no client certificate", no_certificate),
        (
            "certificate from a foreign CA",
            channel(write_pair(network, &format!("foreign-{name}"), foreign)),
        ),
        (
            "expired certificate",
            channel(write_pair(network, &format!("expired-{name}"), expired)),
        ),
    ]
}

async fn snapshot(network: &ManualNetwork) -> (Vec<(String, i64, i64)>, usize, usize) {
    let listed = network
        .bank(0)
        .list_accounts(pb::ListAccountsRequest {})
        .await
        .unwrap()
        .into_inner();
    let accounts = listed
        .accounts
        .iter()
        .map(|account| {
            (
                account.owner.clone(),
                account.balance_minor,
                account.held_minor,
            )
        })
        .collect();
    let history = network
        .gateway_client("alice")
        .list_history(pb::ListHistoryRequest::default())
        .await
        .unwrap()
        .into_inner()
        .payments
        .len();
    (accounts, listed.prepared_legs.len(), history)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_every_bad_identity_and_bad_input_and_nothing_changes() {
    let network = ManualNetwork::start(&["bank0", "bank1"], &["alice", "bob", "carol"]).await;
    network.fund("alice", "bank0", "100.00").await;
    network.fund("bob", "bank0", "0").await;
    // carol takes the wrong-password rows (which lock her name); alice must stay usable.
    network.fund("carol", "bank0", "0").await;
    let before = snapshot(&network).await;
    let gateway_address = network.gateway_address.clone();
    let bank_address = network.banks[0].address.to_string();
    let mut rows = 0;

    // Gateway: identities that fail at TLS.
    for (label, channel) in bad_channels(
        &network,
        PeerRole::User,
        "alice",
        &gateway_address,
        &ExpectedPeer::Gateway,
    ) {
        let mut client = GatewayClient::with_interceptor(
            channel,
            Credentials::new("alice", &password_of("alice")).unwrap(),
        );
        for (method, outcome) in every_gateway_rpc(&mut client, "matrix").await {
            assert!(
                outcome.is_err(),
                "gateway {method} with {label} must be refused"
            );
            rows += 1;
        }
    }
    // Gateway: identities that fail authentication.
    let unauthenticated = [
        (
            "certificate CN ≠ user name",
            network.gateway_client_as("alice", "bob", &password_of("bob")),
        ),
        (
            "wrong password",
            network.gateway_client_as("carol", "carol", "not-carols-password"),
        ),
        (
            "unknown user",
            network.gateway_client_as("alice", "mallory", "whatever-password"),
        ),
        ("bank certificate with a user's password", {
            let tls = network
                .network
                .tls(&network.network.layout().bank_identity("bank0"));
            let channel = tls
                .endpoint(
                    &gateway_address,
                    &ExpectedPeer::Gateway,
                    Duration::from_secs(5),
                )
                .unwrap()
                .connect_lazy();
            GatewayClient::with_interceptor(
                channel,
                Credentials::new("alice", &password_of("alice")).unwrap(),
            )
        }),
    ];
    for (label, mut client) in unauthenticated {
        for (index, (method, outcome)) in every_gateway_rpc(&mut client, "matrix")
            .await
            .into_iter()
            .enumerate()
        {
            let status = outcome.expect_err(label);
            let expected = if label.starts_with("bank") {
                Code::PermissionDenied
            } else if label == "wrong password" && index >= 5 {
                // Five wrong passwords (the default threshold) locked carol's name.
                Code::ResourceExhausted
            } else {
                Code::Unauthenticated
            };
            assert_eq!(status.code(), expected, "gateway {method} with {label}");
            rows += 1;
        }
    }
    // Gateway: a client calling the admin methods.
    let mut alice = network.gateway_client("alice");
    let register = pb::RegisterUserRequest {
        username: "mallory".into(),
        password: "long-enough-pw".into(),
    };
    assert_eq!(
        alice.register_user(register).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    let open = pb::GatewayOpenAccountRequest {
        username: "alice".into(),
        bank_id: "bank0".into(),
        currency: "USD".into(),
        opening_deposit: Some(pb::Money {
            amount_minor: 1_000_000,
            currency: "USD".into(),
        }),
        holder_name: String::new(),
        idempotency_key: String::new(),
    };
    assert_eq!(
        alice.open_account(open).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    rows += 2;
    // … and the settlement methods, which move no money but steer who may.
    let refusals = [
        alice
            .set_net_debit_cap(pb::SetNetDebitCapRequest {
                bank_id: "bank0".into(),
                currency: "USD".into(),
                cap_minor: Some(0),
            })
            .await
            .map(drop),
        alice
            .get_positions(pb::GetPositionsRequest {})
            .await
            .map(drop),
        alice
            .list_settlement_windows(pb::ListSettlementWindowsRequest::default())
            .await
            .map(drop),
        alice
            .close_settlement_window(pb::CloseSettlementWindowRequest::default())
            .await
            .map(drop),
        alice
            .get_settlement_report(pb::GetSettlementReportRequest { window_id: 1 })
            .await
            .map(drop),
        alice
            .mark_settled(pb::MarkSettledRequest { window_id: 1 })
            .await
            .map(drop),
    ];
    for refusal in refusals {
        assert_eq!(refusal.unwrap_err().code(), Code::PermissionDenied);
        rows += 1;
    }
    // Gateway: oversized (1 MiB) strings on every method, as the admin (who may call them all).
    let mut admin = network.gateway_client("admin");
    let huge = "x".repeat(HUGE);
    for (method, outcome) in every_gateway_rpc(&mut admin, &huge).await {
        if WITHOUT_TEXT.contains(&method) {
            continue;
        }
        let status = outcome.expect_err(method);
        assert!(
            matches!(status.code(), Code::ResourceExhausted),
            "gateway {method} with 1 MiB: {status:?}"
        );
        rows += 1;
    }
    // Gateway: empty and unknown strings where a name or id is expected.
    for (method, outcome) in every_gateway_rpc(&mut admin, "").await {
        // An empty `since` watches from now, and positions take no input: both answer.
        if ![
            "GetBalances",
            "ListHistory",
            "ListSettlementWindows",
            "WatchPayments",
            "GetPositions",
            "ListApiKeys",
            // Every filter empty: a search of everything.
            "ListPayments",
        ]
        .contains(&method)
        {
            let status = outcome.expect_err(method);
            assert!(
                matches!(status.code(), Code::InvalidArgument | Code::NotFound),
                "gateway {method} with an empty string: {status:?}"
            );
            rows += 1;
        }
    }

    // Banks: identities that fail at TLS, then every Strife identity that is not the gateway.
    for (label, channel) in bad_channels(
        &network,
        PeerRole::Gateway,
        "gateway",
        &bank_address,
        &ExpectedPeer::Bank(network.banks[0].id.clone()),
    ) {
        for (method, outcome) in
            every_bank_rpc(&mut BankClient::new(channel.clone()), "matrix").await
        {
            assert!(
                outcome.is_err(),
                "bank {method} with {label} must be refused"
            );
            rows += 1;
        }
    }
    let layout = network.network.layout();
    for identity in [
        layout.user_identity("alice"),
        layout.user_identity("admin"),
        layout.bank_identity("bank1"),
        layout.bank_identity("bank0"),
    ] {
        let mut client = crate::support::bank_client(
            &network.network.tls(&identity),
            &network.banks[0].id,
            &bank_address,
        );
        for (method, outcome) in every_bank_rpc(&mut client, "matrix").await {
            assert_eq!(
                outcome.unwrap_err().code(),
                Code::PermissionDenied,
                "bank {method} as {}",
                identity.cert.display()
            );
            rows += 1;
        }
    }
    // Banks: oversized strings on every method that takes one.
    let mut gateway_identity = network.bank(0);
    for (method, outcome) in every_bank_rpc(&mut gateway_identity, &huge).await {
        if method != "ListAccounts" {
            let status = outcome.expect_err(method);
            assert!(
                matches!(status.code(), Code::ResourceExhausted),
                "bank {method} with 1 MiB: {status:?}"
            );
            rows += 1;
        }
    }

    // The coordinator's decision query: banks only, each in its own name.
    let method = "GetDecision";
    let decision_query = |bank_id: &str| pb::GetDecisionRequest {
        payment_id: "matrix".into(),
        bank_id: bank_id.into(),
    };
    let coordinator_channel = |identity: &KeyPairPaths| {
        network
            .network
            .tls(identity)
            .endpoint(
                &gateway_address,
                &ExpectedPeer::Gateway,
                Duration::from_secs(5),
            )
            .unwrap()
            .connect_lazy()
    };
    for user in ["alice", "admin"] {
        let password = if user == "admin" {
            network.password("admin")
        } else {
            password_of(user)
        };
        let mut coordinator = CoordinatorClient::with_interceptor(
            coordinator_channel(&layout.user_identity(user)),
            Credentials::new(user, &password).unwrap(),
        );
        let status = coordinator
            .get_decision(decision_query("bank0"))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "GetDecision as {user}"
        );
        rows += 1;
    }
    let mut bank1 = CoordinatorClient::new(coordinator_channel(&layout.bank_identity("bank1")));
    let status = bank1
        .get_decision(decision_query("bank0"))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{method} asked by bank1 in bank0's name"
    );
    rows += 1;

    assert_eq!(
        snapshot(&network).await,
        before,
        "none of the {rows} refused calls changed anything"
    );
    eprintln!("security matrix: {rows} refused calls checked");
}
