//! `strife gateway`: the payment gateway. Clients reach it over mutual TLS; it moves money
//! between bank accounts with two-phase commit.
//!
//! - [`auth`]: certificate + password authentication, lockout, and the role check (a layer).
//! - [`roles`]: the method → roles table.
//! - [`request_log`]: one log line per request (a layer).
//! - [`registry`]: the live bank map from an etcd watch, one channel per bank.
//! - [`payment`]: the payment lifecycle as pure decisions: idempotency, votes, outcomes.
//! - [`settlement`]: positions, net debit caps, settlement windows and refunds as pure
//!   decisions (the store executes them inside its writes).
//! - [`coordinator`]: the 2PC coordinator, recovery and phase-2 retries.
//! - [`cursor`]: watch cursors and page tokens sealed to their user.
//! - [`store`]: users, accounts, payments (the coordinator log), idempotency and settlement
//!   state in SQLite.
//! - [`api`]: the client-facing `strife.v1.Gateway` service.
//! - [`refusals`]: how many refused payments one user can make the gateway store.
//! - [`metrics`]: the gateway's Prometheus metrics (served on `--metrics-listen`).
//! - [`decision`]: the banks' `strife.v1.Coordinator` decision query.
//! - [`web`]: the web console (`--web-listen`): HTML pages over the same handlers.
//! - [`server`]: process wiring.

pub mod api;
pub mod auth;
pub mod coordinator;
pub mod cursor;
pub mod decision;
pub mod events;
pub mod lockout;
pub mod metrics;
pub mod payment;
pub mod refusals;
pub mod registry;
pub mod request_log;
pub mod roles;
pub mod server;
pub mod settlement;
pub mod store;
#[cfg(test)]
mod store_migration_tests;
pub mod takeover;
pub mod web;

pub use auth::LockoutPolicy;
pub use server::{run, GatewayConfig};
