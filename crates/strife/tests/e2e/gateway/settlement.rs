//! Interbank settlement and refunds (docs/SPEC.md §9) on real processes: positions move with
//! committed cross-bank payments only, a net debit cap refuses exactly the payments that would
//! pass it before any bank is asked, windows close with payments in flight and never change
//! after, settling frees the cap, crashes at either side of the decision leave positions and
//! reservations equal to their derivation (the audit re-derives them), and refunds — full,
//! partial, concurrent — never return more than was paid.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::network::{password_of, GatewayClient, ManualNetwork};
use crate::support::{strife_bin, wait_until};
use serde_json::Value;
use strife_common::failure::reason_of;
use strife_proto::v1 as pb;
use tonic::{Code, Status};

fn usd(amount_minor: i64) -> Option<pb::Money> {
    Some(pb::Money {
        amount_minor,
        currency: "USD".into(),
    })
}

fn pay_request(key: &str, to: &str, amount_minor: i64) -> pb::PayRequest {
    pb::PayRequest {
        idempotency_key: key.into(),
        to_username: to.into(),
        amount: usd(amount_minor),
        ..pb::PayRequest::default()
    }
}

fn refund_request(payment_id: &str, key: &str, amount_minor: Option<i64>) -> pb::RefundRequest {
    pb::RefundRequest {
        payment_id: payment_id.into(),
        amount: amount_minor.and_then(usd),
        idempotency_key: key.into(),
        reason: "returned goods".into(),
        metadata: Default::default(),
    }
}

async fn pay(client: &mut GatewayClient, key: &str, to: &str, amount_minor: i64) -> pb::Payment {
    client
        .pay(pay_request(key, to, amount_minor))
        .await
        .unwrap_or_else(|status| panic!("pay {key}: {status:?}"))
        .into_inner()
}

async fn payment(client: &mut GatewayClient, payment_id: &str) -> pb::Payment {
    client
        .get_payment(pb::GetPaymentRequest {
            payment_id: payment_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// A refusal's code and its reason code (the `x-strife-reason` trailer or ErrorInfo).
fn refusal<T: std::fmt::Debug>(result: Result<T, Status>) -> (Code, String) {
    let status = result.expect_err("expected a refusal");
    let reason = reason_of(&status).unwrap_or_else(|| {
        use tonic_types::StatusExt;
        status
            .get_details_error_info()
            .map(|info| info.reason)
            .unwrap_or_default()
    });
    (status.code(), reason)
}

/// (payer bank, payee bank) → (Σ amount, payments) of one window.
type Totals = BTreeMap<(String, String), (i64, u64)>;

/// bank → (position, reserved, cap, headroom) in minor units.
type Positions = BTreeMap<String, (i64, i64, Option<i64>, Option<i64>)>;

/// Every bank's row from `GetPositions`.
async fn positions(admin: &mut GatewayClient) -> Positions {
    admin
        .get_positions(pb::GetPositionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .positions
        .into_iter()
        .map(|position| {
            let minor = |money: Option<pb::Money>| money.map(|money| money.amount_minor);
            (
                position.bank_id,
                (
                    minor(position.position).unwrap_or(0),
                    minor(position.reserved).unwrap_or(0),
                    minor(position.cap),
                    minor(position.headroom),
                ),
            )
        })
        .collect()
}

/// (position, reserved) of `bank`, zeros when it has no row.
async fn standing(admin: &mut GatewayClient, bank: &str) -> (i64, i64) {
    positions(admin)
        .await
        .get(bank)
        .map_or((0, 0), |row| (row.0, row.1))
}

/// Every PREPARED leg and held amount at the banks, as (bank, what).
async fn holds(network: &ManualNetwork) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for index in 0..network.banks.len() {
        let bank = &network.banks[index].id;
        let listed = network
            .bank(index)
            .list_accounts(pb::ListAccountsRequest {})
            .await
            .unwrap()
            .into_inner();
        for leg in listed.prepared_legs {
            found.push((bank.clone(), format!("leg {} PREPARED", leg.payment_id)));
        }
        for account in listed.accounts {
            if account.held_minor != 0 {
                found.push((
                    bank.clone(),
                    format!("{} holds {}", account.account_number, account.held_minor),
                ));
            }
        }
    }
    found
}

/// No hold and no PREPARED leg at any bank — once phase 2 has reached them (bounded).
async fn assert_no_holds(network: &ManualNetwork) {
    let released = wait_until(Duration::from_secs(15), || async {
        holds(network).await.is_empty()
    })
    .await;
    assert!(released, "holds left: {:?}", holds(network).await);
}

/// `strife audit --json`: (clean, report).
fn audit(network: &ManualNetwork) -> (bool, Value) {
    let output = Command::new(strife_bin())
        .args(["audit", "--json", "--etcd", &network.etcd.endpoint, "--dir"])
        .arg(network.network.path())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.success(), report)
}

/// Waits (bounded) for a clean audit: phase 2 may still be reaching a bank.
async fn assert_audit_clean(network: &ManualNetwork) -> Value {
    let clean = wait_until(Duration::from_secs(20), || async { audit(network).0 }).await;
    let (_, report) = audit(network);
    assert!(clean, "audit not clean: {report}");
    report
}

/// `strife client` without `--json`: (exit code, stdout).
fn client_text(network: &ManualNetwork, user: &str, args: &[&str]) -> (i32, String) {
    let password = if user == "admin" {
        strife_pki::read_admin_password(&network.network.layout()).unwrap()
    } else {
        password_of(user)
    };
    let output = Command::new(strife_bin())
        .args([
            "client",
            "--gateway",
            &network.gateway_address,
            "--user",
            user,
            "--dir",
        ])
        .arg(network.network.path())
        .args(args)
        .env("STRIFE_PASSWORD", password)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// alice (100.00 at bank0), bob (0 at bank1), carol (0 at bank0).
async fn three_users() -> ManualNetwork {
    let network = ManualNetwork::start(&["bank0", "bank1"], &["alice", "bob", "carol"]).await;
    network.fund("alice", "bank0", "100.00").await;
    network.fund("bob", "bank1", "0").await;
    network.fund("carol", "bank0", "0").await;
    network
}

#[tokio::test]
async fn positions_move_with_committed_cross_bank_payments_only_and_settling_a_window_frees_them() {
    let network = three_users().await;
    let mut alice = network.gateway_client("alice");
    let mut admin = network.gateway_client("admin");
    assert!(positions(&mut admin).await.is_empty(), "nothing yet");

    let across = pay(&mut alice, "k-across", "bob", 2_500).await;
    assert_eq!(across.settlement_window_id, 1);
    pay(&mut alice, "k-within", "carol", 1_000).await;
    let (code, reason) = refusal(alice.pay(pay_request("k-too-much", "bob", 1_000_000)).await);
    assert_eq!(
        (code, reason.as_str()),
        (Code::FailedPrecondition, "insufficient_funds")
    );
    let rows = positions(&mut admin).await;
    assert_eq!(rows["bank0"], (2_500, 0, None, None), "{rows:?}");
    assert_eq!(rows["bank1"], (-2_500, 0, None, None), "{rows:?}");

    // Admin only.
    assert_eq!(
        alice
            .get_positions(pb::GetPositionsRequest {})
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    // The open window's provisional report, then close it: the statement.
    let open = admin
        .get_settlement_report(pb::GetSettlementReportRequest { window_id: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        open.window.as_ref().unwrap().state,
        pb::SettlementWindowState::Open as i32
    );
    let (code, text) = client_text(&network, "admin", &["settlement", "close"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("SETTLEMENT STATEMENT — window 1 (CLOSED)"),
        "{text}"
    );
    assert!(
        text.contains("25.00 USD paid = 25.00 USD received (balanced)"),
        "{text}"
    );
    let closed = admin
        .get_settlement_report(pb::GetSettlementReportRequest { window_id: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(closed.bilateral.len(), 1);
    assert_eq!(closed.bilateral[0].payer_bank_id, "bank0");
    assert_eq!(closed.bilateral[0].amount, usd(2_500));
    assert_eq!(closed.bilateral[0].payments, 1);
    let nets: Vec<(String, i64)> = closed
        .nets
        .iter()
        .map(|net| (net.bank_id.clone(), net.net.as_ref().unwrap().amount_minor))
        .collect();
    assert_eq!(
        nets,
        vec![("bank0".into(), 2_500), ("bank1".into(), -2_500)]
    );

    // Window 2 is open; a payment now lands there and stays after window 1 is settled.
    let later = pay(&mut alice, "k-later", "bob", 500).await;
    assert_eq!(later.settlement_window_id, 2);
    let (code, settled) = network.client("admin", &["settlement", "settle", "1"]);
    assert_eq!(code, 0, "{settled}");
    assert_eq!(settled["window"]["state"], "SETTLED");
    assert_eq!(standing(&mut admin, "bank0").await, (500, 0));
    assert_eq!(standing(&mut admin, "bank1").await, (-500, 0));
    let (code, windows) = network.client("admin", &["settlement", "windows"]);
    assert_eq!(code, 0, "{windows}");
    let states: Vec<(u64, &str)> = windows["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|window| {
            (
                window["window_id"].as_u64().unwrap(),
                window["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(states, vec![(2, "OPEN"), (1, "SETTLED")]);

    // Clear refusals: closing or settling the wrong window, unknown windows, bad input.
    let close = |window_id| pb::CloseSettlementWindowRequest { window_id };
    assert_eq!(
        refusal(admin.close_settlement_window(close(1)).await),
        (Code::FailedPrecondition, "window_not_open".into())
    );
    assert_eq!(
        admin
            .close_settlement_window(close(99))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let settle = |window_id| pb::MarkSettledRequest { window_id };
    assert_eq!(
        refusal(admin.mark_settled(settle(1)).await),
        (Code::FailedPrecondition, "window_already_settled".into())
    );
    assert_eq!(
        refusal(admin.mark_settled(settle(2)).await),
        (Code::FailedPrecondition, "window_open".into())
    );
    assert_eq!(
        admin.mark_settled(settle(99)).await.unwrap_err().code(),
        Code::NotFound
    );
    let missing = admin.mark_settled(settle(0)).await.unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(missing.message().contains("window_id"), "{missing:?}");
    let report = |window_id| pb::GetSettlementReportRequest { window_id };
    assert_eq!(
        admin
            .get_settlement_report(report(99))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let missing = admin.get_settlement_report(report(0)).await.unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(missing.message().contains("window_id"), "{missing:?}");
    let bad_page = pb::ListSettlementWindowsRequest {
        page_size: 1,
        page_token: "nonsense".into(),
    };
    let refused = admin.list_settlement_windows(bad_page).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("page_token"), "{refused:?}");
    // A client may call none of it.
    assert_eq!(
        alice
            .close_settlement_window(close(0))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        alice.mark_settled(settle(1)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        alice
            .get_settlement_report(report(1))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        alice
            .list_settlement_windows(pb::ListSettlementWindowsRequest::default())
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    let report = assert_audit_clean(&network).await;
    assert_eq!(report["settlement"]["windows"], 2, "{report}");
    assert_eq!(report["settlement"]["open_window"], 2, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_that_allows_three_of_five_concurrent_payments_refuses_two_before_any_bank_is_asked()
{
    let network = three_users().await;
    let mut admin = network.gateway_client("admin");
    let cap = |cap_minor| pb::SetNetDebitCapRequest {
        bank_id: "bank0".into(),
        currency: "USD".into(),
        cap_minor,
    };
    let set = admin
        .set_net_debit_cap(cap(Some(3_000)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.cap, usd(3_000));
    assert_eq!(set.headroom, usd(3_000));

    // Unhappy paths of SetNetDebitCap.
    let refused = admin
        .set_net_debit_cap(pb::SetNetDebitCapRequest {
            bank_id: "bank9".into(),
            ..cap(Some(1))
        })
        .await;
    assert_eq!(refusal(refused), (Code::NotFound, "unknown_bank".into()));
    let negative = admin.set_net_debit_cap(cap(Some(-1))).await.unwrap_err();
    assert_eq!(negative.code(), Code::InvalidArgument);
    assert!(negative.message().contains("cap_minor"), "{negative:?}");
    let currency = admin
        .set_net_debit_cap(pb::SetNetDebitCapRequest {
            currency: "XXX".into(),
            ..cap(Some(1))
        })
        .await
        .unwrap_err();
    assert_eq!(currency.code(), Code::InvalidArgument);
    assert!(currency.message().contains("currency"), "{currency:?}");
    let empty_bank = admin
        .set_net_debit_cap(pb::SetNetDebitCapRequest {
            bank_id: String::new(),
            ..cap(Some(1))
        })
        .await
        .unwrap_err();
    assert_eq!(empty_bank.code(), Code::InvalidArgument);
    assert!(empty_bank.message().contains("bank_id"), "{empty_bank:?}");
    assert_eq!(
        network
            .gateway_client("alice")
            .set_net_debit_cap(cap(None))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    // Five 10.00 payments at once from bank0 under a 30.00 cap.
    let attempts: Vec<_> = (0..5)
        .map(|index| {
            let mut alice = network.gateway_client("alice");
            tokio::spawn(async move {
                alice
                    .pay(pay_request(&format!("capped-{index}"), "bob", 1_000))
                    .await
            })
        })
        .collect();
    let mut committed = 0;
    let mut refused_keys = Vec::new();
    for (index, attempt) in attempts.into_iter().enumerate() {
        match attempt.await.unwrap() {
            Ok(payment) => {
                assert_eq!(
                    payment.into_inner().status,
                    pb::PaymentStatus::Committed as i32
                );
                committed += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert_eq!(
                    reason_of(&status).as_deref(),
                    Some("net_debit_cap_exceeded")
                );
                assert!(status.message().contains("bank0"), "{status:?}");
                refused_keys.push(format!("capped-{index}"));
            }
        }
    }
    assert_eq!((committed, refused_keys.len()), (3, 2));
    // Refused before anything was recorded: never in the log, so no bank was asked — no hold,
    // no leg, no journal entry beyond the three.
    assert_no_holds(&network).await;
    let mut alice = network.gateway_client("alice");
    let history = alice
        .list_history(pb::ListHistoryRequest::default())
        .await
        .unwrap()
        .into_inner()
        .payments;
    assert_eq!(history.len(), 3, "the refused payments were never recorded");
    for key in &refused_keys {
        assert_eq!(
            alice
                .get_payment_by_key(pb::GetPaymentByKeyRequest {
                    idempotency_key: key.clone()
                })
                .await
                .unwrap_err()
                .code(),
            Code::NotFound,
            "{key} unused"
        );
    }
    assert_eq!(network.available_minor("alice"), 7_000);
    assert_eq!(network.available_minor("bob"), 3_000);
    let rows = positions(&mut admin).await;
    assert_eq!(rows["bank0"], (3_000, 0, Some(3_000), Some(0)), "{rows:?}");

    // Within one bank the cap does not apply.
    pay(&mut alice, "within", "carol", 500).await;
    // The CLI keeps a payment refused over the cap in its outbox (nothing was recorded), to
    // be sent again with its key.
    let (code, queued) = network.client(
        "alice",
        &[
            "pay",
            "--to",
            "bob",
            "--amount",
            "10.00",
            "--key",
            "cli-capped",
        ],
    );
    assert_eq!(code, 75, "{queued}");
    assert_eq!(queued["state"], "queued", "{queued}");
    assert!(
        queued["error"].as_str().unwrap().contains("net debit cap"),
        "{queued}"
    );

    // Settling the window frees the cap: the same keys now pay.
    admin
        .close_settlement_window(pb::CloseSettlementWindowRequest { window_id: 1 })
        .await
        .unwrap();
    admin
        .mark_settled(pb::MarkSettledRequest { window_id: 1 })
        .await
        .unwrap();
    assert_eq!(
        positions(&mut admin).await["bank0"],
        (0, 0, Some(3_000), Some(3_000))
    );
    for key in &refused_keys {
        pay(&mut alice, key, "bob", 1_000).await;
    }
    let (code, synced) = network.client("alice", &["sync"]);
    assert_eq!(code, 0, "{synced}");
    assert_eq!(synced["results"][0]["state"], "succeeded", "{synced}");
    assert_eq!(network.available_minor("bob"), 6_000);
    // Removing the cap (the CLI): unlimited.
    let (code, removed) =
        network.client("admin", &["settlement", "cap", "--bank", "bank0", "--none"]);
    assert_eq!(code, 0, "{removed}");
    assert_eq!(removed["position"]["cap"], Value::Null);
    let (code, capped) = network.client(
        "admin",
        &["settlement", "cap", "--bank", "bank0", "--amount", "12.50"],
    );
    assert_eq!(code, 0, "{capped}");
    assert_eq!(capped["position"]["cap"]["amount_minor"], 1_250);
    let (code, listed) = network.client("admin", &["settlement", "positions"]);
    assert_eq!(code, 0, "{listed}");
    assert_eq!(listed["positions"][0]["bank"], "bank0");
    assert_eq!(listed["positions"][0]["position"]["amount_minor"], 3_000);
    assert_audit_clean(&network).await;
}

#[tokio::test]
async fn gateway_killed_between_reservation_and_decision_and_between_decision_and_acks_stays_consistent(
) {
    let mut network = three_users().await;
    let mut admin = network.gateway_client("admin");

    // Killed with the reservation taken and both legs PREPARED, no decision written.
    network.stop_gateway();
    network.start_gateway(&[("STRIFE_CRASH_AT", "after_prepare")]);
    let (code, _) = network.client(
        "alice",
        &[
            "pay", "--to", "bob", "--amount", "12.50", "--key", "reserved",
        ],
    );
    assert_eq!(code, 75, "the gateway died mid-payment");
    // While it is down: the PENDING payment holds exactly its reservation (audit re-derives
    // the reservation from the PENDING cross-bank payments in the log).
    let (clean, report) = audit(&network);
    assert!(clean, "{report}");
    assert_eq!(report["payments_pending"], 1, "{report}");
    network.gateway = None;
    network.start_gateway(&[]);
    // Recovery aborted it (presumed abort) through the same decision write: released.
    let released = wait_until(Duration::from_secs(15), || async { audit(&network).0 }).await;
    assert!(released, "audit: {}", audit(&network).1);
    assert_eq!(standing(&mut admin, "bank0").await, (0, 0));
    assert_no_holds(&network).await;

    // Killed right after a durable COMMIT, before any phase-2 message.
    network.stop_gateway();
    network.start_gateway(&[("STRIFE_CRASH_AT", "after_decision")]);
    let (code, _) = network.client(
        "alice",
        &["pay", "--to", "bob", "--amount", "7.00", "--key", "decided"],
    );
    assert_eq!(code, 75);
    network.gateway = None;
    network.start_gateway(&[]);
    assert_audit_clean(&network).await;
    assert_eq!(standing(&mut admin, "bank0").await, (700, 0));
    assert_eq!(standing(&mut admin, "bank1").await, (-700, 0));
    assert_no_holds(&network).await;

    // The outbox retries "reserved" (its first attempt aborted): it pays once.
    let (code, synced) = network.client("alice", &["sync"]);
    assert_eq!(code, 0, "{synced}");
    assert_eq!(network.available_minor("bob"), 1_950);
    assert_eq!(standing(&mut admin, "bank0").await, (1_950, 0));
    assert_audit_clean(&network).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_windows_with_payments_in_flight_puts_each_in_exactly_one_and_closed_ones_never_change(
) {
    const USERS: [&str; 4] = ["u0", "u1", "u2", "u3"];
    const PER_USER: usize = 12;
    let network = ManualNetwork::start(&["bank0", "bank1"], &USERS).await;
    for (index, user) in USERS.iter().enumerate() {
        network
            .fund(user, ["bank0", "bank1"][index % 2], "100.00")
            .await;
    }
    let decided = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = USERS
        .iter()
        .enumerate()
        .map(|(index, user)| {
            let mut client = network.gateway_client(user);
            let decided = Arc::clone(&decided);
            // Pays the users at the other bank, alternately.
            let payees = [USERS[(index + 1) % 4], USERS[(index + 3) % 4]];
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for sequence in 0..PER_USER {
                    let request = pay_request(
                        &format!("w-{index}-{sequence}"),
                        payees[sequence % 2],
                        100 + sequence as i64,
                    );
                    let payment = client.pay(request).await.unwrap().into_inner();
                    ids.push(payment.payment_id);
                    decided.fetch_add(1, Ordering::SeqCst);
                }
                ids
            })
        })
        .collect();
    // Close a window each time another quarter of the payments is decided, while the rest run.
    let mut admin = network.gateway_client("admin");
    let total = USERS.len() * PER_USER;
    let mut closed = Vec::new();
    for quarter in 1..=3 {
        let reached = wait_until(Duration::from_secs(30), || {
            let decided = Arc::clone(&decided);
            async move { decided.load(Ordering::SeqCst) >= quarter * total / 4 }
        })
        .await;
        assert!(reached, "payments stalled");
        let report = admin
            .close_settlement_window(pb::CloseSettlementWindowRequest::default())
            .await
            .unwrap()
            .into_inner();
        closed.push(report);
    }
    let mut ids = Vec::new();
    for worker in workers {
        ids.extend(worker.await.unwrap());
    }
    assert_eq!(ids.len(), total);

    // Each payment is in exactly one window, and the windows' totals are exactly its payments.
    let mut by_window: BTreeMap<u64, Totals> = BTreeMap::new();
    for id in &ids {
        let payment = payment(&mut admin, id).await;
        assert_eq!(payment.status, pb::PaymentStatus::Committed as i32);
        assert!(
            (1..=4).contains(&payment.settlement_window_id),
            "{id} in window {}",
            payment.settlement_window_id
        );
        let entry = by_window
            .entry(payment.settlement_window_id)
            .or_default()
            .entry((payment.from_bank_id, payment.to_bank_id))
            .or_insert((0, 0));
        entry.0 += payment.amount.unwrap().amount_minor;
        entry.1 += 1;
    }
    for window_id in 1..=4u64 {
        let report = admin
            .get_settlement_report(pb::GetSettlementReportRequest { window_id })
            .await
            .unwrap()
            .into_inner();
        let totals: Totals = report
            .bilateral
            .iter()
            .map(|total| {
                (
                    (total.payer_bank_id.clone(), total.payee_bank_id.clone()),
                    (total.amount.as_ref().unwrap().amount_minor, total.payments),
                )
            })
            .collect();
        assert_eq!(
            totals,
            by_window.remove(&window_id).unwrap_or_default(),
            "window {window_id}"
        );
        let net_sum: i64 = report
            .nets
            .iter()
            .map(|net| net.net.as_ref().unwrap().amount_minor)
            .sum();
        assert_eq!(net_sum, 0, "window {window_id} nets to zero");
        if window_id <= 3 {
            // The report answered at close is the report now: a closed window never changes.
            assert_eq!(report, closed[window_id as usize - 1], "window {window_id}");
        }
    }
    assert!(by_window.is_empty(), "no payment outside windows 1–4");
    assert_audit_clean(&network).await;
}

#[tokio::test]
async fn refunds_full_partial_up_to_the_limit_with_their_links_and_every_refusal() {
    let network = three_users().await;
    let mut alice = network.gateway_client("alice");
    let mut bob = network.gateway_client("bob");
    let mut carol = network.gateway_client("carol");
    let mut admin = network.gateway_client("admin");
    let original = pay(&mut alice, "buy-1", "bob", 2_000).await;
    let id = original.payment_id.clone();

    // Partial, partial, then the rest (no amount).
    let first = bob
        .refund(refund_request(&id, "ref-1", Some(500)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.status, pb::PaymentStatus::Committed as i32);
    assert_eq!(first.refund_of, id);
    assert_eq!(
        (first.from_username.as_str(), first.to_username.as_str()),
        ("bob", "alice")
    );
    assert_eq!(
        (first.from_account.as_str(), first.to_account.as_str()),
        (original.to_account.as_str(), original.from_account.as_str())
    );
    assert_eq!(first.memo, "returned goods");
    assert_eq!(payment(&mut alice, &id).await.refunded, usd(500));
    // The same key again: the same refund, nothing more moves.
    let replay = bob
        .refund(refund_request(&id, "ref-1", Some(500)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replay, first);
    // The same key for another amount is a conflict, naming the key.
    let conflict = bob
        .refund(refund_request(&id, "ref-1", Some(600)))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::InvalidArgument);
    assert!(conflict.message().contains("ref-1"), "{conflict:?}");
    bob.refund(refund_request(&id, "ref-2", Some(700)))
        .await
        .unwrap();
    let rest = bob
        .refund(refund_request(&id, "ref-3", None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.amount, usd(800), "the rest");
    let refunded = payment(&mut bob, &id).await;
    assert_eq!(refunded.refunded, usd(2_000));
    assert_eq!(
        refusal(bob.refund(refund_request(&id, "ref-4", Some(1))).await),
        (Code::FailedPrecondition, "refund_exceeds_payment".into())
    );
    assert_eq!(
        refusal(bob.refund(refund_request(&id, "ref-5", None)).await),
        (Code::FailedPrecondition, "refund_exceeds_payment".into())
    );
    assert_eq!(network.available_minor("alice"), 10_000);
    assert_eq!(network.available_minor("bob"), 0);

    // Who may refund: the payee and the admin; the payer is refused, a stranger cannot even
    // see the payment.
    let second = pay(&mut alice, "buy-2", "bob", 1_000).await;
    assert_eq!(
        alice
            .refund(refund_request(&second.payment_id, "mine", Some(100)))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        carol
            .refund(refund_request(&second.payment_id, "theirs", Some(100)))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    // A refund the payee cannot fund fails like any payment and refunds nothing.
    pay(&mut bob, "spend", "carol", 1_000).await;
    let (code, reason) = refusal(
        bob.refund(refund_request(&second.payment_id, "broke", Some(100)))
            .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::FailedPrecondition, "insufficient_funds")
    );
    assert_eq!(payment(&mut bob, &second.payment_id).await.refunded, None);
    assert_no_holds(&network).await;
    // bob has money again; the admin refunds 3.00 of the second payment for him.
    pay(&mut alice, "buy-2b", "bob", 500).await;
    let by_admin = admin
        .refund(refund_request(&second.payment_id, "admin-1", Some(300)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            by_admin.from_username.as_str(),
            by_admin.to_username.as_str()
        ),
        ("bob", "alice")
    );
    assert_eq!(
        payment(&mut bob, &second.payment_id).await.refunded,
        usd(300)
    );

    // A refund of an aborted payment, of a refund, of nothing; bad input.
    let aborted = alice
        .pay(pay_request("buy-3", "bob", 1_000_000))
        .await
        .unwrap_err();
    let aborted_id = aborted
        .metadata()
        .get(strife_common::metadata::PAYMENT_ID_KEY)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        refusal(bob.refund(refund_request(&aborted_id, "r-ab", None)).await),
        (Code::FailedPrecondition, "payment_not_committed".into())
    );
    assert_eq!(
        refusal(
            alice
                .refund(refund_request(&first.payment_id, "r-r", None))
                .await
        ),
        (Code::FailedPrecondition, "payment_is_a_refund".into())
    );
    assert_eq!(
        bob.refund(refund_request("no-such-payment", "r-0", None))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    for (request, field) in [
        (
            refund_request(&second.payment_id, "", None),
            "idempotency_key",
        ),
        (refund_request("", "k", None), "payment_id"),
        (refund_request(&second.payment_id, "k", Some(-5)), "amount"),
        (
            pb::RefundRequest {
                amount: Some(pb::Money {
                    amount_minor: 5,
                    currency: "EUR".into(),
                }),
                ..refund_request(&second.payment_id, "k", None)
            },
            "currency",
        ),
        (
            pb::RefundRequest {
                reason: "bad\u{202E}reason".into(),
                ..refund_request(&second.payment_id, "k", None)
            },
            "reason",
        ),
    ] {
        let refused = bob.refund(request).await.unwrap_err();
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{field}: {refused:?}"
        );
        assert!(refused.message().contains(field), "{field}: {refused:?}");
    }

    // The links show in history and in the CLI.
    let (code, history) = network.client("bob", &["history"]);
    assert_eq!(code, 0, "{history}");
    let rows = history["payments"].as_array().unwrap();
    assert!(
        rows.iter().any(|row| row["refund_of"] == id.as_str()),
        "{history}"
    );
    let (code, shown) = network.client("alice", &["payment", &id]);
    assert_eq!(code, 0, "{shown}");
    assert_eq!(shown["payment"]["refunded"]["amount_minor"], 2_000);
    let (code, text) = client_text(&network, "alice", &["payment", &id]);
    assert_eq!(code, 0);
    assert!(text.contains("refunded 20.00 USD"), "{text}");
    // The CLI refund: by the payee, with a key, in the payment's currency.
    let third = pay(&mut alice, "buy-4", "bob", 400).await;
    let (code, refunded) = network.client(
        "bob",
        &[
            "refund",
            &third.payment_id,
            "--amount",
            "1.50",
            "--reason",
            "scratched",
            "--key",
            "cli-1",
        ],
    );
    assert_eq!(code, 0, "{refunded}");
    assert_eq!(refunded["refund"]["amount"]["amount_minor"], 150);
    assert_eq!(refunded["refund"]["refund_of"], third.payment_id.as_str());
    let (code, again) = network.client("bob", &["refund", &third.payment_id, "--key", "cli-1"]);
    assert_eq!(code, 1, "the key was used for 1.50, not the rest: {again}");
    assert_eq!(again["code"], "InvalidArgument");
    let (code, rest) = network.client("bob", &["refund", &third.payment_id]);
    assert_eq!(code, 0, "{rest}");
    assert_eq!(rest["refund"]["amount"]["amount_minor"], 250);
    assert_audit_clean(&network).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_partial_refunds_on_two_connections_never_exceed_the_original() {
    let network = three_users().await;
    let mut alice = network.gateway_client("alice");
    // bob has money of his own at bank1 too (so funding is never what limits him).
    pay(&mut alice, "fund-bob", "bob", 5_000).await;
    let original = pay(&mut alice, "buy", "bob", 1_000).await;
    let connections = [network.gateway_client("bob"), network.gateway_client("bob")];
    let attempts: Vec<_> = (0..6)
        .map(|index| {
            let mut bob = connections[index % 2].clone();
            let request = refund_request(&original.payment_id, &format!("part-{index}"), Some(300));
            tokio::spawn(async move { bob.refund(request).await })
        })
        .collect();
    let mut succeeded = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(refund) => {
                assert_eq!(
                    refund.into_inner().status,
                    pb::PaymentStatus::Committed as i32
                );
                succeeded += 1;
            }
            Err(status) => assert_eq!(
                refusal::<()>(Err(status)),
                (Code::FailedPrecondition, "refund_exceeds_payment".into())
            ),
        }
    }
    assert_eq!(succeeded, 3, "3 × 3.00 fit in 10.00, a fourth does not");
    assert_eq!(
        payment(&mut alice, &original.payment_id).await.refunded,
        usd(900)
    );
    assert_eq!(network.available_minor("alice"), 10_000 - 6_000 + 900);
    assert_no_holds(&network).await;
    let report = assert_audit_clean(&network).await;
    assert_eq!(report["settlement"]["refunds"], 3, "{report}");
}

/// The same rules with the gateway on PostgreSQL, as replicas share it: a 30.00 cap lets
/// exactly three of five concurrent 10.00 payments through (sent through both replicas, so
/// the reservations race in two processes), closing and settling the window on different
/// replicas frees the cap for the refused keys, refunds (partial, the rest, one too many)
/// never return more than was paid, and `strife audit --store` re-derives every position,
/// window total and refund amount from the shared log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_replicas_a_cap_refuses_two_of_five_settling_frees_it_and_refunds_stay_within()
{
    use crate::support::replicas::ReplicaNetwork;
    let network = ReplicaNetwork::start(2, &["bank0", "bank1"], &["alice", "bob", "carol"]).await;
    network.fund("alice", "bank0", "100.00").await;
    network.fund("bob", "bank1", "0").await;
    network.fund("carol", "bank0", "0").await;
    let timeout = Duration::from_secs(20);
    let mut admin = network.client_at(0, "admin", timeout);
    admin
        .set_net_debit_cap(pb::SetNetDebitCapRequest {
            bank_id: "bank0".into(),
            currency: "USD".into(),
            cap_minor: Some(3_000),
        })
        .await
        .unwrap();

    let attempts: Vec<_> = (0..5)
        .map(|index| {
            let mut alice = network.client_at(index % 2, "alice", timeout);
            tokio::spawn(async move {
                alice
                    .pay(pay_request(&format!("capped-{index}"), "bob", 1_000))
                    .await
            })
        })
        .collect();
    let mut committed = Vec::new();
    let mut refused_keys = Vec::new();
    for (index, attempt) in attempts.into_iter().enumerate() {
        match attempt.await.unwrap() {
            Ok(payment) => committed.push(payment.into_inner()),
            Err(status) => {
                assert_eq!(
                    (status.code(), reason_of(&status).as_deref()),
                    (Code::FailedPrecondition, Some("net_debit_cap_exceeded")),
                    "{status:?}"
                );
                refused_keys.push(format!("capped-{index}"));
            }
        }
    }
    assert_eq!((committed.len(), refused_keys.len()), (3, 2));
    assert!(committed
        .iter()
        .all(|payment| payment.status == pb::PaymentStatus::Committed as i32));
    let mut other_admin = network.client_at(1, "admin", timeout);
    let rows = positions(&mut other_admin).await;
    assert_eq!(rows["bank0"], (3_000, 0, Some(3_000), Some(0)), "{rows:?}");
    assert_eq!(rows["bank1"].0, -3_000, "{rows:?}");

    // Closed on one replica, settled on the other: the cap is free again.
    let closed = other_admin
        .close_settlement_window(pb::CloseSettlementWindowRequest { window_id: 1 })
        .await
        .unwrap();
    drop(closed);
    admin
        .mark_settled(pb::MarkSettledRequest { window_id: 1 })
        .await
        .unwrap();
    assert_eq!(
        positions(&mut admin).await["bank0"],
        (0, 0, Some(3_000), Some(3_000))
    );
    let mut alice = network.client_at(1, "alice", timeout);
    for key in &refused_keys {
        pay(&mut alice, key, "bob", 1_000).await;
    }
    assert_eq!(network.available_minor("bob"), 5_000);

    // bob refunds the first payment: 4.00, then the rest, then nothing is left.
    let original = &committed[0].payment_id;
    let mut bob = network.client_at(0, "bob", timeout);
    let partial = bob
        .refund(refund_request(original, "refund-1", Some(400)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(partial.status, pb::PaymentStatus::Committed as i32);
    let mut bob_elsewhere = network.client_at(1, "bob", timeout);
    let rest = bob_elsewhere
        .refund(refund_request(original, "refund-2", None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.amount, usd(600));
    let (code, reason) = refusal(
        bob.refund(refund_request(original, "refund-3", Some(1)))
            .await,
    );
    assert_eq!(
        (code, reason.as_str()),
        (Code::FailedPrecondition, "refund_exceeds_payment")
    );
    assert_eq!(network.available_minor("bob"), 4_000);
    assert_eq!(network.available_minor("alice"), 6_000);

    let report = network.assert_audit_clean(Duration::from_secs(30)).await;
    assert_eq!(report["settlement"]["windows"], 2, "{report}");
    assert_eq!(report["settlement"]["settled_windows"], 1, "{report}");
    assert_eq!(report["settlement"]["open_window"], 2, "{report}");
    assert_eq!(report["settlement"]["refunds"], 2, "{report}");
}

/// A payment's refunds are listed to its payer, its payee and the admin, newest first and a
/// page at a time; to anyone else the payment does not exist.
#[tokio::test]
async fn a_payments_refunds_are_listed_to_its_parties_newest_first() {
    let network = three_users().await;
    let mut alice = network.gateway_client("alice");
    let mut bob = network.gateway_client("bob");
    let original = pay(&mut alice, "listed", "bob", 3_000).await;
    let id = original.payment_id.clone();
    let mut made = Vec::new();
    for (key, amount) in [("l-1", 100), ("l-2", 200), ("l-3", 300)] {
        let refund = bob
            .refund(refund_request(&id, key, Some(amount)))
            .await
            .unwrap();
        made.push(refund.into_inner().payment_id);
    }
    made.reverse();
    let list = |page_size: u32, page_token: String| pb::ListRefundsRequest {
        payment_id: id.clone(),
        page_size,
        page_token,
    };
    for client in [&mut alice, &mut bob, &mut network.gateway_client("admin")] {
        let listed = client
            .list_refunds(list(0, String::new()))
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<String> = listed
            .refunds
            .iter()
            .map(|r| r.payment_id.clone())
            .collect();
        assert_eq!(ids, made);
        assert!(listed.refunds.iter().all(|refund| refund.refund_of == id));
        assert!(listed.next_page_token.is_empty());
    }
    let first = alice
        .list_refunds(list(2, String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.refunds.len(), 2);
    let rest = alice
        .list_refunds(list(2, first.next_page_token.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.refunds[0].payment_id, made[2]);
    assert!(rest.next_page_token.is_empty());
    // Another user's token does not open; a stranger sees no payment.
    let (code, _) = refusal(bob.list_refunds(list(2, first.next_page_token)).await);
    assert_eq!(code, Code::InvalidArgument);
    let mut carol = network.gateway_client("carol");
    assert_eq!(
        refusal(carol.list_refunds(list(0, String::new())).await).0,
        Code::NotFound
    );
    // A refund has none of its own.
    let of_refund = pb::ListRefundsRequest {
        payment_id: made[0].clone(),
        ..pb::ListRefundsRequest::default()
    };
    assert!(alice
        .list_refunds(of_refund)
        .await
        .unwrap()
        .into_inner()
        .refunds
        .is_empty());
    // The CLI prints the same list.
    let (status, printed) = network.client("alice", &["refunds", &id]);
    assert_eq!(status, 0, "{printed}");
    assert_eq!(printed["refunds"].as_array().map(Vec::len), Some(3));
}

/// `ListPayments`: a client searches its own payments by status, direction, counterparty,
/// amount and metadata; the admin searches everyone's; the CLI takes the same filters.
#[tokio::test]
async fn payments_are_found_by_filters_and_only_the_callers() {
    let network = three_users().await;
    let mut alice = network.gateway_client("alice");
    let mut bob = network.gateway_client("bob");
    let to_bob = pay(&mut alice, "f-1", "bob", 1_500).await;
    let mut tagged = pay_request("f-2", "carol", 400);
    tagged.metadata = [("invoice".to_owned(), "INV-9".to_owned())].into();
    let to_carol = alice.pay(tagged).await.unwrap().into_inner();
    let back = bob
        .refund(refund_request(&to_bob.payment_id, "f-r", Some(100)))
        .await
        .unwrap()
        .into_inner();
    let search = |change: &dyn Fn(&mut pb::ListPaymentsRequest)| {
        let mut request = pb::ListPaymentsRequest::default();
        change(&mut request);
        request
    };
    let ids = |response: pb::ListPaymentsResponse| -> Vec<String> {
        response
            .payments
            .into_iter()
            .map(|payment| payment.payment_id)
            .collect()
    };
    let (back_id, carol_id, bob_id) = (
        back.payment_id.clone(),
        to_carol.payment_id.clone(),
        to_bob.payment_id.clone(),
    );
    let all = alice
        .list_payments(search(&|_| ()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ids(all),
        [back_id.clone(), carol_id.clone(), bob_id.clone()]
    );
    let sent = alice
        .list_payments(search(&|r| r.direction = pb::PaymentDirection::Sent as i32))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(sent), [carol_id.clone(), bob_id.clone()]);
    let with_bob = alice
        .list_payments(search(&|r| r.counterparty = "bob".into()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(with_bob), [back_id.clone(), bob_id.clone()]);
    let invoice = alice
        .list_payments(search(&|r| {
            r.metadata_key = "invoice".into();
            r.metadata_value = "INV-9".into();
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(invoice), std::slice::from_ref(&carol_id));
    let large = alice
        .list_payments(search(&|r| r.min_amount_minor = 1_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(large), std::slice::from_ref(&bob_id));
    // Carol sees only her own; the admin sees everyone's, or one user's.
    let mut carol = network.gateway_client("carol");
    let carols = carol
        .list_payments(search(&|_| ()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(carols), std::slice::from_ref(&carol_id));
    let mut admin = network.gateway_client("admin");
    let everyone = admin
        .list_payments(search(&|_| ()))
        .await
        .unwrap()
        .into_inner();
    assert!(everyone.payments.len() >= 3, "{}", everyone.payments.len());
    let bobs = admin
        .list_payments(search(&|r| r.username = "bob".into()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(bobs), [back_id, bob_id]);
    // The CLI's flags.
    let (status, printed) = network.client(
        "alice",
        &[
            "payments",
            "--direction",
            "sent",
            "--meta",
            "invoice=INV-9",
            "--status",
            "committed",
        ],
    );
    assert_eq!(status, 0, "{printed}");
    assert_eq!(printed["payments"][0]["payment_id"], carol_id.as_str());
    assert_eq!(printed["payments"].as_array().map(Vec::len), Some(1));
    let (status, refused) = network.client("alice", &["payments", "--since", "yesterday"]);
    assert_ne!(status, 0, "{refused}");
}
