//! TLS with rustls: the client-side acceptor (certificate reloaded from disk on SIGHUP) and
//! the connector backend connections use (CA, optional client certificate, server name).

use std::io::BufReader;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::error::TlsError;

/// The files of the client-side listener (`tls.*`).
#[derive(Debug, Clone)]
pub struct ServerFiles {
    pub cert_file: String,
    pub key_file: String,
    /// Clients must present a certificate signed by this CA (mutual TLS).
    pub client_ca_file: Option<String>,
}

/// The acceptor of the TLS listener; `reload` swaps in a new one read from the same files,
/// without touching the connections already open.
pub struct ClientTls {
    files: ServerFiles,
    acceptor: ArcSwap<TlsAcceptor>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.files)
            .finish()
    }
}

impl ClientTls {
    /// Reads the certificate, key and client CA.
    pub fn load(files: ServerFiles) -> Result<ClientTls, TlsError> {
        let acceptor = server_acceptor(&files)?;
        Ok(ClientTls {
            files,
            acceptor: ArcSwap::from_pointee(acceptor),
        })
    }

    /// Reads the files again; on an error the acceptor in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let acceptor = server_acceptor(&self.files)?;
        self.acceptor.store(Arc::new(acceptor));
        Ok(())
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> Arc<TlsAcceptor> {
        self.acceptor.load_full()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn server_acceptor(files: &ServerFiles) -> Result<TlsAcceptor, TlsError> {
    let certs = read_certs(&files.cert_file)?;
    let key = read_key(&files.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let builder = match &files.client_ca_file {
        Some(ca) => {
            let roots = read_roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Setup(format!("{ca}: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Setup(format!("{}: {e}", files.key_file)))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// TLS settings of the connections to one cluster (`cluster.tls*`, or a mirror's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackendFiles {
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// The name checked in every node's certificate; by default the host the node is
    /// reached at.
    pub server_name: Option<String>,
    pub insecure_skip_verify: bool,
}

/// Logs, once when its connections are set up, that a cluster's certificates are not
/// checked.
fn warn_if_insecure(files: &BackendFiles, what: &str) {
    if files.insecure_skip_verify {
        tracing::warn!(
            cluster = what,
            "TLS certificates of the nodes are NOT verified (tls_insecure_skip_verify): \
             anyone on the path can read and change the traffic"
        );
    }
}

/// How backend connections to one cluster start TLS.
#[derive(Clone)]
pub struct BackendTls {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl BackendTls {
    /// The TLS of a cluster's connections, when `files` (its `tls*` fields) says it has
    /// some: built, with a warning when certificates go unchecked.
    pub fn for_cluster(
        files: Option<BackendFiles>,
        what: &str,
    ) -> Result<Option<BackendTls>, TlsError> {
        files
            .map(|files| {
                warn_if_insecure(&files, what);
                BackendTls::build(&files, what)
            })
            .transpose()
    }

    /// Reads the CA and client certificate. `what` names the cluster in errors.
    pub fn build(files: &BackendFiles, what: &str) -> Result<BackendTls, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let builder = if files.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider())))
        } else {
            let ca = files.ca_file.as_deref().ok_or_else(|| {
                TlsError::Setup(format!(
                    "{what}: tls_ca_file is needed to verify the nodes' certificates"
                ))
            })?;
            builder.with_root_certificates(read_roots(ca)?)
        };
        let config = match (&files.cert_file, &files.key_file) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
                .map_err(|e| TlsError::Setup(format!("{key}: {e}")))?,
            _ => builder.with_no_client_auth(),
        };
        let server_name = match &files.server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|e| TlsError::Setup(format!("tls_server_name {name:?}: {e}")))?,
            ),
            None => None,
        };
        Ok(BackendTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// Starts TLS on a connection to `host`.
    pub async fn connect(
        &self,
        host: &str,
        stream: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => match host.parse::<IpAddr>() {
                Ok(ip) => ServerName::IpAddress(ip.into()),
                Err(_) => ServerName::try_from(host.to_string()).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
                })?,
            },
        };
        self.connector.connect(name, stream).await
    }
}

/// The verifier of `tls_insecure_skip_verify`: any certificate, checked signatures only.
#[derive(Debug)]
struct AcceptAnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn open(path: &str) -> Result<BufReader<std::fs::File>, TlsError> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|e| TlsError::Read {
            path: path.to_string(),
            message: e.to_string(),
        })
}

fn bad_pem(path: &str, message: impl std::fmt::Display) -> TlsError {
    TlsError::Read {
        path: path.to_string(),
        message: message.to_string(),
    }
}

/// Every certificate of a PEM file (at least one).
fn read_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_reader_iter(open(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem(path, e))?;
    if certs.is_empty() {
        return Err(bad_pem(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn read_key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_reader(open(path)?).map_err(|e| bad_pem(path, e))
}

fn read_roots(path: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|e| bad_pem(path, e))?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_named_in_the_error() {
        let err = ClientTls::load(ServerFiles {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
            client_ca_file: None,
        })
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
        let dir = std::env::temp_dir().join(format!("slotgate-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let empty = empty.to_string_lossy().to_string();
        let err = BackendTls::build(
            &BackendFiles {
                ca_file: Some(empty.clone()),
                ..Default::default()
            },
            "primary",
        )
        .unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        let err = BackendTls::build(&BackendFiles::default(), "primary").unwrap_err();
        assert!(err.to_string().contains("tls_ca_file"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn insecure_mode_needs_no_ca() {
        let files = BackendFiles {
            insecure_skip_verify: true,
            server_name: Some("redis.internal".into()),
            ..Default::default()
        };
        assert!(BackendTls::build(&files, "primary").is_ok());
    }
}
