//! rustls configs from PEM files, for every TLS link stocksync makes or accepts: MQTT
//! (forwarder, scanner input, collector), the HTTPS listeners and outgoing pushes.
//!
//! One crypto provider, `ring`, chosen here explicitly rather than by whichever rustls
//! feature happens to be on, so the tree never needs aws-lc (a C/cmake build) and every
//! link negotiates with the same algorithms.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS file {path}: {detail}")]
pub struct TlsError {
    pub path: PathBuf,
    pub detail: String,
}

fn err(path: &Path, detail: impl ToString) -> TlsError {
    TlsError {
        path: path.to_owned(),
        detail: detail.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file (a chain, or a CA bundle).
pub fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(path, e))?;
    if certs.is_empty() {
        return Err(err(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| err(path, e))
}

/// A client config trusting only the CAs in `ca_file`, with an optional client certificate.
pub fn client_config(
    ca_file: &Path,
    client_cert: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(ca_file)? {
        roots.add(cert).map_err(|e| err(ca_file, e))?;
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(ca_file, e))?
        .with_root_certificates(roots);
    let config = match client_cert {
        Some((cert, key_file)) => builder
            .with_client_auth_cert(certs(cert)?, key(key_file)?)
            .map_err(|e| err(cert, e))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A server config presenting the chain in `cert_file` with the key in `key_file`.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(cert_file, e))?
        .with_no_client_auth()
        .with_single_cert(certs(cert_file)?, key(key_file)?)
        .map_err(|e| err(cert_file, e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
