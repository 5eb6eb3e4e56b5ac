//! Payments and refunds (the one path through [`Service::run_attempt`]), a user's history and
//! look-ups by id or key, and the payment event stream.

use std::time::{Duration, Instant};

use strife_common::failure::PaymentRefusal;
use strife_common::limits::{validate_id, MAX_TEXT_BYTES};
use strife_common::reason;
use strife_common::Failure;
use strife_ledger::records::{Party, PaymentRecord, PaymentStatus};
use strife_ledger::settlement;
use strife_proto::v1 as pb;

use super::convert::payment_proto;
use super::cursor::CursorKind;
use super::events::EventStream;
use super::validate::{
    check_expires_in, check_metadata, check_money, check_text, metadata_of, pick_account,
    validate_pay,
};
use super::{Service, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use crate::request::Call;
use crate::roles::Role;

impl Service {
    pub async fn pay(
        &self,
        call: &Call,
        body: pb::PayRequest,
    ) -> Result<pb::Payment, PaymentRefusal> {
        self.authorize(call, "Pay")?;
        self.pay_or_hold(call, body, None).await
    }

    /// `Authorize`: a payment whose legs are held until a capture, a void or the expiry.
    pub async fn authorize_payment(
        &self,
        call: &Call,
        body: pb::AuthorizeRequest,
    ) -> Result<pb::Payment, PaymentRefusal> {
        self.authorize(call, "Authorize")?;
        let expires_in = check_expires_in(body.expires_in_seconds)?;
        let pay = pb::PayRequest {
            idempotency_key: body.idempotency_key,
            to_username: body.to_username,
            amount: body.amount,
            from_bank_id: body.from_bank_id,
            to_bank_id: body.to_bank_id,
            memo: body.memo,
            metadata: body.metadata,
        };
        self.pay_or_hold(call, pay, Some(expires_in)).await
    }

    /// `Capture`: moves an AUTHORIZED payment (payee or admin).
    pub async fn capture(
        &self,
        call: &Call,
        body: pb::CaptureRequest,
    ) -> Result<pb::Payment, PaymentRefusal> {
        self.authorize(call, "Capture")?;
        let asked = match body.amount.as_ref() {
            Some(amount) => Some(check_money("amount", Some(amount), false)?),
            None => None,
        };
        let open = self
            .open_authorization(call, &body.payment_id, Ending::Capture)
            .await?;
        let record = match open {
            Open::Authorized(record) => {
                let amount_minor = capture_amount(&record, asked.as_ref())?;
                call.log.set_amount(amount_minor.to_string());
                let capture = Some(amount_minor);
                self.coordinator.end_authorization(record, capture).await?
            }
            Open::Ended(record) => record,
        };
        call.log.set_payment(&record.payment_id, None);
        match record.status {
            PaymentStatus::Committed => Ok(payment_proto(&record)),
            _ => Err(ended_refusal(&record, Ending::Capture)),
        }
    }

    /// `Void`: releases an AUTHORIZED payment's holds (payer, payee or admin).
    pub async fn void(
        &self,
        call: &Call,
        body: pb::VoidRequest,
    ) -> Result<pb::Payment, PaymentRefusal> {
        self.authorize(call, "Void")?;
        let open = self
            .open_authorization(call, &body.payment_id, Ending::Void)
            .await?;
        let record = match open {
            Open::Authorized(record) => self.coordinator.end_authorization(record, None).await?,
            Open::Ended(record) => record,
        };
        call.log.set_payment(&record.payment_id, None);
        match record.status {
            PaymentStatus::Aborted if record.is_authorization() => Ok(payment_proto(&record)),
            _ => Err(ended_refusal(&record, Ending::Void)),
        }
    }

    /// The authorization a capture or void names, if the caller may end it that way: one the
    /// caller has no part in answers like one that does not exist; a party without the right
    /// (the payer capturing) is PERMISSION_DENIED. An authorization already ended comes back
    /// as `Ended`, so a retry is answered from what is stored.
    async fn open_authorization(
        &self,
        call: &Call,
        payment_id: &str,
        ending: Ending,
    ) -> Result<Open, Failure> {
        let caller = &call.caller;
        let record = self.visible_payment(call, payment_id).await?;
        let is_admin = caller.role == Role::Admin;
        let is_payee = record.to.username == caller.username;
        if ending == Ending::Capture && !(is_admin || is_payee) {
            return Err(Failure::PermissionDenied(format!(
                "only the payee of authorization {payment_id} ({}) or the admin may capture it",
                record.to.username
            )));
        }
        if !record.is_authorization() {
            return Err(Failure::precondition(
                reason::NOT_AUTHORIZED,
                format!("payment {payment_id} is a payment, not an authorization"),
            ));
        }
        Ok(match record.status {
            PaymentStatus::Authorized => Open::Authorized(record),
            PaymentStatus::Pending => {
                return Err(Failure::precondition(
                    reason::NOT_AUTHORIZED,
                    format!("authorization {payment_id} is still being authorized; retry shortly"),
                ))
            }
            PaymentStatus::Committed | PaymentStatus::Aborted => Open::Ended(record),
        })
    }

    /// Pay and Authorize: one path, `expires_in` set for an authorization.
    async fn pay_or_hold(
        &self,
        call: &Call,
        body: pb::PayRequest,
        expires_in: Option<Duration>,
    ) -> Result<pb::Payment, PaymentRefusal> {
        let caller = &call.caller;
        let log = &call.log;
        let amount = validate_pay(&caller.username, &body)?;
        log.set_amount(amount.to_string());
        // Independent reads, run together: one store round trip of latency instead of three
        // when the store is on another server.
        let (payee_user, payer_accounts, payee_accounts) = futures::try_join!(
            self.store.user(&body.to_username),
            self.store.accounts_of(&caller.username),
            self.store.accounts_of(&body.to_username),
        )?;
        if payee_user.is_none() {
            return Err(
                Failure::NotFound(format!("user {} does not exist", body.to_username)).into(),
            );
        }
        for bank_id in [&body.from_bank_id, &body.to_bank_id] {
            if !bank_id.is_empty() {
                self.check_bank_known(bank_id).await?;
            }
        }
        let currency = amount.currency.code;
        let from = pick_account(
            &payer_accounts,
            &caller.username,
            &body.from_bank_id,
            currency,
        )?;
        let to = pick_account(
            &payee_accounts,
            &body.to_username,
            &body.to_bank_id,
            currency,
        )?;
        let place = self.refusals.admit(&caller.username, Instant::now())?;
        // A bank that is not registered fails the request before anything is recorded, so the
        // same key simply works once the bank is back.
        self.registry.client(&from.bank_id)?;
        self.registry.client(&to.bank_id)?;

        let attempt = self.new_attempt(
            body.idempotency_key,
            Party {
                username: caller.username.clone(),
                bank_id: from.bank_id,
                account_number: from.account_number,
            },
            Party {
                username: body.to_username,
                bank_id: to.bank_id,
                account_number: to.account_number,
            },
            amount.amount_minor,
            currency,
            body.memo,
            metadata_of(body.metadata),
            None,
        );
        let attempt = match expires_in {
            None => attempt,
            Some(expires_in) => PaymentRecord {
                expires_unix_ms: Some(
                    attempt
                        .created_unix_ms
                        .saturating_add(i64::try_from(expires_in.as_millis()).unwrap_or(i64::MAX)),
                ),
                ..attempt
            },
        };
        self.run_attempt(&attempt, place, log).await
    }

    pub async fn refund(
        &self,
        call: &Call,
        body: pb::RefundRequest,
    ) -> Result<pb::Payment, PaymentRefusal> {
        self.authorize(call, "Refund")?;
        let caller = &call.caller;
        let log = &call.log;
        validate_id("payment_id", &body.payment_id)?;
        validate_id("idempotency_key", &body.idempotency_key)?;
        check_text("reason", &body.reason, MAX_TEXT_BYTES)?;
        check_metadata("metadata", &body.metadata)?;
        let asked = match body.amount.as_ref() {
            Some(amount) => Some(check_money("amount", Some(amount), false)?),
            None => None,
        };
        let original = self.visible_payment(call, &body.payment_id).await?;
        let is_admin = caller.role == Role::Admin;
        settlement::may_refund(&caller.username, is_admin, &original)?;
        if let Some(asked) = &asked {
            if asked.currency.code != original.currency {
                return Err(Failure::invalid_field(
                    "amount.currency",
                    format!(
                        "amount.currency must be the payment's currency, {}",
                        original.currency
                    ),
                )
                .into());
            }
            log.set_amount(asked.to_string());
        }
        let place = self.refusals.admit(&caller.username, Instant::now())?;
        self.registry.client(&original.to.bank_id)?;
        self.registry.client(&original.from.bank_id)?;
        // The payee pays the payer back, between the same two accounts. Amount 0 = the rest,
        // resolved by the store in the write that claims it.
        let attempt = self.new_attempt(
            body.idempotency_key,
            original.to.clone(),
            original.from.clone(),
            asked.map_or(0, |asked| asked.amount_minor),
            &original.currency,
            body.reason,
            metadata_of(body.metadata),
            Some(original.payment_id.clone()),
        );
        self.run_attempt(&attempt, place, log).await
    }

    pub async fn list_history(
        &self,
        call: &Call,
        body: pb::ListHistoryRequest,
    ) -> Result<pb::ListHistoryResponse, Failure> {
        self.authorize(call, "ListHistory")?;
        let username = &call.caller.username;
        let asked = self.page(
            call,
            CursorKind::HistoryPage,
            body.page_size,
            &body.page_token,
        )?;
        let page = self
            .store
            .history(username, asked.before_seq, asked.size)
            .await?;
        let next_page_token = self.next_page_token(call, &asked, &page);
        Ok(pb::ListHistoryResponse {
            payments: page.iter().map(payment_proto).collect(),
            next_page_token,
        })
    }

    /// `ListRefunds`: a payment's refunds, for its payer, its payee or the admin.
    pub async fn list_refunds(
        &self,
        call: &Call,
        body: pb::ListRefundsRequest,
    ) -> Result<pb::ListRefundsResponse, Failure> {
        self.authorize(call, "ListRefunds")?;
        let original = self.visible_payment(call, &body.payment_id).await?;
        let asked = self.page(
            call,
            CursorKind::RefundsPage,
            body.page_size,
            &body.page_token,
        )?;
        let page = self
            .store
            .refunds_of(&original.payment_id, asked.before_seq, asked.size)
            .await?;
        let next_page_token = self.next_page_token(call, &asked, &page);
        Ok(pb::ListRefundsResponse {
            refunds: page.iter().map(payment_proto).collect(),
            next_page_token,
        })
    }

    pub async fn get_payment(
        &self,
        call: &Call,
        body: pb::GetPaymentRequest,
    ) -> Result<pb::Payment, Failure> {
        self.authorize(call, "GetPayment")?;
        let record = self.visible_payment(call, &body.payment_id).await?;
        Ok(payment_proto(&record))
    }

    pub async fn get_payment_by_key(
        &self,
        call: &Call,
        body: pb::GetPaymentByKeyRequest,
    ) -> Result<pb::Payment, Failure> {
        self.authorize(call, "GetPaymentByKey")?;
        let caller = &call.caller;
        let key = body.idempotency_key;
        validate_id("idempotency_key", &key)?;
        // Keys are per user: only the caller's own keys are looked at, so another user's key
        // answers like an unused one.
        let record = self
            .store
            .payment_by_key(&caller.username, &key)
            .await?
            .ok_or_else(|| Failure::NotFound(format!("no payment with idempotency key {key:?}")))?;
        Ok(payment_proto(&record))
    }

    pub async fn watch_payments(
        &self,
        call: &Call,
        body: pb::WatchPaymentsRequest,
    ) -> Result<EventStream, Failure> {
        self.authorize(call, "WatchPayments")?;
        let caller = &call.caller;
        let since = body.since;
        let stream = self
            .events
            .watch(&caller.username, caller.role, &since)
            .await?;
        Ok(stream)
    }
}

impl Service {
    /// The payment `payment_id` if the caller paid or received it, or is the admin. Someone
    /// else's payment answers exactly like one that does not exist, so ids cannot be probed.
    async fn visible_payment(
        &self,
        call: &Call,
        payment_id: &str,
    ) -> Result<PaymentRecord, Failure> {
        validate_id("payment_id", payment_id)?;
        let caller = &call.caller;
        let not_found = || Failure::NotFound(format!("payment {payment_id} not found"));
        let record = self
            .store
            .payment(payment_id)
            .await?
            .ok_or_else(not_found)?;
        let involved =
            record.from.username == caller.username || record.to.username == caller.username;
        if !involved && caller.role != Role::Admin {
            return Err(not_found());
        }
        Ok(record)
    }

    /// The page a listing asks for: its size (default and bound applied) and where it starts
    /// (`page_token`, sealed to the caller: a log position would count other users' payments).
    pub(super) fn page(
        &self,
        call: &Call,
        kind: CursorKind,
        page_size: u32,
        page_token: &str,
    ) -> Result<PageAsked, Failure> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            asked => asked.min(MAX_PAGE_SIZE),
        };
        let before_seq = if page_token.is_empty() {
            i64::MAX
        } else {
            let owner = &call.caller.username;
            self.seal.open(kind, owner, page_token, "page_token")?
        };
        Ok(PageAsked {
            kind,
            size,
            before_seq,
        })
    }

    /// The token of the page after `page` (empty when `page` was the last).
    pub(super) fn next_page_token(
        &self,
        call: &Call,
        asked: &PageAsked,
        page: &[PaymentRecord],
    ) -> String {
        match page.last() {
            Some(last) if page.len() == asked.size as usize => {
                self.seal.seal(asked.kind, &call.caller.username, last.seq)
            }
            _ => String::new(),
        }
    }
}

/// A listing's page as asked for ([`Service::page`]).
pub(super) struct PageAsked {
    kind: CursorKind,
    pub(super) size: u32,
    pub(super) before_seq: i64,
}

/// How an authorization is to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Capture,
    Void,
}

/// An authorization a capture or void may act on, or one that has ended already.
enum Open {
    Authorized(PaymentRecord),
    Ended(PaymentRecord),
}

/// What a capture moves: `asked` (in the authorization's currency, at most its amount), or
/// all of it.
fn capture_amount(
    record: &PaymentRecord,
    asked: Option<&strife_common::money::Amount>,
) -> Result<i64, Failure> {
    let Some(asked) = asked else {
        return Ok(record.amount_minor);
    };
    if asked.currency.code != record.currency {
        return Err(Failure::invalid_field(
            "amount.currency",
            format!(
                "amount.currency must be the authorization's currency, {}",
                record.currency
            ),
        ));
    }
    if asked.amount_minor > record.amount_minor {
        return Err(Failure::invalid_field(
            "amount.amount_minor",
            format!(
                "amount.amount_minor {} is more than the authorized {}",
                asked.amount_minor, record.amount_minor
            ),
        ));
    }
    Ok(asked.amount_minor)
}

/// The refusal for a capture or void of an authorization that ended otherwise: captured
/// (a void comes too late), voided or expired (a capture comes too late).
fn ended_refusal(record: &PaymentRecord, ending: Ending) -> PaymentRefusal {
    let payment_id = &record.payment_id;
    let expired = record.reason_code.as_deref() == Some(reason::AUTHORIZATION_EXPIRED);
    let failure = match (record.status, ending) {
        (PaymentStatus::Aborted, Ending::Capture) if expired => Failure::precondition(
            reason::AUTHORIZATION_EXPIRED,
            format!("authorization {payment_id} expired before it was captured"),
        ),
        (PaymentStatus::Committed, Ending::Void) => Failure::precondition(
            reason::NOT_AUTHORIZED,
            format!("authorization {payment_id} was captured; refund it instead"),
        ),
        _ => Failure::precondition(
            reason::NOT_AUTHORIZED,
            format!(
                "authorization {payment_id} has ended ({})",
                record.reason_code.as_deref().unwrap_or("decided")
            ),
        ),
    };
    // The refusal's own code, not the payment's stored reason: a capture after a void is
    // `payment_not_authorized` whichever way the authorization ended.
    PaymentRefusal {
        failure,
        payment_id: Some(payment_id.clone()),
        reason_code: None,
    }
}
