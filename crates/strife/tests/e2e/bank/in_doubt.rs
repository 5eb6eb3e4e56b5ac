//! In-doubt resolution, bank side: a leg PREPARED past its deadline makes the real bank
//! process ask the coordinator and apply the answer. The coordinator here is an in-process
//! stand-in speaking the real `strife.v1.Coordinator` protocol over mutual TLS with the
//! gateway's certificate (the real one comes with the gateway).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{wait_until, BankStart, Network};
use strife_common::net::connection::{peer_identity, PeerIdentity, PeerRole};
use strife_proto::v1::{self as pb, bank_client::BankClient, coordinator_server};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

/// Answers decision queries from a fixed table (default: still pending) and records who asked.
#[derive(Clone, Default)]
struct FakeCoordinator {
    decisions: Arc<Mutex<HashMap<String, pb::Decision>>>,
    asked: Arc<Mutex<Vec<(PeerIdentity, String, String)>>>,
}

impl FakeCoordinator {
    fn times_asked(&self, payment_id: &str) -> usize {
        self.asked
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, id)| id == payment_id)
            .count()
    }
}

#[tonic::async_trait]
impl coordinator_server::Coordinator for FakeCoordinator {
    async fn get_decision(
        &self,
        request: Request<pb::GetDecisionRequest>,
    ) -> Result<Response<pb::GetDecisionResponse>, Status> {
        let peer = peer_identity(&request).map_err(Status::from)?;
        let body = request.into_inner();
        self.asked
            .lock()
            .unwrap()
            .push((peer, body.bank_id.clone(), body.payment_id.clone()));
        let decision = self
            .decisions
            .lock()
            .unwrap()
            .get(&body.payment_id)
            .copied()
            .unwrap_or(pb::Decision::Pending);
        Ok(Response::new(pb::GetDecisionResponse {
            settle_minor: 0,
            payment_id: body.payment_id,
            decision: decision as i32,
        }))
    }
}

async fn start_coordinator(network: &Network, coordinator: FakeCoordinator) -> String {
    let tls = network.tls(&network.layout().gateway_identity());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = Server::builder()
        .tls_config(tls.server_config())
        .unwrap()
        .add_service(coordinator_server::CoordinatorServer::new(coordinator))
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    address
}

async fn open_account(client: &mut BankClient<Channel>, deposit_minor: i64) -> String {
    client
        .open_account(pb::OpenAccountRequest {
            request_id: format!("open-{deposit_minor}"),
            owner: "alice".into(),
            holder_name: String::new(),
            currency: "USD".into(),
            opening_deposit_minor: deposit_minor,
        })
        .await
        .unwrap()
        .into_inner()
        .account_number
}

async fn prepare_due_soon(
    client: &mut BankClient<Channel>,
    payment_id: &str,
    role: pb::LegRole,
    account: &str,
    amount_minor: i64,
) {
    let vote = client
        .prepare(pb::PrepareRequest {
            payment_id: payment_id.into(),
            role: role as i32,
            account_number: account.into(),
            amount: Some(pb::Money {
                amount_minor,
                currency: "USD".into(),
            }),
            decision_deadline_unix_ms: strife_common::time::now_unix_ms() + 200,
            owner: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(vote.vote_yes);
}

async fn leg_state(client: &mut BankClient<Channel>, payment_id: &str, role: pb::LegRole) -> i32 {
    client
        .get_leg(pb::LegRequest {
            settle_minor: 0,
            payment_id: payment_id.into(),
            role: role as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .state
}

#[tokio::test]
async fn overdue_legs_take_the_coordinators_decision_and_pending_ones_keep_their_hold() {
    let network = Network::setup(&["bank0"], &[]);
    let coordinator = FakeCoordinator::default();
    {
        let mut decisions = coordinator.decisions.lock().unwrap();
        decisions.insert("decided-commit".into(), pb::Decision::Commit);
        decisions.insert("decided-abort".into(), pb::Decision::Abort);
    }
    let coordinator_address = start_coordinator(&network, coordinator.clone()).await;
    let bank = BankStart::new(&network, "bank0")
        .arg("--coordinator")
        .arg(&coordinator_address)
        .arg("--resolve-interval-ms")
        .arg("50")
        .start();
    let mut client = network.gateway_bank_client(&bank.id, &bank.address.to_string());
    let payer = open_account(&mut client, 10_000).await;
    let payee = open_account(&mut client, 0).await;

    prepare_due_soon(
        &mut client,
        "decided-commit",
        pb::LegRole::Debit,
        &payer,
        1_000,
    )
    .await;
    prepare_due_soon(
        &mut client,
        "decided-commit",
        pb::LegRole::Credit,
        &payee,
        1_000,
    )
    .await;
    prepare_due_soon(
        &mut client,
        "decided-abort",
        pb::LegRole::Debit,
        &payer,
        2_000,
    )
    .await;
    prepare_due_soon(&mut client, "undecided", pb::LegRole::Debit, &payer, 3_000).await;

    let committed = pb::LegState::Committed as i32;
    let aborted = pb::LegState::Aborted as i32;
    let resolved = wait_until(Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            leg_state(&mut client, "decided-commit", pb::LegRole::Debit).await == committed
                && leg_state(&mut client, "decided-commit", pb::LegRole::Credit).await == committed
                && leg_state(&mut client, "decided-abort", pb::LegRole::Debit).await == aborted
        }
    })
    .await;
    assert!(
        resolved,
        "legs not resolved; log:\n{}",
        bank.process.log_text()
    );

    // The undecided leg was asked about repeatedly and still holds its money.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            coordinator.times_asked("undecided") >= 3
        })
        .await
    );
    assert_eq!(
        leg_state(&mut client, "undecided", pb::LegRole::Debit).await,
        pb::LegState::Prepared as i32
    );
    let payer_account = client
        .get_balance(pb::GetBalanceRequest {
            account_number: payer.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (payer_account.balance_minor, payer_account.held_minor),
        (9_000, 3_000)
    );
    let payee_account = client
        .get_balance(pb::GetBalanceRequest {
            account_number: payee,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(payee_account.balance_minor, 1_000);

    // The bank asked as itself, over mutual TLS.
    let asked = coordinator.asked.lock().unwrap().clone();
    assert!(asked
        .iter()
        .all(|(peer, bank_id, _)| peer.role == PeerRole::Bank
            && peer.name == "bank0"
            && bank_id == "bank0"));

    // Once decided, the leg is resolved on the next round.
    coordinator
        .decisions
        .lock()
        .unwrap()
        .insert("undecided".into(), pb::Decision::Abort);
    let released = wait_until(Duration::from_secs(10), || {
        let mut client = client.clone();
        async move { leg_state(&mut client, "undecided", pb::LegRole::Debit).await == aborted }
    })
    .await;
    assert!(released);
    let listed = client
        .list_accounts(pb::ListAccountsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.prepared_legs.is_empty());
}

#[tokio::test]
async fn while_the_coordinator_is_unreachable_the_hold_stays_visible() {
    let network = Network::setup(&["bank0"], &[]);
    let bank = BankStart::new(&network, "bank0")
        .arg("--coordinator")
        .arg("127.0.0.1:1")
        .arg("--resolve-interval-ms")
        .arg("50")
        .start();
    let mut client = network.gateway_bank_client(&bank.id, &bank.address.to_string());
    let payer = open_account(&mut client, 5_000).await;
    prepare_due_soon(&mut client, "orphan", pb::LegRole::Debit, &payer, 1_500).await;

    let tried = wait_until(Duration::from_secs(10), || async {
        bank.process
            .log_text()
            .matches("coordinator unreachable")
            .count()
            >= 2
    })
    .await;
    assert!(tried, "bank never asked; log:\n{}", bank.process.log_text());
    assert_eq!(
        leg_state(&mut client, "orphan", pb::LegRole::Debit).await,
        pb::LegState::Prepared as i32
    );
    let listed = client
        .list_accounts(pb::ListAccountsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.prepared_legs.len(), 1);
    assert_eq!(listed.prepared_legs[0].payment_id, "orphan");
    assert_eq!(listed.accounts[0].held_minor, 1_500);
}
