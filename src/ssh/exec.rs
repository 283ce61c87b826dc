//! Running commands on a host: each on its own channel of the shared connection, wrapped for
//! the session's [`Privilege`], read until the channel closes.

use russh::ChannelMsg;

use super::{HostSession, SshError, shell_quote};

/// How commands get the rights they need on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// The SSH user is root: commands run as they are.
    Root,
    /// The SSH user may sudo: commands run as `sudo -n -H bash -c '<command>'`, as TiUP runs
    /// them (`-n` so a sudo that wants a password fails at once instead of waiting for one).
    Sudo,
    /// Services are systemd user units of the SSH user: commands run as they are, and the
    /// caller writes `systemctl --user`.
    SystemdUser,
}

impl Privilege {
    /// The command line the remote login shell is given for `command`.
    pub fn wrap<'a>(self, command: &'a str) -> std::borrow::Cow<'a, str> {
        match self {
            Privilege::Root | Privilege::SystemdUser => command.into(),
            Privilege::Sudo => format!("sudo -n -H bash -c {}", shell_quote(command)).into(),
        }
    }
}

/// Everything a finished command said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: String,
    pub stderr: String,
    pub exit_status: u32,
}

/// SSH's extended-data type code for stderr (RFC 4254, 5.2).
const STDERR: u32 = 1;

impl HostSession {
    /// Runs `command` with this session's privilege and returns its output and exit status,
    /// whatever that status is.
    pub async fn exec(&self, command: &str) -> Result<ExecOutput, SshError> {
        self.exec_as_login_user(command, &self.inner.privilege.wrap(command)).await
    }

    /// Runs `command` with this session's privilege and requires exit status 0; returns stdout.
    pub async fn run(&self, command: &str) -> Result<String, SshError> {
        let output = self.exec(command).await?;
        if output.exit_status != 0 {
            return Err(SshError::CommandFailed {
                endpoint: self.inner.endpoint.clone(),
                command: command.to_owned(),
                exit_status: output.exit_status,
                stderr: output.stderr.trim().to_owned(),
            });
        }
        Ok(output.stdout)
    }

    /// The sha256 of a remote file, as lowercase hex (`sha256sum`, with this session's
    /// privilege).
    pub async fn sha256(&self, remote: &str) -> Result<String, SshError> {
        let command = format!("sha256sum -- {}", shell_quote(remote));
        let stdout = self.run(&command).await?;
        match stdout.split_whitespace().next() {
            Some(hex) if hex.len() == 64 => Ok(hex.to_owned()),
            _ => Err(SshError::Channel {
                endpoint: self.inner.endpoint.clone(),
                action: format!("`{command}`"),
                reason: format!("unexpected output {stdout:?}"),
            }),
        }
    }

    /// Runs `line` as the SSH user, reading the channel until the server closes it. `command`
    /// is what the caller asked for, for messages.
    pub(super) async fn exec_as_login_user(
        &self,
        command: &str,
        line: &str,
    ) -> Result<ExecOutput, SshError> {
        let channel_failed = |action: &str, reason: String| SshError::Channel {
            endpoint: self.inner.endpoint.clone(),
            action: format!("{action} for `{command}`"),
            reason,
        };
        let _slot = self
            .inner
            .command_slots
            .acquire()
            .await
            .map_err(|err| channel_failed("waiting for a free channel", err.to_string()))?;
        let mut channel = self
            .inner
            .handle
            .channel_open_session()
            .await
            .map_err(|err| channel_failed("opening a channel", err.to_string()))?;
        channel
            .exec(true, line)
            .await
            .map_err(|err| channel_failed("starting the command", err.to_string()))?;

        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut exit_status = None;
        let mut signal = None;
        // The exit status may arrive before the last output: read until the channel closes.
        while let Some(message) = channel.wait().await {
            match message {
                ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, ext: STDERR } => stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status: code } => exit_status = Some(code),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    signal = Some(format!("{signal_name:?}"));
                }
                ChannelMsg::Failure => {
                    return Err(channel_failed(
                        "starting the command",
                        "the server refused to run it".into(),
                    ));
                }
                ChannelMsg::Close => break,
                _ => {}
            }
        }
        let Some(exit_status) = exit_status else {
            return Err(SshError::NoExitStatus {
                endpoint: self.inner.endpoint.clone(),
                command: command.to_owned(),
                signal,
            });
        };
        Ok(ExecOutput {
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            exit_status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sudo_wraps_and_it_quotes_the_whole_command() {
        let command = "systemctl stop 'dm-worker-8262.service' && echo \"$HOME\"";
        assert_eq!(Privilege::Root.wrap(command), command);
        assert_eq!(Privilege::SystemdUser.wrap(command), command);
        assert_eq!(
            Privilege::Sudo.wrap(command),
            r#"sudo -n -H bash -c 'systemctl stop '\''dm-worker-8262.service'\'' && echo "$HOME"'"#
        );
    }
}
