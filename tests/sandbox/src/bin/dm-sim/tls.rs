//! Mutual TLS, as DM does it when its config file sets `ssl-ca`, `ssl-cert` and `ssl-key` (TiUP
//! writes them for a cluster with `global.enable_tls`): every port serves HTTPS and accepts only
//! clients whose certificate the CA signed, and calls to other processes (forwarding, peers,
//! worker keepalives) go out over HTTPS with the process's own certificate.
//!
//! A refused handshake ends politely: the alert is sent, the write side shut, and what the
//! client already sent (TLS 1.3 clients send their request right after their certificate) read
//! and dropped before the socket closes, so the client reads the alert instead of a reset.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a refused client is given to read the alert.
const LINGER: Duration = Duration::from_secs(1);

/// The process's TLS material, loaded once at start.
pub struct Tls {
    server: Arc<ServerConfig>,
    ca_pem: Vec<u8>,
    /// The certificate followed by its key: the identity presented as a client.
    identity_pem: Vec<u8>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads `ssl-ca`, `ssl-cert`, `ssl-key` from DM's TOML config at `config` (relative to the
    /// working directory, the deploy dir). `None` when the file is missing or sets none of them.
    pub fn from_config(config: &Path) -> Result<Option<Tls>, String> {
        let Ok(text) = std::fs::read_to_string(config) else {
            return Ok(None);
        };
        let value = |key: &str| {
            text.lines().find_map(|line| {
                let (name, value) = line.split_once('=')?;
                (name.trim() == key).then(|| PathBuf::from(value.trim().trim_matches('"')))
            })
        };
        match (value("ssl-ca"), value("ssl-cert"), value("ssl-key")) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Tls::load(&ca, &cert, &key).map(Some),
            _ => Err(format!("{}: ssl-ca, ssl-cert and ssl-key go together", config.display())),
        }
    }

    fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Tls, String> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))
        };
        let (ca_pem, cert_pem, key_pem) = (read(ca)?, read(cert)?, read(key)?);
        let bad = |path: &Path, err: &dyn fmt::Display| format!("{}: {err}", path.display());

        let mut roots = RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(&ca_pem) {
            roots.add(der.map_err(|err| bad(ca, &err))?).map_err(|err| bad(ca, &err))?;
        }
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| bad(cert, &err))?;
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| bad(key, &err))?;

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|err| bad(ca, &err))?;
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| err.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, private_key)
            .map_err(|err| bad(key, &err))?;

        let mut identity_pem = cert_pem;
        identity_pem.push(b'\n');
        identity_pem.extend(key_pem);
        Ok(Tls { server: Arc::new(server), ca_pem, identity_pem })
    }

    /// `builder` trusting only the cluster's CA and presenting this process's certificate.
    pub fn client(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        let ca = reqwest::Certificate::from_pem(&self.ca_pem).expect("checked at load");
        let identity = reqwest::Identity::from_pem(&self.identity_pem).expect("checked at load");
        builder.tls_certs_only([ca]).identity(identity)
    }

    /// Handshakes every connection `tcp` accepts, each on its own task; the finished ones are
    /// what the returned listener yields.
    pub fn listen(&self, tcp: TcpListener) -> TlsListener {
        let local = tcp.local_addr().ok();
        let acceptor = TlsAcceptor::from(self.server.clone());
        let (finished, connections) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = tcp.accept().await else {
                    // Out of descriptors and the like: wait, as axum's own loop does.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let (acceptor, finished) = (acceptor.clone(), finished.clone());
                tokio::spawn(async move {
                    if looks_like_http(&stream).await {
                        refuse_plain_http(stream).await;
                        return;
                    }
                    let handshake = acceptor.accept(stream).into_fallible();
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(tls)) => {
                            let _ = finished.send((tls, peer)).await;
                        }
                        Ok(Err((err, refused))) => {
                            eprintln!("dm-sim: TLS handshake with {peer} failed: {err}");
                            linger(refused).await;
                        }
                        Err(_) => eprintln!("dm-sim: TLS handshake with {peer} timed out"),
                    }
                });
            }
        });
        TlsListener { connections, local }
    }
}

/// Whether the client opened with a plain HTTP request, as Go's `net/http` tells (the first
/// five bytes, where a TLS record header would be).
async fn looks_like_http(stream: &TcpStream) -> bool {
    let mut head = [0u8; 5];
    let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        // Until five bytes are there (or the client stops sending).
        loop {
            match stream.peek(&mut head).await {
                Ok(n) if n < head.len() && n > 0 => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                other => return other,
            }
        }
    })
    .await;
    matches!(peeked, Ok(Ok(5)))
        && [&b"GET /"[..], b"HEAD ", b"POST ", b"PUT /", b"OPTIO"].contains(&&head[..])
}

/// What a Go HTTPS server (DM's, serving HTTP over `tls.NewListener`) answers a plain HTTP
/// request with, before it closes the connection.
async fn refuse_plain_http(mut stream: TcpStream) {
    let answer =
        b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";
    let _ = stream.write_all(answer).await;
    linger(stream).await;
}

/// Shuts the write side of a refused connection (the alert is already written) and reads what
/// the client still sends, so that closing does not reset the connection under the alert.
async fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(LINGER, async {
        let mut buffer = [0u8; 4096];
        while matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Connections that finished their handshake, for `axum::serve`.
pub struct TlsListener {
    connections: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: Option<SocketAddr>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accept task never ends while the process runs.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.local.ok_or_else(|| std::io::Error::other("no local address"))
    }
}
