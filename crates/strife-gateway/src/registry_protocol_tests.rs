//! The batcher against a bank that does or does not serve `LegBatch` (an in-process fake bank
//! over plain HTTP/2 on loopback: what is under test is which RPCs the batcher sends and that
//! every caller gets its own item's answer, not TLS).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use strife_proto::v1::bank_server::{Bank, BankServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response};

use super::*;

/// A bank that records which RPC each batch came in, votes YES on a prepare unless its
/// payment id starts with "no-", and commits or aborts every decision. It serves `LegBatch`
/// only while `serves_leg_batch` is set (unset: a bank from before `LegBatch`).
#[derive(Clone, Default)]
struct FakeBank {
    serves_leg_batch: Arc<AtomicBool>,
    calls: Arc<Mutex<Vec<&'static str>>>,
}

impl FakeBank {
    fn record(&self, call: &'static str) {
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(call);
    }

    fn calls(&self) -> Vec<&'static str> {
        self.calls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn prepared(request: &pb::PrepareRequest) -> pb::PrepareBatchResult {
        if request.payment_id.starts_with("no-") {
            return pb::PrepareBatchResult {
                response: None,
                error: Some(pb::ItemError {
                    code: Code::FailedPrecondition as i32,
                    message: format!("{} refused", request.payment_id),
                    reason_code: String::new(),
                }),
            };
        }
        pb::PrepareBatchResult {
            response: Some(pb::PrepareResponse {
                vote_yes: true,
                state: pb::LegState::Prepared as i32,
                ..Default::default()
            }),
            error: None,
        }
    }

    fn finished(decision: &pb::LegDecision) -> pb::FinishBatchResult {
        let leg = decision.leg.clone().unwrap_or_default();
        let state = if decision.commit {
            pb::LegState::Committed
        } else {
            pb::LegState::Aborted
        };
        pb::FinishBatchResult {
            status: Some(pb::LegStatus {
                payment_id: leg.payment_id,
                role: leg.role,
                state: state as i32,
                ..Default::default()
            }),
            error: None,
        }
    }
}

type Answer<T> = Result<Response<T>, Status>;

fn not_here<T>() -> Answer<T> {
    Err(Status::unimplemented("not part of this fake"))
}

#[tonic::async_trait]
impl Bank for FakeBank {
    async fn open_account(&self, _: Request<pb::OpenAccountRequest>) -> Answer<pb::Account> {
        not_here()
    }
    async fn update_account_details(
        &self,
        _: Request<pb::UpdateAccountDetailsRequest>,
    ) -> Answer<pb::Account> {
        not_here()
    }
    async fn get_balance(&self, _: Request<pb::GetBalanceRequest>) -> Answer<pb::Account> {
        not_here()
    }
    async fn prepare(&self, _: Request<pb::PrepareRequest>) -> Answer<pb::PrepareResponse> {
        not_here()
    }
    async fn commit(&self, _: Request<pb::LegRequest>) -> Answer<pb::LegStatus> {
        not_here()
    }
    async fn abort(&self, _: Request<pb::LegRequest>) -> Answer<pb::LegStatus> {
        not_here()
    }
    async fn get_leg(&self, _: Request<pb::LegRequest>) -> Answer<pb::LegStatus> {
        not_here()
    }
    async fn list_journal(
        &self,
        _: Request<pb::ListJournalRequest>,
    ) -> Answer<pb::ListJournalResponse> {
        not_here()
    }
    async fn list_accounts(
        &self,
        _: Request<pb::ListAccountsRequest>,
    ) -> Answer<pb::ListAccountsResponse> {
        not_here()
    }

    async fn prepare_batch(
        &self,
        request: Request<pb::PrepareBatchRequest>,
    ) -> Answer<pb::PrepareBatchResponse> {
        self.record("PrepareBatch");
        let results = request.get_ref().prepares.iter().map(Self::prepared);
        Ok(Response::new(pb::PrepareBatchResponse {
            results: results.collect(),
        }))
    }

    async fn finish_batch(
        &self,
        request: Request<pb::FinishBatchRequest>,
    ) -> Answer<pb::FinishBatchResponse> {
        self.record("FinishBatch");
        let results = request.get_ref().decisions.iter().map(Self::finished);
        Ok(Response::new(pb::FinishBatchResponse {
            results: results.collect(),
        }))
    }

    async fn leg_batch(
        &self,
        request: Request<pb::LegBatchRequest>,
    ) -> Answer<pb::LegBatchResponse> {
        if !self.serves_leg_batch.load(Ordering::SeqCst) {
            // What tonic answers for a method the server does not have.
            return Err(Status::unimplemented(""));
        }
        self.record("LegBatch");
        let body = request.get_ref();
        Ok(Response::new(pb::LegBatchResponse {
            prepares: body.prepares.iter().map(Self::prepared).collect(),
            decisions: body.decisions.iter().map(Self::finished).collect(),
        }))
    }
}

/// Serves `bank` on a free loopback port; a channel to it.
async fn serve(bank: FakeBank) -> Channel {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(BankServer::new(bank))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy()
}

fn prepare(payment_id: &str) -> pb::PrepareRequest {
    pb::PrepareRequest {
        payment_id: payment_id.to_owned(),
        ..Default::default()
    }
}

fn decision(payment_id: &str, commit: bool) -> pb::LegDecision {
    pb::LegDecision {
        leg: Some(pb::LegRequest {
            settle_minor: 0,
            payment_id: payment_id.to_owned(),
            role: pb::LegRole::Debit as i32,
        }),
        commit,
    }
}

/// Sends one batch straight (as the batcher does) with the given protocol knowledge; each
/// caller's answer, in order: prepares first, then decisions.
async fn send_one(
    channel: &Channel,
    protocol: &mut Protocol,
    prepares: &[&str],
    decisions: &[(&str, bool)],
) -> Vec<Result<String, Code>> {
    let mut batch = Batch::default();
    let mut prepare_answers = Vec::new();
    for payment_id in prepares {
        let (reply, answer) = oneshot::channel();
        batch.push(LegWork::Prepare(prepare(payment_id), reply));
        prepare_answers.push(answer);
    }
    let mut decision_answers = Vec::new();
    for (payment_id, commit) in decisions {
        let (reply, answer) = oneshot::channel();
        batch.push(LegWork::Decide(decision(payment_id, *commit), reply));
        decision_answers.push(answer);
    }
    let mut client = BankClient::new(channel.clone());
    batch.send(&mut client, "bank9", protocol).await;
    let mut answers = Vec::new();
    for answer in prepare_answers {
        answers.push(match answer.await.unwrap() {
            Ok(response) => Ok(format!("vote_yes={}", response.vote_yes)),
            Err(status) => Err(status.code()),
        });
    }
    for answer in decision_answers {
        answers.push(match answer.await.unwrap() {
            Ok(status) => Ok(format!("{}:{}", status.payment_id, status.state)),
            Err(status) => Err(status.code()),
        });
    }
    answers
}

const COMMITTED: i32 = pb::LegState::Committed as i32;
const ABORTED: i32 = pb::LegState::Aborted as i32;

#[tokio::test]
async fn a_bank_that_serves_leg_batch_gets_one_call_per_batch() {
    let bank = FakeBank::default();
    bank.serves_leg_batch.store(true, Ordering::SeqCst);
    let channel = serve(bank.clone()).await;
    let mut protocol = Protocol::Unknown;
    let answers = send_one(&channel, &mut protocol, &["p1", "no-p2"], &[("d1", true)]).await;
    assert_eq!(
        answers,
        vec![
            Ok("vote_yes=true".to_owned()),
            Err(Code::FailedPrecondition),
            Ok(format!("d1:{COMMITTED}")),
        ]
    );
    assert_eq!(protocol, Protocol::LegBatch);
    assert_eq!(bank.calls(), vec!["LegBatch"]);
}

#[tokio::test]
async fn a_bank_from_before_leg_batch_gets_every_item_the_old_way_and_is_not_asked_again() {
    let bank = FakeBank::default();
    let channel = serve(bank.clone()).await;
    let mut protocol = Protocol::Unknown;

    // The first batch is asked as `LegBatch`, refused as unknown, and sent again the old way:
    // every caller gets its own item's answer, none a failure.
    let answers = send_one(&channel, &mut protocol, &["p1", "no-p2"], &[("d1", false)]).await;
    assert_eq!(
        answers,
        vec![
            Ok("vote_yes=true".to_owned()),
            Err(Code::FailedPrecondition),
            Ok(format!("d1:{ABORTED}")),
        ]
    );
    assert!(
        matches!(protocol, Protocol::Separate { .. }),
        "{protocol:?}"
    );
    let mut calls = bank.calls();
    calls.sort();
    assert_eq!(calls, vec!["FinishBatch", "PrepareBatch"]);

    // Later batches go the old way at once; a batch of one kind makes one call.
    let answers = send_one(&channel, &mut protocol, &["p3"], &[]).await;
    assert_eq!(answers, vec![Ok("vote_yes=true".to_owned())]);
    let answers = send_one(&channel, &mut protocol, &[], &[("d2", true)]).await;
    assert_eq!(answers, vec![Ok(format!("d2:{COMMITTED}"))]);
    assert_eq!(bank.calls().len(), 4, "{:?}", bank.calls());
    assert_eq!(bank.calls()[2..], ["PrepareBatch", "FinishBatch"]);
}

#[tokio::test]
async fn an_upgraded_bank_is_asked_again_after_the_recheck_and_a_downgraded_one_fails_transiently()
{
    let bank = FakeBank::default();
    let channel = serve(bank.clone()).await;

    // Upgraded in place: once the recheck interval has passed, `LegBatch` is asked again.
    bank.serves_leg_batch.store(true, Ordering::SeqCst);
    let mut protocol = Protocol::Separate {
        since: Instant::now() - PROTOCOL_RECHECK - Duration::from_secs(1),
    };
    let answers = send_one(&channel, &mut protocol, &["p1"], &[]).await;
    assert_eq!(answers, vec![Ok("vote_yes=true".to_owned())]);
    assert_eq!(protocol, Protocol::LegBatch);
    assert_eq!(bank.calls(), vec!["LegBatch"]);

    // Replaced by an older build: the batch in flight ran nowhere and fails as UNAVAILABLE
    // (callers retry); the next goes the old way.
    bank.serves_leg_batch.store(false, Ordering::SeqCst);
    let answers = send_one(&channel, &mut protocol, &["p2"], &[("d1", true)]).await;
    assert_eq!(
        answers,
        vec![Err(Code::Unavailable), Err(Code::Unavailable)]
    );
    assert!(
        matches!(protocol, Protocol::Separate { .. }),
        "{protocol:?}"
    );
    let answers = send_one(&channel, &mut protocol, &["p3"], &[]).await;
    assert_eq!(answers, vec![Ok("vote_yes=true".to_owned())]);
    assert_eq!(bank.calls(), vec!["LegBatch", "PrepareBatch"]);
}
