//! One SSH connection per host, opened in parallel and shared by every step on that host.
//!
//! A run over more than [`KEEP_OPEN_UP_TO`] hosts holds a host's connection only while the host
//! has work (dm-patch's own client, or the system's master connection): each logs in at its
//! host's first command, and is let go when the host's part of a phase is done
//! ([`Remote::rest`]), so that at most `--concurrency` hosts (the roll: its current instance's
//! host) hold one at once, whatever the cluster's size.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::Settings;
use super::remote::Remote;
use crate::plan::{Plan, PlannedInstance};
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

/// Up to this many hosts, each keeps its connection for the whole run: so few sockets and
/// about 0.25 MiB each cost nothing, and logging in to a host again for each phase would cost
/// time (one login, some 20 ms of both sides' CPU, per host and phase). Beyond it, connections
/// are made when a host's work starts and let go when it ends.
pub const KEEP_OPEN_UP_TO: usize = 32;

/// The sessions, keyed by SSH endpoint (`manage_host` or `host`, and port).
pub struct Hosts {
    remotes: HashMap<(String, u16), Remote>,
    /// Connections are made per piece of work and let go after it (see [`KEEP_OPEN_UP_TO`]).
    sparing: bool,
    /// Instances of the roll each host has left; a host is let go after its last.
    left: Mutex<HashMap<(String, u16), usize>>,
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
                let hosts =
                    Hosts { remotes: HashMap::new(), sparing: false, left: Mutex::default() };
                return (hosts, vec![problem]);
            }
        };
        let sparing = plan.hosts.len() > KEEP_OPEN_UP_TO;
        let remote = |target: &SshTarget, session| Remote {
            session,
            systemd_mode: cluster.systemd_mode(),
            label: format!("{}:{}", target.addr, target.port),
        };
        let limit = Arc::new(Semaphore::new(settings.concurrency));
        let mut remotes = HashMap::new();
        let mut connections = JoinSet::new();
        for staging in &plan.hosts {
            let target = ssh_target(
                cluster,
                (&staging.ssh_host, staging.ssh_port),
                settings.host_key_policy,
                settings.ssh_timeout,
                transport.clone(),
            );
            // Logged in to at its first command (and a host that cannot be reached is a
            // problem of the first phase that needs it).
            if let Some(session) = HostSession::connect_later(&target).filter(|_| sparing) {
                let key = (target.addr.clone(), target.port);
                remotes.insert(key, remote(&target, session));
                continue;
            }
            let limit = limit.clone();
            connections.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let session = HostSession::connect(&target).await;
                (target, session)
            });
        }

        let mut problems = Vec::new();
        while let Some(joined) = connections.join_next().await {
            let (target, session) = joined.expect("connection tasks do not panic");
            match session {
                Ok(session) => {
                    let key = (target.addr.clone(), target.port);
                    remotes.insert(key, remote(&target, session));
                }
                Err(err) => problems.push(err.to_string()),
            }
        }
        problems.sort();
        let mut left = HashMap::new();
        for planned in &plan.instances {
            *left.entry((planned.ssh_host.clone(), planned.ssh_port)).or_default() += 1;
        }
        (Hosts { remotes, sparing, left: Mutex::new(left) }, problems)
    }

    /// How many hosts a phase works on at once: `concurrency` when connections are spared,
    /// else every host (each already holds its connection).
    pub fn fan_out(&self, concurrency: usize) -> usize {
        match self.sparing {
            true => concurrency,
            false => self.remotes.len().max(1),
        }
    }

    /// `planned` is done for the roll: its host is let go after its last instance.
    pub async fn instance_done(&self, planned: &PlannedInstance) {
        let key = (planned.ssh_host.clone(), planned.ssh_port);
        let last = {
            let mut left = self.left.lock().unwrap_or_else(PoisonError::into_inner);
            let count = left.entry(key).or_default();
            *count = count.saturating_sub(1);
            *count == 0
        };
        if last {
            self.get(&planned.ssh_host, planned.ssh_port).rest().await;
        }
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
