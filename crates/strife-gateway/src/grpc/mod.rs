//! The gRPC transport: the `strife.v1.Gateway` and `strife.v1.Coordinator` services as thin
//! adapters over the gateway's [`crate::service::Service`] and coordinator, and the request
//! log and auth layers (password checks are `crate::auth`'s, which the web console shares).

pub mod auth_layer;
pub mod decision;
pub mod gateway;
pub mod request_log;
