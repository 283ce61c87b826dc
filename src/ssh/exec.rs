//! Running commands on a host: each on its own channel of the shared connection, wrapped for
//! the session's [`Privilege`], read until the channel closes.

use bytes::BytesMut;
use russh::{ChannelMsg, ChannelReadHalf};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::paced::{self, UNWRITTEN_LIMIT};
use super::redial::{ChannelKind, OpenError, Redial};
use super::session::Link;
use super::{HostSession, SshError, child, local, shell_quote};

/// How much of a streamed input is read and sent at a time: one SSH packet (OpenSSH's 32 KiB).
/// Larger chunks are no faster and leave their memory behind in the allocator, once per host
/// (measured at 32 hosts: peak RSS 39 MiB with 256 KiB chunks, 28 MiB with 32 KiB).
pub(super) const INPUT_CHUNK: usize = 32 * 1024;

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

impl ExecOutput {
    /// `command` on `endpoint` failing with this output (its exit status and stderr): how a
    /// command that must succeed reads when it did not.
    pub fn failure(&self, endpoint: &str, command: &str) -> SshError {
        SshError::CommandFailed {
            endpoint: endpoint.to_owned(),
            command: command.to_owned(),
            exit_status: self.exit_status,
            stderr: self.stderr.trim().to_owned(),
        }
    }
}

/// What a command reads on stdin, and who is told how much of it was sent.
pub(super) struct Input<'a> {
    pub(super) data: &'a mut (dyn AsyncRead + Unpin + Send),
    pub(super) progress: &'a (dyn Fn(u64) + Send + Sync),
}

/// SSH's extended-data type code for stderr (RFC 4254, 5.2).
pub(super) const STDERR: u32 = 1;

impl HostSession {
    /// Runs `command` with this session's privilege and returns its output and exit status,
    /// whatever that status is.
    pub async fn exec(&self, command: &str) -> Result<ExecOutput, SshError> {
        let started = std::time::Instant::now();
        let output =
            self.exec_as_login_user(command, &self.inner.privilege.wrap(command), None, None).await;
        self.trace(command, started, &output);
        output
    }

    /// Runs `command` with this session's privilege, writing its stdout to `file` as it comes
    /// (memory stays at one packet, whatever its size); the output returned has no stdout.
    pub async fn exec_to_file(
        &self,
        command: &str,
        file: &mut std::fs::File,
    ) -> Result<ExecOutput, SshError> {
        let started = std::time::Instant::now();
        let line = self.inner.privilege.wrap(command);
        let output = self.exec_as_login_user(command, &line, None, Some(file)).await;
        self.trace(command, started, &output);
        output
    }

    /// Runs `command` with this session's privilege, streaming `input` to its stdin (then end
    /// of file), and returns its output and exit status. Memory stays at one chunk of `input`
    /// whatever its size; `progress` is called with the bytes sent so far. If the command ends
    /// before reading all of `input`, the rest is not sent.
    pub async fn exec_with_input(
        &self,
        command: &str,
        input: &mut (dyn AsyncRead + Unpin + Send),
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<ExecOutput, SshError> {
        let started = std::time::Instant::now();
        let line = self.inner.privilege.wrap(command);
        let output = self
            .exec_as_login_user(command, &line, Some(Input { data: input, progress }), None)
            .await;
        self.trace(command, started, &output);
        output
    }

    /// `-v` shows every remote command with its exit status and time; `-vv` its output too.
    fn trace(
        &self,
        command: &str,
        started: std::time::Instant,
        output: &Result<ExecOutput, SshError>,
    ) {
        let (endpoint, millis) = (&self.inner.endpoint, started.elapsed().as_millis());
        let command = loggable(command);
        match output {
            Ok(output) => {
                tracing::info!(
                    "{endpoint}: $ {command} -> exit {} ({millis} ms)",
                    output.exit_status
                );
                tracing::debug!(stdout = %output.stdout.trim(), stderr = %output.stderr.trim());
            }
            Err(err) => tracing::info!("{endpoint}: $ {command} -> {err} ({millis} ms)"),
        }
    }

    /// Runs `command` with this session's privilege and requires exit status 0; returns stdout.
    pub async fn run(&self, command: &str) -> Result<String, SshError> {
        let output = self.exec(command).await?;
        if output.exit_status != 0 {
            return Err(output.failure(&self.inner.endpoint, command));
        }
        Ok(output.stdout)
    }

    /// Runs `line` as the SSH user, feeding it `input` if any, reading the channel until the
    /// server closes it. `command` is what the caller asked for, for messages.
    pub(super) async fn exec_as_login_user(
        &self,
        command: &str,
        line: &str,
        input: Option<Input<'_>>,
        sink: Option<&mut std::fs::File>,
    ) -> Result<ExecOutput, SshError> {
        let _slot = self.command_slot(command).await?;
        let endpoint = &self.inner.endpoint;
        match &self.inner.link {
            Link::Builtin(redial) => self.exec_on_channel(redial, command, line, input, sink).await,
            Link::System(link) => {
                let (master, via) = (link.master().await?, child::Via::OpenSsh);
                child::run(endpoint, command, master.command(line), input, sink, via).await
            }
            Link::Local => {
                let via = child::Via::Local;
                child::run(endpoint, command, local::command(line), input, sink, via).await
            }
        }
    }

    /// One of the command channels the session may have open at once (see
    /// [`super::session::Inner::command_slots`]), for `command`: waits for one to be free.
    pub(super) async fn command_slot(
        &self,
        command: &str,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, SshError> {
        self.inner.command_slots.acquire().await.map_err(|err| {
            self.channel_error(command, "waiting for a free channel for", err.to_string())
        })
    }

    /// A channel step (`action`, leading to the command: `opening a channel for`) that failed
    /// for `command`.
    pub(super) fn channel_error(
        &self,
        command: &str,
        action: &'static str,
        reason: String,
    ) -> SshError {
        SshError::Channel {
            endpoint: self.inner.endpoint.clone(),
            action,
            command: command.to_owned(),
            reason,
        }
    }

    /// Runs `line` on a new channel of the session's own SSH connection.
    async fn exec_on_channel(
        &self,
        redial: &Redial,
        command: &str,
        line: &str,
        input: Option<Input<'_>>,
        sink: Option<&mut std::fs::File>,
    ) -> Result<ExecOutput, SshError> {
        let channel_failed =
            |action: &'static str, reason: String| self.channel_error(command, action, reason);
        let (channel, connection) =
            redial.open(ChannelKind::Session).await.map_err(|err| match err {
                OpenError::Connect(err) => err,
                OpenError::Channel(err) => channel_failed("opening a channel for", err.to_string()),
            })?;
        let written = &connection.written;
        channel
            .exec(true, line)
            .await
            .map_err(|err| channel_failed("starting the command for", err.to_string()))?;
        let (mut read_half, write_half) = channel.split();
        let Some(Input { data, progress }) = input else {
            return self.collect(command, &mut read_half, sink).await;
        };
        let send = async {
            let (mut sent, mut chunks) = (0u64, 0u64);
            let written_before = written.bytes();
            loop {
                let mut chunk = BytesMut::with_capacity(INPUT_CHUNK);
                while chunk.len() < INPUT_CHUNK {
                    let read = data.read_buf(&mut chunk).await.map_err(|source| {
                        channel_failed("reading the input for", source.to_string())
                    })?;
                    if read == 0 {
                        break;
                    }
                }
                if chunk.is_empty() {
                    break;
                }
                // Every chunk sent so far was full: only the last one may be short.
                let queued = written_before + paced::on_the_wire(sent, chunks);
                written.reach(queued.saturating_sub(UNWRITTEN_LIMIT)).await;
                sent += chunk.len() as u64;
                chunks += 1;
                write_half
                    .data_bytes(chunk.freeze())
                    .await
                    .map_err(|err| channel_failed("sending the input for", err.to_string()))?;
                progress(sent);
            }
            write_half
                .eof()
                .await
                .map_err(|err| channel_failed("ending the input for", err.to_string()))
        };
        let collect = self.collect(command, &mut read_half, sink);
        tokio::pin!(send, collect);
        // The command may end before it has read everything (it failed): its answer is what
        // counts then, and the rest of the input is not sent.
        tokio::select! {
            output = &mut collect => output,
            sent = &mut send => {
                sent?;
                collect.await
            }
        }
    }

    /// Reads a command's channel until the server closes it: its output and exit status.
    async fn collect(
        &self,
        command: &str,
        channel: &mut ChannelReadHalf,
        mut sink: Option<&mut std::fs::File>,
    ) -> Result<ExecOutput, SshError> {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut exit_status = None;
        let mut signal = None;
        // The exit status may arrive before the last output: read until the channel closes.
        while let Some(message) = channel.wait().await {
            match message {
                ChannelMsg::Data { data } => match sink.as_deref_mut() {
                    Some(file) => std::io::Write::write_all(file, &data).map_err(|err| {
                        self.channel_error(command, "saving the output of", err.to_string())
                    })?,
                    None => stdout.extend_from_slice(&data),
                },
                ChannelMsg::ExtendedData { data, ext: STDERR } => stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status: code } => exit_status = Some(code),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    signal = Some(format!("{signal_name:?}"));
                }
                ChannelMsg::Failure => {
                    return Err(self.channel_error(
                        command,
                        "starting the command for",
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

/// A command as the log shows it: each script of `crate::remote` by its name and arguments
/// (`dm-patch-swap /d/bin ...`), not its body, and on one line.
pub(super) fn loggable(command: &str) -> String {
    without_script_bodies(command).replace('\n', "; ")
}

/// `command` with each script of `crate::remote` in it shown by its name and arguments only.
pub(super) fn without_script_bodies(command: &str) -> String {
    let mut shown = String::new();
    let mut rest = command;
    while let Some(found) = rest.find("sh -c '") {
        let start = if rest[..found].ends_with("ba") { found - 2 } else { found };
        let Some(end) = rest[start..].find("' dm-patch-") else { break };
        shown.push_str(&rest[..start]);
        rest = &rest[start + end + 2..];
    }
    shown.push_str(rest);
    shown
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

    #[test]
    fn scripts_are_logged_by_name_and_arguments() {
        let command = "sh -c 'set -e\nrm -rf \"$1\"' dm-patch-cleanup dir '/d/a b' && \
                       bash -c 'echo '\''x'\''' dm-patch-version /d/bin/dm-worker";
        assert_eq!(
            loggable(command),
            "dm-patch-cleanup dir '/d/a b' && dm-patch-version /d/bin/dm-worker"
        );
        assert_eq!(loggable("systemctl stop x\nls"), "systemctl stop x; ls");
    }
}
