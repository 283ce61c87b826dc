//! How a run reaches the cluster: TiUP's executor (`--ssh`, else the cluster's
//! `global.ssh_type`) and its jump host. The jump host is logged in to once, before anything
//! else, and carries both the SSH connections (dm-patch's own client) and the DM API calls.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::session::{HostKeyPolicy, Transport};
use super::{HostSession, HttpTunnel, JumpHost, OpenSsh, SshError};

/// TiUP's executors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Executor {
    /// dm-patch's own SSH client.
    #[default]
    Builtin,
    /// The system's `ssh` client.
    System,
    /// No SSH: the hosts are this machine.
    None,
}

impl Executor {
    pub const NAMES: [&'static str; 3] = ["builtin", "system", "none"];

    pub fn name(self) -> &'static str {
        match self {
            Executor::Builtin => "builtin",
            Executor::System => "system",
            Executor::None => "none",
        }
    }
}

impl fmt::Display for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Executor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "builtin" => Ok(Executor::Builtin),
            "system" => Ok(Executor::System),
            "none" => Ok(Executor::None),
            other => Err(format!(
                "unknown SSH executor {other:?}; expected one of: {}",
                Executor::NAMES.join(", ")
            )),
        }
    }
}

/// The executor, and the jump host once logged in to.
pub struct Reach {
    executor: Executor,
    jump: Option<Jump>,
}

impl fmt::Debug for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reach")
            .field("executor", &self.executor)
            .field("jump", &self.jump_endpoint())
            .finish()
    }
}

struct Jump {
    host: JumpHost,
    session: HostSession,
    tunnel: HttpTunnel,
}

impl Reach {
    /// Straight from this machine with dm-patch's own client.
    pub fn direct() -> Reach {
        Reach { executor: Executor::Builtin, jump: None }
    }

    /// Logs in to the jump host, if there is one, and starts the DM API's tunnel through it.
    pub async fn open(
        executor: Executor,
        jump: Option<JumpHost>,
        known_hosts: &Path,
        host_key_policy: HostKeyPolicy,
    ) -> Result<Reach, SshError> {
        let Some(host) = jump else {
            return Ok(Reach { executor, jump: None });
        };
        let session =
            host.connect(known_hosts, host_key_policy).await.map_err(|err| SshError::Jump {
                jump: super::session::endpoint_of(&host.addr, host.port),
                reason: err.to_string(),
            })?;
        let tunnel = HttpTunnel::start(session.clone()).await.map_err(|err| SshError::Jump {
            jump: session.endpoint().to_owned(),
            reason: format!("cannot start the DM API tunnel on 127.0.0.1: {err}"),
        })?;
        Ok(Reach { executor, jump: Some(Jump { host, session, tunnel }) })
    }

    pub fn executor(&self) -> Executor {
        self.executor
    }

    /// `host:port` of the jump host, if any.
    pub fn jump_endpoint(&self) -> Option<&str> {
        self.jump.as_ref().map(|jump| jump.session.endpoint())
    }

    /// The HTTP proxy the DM API client must use, if any.
    pub fn http_proxy(&self) -> Option<&str> {
        self.jump.as_ref().map(|jump| jump.tunnel.url())
    }

    /// How each host is connected to. With the system client, masters outlive an idle
    /// `persist` at most.
    pub fn transport(&self, persist: Duration) -> std::io::Result<Transport> {
        Ok(match (self.executor, &self.jump) {
            (Executor::Builtin, None) => Transport::Direct,
            (Executor::Builtin, Some(jump)) => Transport::Jump(jump.session.clone()),
            (Executor::System, jump) => Transport::System(Arc::new(OpenSsh::new(
                jump.as_ref().map(|jump| jump.host.clone()),
                persist,
            )?)),
            (Executor::None, _) => Transport::Local,
        })
    }

    /// Whether something accepts TCP connections at `addr` (`host:port`), as seen from the
    /// jump host when there is one.
    pub async fn probe(&self, addr: &str) -> std::io::Result<()> {
        let Some(jump) = &self.jump else {
            return tokio::net::TcpStream::connect(addr).await.map(drop);
        };
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host.trim_matches(['[', ']']), port.parse().ok()?)))
            .ok_or_else(|| std::io::Error::other(format!("not host:port: {addr}")))?;
        jump.session.forward(host, port).await.map(drop).map_err(std::io::Error::other)
    }

    /// Logs out of the jump host.
    pub async fn close(self) {
        if let Some(jump) = self.jump {
            drop(jump.tunnel);
            jump.session.close().await;
        }
    }
}
