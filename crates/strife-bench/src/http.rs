//! The HTTP API as a bench client drives it: one HTTP/1.1 keep-alive connection per task over
//! TLS (trusting the network's CA), `POST /v1/payments` with a bearer API key and an
//! `Idempotency-Key`. A connection the server closed is opened again.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// Where the API is: `https://HOST:PORT/PATH/`.
#[derive(Debug, Clone)]
pub struct ApiBase {
    authority: String,
    path: String,
    tls: Arc<rustls::ClientConfig>,
}

impl ApiBase {
    /// `url` as `strife dev` prints it (`https://127.0.0.1:PORT/v1/`), trusting `ca`.
    pub fn new(url: &str, ca: &Path) -> anyhow::Result<Self> {
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
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ApiBase {
            authority: authority.to_owned(),
            path: format!("/{}", path.trim_end_matches('/')),
            tls: Arc::new(tls),
        })
    }

    async fn connect(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
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
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// One task's connection and key.
pub struct HttpPayer {
    base: ApiBase,
    key: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl HttpPayer {
    pub fn new(base: ApiBase, key: String) -> Self {
        HttpPayer {
            base,
            key,
            sender: None,
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
        let request = hyper::Request::post(format!("{}/payments", self.base.path))
            .header(hyper::header::HOST, &self.base.authority)
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
        let sent = sender.send_request(request).await;
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
