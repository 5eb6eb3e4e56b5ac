//! The store calls that concurrent payments make most, each as one statement (or, for new
//! attempts, one transaction) for a whole batch (see [`super::batch`]): user reads, account
//! reads, acknowledgements, and recording new attempts ([`super::claims`]). Each kind has one
//! statement in flight: calls that arrive while it runs all go in the next one, and fewer,
//! bigger statements are what PostgreSQL runs cheapest (measured on the branch that
//! introduced them: one per kind took 150–180 µs of PostgreSQL CPU per payment at concurrency
//! 256 where a statement per call took ≈ 600 µs).
//!
//! Lock order: the acknowledgement statement locks its rows sorted by payment id
//! (`ORDER BY payment_id FOR UPDATE`) before updating them, so two batches that touch the same
//! rows wait for each other instead of deadlocking.

use std::collections::{BTreeMap, HashMap};

use deadpool_postgres::Pool;

use super::batch::{answer_each, Batcher, Item};
use super::read::{account_from_row, column, query_rows, ACCOUNT_COLUMNS};
use super::server::Server;
use crate::records::{LinkedAccount, PaymentRecord, UserRecord};

/// Most calls one statement carries.
const MAX_ITEMS: usize = 256;
/// Statements of one kind in flight at once (each on its own connection).
const IN_FLIGHT: usize = 1;

/// One payment's acknowledged legs.
pub struct Ack {
    pub payment_id: String,
    pub debit: bool,
    pub credit: bool,
}

/// The statements a store shares among its callers, all on the relaxed pool (reads;
/// acknowledgements, whose loss only makes the retrier re-send a decision; PENDING records,
/// whose loss presumed abort covers).
pub struct Shared {
    pub users: Batcher<String, Option<UserRecord>>,
    pub accounts: Batcher<String, Vec<LinkedAccount>>,
    pub acks: Batcher<Ack, ()>,
    /// New attempts (not refunds) with their keys and reservations ([`super::claims`]).
    pub claims: Batcher<PaymentRecord, Option<PaymentRecord>>,
}

impl Shared {
    pub fn start(server: &Server, relaxed: &Pool) -> Self {
        fn with<I, O, Fut>(
            server: &Server,
            pool: &Pool,
            run: fn(Server, Pool, Vec<Item<I, O>>) -> Fut,
        ) -> Batcher<I, O>
        where
            I: Send + 'static,
            O: Send + 'static,
            Fut: std::future::Future<Output = ()> + Send + 'static,
        {
            let (server, pool) = (server.clone(), pool.clone());
            Batcher::start(MAX_ITEMS, IN_FLIGHT, move |items| {
                run(server.clone(), pool.clone(), items)
            })
        }
        Shared {
            users: with(server, relaxed, read_users),
            accounts: with(server, relaxed, read_accounts),
            acks: with(server, relaxed, acknowledge),
            claims: with(server, relaxed, super::claims::claim_batch),
        }
    }
}

async fn read_users(server: Server, pool: Pool, items: Vec<Item<String, Option<UserRecord>>>) {
    const DOING: &str = "reading users";
    let names: Vec<&str> = items.iter().map(|item| item.input.as_str()).collect();
    let result = server
        .on(&pool, DOING)
        .bounded_by_callers()
        .call(async |client, failed| {
            query_rows(
                client,
                failed,
                "SELECT username, role, password_hash FROM users WHERE username = ANY($1::text[])",
                &[&names],
                |row| {
                    let user = UserRecord {
                        username: column(row, 0)?,
                        role: column(row, 1)?,
                        password_hash: column(row, 2)?,
                    };
                    Ok((user.username.clone(), user))
                },
            )
            .await
        })
        .await;
    answer_each(items, result, |found: &mut HashMap<_, _>, name| {
        Ok(found.get(name).cloned())
    });
}

async fn read_accounts(server: Server, pool: Pool, items: Vec<Item<String, Vec<LinkedAccount>>>) {
    const DOING: &str = "reading accounts";
    let names: Vec<&str> = items.iter().map(|item| item.input.as_str()).collect();
    let result = server
        .on(&pool, DOING)
        .bounded_by_callers()
        .call(async |client, failed| {
            let accounts: Vec<LinkedAccount> = query_rows(
                client,
                failed,
                &format!(
                    "SELECT {} FROM accounts WHERE username = ANY($1::text[])
                 ORDER BY linked_unix_ms, bank_id, account_number",
                    ACCOUNT_COLUMNS
                ),
                &[&names],
                account_from_row,
            )
            .await?;
            let mut found: HashMap<String, Vec<LinkedAccount>> = HashMap::new();
            for account in accounts {
                found
                    .entry(account.username.clone())
                    .or_default()
                    .push(account);
            }
            Ok(found)
        })
        .await;
    answer_each(items, result, |found, name| {
        Ok(found.get(name).cloned().unwrap_or_default())
    });
}

async fn acknowledge(server: Server, pool: Pool, items: Vec<Item<Ack, ()>>) {
    const DOING: &str = "recording acknowledgements";
    // One row per payment (flags merged), sorted: the statement locks in this order.
    let mut merged: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    for item in &items {
        let flags = merged.entry(item.input.payment_id.as_str()).or_default();
        flags.0 |= item.input.debit;
        flags.1 |= item.input.credit;
    }
    let ids: Vec<&str> = merged.keys().copied().collect();
    let debits: Vec<bool> = merged.values().map(|flags| flags.0).collect();
    let credits: Vec<bool> = merged.values().map(|flags| flags.1).collect();
    let result = server
        .on(&pool, DOING)
        .bounded_by_callers()
        .call(async |client, failed| {
            let statement = client
                .prepare_cached(
                    "WITH a AS (
                     SELECT * FROM unnest($1::text[], $2::boolean[], $3::boolean[])
                         AS a (payment_id, debit, credit)
                 ),
                 locked AS MATERIALIZED (
                     SELECT payment_id FROM payments
                     WHERE payment_id = ANY($1::text[]) AND status <> 1
                     ORDER BY payment_id FOR UPDATE
                 )
                 UPDATE payments AS p SET debit_acked = p.debit_acked OR a.debit,
                     credit_acked = p.credit_acked OR a.credit
                 FROM a JOIN locked USING (payment_id)
                 WHERE p.payment_id = a.payment_id",
                )
                .await
                .map_err(failed)?;
            client
                .execute(&statement, &[&ids, &debits, &credits])
                .await
                .map_err(failed)?;
            Ok(())
        })
        .await;
    answer_each(items, result, |(), _| Ok(()));
}
