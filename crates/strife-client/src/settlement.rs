//! `strife client refund` and the admin's `strife client settlement …`: refunds, settlement
//! windows and their statements, net debit caps and positions.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use strife_common::keys::new_key;
use strife_common::limits::validate_id;
use strife_common::money::{self, Amount};
use strife_proto::v1 as pb;

use crate::args::{ClientArgs, SettlementCommand};
use crate::render::{
    self, describe_payment, emit, failed, money_json, payment_json, table, timestamp, usage,
};
use crate::session::Gateway;

/// What `refund` was asked for.
pub struct RefundArgs<'a> {
    pub payment_id: &'a str,
    pub amount: Option<&'a str>,
    pub reason: &'a str,
    pub key: Option<String>,
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// `refund`: looks the payment up (its currency is the refund's), then refunds it with one
/// idempotency key, printed when the outcome is unknown so a rerun refunds exactly once.
pub async fn refund(
    args: &ClientArgs,
    gateway: &mut Gateway,
    request: RefundArgs<'_>,
) -> anyhow::Result<u8> {
    let key = request.key.unwrap_or_else(new_key);
    if let Err(error) = validate_id("--key", &key) {
        return Ok(usage(args, &error));
    }
    let original = match gateway
        .get_payment(pb::GetPaymentRequest {
            payment_id: request.payment_id.to_owned(),
        })
        .await
    {
        Ok(payment) => payment.into_inner(),
        Err(status) => return Ok(failed(args, &status)),
    };
    let currency_code = original
        .amount
        .as_ref()
        .map(|amount| amount.currency.clone())
        .unwrap_or_default();
    let amount = match request.amount {
        None => None,
        Some(text) => {
            let parsed = money::currency(&currency_code)
                .and_then(|currency| money::parse_amount(text, currency));
            match parsed {
                Ok(amount_minor) => Some(pb::Money {
                    amount_minor,
                    currency: currency_code.clone(),
                }),
                Err(error) => return Ok(usage(args, &error)),
            }
        }
    };
    let call = pb::RefundRequest {
        payment_id: request.payment_id.to_owned(),
        amount,
        idempotency_key: key.clone(),
        reason: request.reason.to_owned(),
        metadata: request.metadata.into_iter().collect(),
    };
    match gateway.refund(call).await {
        Ok(refund) => {
            let refund = refund.into_inner();
            emit(
                args,
                format!(
                    "refunded {} of payment {}\n{}",
                    render::money(refund.amount.as_ref()),
                    request.payment_id,
                    describe_payment(&refund)
                ),
                json!({"ok": true, "key": key, "refund": payment_json(&refund)}),
            );
            Ok(0)
        }
        Err(status) => Ok(render::failed_keyed(args, &status, "The refund", &key)),
    }
}

/// `settlement …` (admin).
pub async fn settlement(
    args: &ClientArgs,
    gateway: &mut Gateway,
    command: &SettlementCommand,
) -> anyhow::Result<u8> {
    match command {
        SettlementCommand::Windows { limit } => windows(args, gateway, *limit).await,
        SettlementCommand::Close { window } => close(args, gateway, *window).await,
        SettlementCommand::Report { window } => {
            let answer = gateway
                .get_settlement_report(pb::GetSettlementReportRequest { window_id: *window })
                .await;
            Ok(match answer {
                Ok(report) => print_report(args, &report.into_inner(), "statement"),
                Err(status) => failed(args, &status),
            })
        }
        SettlementCommand::Settle { window } => {
            let answer = gateway
                .mark_settled(pb::MarkSettledRequest { window_id: *window })
                .await;
            Ok(match answer {
                Ok(report) => print_report(args, &report.into_inner(), "settled"),
                Err(status) => failed(args, &status),
            })
        }
        SettlementCommand::Cap {
            bank,
            currency,
            amount,
            none,
        } => cap(args, gateway, bank, currency, amount.as_deref(), *none).await,
        SettlementCommand::Positions => positions(args, gateway).await,
    }
}

fn state_name(state: i32) -> &'static str {
    match pb::SettlementWindowState::try_from(state) {
        Ok(pb::SettlementWindowState::Open) => "OPEN",
        Ok(pb::SettlementWindowState::Closed) => "CLOSED",
        Ok(pb::SettlementWindowState::Settled) => "SETTLED",
        _ => "UNKNOWN",
    }
}

fn when(unix_ms: i64) -> String {
    if unix_ms == 0 {
        "-".into()
    } else {
        format!("{} UTC", timestamp(unix_ms))
    }
}

fn window_json(window: &pb::SettlementWindow) -> Value {
    json!({
        "window_id": window.window_id,
        "state": state_name(window.state),
        "opened_unix_ms": window.opened_unix_ms,
        "closed_unix_ms": (window.closed_unix_ms != 0).then_some(window.closed_unix_ms),
        "settled_unix_ms": (window.settled_unix_ms != 0).then_some(window.settled_unix_ms),
    })
}

async fn windows(args: &ClientArgs, gateway: &mut Gateway, limit: u32) -> anyhow::Result<u8> {
    let answer = gateway
        .list_settlement_windows(pb::ListSettlementWindowsRequest {
            page_size: limit,
            page_token: String::new(),
        })
        .await;
    let windows = match answer {
        Ok(response) => response.into_inner().windows,
        Err(status) => return Ok(failed(args, &status)),
    };
    let rows: Vec<Vec<String>> = windows
        .iter()
        .map(|window| {
            vec![
                window.window_id.to_string(),
                state_name(window.state).into(),
                when(window.opened_unix_ms),
                when(window.closed_unix_ms),
                when(window.settled_unix_ms),
            ]
        })
        .collect();
    emit(
        args,
        table(&["WINDOW", "STATE", "OPENED", "CLOSED", "SETTLED"], &rows),
        json!({"ok": true, "windows": windows.iter().map(window_json).collect::<Vec<_>>()}),
    );
    Ok(0)
}

/// Closes `window`, or the window open now: looked up first and closed by id, so a retried
/// command is refused (`window_not_open`) instead of closing a second window.
async fn close(
    args: &ClientArgs,
    gateway: &mut Gateway,
    window: Option<u64>,
) -> anyhow::Result<u8> {
    let window_id = match window {
        Some(window_id) => window_id,
        None => {
            let answer = gateway
                .list_settlement_windows(pb::ListSettlementWindowsRequest {
                    page_size: 1,
                    page_token: String::new(),
                })
                .await;
            match answer {
                Ok(response) => response
                    .into_inner()
                    .windows
                    .into_iter()
                    .find(|window| window.state == pb::SettlementWindowState::Open as i32)
                    .map_or(0, |window| window.window_id),
                Err(status) => return Ok(failed(args, &status)),
            }
        }
    };
    match gateway
        .close_settlement_window(pb::CloseSettlementWindowRequest { window_id })
        .await
    {
        Ok(report) => Ok(print_report(args, &report.into_inner(), "closed")),
        Err(status) => Ok(failed(args, &status)),
    }
}

async fn cap(
    args: &ClientArgs,
    gateway: &mut Gateway,
    bank: &str,
    currency: &str,
    amount: Option<&str>,
    none: bool,
) -> anyhow::Result<u8> {
    let currency = match money::currency(currency) {
        Ok(currency) => currency,
        Err(error) => return Ok(usage(args, &error)),
    };
    let cap_minor = match (amount, none) {
        (_, true) => None,
        (Some(text), false) => match money::parse_amount_allow_zero(text, currency) {
            Ok(amount_minor) => Some(amount_minor),
            Err(error) => return Ok(usage(args, &error)),
        },
        (None, false) => return Ok(usage(args, &"give --amount A or --none")),
    };
    let answer = gateway
        .set_net_debit_cap(pb::SetNetDebitCapRequest {
            bank_id: bank.to_owned(),
            currency: currency.code.to_owned(),
            cap_minor,
        })
        .await;
    match answer {
        Ok(position) => {
            let position = position.into_inner();
            let cap = match &position.cap {
                Some(cap) => format!("net debit cap {}", render::money(Some(cap))),
                None => "no net debit cap".to_owned(),
            };
            emit(
                args,
                format!(
                    "{} {}: {cap} (position {}, reserved {}{})",
                    position.bank_id,
                    currency.code,
                    render::money(position.position.as_ref()),
                    render::money(position.reserved.as_ref()),
                    position
                        .headroom
                        .as_ref()
                        .map(|headroom| format!(", headroom {}", render::money(Some(headroom))))
                        .unwrap_or_default()
                ),
                json!({"ok": true, "position": position_json(&position)}),
            );
            Ok(0)
        }
        Err(status) => Ok(failed(args, &status)),
    }
}

fn position_json(position: &pb::BankPosition) -> Value {
    json!({
        "bank": position.bank_id,
        "position": money_json(position.position.as_ref()),
        "reserved": money_json(position.reserved.as_ref()),
        "cap": money_json(position.cap.as_ref()),
        "headroom": money_json(position.headroom.as_ref()),
    })
}

async fn positions(args: &ClientArgs, gateway: &mut Gateway) -> anyhow::Result<u8> {
    let positions = match gateway.get_positions(pb::GetPositionsRequest {}).await {
        Ok(response) => response.into_inner().positions,
        Err(status) => return Ok(failed(args, &status)),
    };
    let rows: Vec<Vec<String>> = positions
        .iter()
        .map(|position| {
            vec![
                position.bank_id.clone(),
                render::money(position.position.as_ref()),
                render::money(position.reserved.as_ref()),
                position
                    .cap
                    .as_ref()
                    .map_or("none".into(), |cap| render::money(Some(cap))),
                position
                    .headroom
                    .as_ref()
                    .map_or("unlimited".into(), |headroom| render::money(Some(headroom))),
            ]
        })
        .collect();
    let human = if rows.is_empty() {
        "no positions yet (no cross-bank payment, no cap)".to_owned()
    } else {
        format!(
            "{}\n(position > 0: the bank owes the switch; < 0: it is owed)",
            table(&["BANK", "POSITION", "RESERVED", "CAP", "HEADROOM"], &rows)
        )
    };
    emit(
        args,
        human,
        json!({"ok": true, "positions": positions.iter().map(position_json).collect::<Vec<_>>()}),
    );
    Ok(0)
}

/// An amount for a statement: `12.50 USD`, exact for any i128.
fn show(amount_minor: i128, currency: &str) -> String {
    match (money::currency(currency), i64::try_from(amount_minor)) {
        (Ok(currency), Ok(amount_minor)) => Amount {
            amount_minor,
            currency,
        }
        .to_string(),
        _ => format!("{amount_minor} minor {currency}"),
    }
}

/// A window's settlement statement, for people.
pub fn statement(report: &pb::SettlementReport) -> String {
    let Some(window) = &report.window else {
        return "no window in the answer".into();
    };
    let state = state_name(window.state);
    let mut lines = vec![format!(
        "SETTLEMENT STATEMENT — window {} ({state})",
        window.window_id
    )];
    lines.push(format!("opened   {}", when(window.opened_unix_ms)));
    lines.push(format!("closed   {}", when(window.closed_unix_ms)));
    lines.push(format!("settled  {}", when(window.settled_unix_ms)));
    if window.state == pb::SettlementWindowState::Open as i32 {
        lines.push(
            "PROVISIONAL: the window is open; its totals grow with every cross-bank payment."
                .into(),
        );
    }
    lines.push(String::new());
    if report.bilateral.is_empty() {
        lines.push("No cross-bank payments committed in this window: nothing to settle.".into());
        return lines.join("\n");
    }
    let payments: u64 = report.bilateral.iter().map(|total| total.payments).sum();
    lines.push(format!(
        "Gross obligations ({payments} committed cross-bank payments)"
    ));
    let rows: Vec<Vec<String>> = report
        .bilateral
        .iter()
        .map(|total| {
            vec![
                total.payer_bank_id.clone(),
                total.payee_bank_id.clone(),
                total.payments.to_string(),
                render::money(total.amount.as_ref()),
            ]
        })
        .collect();
    lines.push(table(
        &["PAYER BANK", "PAYEE BANK", "PAYMENTS", "AMOUNT"],
        &rows,
    ));
    lines.push(String::new());
    lines.push("Net settlement".into());
    // currency → (paid, received), exact.
    let mut sums: BTreeMap<String, (i128, i128)> = BTreeMap::new();
    let rows: Vec<Vec<String>> = report
        .nets
        .iter()
        .filter_map(|net| {
            let money = net.net.as_ref()?;
            let sum = sums.entry(money.currency.clone()).or_default();
            let amount = i128::from(money.amount_minor);
            let (pays, receives) = if amount > 0 {
                sum.0 += amount;
                (show(amount, &money.currency), String::new())
            } else if amount < 0 {
                sum.1 -= amount;
                (String::new(), show(-amount, &money.currency))
            } else {
                ("(even)".into(), String::new())
            };
            Some(vec![net.bank_id.clone(), pays, receives])
        })
        .collect();
    lines.push(table(&["BANK", "PAYS", "RECEIVES"], &rows));
    for (currency, (paid, received)) in &sums {
        let balanced = if paid == received {
            "balanced"
        } else {
            "NOT BALANCED"
        };
        lines.push(format!(
            "{currency}: {} paid = {} received ({balanced})",
            show(*paid, currency),
            show(*received, currency)
        ));
    }
    lines.push(String::new());
    lines.push(match pb::SettlementWindowState::try_from(window.state) {
        Ok(pb::SettlementWindowState::Closed) => format!(
            "Not settled yet: once these amounts have moved, run `settlement settle {}`.",
            window.window_id
        ),
        Ok(pb::SettlementWindowState::Settled) => {
            "Settled: the banks' positions no longer include this window.".into()
        }
        _ => format!(
            "Close it with `settlement close {}` to fix these amounts.",
            window.window_id
        ),
    });
    lines.join("\n")
}

/// A report as JSON: exact minor units, nets positive = pays.
pub fn report_json(report: &pb::SettlementReport) -> Value {
    json!({
        "window": report.window.as_ref().map(window_json),
        "bilateral": report.bilateral.iter().map(|total| json!({
            "payer_bank": total.payer_bank_id,
            "payee_bank": total.payee_bank_id,
            "payments": total.payments,
            "amount": money_json(total.amount.as_ref()),
        })).collect::<Vec<_>>(),
        "nets": report.nets.iter().map(|net| json!({
            "bank": net.bank_id,
            "net": money_json(net.net.as_ref()),
        })).collect::<Vec<_>>(),
    })
}

fn print_report(args: &ClientArgs, report: &pb::SettlementReport, action: &str) -> u8 {
    let mut document = report_json(report);
    if let Value::Object(fields) = &mut document {
        fields.insert("ok".into(), Value::Bool(true));
        fields.insert("action".into(), Value::String(action.into()));
    }
    emit(args, statement(report), document);
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(amount_minor: i64) -> Option<pb::Money> {
        Some(pb::Money {
            amount_minor,
            currency: "USD".into(),
        })
    }

    #[test]
    fn a_statement_reads_like_one_and_balances() {
        let report = pb::SettlementReport {
            window: Some(pb::SettlementWindow {
                window_id: 3,
                state: pb::SettlementWindowState::Closed as i32,
                opened_unix_ms: 1_700_000_000_000,
                closed_unix_ms: 1_700_000_360_000,
                settled_unix_ms: 0,
            }),
            bilateral: vec![
                pb::BilateralAmount {
                    payer_bank_id: "bank0".into(),
                    payee_bank_id: "bank1".into(),
                    amount: usd(5_000),
                    payments: 7,
                },
                pb::BilateralAmount {
                    payer_bank_id: "bank1".into(),
                    payee_bank_id: "bank0".into(),
                    amount: usd(2_000),
                    payments: 5,
                },
            ],
            nets: vec![
                pb::NetAmount {
                    bank_id: "bank0".into(),
                    net: usd(3_000),
                },
                pb::NetAmount {
                    bank_id: "bank1".into(),
                    net: usd(-3_000),
                },
            ],
        };
        let text = statement(&report);
        assert!(text.contains("window 3 (CLOSED)"), "{text}");
        assert!(text.contains("12 committed cross-bank payments"), "{text}");
        assert!(
            text.contains("USD: 30.00 USD paid = 30.00 USD received (balanced)"),
            "{text}"
        );
        assert!(text.contains("settlement settle 3"), "{text}");
        let json = report_json(&report);
        assert_eq!(json["nets"][1]["net"]["amount_minor"], -3_000);
        assert_eq!(json["window"]["state"], "CLOSED");
    }

    #[test]
    fn an_empty_window_says_there_is_nothing_to_settle() {
        let report = pb::SettlementReport {
            window: Some(pb::SettlementWindow {
                window_id: 1,
                state: pb::SettlementWindowState::Open as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = statement(&report);
        assert!(text.contains("PROVISIONAL"), "{text}");
        assert!(text.contains("nothing to settle"), "{text}");
    }
}
