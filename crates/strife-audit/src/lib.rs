//! `strife audit`: reconciliation across every bank and the gateway, for a quiescent network.
//!
//! It reads each bank's accounts, prepared legs and full journal over the bank API (with the
//! gateway's certificate from the data dir — only the gateway may talk to banks) and the
//! gateway's payment log from its database (read-only), then checks SPEC §8:
//! money conserved (Σ balances = Σ deposits per currency), no negative available balance,
//! every balance re-derivable from its journal, every COMMITTED payment applied exactly once on
//! both legs, every ABORTED one on neither, no journal entry the gateway does not know, and no
//! hold left PREPARED past its decision deadline.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use anyhow::Context;
use rusqlite::OpenFlags;
use serde::Serialize;
use strife_common::discovery::{bank_entry_from_kv, BANKS_PREFIX};
use strife_common::etcd::EtcdAccess;
use strife_common::layout::Layout;
use strife_common::limits::{AUDIT_CALL_TIMEOUT as CALL_TIMEOUT, MAX_JOURNAL_PAGE as JOURNAL_PAGE};
use strife_common::money::{self, Amount};
use strife_common::time::now_unix_ms;
use strife_common::tls::{ExpectedPeer, TlsMaterial};
use strife_proto::v1::{self as pb, bank_client::BankClient};
use tonic::transport::Channel;

/// Violations listed in the human report; `--json` has them all.
const MAX_VIOLATIONS_SHOWN: usize = 20;

/// What to audit.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub dir: PathBuf,
    pub etcd_endpoints: Vec<String>,
}

/// One broken invariant.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Violation {
    pub kind: String,
    pub detail: String,
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
    pub violations: Vec<Violation>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
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
        lines.push(format!(
            "money: balances {} vs deposits {}",
            render_totals(&total_balances),
            render_totals(&total_deposits)
        ));
        lines.push(format!(
            "payments: {} checked ({} committed, {} aborted, {} pending)",
            self.payments_checked,
            self.payments_committed,
            self.payments_aborted,
            self.payments_pending
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

/// Σ balances = Σ deposits per currency over every bank, exactly; else the violation.
fn check_conservation(banks: &[BankSummary], report: &mut Report) {
    let mut balances = Totals::new();
    let mut deposits = Totals::new();
    for bank in banks {
        add_into(&mut balances, &bank.balances_minor);
        add_into(&mut deposits, &bank.deposits_minor);
    }
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
    status: i64,
    from_bank: String,
    from_account: String,
    to_bank: String,
    to_account: String,
    amount_minor: i64,
}

fn read_gateway_payments(layout: &Layout) -> anyhow::Result<Vec<LoggedPayment>> {
    let path = layout.gateway_db();
    if !path.exists() {
        return Ok(Vec::new());
    }
    let connection = rusqlite::Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut statement = connection.prepare(
        "SELECT payment_id, status, from_bank, from_account, to_bank, to_account, amount_minor
         FROM payments ORDER BY seq",
    )?;
    let rows = statement.query_map([], |row| {
        Ok(LoggedPayment {
            payment_id: row.get(0)?,
            status: row.get(1)?,
            from_bank: row.get(2)?,
            from_account: row.get(3)?,
            to_bank: row.get(4)?,
            to_account: row.get(5)?,
            amount_minor: row.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

async fn bank_addresses(etcd: &EtcdAccess) -> anyhow::Result<HashMap<String, String>> {
    let mut client = etcd.connect().await?;
    let response = tokio::time::timeout(
        CALL_TIMEOUT,
        client.get(
            BANKS_PREFIX,
            Some(etcd_client::GetOptions::new().with_prefix()),
        ),
    )
    .await
    .context("listing banks timed out")??;
    Ok(response
        .kvs()
        .iter()
        .filter_map(|kv| bank_entry_from_kv(kv.key(), kv.value()).ok())
        .map(|entry| (entry.id, entry.address))
        .collect())
}

/// Runs the audit.
pub async fn audit(config: &AuditConfig) -> anyhow::Result<Report> {
    let layout = Layout::new(&config.dir);
    let manifest = strife_pki::Manifest::load(&layout)?;
    let tls = TlsMaterial::load(&layout.ca().cert, &layout.gateway_identity())?;
    // The audit reads etcd as the gateway does (it already holds the gateway's identity).
    let etcd = EtcdAccess::new(
        config.etcd_endpoints.clone(),
        &layout,
        strife_common::etcd::GATEWAY_USER,
    )?;
    let addresses = bank_addresses(&etcd).await?;
    let mut report = Report::default();
    let mut entries_by_payment: HashMap<String, Vec<Entry>> = HashMap::new();
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
        )
        .await
        {
            Ok(summary) => report.banks.push(summary),
            Err(error) => report.violation("bank_unreachable", format!("{bank_id}: {error:#}")),
        }
    }
    let banks = std::mem::take(&mut report.banks);
    check_conservation(&banks, &mut report);
    report.banks = banks;
    check_payments(
        &read_gateway_payments(&layout)?,
        entries_by_payment,
        &mut report,
    );
    Ok(report)
}

async fn audit_bank(
    bank_id: &str,
    mut client: BankClient<Channel>,
    now: i64,
    report: &mut Report,
    entries_by_payment: &mut HashMap<String, Vec<Entry>>,
) -> anyhow::Result<BankSummary> {
    let listed = client
        .list_accounts(pb::ListAccountsRequest {})
        .await?
        .into_inner();
    let mut summary = BankSummary {
        bank_id: bank_id.to_owned(),
        accounts: listed.accounts.len(),
        prepared_legs: listed.prepared_legs.len(),
        ..BankSummary::default()
    };
    for leg in &listed.prepared_legs {
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
    for account in &listed.accounts {
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
        loop {
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
                summary.journal_entries += 1;
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
            2 => {
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
                if status == 3 {
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
        LoggedPayment {
            payment_id: id.into(),
            status,
            from_bank: "bank0".into(),
            from_account: "a".into(),
            to_bank: "bank1".into(),
            to_account: "b".into(),
            amount_minor: 100,
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
}
