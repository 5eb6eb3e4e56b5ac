//! The payer's and payee's resources: payments, refunds, balances, linking an account, and
//! payment events. Each handler reads its request, calls the one service method gRPC calls,
//! and answers its JSON; no rule is decided here.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use serde::Deserialize;
use strife_gateway::request::Call;
use strife_proto::v1 as pb;
use utoipa::IntoParams;

use crate::error::{json_response, ApiError};
use crate::extract::{Api, Authenticated, IdempotencyKey, JsonBody, OptionalJsonBody};
use crate::model::{
    AuthorizeBody, Balances, CaptureBody, EventPage, LinkAccountBody, LinkedAccount, PayBody,
    Payment, PaymentEvent, PaymentList, RefundBody,
};

/// The header that marks an answer replayed from an earlier request's key.
pub const REPLAYED_HEADER: &str = "Idempotent-Replayed";
/// The longest `GET /v1/events` waits for a first event (inside the connection's response
/// deadline, so a long poll is never cut off).
pub const MAX_EVENT_WAIT: Duration = Duration::from_secs(8);
/// How long a catch-up read (events already in the log) may take before the page is cut.
const CATCH_UP_WAIT: Duration = Duration::from_millis(250);
const MAX_EVENTS_PER_PAGE: u32 = 100;

/// A payment answer, marked when it replays an earlier request's.
fn payment_answer(call: &Call, payment: pb::Payment) -> Response {
    let mut response = json_response(StatusCode::OK, &Payment::from(payment));
    if call.log.replayed() {
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

/// Pay another user.
///
/// Idempotent per (caller, `Idempotency-Key`), in the same key space as gRPC's `Pay`: a retry
/// with the same key and body answers the recorded payment (`Idempotent-Replayed: true`); the
/// same key with another body is 422; a key whose payment is still deciding is 409.
#[utoipa::path(
    post,
    path = "/v1/payments",
    tag = "payments",
    request_body = PayBody,
    params(("Idempotency-Key" = String, Header, description = "Chosen by you, unique per payment (1–128 printable ASCII characters, no spaces); send the same key on every retry.", example = "order-1001", pattern = "^[!-~]{1,128}$")),
    responses(
        (status = 200, description = "The payment, committed (or the one this key recorded before).", body = Payment,
            headers(("Idempotent-Replayed" = String, description = "`true` when the answer is a replay of an earlier request with this key."))),
        (status = 404, description = "No such payee, account or bank.", body = crate::model::ErrorBody),
        (status = 409, description = "A payment under this key is still deciding; retry with the same key.", body = crate::model::ErrorBody),
        (status = 422, description = "Refused: insufficient funds, currency mismatch, cap exceeded, or the key was used for another payment.", body = crate::model::ErrorBody),
    ),
    security(("api_key" = ["payments:write"]))
)]
pub async fn pay(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<PayBody>,
) -> Result<Response, ApiError> {
    let request = pb::PayRequest {
        idempotency_key: key,
        to_username: body.to_username,
        amount: Some(body.amount.into()),
        from_bank_id: body.from_bank_id,
        to_bank_id: body.to_bank_id,
        memo: body.memo,
        metadata: body.metadata.into_iter().collect(),
    };
    let payment = api
        .service
        .pay(&call, request)
        .await
        .map_err(ApiError::keyed)?;
    Ok(payment_answer(&call, payment))
}

/// Refund a payment you received (admin: any), in full or in part.
///
/// A refund is a new payment from the payee back to the payer, linked both ways.
/// Idempotent per (original payee, `Idempotency-Key`).
#[utoipa::path(
    post,
    path = "/v1/payments/{payment_id}/refunds",
    tag = "payments",
    request_body = RefundBody,
    params(
        ("payment_id" = String, Path, description = "The payment to refund."),
        ("Idempotency-Key" = String, Header, description = "Chosen by you, unique per refund (1–128 printable ASCII characters, no spaces); send the same key on every retry.", example = "refund-1001", pattern = "^[!-~]{1,128}$"),
    ),
    responses(
        (status = 200, description = "The refund, committed.", body = Payment,
            headers(("Idempotent-Replayed" = String, description = "`true` when the answer is a replay."))),
        (status = 404, description = "No such payment, or not yours.", body = crate::model::ErrorBody),
        (status = 409, description = "A refund under this key is still deciding.", body = crate::model::ErrorBody),
        (status = 422, description = "Refused: not committed, a refund itself, more than is left, or the key was used for another refund.", body = crate::model::ErrorBody),
    ),
    security(("api_key" = ["refunds:write"]))
)]
pub async fn refund(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    Path(payment_id): Path<String>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<RefundBody>,
) -> Result<Response, ApiError> {
    let request = pb::RefundRequest {
        payment_id,
        amount: body.amount.map(Into::into),
        idempotency_key: key,
        reason: body.reason,
        metadata: body.metadata.into_iter().collect(),
    };
    let refund = api
        .service
        .refund(&call, request)
        .await
        .map_err(ApiError::keyed)?;
    Ok(payment_answer(&call, refund))
}

/// Hold funds for a later capture (an authorization).
///
/// Both banks hold: your available balance falls by the amount, your balance does not, until
/// the payee captures it, someone voids it, or it expires (`expires_in_seconds`). Idempotent
/// per (caller, `Idempotency-Key`) as a payment.
#[utoipa::path(
    post,
    path = "/v1/authorizations",
    tag = "payments",
    request_body = AuthorizeBody,
    params(("Idempotency-Key" = String, Header, description = "Chosen by you, unique per payment or authorization (1–128 printable ASCII characters, no spaces); send the same key on every retry.", example = "order-1001-hold", pattern = "^[!-~]{1,128}$")),
    responses(
        (status = 200, description = "The authorization, `authorized` (or what this key recorded before).", body = Payment,
            headers(("Idempotent-Replayed" = String, description = "`true` when the answer is a replay of an earlier request with this key."))),
        (status = 404, description = "No such payee, account or bank.", body = crate::model::ErrorBody),
        (status = 409, description = "An authorization under this key is still deciding; retry with the same key.", body = crate::model::ErrorBody),
        (status = 422, description = "Refused: insufficient funds, currency mismatch, cap exceeded, or the key was used for another request.", body = crate::model::ErrorBody),
    ),
    security(("api_key" = ["payments:write"]))
)]
pub async fn authorize(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody<AuthorizeBody>,
) -> Result<Response, ApiError> {
    let request = pb::AuthorizeRequest {
        idempotency_key: key,
        to_username: body.to_username,
        amount: Some(body.amount.into()),
        from_bank_id: body.from_bank_id,
        to_bank_id: body.to_bank_id,
        memo: body.memo,
        metadata: body.metadata.into_iter().collect(),
        expires_in_seconds: body.expires_in_seconds,
    };
    let payment = api
        .service
        .authorize_payment(&call, request)
        .await
        .map_err(ApiError::keyed)?;
    Ok(payment_answer(&call, payment))
}

/// Capture an authorization (its payee, or admin): all of it, or part (`amount`).
///
/// Only strictly before its expiry; the rest of the hold is released. Capturing one already
/// captured answers it again, so a retry is safe.
#[utoipa::path(
    post,
    path = "/v1/payments/{payment_id}/capture",
    tag = "payments",
    request_body(content = CaptureBody, description = "Optional: none captures the whole amount."),
    params(("payment_id" = String, Path, description = "The authorization.")),
    responses(
        (status = 200, description = "The authorization, `committed`.", body = Payment),
        (status = 403, description = "You are its payer: only the payee or the admin captures.", body = crate::model::ErrorBody),
        (status = 404, description = "No such payment, or not yours.", body = crate::model::ErrorBody),
        (status = 422, description = "`authorization_expired`, or `payment_not_authorized` (a plain payment, or one voided or still being authorized).", body = crate::model::ErrorBody),
    ),
    security(("api_key" = ["payments:write"]))
)]
pub async fn capture(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    Path(payment_id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<CaptureBody>,
) -> Result<Response, ApiError> {
    let request = pb::CaptureRequest {
        payment_id,
        amount: body.amount.map(Into::into),
    };
    let payment = api.service.capture(&call, request).await?;
    Ok(payment_answer(&call, payment))
}

/// Void an authorization (its payer, its payee, or admin): its holds are released.
///
/// Voiding one already voided or expired answers it again.
#[utoipa::path(
    post,
    path = "/v1/payments/{payment_id}/void",
    tag = "payments",
    params(("payment_id" = String, Path, description = "The authorization.")),
    responses(
        (status = 200, description = "The authorization, `aborted` (`authorization_voided`, or `authorization_expired` if it expired first).", body = Payment),
        (status = 404, description = "No such payment, or not yours.", body = crate::model::ErrorBody),
        (status = 422, description = "`payment_not_authorized`: a plain payment, one captured, or one still being authorized.", body = crate::model::ErrorBody),
    ),
    security(("api_key" = ["payments:write"]))
)]
pub async fn void(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    Path(payment_id): Path<String>,
) -> Result<Response, ApiError> {
    let request = pb::VoidRequest { payment_id };
    let payment = api.service.void(&call, request).await?;
    Ok(payment_answer(&call, payment))
}

/// One page of a history.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1–100; default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub starting_after: Option<String>,
}

/// A page of payments, each filter optional (all given must match).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PaymentsQuery {
    /// 1–100; default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub starting_after: Option<String>,
    /// `pending`, `authorized`, `committed` or `aborted`.
    pub status: Option<String>,
    /// `sent` or `received` (default: both).
    pub direction: Option<String>,
    /// Only payments with this other party.
    pub counterparty: Option<String>,
    /// Created at or after (Unix ms).
    #[param(minimum = 1)]
    pub created_gte: Option<i64>,
    /// Created before (Unix ms).
    #[param(minimum = 1)]
    pub created_lt: Option<i64>,
    /// Amount at least (minor units).
    #[param(minimum = 1)]
    pub amount_gte: Option<i64>,
    /// Amount at most (minor units).
    #[param(minimum = 1)]
    pub amount_lte: Option<i64>,
    /// ISO 4217 code.
    pub currency: Option<String>,
    /// With `metadata_value`: a metadata entry that must be exactly that.
    pub metadata_key: Option<String>,
    pub metadata_value: Option<String>,
    /// Admin keys only: one user's payments (default: everyone's).
    pub username: Option<String>,
}

/// Your payments (sent and received), newest first; with filters, only those matching all.
#[utoipa::path(
    get,
    path = "/v1/payments",
    tag = "payments",
    params(PaymentsQuery),
    responses((status = 200, description = "A page of payments.", body = PaymentList)),
    security(("api_key" = ["payments:read"]))
)]
pub async fn list_payments(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    Query(query): Query<PaymentsQuery>,
) -> Result<Response, ApiError> {
    let status = match query.status.as_deref() {
        None => pb::PaymentStatus::Unspecified,
        Some("pending") => pb::PaymentStatus::Pending,
        Some("authorized") => pb::PaymentStatus::Authorized,
        Some("committed") => pb::PaymentStatus::Committed,
        Some("aborted") => pb::PaymentStatus::Aborted,
        Some(_) => {
            return Err(bad_query(
                "status",
                "pending, authorized, committed or aborted",
            ))
        }
    };
    let direction = match query.direction.as_deref() {
        None => pb::PaymentDirection::Unspecified,
        Some("sent") => pb::PaymentDirection::Sent,
        Some("received") => pb::PaymentDirection::Received,
        Some(_) => return Err(bad_query("direction", "sent or received")),
    };
    // Zero means "unbounded" in the message: a bound of 0 or less is refused here instead.
    let positive = |field: &str, value: Option<i64>| match value {
        None => Ok(0),
        Some(value) if value > 0 => Ok(value),
        Some(_) => Err(bad_query(field, "a positive number")),
    };
    let request = pb::ListPaymentsRequest {
        page_size: page_size(query.limit)?,
        page_token: query.starting_after.unwrap_or_default(),
        status: status as i32,
        direction: direction as i32,
        counterparty: query.counterparty.unwrap_or_default(),
        created_from_unix_ms: positive("created_gte", query.created_gte)?,
        created_before_unix_ms: positive("created_lt", query.created_lt)?,
        min_amount_minor: positive("amount_gte", query.amount_gte)?,
        max_amount_minor: positive("amount_lte", query.amount_lte)?,
        currency: query.currency.unwrap_or_default(),
        metadata_key: query.metadata_key.unwrap_or_default(),
        metadata_value: query.metadata_value.unwrap_or_default(),
        username: query.username.unwrap_or_default(),
    };
    let found = api.service.list_payments(&call, request).await?;
    let next_cursor = Some(found.next_page_token).filter(|token| !token.is_empty());
    let list = PaymentList {
        data: found.payments.into_iter().map(Payment::from).collect(),
        has_more: next_cursor.is_some(),
        next_cursor,
    };
    Ok(json_response(StatusCode::OK, &list))
}

/// A query parameter that is not one of the values it takes.
fn bad_query(field: &str, takes: &str) -> ApiError {
    ApiError::from(strife_common::Failure::invalid_field(
        field,
        format!("{field} must be {takes}"),
    ))
}

/// The refunds of a payment you paid or received (admin: any), newest first.
#[utoipa::path(
    get,
    path = "/v1/payments/{payment_id}/refunds",
    tag = "payments",
    params(("payment_id" = String, Path, description = "The refunded payment."), PageQuery),
    responses(
        (status = 200, description = "A page of its refunds, every attempt whatever its status.", body = PaymentList),
        (status = 404, description = "No such payment, or not yours.", body = crate::model::ErrorBody),
    ),
    security(("api_key" = ["payments:read"]))
)]
pub async fn list_refunds(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    Path(payment_id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let request = pb::ListRefundsRequest {
        payment_id,
        page_size: page_size(page.limit)?,
        page_token: page.starting_after.unwrap_or_default(),
    };
    let refunds = api.service.list_refunds(&call, request).await?;
    let next_cursor = Some(refunds.next_page_token).filter(|token| !token.is_empty());
    let list = PaymentList {
        data: refunds.refunds.into_iter().map(Payment::from).collect(),
        has_more: next_cursor.is_some(),
        next_cursor,
    };
    Ok(json_response(StatusCode::OK, &list))
}

/// `limit` as a page size: absent is the default, 1–100 is taken as is.
pub fn page_size(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(0),
        Some(limit @ 1..=MAX_EVENTS_PER_PAGE) => Ok(limit),
        Some(_) => Err(ApiError::from(strife_common::Failure::invalid_field(
            "limit",
            "limit must be between 1 and 100",
        ))),
    }
}

/// One of your payments.
#[utoipa::path(
    get,
    path = "/v1/payments/{payment_id}",
    tag = "payments",
    params(("payment_id" = String, Path, description = "The payment's id.")),
    responses(
        (status = 200, description = "The payment.", body = Payment),
        (status = 404, description = "No such payment, or not yours.", body = crate::model::ErrorBody),
    ),
    security(("api_key" = ["payments:read"]))
)]
pub async fn get_payment(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    Path(payment_id): Path<String>,
) -> Result<Response, ApiError> {
    let payment = api
        .service
        .get_payment(&call, pb::GetPaymentRequest { payment_id })
        .await?;
    Ok(json_response(StatusCode::OK, &Payment::from(payment)))
}

/// The payment you made under an idempotency key (its latest attempt): how a client whose
/// answer was lost learns the outcome without paying again.
#[utoipa::path(
    get,
    path = "/v1/payments/by-key/{idempotency_key}",
    tag = "payments",
    params(("idempotency_key" = String, Path, description = "The key the payment was sent with.")),
    responses(
        (status = 200, description = "The payment.", body = Payment),
        (status = 404, description = "You never used this key.", body = crate::model::ErrorBody),
    ),
    security(("api_key" = ["payments:read"]))
)]
pub async fn get_payment_by_key(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    Path(idempotency_key): Path<String>,
) -> Result<Response, ApiError> {
    let payment = api
        .service
        .get_payment_by_key(&call, pb::GetPaymentByKeyRequest { idempotency_key })
        .await?;
    Ok(json_response(StatusCode::OK, &Payment::from(payment)))
}

/// Whose balances.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BalancesQuery {
    /// Admin only: another user's.
    pub username: Option<String>,
}

/// Balances of your accounts (admin: of any user).
#[utoipa::path(
    get,
    path = "/v1/balances",
    tag = "accounts",
    params(BalancesQuery),
    responses(
        (status = 200, description = "Every account's balance, held and available amounts.", body = Balances),
        (status = 404, description = "No such user.", body = crate::model::ErrorBody),
    ),
    security(("api_key" = ["payments:read"]))
)]
pub async fn balances(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    Query(query): Query<BalancesQuery>,
) -> Result<Response, ApiError> {
    let request = pb::GetBalancesRequest {
        username: query.username.unwrap_or_default(),
    };
    let balances = api.service.get_balances(&call, request).await?;
    Ok(json_response(StatusCode::OK, &Balances::from(balances)))
}

/// Link (or rename) one of your bank accounts.
#[utoipa::path(
    post,
    path = "/v1/accounts/link",
    tag = "accounts",
    request_body = LinkAccountBody,
    responses(
        (status = 200, description = "The linked account.", body = LinkedAccount),
        (status = 404, description = "No such bank or account.", body = crate::model::ErrorBody),
        (status = 409, description = "The account is linked to someone else.", body = crate::model::ErrorBody),
        (status = 422, description = "The bank says the account is not yours.", body = crate::model::ErrorBody),
    ),
    security(("api_key" = ["payments:write"]))
)]
pub async fn link_account(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    JsonBody(body): JsonBody<LinkAccountBody>,
) -> Result<Response, ApiError> {
    let request = pb::LinkAccountRequest {
        bank_id: body.bank_id,
        account_number: body.account_number,
        holder_name: body.holder_name,
    };
    let account = api.service.link_account(&call, request).await?;
    Ok(json_response(StatusCode::OK, &LinkedAccount::from(account)))
}

/// Where to read events from.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// A cursor from an earlier page or event; absent: from the beginning of the log.
    pub after: Option<String>,
    /// 1–100; default 100.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// How long to wait for a first event when none is there yet (long poll), 0–8; default 0.
    #[param(minimum = 0, maximum = 8)]
    pub wait_seconds: Option<u64>,
}

/// Your payments (admin: every payment) as their decisions became durable, in decision
/// order, after a cursor: the same order and cursors as gRPC's `WatchPayments`, so a reader
/// may switch between the two, and between gateway replicas, without gaps or repeats.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(EventsQuery),
    responses((status = 200, description = "The events after the cursor (possibly none) and the cursor to continue from.", body = EventPage)),
    security(("api_key" = ["events:read"]))
)]
pub async fn events(
    State(api): State<Api>,
    Authenticated {
        call,
        in_flight: _in_flight,
    }: Authenticated,
    Query(query): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let limit = match page_size(query.limit)? {
        0 => MAX_EVENTS_PER_PAGE,
        limit => limit,
    } as usize;
    let wait = match query.wait_seconds {
        None => Duration::ZERO,
        Some(seconds) if seconds <= MAX_EVENT_WAIT.as_secs() => Duration::from_secs(seconds),
        Some(_) => {
            return Err(ApiError::from(strife_common::Failure::invalid_field(
                "wait_seconds",
                "wait_seconds must be between 0 and 8",
            )))
        }
    };
    let after = query.after.unwrap_or_else(|| "0".to_owned());
    let mut stream = api
        .service
        .watch_payments(
            &call,
            pb::WatchPaymentsRequest {
                since: after.clone(),
            },
        )
        .await?;
    let mut data = Vec::new();
    let mut next_cursor = after;
    // The first event may take the whole wait; after it, the page takes what follows
    // without a pause.
    let mut deadline = wait.max(CATCH_UP_WAIT);
    while data.len() < limit {
        let Ok(Some(item)) = tokio::time::timeout(deadline, stream.next()).await else {
            break;
        };
        let event = item?;
        next_cursor.clone_from(&event.cursor);
        data.push(PaymentEvent {
            cursor: event.cursor,
            payment: event.payment.map(Payment::from),
        });
        deadline = Duration::from_millis(20);
    }
    Ok(json_response(
        StatusCode::OK,
        &EventPage { data, next_cursor },
    ))
}
