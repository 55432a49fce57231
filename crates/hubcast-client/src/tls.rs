//! TLS for `https://` and `wss://`: one rustls config (ring crypto) shared by
//! the WebSocket connector and the HTTP client, so both trust the same roots.
//!
//! The roots are the system's (or, as OpenSSL does, only the certificates of
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` when those are set) plus any extra CA
//! files given ([`client_config`]), e.g. a private CA or a self-signed
//! certificate in a test.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::ClientConfig;

/// Why a TLS config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read CA file {path}: {message}")]
    CaFile { path: PathBuf, message: String },
    #[error("CA file {0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A client config trusting the system roots (see the module doc) and every
/// certificate in `ca_files` (PEM).
pub fn client_config(ca_files: &[PathBuf]) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match rustls_native_certs::load_native_certs() {
        Ok(certs) => {
            let (_, ignored) = roots.add_parsable_certificates(certs);
            if ignored > 0 {
                tracing::debug!(ignored, "system root certificates rustls cannot use");
            }
        }
        // No system store is not fatal: extra CA files may be all that is needed.
        Err(err) => tracing::warn!(error = %err, "cannot load the system's root certificates"),
    }
    for path in ca_files {
        let certs = read_certificates(path)?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate(path.clone()));
        }
        for cert in certs {
            roots.add(cert)?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The config of clients built without one: the system roots, loaded once.
pub fn default_config() -> Arc<ClientConfig> {
    static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            client_config(&[]).unwrap_or_else(|err| {
                tracing::warn!(error = %err, "TLS config without roots");
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                Arc::new(
                    ClientConfig::builder_with_provider(provider)
                        .with_safe_default_protocol_versions()
                        .expect("ring supports the default protocol versions")
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                )
            })
        })
        .clone()
}

/// An HTTP client on `config` (for `http_publish` and history reads).
pub fn http_client(config: &ClientConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(config.clone())
        .build()
        .unwrap_or_default()
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |message: String| TlsError::CaFile {
        path: path.to_owned(),
        message,
    };
    CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert!(matches!(
            client_config(&[empty]),
            Err(TlsError::NoCertificate(_))
        ));
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            client_config(&[missing]),
            Err(TlsError::CaFile { .. })
        ));
        assert!(client_config(&[]).is_ok());
    }
}
