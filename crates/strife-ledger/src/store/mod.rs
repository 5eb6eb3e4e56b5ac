//! The gateway's durable state behind one interface: users and their password hashes, linked
//! bank accounts, payments (the coordinator's log: every payment's decision and which legs
//! have acknowledged it), idempotency records, and settlement: each bank's position,
//! reservation and net debit cap per currency, and the settlement windows with their
//! bilateral totals.
//!
//! Only this module and its backends know the gateway's schema. Everything else — the API,
//! the coordinator, `strife audit` — goes through [`GatewayStore`] (or, read-only,
//! [`GatewayLog`]). The rules a backend must keep, whatever its engine:
//!
//! - **Durable before reply**: a method that returns `Ok` after a write has committed it
//!   (fsynced or replicated as the engine defines it), except where a method's docs say the
//!   write is relaxed ([`GatewayStore::begin_payment`], [`GatewayStore::acknowledge`]).
//! - **Single assignment**: [`GatewayStore::decide`] changes a payment only while it is
//!   PENDING; every later caller gets the first decision back. This is what makes racing
//!   deciders (the payment's task, a bank's decision query, recovery, another replica) safe.
//! - **Idempotency inside the write**: [`GatewayStore::begin_payment`] reads what the key
//!   holds and applies [`crate::payment::begin`] in the same transaction that records the
//!   attempt, so two attempts under one key cannot both start.
//! - **Point lookups only** on a payment's path, so its cost does not grow with history.
//! - **Settlement moves with the coordinator's own writes** ([`crate::settlement`] decides,
//!   the backend executes inside the same transaction; docs/SPEC.md §9):
//!   - [`GatewayStore::begin_payment`] takes a cross-bank payment's reservation (cap check
//!     and reservation one step) and a refund's claim on its original's refundable amount,
//!     in the write that records the attempt PENDING — or refuses and records nothing;
//!   - [`GatewayStore::decide`] releases them, and for a COMMIT moves both banks' positions,
//!     adds the payment to the open window's bilateral totals and to its original's refunded
//!     amount, and stamps the payment with the open window — in the decision's write, only
//!     when it is the write that decides (a later caller changes nothing);
//!   - [`GatewayStore::close_window`] and [`GatewayStore::settle_window`] are one write each.
//!
//!   So after any crash the positions, reservations, totals and refund amounts equal their
//!   derivation from the payments (what `strife audit` checks), and exactly one window is
//!   open at every commit point.
//! - **Read-modify-write under a lock**: every settlement write reads a row, has
//!   [`crate::settlement`] decide, and writes it back. SQLite's single writer serializes these
//!   for free; a backend with concurrent writers must lock what it reads in the same
//!   transaction — the payer bank's position row for a reservation and both banks' rows for a
//!   decision (`SELECT … FOR UPDATE`, rows created with `INSERT … ON CONFLICT DO NOTHING`
//!   first), the original payment's row for a refund claim or release, the bilateral total
//!   row — so two payments can never both pass a cap or a refund limit on the same reading.
//!   And a decision must hold the open window row (`FOR SHARE`) while a close holds it `FOR
//!   UPDATE`, so no decision can be stamped with a window after that window's close commits.
//!
//! Backends: [`sqlite`] (embedded; the default under `--dir`) and [`postgres`] (a database
//! on a PostgreSQL server, which several gateway processes may share). [`StoreLocation`]
//! says which (`--store`), [`open`] and [`open_log`] open either.
//!
//! # Files
//!
//! No two files of the store import each other, not even through others (the tidy rule
//! `no_use_cycles_between_files`):
//!
//! - `mod.rs`: these docs, and the names the rest of the workspace uses, re-exported from the
//!   files below (it defines nothing, so no import ends in it);
//! - `location.rs`: [`StoreLocation`], [`open`], [`open_log`] and [`identity`], the one file
//!   that knows both backends;
//! - `sqlite/` and `postgres/`: the backends, which know only `interface.rs` of the store;
//! - `interface.rs`: [`GatewayStore`], [`GatewayLog`] and [`LoginChange`].
//!
//! Both backends are laid out alike, under the same names wherever a concept exists in
//! both: `mod.rs` holds opening and the [`GatewayStore`] methods (each one read or one write
//! calling into the rest, plus the attempt and decision writes); `schema.rs` the tables, the
//! migrations and the backend's own `SCHEMA_VERSION` (the two count separately); `read.rs`
//! row decoding (`payment_from_row`, …) and the lookups; `settle.rs` settlement as executed
//! inside the writes; `snapshot.rs` the audit's snapshot; `shared.rs` what concurrent calls
//! share. What every other file builds on — the connections and how the engine's errors are
//! answered — is PostgreSQL's `server.rs` (with `Call`, the shape of every store call) and
//! SQLite's `connection.rs`. Only PostgreSQL has `location.rs`, `batch.rs` and `claims.rs`;
//! only SQLite has `directory.rs`. Each backend's "Files" lists its files in import order.

mod interface;
mod location;
pub mod postgres;
pub mod sqlite;

pub use interface::{GatewayLog, GatewayStore, LoginChange};
pub use location::{identity, open, open_log, StoreLocation};
pub use postgres::{PostgresGatewayLog, PostgresGatewayStore, PostgresLocation};
pub use sqlite::{SqliteGatewayLog, SqliteGatewayStore};
