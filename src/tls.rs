//! TLS pieces shared by the Postgres, Redis and OpenSearch adapters: the rustls crypto
//! provider and PEM loading.
//!
//! Two rustls providers end up in the dependency graph (ring and aws-lc-rs, through different
//! crates), so rustls cannot pick one by itself: [`ensure_crypto_provider`] installs ring as
//! the process default before any TLS client is built. It is idempotent and cheap.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Once;

static PROVIDER: Once = Once::new();

/// Installs ring as rustls's process-wide crypto provider (once; a provider installed
/// earlier by someone else is kept).
pub fn ensure_crypto_provider() {
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Failures reading certificates and keys.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read or holds no usable PEM item.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Every certificate in the PEM file at `path` (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::File {
        path: path.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// The PEM file at `path` as it is, once it is known to hold at least one certificate (for
/// clients that take a CA bundle as PEM bytes: Redis, OpenSearch).
pub fn read_ca_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let err = |message: String| TlsError::File {
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(err("holds no PEM certificate".into()));
    }
    Ok(pem)
}

/// The private key in the PEM file at `path` (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.display().to_string(),
        message: format!("no readable private key ({e})"),
    })
}

/// A root store of the system's trusted CAs.
pub fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    roots
}
