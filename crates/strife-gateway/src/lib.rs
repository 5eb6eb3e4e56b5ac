//! `strife gateway`: the payment gateway. Clients reach it over mutual TLS; it moves money
//! between bank accounts with two-phase commit. What a payment is and the rules it obeys
//! (records, the pure payment and settlement decisions, lockout, the store) are the ledger
//! core, `strife_ledger`; this crate is the service around it.
//!
//! - [`auth`]: certificate + password authentication, lockout, and the role check (a layer).
//! - [`roles`]: the method → roles table.
//! - [`request_log`]: one log line per request (a layer).
//! - [`registry`]: the live bank map from an etcd watch, one channel per bank.
//! - [`coordinator`]: the 2PC coordinator, recovery and phase-2 retries.
//! - [`cursor`]: watch cursors and page tokens sealed to their user.
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
pub mod metrics;
pub mod refusals;
pub mod registry;
pub mod request_log;
pub mod roles;
pub mod server;
pub mod takeover;
pub mod web;

pub use server::{run, GatewayConfig};
pub use strife_ledger::lockout::LockoutPolicy;
