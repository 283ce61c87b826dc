//! What the engine does on a host, as named operations over one SSH session. Every value that
//! goes into a remote command passes through `shell_quote`.

use super::tree;
use crate::dm::version::VersionInfo;
use crate::ssh::{HostSession, SshError, shell_quote};
use crate::topology::SystemdMode;

/// One host's SSH session plus how services are managed there.
#[derive(Clone)]
pub struct Remote {
    pub session: HostSession,
    pub systemd_mode: SystemdMode,
    /// `host:port` of the SSH endpoint, for messages.
    pub label: String,
}

/// What `systemctl is-active` says of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitState {
    Active,
    /// Inactive, failed, activating... anything but running.
    NotActive,
}

impl Remote {
    /// Runs `command` and requires exit status 0.
    pub async fn run(&self, command: &str) -> Result<String, SshError> {
        self.session.run(command).await
    }

    /// `systemctl <args>` as this host manages services (`--user` for user units).
    pub fn systemctl(&self, args: &str) -> String {
        match self.systemd_mode {
            SystemdMode::System => format!("systemctl {args}"),
            SystemdMode::User => format!("systemctl --user {args}"),
        }
    }

    /// `systemctl stop`, then what `is-active` says of the unit, in one round trip.
    pub async fn stop(&self, unit: &str) -> Result<UnitState, SshError> {
        let unit = shell_quote(unit);
        let command = format!(
            "{} && {{ {} || true; }}",
            self.systemctl(&format!("stop {unit}")),
            self.systemctl(&format!("is-active {unit}"))
        );
        let stdout = self.run(&command).await?;
        Ok(if stdout.trim() == "active" { UnitState::Active } else { UnitState::NotActive })
    }

    pub async fn start(&self, unit: &str) -> Result<(), SshError> {
        self.run(&self.systemctl(&format!("start {}", shell_quote(unit)))).await.map(drop)
    }

    pub async fn unit_state(&self, unit: &str) -> Result<UnitState, SshError> {
        let command = self.systemctl(&format!("is-active {}", shell_quote(unit)));
        let output = self.session.exec(&command).await?;
        Ok(if output.exit_status == 0 && output.stdout.trim() == "active" {
            UnitState::Active
        } else {
            UnitState::NotActive
        })
    }

    /// `<binary> -V`, parsed; bounded in time and size (see [`tree::version_probe`]).
    pub async fn binary_version(&self, binary: &str) -> Result<VersionInfo, SshError> {
        let block = self.run(&tree::version_probe(binary)).await?;
        Ok(VersionInfo::parse(&block))
    }
}
