//! Connecting to a host the way the cluster says (TiUP's executors): dm-patch's own SSH client
//! (TCP or a jump host's forwarded channel, the SSH handshake with its host-key check, public-key
//! login with the cluster key), the system's OpenSSH client, or this machine itself. The result
//! is one [`HostSession`] per host, shared by every task that works there.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{
    Algorithm, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate,
};
use russh::{Disconnect, Preferred};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::SshError;
use super::exec::Privilege;
use super::known_hosts::{self, KnownKey, Verdict};
use super::local;
use super::paced::{Counted, Written};
use super::redial::{ChannelKind, Connection, OpenError, Redial};
use super::system::{OpenSsh, SystemLink};

/// Where and how to reach one host.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// Host name or IP address to connect to.
    pub addr: String,
    pub port: u16,
    pub user: String,
    /// The private key to log in with (the cluster's `ssh/id_rsa`).
    pub key_path: PathBuf,
    /// The OpenSSH-format file host keys are checked against.
    pub known_hosts: PathBuf,
    pub host_key_policy: HostKeyPolicy,
    /// Bounds TCP connect, handshake and login together.
    pub connect_timeout: Duration,
    pub privilege: Privilege,
    pub transport: Transport,
}

/// How a host is reached: TiUP's executors (`--ssh builtin|system|none`) and its jump host
/// (`--ssh-proxy-*`).
#[derive(Clone, Default)]
pub enum Transport {
    /// dm-patch's own SSH client, over TCP from this machine.
    #[default]
    Direct,
    /// dm-patch's own SSH client, over a channel the jump host forwards (its connection is
    /// shared by every host).
    Jump(HostSession),
    /// The system's OpenSSH client (the operator's ~/.ssh/config, agent, certificates), one
    /// master connection per host that every command shares.
    System(Arc<OpenSsh>),
    /// No SSH: commands run on this machine, which must be the host.
    Local,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Direct => f.write_str("Direct"),
            Transport::Jump(jump) => write!(f, "Jump({})", jump.endpoint()),
            Transport::System(_) => f.write_str("System"),
            Transport::Local => f.write_str("Local"),
        }
    }
}

impl SshTarget {
    /// `host:port` (`[v6]:port`), as messages name the host.
    pub fn endpoint(&self) -> String {
        endpoint_of(&self.addr, self.port)
    }
}

/// What to do with a host key that known_hosts does not confirm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyPolicy {
    /// Unknown or changed keys are refused.
    Strict,
    /// Unknown keys are recorded and trusted from then on; changed keys are refused.
    #[default]
    AcceptNew,
    /// Any key is accepted and nothing is recorded.
    Off,
}

impl HostKeyPolicy {
    pub const NAMES: [&'static str; 3] = ["strict", "accept-new", "off"];

    pub fn name(self) -> &'static str {
        match self {
            HostKeyPolicy::Strict => "strict",
            HostKeyPolicy::AcceptNew => "accept-new",
            HostKeyPolicy::Off => "off",
        }
    }
}

impl fmt::Display for HostKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HostKeyPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "strict" => Ok(HostKeyPolicy::Strict),
            "accept-new" => Ok(HostKeyPolicy::AcceptNew),
            "off" => Ok(HostKeyPolicy::Off),
            other => Err(format!(
                "unknown host key policy {other:?}; expected one of: {}",
                HostKeyPolicy::NAMES.join(", ")
            )),
        }
    }
}

/// One authenticated connection to a host. Clones share it; each command or transfer opens its
/// own channel on it, so many tasks can use one session at once.
#[derive(Clone)]
pub struct HostSession {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) link: Link,
    pub(super) endpoint: String,
    pub(super) privilege: Privilege,
    /// Bounds the command channels open at once: sshd refuses channels past its `MaxSessions`
    /// (10 by default). Callers beyond the bound wait their turn.
    pub(super) command_slots: Semaphore,
}

/// What carries a session's commands.
pub(super) enum Link {
    /// dm-patch's own client, connecting again when its connection was lost.
    Builtin(Redial),
    System(SystemLink),
    Local,
}

/// Command channels open at once on one connection; see [`Inner::command_slots`].
const COMMAND_CHANNELS: usize = 8;

impl HostSession {
    /// Connects, checks the host key and logs in, all within `target.connect_timeout`.
    pub async fn connect(target: &SshTarget) -> Result<HostSession, SshError> {
        let (link, privilege) = match &target.transport {
            Transport::Local => (Link::Local, local::privilege(target)?),
            Transport::System(openssh) => {
                (Link::System(SystemLink::connect(openssh, target).await?), target.privilege)
            }
            Transport::Direct | Transport::Jump(_) => {
                let (handle, written) = connect_builtin(target).await?;
                let redial = Redial::new(target.clone(), Some(Connection { handle, written }));
                (Link::Builtin(redial), target.privilege)
            }
        };
        Ok(HostSession::of(target, link, privilege))
    }

    /// A session that logs in at its first command, and may be parked between commands (see
    /// [`HostSession::park`]): dm-patch's own client, or the system's with its master
    /// connection (`None` for `--ssh none`, which has no connection).
    pub fn connect_later(target: &SshTarget) -> Option<HostSession> {
        match &target.transport {
            Transport::Direct | Transport::Jump(_) => {
                let link = Link::Builtin(Redial::new(target.clone(), None));
                Some(HostSession::of(target, link, target.privilege))
            }
            Transport::System(openssh) => {
                let link = Link::System(SystemLink::later(openssh, target));
                Some(HostSession::of(target, link, target.privilege))
            }
            Transport::Local => None,
        }
    }

    fn of(target: &SshTarget, link: Link, privilege: Privilege) -> HostSession {
        HostSession {
            inner: Arc::new(Inner {
                link,
                endpoint: target.endpoint(),
                privilege,
                command_slots: Semaphore::new(COMMAND_CHANNELS),
            }),
        }
    }

    /// Lets the connection of a session made by [`HostSession::connect_later`] go while the
    /// host has nothing to do: it closes once no command runs on it, and the next command logs
    /// in again. Other sessions keep their connection.
    pub async fn park(&self) {
        match &self.inner.link {
            Link::Builtin(redial) => redial.park().await,
            Link::System(link) => link.park().await,
            Link::Local => {}
        }
    }

    /// `host:port` of this session.
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    pub fn privilege(&self) -> Privilege {
        self.inner.privilege
    }

    /// A TCP connection to `host:port` made by this session's host (a `direct-tcpip` channel):
    /// how a jump host carries the connections to the hosts behind it.
    pub async fn forward(
        &self,
        host: &str,
        port: u16,
    ) -> Result<russh::ChannelStream<client::Msg>, SshError> {
        let Link::Builtin(redial) = &self.inner.link else {
            unreachable!("jump hosts are reached with dm-patch's own SSH client");
        };
        let (channel, _) = redial.open(ChannelKind::DirectTcpip { host, port }).await.map_err(
            |err| match err {
                OpenError::Connect(err) => err,
                OpenError::Channel(err) => SshError::Forward {
                    jump: self.inner.endpoint.clone(),
                    target: endpoint_of(host, port),
                    reason: err.to_string(),
                },
            },
        )?;
        Ok(channel.into_stream())
    }

    /// Says goodbye to the server. Problems are only logged: the connection is done either way.
    pub async fn close(&self) {
        match &self.inner.link {
            Link::Builtin(redial) => {
                let Some(connection) = redial.current() else { return };
                let handle = &connection.handle;
                if let Err(err) = handle.disconnect(Disconnect::ByApplication, "", "en").await {
                    tracing::debug!(endpoint = %self.inner.endpoint, "disconnect: {err}");
                }
            }
            Link::System(link) => link.close().await,
            Link::Local => {}
        }
    }
}

/// dm-patch's own client: the transport's stream, then handshake and login, within the timeout.
/// The stream counts what the connection writes, for [`super::paced`].
pub(super) async fn connect_builtin(
    target: &SshTarget,
) -> Result<(Handle<HostKeyCheck>, Arc<Written>), SshError> {
    let key = load_key(target)?;
    let recorded = match target.host_key_policy {
        HostKeyPolicy::Off => Vec::new(),
        _ => known_hosts::recorded_keys(&target.known_hosts, &target.addr, target.port)
            .map_err(|source| SshError::KnownHosts { path: target.known_hosts.clone(), source })?,
    };
    let establish = async {
        let endpoint = target.endpoint();
        match &target.transport {
            Transport::Jump(jump) => {
                let (stream, written) =
                    Counted::new(jump.forward(&target.addr, target.port).await?);
                Ok((handshake(target, key, recorded, stream).await?, written))
            }
            _ => {
                let socket = TcpStream::connect((target.addr.as_str(), target.port))
                    .await
                    .map_err(|source| SshError::Connect { endpoint, source })?;
                // Commands are short request/response exchanges; Nagle would hold back their
                // last packet.
                socket.set_nodelay(true).ok();
                let (socket, written) = Counted::new(socket);
                Ok((handshake(target, key, recorded, socket).await?, written))
            }
        }
    };
    match tokio::time::timeout(target.connect_timeout, establish).await {
        Ok(result) => result,
        Err(_elapsed) => {
            Err(SshError::Timeout { endpoint: target.endpoint(), timeout: target.connect_timeout })
        }
    }
}

/// `host:port` (`[v6]:port`), as messages name an address.
pub(super) fn endpoint_of(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

fn load_key(target: &SshTarget) -> Result<PrivateKey, SshError> {
    russh::keys::load_secret_key(&target.key_path, None).map_err(|err| SshError::KeyUnreadable {
        path: target.key_path.clone(),
        reason: err.to_string(),
    })
}

async fn handshake(
    target: &SshTarget,
    key: PrivateKey,
    recorded: Vec<KnownKey>,
    socket: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
) -> Result<Handle<HostKeyCheck>, SshError> {
    let endpoint = target.endpoint();
    let config = Arc::new(client_config(&recorded));
    let checker = HostKeyCheck { target: target.clone(), recorded };
    let mut handle =
        client::connect_stream(config, socket, checker).await.map_err(|err| match err {
            HandshakeError::HostKey(rejected) => rejected,
            HandshakeError::Ssh(err) => {
                SshError::Handshake { endpoint: endpoint.clone(), reason: err.to_string() }
            }
        })?;

    let handshake_failed = |err: russh::Error| SshError::Handshake {
        endpoint: endpoint.clone(),
        reason: err.to_string(),
    };
    // OpenSSH refuses SHA-1 RSA signatures: sign with the best hash the server announces.
    let rsa_hash = if is_rsa(&key.algorithm()) {
        handle.best_supported_rsa_hash().await.map_err(handshake_failed)?.flatten()
    } else {
        None
    };
    let login = PrivateKeyWithHashAlg::new(Arc::new(key), rsa_hash);
    let auth = handle
        .authenticate_publickey(target.user.clone(), login)
        .await
        .map_err(handshake_failed)?;
    if !auth.success() {
        return Err(SshError::AuthRejected {
            endpoint,
            user: target.user.clone(),
            key: target.key_path.clone(),
        });
    }
    Ok(handle)
}

fn client_config(recorded: &[KnownKey]) -> client::Config {
    let defaults = Preferred::default();
    client::Config {
        // Notice a host that vanished mid-roll within a minute instead of waiting on TCP.
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        preferred: Preferred {
            key: Cow::Owned(host_key_order(&defaults.key, recorded)),
            cipher: Cow::Borrowed(CIPHERS),
            // Packages are gzip or do not compress; and streamed input is paced by the bytes
            // written, which compression would make fewer than those sent.
            compression: Cow::Borrowed(&[russh::compression::NONE]),
            ..defaults
        },
        ..client::Config::default()
    }
}

/// AES-GCM first: with the AES instructions of every amd64/arm64 server DM runs on, it moves
/// a package about 1.5x faster than russh's (and OpenSSH's) default, ChaCha20-Poly1305, which
/// stays next for hosts without them.
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_256_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_192_CTR,
    russh::cipher::AES_128_CTR,
];

/// The default host-key algorithms, those of the recorded keys first: like OpenSSH, ask the
/// server for the kind of key known_hosts can confirm, rather than one it has never seen.
fn host_key_order(defaults: &[Algorithm], recorded: &[KnownKey]) -> Vec<Algorithm> {
    let is_recorded = |algorithm: &Algorithm| {
        recorded.iter().filter(|known| !known.revoked).any(|known| {
            let kind = known.key.algorithm();
            // A recorded RSA key can be proven with any RSA signature hash.
            kind == *algorithm || (is_rsa(&kind) && is_rsa(algorithm))
        })
    };
    let (mut first, rest): (Vec<_>, Vec<_>) = defaults.iter().cloned().partition(is_recorded);
    first.extend(rest);
    first
}

fn is_rsa(algorithm: &Algorithm) -> bool {
    matches!(algorithm, Algorithm::Rsa { .. })
}

/// Why the handshake stopped: an SSH-level failure, or our own verdict on the host key.
#[derive(Debug)]
pub(super) enum HandshakeError {
    Ssh(russh::Error),
    HostKey(SshError),
}

impl From<russh::Error> for HandshakeError {
    fn from(err: russh::Error) -> Self {
        HandshakeError::Ssh(err)
    }
}

/// The client handler: it only judges the server's host key.
pub(super) struct HostKeyCheck {
    target: SshTarget,
    /// What known_hosts said about this host before connecting.
    recorded: Vec<KnownKey>,
}

impl HostKeyCheck {
    fn verify(&self, presented: &PublicKey) -> Result<(), SshError> {
        let target = &self.target;
        match (target.host_key_policy, known_hosts::judge(&self.recorded, presented)) {
            (HostKeyPolicy::Off, _) | (_, Verdict::Known) => Ok(()),
            (_, Verdict::Changed(known)) => Err(SshError::HostKeyChanged {
                host: target.addr.clone(),
                port: target.port,
                presented: known_hosts::fingerprint(presented),
                recorded: known_hosts::fingerprint(&known.key),
                known_hosts: target.known_hosts.clone(),
                line: known.line,
            }),
            (_, Verdict::Revoked(known)) => Err(SshError::HostKeyRevoked {
                endpoint: target.endpoint(),
                fingerprint: known_hosts::fingerprint(presented),
                known_hosts: target.known_hosts.clone(),
                line: known.line,
            }),
            (HostKeyPolicy::Strict, Verdict::Unknown) => Err(SshError::HostKeyUnknown {
                endpoint: target.endpoint(),
                fingerprint: known_hosts::fingerprint(presented),
                known_hosts: target.known_hosts.clone(),
            }),
            (HostKeyPolicy::AcceptNew, Verdict::Unknown) => {
                known_hosts::record(&target.known_hosts, &target.addr, target.port, presented)
                    .map_err(|source| SshError::KnownHosts {
                        path: target.known_hosts.clone(),
                        source,
                    })?;
                tracing::info!(
                    endpoint = %target.endpoint(),
                    "recorded new host key {} in {}",
                    known_hosts::fingerprint(presented),
                    target.known_hosts.display()
                );
                Ok(())
            }
        }
    }
}

impl client::Handler for HostKeyCheck {
    type Error = HandshakeError;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                self.verify(key).map_err(HandshakeError::HostKey)?;
                Ok(true)
            }
            // Certificates are never asked for (`host_key_certificates` stays empty).
            PublicKeyOrCertificate::Certificate(_) => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_read_and_print_their_cli_names() {
        for name in HostKeyPolicy::NAMES {
            assert_eq!(name.parse::<HostKeyPolicy>().unwrap().to_string(), name);
        }
        assert!("yes".parse::<HostKeyPolicy>().unwrap_err().contains("strict, accept-new, off"));
    }

    #[test]
    fn recorded_key_kinds_are_asked_for_first() {
        let rsa = PublicKey::from_openssh(
            "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDTh+CODYHoLQ0qLHzCrFOaHjDO6VrejAeLdzUbTcpcAwHO0\
             LyLLCvlo5XIpV6liVmR2AEsSAHSb70w52hpWTT/IvzP5T8HBcqqhUxNQsl5QTpd8jsBO3Xrr5KGjayfJq7/PA\
             M513pF+GfDiHtpkVtmpEDZHFtXX/ECURovDAPhOQ==",
        )
        .unwrap();
        let recorded = [KnownKey { line: 1, key: rsa, revoked: false }];
        let order = host_key_order(&Preferred::default().key, &recorded);
        assert!(is_rsa(&order[0]) && is_rsa(&order[1]));
        assert_eq!(order.len(), Preferred::default().key.len());
        assert_eq!(
            host_key_order(&Preferred::default().key, &[]),
            Preferred::default().key.to_vec()
        );
    }

    #[test]
    fn endpoints_bracket_ipv6() {
        let target = |addr: &str| SshTarget {
            addr: addr.into(),
            port: 2222,
            user: "tidb".into(),
            key_path: "k".into(),
            known_hosts: "kh".into(),
            host_key_policy: HostKeyPolicy::Strict,
            connect_timeout: Duration::from_secs(1),
            privilege: Privilege::Sudo,
            transport: Transport::Direct,
        };
        assert_eq!(target("127.0.9.1").endpoint(), "127.0.9.1:2222");
        assert_eq!(target("::1").endpoint(), "[::1]:2222");
    }
}
