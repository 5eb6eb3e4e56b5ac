//! `strife audit`: reconciliation across every bank and the gateway.
//!
//! It reads each bank's accounts, prepared legs and full journal over the bank API (with the
//! gateway's certificate from the data dir — only the gateway may talk to banks) and the
//! gateway's payment log and account links from its database (read-only), then checks SPEC §8:
//! money conserved (Σ balances = Σ deposits per currency), no negative available balance,
//! every balance re-derivable from its journal, every COMMITTED payment applied exactly once on
//! both legs, every ABORTED one on neither, no journal entry the gateway does not know, no
//! hold left PREPARED past its decision deadline, every account's hold equal to its PREPARED
//! debit legs (`hold_mismatch`), every open authorization held at both banks and none captured
//! at or after its expiry (docs/SPEC.md §4), and every journal entry's account owned by the
//! user the gateway links it to (`owner_mismatch`).
//!
//! # Consistent reads
//!
//! Each bank answers `ListAccounts` from one read transaction and includes the journal head
//! (highest seq) of that snapshot. The journal is append-only and its seqs are assigned in
//! commit order by the bank's single writer, so the entries with seq ≤ head are exactly those
//! the listed balances reflect; the auditor pages `ListJournal` afterwards and ignores higher
//! seqs. That gives one consistent state per bank without holding a transaction open across
//! RPCs. The gateway's payments and links are read in one read transaction too.
//!
//! # `--live`: auditing while payments run
//!
//! The banks' snapshots are not taken at the same instant as each other or as the gateway's,
//! so a payment can legitimately look half-done. The live mode orders the reads so that every
//! such case is recognisable:
//!
//! 1. gateway snapshot G (payments + links), then
//! 2. each bank's snapshot, then
//! 3. a second read of the gateway's payment ids, only to name payments G did not know.
//!
//! A payment decided before G prepared both legs before its decision, so at a bank snapshot
//! (later than G) each leg is either applied (one journal entry) or still PREPARED (phase 2
//! under way). COMMITTED in G: both applied → checked as in the quiet mode; a missing leg that
//! is PREPARED at its bank → *in flight*; a missing leg the bank does not hold PREPARED →
//! violation, as before. ABORTED in G: any journal entry is a violation. PENDING in G: decided
//! after G, so in flight (its entries must still match its legs). A journal entry for a payment
//! G does not know is in flight if the later read knows it (the gateway logs a payment before
//! any bank sees it, and that log predates the bank snapshot), else `unknown_payment_applied`.
//! ABORTED is final, so a payment the later read calls ABORTED may have no entry at all,
//! whenever it was decided (`uncommitted_payment_applied`).
//!
//! # Settlement (docs/SPEC.md §9)
//!
//! From the same gateway snapshot (one read transaction, so in `--live` too): every window's
//! bilateral totals equal the sum of the COMMITTED cross-bank payments stamped with it, and its
//! net amounts sum to zero per currency; exactly one window is open and every decided payment
//! names an existing window (a PENDING one none); every bank's position equals Σ over its
//! committed cross-bank payments in unsettled windows (+ paid, − received), and its
//! reservation Σ of its PENDING cross-bank payments (so no reservation outlives its payment's
//! decision); every refund mirrors a COMMITTED original that is not itself a refund, and per
//! original Σ committed refunds = `refunded`, Σ pending refunds = `refund_pending`, and both
//! together never exceed the original's amount.
//!
//! Money in flight: Σ balances = Σ deposits + Σ over payments of their applied deltas. A
//! payment applied on both legs contributes 0; an in-flight payment with only its debit
//! applied contributes −amount (debited, not yet credited), only its credit +amount. So with
//! `in_flight_minor` = −Σ applied deltas of the in-flight payments, Σ balances + in_flight =
//! Σ deposits holds exactly; anything else is still `money_not_conserved`. The plain mode is
//! for a quiet network and reports anything half-done as a violation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use serde::Serialize;
use strife_common::etcd::access::EtcdAccess;
use strife_common::layout::Layout;
use strife_common::limits::{
    AUDIT_CALL_TIMEOUT as CALL_TIMEOUT, MAX_JOURNAL_PAGE as JOURNAL_PAGE, MAX_PREPARED_LISTED,
};
use strife_common::money::{self, Amount};
use strife_common::net::tls::{ExpectedPeer, TlsMaterial};
use strife_common::time::now_unix_ms;
use strife_ledger::records::{LogSnapshot, PaymentRecord, PaymentStatus, WindowReport};
use strife_ledger::settlement::{is_cross_bank, nets, window_state, WindowState};
use strife_ledger::store::GatewayLog;
pub use strife_ledger::store::StoreLocation;
use strife_proto::v1::{self as pb, bank_client::BankClient};
use tonic::transport::Channel;

/// Violations listed in the human report; `--json` has them all.
const MAX_VIOLATIONS_SHOWN: usize = 20;

/// What to audit.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub dir: PathBuf,
    pub etcd_endpoints: Vec<String>,
    /// The gateway's store (read-only through `GatewayLog`).
    pub store: StoreLocation,
    /// Audit a network with payments under way (see the module doc); payments in flight are
    /// reported, not flagged.
    pub live: bool,
}

/// One broken invariant.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Violation {
    pub kind: String,
    pub detail: String,
}

/// A payment the live audit saw half-done: not a violation.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InFlight {
    pub payment_id: String,
    pub reason: String,
}

/// Per-bank figures.
#[derive(Debug, Clone, Serialize, Default)]
pub struct BankSummary {
    pub bank_id: String,
    pub accounts: usize,
    pub journal_entries: usize,
    pub prepared_legs: usize,
    /// currency → Σ balances (minor units). i128: a sum of i64 balances cannot overflow it,
    /// so money created beyond i64 still shows (a saturating i64 sum would hide it).
    pub balances_minor: BTreeMap<String, i128>,
    /// currency → Σ deposits (minor units), i128 like the balances.
    pub deposits_minor: BTreeMap<String, i128>,
}

/// The audit's findings.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub banks: Vec<BankSummary>,
    pub payments_checked: usize,
    pub payments_committed: usize,
    pub payments_aborted: usize,
    pub payments_pending: usize,
    /// Authorizations still AUTHORIZED (funds held, not yet captured, voided or expired).
    pub authorizations_open: usize,
    /// Whether this was a `--live` audit.
    pub live: bool,
    /// Payments seen half-done by a live audit (always 0 for a plain one).
    pub in_flight_count: usize,
    pub in_flight: Vec<InFlight>,
    /// currency → money debited but not yet credited (negative: credited, not yet debited) by
    /// the in-flight payments, in minor units; Σ balances + this = Σ deposits.
    pub in_flight_minor: BTreeMap<String, i128>,
    /// What the settlement checks covered.
    pub settlement: SettlementSummary,
    pub violations: Vec<Violation>,
}

/// What the settlement checks looked at.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct SettlementSummary {
    pub windows: usize,
    pub open_window: Option<i64>,
    pub settled_windows: usize,
    /// (bank, currency) positions re-derived from the log.
    pub positions: usize,
    pub refunds: usize,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    fn in_flight(&mut self, payment_id: &str, reason: String) {
        self.in_flight_count += 1;
        self.in_flight.push(InFlight {
            payment_id: payment_id.to_owned(),
            reason,
        });
    }

    fn violation(&mut self, kind: &str, detail: String) {
        self.violations.push(Violation {
            kind: kind.to_owned(),
            detail,
        });
    }

    /// The report for people.
    pub fn human(&self) -> String {
        let mut lines = Vec::new();
        let mut total_balances: Totals = BTreeMap::new();
        let mut total_deposits: Totals = BTreeMap::new();
        for bank in &self.banks {
            lines.push(format!(
                "{}: {} accounts, {} journal entries, {} prepared legs, balances {}",
                bank.bank_id,
                bank.accounts,
                bank.journal_entries,
                bank.prepared_legs,
                render_totals(&bank.balances_minor)
            ));
            add_into(&mut total_balances, &bank.balances_minor);
            add_into(&mut total_deposits, &bank.deposits_minor);
        }
        if self.live {
            lines.push(format!(
                "money: balances {} + in flight {} vs deposits {}",
                render_totals(&total_balances),
                render_totals(&self.in_flight_minor),
                render_totals(&total_deposits)
            ));
            lines.push(format!("in flight: {} payments", self.in_flight_count));
        } else {
            lines.push(format!(
                "money: balances {} vs deposits {}",
                render_totals(&total_balances),
                render_totals(&total_deposits)
            ));
        }
        lines.push(format!(
            "payments: {} checked ({} committed, {} aborted, {} pending)",
            self.payments_checked,
            self.payments_committed,
            self.payments_aborted,
            self.payments_pending
        ));
        lines.push(format!(
            "settlement: {} windows ({} settled, open: {}), {} positions re-derived, {} refunds",
            self.settlement.windows,
            self.settlement.settled_windows,
            self.settlement
                .open_window
                .map_or("none".to_owned(), |window| window.to_string()),
            self.settlement.positions,
            self.settlement.refunds
        ));
        if self.violations.is_empty() {
            lines.push("violations: none — all invariants hold".into());
        } else {
            lines.push(format!("violations: {}", self.violations.len()));
            for violation in self.violations.iter().take(MAX_VIOLATIONS_SHOWN) {
                lines.push(format!("  {}: {}", violation.kind, violation.detail));
            }
            if self.violations.len() > MAX_VIOLATIONS_SHOWN {
                lines.push(format!(
                    "  … and {} more (use --json for all)",
                    self.violations.len() - MAX_VIOLATIONS_SHOWN
                ));
            }
        }
        lines.join("\n")
    }
}

/// currency → an exact sum in minor units.
type Totals = BTreeMap<String, i128>;

/// Adds one amount to its currency's total. i128 holds the sum of 2^64 i64 values, so this
/// never overflows for any number of accounts a bank can list.
fn add_minor(totals: &mut Totals, currency: &str, amount_minor: i64) {
    let entry = totals.entry(currency.to_owned()).or_insert(0);
    *entry += i128::from(amount_minor);
}

fn add_into(total: &mut Totals, part: &Totals) {
    for (currency, amount) in part {
        *total.entry(currency.clone()).or_insert(0) += *amount;
    }
}

fn render_totals(totals: &Totals) -> String {
    if totals.is_empty() {
        return "none".into();
    }
    totals
        .iter()
        .map(
            |(code, amount_minor)| match (money::currency(code), i64::try_from(*amount_minor)) {
                (Ok(currency), Ok(amount_minor)) => Amount {
                    amount_minor,
                    currency,
                }
                .to_string(),
                // Beyond i64 (only when something is badly wrong): the exact minor units.
                _ => format!("{amount_minor} minor {code}"),
            },
        )
        .collect::<Vec<_>>()
        .join(", ")
}

/// Σ balances + money in flight = Σ deposits per currency over every bank, exactly; else the
/// violation. (A plain audit has nothing in flight.)
fn check_conservation(banks: &[BankSummary], report: &mut Report) {
    let mut balances = Totals::new();
    let mut deposits = Totals::new();
    for bank in banks {
        add_into(&mut balances, &bank.balances_minor);
        add_into(&mut deposits, &bank.deposits_minor);
    }
    add_into(&mut balances, &report.in_flight_minor);
    // A currency with only zero on one side equals its absence on the other.
    balances.retain(|_, amount| *amount != 0);
    deposits.retain(|_, amount| *amount != 0);
    if balances != deposits {
        report.violation(
            "money_not_conserved",
            format!(
                "balances {} ≠ deposits {}",
                render_totals(&balances),
                render_totals(&deposits)
            ),
        );
    }
}

/// A journal entry with the bank it came from.
#[derive(Debug, Clone)]
struct Entry {
    bank_id: String,
    entry: pb::JournalEntry,
}

/// A payment as the gateway logged it.
#[derive(Debug, Clone)]
struct LoggedPayment {
    payment_id: String,
    status: PaymentStatus,
    from_bank: String,
    from_account: String,
    to_bank: String,
    to_account: String,
    amount_minor: i64,
    currency: String,
    /// Set on an authorization.
    expires_unix_ms: Option<i64>,
    decided_unix_ms: Option<i64>,
    reason_code: Option<String>,
    /// On a captured authorization: what it held.
    authorized_minor: Option<i64>,
}

/// (bank id, account number).
type AccountKey = (String, String);

/// The gateway's side, read in one read transaction.
#[derive(Debug, Default)]
struct GatewaySnapshot {
    payments: Vec<LoggedPayment>,
    /// (bank, account) → the user the gateway links it to.
    links: HashMap<AccountKey, String>,
    /// The settlement checks' findings on this snapshot.
    settlement: SettlementSummary,
    settlement_violations: Vec<Violation>,
}

/// Reads the gateway's log through its store interface (read-only; the gateway may be running).
async fn read_gateway(log: Option<&dyn GatewayLog>) -> anyhow::Result<GatewaySnapshot> {
    let Some(log) = log else {
        return Ok(GatewaySnapshot::default());
    };
    let snapshot = log.snapshot().await?;
    let mut findings = Report::default();
    check_settlement(&snapshot, &mut findings);
    let payments = snapshot
        .payments
        .into_iter()
        .map(|payment| LoggedPayment {
            payment_id: payment.payment_id,
            status: payment.status,
            from_bank: payment.from.bank_id,
            from_account: payment.from.account_number,
            to_bank: payment.to.bank_id,
            to_account: payment.to.account_number,
            amount_minor: payment.amount_minor,
            currency: payment.currency,
            expires_unix_ms: payment.expires_unix_ms,
            decided_unix_ms: payment.decided_unix_ms,
            reason_code: payment.reason_code,
            authorized_minor: payment.authorized_minor,
        })
        .collect();
    let links = snapshot
        .links
        .into_iter()
        .map(|link| ((link.bank_id, link.account_number), link.username))
        .collect();
    Ok(GatewaySnapshot {
        payments,
        links,
        settlement: findings.settlement,
        settlement_violations: findings.violations,
    })
}

/// The settlement invariants on one gateway snapshot (module doc, "Settlement").
fn check_settlement(snapshot: &LogSnapshot, report: &mut Report) {
    let windows: HashMap<i64, &WindowReport> = snapshot
        .windows
        .iter()
        .map(|report| (report.window.window_id, report))
        .collect();
    let open: Vec<i64> = snapshot
        .windows
        .iter()
        .filter(|report| window_state(&report.window) == WindowState::Open)
        .map(|report| report.window.window_id)
        .collect();
    report.settlement.windows = snapshot.windows.len();
    report.settlement.settled_windows = snapshot
        .windows
        .iter()
        .filter(|report| window_state(&report.window) == WindowState::Settled)
        .count();
    report.settlement.open_window = open.first().copied();
    if open.len() != 1 {
        report.violation(
            "open_windows",
            format!(
                "{} settlement windows are open (exactly one must be): {open:?}",
                open.len()
            ),
        );
    }

    // Derived from the payments alone: per window (payer, payee, currency) → (Σ, count); per
    // (bank, currency) position and reservation; per original (refunded, pending).
    type Key = (String, String, String);
    let mut totals: HashMap<i64, BTreeMap<Key, (i128, i64)>> = HashMap::new();
    let mut positions: BTreeMap<(String, String), i128> = BTreeMap::new();
    let mut reserved: BTreeMap<(String, String), i128> = BTreeMap::new();
    let mut refunds: HashMap<&str, (i128, i128)> = HashMap::new();
    let by_id: HashMap<&str, &PaymentRecord> = snapshot
        .payments
        .iter()
        .map(|payment| (payment.payment_id.as_str(), payment))
        .collect();
    for payment in &snapshot.payments {
        let id = &payment.payment_id;
        match (payment.status, payment.window_id) {
            (PaymentStatus::Pending | PaymentStatus::Authorized, None) => {}
            (PaymentStatus::Pending | PaymentStatus::Authorized, Some(window)) => report.violation(
                "payment_window_mismatch",
                format!("payment {id} is PENDING but stamped with window {window}"),
            ),
            (_, None) => report.violation(
                "payment_window_mismatch",
                format!("payment {id} is decided but belongs to no settlement window"),
            ),
            (_, Some(window)) if !windows.contains_key(&window) => report.violation(
                "payment_window_mismatch",
                format!("payment {id} names settlement window {window}, which does not exist"),
            ),
            _ => {}
        }
        if is_cross_bank(payment) {
            let payer = (payment.from.bank_id.clone(), payment.currency.clone());
            let payee = (payment.to.bank_id.clone(), payment.currency.clone());
            let amount = i128::from(payment.amount_minor);
            match payment.status {
                PaymentStatus::Pending | PaymentStatus::Authorized => {
                    *reserved.entry(payer).or_insert(0) += amount
                }
                PaymentStatus::Committed => {
                    let window = payment.window_id.and_then(|window| windows.get(&window));
                    if let Some(window) = window {
                        let entry = totals
                            .entry(window.window.window_id)
                            .or_default()
                            .entry((payer.0.clone(), payee.0.clone(), payment.currency.clone()))
                            .or_insert((0, 0));
                        entry.0 += amount;
                        entry.1 += 1;
                        if window_state(&window.window) != WindowState::Settled {
                            *positions.entry(payer).or_insert(0) += amount;
                            *positions.entry(payee).or_insert(0) -= amount;
                        }
                    }
                }
                PaymentStatus::Aborted => {}
            }
        }
        if let Some(original_id) = &payment.refund_of {
            report.settlement.refunds += 1;
            let Some(original) = by_id.get(original_id.as_str()) else {
                report.violation(
                    "refund_mismatch",
                    format!("refund {id} names payment {original_id}, which the log does not have"),
                );
                continue;
            };
            let mirrors = payment.from == original.to
                && payment.to == original.from
                && payment.currency == original.currency;
            if !mirrors
                || original.status != PaymentStatus::Committed
                || original.refund_of.is_some()
            {
                report.violation(
                    "refund_mismatch",
                    format!(
                        "refund {id} of {original_id}: not a reverse of a committed payment that \
                         is not a refund"
                    ),
                );
            }
            let entry = refunds.entry(original_id.as_str()).or_insert((0, 0));
            match payment.status {
                PaymentStatus::Committed => entry.0 += i128::from(payment.amount_minor),
                PaymentStatus::Pending | PaymentStatus::Authorized => {
                    entry.1 += i128::from(payment.amount_minor)
                }
                PaymentStatus::Aborted => {}
            }
        }
    }

    for window in &snapshot.windows {
        let window_id = window.window.window_id;
        let stored: BTreeMap<Key, (i128, i64)> = window
            .totals
            .iter()
            .map(|total| {
                (
                    (
                        total.payer_bank.clone(),
                        total.payee_bank.clone(),
                        total.currency.clone(),
                    ),
                    (i128::from(total.amount_minor), total.payments),
                )
            })
            .collect();
        let derived = totals.remove(&window_id).unwrap_or_default();
        if stored != derived {
            report.violation(
                "window_report_mismatch",
                format!(
                    "window {window_id}: bilateral totals {stored:?} but its committed cross-bank \
                     payments sum to {derived:?}"
                ),
            );
        }
        match nets(&window.totals) {
            Ok(nets) => {
                let mut sums: BTreeMap<&str, i128> = BTreeMap::new();
                for net in &nets {
                    *sums.entry(net.currency.as_str()).or_insert(0) += i128::from(net.net_minor);
                }
                sums.retain(|_, sum| *sum != 0);
                if !sums.is_empty() {
                    report.violation(
                        "window_nets_not_zero",
                        format!("window {window_id}: net amounts sum to {sums:?}"),
                    );
                }
            }
            Err(failure) => report.violation(
                "window_nets_not_zero",
                format!("window {window_id}: {failure}"),
            ),
        }
    }

    let mut stored_positions: BTreeMap<(String, String), (i128, i128)> = BTreeMap::new();
    for position in &snapshot.positions {
        stored_positions.insert(
            (position.bank_id.clone(), position.currency.clone()),
            (
                i128::from(position.position_minor),
                i128::from(position.reserved_minor),
            ),
        );
    }
    let mut keys: Vec<(String, String)> = stored_positions.keys().cloned().collect();
    keys.extend(positions.keys().cloned());
    keys.extend(reserved.keys().cloned());
    keys.sort();
    keys.dedup();
    report.settlement.positions = keys.len();
    for key in keys {
        let (stored_position, stored_reserved) =
            stored_positions.get(&key).copied().unwrap_or((0, 0));
        let derived_position = positions.get(&key).copied().unwrap_or(0);
        let derived_reserved = reserved.get(&key).copied().unwrap_or(0);
        if stored_position != derived_position {
            report.violation(
                "position_mismatch",
                format!(
                    "{} {}: position {stored_position} but its committed cross-bank payments in \
                     unsettled windows come to {derived_position}",
                    key.0, key.1
                ),
            );
        }
        if stored_reserved != derived_reserved {
            report.violation(
                "reservation_mismatch",
                format!(
                    "{} {}: {stored_reserved} reserved but its PENDING cross-bank payments come to \
                     {derived_reserved} (a reservation outlived its payment's decision, or is \
                     missing)",
                    key.0, key.1
                ),
            );
        }
    }

    for payment in &snapshot.payments {
        let derived = refunds
            .get(payment.payment_id.as_str())
            .copied()
            .unwrap_or((0, 0));
        let stored = (
            i128::from(payment.refunded_minor),
            i128::from(payment.refund_pending_minor),
        );
        if stored != derived {
            report.violation(
                "refund_mismatch",
                format!(
                    "payment {}: refunded/pending {stored:?} but its refunds come to {derived:?}",
                    payment.payment_id
                ),
            );
        }
        if derived.0 + derived.1 > i128::from(payment.amount_minor) {
            report.violation(
                strife_common::reason::REFUND_EXCEEDS_PAYMENT,
                format!(
                    "payment {} of {}: refunds of {} (committed) + {} (pending) exceed it",
                    payment.payment_id, payment.amount_minor, derived.0, derived.1
                ),
            );
        }
    }
}

async fn bank_addresses(etcd: &EtcdAccess) -> anyhow::Result<HashMap<String, String>> {
    Ok(strife_common::etcd::discovery::live_banks(etcd)
        .await?
        .into_iter()
        .map(|entry| (entry.id, entry.address))
        .collect())
}

/// What the bank snapshots say beyond the journal: which legs are still PREPARED, and who owns
/// each account that has journal entries.
#[derive(Debug, Default)]
struct BankState {
    /// (bank, payment id, "debit" | "credit") of every PREPARED leg.
    prepared: HashSet<(String, String, String)>,
    /// (bank, account) → owner, for the accounts with at least one journal entry.
    owners: HashMap<AccountKey, String>,
}

/// Runs the audit.
pub async fn audit(config: &AuditConfig) -> anyhow::Result<Report> {
    let layout = Layout::new(&config.dir);
    let manifest = strife_common::setup_manifest::SetupManifest::load(&layout)?;
    let tls = TlsMaterial::load(&layout.ca().cert, &layout.gateway_identity())?;
    // The audit reads etcd as the gateway does (it already holds the gateway's identity).
    let etcd = EtcdAccess::new(
        config.etcd_endpoints.clone(),
        &layout,
        strife_common::etcd::access::GATEWAY_USER,
    )?;
    let addresses = bank_addresses(&etcd).await?;
    // The network's identity: a PostgreSQL log must belong to this network's gateway.
    let identity = strife_ledger::store::identity(&layout, tls.ca_fingerprint()?, false);
    let gateway_log = strife_ledger::store::open_log(&config.store, &identity).await?;
    let gateway_log = gateway_log.as_deref();
    let mut report = Report {
        live: config.live,
        ..Report::default()
    };
    // Live: the gateway first, so every payment it calls decided was prepared at the banks
    // before their snapshots (module doc).
    let early_gateway = if config.live {
        Some(read_gateway(gateway_log).await?)
    } else {
        None
    };
    let mut entries_by_payment: HashMap<String, Vec<Entry>> = HashMap::new();
    let mut state = BankState::default();
    let now = now_unix_ms();

    for bank_id in &manifest.banks {
        let Some(address) = addresses.get(bank_id) else {
            report.violation(
                "bank_unreachable",
                format!("{bank_id} is not registered in etcd"),
            );
            continue;
        };
        let channel = tls
            .endpoint(address, &ExpectedPeer::Bank(bank_id.clone()), CALL_TIMEOUT)?
            .connect_lazy();
        match audit_bank(
            bank_id,
            BankClient::new(channel),
            now,
            &mut report,
            &mut entries_by_payment,
            &mut state,
        )
        .await
        {
            Ok(summary) => report.banks.push(summary),
            Err(error) => report.violation("bank_unreachable", format!("{bank_id}: {error:#}")),
        }
    }
    match early_gateway {
        Some(early) => {
            // Only to name payments logged after the early snapshot; their status is not used.
            let later = read_gateway(gateway_log).await?;
            report.settlement = early.settlement;
            report.violations.extend(early.settlement_violations);
            check_owners(&state.owners, &early.links, &mut report);
            check_authorizations(
                &early.payments,
                Some(&later.payments),
                &state.prepared,
                &mut report,
            );
            classify_live(
                &early.payments,
                &later.payments,
                entries_by_payment,
                &state.prepared,
                &mut report,
            );
        }
        None => {
            let gateway = read_gateway(gateway_log).await?;
            report.settlement = gateway.settlement;
            report.violations.extend(gateway.settlement_violations);
            check_owners(&state.owners, &gateway.links, &mut report);
            check_authorizations(&gateway.payments, None, &state.prepared, &mut report);
            check_payments(&gateway.payments, entries_by_payment, &mut report);
        }
    }
    let banks = std::mem::take(&mut report.banks);
    check_conservation(&banks, &mut report);
    report.banks = banks;
    Ok(report)
}

async fn audit_bank(
    bank_id: &str,
    mut client: BankClient<Channel>,
    now: i64,
    report: &mut Report,
    entries_by_payment: &mut HashMap<String, Vec<Entry>>,
    state: &mut BankState,
) -> anyhow::Result<BankSummary> {
    let listed = client
        .list_accounts(pb::ListAccountsRequest {})
        .await?
        .into_inner();
    // Entries past the head were written after the snapshot the balances come from. A bank
    // too old to send the head gets no bound: right on a quiet network, and under `--live`
    // its balances and journal may disagree (false alarms) until it is upgraded.
    let head = listed.journal_head_seq.unwrap_or(i64::MAX);
    let mut summary = BankSummary {
        bank_id: bank_id.to_owned(),
        accounts: listed.accounts.len(),
        prepared_legs: listed.prepared_legs.len(),
        ..BankSummary::default()
    };
    for leg in &listed.prepared_legs {
        let kind = if leg.role == pb::LegRole::Debit as i32 {
            "debit"
        } else {
            "credit"
        };
        state
            .prepared
            .insert((bank_id.to_owned(), leg.payment_id.clone(), kind.to_owned()));
        if leg.decision_deadline_unix_ms < now {
            report.violation(
                "stale_hold",
                format!(
                    "{bank_id}: payment {} leg {} PREPARED past its decision deadline",
                    leg.payment_id, leg.role
                ),
            );
        }
    }
    // Σ holds = Σ PREPARED debits, per account: every hold belongs to a leg still open (an
    // open authorization or a payment in flight) and every open debit leg is held. The legs
    // are listed in the accounts' snapshot; past the listing's bound the sums are not
    // complete, so not compared.
    let complete = listed.prepared_legs.len() < MAX_PREPARED_LISTED as usize;
    let mut held_by_legs: HashMap<&str, i128> = HashMap::new();
    for leg in &listed.prepared_legs {
        if leg.role == pb::LegRole::Debit as i32 {
            let amount = leg.amount.as_ref().map_or(0, |amount| amount.amount_minor);
            *held_by_legs.entry(leg.account_number.as_str()).or_insert(0) += i128::from(amount);
        }
    }
    for account in &listed.accounts {
        let held_by_open_legs = held_by_legs
            .get(account.account_number.as_str())
            .copied()
            .unwrap_or(0);
        if complete && i128::from(account.held_minor) != held_by_open_legs {
            report.violation(
                "hold_mismatch",
                format!(
                    "{bank_id}/{}: {} held, but its PREPARED debit legs hold {held_by_open_legs}",
                    account.account_number, account.held_minor
                ),
            );
        }
        if account.available_minor < 0 || account.balance_minor < account.held_minor {
            report.violation(
                "negative_available",
                format!("{bank_id}/{}", account.account_number),
            );
        }
        add_minor(
            &mut summary.balances_minor,
            &account.currency,
            account.balance_minor,
        );
        // Exact, like the totals: a journal whose sum overflows i64 must not saturate into
        // agreeing with a balance.
        let mut derived: i128 = 0;
        let mut after_seq = 0;
        'pages: loop {
            let page = client
                .list_journal(pb::ListJournalRequest {
                    account_number: account.account_number.clone(),
                    after_seq,
                    limit: JOURNAL_PAGE,
                })
                .await?
                .into_inner()
                .entries;
            let Some(last) = page.last() else { break };
            after_seq = last.seq;
            for entry in page {
                if entry.seq > head {
                    break 'pages;
                }
                summary.journal_entries += 1;
                state
                    .owners
                    .entry((bank_id.to_owned(), account.account_number.clone()))
                    .or_insert_with(|| account.owner.clone());
                derived += i128::from(entry.delta_minor);
                if entry.kind == "deposit" {
                    add_minor(
                        &mut summary.deposits_minor,
                        &account.currency,
                        entry.delta_minor,
                    );
                } else {
                    entries_by_payment
                        .entry(entry.payment_id.clone())
                        .or_default()
                        .push(Entry {
                            bank_id: bank_id.to_owned(),
                            entry,
                        });
                }
            }
        }
        if derived != i128::from(account.balance_minor) {
            report.violation(
                "journal_mismatch",
                format!(
                    "{bank_id}/{}: balance {} but journal sums to {derived}",
                    account.account_number, account.balance_minor
                ),
            );
        }
    }
    Ok(summary)
}

/// Every account with journal entries is owned, at its bank, by the user the gateway links it
/// to (SPEC §8.9). An account the gateway has not linked (yet) is not checked: the gateway
/// opens the account at the bank before it writes the link.
fn check_owners(
    owners: &HashMap<AccountKey, String>,
    links: &HashMap<AccountKey, String>,
    report: &mut Report,
) {
    let mut mismatches: Vec<String> = owners
        .iter()
        .filter_map(|(key, owner)| {
            let linked = links.get(key)?;
            (linked != owner).then(|| {
                format!(
                    "{}/{}: owned by {owner} at the bank but linked to {linked} at the gateway",
                    key.0, key.1
                )
            })
        })
        .collect();
    mismatches.sort();
    for detail in mismatches {
        report.violation("owner_mismatch", detail);
    }
}

/// Which of a payment's legs its journal entries apply, if they are all its own legs (right
/// bank, account, kind and amount) and none is applied twice; `None` otherwise.
fn applied_legs(payment: &LoggedPayment, entries: &[Entry]) -> Option<(bool, bool)> {
    let (mut debit, mut credit) = (false, false);
    for entry in entries {
        let (bank, account, delta, seen) = match entry.entry.kind.as_str() {
            "debit" => (
                &payment.from_bank,
                &payment.from_account,
                payment.amount_minor.checked_neg()?,
                &mut debit,
            ),
            "credit" => (
                &payment.to_bank,
                &payment.to_account,
                payment.amount_minor,
                &mut credit,
            ),
            _ => return None,
        };
        if *seen
            || entry.bank_id != *bank
            || entry.entry.account_number != *account
            || entry.entry.delta_minor != delta
        {
            return None;
        }
        *seen = true;
    }
    Some((debit, credit))
}

/// Records an in-flight payment and the money its applied legs have moved so far.
fn record_in_flight(
    report: &mut Report,
    payment: &LoggedPayment,
    entries: &[Entry],
    reason: String,
) {
    for entry in entries {
        // −delta: a debit applied without its credit is money in flight (positive).
        let entry_total = report
            .in_flight_minor
            .entry(payment.currency.clone())
            .or_insert(0);
        *entry_total -= i128::from(entry.entry.delta_minor);
    }
    report.in_flight(&payment.payment_id, reason);
}

/// The live classification (module doc). `early` is the gateway snapshot taken before the
/// banks'; `later` a read after them, used only to tell payments logged in between from
/// payments the gateway never logged; `prepared` the legs PREPARED in the bank snapshots.
fn classify_live(
    early: &[LoggedPayment],
    later: &[LoggedPayment],
    mut entries_by_payment: HashMap<String, Vec<Entry>>,
    prepared: &HashSet<(String, String, String)>,
    report: &mut Report,
) {
    let later: HashMap<&str, &LoggedPayment> = later
        .iter()
        .map(|payment| (payment.payment_id.as_str(), payment))
        .collect();
    // ABORTED is final: a payment the later read calls ABORTED may have no journal entry in
    // any snapshot, whenever it was decided.
    let aborted_later = |payment_id: &str| {
        later
            .get(payment_id)
            .is_some_and(|payment| payment.status == PaymentStatus::Aborted)
    };
    let is_prepared = |bank: &str, payment_id: &str, kind: &str| {
        prepared.contains(&(bank.to_owned(), payment_id.to_owned(), kind.to_owned()))
    };
    for payment in early {
        report.payments_checked += 1;
        let entries = entries_by_payment
            .remove(&payment.payment_id)
            .unwrap_or_default();
        let applied = applied_legs(payment, &entries);
        match payment.status {
            PaymentStatus::Committed => {
                report.payments_committed += 1;
                let Some((debit, credit)) = applied else {
                    report.violation(
                        "commit_not_applied_exactly_once",
                        format!(
                            "payment {}: journal entries that are not exactly its two legs",
                            payment.payment_id
                        ),
                    );
                    continue;
                };
                if debit && credit {
                    continue;
                }
                // Phase 2 under way: every leg not yet applied must still be held PREPARED.
                let debit_waits =
                    debit || is_prepared(&payment.from_bank, &payment.payment_id, "debit");
                let credit_waits =
                    credit || is_prepared(&payment.to_bank, &payment.payment_id, "credit");
                if debit_waits && credit_waits {
                    let reason = format!(
                        "committed; phase 2 applied on {} of 2 legs",
                        usize::from(debit) + usize::from(credit)
                    );
                    record_in_flight(report, payment, &entries, reason);
                } else {
                    report.violation(
                        "commit_not_applied_exactly_once",
                        format!(
                            "payment {}: committed, but a leg is neither applied nor PREPARED",
                            payment.payment_id
                        ),
                    );
                }
            }
            PaymentStatus::Aborted => {
                report.payments_aborted += 1;
                if !entries.is_empty() {
                    report.violation(
                        "uncommitted_payment_applied",
                        format!(
                            "payment {} is ABORTED but has {} journal entries",
                            payment.payment_id,
                            entries.len()
                        ),
                    );
                }
            }
            PaymentStatus::Pending | PaymentStatus::Authorized => {
                report.payments_pending += 1;
                if !entries.is_empty() && aborted_later(&payment.payment_id) {
                    report.violation(
                        "uncommitted_payment_applied",
                        format!(
                            "payment {} was then ABORTED but has {} journal entries",
                            payment.payment_id,
                            entries.len()
                        ),
                    );
                } else if applied.is_some() {
                    record_in_flight(
                        report,
                        payment,
                        &entries,
                        "pending at the gateway snapshot".into(),
                    );
                } else {
                    report.violation(
                        "commit_not_applied_exactly_once",
                        format!(
                            "payment {} (pending): journal entries that are not its legs",
                            payment.payment_id
                        ),
                    );
                }
            }
        }
    }
    let mut unknown: Vec<(String, Vec<Entry>)> = entries_by_payment.into_iter().collect();
    unknown.sort_by(|a, b| a.0.cmp(&b.0));
    for (payment_id, entries) in unknown {
        match later.get(payment_id.as_str()) {
            Some(payment) if payment.status == PaymentStatus::Aborted => report.violation(
                "uncommitted_payment_applied",
                format!(
                    "payment {payment_id} is ABORTED but has {} journal entries",
                    entries.len()
                ),
            ),
            Some(payment) if applied_legs(payment, &entries).is_some() => {
                record_in_flight(
                    report,
                    payment,
                    &entries,
                    "logged after the gateway snapshot".into(),
                );
            }
            _ => report.violation(
                "unknown_payment_applied",
                format!(
                    "{} journal entries for payment {payment_id}, which the gateway never logged \
                     (or not as these legs)",
                    entries.len()
                ),
            ),
        }
    }
}

/// Authorizations (docs/SPEC.md §4): nothing captured at or after its expiry, nothing released
/// as expired before it; every open
/// (AUTHORIZED) one held by both its banks — its debit and credit legs PREPARED. `later` (live
/// audits) is a read after the bank snapshots: an authorization it no longer calls AUTHORIZED
/// may have been captured or released in between, so its legs are not required then.
fn check_authorizations(
    payments: &[LoggedPayment],
    later: Option<&[LoggedPayment]>,
    prepared: &HashSet<(String, String, String)>,
    report: &mut Report,
) {
    let still_open: Option<HashSet<&str>> = later.map(|later| {
        later
            .iter()
            .filter(|payment| payment.status == PaymentStatus::Authorized)
            .map(|payment| payment.payment_id.as_str())
            .collect()
    });
    for payment in payments {
        let Some(expires) = payment.expires_unix_ms else {
            continue;
        };
        let id = &payment.payment_id;
        if payment
            .authorized_minor
            .is_some_and(|authorized| payment.amount_minor > authorized)
        {
            report.violation(
                "captured_more_than_authorized",
                format!("authorization {id} captured more than it held"),
            );
        }
        match payment.status {
            PaymentStatus::Committed if payment.decided_unix_ms.is_none_or(|at| at >= expires) => {
                report.violation(
                    "captured_after_expiry",
                    format!("authorization {id} was captured at or after its expiry ({expires})"),
                )
            }
            PaymentStatus::Aborted
                if payment.reason_code.as_deref()
                    == Some(strife_common::reason::AUTHORIZATION_EXPIRED)
                    && payment.decided_unix_ms.is_none_or(|at| at < expires) =>
            {
                report.violation(
                    "released_before_expiry",
                    format!("authorization {id} was released as expired before {expires}"),
                )
            }
            PaymentStatus::Authorized => {
                report.authorizations_open += 1;
                if still_open
                    .as_ref()
                    .is_some_and(|open| !open.contains(id.as_str()))
                {
                    continue;
                }
                let held = |bank: &str, kind: &str| {
                    prepared.contains(&(bank.to_owned(), id.clone(), kind.to_owned()))
                };
                if !(held(&payment.from_bank, "debit") && held(&payment.to_bank, "credit")) {
                    report.violation(
                        "authorization_not_held",
                        format!("authorization {id} is open but a bank does not hold its leg"),
                    );
                }
            }
            // Ended: on a quiet network its banks hold nothing for it any more.
            PaymentStatus::Committed | PaymentStatus::Aborted if later.is_none() => {
                let held = |bank: &str, kind: &str| {
                    prepared.contains(&(bank.to_owned(), id.clone(), kind.to_owned()))
                };
                if held(&payment.from_bank, "debit") || held(&payment.to_bank, "credit") {
                    report.violation(
                        "authorization_hold_not_released",
                        format!("authorization {id} has ended but a bank still holds its leg"),
                    );
                }
            }
            _ => {}
        }
    }
}

fn check_payments(
    payments: &[LoggedPayment],
    mut entries_by_payment: HashMap<String, Vec<Entry>>,
    report: &mut Report,
) {
    for payment in payments {
        report.payments_checked += 1;
        let entries = entries_by_payment
            .remove(&payment.payment_id)
            .unwrap_or_default();
        match payment.status {
            PaymentStatus::Committed => {
                report.payments_committed += 1;
                let debits: Vec<&Entry> = entries
                    .iter()
                    .filter(|entry| entry.entry.kind == "debit")
                    .collect();
                let credits: Vec<&Entry> = entries
                    .iter()
                    .filter(|entry| entry.entry.kind == "credit")
                    .collect();
                let debit_ok = debits.len() == 1
                    && debits[0].bank_id == payment.from_bank
                    && debits[0].entry.account_number == payment.from_account
                    && debits[0].entry.delta_minor == -payment.amount_minor;
                let credit_ok = credits.len() == 1
                    && credits[0].bank_id == payment.to_bank
                    && credits[0].entry.account_number == payment.to_account
                    && credits[0].entry.delta_minor == payment.amount_minor;
                if !(debit_ok && credit_ok) {
                    report.violation(
                        "commit_not_applied_exactly_once",
                        format!(
                            "payment {}: {} debit and {} credit journal entries (expected one each, matching)",
                            payment.payment_id,
                            debits.len(),
                            credits.len()
                        ),
                    );
                }
            }
            status => {
                if status == PaymentStatus::Aborted {
                    report.payments_aborted += 1;
                } else {
                    report.payments_pending += 1;
                }
                if !entries.is_empty() {
                    report.violation(
                        "uncommitted_payment_applied",
                        format!(
                            "payment {} is not COMMITTED but has {} journal entries",
                            payment.payment_id,
                            entries.len()
                        ),
                    );
                }
            }
        }
    }
    for (payment_id, entries) in entries_by_payment {
        report.violation(
            "unknown_payment_applied",
            format!(
                "{} journal entries for payment {payment_id}, which the gateway never logged",
                entries.len()
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(id: &str, status: i64) -> LoggedPayment {
        let status = PaymentStatus::from_code(status).unwrap_or(PaymentStatus::Pending);
        LoggedPayment {
            payment_id: id.into(),
            status,
            from_bank: "bank0".into(),
            from_account: "a".into(),
            to_bank: "bank1".into(),
            to_account: "b".into(),
            amount_minor: 100,
            currency: "USD".into(),
            expires_unix_ms: None,
            decided_unix_ms: None,
            reason_code: None,
            authorized_minor: None,
        }
    }

    fn entry(bank_id: &str, account: &str, payment_id: &str, delta_minor: i64) -> Entry {
        Entry {
            bank_id: bank_id.into(),
            entry: pb::JournalEntry {
                account_number: account.into(),
                kind: if delta_minor < 0 { "debit" } else { "credit" }.into(),
                delta_minor,
                payment_id: payment_id.into(),
                ..pb::JournalEntry::default()
            },
        }
    }

    fn kinds(report: &Report) -> Vec<&str> {
        report
            .violations
            .iter()
            .map(|violation| violation.kind.as_str())
            .collect()
    }

    #[test]
    fn a_committed_payment_applied_once_on_both_legs_is_clean() {
        let mut report = Report::default();
        let entries = HashMap::from([(
            "p".to_string(),
            vec![
                entry("bank0", "a", "p", -100),
                entry("bank1", "b", "p", 100),
            ],
        )]);
        check_payments(&[payment("p", 2)], entries, &mut report);
        assert!(report.is_clean(), "{:?}", report.violations);
    }

    #[test]
    fn half_applied_double_applied_and_aborted_but_applied_are_caught() {
        let mut report = Report::default();
        let entries = HashMap::from([
            ("half".to_string(), vec![entry("bank0", "a", "half", -100)]),
            (
                "twice".to_string(),
                vec![
                    entry("bank0", "a", "twice", -100),
                    entry("bank0", "a", "twice", -100),
                    entry("bank1", "b", "twice", 100),
                ],
            ),
            (
                "aborted".to_string(),
                vec![entry("bank1", "b", "aborted", 100)],
            ),
            ("ghost".to_string(), vec![entry("bank1", "b", "ghost", 100)]),
        ]);
        check_payments(
            &[
                payment("half", 2),
                payment("twice", 2),
                payment("aborted", 3),
            ],
            entries,
            &mut report,
        );
        assert_eq!(
            kinds(&report),
            vec![
                "commit_not_applied_exactly_once",
                "commit_not_applied_exactly_once",
                "uncommitted_payment_applied",
                "unknown_payment_applied"
            ]
        );
    }

    fn bank(bank_id: &str, balances: &[i64], deposits: &[i64]) -> BankSummary {
        let mut summary = BankSummary {
            bank_id: bank_id.into(),
            ..BankSummary::default()
        };
        for balance in balances {
            add_minor(&mut summary.balances_minor, "USD", *balance);
        }
        for deposit in deposits {
            add_minor(&mut summary.deposits_minor, "USD", *deposit);
        }
        summary
    }

    #[test]
    fn money_created_beyond_i64_is_not_hidden_by_saturation() {
        // An i64::MAX deposit, plus 100 minor units that appeared in another account from no
        // deposit at all. Saturating i64 sums would read MAX = MAX and call this conserved.
        let banks = [
            bank("bank0", &[i64::MAX], &[i64::MAX]),
            bank("bank1", &[100], &[]),
        ];
        let mut report = Report::default();
        check_conservation(&banks, &mut report);
        assert_eq!(kinds(&report), vec!["money_not_conserved"]);
        let detail = &report.violations[0].detail;
        let expected = (i128::from(i64::MAX) + 100).to_string();
        assert!(
            detail.contains(&expected),
            "exact sum in the report: {detail}"
        );
    }

    #[test]
    fn exact_sums_beyond_i64_that_agree_are_clean() {
        let banks = [
            bank("bank0", &[i64::MAX, 5], &[i64::MAX]),
            bank("bank1", &[i64::MAX], &[i64::MAX, 5]),
        ];
        let mut report = Report::default();
        check_conservation(&banks, &mut report);
        assert!(report.is_clean(), "{:?}", report.violations);
    }

    #[test]
    fn a_currency_only_on_one_side_is_caught() {
        let mut euros = bank("bank0", &[], &[]);
        add_minor(&mut euros.balances_minor, "EUR", 1);
        let mut report = Report::default();
        check_conservation(&[euros], &mut report);
        assert_eq!(kinds(&report), vec!["money_not_conserved"]);
    }

    fn prepared(legs: &[(&str, &str, &str)]) -> HashSet<(String, String, String)> {
        legs.iter()
            .map(|(bank, payment, kind)| (bank.to_string(), payment.to_string(), kind.to_string()))
            .collect()
    }

    fn in_flight_ids(report: &Report) -> Vec<&str> {
        report
            .in_flight
            .iter()
            .map(|in_flight| in_flight.payment_id.as_str())
            .collect()
    }

    fn authorization(id: &str, status: i64, decided_unix_ms: Option<i64>) -> LoggedPayment {
        LoggedPayment {
            expires_unix_ms: Some(1_000),
            decided_unix_ms,
            ..payment(id, status)
        }
    }

    #[test]
    fn an_open_authorization_must_be_held_at_both_banks() {
        let open = [authorization("a", 4, None)];
        let both = prepared(&[("bank0", "a", "debit"), ("bank1", "a", "credit")]);
        let mut report = Report::default();
        check_authorizations(&open, None, &both, &mut report);
        assert_eq!(kinds(&report), Vec::<&str>::new());
        assert_eq!(report.authorizations_open, 1);

        // The mutation a broken release would leave: one leg let go while still open.
        let mut report = Report::default();
        check_authorizations(
            &open,
            None,
            &prepared(&[("bank0", "a", "debit")]),
            &mut report,
        );
        assert_eq!(kinds(&report), ["authorization_not_held"]);
        // Live: ended between the reads, so its legs may be gone.
        let mut report = Report::default();
        let later = [authorization("a", 2, Some(900))];
        check_authorizations(&open, Some(&later), &prepared(&[]), &mut report);
        assert_eq!(kinds(&report), Vec::<&str>::new());
    }

    #[test]
    fn an_authorization_captured_at_its_expiry_or_ended_but_held_is_a_violation() {
        let mut report = Report::default();
        let expired = |id: &str, decided_unix_ms: i64| LoggedPayment {
            reason_code: Some("authorization_expired".into()),
            ..authorization(id, 3, Some(decided_unix_ms))
        };
        let payments = [
            authorization("in-time", 2, Some(999)),
            authorization("at-expiry", 2, Some(1_000)),
            authorization("voided-but-held", 3, Some(500)),
            expired("expired-on-time", 1_000),
            expired("expired-early", 999),
        ];
        let legs = prepared(&[("bank1", "voided-but-held", "credit")]);
        let mut payments = payments.to_vec();
        payments.push(LoggedPayment {
            authorized_minor: Some(99),
            ..authorization("over-captured", 2, Some(10))
        });
        check_authorizations(&payments, None, &legs, &mut report);
        assert_eq!(
            kinds(&report),
            [
                "captured_after_expiry",
                "authorization_hold_not_released",
                "released_before_expiry",
                "captured_more_than_authorized"
            ]
        );
    }

    #[test]
    fn live_committed_with_a_leg_still_prepared_is_in_flight_with_its_money() {
        let mut report = Report::default();
        // Debit applied at bank0; the credit is still PREPARED at bank1 (phase 2 under way).
        let entries = HashMap::from([("p".to_string(), vec![entry("bank0", "a", "p", -100)])]);
        classify_live(
            &[payment("p", 2)],
            &[payment("p", 2)],
            entries,
            &prepared(&[("bank1", "p", "credit")]),
            &mut report,
        );
        assert!(report.is_clean(), "{:?}", report.violations);
        assert_eq!(in_flight_ids(&report), vec!["p"]);
        assert_eq!(report.in_flight_count, 1);
        // Debited, not yet credited: 100 in flight, so balances + 100 = deposits.
        assert_eq!(report.in_flight_minor.get("USD"), Some(&100));
        let banks = [bank("bank0", &[0], &[100]), bank("bank1", &[0], &[])];
        check_conservation(&banks, &mut report);
        assert!(report.is_clean(), "{:?}", report.violations);
    }

    #[test]
    fn live_committed_with_a_leg_neither_applied_nor_prepared_is_a_violation() {
        let mut report = Report::default();
        let entries = HashMap::from([("p".to_string(), vec![entry("bank0", "a", "p", -100)])]);
        classify_live(
            &[payment("p", 2)],
            &[payment("p", 2)],
            entries,
            &prepared(&[]),
            &mut report,
        );
        assert_eq!(kinds(&report), vec!["commit_not_applied_exactly_once"]);
        assert!(report.in_flight.is_empty());
    }

    #[test]
    fn live_pending_and_later_logged_payments_are_in_flight_unknown_ones_are_not() {
        let mut report = Report::default();
        let entries = HashMap::from([
            (
                "pending".to_string(),
                vec![entry("bank1", "b", "pending", 100)],
            ),
            (
                "later".to_string(),
                vec![entry("bank0", "a", "later", -100)],
            ),
            ("ghost".to_string(), vec![entry("bank1", "b", "ghost", 100)]),
        ]);
        classify_live(
            &[payment("pending", 1)],
            &[payment("pending", 2), payment("later", 1)],
            entries,
            &prepared(&[]),
            &mut report,
        );
        assert_eq!(kinds(&report), vec!["unknown_payment_applied"]);
        assert_eq!(in_flight_ids(&report), vec!["pending", "later"]);
        // −100 credited early, +100 debited early.
        assert_eq!(report.in_flight_minor.get("USD"), Some(&0));
    }

    #[test]
    fn live_still_catches_double_application_and_aborted_but_applied() {
        let mut report = Report::default();
        let entries = HashMap::from([
            (
                "twice".to_string(),
                vec![
                    entry("bank0", "a", "twice", -100),
                    entry("bank0", "a", "twice", -100),
                ],
            ),
            (
                "aborted".to_string(),
                vec![entry("bank1", "b", "aborted", 100)],
            ),
            ("wrong".to_string(), vec![entry("bank1", "b", "wrong", 999)]),
        ]);
        classify_live(
            &[
                payment("twice", 2),
                payment("aborted", 3),
                payment("wrong", 1),
            ],
            &[],
            entries,
            &prepared(&[("bank1", "twice", "credit")]),
            &mut report,
        );
        assert_eq!(
            kinds(&report),
            vec![
                "commit_not_applied_exactly_once",
                "uncommitted_payment_applied",
                "commit_not_applied_exactly_once"
            ]
        );
        assert!(report.in_flight.is_empty());
    }

    #[test]
    fn live_a_payment_aborted_after_the_snapshot_may_not_have_entries() {
        let mut report = Report::default();
        let entries = HashMap::from([
            (
                "was_pending".to_string(),
                vec![entry("bank0", "a", "was_pending", -100)],
            ),
            (
                "was_unknown".to_string(),
                vec![entry("bank1", "b", "was_unknown", 100)],
            ),
        ]);
        classify_live(
            &[payment("was_pending", 1)],
            &[payment("was_pending", 3), payment("was_unknown", 3)],
            entries,
            &prepared(&[]),
            &mut report,
        );
        assert_eq!(
            kinds(&report),
            vec!["uncommitted_payment_applied", "uncommitted_payment_applied"]
        );
        assert!(report.in_flight.is_empty());
    }

    #[test]
    fn live_fully_applied_commit_is_checked_not_in_flight() {
        let mut report = Report::default();
        let entries = HashMap::from([(
            "p".to_string(),
            vec![
                entry("bank0", "a", "p", -100),
                entry("bank1", "b", "p", 100),
            ],
        )]);
        classify_live(
            &[payment("p", 2)],
            &[],
            entries,
            &prepared(&[]),
            &mut report,
        );
        assert!(report.is_clean(), "{:?}", report.violations);
        assert!(report.in_flight.is_empty());
        assert_eq!(report.payments_committed, 1);
    }

    mod settlement {
        use super::super::*;
        use super::kinds;
        use strife_ledger::records::{BilateralTotal, Party, PositionRecord, WindowRecord};

        fn party(user: &str, bank: &str) -> Party {
            Party {
                username: user.into(),
                bank_id: bank.into(),
                account_number: format!("{bank}-{user}"),
            }
        }

        fn logged(
            id: &str,
            from: (&str, &str),
            to: (&str, &str),
            amount_minor: i64,
            status: PaymentStatus,
            window_id: Option<i64>,
        ) -> PaymentRecord {
            PaymentRecord {
                seq: 0,
                payment_id: id.into(),
                idempotency_key: id.into(),
                from: party(from.0, from.1),
                to: party(to.0, to.1),
                amount_minor,
                currency: "USD".into(),
                memo: String::new(),
                metadata: Default::default(),
                status,
                reason_code: None,
                reason: None,
                debit_acked: true,
                credit_acked: true,
                decision_deadline_unix_ms: 0,
                created_unix_ms: 0,
                decided_unix_ms: None,
                coordinator: "gw".into(),
                decision_seq: None,
                refund_of: None,
                refunded_minor: 0,
                refund_pending_minor: 0,
                window_id,
                expires_unix_ms: None,
                authorized_unix_ms: None,
                authorized_minor: None,
            }
        }

        fn window(
            id: i64,
            closed: bool,
            settled: bool,
            totals: Vec<BilateralTotal>,
        ) -> WindowReport {
            WindowReport {
                window: WindowRecord {
                    window_id: id,
                    opened_unix_ms: 1,
                    closed_unix_ms: closed.then_some(2),
                    settled_unix_ms: settled.then_some(3),
                },
                totals,
            }
        }

        fn total(payer: &str, payee: &str, amount_minor: i64, payments: i64) -> BilateralTotal {
            BilateralTotal {
                payer_bank: payer.into(),
                payee_bank: payee.into(),
                currency: "USD".into(),
                amount_minor,
                payments,
            }
        }

        fn position(bank: &str, position_minor: i64, reserved_minor: i64) -> PositionRecord {
            PositionRecord {
                bank_id: bank.into(),
                currency: "USD".into(),
                position_minor,
                reserved_minor,
                cap_minor: Some(1_000_000),
            }
        }

        /// Window 1 settled (bank0 → bank1 500), window 2 closed (bank1 → bank0 200), window 3
        /// open (bank0 → bank1 100), a same-bank payment, an aborted one, a pending one (30
        /// reserved at bank0), and a refund of 40 committed plus 10 pending against p-3.
        fn consistent() -> LogSnapshot {
            use PaymentStatus::*;
            let mut refunded = logged(
                "p-3",
                ("alice", "bank0"),
                ("bob", "bank1"),
                100,
                Committed,
                Some(3),
            );
            refunded.refunded_minor = 40;
            refunded.refund_pending_minor = 10;
            let mut refund = logged(
                "r-1",
                ("bob", "bank1"),
                ("alice", "bank0"),
                40,
                Committed,
                Some(3),
            );
            refund.refund_of = Some("p-3".into());
            let mut pending_refund = logged(
                "r-2",
                ("bob", "bank1"),
                ("alice", "bank0"),
                10,
                Pending,
                None,
            );
            pending_refund.refund_of = Some("p-3".into());
            LogSnapshot {
                payments: vec![
                    logged(
                        "p-1",
                        ("alice", "bank0"),
                        ("bob", "bank1"),
                        500,
                        Committed,
                        Some(1),
                    ),
                    logged(
                        "p-2",
                        ("bob", "bank1"),
                        ("alice", "bank0"),
                        200,
                        Committed,
                        Some(2),
                    ),
                    refunded,
                    logged(
                        "p-4",
                        ("alice", "bank0"),
                        ("carol", "bank0"),
                        70,
                        Committed,
                        Some(3),
                    ),
                    logged(
                        "p-5",
                        ("alice", "bank0"),
                        ("bob", "bank1"),
                        60,
                        Aborted,
                        Some(3),
                    ),
                    logged(
                        "p-6",
                        ("alice", "bank0"),
                        ("bob", "bank1"),
                        30,
                        Pending,
                        None,
                    ),
                    refund,
                    pending_refund,
                ],
                links: vec![],
                positions: vec![
                    // Unsettled: window 2 (bank1 pays 200) and 3 (bank0 pays 100, bank1 40).
                    position("bank0", -200 + 100 - 40, 30),
                    position("bank1", 200 - 100 + 40, 10),
                ],
                windows: vec![
                    window(1, true, true, vec![total("bank0", "bank1", 500, 1)]),
                    window(2, true, false, vec![total("bank1", "bank0", 200, 1)]),
                    window(
                        3,
                        false,
                        false,
                        vec![
                            total("bank0", "bank1", 100, 1),
                            total("bank1", "bank0", 40, 1),
                        ],
                    ),
                ],
            }
        }

        fn findings(snapshot: &LogSnapshot) -> Report {
            let mut report = Report::default();
            check_settlement(snapshot, &mut report);
            report
        }

        #[test]
        fn a_consistent_log_is_clean() {
            let report = findings(&consistent());
            assert!(report.is_clean(), "{:?}", report.violations);
            assert_eq!(
                report.settlement,
                SettlementSummary {
                    windows: 3,
                    open_window: Some(3),
                    settled_windows: 1,
                    positions: 2,
                    refunds: 2,
                }
            );
        }

        #[test]
        fn a_position_off_from_its_derivation_is_caught() {
            let mut snapshot = consistent();
            snapshot.positions[0].position_minor += 1;
            assert_eq!(kinds(&findings(&snapshot)), vec!["position_mismatch"]);
        }

        #[test]
        fn a_reservation_that_outlived_its_decision_is_caught() {
            let mut snapshot = consistent();
            snapshot.payments[5].status = PaymentStatus::Aborted;
            snapshot.payments[5].window_id = Some(3);
            assert_eq!(kinds(&findings(&snapshot)), vec!["reservation_mismatch"]);
        }

        #[test]
        fn a_window_report_that_differs_from_its_payments_is_caught() {
            let mut snapshot = consistent();
            snapshot.windows[1].totals[0].amount_minor = 201;
            let report = findings(&snapshot);
            assert_eq!(kinds(&report), vec!["window_report_mismatch"]);
            // A payment moved to another window changes two reports.
            let mut snapshot = consistent();
            snapshot.payments[0].window_id = Some(2);
            let kinds_seen = kinds(&findings(&snapshot)).join(",");
            assert!(
                kinds_seen.contains("window_report_mismatch"),
                "{kinds_seen}"
            );
        }

        #[test]
        fn refunds_beyond_the_original_or_miscounted_are_caught() {
            let mut snapshot = consistent();
            snapshot.payments[6].amount_minor = 95;
            snapshot.payments[2].refunded_minor = 95;
            snapshot.positions[0].position_minor -= 55;
            snapshot.positions[1].position_minor += 55;
            snapshot.windows[2].totals[1].amount_minor = 95;
            assert_eq!(kinds(&findings(&snapshot)), vec!["refund_exceeds_payment"]);
            let mut snapshot = consistent();
            snapshot.payments[2].refund_pending_minor = 0;
            assert_eq!(kinds(&findings(&snapshot)), vec!["refund_mismatch"]);
        }

        #[test]
        fn two_open_windows_or_an_unstamped_decision_are_caught() {
            let mut snapshot = consistent();
            snapshot.windows[1].window.closed_unix_ms = None;
            assert_eq!(kinds(&findings(&snapshot)), vec!["open_windows"]);
            let mut snapshot = consistent();
            snapshot.payments[3].window_id = None;
            assert_eq!(kinds(&findings(&snapshot)), vec!["payment_window_mismatch"]);
        }
    }

    #[test]
    fn an_owner_other_than_the_linked_user_is_a_mismatch_unlinked_accounts_are_skipped() {
        let key = |bank: &str, account: &str| (bank.to_string(), account.to_string());
        let owners = HashMap::from([
            (key("bank0", "a"), "alice".to_string()),
            (key("bank0", "b"), "mallory".to_string()),
            (key("bank1", "c"), "carol".to_string()),
        ]);
        let links = HashMap::from([
            (key("bank0", "a"), "alice".to_string()),
            (key("bank0", "b"), "bob".to_string()),
        ]);
        let mut report = Report::default();
        check_owners(&owners, &links, &mut report);
        assert_eq!(kinds(&report), vec!["owner_mismatch"]);
        assert!(report.violations[0].detail.contains("bank0/b"));
    }
}
