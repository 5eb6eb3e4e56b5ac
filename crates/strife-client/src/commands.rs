//! One function per client command. Each returns the exit status; output goes to stdout
//! (text or `--json`), errors read like sentences on stderr.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use strife_common::keys::new_key;
use strife_common::layout::{validate_name, Layout};
use strife_common::limits::validate_id;
use strife_common::money;
use strife_common::time::now_unix_ms;
use strife_proto::v1 as pb;
use tonic::Status;

use crate::args::{ClientArgs, ClientCommand, OpenAccountArgs};
use crate::outbox::{
    classify_refusal, is_retryable, resolve, FailureClass, Outbox, OutboxEntry, Reported,
    Resolution, State, TryOutcome,
};
use crate::render::{
    self, describe_payment, emit, explain, failed, money_json, payment_json, table, timestamp,
    usage, EXIT_QUEUED,
};
use crate::session::{connect, Gateway};

/// Longest a `sync --watch` sleeps between looks at the outbox.
const WATCH_POLL_MAX: Duration = Duration::from_secs(1);

fn outbox_path(args: &ClientArgs) -> std::path::PathBuf {
    Layout::new(&args.dir)
        .client_dir(&args.user)
        .join("outbox.db")
}

pub async fn dispatch(
    args: ClientArgs,
    event_body: crate::listen::EventBody,
) -> anyhow::Result<u8> {
    if let ClientCommand::Outbox = args.command {
        return show_outbox(&args);
    }
    let mut gateway = connect(&args)?;
    match &args.command {
        ClientCommand::Register { username } => register(&args, &mut gateway, username).await,
        ClientCommand::OpenAccount(open) => open_account(&args, &mut gateway, open).await,
        ClientCommand::Link {
            bank,
            account,
            holder_name,
        } => {
            let request = pb::LinkAccountRequest {
                bank_id: bank.clone(),
                account_number: account.clone(),
                holder_name: holder_name.clone(),
            };
            match gateway.link_account(request).await {
                Ok(linked) => {
                    let linked = linked.into_inner();
                    emit(
                        &args,
                        format!(
                            "linked {} account {} ({})",
                            linked.bank_id, linked.account_number, linked.currency
                        ),
                        json!({"ok": true, "bank": linked.bank_id, "account": linked.account_number, "currency": linked.currency, "holder_name": linked.holder_name}),
                    );
                    Ok(0)
                }
                Err(status) => Ok(failed(&args, &status)),
            }
        }
        ClientCommand::Balance { of } => {
            balance(&args, &mut gateway, of.clone().unwrap_or_default()).await
        }
        ClientCommand::Pay {
            to,
            amount,
            currency,
            from_bank,
            to_bank,
            key,
            memo,
            meta,
        } => {
            let entry = match payment_entry(
                to,
                amount,
                currency,
                from_bank,
                to_bank,
                key.clone(),
                memo,
                meta,
            ) {
                Ok(entry) => entry,
                Err(error) => return Ok(usage(&args, &error)),
            };
            pay(&args, &mut gateway, entry).await
        }
        ClientCommand::Authorize {
            to,
            amount,
            currency,
            expires_in,
            from_bank,
            to_bank,
            key,
            memo,
            meta,
        } => {
            let entry = match payment_entry(
                to,
                amount,
                currency,
                from_bank,
                to_bank,
                key.clone(),
                memo,
                meta,
            ) {
                Ok(entry) => entry,
                Err(error) => return Ok(usage(&args, &error)),
            };
            let request = pb::AuthorizeRequest {
                idempotency_key: entry.idempotency_key,
                to_username: entry.to_username,
                amount: Some(pb::Money {
                    amount_minor: entry.amount_minor,
                    currency: entry.currency,
                }),
                from_bank_id: entry.from_bank,
                to_bank_id: entry.to_bank,
                memo: entry.memo,
                metadata: entry.metadata.into_iter().collect(),
                expires_in_seconds: *expires_in,
            };
            crate::authorizations::authorize(&args, &mut gateway, request).await
        }
        ClientCommand::Capture { payment_id, amount } => {
            let ending = crate::authorizations::Ending::Capture(amount.clone());
            crate::authorizations::end(&args, &mut gateway, payment_id, ending).await
        }
        ClientCommand::Void { payment_id } => {
            let ending = crate::authorizations::Ending::Void;
            crate::authorizations::end(&args, &mut gateway, payment_id, ending).await
        }
        ClientCommand::History { limit } => history(&args, &mut gateway, *limit).await,
        ClientCommand::Payments {
            status,
            direction,
            counterparty,
            since,
            until,
            min,
            max,
            currency,
            meta,
            of,
            limit,
        } => {
            let search = crate::search::Search {
                status: *status,
                direction: *direction,
                counterparty: counterparty.clone(),
                since: since.clone(),
                until: until.clone(),
                min: min.clone(),
                max: max.clone(),
                currency: currency.clone(),
                meta: meta.clone(),
                of: of.clone(),
                limit: *limit,
            };
            let request = match search.request() {
                Ok(request) => request,
                Err(error) => return Ok(usage(&args, &error)),
            };
            match gateway.list_payments(request).await {
                Ok(response) => {
                    let payments = response.into_inner().payments;
                    let human = if payments.is_empty() {
                        "no payments match".to_owned()
                    } else {
                        payments_table(&payments)
                    };
                    let documents: Vec<_> = payments.iter().map(payment_json).collect();
                    emit(&args, human, json!({"ok": true, "payments": documents}));
                    Ok(0)
                }
                Err(status) => Ok(failed(&args, &status)),
            }
        }
        ClientCommand::Refunds { payment_id, limit } => {
            let request = pb::ListRefundsRequest {
                payment_id: payment_id.clone(),
                page_size: *limit,
                page_token: String::new(),
            };
            match gateway.list_refunds(request).await {
                Ok(response) => {
                    let refunds = response.into_inner().refunds;
                    let human = if refunds.is_empty() {
                        format!("payment {payment_id} has no refunds")
                    } else {
                        payments_table(&refunds)
                    };
                    let documents: Vec<_> = refunds.iter().map(payment_json).collect();
                    emit(&args, human, json!({"ok": true, "refunds": documents}));
                    Ok(0)
                }
                Err(status) => Ok(failed(&args, &status)),
            }
        }
        ClientCommand::Payment { payment_id } => {
            match gateway
                .get_payment(pb::GetPaymentRequest {
                    payment_id: payment_id.clone(),
                })
                .await
            {
                Ok(payment) => {
                    let payment = payment.into_inner();
                    emit(
                        &args,
                        describe_payment(&payment),
                        json!({"ok": true, "payment": payment_json(&payment)}),
                    );
                    Ok(0)
                }
                Err(status) => Ok(failed(&args, &status)),
            }
        }
        ClientCommand::Sync {
            watch,
            until_empty,
            max_seconds,
        } => {
            // A year stands for "no bound" (Ctrl-C ends a watcher); a plain run gets a minute.
            let default_secs = if *watch { 86_400 * 365 } else { 60 };
            let max_time = Duration::from_secs(max_seconds.unwrap_or(default_secs));
            sync(&args, &mut gateway, *watch, *until_empty, max_time).await
        }
        ClientCommand::Outbox => show_outbox(&args),
        ClientCommand::Refund {
            payment_id,
            amount,
            reason,
            key,
            meta,
        } => {
            let metadata = match parse_metadata(meta) {
                Ok(metadata) => metadata,
                Err(error) => return Ok(usage(&args, &error)),
            };
            let request = crate::settlement::RefundArgs {
                payment_id,
                amount: amount.as_deref(),
                reason,
                key: key.clone(),
                metadata,
            };
            crate::settlement::refund(&args, &mut gateway, request).await
        }
        ClientCommand::Settlement { command } => {
            crate::settlement::settlement(&args, &mut gateway, command).await
        }
        ClientCommand::ApiKey { command } => {
            crate::api_keys::api_key(&args, &mut gateway, command).await
        }
        ClientCommand::Listen { forward_to, follow } => {
            let target = match crate::listen::Target::parse(forward_to) {
                Ok(target) => target,
                Err(error) => return Ok(usage(&args, &error)),
            };
            let listened = crate::listen::listen(
                &args,
                &mut gateway,
                target,
                follow.since.clone(),
                crate::watch::WatchBounds::of(follow),
                event_body,
            );
            match listened.await? {
                Ok(()) => Ok(0),
                Err(status) => Ok(failed(&args, &status)),
            }
        }
        ClientCommand::Watch { follow } => {
            let watched = crate::watch::watch(
                &args,
                &mut gateway,
                follow.since.clone(),
                crate::watch::WatchBounds::of(follow),
            );
            match watched.await? {
                Ok(()) => Ok(0),
                Err(status) => Ok(failed(&args, &status)),
            }
        }
    }
}

fn new_password() -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("STRIFE_NEW_PASSWORD") {
        return Ok(password);
    }
    let first = rpassword::prompt_password("new password: ")
        .context("no new password: set STRIFE_NEW_PASSWORD or run in a terminal")?;
    let second = rpassword::prompt_password("repeat it: ")?;
    anyhow::ensure!(first == second, "the two passwords differ");
    Ok(first)
}

async fn register(args: &ClientArgs, gateway: &mut Gateway, username: &str) -> anyhow::Result<u8> {
    let password = new_password()?;
    match gateway
        .register_user(pb::RegisterUserRequest {
            username: username.into(),
            password,
        })
        .await
    {
        Ok(user) => {
            let user = user.into_inner();
            emit(
                args,
                format!("registered {} ({})", user.username, user.role),
                json!({"ok": true, "username": user.username, "role": user.role}),
            );
            Ok(0)
        }
        Err(status) => Ok(failed(args, &status)),
    }
}

async fn open_account(
    args: &ClientArgs,
    gateway: &mut Gateway,
    open: &OpenAccountArgs,
) -> anyhow::Result<u8> {
    let currency = money::currency(&open.currency)?;
    let deposit_minor = money::parse_amount_allow_zero(&open.deposit, currency)?;
    let key = open.key.clone().unwrap_or_else(new_key);
    let request = pb::GatewayOpenAccountRequest {
        username: open.username.clone(),
        bank_id: open.bank.clone(),
        currency: currency.code.into(),
        opening_deposit: Some(pb::Money {
            amount_minor: deposit_minor,
            currency: currency.code.into(),
        }),
        holder_name: open.holder_name.clone(),
        idempotency_key: key.clone(),
    };
    match gateway.open_account(request).await {
        Ok(account) => {
            let account = account.into_inner();
            emit(
                args,
                format!(
                    "opened {} account {} for {} with {} {}",
                    account.bank_id,
                    account.account_number,
                    account.username,
                    money::format_amount(deposit_minor, currency),
                    currency.code
                ),
                json!({"ok": true, "username": account.username, "bank": account.bank_id, "account": account.account_number, "currency": account.currency, "deposit_minor": deposit_minor, "key": key}),
            );
            Ok(0)
        }
        Err(status) => {
            let exit = failed(args, &status);
            if is_retryable(status.code()) {
                eprintln!(
                    "The account may or may not have been opened: rerun the same command with \
                     --key {key} to open it exactly once."
                );
            }
            Ok(exit)
        }
    }
}

async fn balance(args: &ClientArgs, gateway: &mut Gateway, of: String) -> anyhow::Result<u8> {
    match gateway
        .get_balances(pb::GetBalancesRequest { username: of })
        .await
    {
        Ok(response) => {
            let accounts = response.into_inner().accounts;
            let rows: Vec<Vec<String>> = accounts
                .iter()
                .map(|account| {
                    vec![
                        account.bank_id.clone(),
                        account.account_number.clone(),
                        render::money(account.balance.as_ref()),
                        render::money(account.held.as_ref()),
                        render::money(account.available.as_ref()),
                    ]
                })
                .collect();
            let human = if rows.is_empty() {
                "no accounts yet".to_owned()
            } else {
                table(&["BANK", "ACCOUNT", "BALANCE", "HELD", "AVAILABLE"], &rows)
            };
            let documents: Vec<_> = accounts
                .iter()
                .map(|account| {
                    json!({"bank": account.bank_id, "account": account.account_number, "balance": money_json(account.balance.as_ref()), "held": money_json(account.held.as_ref()), "available": money_json(account.available.as_ref())})
                })
                .collect();
            emit(args, human, json!({"ok": true, "accounts": documents}));
            Ok(0)
        }
        Err(status) => Ok(failed(args, &status)),
    }
}

/// `--meta KEY=VALUE` arguments as a map; a key given twice is refused rather than one of
/// its values silently dropped. The gateway checks the entries themselves.
pub(crate) fn parse_metadata(entries: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut metadata = BTreeMap::new();
    for entry in entries {
        let Some((key, value)) = entry.split_once('=') else {
            anyhow::bail!("--meta {entry:?} is not KEY=VALUE");
        };
        anyhow::ensure!(
            metadata.insert(key.to_owned(), value.to_owned()).is_none(),
            "--meta names key {key:?} twice"
        );
    }
    Ok(metadata)
}

/// Validates a payment at the CLI (before anything is queued or sent).
#[allow(clippy::too_many_arguments)]
fn payment_entry(
    to: &str,
    amount: &str,
    currency: &str,
    from_bank: &str,
    to_bank: &str,
    key: Option<String>,
    memo: &str,
    meta: &[String],
) -> anyhow::Result<OutboxEntry> {
    let metadata = parse_metadata(meta)?;
    validate_name("recipient", to).map_err(anyhow::Error::msg)?;
    for bank in [from_bank, to_bank] {
        if !bank.is_empty() {
            validate_name("bank", bank).map_err(anyhow::Error::msg)?;
        }
    }
    let currency = money::currency(currency)?;
    let amount_minor = money::parse_amount(amount, currency)?;
    let idempotency_key = key.unwrap_or_else(new_key);
    validate_id("--key", &idempotency_key)?;
    Ok(OutboxEntry {
        idempotency_key,
        to_username: to.into(),
        amount_minor,
        currency: currency.code.into(),
        from_bank: from_bank.into(),
        to_bank: to_bank.into(),
        memo: memo.into(),
        metadata,
        state: State::Queued.as_str().into(),
        attempts: 0,
        next_attempt_unix_ms: 0,
        last_error: None,
        payment_id: None,
        created_unix_ms: now_unix_ms(),
    })
}

/// Whether a failed call certainly never reached the gateway: the TCP connection itself was
/// refused, so no request bytes left this machine.
fn never_connected(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = error.source();
    }
    false
}

/// What a failed `Pay` means for the entry.
fn failed_outcome(status: &Status) -> TryOutcome {
    let message = explain(status);
    if never_connected(status) {
        return TryOutcome::NotSent { message };
    }
    let reason = strife_common::failure::reason_of(status);
    match classify_refusal(status.code(), reason.as_deref()) {
        FailureClass::Declined => TryOutcome::Declined { message },
        FailureClass::NotSent => TryOutcome::NotSent { message },
        FailureClass::Unknown => TryOutcome::Unknown { message },
    }
}

/// Sends one outbox entry once.
async fn try_send(
    gateway: &mut Gateway,
    entry: &OutboxEntry,
) -> (TryOutcome, Option<pb::Payment>, Option<Status>) {
    let request = pb::PayRequest {
        idempotency_key: entry.idempotency_key.clone(),
        to_username: entry.to_username.clone(),
        amount: Some(pb::Money {
            amount_minor: entry.amount_minor,
            currency: entry.currency.clone(),
        }),
        from_bank_id: entry.from_bank.clone(),
        to_bank_id: entry.to_bank.clone(),
        memo: entry.memo.clone(),
        metadata: entry.metadata.clone().into_iter().collect(),
    };
    match gateway.pay(request).await {
        Ok(payment) => {
            let payment = payment.into_inner();
            (
                TryOutcome::Succeeded {
                    payment_id: payment.payment_id.clone(),
                },
                Some(payment),
                None,
            )
        }
        Err(status) => (failed_outcome(&status), None, Some(status)),
    }
}

/// Asks the gateway what became of an entry whose outcome is unknown.
async fn look_up(gateway: &mut Gateway, entry: &OutboxEntry) -> Resolution {
    let lookup = gateway
        .get_payment_by_key(pb::GetPaymentByKeyRequest {
            idempotency_key: entry.idempotency_key.clone(),
        })
        .await
        .map(|payment| {
            let payment = payment.into_inner();
            Reported {
                status: render::status_name(payment.status),
                payment_id: payment.payment_id,
                reason_code: payment.reason_code,
                reason: payment.reason,
            }
        })
        .map_err(|status| (status.code(), explain(&status)));
    resolve(lookup)
}

/// One step for an unfinished entry: an unknown one is looked up by key first and sent again
/// only if the gateway never recorded it (or aborted it for a transient reason); a queued one
/// is sent. Returns the entry as recorded afterwards.
async fn advance(
    outbox: &Outbox,
    gateway: &mut Gateway,
    entry: &OutboxEntry,
) -> anyhow::Result<OutboxEntry> {
    if entry.state == State::Unknown.as_str() {
        match look_up(gateway, entry).await {
            Resolution::Final(outcome) => return outbox.record(&entry.idempotency_key, &outcome),
            Resolution::StillUnknown { message } => {
                return outbox.record(&entry.idempotency_key, &TryOutcome::Unknown { message })
            }
            Resolution::SendAgain => {}
        }
    }
    let (outcome, _, _) = try_send(gateway, entry).await;
    outbox.record(&entry.idempotency_key, &outcome)
}

async fn pay(args: &ClientArgs, gateway: &mut Gateway, entry: OutboxEntry) -> anyhow::Result<u8> {
    let outbox = Outbox::open(&outbox_path(args))?;
    let entry = outbox.enqueue(&entry)?;
    if entry.state != State::Queued.as_str() {
        // The same key already finished, or its outcome is open: report it and leave an open
        // one to `sync`, which looks it up by key before sending anything again.
        return Ok(report_entry(args, &entry));
    }
    let (outcome, payment, status) = try_send(gateway, &entry).await;
    let recorded = outbox.record(&entry.idempotency_key, &outcome)?;
    match (outcome, payment, status) {
        (TryOutcome::Succeeded { .. }, Some(payment), _) => {
            emit(
                args,
                format!(
                    "paid {}\n{}",
                    render::money(payment.amount.as_ref()),
                    describe_payment(&payment)
                ),
                json!({"ok": true, "queued": false, "payment": payment_json(&payment)}),
            );
            Ok(0)
        }
        (TryOutcome::NotSent { message } | TryOutcome::Unknown { message }, _, _) => {
            let unknown = recorded.state == State::Unknown.as_str();
            let human = if unknown {
                format!(
                    "outcome unknown: {message}.\nThe gateway may have recorded the payment. It is kept in your outbox with key {}; `strife client --user {} sync` finds out what happened (by key) and completes it, exactly once.",
                    recorded.idempotency_key, args.user
                )
            } else {
                format!(
                    "queued: {message}.\nThe payment is saved in your outbox with key {} and will be sent, exactly once, by `strife client --user {} sync`.",
                    recorded.idempotency_key, args.user
                )
            };
            if args.json {
                println!(
                    "{}",
                    json!({"ok": false, "queued": true, "state": recorded.state, "idempotency_key": recorded.idempotency_key, "error": message})
                );
            } else {
                println!("{human}");
            }
            Ok(EXIT_QUEUED)
        }
        (_, _, Some(status)) => Ok(failed(args, &status)),
        _ => Ok(1),
    }
}

fn report_entry(args: &ClientArgs, entry: &OutboxEntry) -> u8 {
    let amount = pb::Money {
        amount_minor: entry.amount_minor,
        currency: entry.currency.clone(),
    };
    let human = format!(
        "{} {} to {}: {}{}",
        entry.idempotency_key,
        render::money(Some(&amount)),
        entry.to_username,
        render::outbox_state(&entry.state),
        entry
            .last_error
            .as_ref()
            .map(|error| format!(" ({error})"))
            .unwrap_or_default()
    );
    emit(
        args,
        human,
        json!({"ok": entry.state == "succeeded", "entry": entry}),
    );
    match entry.state.as_str() {
        "succeeded" => 0,
        "queued" | "unknown" => EXIT_QUEUED,
        _ => 1,
    }
}

async fn history(args: &ClientArgs, gateway: &mut Gateway, limit: u32) -> anyhow::Result<u8> {
    match gateway
        .list_history(pb::ListHistoryRequest {
            page_size: limit,
            page_token: String::new(),
        })
        .await
    {
        Ok(response) => {
            let payments = response.into_inner().payments;
            let human = if payments.is_empty() {
                "no payments yet".to_owned()
            } else {
                payments_table(&payments)
            };
            let documents: Vec<_> = payments.iter().map(payment_json).collect();
            emit(args, human, json!({"ok": true, "payments": documents}));
            Ok(0)
        }
        Err(status) => Ok(failed(args, &status)),
    }
}

/// Payments as `history` and `refunds` print them.
fn payments_table(payments: &[pb::Payment]) -> String {
    let rows: Vec<Vec<String>> = payments
        .iter()
        .map(|payment| {
            vec![
                timestamp(payment.created_unix_ms),
                payment.from_username.clone(),
                payment.to_username.clone(),
                render::money(payment.amount.as_ref()),
                render::status_name(payment.status).into(),
                payment.reason_code.clone(),
                render::refund_note(payment),
                payment.payment_id.clone(),
            ]
        })
        .collect();
    table(
        &[
            "WHEN (UTC)",
            "FROM",
            "TO",
            "AMOUNT",
            "STATUS",
            "REASON",
            "REFUND",
            "PAYMENT",
        ],
        &rows,
    )
}

fn show_outbox(args: &ClientArgs) -> anyhow::Result<u8> {
    let outbox = Outbox::open(&outbox_path(args))?;
    let entries = outbox.all(100)?;
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            let amount = pb::Money {
                amount_minor: entry.amount_minor,
                currency: entry.currency.clone(),
            };
            vec![
                timestamp(entry.created_unix_ms),
                entry.to_username.clone(),
                render::money(Some(&amount)),
                render::outbox_state(&entry.state).to_owned(),
                entry.attempts.to_string(),
                entry.idempotency_key.clone(),
                entry.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let human = if rows.is_empty() {
        "outbox is empty".to_owned()
    } else {
        table(
            &[
                "QUEUED (UTC)",
                "TO",
                "AMOUNT",
                "STATE",
                "TRIES",
                "KEY",
                "LAST ERROR",
            ],
            &rows,
        )
    };
    emit(args, human, json!({"ok": true, "entries": entries}));
    Ok(0)
}

/// Resolves and sends every unfinished payment once (`watch`: keeps going, honouring each
/// entry's back-off). Unknown outcomes are looked up by key first. A run is bounded by
/// `max_time`, never by a number of tries: whatever is left stays in the outbox as it was.
async fn sync(
    args: &ClientArgs,
    gateway: &mut Gateway,
    watch: bool,
    until_empty: bool,
    max_time: Duration,
) -> anyhow::Result<u8> {
    let outbox = Outbox::open(&outbox_path(args))?;
    let deadline = tokio::time::Instant::now() + max_time;
    let mut results = Vec::new();
    'run: loop {
        // A plain `sync` tries everything now; the watcher respects the backoff schedule.
        let due = outbox.pending(if watch { Some(now_unix_ms()) } else { None })?;
        for entry in due {
            let Ok(recorded) =
                tokio::time::timeout_at(deadline, advance(&outbox, gateway, &entry)).await
            else {
                // Out of time mid-call: the entry keeps its state (an unknown stays unknown;
                // a queued one may have been sent, so it is marked unknown).
                if entry.state == State::Queued.as_str() {
                    outbox.record(
                        &entry.idempotency_key,
                        &TryOutcome::Unknown {
                            message: "sync ran out of time waiting for the gateway".into(),
                        },
                    )?;
                }
                break 'run;
            };
            let recorded = recorded?;
            let line = sync_line(&recorded);
            if watch && !args.json {
                println!("{line}");
            }
            results.push((line, recorded));
        }
        let remaining = outbox.pending(None)?.len();
        if !watch || (until_empty && remaining == 0) {
            break;
        }
        let wait = match outbox.next_due_unix_ms()? {
            Some(due) => Duration::from_millis(
                due.saturating_sub(now_unix_ms())
                    .clamp(10, WATCH_POLL_MAX.as_millis() as i64) as u64,
            ),
            None => WATCH_POLL_MAX,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let remaining = outbox.pending(None)?;
    let unknown = remaining
        .iter()
        .filter(|entry| entry.state == State::Unknown.as_str())
        .count();
    if args.json {
        let entries: Vec<_> = results.iter().map(|(_, entry)| entry).collect();
        println!(
            "{}",
            json!({"ok": remaining.is_empty(), "results": entries, "still_queued": remaining.len(), "still_unknown": unknown})
        );
    } else if !watch {
        for (line, _) in &results {
            println!("{line}");
        }
        if results.is_empty() {
            println!("nothing to send");
        }
        if !remaining.is_empty() {
            println!(
                "{} payment(s) still open ({unknown} with an unknown outcome, to be looked up by key)",
                remaining.len()
            );
        }
    }
    let any_failed = results
        .iter()
        .any(|(_, entry)| entry.state == State::Declined.as_str());
    Ok(if !remaining.is_empty() {
        EXIT_QUEUED
    } else if any_failed {
        1
    } else {
        0
    })
}

/// One line per entry a sync step touched.
fn sync_line(recorded: &OutboxEntry) -> String {
    let amount = pb::Money {
        amount_minor: recorded.amount_minor,
        currency: recorded.currency.clone(),
    };
    let amount = render::money(Some(&amount));
    let error = recorded.last_error.clone().unwrap_or_default();
    match recorded.state.as_str() {
        "succeeded" => format!(
            "sent     {amount} to {} (payment {})",
            recorded.to_username,
            recorded.payment_id.clone().unwrap_or_default()
        ),
        "declined" => format!("declined {amount} to {}: {error}", recorded.to_username),
        "unknown" => format!(
            "unknown  {amount} to {} (try {}; will look it up by key): {error}",
            recorded.to_username, recorded.attempts
        ),
        _ => format!(
            "retrying {amount} to {} (try {}): {error}",
            recorded.to_username, recorded.attempts
        ),
    }
}
