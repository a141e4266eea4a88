//! TLS for every connection lanes makes: the certificates it trusts beside the system's.
//!
//! One setting, `LANES_CA_FILE` (PEM, one or more certificates), is added to the system's
//! roots for `amqps://` (lapin over rustls) and every `https://` client (webhooks to
//! executors, the management API, the CLI and the webhook task's reads of the API).
//! PostgreSQL takes its own settings in `DATABASE_URL`, as libpq does (`sslmode=require`,
//! `verify-ca`, `verify-full`, `sslrootcert=`). The API serves HTTPS itself when given a
//! certificate and key (`ServerConfig::tls_cert`).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the CA file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the CA file {0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("a certificate of the CA file {path} does not parse: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("cannot read the API's certificate or key ({path}): {reason}")]
    ServerIdentity { path: PathBuf, reason: String },
}

/// Makes ring the process's TLS provider: every TLS client and server of lanes uses it, and a
/// library that asks rustls for the process default must not find two (ring and aws-lc-rs,
/// both in the dependency tree) and give up.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The extra certificates a process trusts (none: the system's roots only).
#[derive(Clone, Debug, Default)]
pub struct Trust {
    /// The PEM text of the CA file, checked to hold certificates.
    pem: Option<String>,
}

impl Trust {
    /// Reads `ca_file` (if any) now, so that a bad file fails at start, not at first use.
    pub fn load(ca_file: Option<&Path>) -> Result<Trust, TlsError> {
        let Some(path) = ca_file else {
            return Ok(Trust::default());
        };
        let pem = std::fs::read_to_string(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
            TlsError::BadCertificate {
                path: path.to_owned(),
                reason: e.to_string(),
            }
        })?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate(path.to_owned()));
        }
        Ok(Trust { pem: Some(pem) })
    }

    /// The TLS settings of an `amqps://` connection.
    pub fn amqp(&self) -> lapin::tcp::OwnedTLSConfig {
        lapin::tcp::OwnedTLSConfig {
            identity: None,
            cert_chain: self.pem.clone(),
        }
    }

    /// An HTTP client builder that trusts the system's roots and the CA file.
    pub fn http(&self) -> reqwest::ClientBuilder {
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = &self.pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem.as_bytes()).expect("checked at load");
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder
    }
}

/// The API's own certificate chain and key (PEM files), for HTTPS.
pub fn server_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, TlsError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let bad = |path: &Path, reason: String| TlsError::ServerIdentity {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(cert, "no certificate in it".to_owned()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e.to_string()))?;
    rustls::ServerConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| bad(cert, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_exist_and_hold_certificates() {
        assert!(Trust::load(None).is_ok());
        let missing = Trust::load(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/ca.pem"),
            "{missing}"
        );
        let dir = std::env::temp_dir().join(format!("trust-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = Trust::load(Some(&empty)).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate(_)), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
