//! TLS for `wss://`: rustls (ring) with the Mozilla roots and any certificate authorities added.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// A TLS configuration that trusts the Mozilla roots and the certificates of the PEM files
/// `extra_authorities` (an internal CA in front of the gateway).
pub fn tls_config(extra_authorities: &[&Path]) -> io::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for path in extra_authorities {
        let certificates = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        if certificates.is_empty() {
            return Err(io::Error::other(format!(
                "{}: no certificate in it",
                path.display()
            )));
        }
        for certificate in certificates {
            roots.add(certificate).map_err(io::Error::other)?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
