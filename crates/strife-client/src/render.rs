//! Output: aligned tables and sentences for people, one JSON document for scripts, and the
//! wording of errors. Every command prints through here ([`emit`], [`failed`], [`usage`]), so
//! the command modules depend on this one and never on each other for output.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use strife_proto::v1 as pb;
use tonic::Status;

use crate::args::ClientArgs;

// Money, statuses, times and refund notes are worded once for every front end (the console
// shows them too); re-exported so the commands print through this one module.
pub use strife_present::{money, refund_note, status_name, timestamp};

/// Exit status of `pay`/`sync` when payments were queued rather than completed (EX_TEMPFAIL).
pub const EXIT_QUEUED: u8 = 75;

/// Prints a command's result: `human` for people, `document` (one line of JSON) with `--json`.
pub fn emit(args: &ClientArgs, human: String, document: Value) {
    if args.json {
        println!("{document}");
    } else {
        println!("{human}");
    }
}

/// Prints a failed call and returns exit status 1.
pub fn failed(args: &ClientArgs, status: &Status) -> u8 {
    let sentence = explain(status);
    if args.json {
        println!(
            "{}",
            json!({"ok": false, "code": format!("{:?}", status.code()), "reason_code": strife_common::failure::reason_of(status), "error": sentence})
        );
    }
    eprintln!("error: {sentence}");
    1
}

/// Prints a command-line mistake (nothing was sent) and returns exit status 2.
pub fn usage(args: &ClientArgs, error: &dyn std::fmt::Display) -> u8 {
    eprintln!("error: {error}");
    if args.json {
        println!("{}", json!({"ok": false, "error": error.to_string()}));
    }
    2
}

/// A money value as JSON: exact minor units plus the display string.
pub fn money_json(value: Option<&pb::Money>) -> Value {
    match value {
        Some(value) => {
            json!({"amount_minor": value.amount_minor, "currency": value.currency, "display": money(Some(value))})
        }
        None => Value::Null,
    }
}

/// An outbox state for people: an unknown outcome must not read like "waiting to be sent".
pub fn outbox_state(state: &str) -> &str {
    match state {
        "queued" => "queued",
        "unknown" => "UNKNOWN (gateway may have it; sync looks it up)",
        "succeeded" => "sent",
        "declined" => "declined",
        other => other,
    }
}

pub fn payment_json(payment: &pb::Payment) -> Value {
    json!({
        "payment_id": payment.payment_id,
        "idempotency_key": payment.idempotency_key,
        "from": payment.from_username,
        "from_bank": payment.from_bank_id,
        "from_account": payment.from_account,
        "to": payment.to_username,
        "to_bank": payment.to_bank_id,
        "to_account": payment.to_account,
        "amount": money_json(payment.amount.as_ref()),
        "status": status_name(payment.status),
        "reason_code": payment.reason_code,
        "reason": payment.reason,
        "memo": payment.memo,
        "created_unix_ms": payment.created_unix_ms,
        "refund_of": (!payment.refund_of.is_empty()).then(|| payment.refund_of.clone()),
        "refunded": money_json(payment.refunded.as_ref()),
        "settlement_window": (payment.settlement_window_id != 0).then_some(payment.settlement_window_id),
        "metadata": sorted_metadata(payment),
        "expires_unix_ms": (payment.expires_unix_ms != 0).then_some(payment.expires_unix_ms),
        "authorized_unix_ms": (payment.authorized_unix_ms != 0).then_some(payment.authorized_unix_ms),
    })
}

/// A payment's metadata ordered by key (the message's map has no order of its own).
fn sorted_metadata(payment: &pb::Payment) -> BTreeMap<&str, &str> {
    payment
        .metadata
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect()
}

/// A payment for people: one field per line (`payment`, `pay`, `refund`).
pub fn describe_payment(payment: &pb::Payment) -> String {
    let mut lines = vec![
        format!("payment  {}", payment.payment_id),
        format!("status   {}", status_name(payment.status)),
        format!("amount   {}", money(payment.amount.as_ref())),
        format!(
            "from     {} ({} {})",
            payment.from_username, payment.from_bank_id, payment.from_account
        ),
        format!(
            "to       {} ({} {})",
            payment.to_username, payment.to_bank_id, payment.to_account
        ),
        format!("when     {} UTC", timestamp(payment.created_unix_ms)),
    ];
    if payment.expires_unix_ms != 0 {
        lines.push(format!(
            "expires  {} UTC",
            timestamp(payment.expires_unix_ms)
        ));
    }
    if !payment.reason.is_empty() {
        lines.push(format!("reason   {}", payment.reason));
    }
    if !payment.memo.is_empty() {
        lines.push(format!("memo     {}", payment.memo));
    }
    for (key, value) in sorted_metadata(payment) {
        lines.push(format!("meta     {key}={value}"));
    }
    if !payment.refund_of.is_empty() {
        lines.push(format!("refund of payment {}", payment.refund_of));
    }
    if payment.refunded.is_some() {
        lines.push(format!("refunded {}", money(payment.refunded.as_ref())));
    }
    if payment.settlement_window_id != 0 {
        lines.push(format!("window   {}", payment.settlement_window_id));
    }
    lines.join("\n")
}

/// Left-aligned columns, two spaces apart, with a header row.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.chars().count()).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(index) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(index, cell)| {
                format!(
                    "{cell:<width$}",
                    width = widths.get(index).copied().unwrap_or(0)
                )
            })
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(header.iter().map(|cell| (*cell).to_owned()).collect())];
    out.extend(rows.iter().map(|row| line(row.clone())));
    out.join("\n")
}

/// A sentence for a failed call, in the user's terms (the wording the console shares).
pub fn explain(status: &Status) -> String {
    strife_present::refusal_of(status)
}

/// A failed call made under idempotency key `key`: the failure as [`failed`] prints it and,
/// unless the gateway declined it for good, how to rerun it so `what` happens exactly once
/// (`what`: "the refund", "the authorization"). The exit status.
pub fn failed_keyed(args: &ClientArgs, status: &Status, what: &str, key: &str) -> u8 {
    let exit = failed(args, status);
    let reason = strife_common::failure::reason_of(status);
    let class = crate::outbox::classify_refusal(status.code(), reason.as_deref());
    if class != crate::outbox::FailureClass::Declined {
        eprintln!(
            "{what} may or may not have been made: rerun the same command with --key {key} \
             to make it exactly once."
        );
    }
    exit
}
