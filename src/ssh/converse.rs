//! A command spoken with while it runs: lines to its stdin, its stdout read line by line as it
//! comes, then its exit status. The roll uses one to take an instance's steps in one command,
//! each only once dm-patch says so: a dm-patch that is gone leaves the command where it was.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::Arc;

use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::SemaphorePermit;
use tokio::task::JoinHandle;

use super::exec::STDERR;
use super::redial::{ChannelKind, Connection, OpenError};
use super::session::Link;
use super::system::OpenSshMaster;
use super::{ExecOutput, HostSession, SshError, local};

/// A running command (see the module's doc). Dropping it closes its stdin and lets it go: a
/// command that waits for its next line then ends.
pub struct Conversation<'s> {
    session: &'s HostSession,
    command: String,
    started: std::time::Instant,
    talk: Talk,
    /// Lines heard and not yet taken, and the start of one not ended yet.
    lines: VecDeque<String>,
    partial: Vec<u8>,
    stderr: Vec<u8>,
    exit_status: Option<u32>,
    _slot: SemaphorePermit<'s>,
}

/// What carries the conversation.
enum Talk {
    Channel {
        read: ChannelReadHalf,
        write: Option<ChannelWriteHalf<Msg>>,
        /// The connection stays while the channel is in use.
        _connection: Arc<Connection>,
    },
    Process {
        /// Boxed: a channel's halves are far smaller.
        child: Box<Child>,
        stdin: Option<ChildStdin>,
        stdout: ChildStdout,
        stderr: Option<JoinHandle<Vec<u8>>>,
        /// The system client's master connection stays while the process uses it.
        _master: Option<Arc<OpenSshMaster>>,
    },
}

impl HostSession {
    /// Starts `command` with this session's privilege, to be spoken with.
    pub async fn converse(&self, command: &str) -> Result<Conversation<'_>, SshError> {
        let failed =
            |action: &'static str, reason: String| self.channel_error(command, action, reason);
        let slot = self.command_slot(command).await?;
        let line = self.inner.privilege.wrap(command);
        let talk = match &self.inner.link {
            Link::Builtin(redial) => {
                let (channel, connection) =
                    redial.open(ChannelKind::Session).await.map_err(|err| match err {
                        OpenError::Connect(err) => err,
                        OpenError::Channel(err) => failed("opening a channel for", err.to_string()),
                    })?;
                channel
                    .exec(true, line.as_bytes())
                    .await
                    .map_err(|err| failed("starting the command for", err.to_string()))?;
                let (read, write) = channel.split();
                Talk::Channel { read, write: Some(write), _connection: connection }
            }
            Link::System(link) => {
                let master = link.master().await?;
                Talk::spawn(master.command(&line), command, Some(master))?
            }
            Link::Local => Talk::spawn(local::command(&line), command, None)?,
        };
        Ok(Conversation {
            session: self,
            command: command.to_owned(),
            started: std::time::Instant::now(),
            talk,
            lines: VecDeque::new(),
            partial: Vec::new(),
            stderr: Vec::new(),
            exit_status: None,
            _slot: slot,
        })
    }
}

impl Drop for Conversation<'_> {
    /// A conversation given up on (a failure, a timeout) ends its command: its stdin closes, and
    /// a command that waits for a line ends there. (A process is killed with its `ssh` client.)
    fn drop(&mut self) {
        if let Talk::Channel { write, .. } = &mut self.talk
            && let Some(write) = write.take()
        {
            tokio::spawn(async move {
                let _ = write.eof().await;
            });
        }
    }
}

impl Talk {
    fn spawn(
        process: tokio::process::Command,
        command: &str,
        master: Option<Arc<OpenSshMaster>>,
    ) -> Result<Talk, SshError> {
        let mut child = super::child::spawn(process, command, Stdio::piped())?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
        let stderr = tokio::spawn(async move {
            let mut text = Vec::new();
            let _ = stderr_pipe.read_to_end(&mut text).await;
            text
        });
        let stderr = Some(stderr);
        Ok(Talk::Process { child: Box::new(child), stdin, stdout, stderr, _master: master })
    }
}

impl Conversation<'_> {
    /// Writes `line` (and a newline) to the command's stdin.
    pub async fn say(&mut self, line: &str) -> Result<(), SshError> {
        let said = format!("{line}\n");
        let written = match &mut self.talk {
            Talk::Channel { write: Some(write), .. } => {
                write.data(said.as_bytes()).await.map_err(|err| err.to_string())
            }
            Talk::Process { stdin: Some(stdin), .. } => {
                stdin.write_all(said.as_bytes()).await.map_err(|err| err.to_string())
            }
            _ => Err("its input is closed".to_owned()),
        };
        written.map_err(|reason| self.failed("writing its input for", reason))
    }

    /// The next line of the command's stdout; `None` once it has ended (see
    /// [`Conversation::end`] for how).
    pub async fn hear(&mut self) -> Result<Option<String>, SshError> {
        loop {
            if let Some(line) = self.lines.pop_front() {
                return Ok(Some(line));
            }
            if !self.read_more().await? {
                return Ok(None);
            }
        }
    }

    /// Closes the command's stdin, reads it to its end and returns what it said (the stdout not
    /// heard yet) and its exit status, whatever that is.
    pub async fn end(&mut self) -> Result<ExecOutput, SshError> {
        self.close_input().await;
        while self.read_more().await? {}
        let mut stdout: String = self.lines.drain(..).map(|line| line + "\n").collect();
        stdout.push_str(&String::from_utf8_lossy(&self.partial));
        let exit_status = match &mut self.talk {
            Talk::Channel { .. } => self.exit_status,
            Talk::Process { child, stderr, .. } => {
                if let Some(stderr) = stderr.take() {
                    self.stderr = stderr.await.unwrap_or_default();
                }
                let status = child.wait().await.map_err(|err| err.to_string());
                let status = status.map_err(|reason| self.failed("waiting for", reason))?;
                status.code().map(|code| code as u32)
            }
        };
        let stderr = String::from_utf8_lossy(&self.stderr).into_owned();
        let (endpoint, millis) = (self.session.endpoint(), self.started.elapsed().as_millis());
        let command = super::exec::loggable(&self.command);
        let Some(exit_status) = exit_status else {
            tracing::info!("{endpoint}: $ {command} -> no exit status ({millis} ms)");
            return Err(SshError::NoExitStatus {
                endpoint: endpoint.to_owned(),
                command: self.command.clone(),
                signal: None,
            });
        };
        tracing::info!("{endpoint}: $ {command} -> exit {exit_status} ({millis} ms)");
        tracing::debug!(stdout = %stdout.trim(), stderr = %stderr.trim());
        Ok(ExecOutput { stdout, stderr, exit_status })
    }

    async fn close_input(&mut self) {
        match &mut self.talk {
            Talk::Channel { write, .. } => {
                if let Some(write) = write.take() {
                    let _ = write.eof().await;
                }
            }
            Talk::Process { stdin, .. } => drop(stdin.take()),
        }
    }

    /// Reads what the command says next into `lines`; `false` once its output has ended.
    async fn read_more(&mut self) -> Result<bool, SshError> {
        let data = match &mut self.talk {
            Talk::Channel { read, .. } => loop {
                match read.wait().await {
                    Some(ChannelMsg::Data { data }) => break Some(data.to_vec()),
                    Some(ChannelMsg::ExtendedData { data, ext: STDERR }) => {
                        self.stderr.extend_from_slice(&data)
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => {
                        self.exit_status = Some(exit_status)
                    }
                    Some(ChannelMsg::Close) | None => break None,
                    Some(_) => {}
                }
            },
            Talk::Process { stdout, .. } => {
                let mut chunk = vec![0; 4096];
                match stdout.read(&mut chunk).await {
                    Ok(0) | Err(_) => None,
                    Ok(read) => {
                        chunk.truncate(read);
                        Some(chunk)
                    }
                }
            }
        };
        let Some(data) = data else { return Ok(false) };
        self.partial.extend_from_slice(&data);
        while let Some(at) = self.partial.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=at).collect();
            self.lines.push_back(String::from_utf8_lossy(&line[..at]).into_owned());
        }
        Ok(true)
    }

    fn failed(&self, action: &'static str, reason: String) -> SshError {
        self.session.channel_error(&self.command, action, reason)
    }
}
