//! TiUP's jump host (`--ssh-proxy-host` and friends): every connection to the cluster, SSH and
//! the DM API alike, goes through one SSH connection to it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::session::{HostKeyPolicy, Transport};
use super::{HostSession, Privilege, SshError, SshTarget};

/// Where the jump host is and how to log in to it.
#[derive(Debug, Clone)]
pub struct JumpHost {
    pub addr: String,
    pub port: u16,
    pub user: String,
    /// The private key to log in with (TiUP's default: ~/.ssh/id_rsa).
    pub identity: PathBuf,
    /// Bounds TCP connect, handshake and login to the jump host.
    pub timeout: Duration,
}

impl JumpHost {
    /// Logs in to the jump host with dm-patch's own client, its host key checked against the
    /// cluster's known_hosts with the run's policy, as every host's is.
    pub async fn connect(
        &self,
        known_hosts: &Path,
        host_key_policy: HostKeyPolicy,
    ) -> Result<HostSession, SshError> {
        let target = SshTarget {
            addr: self.addr.clone(),
            port: self.port,
            user: self.user.clone(),
            key_path: self.identity.clone(),
            known_hosts: known_hosts.to_path_buf(),
            host_key_policy,
            connect_timeout: self.timeout,
            // Nothing runs on the jump host: it only forwards connections.
            privilege: Privilege::Root,
            transport: Transport::Direct,
        };
        HostSession::connect(&target).await
    }
}
