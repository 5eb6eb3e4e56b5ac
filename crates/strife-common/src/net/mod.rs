//! The network side of every server and client: TLS and peer identity, the bounded accept
//! side, the gRPC tower layers, health and reflection, failover between gateway replicas, the
//! CA's revocation list, and the metrics endpoint.

pub mod connection;
pub mod failover;
pub mod grpc_limits;
pub mod listener;
pub mod metrics_endpoint;
pub mod operations;
pub mod revocation;
pub mod stream_limits;
pub mod tls;
