//! Requests Switchboard makes to the app's backend (hooks and webhooks) and to an identity
//! provider (JWKS): one pooled keep-alive HTTP/1.1 client per node, over TLS for `https://` (the
//! Mozilla roots of `webpki-roots`, so no system store is needed, plus the certificate
//! authorities of `SWITCHBOARD_OUTCALL_CA_FILE`), and every request to the backend signed as
//! Standard Webhooks says (`signing.rs`).
//! Timeouts, concurrency and retries belong to the callers, which differ: a hook fails fast, a
//! webhook is retried for hours.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::signing::Signer;

/// Largest answer read; a larger one is a failed request.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Why a request got no answer to read.
#[derive(Debug, thiserror::Error)]
pub enum OutcallError {
    #[error("the request failed")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The client and the signing keys.
#[derive(Debug, Clone)]
pub struct Outcall {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    signer: Signer,
}

/// A backend URL: `http://` or `https://host[:port]/path`.
pub fn parse_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(format!(
            "{url:?} must be an http:// or https:// URL with a host"
        )),
    }
}

/// The certificates of a PEM file: certificate authorities to trust besides the built-in ones
/// (an internal CA in front of the app's backend).
pub fn read_authorities(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(certificates)
}

/// TLS with the Mozilla roots and `authorities`; TLS 1.2 and 1.3 through ring.
fn tls_config(authorities: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for authority in authorities {
        roots
            .add(authority.clone())
            .map_err(|e| format!("a certificate authority cannot be trusted: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Outcall {
    /// `idle` connections are kept per host; a connect gives up after `connect_timeout`;
    /// `https://` servers must show a certificate from a Mozilla root or one of `authorities`.
    pub fn new(
        signer: Signer,
        idle: usize,
        connect_timeout: Duration,
        authorities: &[CertificateDer<'static>],
    ) -> Result<Self, String> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        // `https://` needs the TLS connector to see the scheme.
        connector.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(authorities)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(idle.min(1_024))
            .build(connector);
        Ok(Self { client, signer })
    }

    /// POSTs the JSON `body` under the Standard Webhooks id `id`, signed now; the answer's status
    /// and body (at most [`MAX_ANSWER_BYTES`]).
    pub async fn post(
        &self,
        url: &Uri,
        id: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), OutcallError> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signature = self.signer.sign(id, timestamp, &body);
        let request = Request::post(url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("switchboard/", env!("CARGO_PKG_VERSION")),
            )
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp)
            .header("webhook-signature", signature)
            .body(Full::new(body))
            .map_err(|e| OutcallError::Failed(e.into()))?;
        self.send(request).await
    }

    /// GETs `url` (unsigned: for a public document such as a JWKS); the answer's status and
    /// body (at most [`MAX_ANSWER_BYTES`]).
    pub async fn get(&self, url: &Uri) -> Result<(StatusCode, Bytes), OutcallError> {
        let request = Request::get(url.clone())
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("switchboard/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::new()))
            .map_err(|e| OutcallError::Failed(e.into()))?;
        self.send(request).await
    }

    async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), OutcallError> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| OutcallError::Failed(e.into()))?;
        let status = response.status();
        let answer = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(OutcallError::Failed)?
            .to_bytes();
        Ok((status, answer))
    }
}
