//! One SSH connection per host, opened in parallel and shared by every step on that host.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Settings;
use super::remote::Remote;
use crate::plan::Plan;
use crate::ssh::{HostKeyPolicy, HostSession, Privilege, SshTarget, Transport};
use crate::topology::{Cluster, SystemdMode};

/// How a host of `cluster` is logged in to: the cluster's user and key, as root, through sudo,
/// or as a systemd user, as the cluster's `systemd_mode` says.
pub fn ssh_target(
    cluster: &Cluster,
    (host, port): (&str, u16),
    host_key_policy: HostKeyPolicy,
    connect_timeout: Duration,
    transport: Transport,
) -> SshTarget {
    let privilege = match (cluster.ssh_user(), cluster.systemd_mode()) {
        ("root", _) => Privilege::Root,
        (_, SystemdMode::User) => Privilege::SystemdUser,
        _ => Privilege::Sudo,
    };
    SshTarget {
        addr: host.to_owned(),
        port,
        user: cluster.ssh_user().to_owned(),
        key_path: cluster.ssh_key(),
        known_hosts: cluster.known_hosts(),
        host_key_policy,
        connect_timeout,
        privilege,
        transport,
    }
}

/// How long the system client's idle master connections stay beyond the roll's longest wait.
const MASTER_IDLE: Duration = Duration::from_secs(600);

/// The open sessions, keyed by SSH endpoint (`manage_host` or `host`, and port).
pub struct Hosts {
    remotes: HashMap<(String, u16), Remote>,
}

impl Hosts {
    /// Connects to every host of the plan, at most `concurrency` at a time. Returns the
    /// sessions that opened and one problem line per host that did not.
    pub async fn connect(
        cluster: &Cluster,
        plan: &Plan,
        settings: &Settings,
    ) -> (Hosts, Vec<String>) {
        // A master connection of the system client must outlive the longest wait of the roll.
        let persist = settings.wait_timeout + MASTER_IDLE;
        let transport = match settings.reach.transport(persist) {
            Ok(transport) => transport,
            Err(err) => {
                let problem = format!("cannot prepare the system ssh client's sockets: {err}");
                return (Hosts { remotes: HashMap::new() }, vec![problem]);
            }
        };
        let limit = Arc::new(Semaphore::new(settings.concurrency));
        let mut connections = JoinSet::new();
        for staging in &plan.hosts {
            let target = ssh_target(
                cluster,
                (&staging.ssh_host, staging.ssh_port),
                settings.host_key_policy,
                settings.ssh_timeout,
                transport.clone(),
            );
            let limit = limit.clone();
            connections.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let session = HostSession::connect(&target).await;
                (target, session)
            });
        }

        let mut remotes = HashMap::new();
        let mut problems = Vec::new();
        while let Some(joined) = connections.join_next().await {
            let (target, session) = joined.expect("connection tasks do not panic");
            match session {
                Ok(session) => {
                    let remote = Remote {
                        session,
                        systemd_mode: cluster.systemd_mode(),
                        label: format!("{}:{}", target.addr, target.port),
                    };
                    remotes.insert((target.addr, target.port), remote);
                }
                Err(err) => problems.push(err.to_string()),
            }
        }
        problems.sort();
        (Hosts { remotes }, problems)
    }

    pub fn get(&self, ssh_host: &str, ssh_port: u16) -> &Remote {
        self.remotes
            .get(&(ssh_host.to_owned(), ssh_port))
            .expect("only connected hosts are asked for")
    }

    /// Disconnects every session politely.
    pub async fn close(self) {
        for remote in self.remotes.into_values() {
            remote.session.close().await;
        }
    }
}
