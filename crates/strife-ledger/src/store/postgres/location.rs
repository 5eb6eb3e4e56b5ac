//! Where the gateway's PostgreSQL store is and how to reach it: a libpq-style URL
//! (`postgres://user:password@host:port/dbname?sslmode=verify-full&sslrootcert=/ca.pem`),
//! parsed into a driver configuration plus the TLS policy, and the same URL with its
//! credentials removed for every message and log line.
//!
//! TLS (checked here, before any connection):
//!
//! - `sslmode=verify-full` (with `sslrootcert=<CA file>`; a `sslrootcert` alone implies it):
//!   TLS through rustls (ring provider), the server's certificate chained to that CA and
//!   naming the host. The only TLS mode, because the others either do not check who answers
//!   (`require`, `prefer`, `allow`) or not for which name (`verify-ca`), and the gateway sends
//!   its password and every payment over this connection.
//! - `sslmode=disable`: no TLS, for a Unix socket or loopback (tests, `strife dev`), or a
//!   network the operator vouches for. A URL naming a remote host must say one or the other:
//!   plain text is never the silent default off the machine.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context;
use tokio_postgres::config::{Host, SslMode};

/// How the connection is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostgresTls {
    /// Plain connections (Unix socket, loopback, or `sslmode=disable`).
    Disable,
    /// TLS, the server's certificate checked against `root_cert` and the host name.
    VerifyFull { root_cert: PathBuf },
}

/// A parsed store URL. Its `Debug` and [`PostgresLocation::redacted`] never show the password.
#[derive(Clone)]
pub struct PostgresLocation {
    config: tokio_postgres::Config,
    tls: PostgresTls,
    redacted: String,
    /// The password as written in the URL and decoded, to scrub from any message.
    secrets: Vec<String>,
}

impl std::fmt::Debug for PostgresLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl PostgresLocation {
    /// Parses a `postgres://` or `postgresql://` URL. Errors never contain the password.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let secrets = secrets_in(url);
        let scrub = |text: &str| scrub_with(&secrets, text);
        anyhow::ensure!(
            url.starts_with("postgres://") || url.starts_with("postgresql://"),
            "a PostgreSQL store is a postgres:// or postgresql:// URL, not {:?}",
            scrub(url)
        );
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (url, None),
        };
        let mut sslmode = None;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for pair in query.into_iter().flat_map(|query| query.split('&')) {
            if pair.is_empty() {
                continue;
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match percent_decode(key).as_deref() {
                Some("sslmode") => sslmode = Some(percent_decode(value).unwrap_or_default()),
                Some("sslrootcert") => root_cert = Some(percent_decode(value).unwrap_or_default()),
                _ => kept.push(pair),
            }
        }
        let driver_url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config = tokio_postgres::Config::from_str(&driver_url).map_err(|error| {
            anyhow::anyhow!(
                "the gateway's PostgreSQL store URL is not valid: {}",
                scrub(&error.to_string())
            )
        })?;
        let hosts = config.get_hosts().to_vec();
        anyhow::ensure!(
            !hosts.is_empty(),
            "the gateway's PostgreSQL store URL names no host (a TCP host, or a Unix socket \
             directory as `?host=/run/postgresql`)"
        );
        let local = hosts.iter().all(|host| match host {
            Host::Unix(_) => true,
            Host::Tcp(name) => is_loopback(name),
        });
        let tls = match (sslmode.as_deref(), root_cert) {
            (Some("verify-full") | None, Some(root_cert)) if !root_cert.is_empty() => {
                PostgresTls::VerifyFull {
                    root_cert: PathBuf::from(root_cert),
                }
            }
            (Some("verify-full"), _) => anyhow::bail!(
                "sslmode=verify-full needs the CA that signed the server's certificate: add \
                 sslrootcert=<CA file (PEM)> to the gateway's PostgreSQL store URL"
            ),
            (Some("disable"), _) => PostgresTls::Disable,
            (None, _) if local => PostgresTls::Disable,
            (None, _) => anyhow::bail!(
                "the gateway's PostgreSQL store {} is not on this machine, and its URL does \
                 not say how to protect the connection: add sslmode=verify-full&sslrootcert=<CA \
                 file>, or sslmode=disable to send passwords and payments in the clear",
                redact(&config, None)
            ),
            (Some(other), _) => anyhow::bail!(
                "sslmode={other} is not supported for the gateway's PostgreSQL store: use \
                 sslmode=verify-full with sslrootcert=<CA file> (the server's certificate is \
                 checked against that CA and the host name), or sslmode=disable"
            ),
        };
        config.ssl_mode(match tls {
            PostgresTls::Disable => SslMode::Disable,
            PostgresTls::VerifyFull { .. } => SslMode::Require,
        });
        if config.get_application_name().is_none() {
            config.application_name("strife-gateway");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(strife_common::limits::CONNECT_TIMEOUT);
        }
        let redacted = redact(&config, Some(&tls));
        Ok(PostgresLocation {
            config,
            tls,
            redacted,
            secrets,
        })
    }

    /// The URL without credentials, for messages and logs.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    pub fn tls(&self) -> &PostgresTls {
        &self.tls
    }

    /// `text` with every form of the password replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        scrub_with(&self.secrets, text)
    }

    /// The driver configuration, with `options` extended by `settings` (`-c name=value`
    /// startup parameters: they apply to the session from its first statement and beat any
    /// per-role or per-database default on the server).
    pub fn driver_config(&self, settings: &[(&str, &str)]) -> tokio_postgres::Config {
        let mut config = self.config.clone();
        let mut options = config.get_options().unwrap_or_default().to_owned();
        for (name, value) in settings {
            if !options.is_empty() {
                options.push(' ');
            }
            // Spaces inside an option value are escaped with a backslash (libpq rules).
            options.push_str(&format!("-c {name}={}", value.replace(' ', "\\ ")));
        }
        config.options(options);
        config
    }

    /// The TLS connector for this location's policy: no TLS, or rustls (ring) with only the
    /// configured CA as root.
    pub fn connector(&self) -> anyhow::Result<Connector> {
        match &self.tls {
            PostgresTls::Disable => Ok(Connector::Plain),
            PostgresTls::VerifyFull { root_cert } => {
                use rustls::pki_types::pem::PemObject;
                use rustls::pki_types::CertificateDer;
                let pem = std::fs::read(root_cert).with_context(|| {
                    format!(
                        "cannot read sslrootcert {} of the gateway's PostgreSQL store",
                        root_cert.display()
                    )
                })?;
                let mut roots = rustls::RootCertStore::empty();
                for certificate in CertificateDer::pem_slice_iter(&pem) {
                    let certificate = certificate.with_context(|| {
                        format!(
                            "sslrootcert {} is not PEM certificates",
                            root_cert.display()
                        )
                    })?;
                    roots.add(certificate).with_context(|| {
                        format!("sslrootcert {}: unusable certificate", root_cert.display())
                    })?;
                }
                anyhow::ensure!(
                    !roots.is_empty(),
                    "sslrootcert {} holds no certificate",
                    root_cert.display()
                );
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .context("TLS configuration for PostgreSQL")?
                .with_root_certificates(roots)
                .with_no_client_auth();
                Ok(Connector::Tls(
                    tokio_postgres_rustls::MakeRustlsConnect::new(config),
                ))
            }
        }
    }
}

/// The TLS side of a connection, as the pool needs it.
#[derive(Clone)]
pub enum Connector {
    Plain,
    Tls(tokio_postgres_rustls::MakeRustlsConnect),
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// `postgresql://user@host:port/dbname?sslmode=…`, from the parsed configuration (so no
/// spelling of the password in the original text can leak into it).
fn redact(config: &tokio_postgres::Config, tls: Option<&PostgresTls>) -> String {
    let user = config
        .get_user()
        .map(|user| format!("{user}@"))
        .unwrap_or_default();
    let ports = config.get_ports();
    let mut tcp = Vec::new();
    let mut sockets = Vec::new();
    for (index, host) in config.get_hosts().iter().enumerate() {
        let port = ports.get(index).or(ports.first());
        match host {
            Host::Tcp(name) => tcp.push(match port {
                Some(port) => format!("{name}:{port}"),
                None => name.clone(),
            }),
            Host::Unix(path) => sockets.push(path.display().to_string()),
        }
    }
    let mut query = Vec::new();
    if !sockets.is_empty() {
        query.push(format!("host={}", sockets.join(",")));
        if tcp.is_empty() {
            if let Some(port) = ports.first() {
                query.push(format!("port={port}"));
            }
        }
    }
    match tls {
        Some(PostgresTls::VerifyFull { root_cert }) => {
            query.push("sslmode=verify-full".into());
            query.push(format!("sslrootcert={}", root_cert.display()));
        }
        Some(PostgresTls::Disable) => query.push("sslmode=disable".into()),
        None => {}
    }
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    format!(
        "postgresql://{user}{}/{}{query}",
        tcp.join(","),
        config.get_dbname().unwrap_or_default()
    )
}

/// Every spelling of the password in `url`: the userinfo's and a `password=` parameter's,
/// raw and percent-decoded.
fn secrets_in(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if let Some((_, password)) = userinfo.split_once(':') {
                found.push(password.to_owned());
            }
        }
    }
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split('&') {
            if let Some((key, value)) = pair.split_once('=') {
                if percent_decode(key).as_deref() == Some("password") {
                    found.push(value.to_owned());
                }
            }
        }
    }
    let decoded: Vec<String> = found
        .iter()
        .filter_map(|secret| percent_decode(secret))
        .collect();
    found.extend(decoded);
    found.retain(|secret| !secret.is_empty());
    found.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    found.dedup();
    found
}

fn scrub_with(secrets: &[String], text: &str) -> String {
    secrets
        .iter()
        .fold(text.to_owned(), |text, secret| text.replace(secret, "***"))
}

/// `%XX` decoding (and `+` kept as is, as libpq does); `None` if it is not valid UTF-8 or a
/// `%` is not followed by two hex digits.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_urls_default_to_plain_and_hide_the_password() {
        let location =
            PostgresLocation::parse("postgres://gateway:s3cr%40t@127.0.0.1:5432/strife").unwrap();
        assert_eq!(location.tls(), &PostgresTls::Disable);
        assert_eq!(
            location.redacted(),
            "postgresql://gateway@127.0.0.1:5432/strife?sslmode=disable"
        );
        assert!(!format!("{location:?}").contains("s3cr"));
        assert_eq!(
            location.scrub("password s3cr@t or s3cr%40t leaked"),
            "password *** or *** leaked"
        );
        let socket = PostgresLocation::parse(
            "postgresql://strife@/gw?host=/tmp/pg%20sock&port=6000&password=hunter2hunter2",
        )
        .unwrap();
        assert_eq!(socket.tls(), &PostgresTls::Disable);
        assert_eq!(
            socket.redacted(),
            "postgresql://strife@/gw?host=/tmp/pg sock&port=6000&sslmode=disable"
        );
        assert_eq!(socket.scrub("hunter2hunter2"), "***");
    }

    #[test]
    fn verify_full_takes_a_root_certificate() {
        let location = PostgresLocation::parse(
            "postgresql://gw:pw@db.example.com/strife?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(
            location.tls(),
            &PostgresTls::VerifyFull {
                root_cert: "/etc/ca.pem".into()
            }
        );
        assert_eq!(
            location.redacted(),
            "postgresql://gw@db.example.com:5432/strife?sslmode=verify-full&sslrootcert=/etc/ca.pem"
        );
        // A root certificate alone means verify-full.
        let implied =
            PostgresLocation::parse("postgresql://gw@db.example.com/s?sslrootcert=/ca.pem")
                .unwrap();
        assert!(matches!(implied.tls(), PostgresTls::VerifyFull { .. }));
    }

    #[test]
    fn weak_or_missing_tls_off_the_machine_is_refused() {
        for (url, expected) in [
            ("postgresql://gw:pw@db.example.com/s", "not on this machine"),
            (
                "postgresql://gw:pw@db.example.com/s?sslmode=require",
                "sslmode=require is not supported",
            ),
            (
                "postgresql://gw:pw@db.example.com/s?sslmode=verify-ca&sslrootcert=/x",
                "sslmode=verify-ca is not supported",
            ),
            (
                "postgresql://gw:pw@db.example.com/s?sslmode=verify-full",
                "needs the CA",
            ),
        ] {
            let error = PostgresLocation::parse(url).unwrap_err().to_string();
            assert!(error.contains(expected), "{url}: {error}");
            assert!(!error.contains(":pw"), "{error}");
        }
        let plain =
            PostgresLocation::parse("postgresql://gw:pw@db.example.com/s?sslmode=disable").unwrap();
        assert_eq!(plain.tls(), &PostgresTls::Disable);
    }

    #[test]
    fn errors_never_show_the_password() {
        for url in [
            "postgresql://gw:Sup3rSecretPw@host/db?nonsense=1",
            "mysql://gw:Sup3rSecretPw@host/db",
            "postgresql://gw:Sup3rSecretPw@host:notaport/db",
        ] {
            let error = format!("{:#}", PostgresLocation::parse(url).unwrap_err());
            assert!(!error.contains("Sup3rSecretPw"), "{error}");
        }
    }

    #[test]
    fn session_settings_extend_the_options() {
        let location =
            PostgresLocation::parse("postgresql://gw@localhost/s?options=-c%20search_path%3Dx")
                .unwrap();
        let config = location.driver_config(&[
            ("synchronous_commit", "on"),
            ("default_transaction_isolation", "read committed"),
        ]);
        assert_eq!(
            config.get_options(),
            Some(
                "-c search_path=x -c synchronous_commit=on -c default_transaction_isolation=read\\ committed"
            )
        );
    }
}
