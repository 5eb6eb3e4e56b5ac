//! The HTTP API as a bench client drives it: one HTTP/1.1 keep-alive connection per task, or
//! a few HTTP/2 connections the tasks share (a stream per request), over TLS (trusting the
//! network's CA); `POST /v1/payments` with a bearer API key and an `Idempotency-Key`. A
//! connection the server closed is opened again.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// Which HTTP the bench speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http1,
    Http2,
}

/// Where the API is: `https://HOST:PORT/PATH/`.
#[derive(Debug, Clone)]
pub struct ApiBase {
    authority: String,
    path: String,
    tls: Arc<rustls::ClientConfig>,
    version: Version,
}

/// A connection to send requests on.
pub enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    /// A handle on an HTTP/2 connection (handles of one connection share it).
    Http2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(sender) => sender.is_closed(),
            Sender::Http2(sender) => sender.is_closed(),
        }
    }

    async fn send(
        &mut self,
        request: hyper::Request<Full<Bytes>>,
    ) -> hyper::Result<hyper::Response<hyper::body::Incoming>> {
        match self {
            Sender::Http1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await
            }
            Sender::Http2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await
            }
        }
    }
}

impl ApiBase {
    /// `url` as `strife dev` prints it (`https://127.0.0.1:PORT/v1/`), trusting `ca`.
    pub fn new(url: &str, ca: &Path, version: Version) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("https://")
            .with_context(|| format!("the HTTP API URL {url} does not start with https://"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading {}", ca.display()))?
        {
            roots.add(certificate.with_context(|| format!("reading {}", ca.display()))?)?;
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = match version {
            Version::Http1 => vec![b"http/1.1".to_vec()],
            Version::Http2 => vec![b"h2".to_vec()],
        };
        Ok(ApiBase {
            authority: authority.to_owned(),
            path: format!("/{}", path.trim_end_matches('/')),
            tls: Arc::new(tls),
            version,
        })
    }

    /// A new connection of the base's version.
    pub async fn connect(&self) -> anyhow::Result<Sender> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .with_context(|| format!("connecting to {}", self.authority))?;
        stream.set_nodelay(true)?;
        let host = self
            .authority
            .rsplit_once(':')
            .map_or(self.authority.as_str(), |(host, _)| host);
        let name = ServerName::try_from(host.to_owned())?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
            .connect(name, stream)
            .await?;
        let io = TokioIo::new(stream);
        match self.version {
            Version::Http1 => {
                let (sender, connection) = http1::handshake(io).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok(Sender::Http1(sender))
            }
            Version::Http2 => {
                let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok(Sender::Http2(sender))
            }
        }
    }
}

/// One task's connection and key.
pub struct HttpPayer {
    base: ApiBase,
    key: String,
    sender: Option<Sender>,
}

impl HttpPayer {
    /// A payer with `key`, on `shared` (an HTTP/2 connection other payers use too) or on a
    /// connection of its own, opened at its first payment.
    pub fn new(
        base: ApiBase,
        key: String,
        shared: Option<http2::SendRequest<Full<Bytes>>>,
    ) -> Self {
        HttpPayer {
            base,
            key,
            sender: shared.map(Sender::Http2),
        }
    }

    /// Pays `payee`; `Err` carries the refusal's code (or what failed).
    pub async fn pay(
        &mut self,
        payee: &str,
        amount_minor: i64,
        idempotency_key: &str,
    ) -> Result<(), String> {
        let body = serde_json::json!({
            "to_username": payee,
            "amount": {"amount_minor": amount_minor, "currency": "USD"},
        })
        .to_string();
        // HTTP/2 takes the authority from an absolute URI; HTTP/1.1 from `Host`.
        let request = match self.base.version {
            Version::Http1 => hyper::Request::post(format!("{}/payments", self.base.path))
                .header(hyper::header::HOST, &self.base.authority),
            Version::Http2 => hyper::Request::post(format!(
                "https://{}{}/payments",
                self.base.authority, self.base.path
            )),
        };
        let request = request
            .header(hyper::header::AUTHORIZATION, format!("Bearer {}", self.key))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", idempotency_key)
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| error.to_string())?;
        let sender = match self.sender.as_mut() {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.sender.insert(
                self.base
                    .connect()
                    .await
                    .map_err(|error| format!("{error:#}"))?,
            ),
        };
        let sent = sender.send(request).await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                self.sender = None;
                return Err(format!("http: {error}"));
            }
        };
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| format!("http: {error}"))?
            .to_bytes();
        if status.is_success() {
            return Ok(());
        }
        let code = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|error| error["error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("http_{}", status.as_u16()));
        Err(code)
    }
}
