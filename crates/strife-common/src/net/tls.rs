//! TLS for every Strife link, in one place: loading a process's certificate and key, and the
//! server and client configurations (mutual TLS, our own CA only). Who the peer is, as its
//! certificate says, is [`super::connection`]'s.
//!
//! A certificate's role is its OU (`strife-gateway`, `strife-bank`, `strife-user`) and its
//! name is its CN (`gateway`, a bank id, a user name). Keeping the role apart from the name
//! means a user called `bank0` can never pass for the bank `bank0`.
//!
//! **Pinning.** A server certificate (gateway, bank) also carries an *identity name* as a DNS
//! SAN, `<name>.<role>.strife.invalid` (see [`identity_dns_name`]), and every client dials with
//! that name as the TLS server name ([`ExpectedPeer`]). So TLS itself refuses a server whose
//! certificate is not the exact role and name the caller meant to reach, whatever address
//! etcd handed out: a user certificate (no SAN, `clientAuth` only) can never serve as a bank
//! or the gateway, and bank1's certificate can never answer for bank0. The `.invalid` TLD is
//! reserved (RFC 2606), so the name can never be a real host someone else controls.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::layout::KeyPairPaths;
use crate::limits::{
    CONNECT_TIMEOUT, KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT, TLS_HANDSHAKE_TIMEOUT,
};
use crate::net::connection::{PeerRole, GATEWAY_CN};

/// Suffix of every identity name (RFC 2606 reserves `.invalid`; it never resolves).
pub const IDENTITY_DNS_SUFFIX: &str = "strife.invalid";

/// The DNS SAN that pins a server certificate to its role and name:
/// `bank0.bank.strife.invalid`, `gateway.gateway.strife.invalid`.
pub fn identity_dns_name(role: PeerRole, name: &str) -> String {
    let role_label = match role {
        PeerRole::Gateway => "gateway",
        PeerRole::Bank => "bank",
        PeerRole::User => "user",
    };
    // DNS names are case-insensitive, and names may hold '_' and be 64 bytes long, neither
    // of which a hostname label allows. A name that already is a safe label (lowercase
    // letters, digits, inner '-', not starting with 'x') is used as is; any other becomes
    // 'x' followed by its bytes, each outside [a-w y-z 0-9] written as `x<hex>`, split into
    // labels of at most 60. Only encoded names start with 'x' and `x` always starts an
    // escape, so the mapping is one-to-one (`Bank_0` and `bank_0` differ).
    let is_plain_byte = |byte: u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
    let plain = name.len() <= 63
        && !name.starts_with('x')
        && !name.ends_with('-')
        && name.bytes().all(|byte| is_plain_byte(byte) || byte == b'-');
    let label = if plain {
        name.to_owned()
    } else {
        let mut encoded = String::from("x");
        for byte in name.bytes() {
            if is_plain_byte(byte) && byte != b'x' {
                encoded.push(byte as char);
            } else {
                encoded.push_str(&format!("x{byte:02x}"));
            }
        }
        let chunks: Vec<&str> = encoded
            .as_bytes()
            .chunks(60)
            .filter_map(|chunk| std::str::from_utf8(chunk).ok())
            .collect();
        chunks.join(".")
    };
    format!("{label}.{role_label}.{IDENTITY_DNS_SUFFIX}")
}

/// The server a client means to reach; its certificate must carry exactly this identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedPeer {
    /// The payment gateway (clients, and banks asking for a decision).
    Gateway,
    /// The bank with this id (the gateway, audit).
    Bank(String),
}

impl ExpectedPeer {
    /// The TLS server name the peer's certificate must carry.
    pub fn server_name(&self) -> String {
        match self {
            ExpectedPeer::Gateway => identity_dns_name(PeerRole::Gateway, GATEWAY_CN),
            ExpectedPeer::Bank(bank_id) => identity_dns_name(PeerRole::Bank, bank_id),
        }
    }
}

impl fmt::Display for ExpectedPeer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedPeer::Gateway => write!(formatter, "the gateway"),
            ExpectedPeer::Bank(bank_id) => write!(formatter, "bank {bank_id}"),
        }
    }
}

/// How long before expiry a process starts warning about its certificate.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// A process's TLS material: the CA it trusts and its own certificate and key (PEM).
#[derive(Clone)]
pub struct TlsMaterial {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        formatter
            .debug_struct("TlsMaterial")
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// Loads the CA certificate and this process's pair, warning when the certificate
    /// expires within [`EXPIRY_WARNING_DAYS`] and failing when it already has.
    /// Refuses a private key that group or others may read, as ssh does: a key others can
    /// read is a key others may have copied.
    pub fn load(ca_cert: &Path, own: &KeyPairPaths) -> anyhow::Result<Self> {
        check_key_is_private(&own.key)?;
        let material = Self::load_unchecked(ca_cert, own)?;
        material.check_expiry(&own.cert)?;
        Ok(material)
    }

    /// Loads without the expiry check (for tests that must present a bad certificate).
    pub fn load_unchecked(ca_cert: &Path, own: &KeyPairPaths) -> anyhow::Result<Self> {
        let read = |path: &Path| {
            std::fs::read(path).with_context(|| {
                format!(
                    "cannot read {}; run `strife setup` first (see README)",
                    path.display()
                )
            })
        };
        let material = TlsMaterial {
            ca_pem: read(ca_cert)?,
            cert_pem: read(&own.cert)?,
            key_pem: read(&own.key)?,
        };
        Ok(material)
    }

    /// Days until this process's certificate expires (negative once it has).
    pub fn days_until_expiry(&self) -> anyhow::Result<i64> {
        let der = pem_to_der(&self.cert_pem)?;
        let (_, certificate) = X509Certificate::from_der(&der)
            .map_err(|error| anyhow::anyhow!("bad certificate: {error}"))?;
        let not_after = certificate.validity().not_after.timestamp();
        let now = crate::time::now_unix_ms() / 1000;
        Ok((not_after - now) / 86_400)
    }

    fn check_expiry(&self, cert_path: &Path) -> anyhow::Result<()> {
        let days_left = self.days_until_expiry()?;
        anyhow::ensure!(
            days_left >= 0,
            "certificate {} has expired; re-run `strife setup --force`",
            cert_path.display()
        );
        if days_left < EXPIRY_WARNING_DAYS {
            tracing::warn!(
                certificate = %cert_path.display(),
                days_left,
                "certificate expires soon; re-run `strife setup --force` to renew"
            );
        }
        Ok(())
    }

    /// SHA-256 (lowercase hex) of the CA certificate's DER: which network this is. Databases
    /// record it, so one from another network is recognised as foreign.
    pub fn ca_fingerprint(&self) -> anyhow::Result<String> {
        let der = pem_to_der(&self.ca_pem)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &der);
        Ok(digest
            .as_ref()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect())
    }

    /// Server side: present our certificate, require a client certificate from our CA, and
    /// give up on a handshake that takes longer than [`TLS_HANDSHAKE_TIMEOUT`].
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .timeout(TLS_HANDSHAKE_TIMEOUT)
    }

    /// A server with this material and the bounds every Strife server shares (request
    /// timeout, streams per connection, HTTP/2 header list). Parsing happens here, so a bad
    /// certificate or key stops a process before it binds, prints its ready line or registers
    /// in etcd; the error names both files.
    pub fn server_builder(&self, own: &KeyPairPaths) -> anyhow::Result<tonic::transport::Server> {
        let server = tonic::transport::Server::builder()
            .tls_config(self.server_config())
            .with_context(|| {
                format!(
                    "TLS material {} / {} is not usable",
                    own.cert.display(),
                    own.key.display()
                )
            })?
            .timeout(crate::limits::SERVER_REQUEST_TIMEOUT)
            .max_concurrent_streams(crate::limits::MAX_CONCURRENT_STREAMS)
            .http2_max_header_list_size(crate::limits::MAX_HEADER_LIST_BYTES)
            .tcp_nodelay(true);
        Ok(server)
    }

    /// Client side: trust only our CA, present our certificate, and accept only a server
    /// certificate that carries `expected`'s identity name (see the module doc).
    pub fn client_config(&self, expected: &ExpectedPeer) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(expected.server_name())
    }

    /// An endpoint for `address` (`host:port` or `https://host:port`) over mutual TLS that
    /// talks only to `expected` (whatever answers at the address), with bounded connect and
    /// request timeouts.
    pub fn endpoint(
        &self,
        address: &str,
        expected: &ExpectedPeer,
        request_timeout: Duration,
    ) -> anyhow::Result<Endpoint> {
        let uri = https_uri(address);
        let endpoint = Endpoint::from_shared(uri.clone())
            .with_context(|| format!("bad address {address:?}"))?
            .tls_config(self.client_config(expected))
            .with_context(|| format!("TLS configuration for {uri}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(request_timeout)
            // Long-lived channels (gateway → bank) stay under the servers' idle timeout.
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        Ok(endpoint)
    }
}

/// Fails if `key` is readable or writable by group or others (mode & 0o077).
pub fn check_key_is_private(key: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(key).with_context(|| {
        format!(
            "cannot read {}; run `strife setup` first (see README)",
            key.display()
        )
    })?;
    let mode = metadata.permissions().mode() & 0o777;
    anyhow::ensure!(
        mode & 0o077 == 0,
        "private key {} is accessible by others (mode {mode:04o}); refusing to use it. \
         Run `chmod 600 {}` (and consider the key leaked if others could read it)",
        key.display(),
        key.display()
    );
    Ok(())
}

/// `127.0.0.1:1` → `https://127.0.0.1:1`; an address that already has a scheme is kept.
pub fn https_uri(address: &str) -> String {
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("https://{address}")
    }
}

fn pem_to_der(pem: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem)
        .map_err(|error| anyhow::anyhow!("bad PEM certificate: {error}"))?;
    Ok(parsed.contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_names_are_one_to_one_and_hostname_safe() {
        assert_eq!(
            identity_dns_name(PeerRole::Bank, "bank0"),
            "bank0.bank.strife.invalid"
        );
        assert_eq!(
            ExpectedPeer::Gateway.server_name(),
            "gateway.gateway.strife.invalid"
        );
        let long = "B".repeat(64);
        let names = [
            "bank_0", "Bank0", "bank0", "xbank0", "x", "b-1", "b-", &long,
        ];
        let mut seen = std::collections::HashSet::new();
        for name in names {
            let dns = identity_dns_name(PeerRole::Bank, name);
            for label in dns.split('.') {
                assert!(label.len() <= 63 && !label.ends_with('-'), "{dns}");
                assert!(
                    label.bytes().all(|byte| byte.is_ascii_lowercase()
                        || byte.is_ascii_digit()
                        || byte == b'-'),
                    "{dns}"
                );
            }
            assert!(dns.len() <= 253, "{dns}");
            assert!(seen.insert(dns), "{name} collides");
        }
        assert_ne!(
            identity_dns_name(PeerRole::Bank, "gateway"),
            identity_dns_name(PeerRole::Gateway, "gateway")
        );
    }
}
