//! TLS for the tests: certificates made at run time with rcgen (nothing secret is
//! committed) and a raw RESP client over rustls.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};

/// A node's TLS port is its plain port plus this (`integration/cluster.sh`, TLS_CERTS).
pub const TLS_OFFSET: u16 = 20000;

/// A directory of certificates, removed on drop.
pub struct Pki {
    pub dir: PathBuf,
}

/// A certificate authority of a `Pki`.
pub type Ca = CertifiedIssuer<'static, KeyPair>;

impl Pki {
    pub fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "slotgate-pki-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Pki { dir }
    }

    /// Path of a file of this PKI, as a string for the config.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// A new CA; its certificate is written to `NAME.crt`.
    pub fn ca(&self, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("slotgate test {name}"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(self.dir.join(format!("{name}.crt")), ca.pem()).unwrap();
        ca
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by `ca`: `NAME.crt` and
    /// `NAME.key`.
    pub fn leaf(&self, ca: &Ca, name: &str, names: &[&str]) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or(name));
        let cert = params.signed_by(&key, ca).unwrap();
        std::fs::write(self.dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(self.dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    /// The files `integration/cluster.sh` wants (`ca.crt`, `node.crt`, `node.key`) plus
    /// `proxy.crt`/`proxy.key` for slotgate's listener and `client.crt`/`client.key`, all
    /// signed by one CA `ca`, for 127.0.0.1 and localhost.
    pub fn standard() -> (Pki, Ca) {
        let pki = Pki::new();
        let ca = pki.ca("ca");
        for name in ["node", "proxy", "client"] {
            pki.leaf(&ca, name, &["127.0.0.1", "localhost"]);
        }
        (pki, ca)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Connects to `port` over TLS, trusting the CA in `ca_file`, presenting `client` (cert and
/// key files) when given; checks the certificate for 127.0.0.1.
pub async fn connect(
    port: u16,
    ca_file: &str,
    client: Option<(&str, &str)>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut stream = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    // TLS 1.3 reports a refused client certificate only on the first read: a PING tells.
    match tokio::time::timeout(Duration::from_secs(5), command(&mut stream, &["PING"])).await {
        Ok(Ok(reply)) if reply == b"+PONG\r\n" => Ok(stream),
        Ok(Ok(reply)) => Err(std::io::Error::other(format!(
            "unexpected reply to PING: {}",
            String::from_utf8_lossy(&reply)
        ))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::other("PING timed out")),
    }
}

/// Sends one command and returns its raw reply.
pub async fn command(stream: &mut TlsStream<TcpStream>, args: &[&str]) -> std::io::Result<Vec<u8>> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(req.as_bytes()).await?;
    stream.flush().await?;
    let mut buf = BytesMut::new();
    let mut scanner = slotgate::resp::ReplyScanner::new();
    loop {
        if let Some(n) = scanner.next(&buf).map_err(std::io::Error::other)? {
            return Ok(buf.split_to(n).to_vec());
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}
