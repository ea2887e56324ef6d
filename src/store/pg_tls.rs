//! Opening Postgres connections with libpq's TLS rules, for the pool, LISTEN, advisory-lock
//! and migration connections alike ([`establish`]).
//!
//! `DATABASE_URL` takes libpq's parameters:
//!
//! | sslmode | encrypted | server certificate checked |
//! |---|---|---|
//! | disable | no | - |
//! | prefer (libpq's default) | if the server offers TLS | no |
//! | require | yes | no; but chain checked (as verify-ca) when a root certificate is given |
//! | verify-ca | yes | chain up to `sslrootcert` |
//! | verify-full | yes | chain and host name (or IP address) |
//!
//! `sslrootcert=FILE` names the trusted CA(s) (PEM; `system` for the system's roots); when
//! unset, `~/.postgresql/root.crt` is used if present, as libpq does, and verify-ca/verify-full
//! without any root certificate is refused before connecting. `sslcert=FILE` and
//! `sslkey=FILE` present a client certificate. Unlike libpq, `prefer` is the default only
//! when `sslmode` is absent; this binary's own default URL says nothing, so it prefers TLS
//! and falls back to plain TCP, as `psql` would.
//!
//! tokio-postgres knows only disable/prefer/require and refuses the other parameters, so
//! they are taken out of the URL here and enforced by the rustls configuration.

use diesel::ConnectionError;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use percent_encoding::percent_decode_str;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;

use crate::tls::{ensure_crypto_provider, load_certs, load_key, system_roots, TlsError};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, unverified.
    Prefer,
    /// TLS, unverified unless a root certificate is given.
    Require,
    /// TLS, certificate chain verified.
    VerifyCa,
    /// TLS, chain and host name verified.
    VerifyFull,
}

/// Where trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file.
    File(PathBuf),
    /// The system's trusted CAs (`sslrootcert=system`).
    System,
}

/// A `DATABASE_URL` split into what tokio-postgres reads and what this module enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTarget {
    /// The URL without the TLS file parameters and with an sslmode tokio-postgres knows.
    pub url: String,
    /// The requested mode.
    pub mode: SslMode,
    /// Trusted roots, if any.
    pub root_cert: Option<RootCert>,
    /// Client certificate and key files.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// A `DATABASE_URL` whose TLS parameters are invalid or whose files cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PgTlsError(String);

impl From<TlsError> for PgTlsError {
    fn from(e: TlsError) -> Self {
        Self(e.to_string())
    }
}

impl PgTarget {
    /// Reads the TLS parameters of `url` (libpq names). Does not touch the files.
    pub fn parse(url: &str) -> Result<Self, PgTlsError> {
        let mut u = url::Url::parse(url).map_err(|e| PgTlsError(format!("not a valid URL: {e}")))?;
        let mut mode = None;
        let (mut root, mut cert, mut key) = (None, None, None);
        // Kept parameters keep their raw (percent-encoded) text: tokio-postgres decodes percent
        // escapes only, so re-encoding (`+` for a space) would change them.
        let mut kept: Vec<String> = Vec::new();
        for raw in u.query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = raw.split_once('=').unwrap_or((raw, ""));
            let v = percent_decode_str(v).decode_utf8_lossy().into_owned();
            match k {
                "sslmode" => {
                    mode = Some(match v.as_str() {
                        "disable" => SslMode::Disable,
                        "allow" | "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(PgTlsError(format!(
                                "sslmode={other}: expected disable, prefer, require, verify-ca or verify-full"
                            )))
                        }
                    })
                }
                "sslrootcert" => root = Some(v),
                "sslcert" => cert = Some(PathBuf::from(v)),
                "sslkey" => key = Some(PathBuf::from(v)),
                _ => kept.push(raw.to_owned()),
            }
        }
        let mode = mode.unwrap_or(SslMode::Prefer);
        let root_cert = match root.as_deref() {
            Some("system") => Some(RootCert::System),
            Some(path) => Some(RootCert::File(PathBuf::from(path))),
            None => default_root_cert().map(RootCert::File),
        };
        let client_cert = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(PgTlsError("sslcert and sslkey must be given together".into())),
        };
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
            return Err(PgTlsError(
                "sslmode=verify-ca/verify-full needs the CA that signed the server's certificate: add \
                 sslrootcert=/path/to/ca.pem (or sslrootcert=system for the system's trusted roots)"
                    .into(),
            ));
        }
        let tp_mode = match mode {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            _ => "require",
        };
        kept.push(format!("sslmode={tp_mode}"));
        u.set_query(Some(&kept.join("&")));
        Ok(Self {
            url: u.to_string(),
            mode,
            root_cert,
            client_cert,
        })
    }

    /// The rustls configuration enforcing this target's mode; `None` for `disable`.
    pub fn rustls_config(&self) -> Result<Option<rustls::ClientConfig>, PgTlsError> {
        ensure_crypto_provider();
        if self.mode == SslMode::Disable {
            return Ok(None);
        }
        let roots = match &self.root_cert {
            Some(RootCert::File(p)) => {
                let mut store = rustls::RootCertStore::empty();
                for c in load_certs(p)? {
                    store.add(c).map_err(|e| PgTlsError(format!("{}: {e}", p.display())))?;
                }
                Some(store)
            }
            Some(RootCert::System) => Some(system_roots()),
            None => None,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match (self.mode, roots) {
            (SslMode::VerifyFull, Some(r)) => webpki(r)?,
            // libpq: require with a root certificate behaves as verify-ca.
            (SslMode::VerifyCa | SslMode::Require, Some(r)) => Arc::new(ChainOnly(webpki(r)?)),
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                return Err(PgTlsError("verify-ca/verify-full without a root certificate".into()))
            }
            // prefer (even with roots: libpq does not verify in prefer), require without roots.
            _ => Arc::new(NoVerification(provider())),
        };
        let builder = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.client_cert {
            Some((cert, key)) => builder
                .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
                .map_err(|e| PgTlsError(format!("sslcert/sslkey: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        Ok(Some(config))
    }
}

fn default_root_cert() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let p = PathBuf::from(home).join(".postgresql/root.crt");
    p.is_file().then_some(p)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

fn webpki(roots: rustls::RootCertStore) -> Result<Arc<WebPkiServerVerifier>, PgTlsError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| PgTlsError(format!("sslrootcert: {e}")))
}

/// Opens a connection to `url` with the TLS rules above. Used by the pool (as its custom
/// setup) and by every single connection.
pub async fn establish(url: &str) -> diesel::ConnectionResult<AsyncPgConnection> {
    let target = PgTarget::parse(url).map_err(|e| ConnectionError::InvalidConnectionUrl(e.to_string()))?;
    let tls = target
        .rustls_config()
        .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
    let Some(tls) = tls else {
        return AsyncPgConnection::establish(&target.url).await;
    };
    let config: tokio_postgres::Config = target
        .url
        .parse()
        .map_err(|e: tokio_postgres::Error| ConnectionError::InvalidConnectionUrl(e.to_string()))?;
    let (client, conn) = config
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        .await
        .map_err(|e| ConnectionError::BadConnection(crate::failure::with_causes(&e)))?;
    AsyncPgConnection::try_from_client_and_connection(client, conn).await
}

/// verify-ca: the chain must lead to a trusted root; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain first and the name last, so a name error means the chain
        // was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// prefer/require without roots: encrypted, the certificate is not checked (libpq's rule).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_become_require_for_tokio_postgres_and_files_leave_the_url() {
        let t = PgTarget::parse("postgres://u:p@db.example:5432/app?sslmode=verify-full&sslrootcert=/ca.pem&options=x")
            .expect("parses");
        assert_eq!(t.mode, SslMode::VerifyFull);
        assert_eq!(t.root_cert, Some(RootCert::File("/ca.pem".into())));
        assert!(
            t.url.contains("sslmode=require") && t.url.contains("options=x"),
            "{}",
            t.url
        );
        let t = PgTarget::parse("postgres://h/db?options=-c%20statement_timeout%3D5&sslmode=disable").expect("parses");
        assert_eq!(
            t.url,
            "postgres://h/db?options=-c%20statement_timeout%3D5&sslmode=disable"
        );
        assert!(!t.url.contains("sslrootcert"), "{}", t.url);
    }

    #[test]
    fn file_parameters_are_percent_decoded_and_a_plus_stays_a_plus() {
        let t = PgTarget::parse("postgres://h/db?sslmode=verify-ca&sslrootcert=/certs/my%20ca+1.pem").expect("parses");
        assert_eq!(t.root_cert, Some(RootCert::File("/certs/my ca+1.pem".into())));
    }

    #[test]
    fn verify_full_without_a_root_certificate_is_refused_before_connecting() {
        if default_root_cert().is_some() {
            return; // this machine has ~/.postgresql/root.crt, which libpq (and we) would use
        }
        let e = PgTarget::parse("postgres://h/db?sslmode=verify-full").unwrap_err();
        assert!(e.to_string().contains("sslrootcert"), "{e}");
    }

    #[test]
    fn no_sslmode_means_prefer_and_unknown_modes_are_refused() {
        assert_eq!(
            PgTarget::parse("postgres://h/db").expect("parses").mode,
            SslMode::Prefer
        );
        assert!(PgTarget::parse("postgres://h/db?sslmode=sometimes").is_err());
        assert!(PgTarget::parse("postgres://h/db?sslcert=/c.pem").is_err());
    }
}
