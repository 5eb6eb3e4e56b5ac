//! Payments through the real gateway and banks: across banks and within one, refusals that
//! leave no hold, Stripe-style idempotency (retries, conflicts, concurrent duplicates) and
//! paginated history.

use crate::support::network::{GatewayClient, ManualNetwork};
use strife_common::failure::reason_of;
use strife_common::metadata::PAYMENT_ID_KEY;
use strife_proto::v1 as pb;
use tonic::Code;

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

/// alice (100.00 at bank0), bob (0 at bank1), carol (0 at bank0).
async fn three_users() -> ManualNetwork {
    let network = ManualNetwork::start(&["bank0", "bank1"], &["alice", "bob", "carol"]).await;
    network.fund("alice", "bank0", "100.00").await;
    network.fund("bob", "bank1", "0").await;
    network.fund("carol", "bank0", "0").await;
    network
}

/// (balance, held) of every account at bank `index`, by owner.
async fn bank_view(network: &ManualNetwork, index: usize) -> Vec<(String, i64, i64)> {
    let listed = network
        .bank(index)
        .list_accounts(pb::ListAccountsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.prepared_legs.is_empty(),
        "no hold may stay behind: {:?}",
        listed.prepared_legs
    );
    listed
        .accounts
        .into_iter()
        .map(|account| (account.owner, account.balance_minor, account.held_minor))
        .collect()
}

async fn history(client: &mut GatewayClient) -> Vec<pb::Payment> {
    client
        .list_history(pb::ListHistoryRequest {
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .payments
}

#[tokio::test]
async fn payments_across_two_banks_and_within_one_move_money_on_both_sides() {
    let network = three_users().await;
    let mut alice = network.gateway_client("alice");
    let across = alice
        .pay(pay_request("k1", "bob", 2_500))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(across.status, pb::PaymentStatus::Committed as i32);
    assert_eq!(
        (across.from_bank_id.as_str(), across.to_bank_id.as_str()),
        ("bank0", "bank1")
    );
    let within = alice
        .pay(pay_request("k2", "carol", 1_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (within.from_bank_id.as_str(), within.to_bank_id.as_str()),
        ("bank0", "bank0")
    );

    let bank0 = bank_view(&network, 0).await;
    assert!(bank0.contains(&("alice".into(), 6_500, 0)), "{bank0:?}");
    assert!(bank0.contains(&("carol".into(), 1_000, 0)), "{bank0:?}");
    assert_eq!(bank_view(&network, 1).await, vec![("bob".into(), 2_500, 0)]);

    let alice_history = history(&mut alice).await;
    assert_eq!(
        alice_history
            .iter()
            .map(|payment| payment.payment_id.clone())
            .collect::<Vec<_>>(),
        vec![within.payment_id.clone(), across.payment_id.clone()]
    );
    let bob_history = history(&mut network.gateway_client("bob")).await;
    assert_eq!(bob_history.len(), 1);
    assert_eq!(bob_history[0].payment_id, across.payment_id);
    let fetched = network
        .gateway_client("bob")
        .get_payment(pb::GetPaymentRequest {
            payment_id: across.payment_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, across);
}

#[tokio::test]
async fn insufficient_funds_is_failed_precondition_with_a_reason_and_leaves_no_hold() {
    let network = three_users().await;
    let mut alice = network.gateway_client("alice");
    let refused = alice
        .pay(pay_request("big", "bob", 10_001))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason_of(&refused).as_deref(), Some("insufficient_funds"));
    let payment_id = refused
        .metadata()
        .get(PAYMENT_ID_KEY)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();

    assert!(bank_view(&network, 0)
        .await
        .contains(&("alice".into(), 10_000, 0)));
    assert_eq!(bank_view(&network, 1).await, vec![("bob".into(), 0, 0)]);
    let recorded = history(&mut alice).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].payment_id, payment_id);
    assert_eq!(recorded[0].status, pb::PaymentStatus::Aborted as i32);
    assert_eq!(recorded[0].reason_code, "insufficient_funds");

    // A refusal is final for its key: the retry gets the same answer and nothing else happens.
    let again = alice
        .pay(pay_request("big", "bob", 10_001))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(
        again
            .metadata()
            .get(PAYMENT_ID_KEY)
            .unwrap()
            .to_str()
            .unwrap(),
        payment_id
    );
    assert_eq!(history(&mut alice).await.len(), 1);
}

#[tokio::test]
async fn the_same_key_twice_moves_money_once_and_answers_identically() {
    let network = three_users().await;
    let mut alice = network.gateway_client("alice");
    let first = alice
        .pay(pay_request("once", "bob", 700))
        .await
        .unwrap()
        .into_inner();
    let second = alice
        .pay(pay_request("once", "bob", 700))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, second);
    assert_eq!(bank_view(&network, 1).await, vec![("bob".into(), 700, 0)]);

    let conflict = alice
        .pay(pay_request("once", "bob", 701))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::InvalidArgument);
    assert!(
        conflict.message().contains("idempotency_key"),
        "{}",
        conflict.message()
    );
    // Keys are per user: bob may use the same key for his own payment.
    let mut bob = network.gateway_client("bob");
    bob.pay(pay_request("once", "carol", 100)).await.unwrap();
    assert_eq!(bank_view(&network, 1).await, vec![("bob".into(), 600, 0)]);
}

#[tokio::test]
async fn twenty_concurrent_requests_with_one_key_move_money_exactly_once() {
    let network = three_users().await;
    let alice = network.gateway_client("alice");
    let attempts: Vec<_> = (0..20)
        .map(|_| {
            let mut client = alice.clone();
            tokio::spawn(async move { client.pay(pay_request("storm", "bob", 300)).await })
        })
        .collect();
    let mut succeeded = Vec::new();
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(payment) => succeeded.push(payment.into_inner().payment_id),
            Err(status) => assert_eq!(
                status.code(),
                Code::Aborted,
                "only 'in progress, retry' may fail: {status:?}"
            ),
        }
    }
    assert!(!succeeded.is_empty());
    succeeded.dedup();
    assert_eq!(succeeded.len(), 1, "every success names the same payment");
    assert_eq!(bank_view(&network, 1).await, vec![("bob".into(), 300, 0)]);
    assert!(bank_view(&network, 0)
        .await
        .contains(&("alice".into(), 9_700, 0)));
    assert_eq!(history(&mut alice.clone()).await.len(), 1);
}

#[tokio::test]
async fn history_pages_newest_first_without_gaps_or_repeats() {
    let network = three_users().await;
    let mut alice = network.gateway_client("alice");
    let mut paid = Vec::new();
    for index in 0..5 {
        paid.push(
            alice
                .pay(pay_request(&format!("page-{index}"), "bob", 100))
                .await
                .unwrap()
                .into_inner()
                .payment_id,
        );
    }
    paid.reverse();
    let mut seen = Vec::new();
    let mut token = String::new();
    for _ in 0..10 {
        let page = alice
            .list_history(pb::ListHistoryRequest {
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.payments.len() <= 2);
        seen.extend(page.payments.into_iter().map(|payment| payment.payment_id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen, paid);
    let bad_token = alice
        .list_history(pb::ListHistoryRequest {
            page_size: 2,
            page_token: "nonsense".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn bad_payment_requests_get_precise_statuses_and_change_nothing() {
    let network = three_users().await;
    let mut alice = network.gateway_client("alice");
    let cases = [
        (pay_request("z", "bob", 0), Code::InvalidArgument),
        (pay_request("n", "bob", -5), Code::InvalidArgument),
        (pay_request("self", "alice", 5), Code::InvalidArgument),
        (pay_request("", "bob", 5), Code::InvalidArgument),
        (
            pay_request(&"k".repeat(129), "bob", 5),
            Code::InvalidArgument,
        ),
        (pay_request("who", "nobody", 5), Code::NotFound),
        (
            pb::PayRequest {
                amount: Some(pb::Money {
                    amount_minor: 5,
                    currency: "XXX".into(),
                }),
                ..pay_request("cur", "bob", 5)
            },
            Code::InvalidArgument,
        ),
        (
            pb::PayRequest {
                amount: Some(pb::Money {
                    amount_minor: 5,
                    currency: "EUR".into(),
                }),
                ..pay_request("eur", "bob", 5)
            },
            Code::FailedPrecondition,
        ),
        (
            pb::PayRequest {
                from_bank_id: "bank9".into(),
                ..pay_request("bank", "bob", 5)
            },
            Code::NotFound,
        ),
        (
            pb::PayRequest {
                amount: None,
                ..pay_request("none", "bob", 5)
            },
            Code::InvalidArgument,
        ),
    ];
    for (request, expected) in cases {
        let status = alice.pay(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), expected, "{request:?}: {status:?}");
    }
    assert!(history(&mut alice).await.is_empty());
    assert!(bank_view(&network, 0)
        .await
        .contains(&("alice".into(), 10_000, 0)));
}

#[tokio::test]
async fn open_account_with_a_key_opens_once_and_a_conflicting_reuse_is_refused() {
    let network = ManualNetwork::start(&["bank0"], &["dave"]).await;
    network.fund("dave", "bank0", "10.00").await;
    let open = |deposit: &'static str| {
        network.client(
            "admin",
            &[
                "open-account",
                "--user",
                "dave",
                "--bank",
                "bank0",
                "--deposit",
                deposit,
                "--key",
                "fund-dave-bank0",
            ],
        )
    };

    // `fund` used this key: the retry returns the same account and deposits nothing more.
    let (code, again) = open("10.00");
    assert_eq!(code, 0, "{again}");
    let (code, other) = open("20.00");
    assert_ne!(code, 0, "{other}");
    assert_eq!(other["code"], "InvalidArgument", "{other}");

    let accounts: Vec<_> = network
        .bank(0)
        .list_accounts(pb::ListAccountsRequest {})
        .await
        .unwrap()
        .into_inner()
        .accounts
        .into_iter()
        .filter(|account| account.owner == "dave")
        .collect();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(
        accounts[0].account_number,
        again["account"].as_str().unwrap()
    );
    assert_eq!(accounts[0].balance_minor, 1_000);
}

#[tokio::test]
async fn memos_with_bidi_or_control_characters_are_refused_and_change_nothing() {
    let network = three_users().await;
    let mut alice = network.gateway_client("alice");
    let before = bank_view(&network, 0).await;
    for memo in [
        "invoice \u{202E}fdp.exe",
        "\u{2066}isolate\u{2069}",
        "mark\u{200F}",
        "arabic mark \u{061C}",
        "two\nlines",
        "bell\u{7}",
    ] {
        let request = pb::PayRequest {
            memo: memo.into(),
            ..pay_request("memo", "bob", 100)
        };
        let status = alice.pay(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{memo:?}: {status:?}");
        assert!(status.message().contains("memo"), "{status:?}");
    }
    assert_eq!(bank_view(&network, 0).await, before);
    assert!(history(&mut alice).await.is_empty(), "nothing was recorded");
    let fine = pb::PayRequest {
        memo: "Miete für März — 日本語".into(),
        ..pay_request("memo", "bob", 100)
    };
    alice
        .pay(fine)
        .await
        .expect("ordinary non-ASCII memos pass");
}

#[tokio::test]
async fn refused_payments_are_rate_limited_per_user_before_anything_is_written() {
    const LIMIT: usize = 60;
    let network = three_users().await;
    // carol has nothing, so every payment she makes is refused by her bank and stored.
    let mut carol = network.gateway_client("carol");
    for index in 0..LIMIT {
        let status = carol
            .pay(pay_request(&format!("poor-{index}"), "bob", 100))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    }
    let limited = carol
        .pay(pay_request("poor-over", "bob", 100))
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    assert!(
        limited.message().contains("refused payments"),
        "{limited:?}"
    );
    let mut stored = 0;
    let mut token = String::new();
    loop {
        let page = carol
            .list_history(pb::ListHistoryRequest {
                page_size: 100,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        stored += page.payments.len();
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        stored, LIMIT,
        "the refused-over-limit payment was not written"
    );
    // Others are not affected.
    network
        .gateway_client("alice")
        .pay(pay_request("alice-ok", "bob", 100))
        .await
        .expect("alice is not limited");
}

/// Bytes of the gateway's database with its WAL.
fn gateway_db_bytes(network: &ManualNetwork) -> u64 {
    let db = network.network.layout().gateway_db();
    let wal = db.with_extension("db-wal");
    [db, wal]
        .iter()
        .filter_map(|path| std::fs::metadata(path).ok())
        .map(|metadata| metadata.len())
        .sum()
}

#[tokio::test]
async fn a_burst_of_unpayable_payments_stores_at_most_the_refusal_budget() {
    // The outside attack: one user with 1.00 USD sends thousands of payments she cannot
    // afford from 16 concurrent callers. Refusals are decided by her bank, after the gateway
    // recorded each attempt, so attempts in flight must count against her budget.
    const LIMIT: usize = 60;
    const CALLERS: usize = 16;
    const PER_CALLER: usize = 250;
    let network = ManualNetwork::start(&["bank0", "bank1"], &["alice", "bob", "carol"]).await;
    network.fund("alice", "bank0", "100.00").await;
    network.fund("bob", "bank1", "0").await;
    network.fund("carol", "bank0", "1.00").await;
    let bytes_before = gateway_db_bytes(&network);
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let mut carol = network.gateway_client("carol");
            tokio::spawn(async move {
                let mut codes = Vec::with_capacity(PER_CALLER);
                for index in 0..PER_CALLER {
                    let key = format!("burst-{caller}-{index}");
                    let answer = carol.pay(pay_request(&key, "bob", 500)).await;
                    codes.push(answer.map_or_else(|status| status.code(), |_| Code::Ok));
                }
                codes
            })
        })
        .collect();
    let mut codes = Vec::new();
    for caller in callers {
        codes.extend(caller.await.unwrap());
    }
    let refused = codes
        .iter()
        .filter(|code| **code == Code::FailedPrecondition)
        .count();
    let limited = codes
        .iter()
        .filter(|code| **code == Code::ResourceExhausted)
        .count();
    assert_eq!(refused + limited, CALLERS * PER_CALLER, "{codes:?}");
    assert!(refused <= LIMIT, "{refused} refusals answered");
    let stored = history(&mut network.gateway_client("carol")).await.len();
    assert!(
        stored <= LIMIT,
        "{stored} refused payments stored from {} attempts",
        CALLERS * PER_CALLER
    );
    let grown = gateway_db_bytes(&network).saturating_sub(bytes_before);
    println!(
        "burst: {} attempts, {refused} refused and stored ({stored} in history), {limited} \
         limited before anything was written; gateway.db + WAL grew {grown} bytes",
        CALLERS * PER_CALLER
    );
    // Her money and the others' are untouched; alice still pays.
    assert_eq!(network.available_minor("carol"), 100);
    network
        .gateway_client("alice")
        .pay(pay_request("alice-during-burst", "bob", 100))
        .await
        .expect("alice is not limited");
}
