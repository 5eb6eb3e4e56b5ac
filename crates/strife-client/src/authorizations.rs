//! `strife client authorize|capture|void`: funds held now and moved (or released) later
//! (docs/SPEC.md §4). An authorization is made online only: unlike `pay`, it is never queued
//! in the outbox, because a hold that starts hours late is not what a merchant asked for.

use serde_json::json;
use strife_proto::v1 as pb;

use crate::outbox::{classify_refusal, FailureClass};
use crate::render::{describe_payment, emit, failed, payment_json};
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
        Err(status) => {
            let exit = failed(args, &status);
            let reason = strife_common::failure::reason_of(&status);
            if classify_refusal(status.code(), reason.as_deref()) != FailureClass::Declined {
                eprintln!(
                    "The authorization may or may not have been made: rerun the same command \
                     with --key {key} to authorize exactly once."
                );
            }
            Ok(exit)
        }
    }
}

/// How an authorization is to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Capture,
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
    let answer = match ending {
        Ending::Capture => gateway.capture(pb::CaptureRequest { payment_id }).await,
        Ending::Void => gateway.void(pb::VoidRequest { payment_id }).await,
    };
    match answer {
        Ok(payment) => {
            let payment = payment.into_inner();
            let done = match ending {
                Ending::Capture => "captured",
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
