//! Refusals across every process, as a stranger, a wrong caller or a foreign client meets
//! them (docs/SECURITY.md): every RPC against bad identities and bad input, the documented
//! status codes, connections pinned to the peer they meant to reach, revoked and expired
//! certificates, connection floods, open streams, compression and oversized metadata — each
//! refused, and nothing changed.

mod compression;
mod connection_limits;
mod expired_certificates;
mod matrix;
mod peer_pinning;
mod revocation;
mod status_codes;
mod streams;
