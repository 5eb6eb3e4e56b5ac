//! The gRPC transport: the `strife.v1.Gateway` and `strife.v1.Coordinator` services as thin
//! adapters over the gateway's [`crate::service::Service`] and coordinator, and the request
//! log and auth layers (password checks are `crate::auth`'s, which the web console shares);
//! and the same `Gateway` service for API keys on a port of its own (`api_key_grpc`).

pub mod api_key_grpc;
pub mod auth_layer;
pub mod decision;
pub mod gateway;
pub mod request_log;
