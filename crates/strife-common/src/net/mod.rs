//! The network side of every server and client: TLS and peer identity, the bounded accept
//! side, the gRPC tower layers, health and reflection, how a gRPC server runs (`serve`),
//! failover between gateway replicas, the CA's revocation list, and the metrics endpoint.

pub mod connection;
pub mod failover;
pub mod grpc_limits;
pub mod https_side;
pub mod listener;
pub mod metrics_endpoint;
pub mod operations;
pub mod revocation;
pub mod serve;
pub mod side_http;
pub mod stream_limits;
pub mod tls;
