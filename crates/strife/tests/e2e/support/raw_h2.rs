//! A raw HTTP/2 client over mutual TLS, for what a gRPC library will not send: hand-framed
//! messages (a corrupt compressed one, a compressed flag without an encoding), encodings the
//! server does not accept, metadata far over the limits. Each answer keeps the HTTP status,
//! headers and trailers, so a test sees exactly what a foreign client would.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use strife_common::layout::KeyPairPaths;
use tokio::net::TcpStream;

/// One HTTP/2 connection to a server, presenting one identity.
pub struct RawH2 {
    send: h2::client::SendRequest<Bytes>,
    authority: String,
    /// How the connection ended, once it has (`Err` carries the GOAWAY or I/O error).
    ended: tokio::task::JoinHandle<Result<(), h2::Error>>,
}

/// What the server answered: the gRPC status is in the headers (trailers-only) or trailers.
#[derive(Debug)]
pub struct RawAnswer {
    pub http_status: http::StatusCode,
    pub headers: HeaderMap,
    pub trailers: Option<HeaderMap>,
    pub body: Vec<u8>,
}

impl RawAnswer {
    /// The gRPC status, wherever it was sent; `None` if there was none (not a gRPC answer).
    pub fn status(&self) -> Option<tonic::Status> {
        tonic::Status::from_header_map(&self.headers).or_else(|| {
            self.trailers
                .as_ref()
                .and_then(tonic::Status::from_header_map)
        })
    }
}

/// A gRPC length-prefixed message: compressed flag, 4-byte big-endian length, payload.
pub fn grpc_frame(compressed_flag: u8, payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(5 + payload.len());
    frame.put_u8(compressed_flag);
    frame.put_u32(u32::try_from(payload.len()).unwrap());
    frame.put_slice(payload);
    frame.freeze()
}

/// `payload` gzip-compressed.
pub fn gzip(payload: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(payload).unwrap();
    encoder.finish().unwrap()
}

impl RawH2 {
    /// Connects to `address`, presenting `identity` (trusting only `ca`), and expects the
    /// server's certificate to carry `server_name` (e.g. `gateway.gateway.strife.invalid`).
    pub async fn connect(
        ca: &std::path::Path,
        identity: &KeyPairPaths,
        address: &str,
        server_name: &str,
    ) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(certificate.unwrap()).unwrap();
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&identity.cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(&identity.key).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(address).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(server_name.to_owned()).unwrap(), tcp)
            .await
            .unwrap();
        let (send, connection) = h2::client::handshake(tls).await.unwrap();
        let ended = tokio::spawn(connection);
        RawH2 {
            send,
            authority: server_name.to_owned(),
            ended,
        }
    }

    /// One gRPC call: POST `path` with `metadata` and `body` (already framed). `Err` is an
    /// HTTP/2 failure (stream reset, GOAWAY), i.e. no gRPC answer at all.
    pub async fn call(
        &mut self,
        path: &str,
        metadata: &[(&str, HeaderValue)],
        body: Bytes,
    ) -> Result<RawAnswer, h2::Error> {
        let mut request = http::Request::builder()
            .method("POST")
            .uri(format!("https://{}{path}", self.authority))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (name, value) in metadata {
            request = request.header(*name, value.clone());
        }
        let request = request.body(()).unwrap();
        let mut send = self.send.clone().ready().await?;
        let (response, mut stream) = send.send_request(request, false)?;
        // A server that refuses on the headers alone (UNIMPLEMENTED, a trailers-only answer)
        // may end the stream before the body goes out; then sending it fails with an inactive
        // stream, and the answer below is what counts. Any other failure surfaces there too.
        let _ = stream.send_data(body, true);
        let (parts, mut received) = response.await?.into_parts();
        let mut body = Vec::new();
        while let Some(chunk) = received.data().await {
            let chunk = chunk?;
            body.extend_from_slice(&chunk);
            let _ = received.flow_control().release_capacity(chunk.len());
        }
        let trailers = received.trailers().await?;
        Ok(RawAnswer {
            http_status: parts.status,
            headers: parts.headers,
            trailers,
            body,
        })
    }

    /// Whether the server has ended the connection (GOAWAY or close).
    pub fn has_ended(&self) -> bool {
        self.ended.is_finished()
    }
}
