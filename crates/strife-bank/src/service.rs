//! The `strife.v1.Bank` gRPC service. Each handler validates its request (bad input is
//! `INVALID_ARGUMENT` and touches nothing), then runs one store operation on the blocking
//! pool, so an fsync never stalls the async runtime.

use std::sync::Arc;

use strife_common::money;
use strife_common::Failure;
use strife_proto::v1::{self as pb, bank_server::Bank};
use tonic::{Request, Response, Status};

use crate::gateway_only::caller_of;
use crate::participant::{Leg, LegState, PrepareIntent, Role};
use crate::store::{AccountRecord, JournalRow, NewAccount, Store};

use strife_common::limits::{
    validate_id, validate_request_id, BANK_BATCH_ITEMS, DEFAULT_DECISION_WINDOW, MAX_JOURNAL_PAGE,
    MAX_PREPARED_LISTED, MAX_TEXT_BYTES,
};

fn check_batch_size(field: &str, items: usize) -> Result<(), Failure> {
    if items > BANK_BATCH_ITEMS {
        return Err(Failure::invalid_field(
            field,
            format!("{field} carries at most {BANK_BATCH_ITEMS} items"),
        ));
    }
    Ok(())
}

/// A failure as a batch item carries it: exactly what the single call would have returned.
fn item_error(failure: Failure) -> pb::ItemError {
    let status = Status::from(failure);
    pb::ItemError {
        code: status.code() as i32,
        message: status.message().to_owned(),
        reason_code: strife_common::failure::reason_of(&status).unwrap_or_default(),
    }
}

/// One batch item's outcome as its result carries it: the answer, or the error.
fn item_outcome<T>(outcome: Result<T, Failure>) -> (Option<T>, Option<pb::ItemError>) {
    match outcome {
        Ok(answer) => (Some(answer), None),
        Err(failure) => (None, Some(item_error(failure))),
    }
}

/// The bank's gRPC service over its store.
#[derive(Clone)]
pub struct BankService {
    store: Arc<Store>,
}

impl BankService {
    pub fn new(store: Arc<Store>) -> Self {
        BankService { store }
    }

    async fn prepare_one(
        &self,
        body: &pb::PrepareRequest,
        actor: &str,
    ) -> Result<pb::PrepareResponse, Failure> {
        let (role, intent) = validate_prepare(body)?;
        let leg = self
            .store
            .prepare(&body.payment_id, role, &intent, actor)
            .await?;
        let reason = leg.reason.clone();
        Ok(pb::PrepareResponse {
            vote_yes: leg.state != LegState::Aborted,
            state: state_to_proto(leg.state) as i32,
            reason_code: reason
                .as_ref()
                .map(|reason| reason.code.clone())
                .unwrap_or_default(),
            reason: reason.map(|reason| reason.message).unwrap_or_default(),
        })
    }

    /// Every prepare of a batch, all at once so their writes share one group commit (one
    /// fsync); each answered as its single call would have been, in order.
    async fn prepare_all(
        &self,
        prepares: &[pb::PrepareRequest],
        actor: &str,
    ) -> Vec<pb::PrepareBatchResult> {
        futures::future::join_all(prepares.iter().map(|item| self.prepare_one(item, actor)))
            .await
            .into_iter()
            .map(|outcome| {
                let (response, error) = item_outcome(outcome);
                pb::PrepareBatchResult { response, error }
            })
            .collect()
    }

    /// Every phase-2 decision of a batch, like [`BankService::prepare_all`].
    async fn finish_all(
        &self,
        decisions: &[pb::LegDecision],
        actor: &str,
    ) -> Vec<pb::FinishBatchResult> {
        futures::future::join_all(decisions.iter().map(|decision| async {
            let leg = decision
                .leg
                .as_ref()
                .ok_or_else(|| Failure::invalid_field("leg", "leg is required"))?;
            self.finish_one(leg, decision.commit, actor).await
        }))
        .await
        .into_iter()
        .map(|outcome| {
            let (status, error) = item_outcome(outcome);
            pb::FinishBatchResult { status, error }
        })
        .collect()
    }

    /// Phase 2 for one leg: commit (`commit = true`) or abort.
    async fn finish_one(
        &self,
        request: &pb::LegRequest,
        commit: bool,
        actor: &str,
    ) -> Result<pb::LegStatus, Failure> {
        let (payment_id, role) = leg_request(request)?;
        let leg = if commit {
            let settle_minor = request.settle_minor;
            let leg = self
                .store
                .commit(&payment_id, role, settle_minor, actor)
                .await;
            if let Err(failure @ Failure::FailedPrecondition { .. }) = &leg {
                tracing::error!(%payment_id, ?role, %failure, "commit refused");
            }
            leg?
        } else {
            self.store.abort(&payment_id, role, actor).await?
        };
        Ok(leg_to_proto(&payment_id, &leg))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, Failure> + Send + 'static,
    ) -> Result<T, Status> {
        strife_common::runtime::on_blocking_pool(&self.store, work)
            .await
            .map_err(Status::from)
    }
}

fn check_holder_name(value: &str) -> Result<(), Failure> {
    if value.len() > MAX_TEXT_BYTES || value.chars().any(char::is_control) {
        return Err(Failure::invalid_field(
            "holder_name",
            format!(
                "holder_name must be at most {MAX_TEXT_BYTES} bytes without control characters"
            ),
        ));
    }
    Ok(())
}

/// A currency code in request field `field`.
fn check_currency(field: &str, code: &str) -> Result<(), Failure> {
    if code.is_empty() {
        return Err(Failure::invalid_field(field, format!("{field} is empty")));
    }
    money::currency(code)
        .map(drop)
        .map_err(|error| Failure::invalid_field(field, error.to_string()))
}

fn role_of(role: i32) -> Result<Role, Failure> {
    match pb::LegRole::try_from(role) {
        Ok(pb::LegRole::Debit) => Ok(Role::Debit),
        Ok(pb::LegRole::Credit) => Ok(Role::Credit),
        _ => Err(Failure::invalid_field(
            "role",
            "role must be DEBIT or CREDIT",
        )),
    }
}

fn role_to_proto(role: Role) -> pb::LegRole {
    match role {
        Role::Debit => pb::LegRole::Debit,
        Role::Credit => pb::LegRole::Credit,
    }
}

fn state_to_proto(state: LegState) -> pb::LegState {
    match state {
        LegState::Prepared => pb::LegState::Prepared,
        LegState::Committed => pb::LegState::Committed,
        LegState::Aborted => pb::LegState::Aborted,
    }
}

/// A stored leg as the wire's `LegStatus`.
pub fn leg_to_proto(payment_id: &str, leg: &Leg) -> pb::LegStatus {
    let intent = leg.intent.as_ref();
    pb::LegStatus {
        payment_id: payment_id.to_owned(),
        role: role_to_proto(leg.role) as i32,
        state: state_to_proto(leg.state) as i32,
        account_number: intent
            .map(|intent| intent.account_number.clone())
            .unwrap_or_default(),
        amount: intent.map(|intent| pb::Money {
            amount_minor: intent.amount_minor,
            currency: intent.currency.clone(),
        }),
        reason_code: leg
            .reason
            .as_ref()
            .map(|reason| reason.code.clone())
            .unwrap_or_default(),
        reason: leg
            .reason
            .as_ref()
            .map(|reason| reason.message.clone())
            .unwrap_or_default(),
        decision_deadline_unix_ms: intent
            .map(|intent| intent.decision_deadline_unix_ms)
            .unwrap_or(0),
    }
}

fn account_to_proto(bank_id: &str, record: AccountRecord) -> pb::Account {
    pb::Account {
        available_minor: record.funds.available_minor().unwrap_or(0),
        account_number: record.account_number,
        owner: record.owner,
        holder_name: record.holder_name,
        currency: record.currency,
        balance_minor: record.funds.balance_minor,
        held_minor: record.funds.held_minor,
        bank_id: bank_id.to_owned(),
    }
}

fn journal_to_proto(row: JournalRow) -> pb::JournalEntry {
    pb::JournalEntry {
        seq: row.seq,
        account_number: row.account_number,
        kind: row.kind,
        delta_minor: row.delta_minor,
        balance_after_minor: row.balance_after_minor,
        payment_id: row.payment_id.unwrap_or_default(),
        actor: row.actor,
        at_unix_ms: row.at_unix_ms,
    }
}

fn leg_request(request: &pb::LegRequest) -> Result<(String, Role), Failure> {
    validate_id("payment_id", &request.payment_id)?;
    Ok((request.payment_id.clone(), role_of(request.role)?))
}

/// Checks a `Prepare` request on its own (no storage). Public so the fuzz targets exercise
/// exactly what the handler runs.
pub fn validate_prepare(request: &pb::PrepareRequest) -> Result<(Role, PrepareIntent), Failure> {
    validate_id("payment_id", &request.payment_id)?;
    let role = role_of(request.role)?;
    Ok((role, prepare_intent(request)?))
}

fn prepare_intent(request: &pb::PrepareRequest) -> Result<PrepareIntent, Failure> {
    validate_id("account_number", &request.account_number)?;
    let amount = request
        .amount
        .as_ref()
        .ok_or_else(|| Failure::invalid_field("amount", "amount is required"))?;
    check_currency("amount.currency", &amount.currency)?;
    if amount.amount_minor <= 0 {
        return Err(Failure::invalid_field(
            "amount.amount_minor",
            "amount.amount_minor must be greater than zero",
        ));
    }
    Ok(PrepareIntent {
        account_number: request.account_number.clone(),
        amount_minor: amount.amount_minor,
        currency: amount.currency.clone(),
        decision_deadline_unix_ms: if request.decision_deadline_unix_ms > 0 {
            request.decision_deadline_unix_ms
        } else {
            strife_common::time::now_unix_ms().saturating_add(
                i64::try_from(DEFAULT_DECISION_WINDOW.as_millis()).unwrap_or(i64::MAX),
            )
        },
        owner: request.owner.clone(),
    })
}

#[tonic::async_trait]
impl Bank for BankService {
    async fn open_account(
        &self,
        request: Request<pb::OpenAccountRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let actor = caller_of(&request);
        let body = request.into_inner();
        validate_request_id("request_id", &body.request_id)?;
        strife_common::layout::validate_name("user", &body.owner)
            .map_err(|problem| Failure::invalid_field("owner", problem))?;
        check_holder_name(&body.holder_name)?;
        check_currency("currency", &body.currency)?;
        if body.opening_deposit_minor < 0 {
            return Err(Failure::invalid_field(
                "opening_deposit_minor",
                "opening_deposit_minor must not be negative",
            )
            .into());
        }
        let new = NewAccount {
            request_id: body.request_id,
            owner: body.owner,
            holder_name: body.holder_name,
            currency: body.currency,
            opening_deposit_minor: body.opening_deposit_minor,
        };
        let record = self.store.open_account(&new, &actor).await?;
        // The owner name comes off the wire; escaped so it cannot break the log line.
        tracing::info!(account = %record.account_number, owner = %record.owner.escape_debug(), "account opened");
        Ok(Response::new(account_to_proto(
            self.store.bank_id(),
            record,
        )))
    }

    async fn update_account_details(
        &self,
        request: Request<pb::UpdateAccountDetailsRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let body = request.into_inner();
        validate_id("account_number", &body.account_number)?;
        check_holder_name(&body.holder_name)?;
        let record = self
            .store
            .update_holder(&body.account_number, &body.holder_name)
            .await?;
        Ok(Response::new(account_to_proto(
            self.store.bank_id(),
            record,
        )))
    }

    async fn get_balance(
        &self,
        request: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::Account>, Status> {
        let body = request.into_inner();
        validate_id("account_number", &body.account_number)?;
        let record = self
            .blocking(move |store| store.account(&body.account_number))
            .await?;
        Ok(Response::new(account_to_proto(
            self.store.bank_id(),
            record,
        )))
    }

    async fn prepare(
        &self,
        request: Request<pb::PrepareRequest>,
    ) -> Result<Response<pb::PrepareResponse>, Status> {
        let actor = caller_of(&request);
        let response = self.prepare_one(request.get_ref(), &actor).await?;
        Ok(Response::new(response))
    }

    async fn commit(
        &self,
        request: Request<pb::LegRequest>,
    ) -> Result<Response<pb::LegStatus>, Status> {
        let actor = caller_of(&request);
        let status = self.finish_one(request.get_ref(), true, &actor).await?;
        Ok(Response::new(status))
    }

    async fn abort(
        &self,
        request: Request<pb::LegRequest>,
    ) -> Result<Response<pb::LegStatus>, Status> {
        let actor = caller_of(&request);
        let status = self.finish_one(request.get_ref(), false, &actor).await?;
        Ok(Response::new(status))
    }

    async fn prepare_batch(
        &self,
        request: Request<pb::PrepareBatchRequest>,
    ) -> Result<Response<pb::PrepareBatchResponse>, Status> {
        let actor = caller_of(&request);
        let prepares = &request.get_ref().prepares;
        check_batch_size("prepares", prepares.len())?;
        let results = self.prepare_all(prepares, &actor).await;
        Ok(Response::new(pb::PrepareBatchResponse { results }))
    }

    async fn finish_batch(
        &self,
        request: Request<pb::FinishBatchRequest>,
    ) -> Result<Response<pb::FinishBatchResponse>, Status> {
        let actor = caller_of(&request);
        let decisions = &request.get_ref().decisions;
        check_batch_size("decisions", decisions.len())?;
        let results = self.finish_all(decisions, &actor).await;
        Ok(Response::new(pb::FinishBatchResponse { results }))
    }

    async fn leg_batch(
        &self,
        request: Request<pb::LegBatchRequest>,
    ) -> Result<Response<pb::LegBatchResponse>, Status> {
        let actor = caller_of(&request);
        let body = request.get_ref();
        if body.prepares.len().saturating_add(body.decisions.len()) > BANK_BATCH_ITEMS {
            // Named after the list that goes past the limit once the prepares are counted.
            let field = if body.prepares.len() > BANK_BATCH_ITEMS {
                "prepares"
            } else {
                "decisions"
            };
            return Err(Failure::invalid_field(
                field,
                format!("prepares and decisions together carry at most {BANK_BATCH_ITEMS} items"),
            )
            .into());
        }
        // Both kinds at once: their writes share one group commit (one fsync).
        let (prepares, decisions) = futures::future::join(
            self.prepare_all(&body.prepares, &actor),
            self.finish_all(&body.decisions, &actor),
        )
        .await;
        Ok(Response::new(pb::LegBatchResponse {
            prepares,
            decisions,
        }))
    }

    async fn get_leg(
        &self,
        request: Request<pb::LegRequest>,
    ) -> Result<Response<pb::LegStatus>, Status> {
        let (payment_id, role) = leg_request(request.get_ref())?;
        let id = payment_id.clone();
        let leg = self
            .blocking(move |store| store.leg(&id, role))
            .await?
            .ok_or_else(|| Failure::NotFound(format!("no leg for payment {payment_id}")))?;
        Ok(Response::new(leg_to_proto(&payment_id, &leg)))
    }

    async fn list_journal(
        &self,
        request: Request<pb::ListJournalRequest>,
    ) -> Result<Response<pb::ListJournalResponse>, Status> {
        let body = request.into_inner();
        validate_id("account_number", &body.account_number)?;
        let limit = match body.limit {
            0 => MAX_JOURNAL_PAGE,
            asked => asked.min(MAX_JOURNAL_PAGE),
        };
        let rows = self
            .blocking(move |store| store.journal(&body.account_number, body.after_seq, limit))
            .await?;
        Ok(Response::new(pb::ListJournalResponse {
            entries: rows.into_iter().map(journal_to_proto).collect(),
        }))
    }

    async fn list_accounts(
        &self,
        _request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        // One read transaction, so the balances, the holds and the journal head agree.
        let snapshot = self
            .blocking(|store| store.snapshot(MAX_PREPARED_LISTED))
            .await?;
        let bank_id = self.store.bank_id().to_owned();
        Ok(Response::new(pb::ListAccountsResponse {
            accounts: snapshot
                .accounts
                .into_iter()
                .map(|record| account_to_proto(&bank_id, record))
                .collect(),
            prepared_legs: snapshot
                .prepared_legs
                .iter()
                .map(|stored| leg_to_proto(&stored.payment_id, &stored.leg))
                .collect(),
            journal_head_seq: Some(snapshot.journal_head_seq),
        }))
    }
}
