//! `strife gateway`: the payment gateway. Clients reach it over mutual TLS; it moves money
//! between bank accounts with two-phase commit. What a payment is and the rules it obeys
//! (records, the pure payment and settlement decisions, lockout, the store) are the ledger
//! core, `strife_ledger`; this crate is the service around it.
//!
//! - [`service`]: the one service every transport calls (validation, scoping, the role check,
//!   payments, accounts, settlement, payment events).
//! - [`request`]: who made a request and its log slot, as a transport hands them over.
//! - [`auth`]: certificate + password authentication and lockout (a gRPC layer; the console
//!   logs in through the same authenticator).
//! - [`roles`]: the method → roles table.
//! - [`scopes`]: API key scopes and the method → scope table.
//! - [`grpc`]: the gRPC transport (`strife.v1.Gateway`, `strife.v1.Coordinator`, the request
//!   log layer).
//! - [`registry`]: the live bank map from an etcd watch, one channel per bank.
//! - [`coordinator`]: the 2PC coordinator, recovery and phase-2 retries.
//! - [`takeover`]: which replica finishes whose payments.
//! - [`metrics`]: the gateway's Prometheus metrics (served on `--metrics-listen`).
//! - [`transport`]: how transports served beside gRPC (the web console, `strife-console`)
//!   are handed the service.
//! - [`server`]: process wiring.

// What transports and the binary use; the rest is the gateway's own.
pub mod auth;
pub mod request;
pub mod roles;
pub mod scopes;
pub mod service;
pub mod transport;

mod coordinator;
mod grpc;
mod metrics;
mod registry;
mod server;
mod takeover;

pub use grpc::api_key_grpc::ApiKeyGrpcPlan;
pub use server::{run, GatewayConfig};
pub use strife_ledger::lockout::LockoutPolicy;
/// How often a replica looks for dead replicas' payments (the e2e suite bounds takeover by it).
pub use takeover::TAKEOVER_INTERVAL;
