//! Mutual TLS between our roles (cargo feature `tls`, docs/deploy.md "Trust model").
//!
//! Every role of a deployment gets a certificate signed by one private certificate authority.
//! A listening internal port with TLS accepts only peers that present a certificate of that
//! CA; a dialing role trusts only servers with a certificate of that CA for the address it
//! dials (the certificate names the server's IP address, or the configured server name).
//! C++ roles cannot speak TLS: a port they use stays plain and relies on its allow-list.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The files of a role's TLS identity, all PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The deployment's certificate authority: peers must present a certificate it signed.
    pub ca_file: PathBuf,
    /// This role's certificate chain (leaf first), used as server and as client.
    pub cert_file: PathBuf,
    /// This role's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// The name a dialing role expects in the servers' certificates; `None`: the IP address
    /// it dials.
    pub server_name: Option<String>,
}

/// Why a TLS identity could not be set up: the operator's files, named.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or holds no PEM object of the expected kind.
    #[error("TLS file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificates and key do not make a usable configuration (key not matching the
    /// certificate, unsupported algorithm…).
    #[error("TLS configuration: {0}")]
    Config(String),
    /// `server_name` is not a DNS name or IP address.
    #[error("TLS server name {0:?} is not a DNS name or an IP address")]
    ServerName(String),
}

fn file_error(path: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

impl TlsFiles {
    fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| file_error(path, e))?;
        if certs.is_empty() {
            return Err(file_error(path, "no certificate in it"));
        }
        Ok(certs)
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_file(&self.key_file).map_err(|e| file_error(&self.key_file, e))
    }

    fn roots(&self) -> Result<rustls::RootCertStore, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in Self::certs(&self.ca_file)? {
            roots.add(cert).map_err(|e| file_error(&self.ca_file, e))?;
        }
        Ok(roots)
    }

    /// The listening side: TLS with a client certificate of the CA required.
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()?),
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(Self::certs(&self.cert_file)?, self.key()?)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(TlsAcceptor(tokio_rustls::TlsAcceptor::from(Arc::new(
            config,
        ))))
    }

    /// The dialing side: servers must present a certificate of the CA; ours goes along.
    pub fn connector(&self) -> Result<TlsConnector, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(Self::certs(&self.cert_file)?, self.key()?)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let server_name = match &self.server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|_| TlsError::ServerName(name.clone()))?,
            ),
            None => None,
        };
        Ok(TlsConnector {
            inner: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// Accepts TLS links (client certificates required).
#[derive(Clone)]
pub struct TlsAcceptor(pub(crate) tokio_rustls::TlsAcceptor);

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsAcceptor")
    }
}

/// Dials TLS links with our client certificate.
#[derive(Clone)]
pub struct TlsConnector {
    pub(crate) inner: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl TlsConnector {
    /// The name expected in the certificate of the server at `ip`.
    pub(crate) fn server_name(&self, ip: IpAddr) -> ServerName<'static> {
        self.server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(ip.into()))
    }
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.server_name)
            .finish()
    }
}
