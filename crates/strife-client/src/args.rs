//! The `strife client` command line.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use strife_common::layout::DEFAULT_DIR;
use strife_common::limits::DEFAULT_GATEWAY_ADDRESS;

/// Flags every client command shares, and the command.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Data directory (certificates from `strife setup`; the outbox lives here too).
    #[arg(long, default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
    /// Who you are: your certificate's name and your gateway login.
    #[arg(long, env = "STRIFE_USER")]
    pub user: String,
    /// Gateway address, or several replicas' comma-separated (`a:50050,b:50050`): a call
    /// that cannot reach one replica is sent to the next, with the same idempotency key.
    #[arg(long, default_value = DEFAULT_GATEWAY_ADDRESS, env = "STRIFE_GATEWAY")]
    pub gateway: String,
    /// Read the password from this file (otherwise STRIFE_PASSWORD, the setup file for
    /// `admin`, or a prompt).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub command: ClientCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// (admin) Register a user; the new password comes from STRIFE_NEW_PASSWORD or a prompt.
    Register { username: String },
    /// (admin) Open an account for a user at a bank.
    OpenAccount(OpenAccountArgs),
    /// Link one of your bank accounts (or update its holder name).
    Link {
        #[arg(long)]
        bank: String,
        #[arg(long)]
        account: String,
        #[arg(long, default_value = "")]
        holder_name: String,
    },
    /// Your balances (admins: `--of USER`).
    Balance {
        #[arg(long)]
        of: Option<String>,
    },
    /// Pay another user. Queued in the outbox if the gateway is unreachable.
    Pay {
        #[arg(long)]
        to: String,
        /// Amount like 12.50 (no sign, at most the currency's decimals).
        #[arg(long, allow_hyphen_values = true)]
        amount: String,
        #[arg(long, default_value = "USD")]
        currency: String,
        #[arg(long, default_value = "")]
        from_bank: String,
        #[arg(long, default_value = "")]
        to_bank: String,
        /// Idempotency key; a new one is chosen if absent. Reuse it to retry safely.
        #[arg(long)]
        key: Option<String>,
        #[arg(long, default_value = "")]
        memo: String,
        /// Metadata entry KEY=VALUE (repeat for more): your own references, stored and shown
        /// with the payment, never interpreted.
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
    },
    /// Hold funds for a payee to capture later (an authorization): your available balance
    /// falls now; the money moves when the payee captures, and comes back on a void or at the
    /// expiry. Online only (never queued).
    Authorize {
        #[arg(long)]
        to: String,
        /// Amount like 100.00.
        #[arg(long, allow_hyphen_values = true)]
        amount: String,
        #[arg(long, default_value = "USD")]
        currency: String,
        /// How long the hold lasts, in seconds (1 to 604800 = 7 days).
        #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
        expires_in: u32,
        #[arg(long, default_value = "")]
        from_bank: String,
        #[arg(long, default_value = "")]
        to_bank: String,
        /// Idempotency key; a new one is chosen if absent. Reuse it to retry safely.
        #[arg(long)]
        key: Option<String>,
        #[arg(long, default_value = "")]
        memo: String,
        /// Metadata entry KEY=VALUE (repeat for more).
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
    },
    /// Capture an authorization made to you (admin: any): all of it, or `--amount` of it
    /// (the rest of the hold is released).
    Capture {
        payment_id: String,
        /// Amount like 30.00 in the authorization's currency (default: all of it).
        #[arg(long, allow_hyphen_values = true)]
        amount: Option<String>,
    },
    /// Void an authorization you made or received (admin: any): its hold is released.
    Void { payment_id: String },
    /// Your payments, newest first.
    History {
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
    },
    /// One payment.
    Payment { payment_id: String },
    /// Your payments that match every filter given (admin: everyone's, or `--of USER`),
    /// newest first.
    Payments {
        #[arg(long, value_enum)]
        status: Option<StatusFilter>,
        #[arg(long, value_enum)]
        direction: Option<DirectionFilter>,
        /// Only payments with this other party.
        #[arg(long = "with", value_name = "USER")]
        counterparty: Option<String>,
        /// Created at or after, e.g. 2026-12-01T00:00:00Z (UTC).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Created before, e.g. 2026-12-08T00:00:00Z (UTC).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Amount at least, like 10.00 (in --currency, default USD).
        #[arg(long, value_name = "AMOUNT")]
        min: Option<String>,
        /// Amount at most, like 99.99.
        #[arg(long, value_name = "AMOUNT")]
        max: Option<String>,
        /// Only payments in this currency.
        #[arg(long)]
        currency: Option<String>,
        /// A metadata entry that must be exactly KEY=VALUE.
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Option<String>,
        /// (admin) One user's payments.
        #[arg(long)]
        of: Option<String>,
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
    },
    /// The refunds of a payment you paid or received (admin: any), newest first.
    Refunds {
        payment_id: String,
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
    },
    /// What is in your offline outbox.
    Outbox,
    /// Print your payments (admin: all payments) as their decisions become durable. Resumes
    /// by itself after a dropped connection; `--since CURSOR` continues an earlier watch.
    Watch {
        #[command(flatten)]
        follow: FollowArgs,
    },
    /// For developing a webhook receiver: forward your payment events (admin: all), signed as
    /// webhook deliveries (`Strife-Signature`), to a local URL, one line per event. The
    /// signing secret is STRIFE_WEBHOOK_SECRET, or a new one printed at the start.
    Listen {
        /// Where to POST each event: http:// to a loopback address, e.g.
        /// http://127.0.0.1:4242/webhooks.
        #[arg(long, value_name = "URL")]
        forward_to: String,
        #[command(flatten)]
        follow: FollowArgs,
    },
    /// Refund a payment you received (admin: any payment), in full or in part: a new payment
    /// back to the payer, linked to the original.
    Refund {
        payment_id: String,
        /// Amount like 5.00 in the payment's currency (default: all that is not yet refunded).
        #[arg(long, allow_hyphen_values = true)]
        amount: Option<String>,
        /// Why (stored as the refund's memo).
        #[arg(long, default_value = "")]
        reason: String,
        /// Idempotency key; a new one is chosen if absent. Rerun with it after a failure to
        /// refund exactly once.
        #[arg(long)]
        key: Option<String>,
        /// Metadata entry KEY=VALUE for the refund (repeat for more).
        #[arg(long = "meta", value_name = "KEY=VALUE")]
        meta: Vec<String>,
    },
    /// API keys for the HTTP API: create (the key is printed once), list, revoke.
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// (admin) Interbank settlement: windows and their statements, net debit caps, positions.
    Settlement {
        #[command(subcommand)]
        command: SettlementCommand,
    },
    /// Send queued payments and resolve unknown outcomes (by key) now; with --watch keep going.
    Sync {
        #[arg(long)]
        watch: bool,
        /// With --watch: stop once nothing is queued.
        #[arg(long)]
        until_empty: bool,
        /// Longest this run may take, in seconds (default: 60; with --watch: until Ctrl-C).
        /// A payment is never given up: what is left stays in the outbox for the next run.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400 * 365))]
        max_seconds: Option<u64>,
    },
}

/// `open-account`: which account to open for whom.
#[derive(Debug, Args)]
pub struct OpenAccountArgs {
    #[arg(long = "user", id = "account_user")]
    pub username: String,
    #[arg(long)]
    pub bank: String,
    #[arg(long, default_value = "USD")]
    pub currency: String,
    /// Opening deposit, e.g. 100.00.
    #[arg(long, default_value = "0")]
    pub deposit: String,
    #[arg(long, default_value = "")]
    pub holder_name: String,
    /// Idempotency key; a new one is chosen if absent. Rerun with it after a failure to open
    /// the account exactly once.
    #[arg(long)]
    pub key: Option<String>,
}

/// `settlement`: what the admin does with windows, caps and positions.
#[derive(Debug, Subcommand)]
pub enum SettlementCommand {
    /// Settlement windows, newest first (exactly one is open).
    Windows {
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
    },
    /// Close the open window (or `WINDOW`, which must be the open one) and open the next;
    /// prints the closed window's statement. Retrying a close never closes a second window.
    Close { window: Option<u64> },
    /// A window's settlement statement: what each bank pays or receives, and the bilateral
    /// totals behind it (the open window's is provisional).
    Report { window: u64 },
    /// Record that a closed window's net amounts have moved; frees the banks' positions.
    Settle { window: u64 },
    /// Set a bank's net debit cap in a currency (`--amount 500.00`), or remove it (`--none`).
    Cap {
        #[arg(long)]
        bank: String,
        #[arg(long, default_value = "USD")]
        currency: String,
        /// The cap, like 500.00 (0 allowed: the bank may only pay out what it received).
        #[arg(
            long,
            allow_hyphen_values = true,
            conflicts_with = "none",
            required_unless_present = "none"
        )]
        amount: Option<String>,
        /// No cap (unlimited).
        #[arg(long)]
        none: bool,
    },
    /// Every bank's position, reservation, cap and headroom.
    Positions,
}

/// `api-key`: bearer keys for the HTTP API.
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// A new key for you (admin: `--owner USER`), printed once.
    Create {
        /// Scopes, repeated or comma-separated: payments:write, payments:read,
        /// refunds:write, events:read (admin keys also settlement:read, settlement:write,
        /// admin).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// Days until the key expires (default: never; at most 1098).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1098))]
        expires_in_days: Option<u32>,
    },
    /// Your keys (admin: everyone's, or `--owner USER`'s), without their secrets.
    List {
        #[arg(long)]
        owner: Option<String>,
    },
    /// Revoke a key by its id (the part after `sk_`).
    Revoke { key_id: String },
}

/// Where `watch` and `listen` start following payment events, and when they stop.
#[derive(Debug, Clone, clap::Args)]
pub struct FollowArgs {
    /// A cursor printed with an earlier event (continue after it); 0 = from the start;
    /// absent = from now.
    #[arg(long)]
    pub since: Option<String>,
    /// Stop after this many events.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_events: Option<u64>,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=86_400 * 365))]
    pub max_seconds: Option<u64>,
}

/// `payments --status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFilter {
    Pending,
    Authorized,
    Committed,
    Aborted,
}

/// `payments --direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DirectionFilter {
    Sent,
    Received,
}
