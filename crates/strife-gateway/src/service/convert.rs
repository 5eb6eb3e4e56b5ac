//! Records as the wire shows them: a stored payment, link, position or window → its
//! `strife.v1` message. One direction only (requests are validated in `validate.rs`); every
//! answer that carries a record is built here, for gRPC, the console and the event stream.

use strife_common::Failure;
use strife_ledger::records::{
    LinkedAccount, PaymentRecord, PaymentStatus, PositionRecord, WindowRecord, WindowReport,
};
use strife_ledger::settlement::{self, WindowState};
use strife_proto::v1 as pb;

pub(crate) fn money_proto(amount_minor: i64, currency: &str) -> Option<pb::Money> {
    Some(pb::Money {
        amount_minor,
        currency: currency.to_owned(),
    })
}

pub(crate) fn linked_proto(account: &LinkedAccount) -> pb::LinkedAccount {
    pb::LinkedAccount {
        username: account.username.clone(),
        bank_id: account.bank_id.clone(),
        account_number: account.account_number.clone(),
        currency: account.currency.clone(),
        holder_name: account.holder_name.clone(),
    }
}

pub(crate) fn payment_proto(record: &PaymentRecord) -> pb::Payment {
    let status = match record.status {
        PaymentStatus::Pending => pb::PaymentStatus::Pending,
        PaymentStatus::Committed => pb::PaymentStatus::Committed,
        PaymentStatus::Aborted => pb::PaymentStatus::Aborted,
        PaymentStatus::Authorized => pb::PaymentStatus::Authorized,
    };
    pb::Payment {
        payment_id: record.payment_id.clone(),
        idempotency_key: record.idempotency_key.clone(),
        from_username: record.from.username.clone(),
        from_bank_id: record.from.bank_id.clone(),
        from_account: record.from.account_number.clone(),
        to_username: record.to.username.clone(),
        to_bank_id: record.to.bank_id.clone(),
        to_account: record.to.account_number.clone(),
        amount: money_proto(record.amount_minor, &record.currency),
        status: status as i32,
        reason_code: record.reason_code.clone().unwrap_or_default(),
        reason: record.reason.clone().unwrap_or_default(),
        created_unix_ms: record.created_unix_ms,
        decided_unix_ms: record.decided_unix_ms.unwrap_or(0),
        memo: record.memo.clone(),
        refund_of: record.refund_of.clone().unwrap_or_default(),
        refunded: (record.refunded_minor > 0)
            .then(|| money_proto(record.refunded_minor, &record.currency))
            .flatten(),
        settlement_window_id: record
            .window_id
            .and_then(|window| u64::try_from(window).ok())
            .unwrap_or(0),
        metadata: record
            .metadata
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
        expires_unix_ms: record.expires_unix_ms.unwrap_or(0),
        authorized_unix_ms: record.authorized_unix_ms.unwrap_or(0),
        authorized: record
            .authorized_minor
            .and_then(|authorized| money_proto(authorized, &record.currency)),
    }
}

pub(crate) fn position_proto(position: &PositionRecord) -> pb::BankPosition {
    let money = |amount_minor| money_proto(amount_minor, &position.currency);
    pb::BankPosition {
        bank_id: position.bank_id.clone(),
        position: money(position.position_minor),
        reserved: money(position.reserved_minor),
        cap: position.cap_minor.and_then(money),
        headroom: settlement::headroom(position).and_then(money),
    }
}

pub(crate) fn window_proto(window: &WindowRecord) -> pb::SettlementWindow {
    let state = match settlement::window_state(window) {
        WindowState::Open => pb::SettlementWindowState::Open,
        WindowState::Closed => pb::SettlementWindowState::Closed,
        WindowState::Settled => pb::SettlementWindowState::Settled,
    };
    pb::SettlementWindow {
        window_id: u64::try_from(window.window_id).unwrap_or(0),
        state: state as i32,
        opened_unix_ms: window.opened_unix_ms,
        closed_unix_ms: window.closed_unix_ms.unwrap_or(0),
        settled_unix_ms: window.settled_unix_ms.unwrap_or(0),
    }
}

/// A window's report: its bilateral totals and the net amounts they come to.
pub(crate) fn report_proto(report: &WindowReport) -> Result<pb::SettlementReport, Failure> {
    let nets = settlement::nets(&report.totals)?;
    Ok(pb::SettlementReport {
        window: Some(window_proto(&report.window)),
        bilateral: report
            .totals
            .iter()
            .map(|total| pb::BilateralAmount {
                payer_bank_id: total.payer_bank.clone(),
                payee_bank_id: total.payee_bank.clone(),
                amount: money_proto(total.amount_minor, &total.currency),
                payments: u64::try_from(total.payments).unwrap_or(0),
            })
            .collect(),
        nets: nets
            .iter()
            .map(|net| pb::NetAmount {
                bank_id: net.bank_id.clone(),
                net: money_proto(net.net_minor, &net.currency),
            })
            .collect(),
    })
}
