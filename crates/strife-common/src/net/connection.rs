//! Who is on the other end of a served connection, as its certificate says: the role (OU) and
//! name (CN) a certificate carries ([`PeerRole`], [`PeerIdentity`]), read once per connection
//! ([`ConnectionInfo`], which the listener attaches to every connection it accepts,
//! `listener::bounded_incoming`) and checked against the CA's revocation list on every request
//! ([`connection_identity`], [`peer_identity`]).
//!
//! The listener and the TLS configuration both build on this; it depends on neither.

use std::fmt;
use std::sync::{Arc, OnceLock};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Request;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Failure;

/// What tonic records about a connection accepted through `listener::bounded_incoming`
/// (request extensions, inside `TlsConnectInfo`): its TCP addresses, its id in the per-peer
/// table, and its peer's certificate as read once for all its requests
/// ([`connection_identity`]).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub tcp: TcpConnectInfo,
    pub id: u64,
    pub(crate) peer: Arc<OnceLock<ParsedPeer>>,
}

/// OU of the gateway's certificate.
pub const OU_GATEWAY: &str = "strife-gateway";
/// OU of a bank's certificate.
pub const OU_BANK: &str = "strife-bank";
/// OU of a user's (and the admin's) certificate.
pub const OU_USER: &str = "strife-user";
/// CN of the gateway's certificate.
pub const GATEWAY_CN: &str = "gateway";

/// Which kind of process a certificate was issued to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    Gateway,
    Bank,
    User,
}

impl PeerRole {
    /// The OU value that marks this role in a certificate.
    pub fn organizational_unit(self) -> &'static str {
        match self {
            PeerRole::Gateway => OU_GATEWAY,
            PeerRole::Bank => OU_BANK,
            PeerRole::User => OU_USER,
        }
    }

    fn from_organizational_unit(unit: &str) -> Option<Self> {
        match unit {
            OU_GATEWAY => Some(PeerRole::Gateway),
            OU_BANK => Some(PeerRole::Bank),
            OU_USER => Some(PeerRole::User),
            _ => None,
        }
    }
}

/// Who is on the other end of a mutual-TLS connection, as its certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub role: PeerRole,
    pub name: String,
}

impl PeerIdentity {
    /// True for the gateway's certificate (role and CN both checked).
    pub fn is_gateway(&self) -> bool {
        self.role == PeerRole::Gateway && self.name == GATEWAY_CN
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}/{}",
            self.role.organizational_unit(),
            self.name
        )
    }
}

/// Reads role and name from a DER certificate. Only called on certificates the TLS layer
/// already verified against our CA; a certificate on the installed revocation list
/// (`revocation.rs`) has no identity.
pub fn identity_from_der(der: &[u8]) -> Result<PeerIdentity, Failure> {
    let parsed = ParsedPeer::of(der);
    parsed.identity_now()
}

/// A connection's peer certificate, parsed once: its serial (checked against the revocation
/// list on every request, so a list installed while the connection is open still counts) and
/// the identity its subject names, if it names one.
#[derive(Debug)]
pub struct ParsedPeer {
    serial: Vec<u8>,
    identity: Option<PeerIdentity>,
}

impl ParsedPeer {
    fn of(der: &[u8]) -> Self {
        match X509Certificate::from_der(der) {
            Ok((_, certificate)) => ParsedPeer {
                serial: certificate.raw_serial().to_vec(),
                identity: subject_identity(&certificate),
            },
            Err(_) => ParsedPeer {
                serial: Vec::new(),
                identity: None,
            },
        }
    }

    fn identity_now(&self) -> Result<PeerIdentity, Failure> {
        if crate::net::revocation::is_serial_revoked(&self.serial) {
            return Err(Failure::Unauthenticated);
        }
        self.identity.clone().ok_or(Failure::Unauthenticated)
    }
}

/// The verified peer of a connection accepted through `listener::bounded_incoming`: its
/// certificate is parsed on the connection's first request and remembered for the rest.
pub fn connection_identity(info: &TlsConnectInfo<ConnectionInfo>) -> Result<PeerIdentity, Failure> {
    let certificates = info.peer_certs().ok_or(Failure::Unauthenticated)?;
    let leaf = certificates.first().ok_or(Failure::Unauthenticated)?;
    info.get_ref()
        .peer
        .get_or_init(|| ParsedPeer::of(leaf.as_ref()))
        .identity_now()
}

fn subject_identity(certificate: &X509Certificate<'_>) -> Option<PeerIdentity> {
    let subject = certificate.subject();
    fn first_value<'a>(
        mut values: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
    ) -> Option<String> {
        values
            .next()
            .and_then(|attribute| attribute.as_str().ok())
            .map(str::to_owned)
    }
    let name = first_value(subject.iter_common_name())?;
    let unit = first_value(subject.iter_organizational_unit())?;
    let role = PeerRole::from_organizational_unit(&unit)?;
    Some(PeerIdentity { role, name })
}

/// The verified peer of a request, or `Unauthenticated` when there is none.
pub fn peer_identity<T>(request: &Request<T>) -> Result<PeerIdentity, Failure> {
    // Servers accept through `listener::bounded_incoming`, whose connections carry
    // `ConnectionInfo`; tonic's own `peer_certs()` only knows plain TCP connections.
    if let Some(info) = request.extensions().get::<TlsConnectInfo<ConnectionInfo>>() {
        return connection_identity(info);
    }
    let certificates = request.peer_certs().ok_or(Failure::Unauthenticated)?;
    let leaf = certificates.first().ok_or(Failure::Unauthenticated)?;
    identity_from_der(leaf.as_ref())
}
