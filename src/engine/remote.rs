//! What the engine does on a host, as named operations over one SSH session. Every value that
//! goes into a remote command passes through `shell_quote`.

use crate::dm::version::VersionInfo;
use crate::remote::{self, Answer};
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

    /// `system`, or `user` for user units: how the scripts are told which systemd to ask.
    pub fn scope(&self) -> &'static str {
        match self.systemd_mode {
            SystemdMode::System => "system",
            SystemdMode::User => "user",
        }
    }

    /// `systemctl stop`, then what `is-active` says of the unit, in one round trip.
    pub async fn stop(&self, unit: &str) -> Result<UnitState, SshError> {
        let stdout = self.run(&remote::STOP.command([self.scope(), unit])).await?;
        let answer = Answer::parse(&stdout).unwrap_or_default();
        let active = answer.lines().any(|line| line == ("state", "active"));
        Ok(if active { UnitState::Active } else { UnitState::NotActive })
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

    /// `<binary> -V`, parsed; bounded in time and size (see `version_of` in `remote/lib.sh`).
    pub async fn binary_version(&self, binary: &str) -> Result<VersionInfo, SshError> {
        let stdout = self.run(&remote::VERSION.command([binary])).await?;
        let block = Answer::parse(&stdout).ok().and_then(|answer| answer.block("version"));
        Ok(VersionInfo::parse(&block.unwrap_or_default()))
    }
}
