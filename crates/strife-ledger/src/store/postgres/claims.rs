//! Recording new payment attempts (not refunds) for many concurrent `Pay` calls at once: one
//! transaction claims every unused key of the batch, takes the cross-bank payments'
//! reservations on their payer banks' positions, and inserts the attempts. PostgreSQL's cost
//! is per statement and per transaction, and a bank's position row is held for one
//! transaction per *batch* instead of one per payment, so payments from one bank no longer
//! queue on its row one at a time.
//!
//! Per item the outcome is what the one-payment path gives: the attempt as recorded, `None`
//! when the key was already taken (the caller then reads what the key holds), or the
//! settlement refusal (a cap) — and a refused attempt leaves nothing written, its key
//! included, because the key's claim is deleted again in the same transaction.
//!
//! Lock order (see [`super::settle`]): idempotency keys, inserted sorted by (user, key), then
//! position rows sorted by (bank, currency). Two calls for the same key never share a
//! transaction: the later one goes in the next round and sees the earlier one's claim.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use deadpool_postgres::{GenericClient, Pool};
use strife_common::time::now_unix_ms;
use strife_common::Failure;

use super::batch::{answer_each, rounds, Item};
use super::read::{column, query_rows};
use super::server::Server;
use super::settle;
use crate::payment;
use crate::records::{metadata_to_json, PaymentRecord};
use crate::settlement;

/// (user, idempotency key).
type KeyOf = (String, String);

fn key_of(attempt: &PaymentRecord) -> KeyOf {
    (
        attempt.from.username.clone(),
        attempt.idempotency_key.clone(),
    )
}

/// Runs one batch of claims (the [`super::batch::Batcher`]'s runner).
pub(super) async fn claim_batch(
    server: Server,
    pool: Pool,
    items: Vec<Item<PaymentRecord, Option<PaymentRecord>>>,
) {
    for mut round in rounds(items, key_of) {
        round.sort_by_key(|item| key_of(&item.input));
        let attempts: Vec<&PaymentRecord> = round.iter().map(|item| &item.input).collect();
        let outcome = claim_round(&server, &pool, &attempts).await;
        answer_each(round, outcome, |answers, attempt| {
            answers.remove(&attempt.payment_id).unwrap_or_else(|| {
                Err(Failure::internal("idempotency", "a claim was not answered"))
            })
        });
    }
}

/// One transaction for `attempts` (distinct keys, sorted by key), tried again if PostgreSQL
/// aborts it in a lock conflict: the answer per payment id.
async fn claim_round(
    server: &Server,
    pool: &Pool,
    attempts: &[&PaymentRecord],
) -> Result<BTreeMap<String, Result<Option<PaymentRecord>, Failure>>, Failure> {
    const DOING: &str = "recording payment attempts";
    server
        .on(pool, DOING)
        .bounded_by_callers()
        .transaction(async |transaction, _| {
            let claimed = claim_keys(server, transaction, attempts).await?;
            let mut answers = BTreeMap::new();
            for attempt in attempts {
                if !claimed.contains(&attempt.payment_id) {
                    answers.insert(attempt.payment_id.clone(), Ok(None));
                }
            }
            let claimed: Vec<&PaymentRecord> = attempts
                .iter()
                .copied()
                .filter(|attempt| claimed.contains(&attempt.payment_id))
                .collect();
            let (accepted, refused) = reserve(server, transaction, &claimed).await?;
            unclaim(server, transaction, &refused).await?;
            for (attempt, failure) in refused {
                answers.insert(attempt.payment_id.clone(), Err(failure));
            }
            for stored in insert_attempts(server, transaction, &accepted).await? {
                answers.insert(stored.payment_id.clone(), Ok(Some(stored)));
            }
            Ok(answers)
        })
        .await
}

/// Inserts every key that is unused (in key order); the payment ids whose key this claimed.
async fn claim_keys<C: GenericClient>(
    server: &Server,
    client: &C,
    attempts: &[&PaymentRecord],
) -> Result<HashSet<String>, Failure> {
    const DOING: &str = "claiming idempotency keys";
    let users: Vec<&str> = attempts.iter().map(|a| a.from.username.as_str()).collect();
    let keys: Vec<&str> = attempts
        .iter()
        .map(|a| a.idempotency_key.as_str())
        .collect();
    let fingerprints: Vec<String> = attempts.iter().map(|a| payment::fingerprint(a)).collect();
    let ids: Vec<&str> = attempts.iter().map(|a| a.payment_id.as_str()).collect();
    query_rows(
        client,
        &server.failed(DOING),
        "INSERT INTO idempotency (username, key, fingerprint, payment_id, created_unix_ms)
             SELECT u.username, u.key, u.fingerprint, u.payment_id, $5
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
                 WITH ORDINALITY AS u (username, key, fingerprint, payment_id, position)
             ORDER BY u.position
             ON CONFLICT (username, key) DO NOTHING
             RETURNING payment_id",
        &[&users, &keys, &fingerprints, &ids, &now_unix_ms()],
        |row| column::<String>(row, 0),
    )
    .await
}

/// Takes the cross-bank attempts' reservations, in order, on their payer banks' locked
/// positions ([`settlement::reserve`]: the cap check and the reservation are one step);
/// returns the attempts to record and the refused ones with their refusal.
async fn reserve<'a, C: GenericClient>(
    server: &Server,
    client: &C,
    claimed: &[&'a PaymentRecord],
) -> Result<(Vec<&'a PaymentRecord>, Vec<(&'a PaymentRecord, Failure)>), Failure> {
    const DOING: &str = "reserving on bank positions";
    let failed = server.failed(DOING);
    let keys: BTreeSet<(String, String)> = claimed
        .iter()
        .filter(|attempt| settlement::is_cross_bank(attempt))
        .map(|attempt| (attempt.from.bank_id.clone(), attempt.currency.clone()))
        .collect();
    let mut positions = settle::lock_positions(client, &failed, &keys).await?;
    let mut accepted = Vec::with_capacity(claimed.len());
    let mut refused = Vec::new();
    for attempt in claimed {
        if !settlement::is_cross_bank(attempt) {
            accepted.push(*attempt);
            continue;
        }
        let key = (attempt.from.bank_id.clone(), attempt.currency.clone());
        let position = positions
            .get_mut(&key)
            .ok_or_else(|| Failure::internal("settlement", "the payer's position is not locked"))?;
        match settlement::reserve(position, attempt.amount_minor) {
            Ok(reserved) => {
                *position = reserved;
                accepted.push(*attempt);
            }
            Err(failure) => refused.push((*attempt, failure)),
        }
    }
    settle::write_positions(client, &failed, &positions).await?;
    Ok((accepted, refused))
}

/// Gives back the keys of refused attempts (claimed earlier in this transaction): a refusal
/// writes nothing, so a retry of the key is a new attempt.
async fn unclaim<C: GenericClient>(
    server: &Server,
    client: &C,
    refused: &[(&PaymentRecord, Failure)],
) -> Result<(), Failure> {
    if refused.is_empty() {
        return Ok(());
    }
    const DOING: &str = "releasing refused idempotency keys";
    let failed = server.failed(DOING);
    let users: Vec<&str> = refused
        .iter()
        .map(|(a, _)| a.from.username.as_str())
        .collect();
    let keys: Vec<&str> = refused
        .iter()
        .map(|(a, _)| a.idempotency_key.as_str())
        .collect();
    let statement = client
        .prepare_cached(
            "DELETE FROM idempotency AS i
             USING unnest($1::text[], $2::text[]) AS u (username, key)
             WHERE i.username = u.username AND i.key = u.key",
        )
        .await
        .map_err(failed)?;
    client
        .execute(&statement, &[&users, &keys])
        .await
        .map_err(failed)?;
    Ok(())
}

/// Inserts the accepted attempts as PENDING, in one statement; returns them as stored.
async fn insert_attempts<C: GenericClient>(
    server: &Server,
    client: &C,
    accepted: &[&PaymentRecord],
) -> Result<Vec<PaymentRecord>, Failure> {
    if accepted.is_empty() {
        return Ok(Vec::new());
    }
    const DOING: &str = "recording payment attempts";
    let failed = server.failed(DOING);
    let text = |field: fn(&PaymentRecord) -> &str| -> Vec<&str> {
        accepted.iter().map(|attempt| field(attempt)).collect()
    };
    let ids = text(|a| &a.payment_id);
    let keys = text(|a| &a.idempotency_key);
    let from_users = text(|a| &a.from.username);
    let from_banks = text(|a| &a.from.bank_id);
    let from_accounts = text(|a| &a.from.account_number);
    let to_users = text(|a| &a.to.username);
    let to_banks = text(|a| &a.to.bank_id);
    let to_accounts = text(|a| &a.to.account_number);
    let currencies = text(|a| &a.currency);
    let memos = text(|a| &a.memo);
    let metadata: Vec<String> = accepted
        .iter()
        .map(|a| metadata_to_json(&a.metadata))
        .collect();
    let coordinators = text(|a| &a.coordinator);
    let amounts: Vec<i64> = accepted.iter().map(|a| a.amount_minor).collect();
    let deadlines: Vec<i64> = accepted
        .iter()
        .map(|a| a.decision_deadline_unix_ms)
        .collect();
    let created: Vec<i64> = accepted.iter().map(|a| a.created_unix_ms).collect();
    let expires: Vec<Option<i64>> = accepted.iter().map(|a| a.expires_unix_ms).collect();
    let statement = client
        .prepare_cached(
            "INSERT INTO payments (payment_id, idempotency_key, from_user, from_bank,
                 from_account, to_user, to_bank, to_account, amount_minor, currency, memo,
                 status, decision_deadline_unix_ms, created_unix_ms, coordinator, metadata,
                 expires_unix_ms)
             SELECT u.payment_id, u.key, u.from_user, u.from_bank, u.from_account, u.to_user,
                 u.to_bank, u.to_account, u.amount_minor, u.currency, u.memo, 1, u.deadline,
                 u.created, u.coordinator, u.metadata, u.expires
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::text[], $7::text[], $8::text[], $9::bigint[], $10::text[],
                     $11::text[], $12::bigint[], $13::bigint[], $14::text[], $15::text[],
                     $16::bigint[])
                 WITH ORDINALITY AS u (payment_id, key, from_user, from_bank, from_account,
                     to_user, to_bank, to_account, amount_minor, currency, memo, deadline,
                     created, coordinator, metadata, expires, position)
             ORDER BY u.position
             RETURNING payment_id, seq",
        )
        .await
        .map_err(failed)?;
    let rows = client
        .query(
            &statement,
            &[
                &ids,
                &keys,
                &from_users,
                &from_banks,
                &from_accounts,
                &to_users,
                &to_banks,
                &to_accounts,
                &amounts,
                &currencies,
                &memos,
                &deadlines,
                &created,
                &coordinators,
                &metadata,
                &expires,
            ],
        )
        .await
        .map_err(failed)?;
    let by_id: BTreeMap<&str, &PaymentRecord> = accepted
        .iter()
        .map(|attempt| (attempt.payment_id.as_str(), *attempt))
        .collect();
    rows.iter()
        .map(|row| {
            let payment_id: String = column(row, 0)?;
            let attempt = by_id.get(payment_id.as_str()).ok_or_else(|| {
                Failure::internal("idempotency", "an inserted attempt was not asked for")
            })?;
            Ok(attempt.recorded_at(column(row, 1)?))
        })
        .collect()
}
