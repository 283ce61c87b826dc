//! The cluster's TLS client identity, from the store: when meta.yaml sets `global.enable_tls`,
//! every dm-master and dm-worker serves its HTTP API over HTTPS and wants a client certificate
//! signed by the cluster's CA. TiUP keeps both in `<cluster>/tls/` (pkg/cluster/spec/profile.go:
//! `TLSCACert`, `TLSClientCert`, `TLSClientKey`) and uses them for every API call; so does
//! dm-patch.
//!
//! The files are read and checked once, when the cluster is loaded, so that a missing or broken
//! one is bad input reported before any host is contacted.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// The store's directory of TLS files, inside the cluster's directory.
pub const TLS_DIR: &str = "tls";
/// The cluster's CA certificate: the only root the DM API is trusted with.
pub const CA_CERT: &str = "ca.crt";
/// The certificate dm-patch (like TiUP) presents to DM.
pub const CLIENT_CERT: &str = "client.crt";
/// Its private key (PEM: PKCS#1 as TiUP writes it, PKCS#8 or SEC1).
pub const CLIENT_KEY: &str = "client.pem";

/// The largest TLS file read: certificates and keys are a few KiB.
const MAX_BYTES: u64 = 1 << 20;

/// A TLS file of the store that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct TlsFileError {
    pub path: PathBuf,
    pub problem: String,
}

/// The CA and client identity DM's API is reached with, checked and ready for use.
#[derive(Clone)]
pub struct ClientTls {
    /// `<cluster>/tls/ca.crt`
    pub ca: PathBuf,
    /// `<cluster>/tls/client.crt`
    pub cert: PathBuf,
    /// `<cluster>/tls/client.pem`
    pub key: PathBuf,
    config: Arc<ClientConfig>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material.
        f.debug_struct("ClientTls")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads `<cluster_dir>/tls/{ca.crt,client.crt,client.pem}` and checks them: each is a
    /// readable regular file holding what it should, the CA is usable as a trust anchor, and
    /// the key belongs to the certificate.
    pub fn load(cluster_dir: &Path) -> Result<ClientTls, TlsFileError> {
        let dir = cluster_dir.join(TLS_DIR);
        let (ca, cert, key) = (dir.join(CA_CERT), dir.join(CLIENT_CERT), dir.join(CLIENT_KEY));

        let mut roots = RootCertStore::empty();
        for der in certificates(&ca)? {
            roots
                .add(der)
                .map_err(|err| problem(&ca, format!("not a usable CA certificate: {err}")))?;
        }
        let chain = certificates(&cert)?;
        let key_der = private_key(&key)?;

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| problem(&ca, format!("no TLS version to use: {err}")))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key_der)
            .map_err(|err| match err {
                rustls::Error::InconsistentKeys(_) => problem(
                    &key,
                    format!("is not the key of the certificate in {} ({err})", cert.display()),
                ),
                rustls::Error::InvalidCertificate(_) => {
                    problem(&cert, format!("not a usable certificate: {err}"))
                }
                err => problem(&key, format!("not a usable private key: {err}")),
            })?;
        Ok(ClientTls { ca, cert, key, config: Arc::new(config) })
    }

    /// The client configuration: exactly the cluster's CA as roots (no system roots), the
    /// client certificate presented to every server that asks. Servers are verified by the
    /// address dialled: an IP against the certificate's IP SANs, a name against its DNS SANs,
    /// as Go's TLS client does for TiUP.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

fn problem(path: &Path, problem: impl Into<String>) -> TlsFileError {
    TlsFileError { path: path.to_owned(), problem: problem.into() }
}

/// Every certificate in the PEM file at `path` (at least one).
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| problem(path, format!("not a PEM certificate file: {err}")))?;
    if certs.is_empty() {
        return Err(problem(path, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(certs)
}

/// The private key in the PEM file at `path`.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|err| match err {
        rustls::pki_types::pem::Error::NoItemsFound => {
            problem(path, "holds no PEM private key (-----BEGIN ... PRIVATE KEY-----)")
        }
        err => problem(path, format!("not a PEM private key file: {err}")),
    })
}

/// The file's bytes; what is missing, not a regular file, or absurdly large is refused (a FIFO
/// would block, a link to /dev/zero would never end).
fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    let unreadable = |err: io::Error| {
        let what = match err.kind() {
            io::ErrorKind::NotFound => "does not exist".to_owned(),
            _ => format!("cannot be read: {err}"),
        };
        problem(path, what)
    };
    let file = File::open(path).map_err(unreadable)?;
    let metadata = file.metadata().map_err(unreadable)?;
    if !metadata.is_file() {
        return Err(problem(path, "is not a regular file"));
    }
    if metadata.len() > MAX_BYTES {
        return Err(problem(
            path,
            format!("is {} bytes, more than a PEM file ever holds", metadata.len()),
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_BYTES).read_to_end(&mut bytes).map_err(unreadable)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn store() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(TLS_DIR)).unwrap();
        dir
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = store();
        let err = ClientTls::load(dir.path()).unwrap_err();
        assert_eq!(err.path, dir.path().join("tls/ca.crt"));
        assert!(err.to_string().ends_with("ca.crt: does not exist"), "{err}");
    }

    #[test]
    fn a_directory_or_garbage_is_refused() {
        let dir = store();
        fs::create_dir(dir.path().join("tls/ca.crt")).unwrap();
        let err = ClientTls::load(dir.path()).unwrap_err();
        assert!(err.to_string().ends_with("ca.crt: is not a regular file"), "{err}");

        fs::remove_dir(dir.path().join("tls/ca.crt")).unwrap();
        fs::write(dir.path().join("tls/ca.crt"), "not a certificate\n").unwrap();
        let err = ClientTls::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("ca.crt: holds no PEM certificate"), "{err}");
    }

    #[test]
    fn a_broken_certificate_is_refused() {
        let dir = store();
        let bogus = "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        fs::write(dir.path().join("tls/ca.crt"), bogus).unwrap();
        let err = ClientTls::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("ca.crt: not a usable CA certificate"), "{err}");
    }
}
