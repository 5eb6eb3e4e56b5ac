//! `strife client authorize|capture|void`: funds held now and moved (or released) later
//! (docs/SPEC.md §4). An authorization is made online only: unlike `pay`, it is never queued
//! in the outbox, because a hold that starts hours late is not what a merchant asked for.

use serde_json::json;
use strife_proto::v1 as pb;

use crate::render::{describe_payment, emit, failed, failed_keyed, payment_json, usage};
use crate::session::Gateway;

/// `authorize`: sends the request under one idempotency key, printed when the outcome is
/// unknown so a rerun authorizes exactly once.
pub async fn authorize(
    args: &crate::ClientArgs,
    gateway: &mut Gateway,
    request: pb::AuthorizeRequest,
) -> anyhow::Result<u8> {
    let key = request.idempotency_key.clone();
    match gateway.authorize(request).await {
        Ok(payment) => {
            let payment = payment.into_inner();
            emit(
                args,
                format!(
                    "authorized; capture or void it before it expires\n{}",
                    describe_payment(&payment)
                ),
                json!({"ok": true, "key": key, "payment": payment_json(&payment)}),
            );
            Ok(0)
        }
        Err(status) => Ok(failed_keyed(args, &status, "The authorization", &key)),
    }
}

/// How an authorization is to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// All of it, or the amount given (text like 30.00, in the authorization's currency).
    Capture(Option<String>),
    Void,
}

/// `capture` / `void`: both are safe to rerun (an authorization already ended that way is
/// answered again).
pub async fn end(
    args: &crate::ClientArgs,
    gateway: &mut Gateway,
    payment_id: &str,
    ending: Ending,
) -> anyhow::Result<u8> {
    let payment_id = payment_id.to_owned();
    let answer = match &ending {
        Ending::Capture(asked) => {
            let amount = match asked {
                None => None,
                Some(text) => match capture_amount(gateway, &payment_id, text).await {
                    Ok(Ok(amount)) => Some(amount),
                    Ok(Err(error)) => return Ok(usage(args, &error)),
                    Err(status) => return Ok(failed(args, &status)),
                },
            };
            let request = pb::CaptureRequest { payment_id, amount };
            gateway.capture(request).await
        }
        Ending::Void => gateway.void(pb::VoidRequest { payment_id }).await,
    };
    match answer {
        Ok(payment) => {
            let payment = payment.into_inner();
            let done = match ending {
                Ending::Capture(_) => "captured",
                Ending::Void => "released",
            };
            emit(
                args,
                format!("{done}\n{}", describe_payment(&payment)),
                json!({"ok": true, "payment": payment_json(&payment)}),
            );
            Ok(0)
        }
        Err(status) => Ok(failed(args, &status)),
    }
}

/// `text` as an amount in the authorization's currency (looked up first): the outer error is
/// the look-up's, the inner one the amount's.
async fn capture_amount(
    gateway: &mut Gateway,
    payment_id: &str,
    text: &str,
) -> Result<anyhow::Result<pb::Money>, tonic::Status> {
    let held = gateway
        .get_payment(pb::GetPaymentRequest {
            payment_id: payment_id.to_owned(),
        })
        .await?
        .into_inner();
    let currency_code = held
        .amount
        .map(|amount| amount.currency)
        .unwrap_or_default();
    Ok(strife_common::money::currency(&currency_code)
        .and_then(|currency| strife_common::money::parse_amount(text, currency))
        .map(|amount_minor| pb::Money {
            amount_minor,
            currency: currency_code,
        })
        .map_err(anyhow::Error::from))
}
