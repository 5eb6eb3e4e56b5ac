//! The bank's only authorization rule, as one interceptor: the caller must present the
//! gateway's certificate (role and CN), issued by our CA. TLS already refused connections
//! without a client certificate or with one from another CA; this refuses every other
//! Strife identity (users, other banks).

use strife_common::net::connection::{peer_identity, PeerIdentity};
use strife_common::Failure;
use tonic::{Request, Status};

/// Admits the gateway and records its identity in the request extensions for the journal.
pub fn admit_gateway(mut request: Request<()>) -> Result<Request<()>, Status> {
    let peer = peer_identity(&request)?;
    if !peer.is_gateway() {
        // The CN is whatever our CA signed; escaped so a newline or terminal escape in it
        // cannot forge or garble log lines.
        tracing::warn!(peer = %peer.to_string().escape_debug(), "refused a non-gateway caller");
        return Err(
            Failure::PermissionDenied("only the payment gateway may call a bank".into()).into(),
        );
    }
    request.extensions_mut().insert(Caller(peer));
    Ok(request)
}

/// The verified caller of a bank request.
#[derive(Debug, Clone)]
pub struct Caller(pub PeerIdentity);

/// The caller recorded by [`admit_gateway`], as text for the journal's `actor` column.
pub fn caller_of<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<Caller>()
        .map(|caller| caller.0.to_string())
        .unwrap_or_else(|| "unknown".to_owned())
}
