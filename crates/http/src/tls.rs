//! TLS set-up shared by the servers: the key server's HTTPS and the list server's STARTTLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// A TLS acceptor from a PEM certificate chain and private key.
pub fn tls_acceptor(cert_pem: &Path, key_pem: &Path) -> Result<TlsAcceptor, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(cert_pem)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsSetupError::Certificate(cert_pem.to_owned(), e.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(key_pem)
        .map_err(|e| TlsSetupError::Key(key_pem.to_owned(), e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsSetupError::Config(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| TlsSetupError::Config(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read the certificate chain {0}: {1}")]
    Certificate(PathBuf, String),
    #[error("cannot read the private key {0}: {1}")]
    Key(PathBuf, String),
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}
