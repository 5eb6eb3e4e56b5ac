//! The HTTP/JSON API (`strife gateway --http-listen`): JSON over HTTPS under `/v1/`, for
//! integrators with a bearer API key instead of a client certificate. A transport of the
//! gateway process: every route calls the gateway's one service
//! ([`strife_gateway::service::Service`]) with the caller its key stands for, so validation,
//! idempotency (the same key space as gRPC's), scoping, the role table and refusals are
//! exactly gRPC's, and the key's scopes narrow them further. This crate does not depend on
//! the ledger, so no route can reach the store.
//!
//! - [`endpoint`]: the HTTPS listener (caps, eviction, deadlines); a `SideTransport`.
//! - [`routes`]: every route, the JSON rewrite of framework refusals, the request log.
//! - [`extract`]: the caller from `Authorization: Bearer`, JSON bodies under limits (unknown
//!   fields refused by name), the `Idempotency-Key` header.
//! - [`payments`]: pay, refunds, history, look-ups, balances, linking, events.
//! - [`stream`]: the events as server-sent events.
//! - [`admin`]: API keys; users, accounts and settlement (admin keys).
//! - [`model`]: the JSON shapes; [`error`]: the one error object and its statuses.
//! - [`openapi`]: the OpenAPI 3.1 document, generated from the two above.

pub mod admin;
pub mod endpoint;
pub mod error;
pub mod extract;
pub mod model;
pub mod openapi;
pub mod payments;
pub mod routes;
pub mod stream;

pub use endpoint::HttpApiPlan;
