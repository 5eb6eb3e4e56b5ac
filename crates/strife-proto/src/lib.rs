//! Strife's gRPC contracts (`strife.v1`): the gateway↔bank API ([`v1::bank_client`],
//! [`v1::bank_server`]), the banks' decision query to the gateway ([`v1::coordinator_client`],
//! [`v1::coordinator_server`]) and the client↔gateway API ([`v1::gateway_client`],
//! [`v1::gateway_server`]).

/// Every `strife.v1` file descriptor, serialized: what server reflection serves.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/strife_descriptor.bin"));

/// Generated types and services of package `strife.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("strife.v1");
}
