//! The bank as a 2PC participant, end to end: the real `strife bank` process over mutual TLS
//! with certificates from `strife setup`, its real SQLite file, SIGKILL for crashes.

use crate::support::{BankStart, Network};
use strife_proto::v1::{self as pb, bank_client::BankClient};
use tonic::transport::Channel;
use tonic::Code;

fn usd(amount_minor: i64) -> Option<pb::Money> {
    Some(pb::Money {
        amount_minor,
        currency: "USD".into(),
    })
}

async fn open_account(
    client: &mut BankClient<Channel>,
    request_id: &str,
    owner: &str,
    deposit_minor: i64,
) -> pb::Account {
    client
        .open_account(pb::OpenAccountRequest {
            request_id: request_id.into(),
            owner: owner.into(),
            holder_name: owner.to_uppercase(),
            currency: "USD".into(),
            opening_deposit_minor: deposit_minor,
        })
        .await
        .expect("open account")
        .into_inner()
}

fn prepare_request(
    payment_id: &str,
    role: pb::LegRole,
    account: &str,
    amount_minor: i64,
) -> pb::PrepareRequest {
    pb::PrepareRequest {
        payment_id: payment_id.into(),
        role: role as i32,
        account_number: account.into(),
        amount: usd(amount_minor),
        decision_deadline_unix_ms: strife_common::time::now_unix_ms() + 60_000,
        owner: String::new(),
    }
}

fn leg(payment_id: &str, role: pb::LegRole) -> pb::LegRequest {
    pb::LegRequest {
        settle_minor: 0,
        payment_id: payment_id.into(),
        role: role as i32,
    }
}

async fn balance(client: &mut BankClient<Channel>, account: &str) -> pb::Account {
    client
        .get_balance(pb::GetBalanceRequest {
            account_number: account.into(),
        })
        .await
        .expect("balance")
        .into_inner()
}

async fn journal_sum(client: &mut BankClient<Channel>, account: &str) -> i64 {
    client
        .list_journal(pb::ListJournalRequest {
            account_number: account.into(),
            after_seq: 0,
            limit: 0,
        })
        .await
        .expect("journal")
        .into_inner()
        .entries
        .iter()
        .map(|entry| entry.delta_minor)
        .sum()
}

#[tokio::test]
async fn prepare_commit_moves_money_once_and_every_step_is_idempotent() {
    let network = Network::setup(&["bank0"], &[]);
    let bank = BankStart::new(&network, "bank0").start();
    let mut client = network.gateway_bank_client(&bank.id, &bank.address.to_string());
    let payer = open_account(&mut client, "open-1", "alice", 10_000).await;
    let payee = open_account(&mut client, "open-2", "bob", 0).await;
    assert_eq!(payer.bank_id, "bank0");

    for _ in 0..2 {
        let debit = client
            .prepare(prepare_request(
                "pay-1",
                pb::LegRole::Debit,
                &payer.account_number,
                2_500,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(debit.vote_yes);
        let credit = client
            .prepare(prepare_request(
                "pay-1",
                pb::LegRole::Credit,
                &payee.account_number,
                2_500,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(credit.vote_yes);
    }
    let held = balance(&mut client, &payer.account_number).await;
    assert_eq!(
        (held.balance_minor, held.held_minor, held.available_minor),
        (10_000, 2_500, 7_500)
    );
    assert_eq!(
        balance(&mut client, &payee.account_number)
            .await
            .available_minor,
        0,
        "a prepared credit is not spendable"
    );

    for _ in 0..2 {
        let committed = client
            .commit(leg("pay-1", pb::LegRole::Debit))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(committed.state, pb::LegState::Committed as i32);
        client
            .commit(leg("pay-1", pb::LegRole::Credit))
            .await
            .unwrap();
    }
    let payer_after = balance(&mut client, &payer.account_number).await;
    let payee_after = balance(&mut client, &payee.account_number).await;
    assert_eq!(
        (payer_after.balance_minor, payer_after.held_minor),
        (7_500, 0)
    );
    assert_eq!(payee_after.balance_minor, 2_500);
    assert_eq!(journal_sum(&mut client, &payer.account_number).await, 7_500);
    assert_eq!(journal_sum(&mut client, &payee.account_number).await, 2_500);

    let status = client
        .get_leg(leg("pay-1", pb::LegRole::Credit))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.state, pb::LegState::Committed as i32);
    assert_eq!(status.amount, usd(2_500));

    let refused = client
        .abort(leg("pay-1", pb::LegRole::Debit))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::FailedPrecondition,
        "abort of a committed leg is refused"
    );
}

#[tokio::test]
async fn abort_releases_the_hold_and_a_late_prepare_votes_no() {
    let network = Network::setup(&["bank0"], &[]);
    let bank = BankStart::new(&network, "bank0").start();
    let mut client = network.gateway_bank_client(&bank.id, &bank.address.to_string());
    let payer = open_account(&mut client, "open-1", "alice", 1_000).await;

    client
        .prepare(prepare_request(
            "p1",
            pb::LegRole::Debit,
            &payer.account_number,
            1_000,
        ))
        .await
        .unwrap();
    for _ in 0..2 {
        let aborted = client
            .abort(leg("p1", pb::LegRole::Debit))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(aborted.state, pb::LegState::Aborted as i32);
    }
    assert_eq!(
        balance(&mut client, &payer.account_number)
            .await
            .available_minor,
        1_000
    );

    // The coordinator gave up before this bank saw the prepare: the abort leaves a tombstone.
    let tombstone = client
        .abort(leg("p2", pb::LegRole::Debit))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tombstone.reason_code, "aborted_before_prepare");
    let late = client
        .prepare(prepare_request(
            "p2",
            pb::LegRole::Debit,
            &payer.account_number,
            10,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!late.vote_yes);
    assert_eq!(
        balance(&mut client, &payer.account_number).await.held_minor,
        0
    );

    let refused = client
        .commit(leg("p2", pb::LegRole::Debit))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::FailedPrecondition,
        "commit of an aborted leg is refused loudly"
    );
    assert_eq!(
        balance(&mut client, &payer.account_number)
            .await
            .balance_minor,
        1_000
    );
}

#[tokio::test]
async fn no_votes_are_persisted_with_their_reason() {
    let network = Network::setup(&["bank0"], &[]);
    let bank = BankStart::new(&network, "bank0").start();
    let mut client = network.gateway_bank_client(&bank.id, &bank.address.to_string());
    let payer = open_account(&mut client, "open-1", "alice", 500).await;

    let cases = [
        (
            "poor",
            payer.account_number.as_str(),
            501,
            "insufficient_funds",
        ),
        ("nowhere", "bank0-99999999", 1, "account_not_found"),
    ];
    for (payment_id, account, amount, reason_code) in cases {
        let vote = client
            .prepare(prepare_request(
                payment_id,
                pb::LegRole::Debit,
                account,
                amount,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(!vote.vote_yes);
        assert_eq!(vote.reason_code, reason_code);
        let stored = client
            .get_leg(leg(payment_id, pb::LegRole::Debit))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stored.state, pb::LegState::Aborted as i32);
        assert_eq!(stored.reason_code, reason_code);
    }
    let mut euros = prepare_request("euro", pb::LegRole::Debit, &payer.account_number, 1);
    euros.amount = Some(pb::Money {
        amount_minor: 1,
        currency: "EUR".into(),
    });
    let vote = client.prepare(euros).await.unwrap().into_inner();
    assert_eq!(vote.reason_code, "currency_mismatch");

    let rich = open_account(&mut client, "open-rich", "carol", i64::MAX).await;
    let vote = client
        .prepare(prepare_request(
            "overflow",
            pb::LegRole::Credit,
            &rich.account_number,
            1,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!vote.vote_yes);
    assert_eq!(vote.reason_code, "balance_overflow");
    assert_eq!(
        balance(&mut client, &payer.account_number).await.held_minor,
        0
    );
}

#[tokio::test]
async fn hundred_concurrent_debit_prepares_vote_yes_exactly_fifty_times() {
    let network = Network::setup(&["bank0"], &[]);
    let bank = BankStart::new(&network, "bank0").start();
    let mut client = network.gateway_bank_client(&bank.id, &bank.address.to_string());
    let payer = open_account(&mut client, "open-1", "alice", 50_000).await;

    let attempts: Vec<_> = (0..100)
        .map(|index| {
            let mut client = client.clone();
            let request = prepare_request(
                &format!("pay-{index}"),
                pb::LegRole::Debit,
                &payer.account_number,
                1_000,
            );
            tokio::spawn(async move {
                client
                    .prepare(request)
                    .await
                    .map(|response| response.into_inner().vote_yes)
            })
        })
        .collect();
    let mut yes = 0;
    for attempt in attempts {
        if attempt.await.unwrap().unwrap() {
            yes += 1;
        }
    }
    assert_eq!(yes, 50);
    let account = balance(&mut client, &payer.account_number).await;
    assert_eq!((account.held_minor, account.available_minor), (50_000, 0));
    let listed = client
        .list_accounts(pb::ListAccountsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.prepared_legs.len(), 50);
}

#[tokio::test]
async fn sigkill_after_yes_vote_keeps_the_hold_and_commit_applies_once() {
    let network = Network::setup(&["bank0"], &[]);
    let mut bank = BankStart::new(&network, "bank0").start();
    let mut client = network.gateway_bank_client(&bank.id, &bank.address.to_string());
    let payer = open_account(&mut client, "open-1", "alice", 10_000).await;
    let vote = client
        .prepare(prepare_request(
            "crash-1",
            pb::LegRole::Debit,
            &payer.account_number,
            4_000,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(vote.vote_yes);

    bank.process.kill();
    let bank = BankStart::new(&network, "bank0").start();
    let mut client = network.gateway_bank_client(&bank.id, &bank.address.to_string());
    let after_restart = balance(&mut client, &payer.account_number).await;
    assert_eq!(
        (after_restart.balance_minor, after_restart.held_minor),
        (10_000, 4_000),
        "the hold survived the crash"
    );

    for _ in 0..3 {
        client
            .commit(leg("crash-1", pb::LegRole::Debit))
            .await
            .unwrap();
    }
    let settled = balance(&mut client, &payer.account_number).await;
    assert_eq!((settled.balance_minor, settled.held_minor), (6_000, 0));
    assert_eq!(
        journal_sum(&mut client, &payer.account_number).await,
        settled.balance_minor
    );
    let entries = client
        .list_journal(pb::ListJournalRequest {
            account_number: payer.account_number.clone(),
            after_seq: 0,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let debits: Vec<_> = entries
        .iter()
        .filter(|entry| entry.payment_id == "crash-1")
        .collect();
    assert_eq!(debits.len(), 1, "commit applied exactly once");
    assert_eq!(debits[0].actor, "strife-gateway/gateway");
}

#[tokio::test]
async fn bad_input_gets_the_spec_statuses_and_changes_nothing() {
    let network = Network::setup(&["bank0"], &[]);
    let bank = BankStart::new(&network, "bank0").start();
    let mut client = network.gateway_bank_client(&bank.id, &bank.address.to_string());
    let payer = open_account(&mut client, "open-1", "alice", 1_000).await;
    let account = payer.account_number.as_str();

    let unknown = client
        .get_balance(pb::GetBalanceRequest {
            account_number: "bank0-404".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let unknown = client
        .update_account_details(pb::UpdateAccountDetailsRequest {
            account_number: "bank0-404".into(),
            holder_name: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let mut bad_prepares = Vec::new();
    for amount_minor in [0, -1, i64::MIN] {
        bad_prepares.push(prepare_request(
            "bad",
            pb::LegRole::Debit,
            account,
            amount_minor,
        ));
    }
    let mut unknown_currency = prepare_request("bad", pb::LegRole::Debit, account, 1);
    unknown_currency.amount = Some(pb::Money {
        amount_minor: 1,
        currency: "XXX".into(),
    });
    bad_prepares.push(unknown_currency);
    let mut no_amount = prepare_request("bad", pb::LegRole::Debit, account, 1);
    no_amount.amount = None;
    bad_prepares.push(no_amount);
    let mut no_role = prepare_request("bad", pb::LegRole::Debit, account, 1);
    no_role.role = pb::LegRole::Unspecified as i32;
    bad_prepares.push(no_role);
    bad_prepares.push(prepare_request("", pb::LegRole::Debit, account, 1));
    bad_prepares.push(prepare_request(
        &"x".repeat(1 << 20),
        pb::LegRole::Debit,
        account,
        1,
    ));
    for request in bad_prepares {
        let status = client.prepare(request).await.unwrap_err();
        assert!(
            matches!(
                status.code(),
                Code::InvalidArgument | Code::ResourceExhausted
            ),
            "{status:?}"
        );
    }
    let status = client
        .prepare(prepare_request("bad", pb::LegRole::Debit, account, 1))
        .await
        .unwrap();
    assert!(
        status.into_inner().vote_yes,
        "none of the bad requests left a leg behind under that id"
    );

    let bad_opens = [
        pb::OpenAccountRequest {
            request_id: "o".into(),
            owner: "bob".into(),
            holder_name: String::new(),
            currency: "XXX".into(),
            opening_deposit_minor: 0,
        },
        pb::OpenAccountRequest {
            request_id: "o".into(),
            owner: "bob".into(),
            holder_name: String::new(),
            currency: "USD".into(),
            opening_deposit_minor: -5,
        },
        pb::OpenAccountRequest {
            request_id: "o".into(),
            owner: "../bob".into(),
            holder_name: String::new(),
            currency: "USD".into(),
            opening_deposit_minor: 0,
        },
        pb::OpenAccountRequest {
            request_id: String::new(),
            owner: "bob".into(),
            holder_name: String::new(),
            currency: "USD".into(),
            opening_deposit_minor: 0,
        },
    ];
    for request in bad_opens {
        assert_eq!(
            client.open_account(request).await.unwrap_err().code(),
            Code::InvalidArgument
        );
    }
    let listed = client
        .list_accounts(pb::ListAccountsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.accounts.len(), 1, "no bad open created an account");

    let conflict = client
        .prepare(prepare_request("bad", pb::LegRole::Debit, account, 2))
        .await
        .unwrap_err();
    assert_eq!(
        conflict.code(),
        Code::InvalidArgument,
        "payment id reused with other parameters"
    );
    assert_eq!(balance(&mut client, account).await.held_minor, 1);
}

/// The three batch RPCs answer each item exactly as its single call would, in the order it was
/// sent, with a bad item failing alone; `LegBatch` carries both kinds in one call.
#[tokio::test]
async fn batches_answer_every_item_in_order_and_a_bad_item_fails_alone() {
    let network = Network::setup(&["bank0"], &[]);
    let bank = BankStart::new(&network, "bank0").start();
    let mut client = network.gateway_bank_client(&bank.id, &bank.address.to_string());
    let payer = open_account(&mut client, "open-1", "alice", 1_000).await;
    let payee = open_account(&mut client, "open-2", "bob", 0).await;
    let (debit, credit) = (pb::LegRole::Debit, pb::LegRole::Credit);

    // Phase 1 through PrepareBatch: a good leg, a zero amount, a leg the payer cannot fund.
    let results = client
        .prepare_batch(pb::PrepareBatchRequest {
            prepares: vec![
                prepare_request("pay-1", debit, &payer.account_number, 600),
                prepare_request("pay-bad", debit, &payer.account_number, 0),
                prepare_request("pay-2", debit, &payer.account_number, 600),
            ],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len(), 3);
    assert!(results[0].response.as_ref().unwrap().vote_yes);
    assert_eq!(
        results[1].error.as_ref().map(|error| error.code),
        Some(Code::InvalidArgument as i32)
    );
    let refused = results[2].response.as_ref().unwrap();
    assert!(!refused.vote_yes, "600 + 600 held on 1,000: {refused:?}");
    assert_eq!(refused.reason_code, "insufficient_funds");

    // LegBatch: commit pay-1's debit, prepare its credit, and a decision for a leg the bank
    // never saw (NOT_FOUND for a commit), all in one call.
    let decide = |payment_id: &str, role: pb::LegRole, commit: bool| pb::LegDecision {
        leg: Some(leg(payment_id, role)),
        commit,
    };
    let mixed = client
        .leg_batch(pb::LegBatchRequest {
            prepares: vec![prepare_request("pay-1", credit, &payee.account_number, 600)],
            decisions: vec![
                decide("pay-1", debit, true),
                decide("no-such-payment", debit, true),
                pb::LegDecision {
                    leg: None,
                    commit: true,
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((mixed.prepares.len(), mixed.decisions.len()), (1, 3));
    assert!(mixed.prepares[0].response.as_ref().unwrap().vote_yes);
    assert_eq!(
        mixed.decisions[0].status.as_ref().map(|leg| leg.state),
        Some(pb::LegState::Committed as i32)
    );
    assert_eq!(
        mixed.decisions[1].error.as_ref().map(|error| error.code),
        Some(Code::NotFound as i32)
    );
    assert_eq!(
        mixed.decisions[2].error.as_ref().map(|error| error.code),
        Some(Code::InvalidArgument as i32)
    );

    // FinishBatch: the credit commits; repeating the debit's commit changes nothing.
    let finished = client
        .finish_batch(pb::FinishBatchRequest {
            decisions: vec![decide("pay-1", credit, true), decide("pay-1", debit, true)],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert!(finished
        .iter()
        .all(|result| result.status.as_ref().map(|leg| leg.state)
            == Some(pb::LegState::Committed as i32)));
    assert_eq!(
        balance(&mut client, &payer.account_number)
            .await
            .balance_minor,
        400
    );
    assert_eq!(
        balance(&mut client, &payee.account_number)
            .await
            .balance_minor,
        600
    );
    assert_eq!(journal_sum(&mut client, &payer.account_number).await, 400);
    assert_eq!(journal_sum(&mut client, &payee.account_number).await, 600);

    // Over the limit, counting both lists of a LegBatch: refused whole, nothing run.
    let too_many = client
        .leg_batch(pb::LegBatchRequest {
            prepares: vec![prepare_request("pay-3", debit, &payer.account_number, 1); 200],
            decisions: vec![decide("pay-3", debit, false); 57],
        })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), Code::InvalidArgument);
    let held = balance(&mut client, &payer.account_number).await;
    assert_eq!((held.held_minor, held.available_minor), (0, 400));
}
