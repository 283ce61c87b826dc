//! Running a command as a local process: the system's `ssh` client (one command over a shared
//! master connection) or, with `--ssh none`, the command itself. Input streams to its stdin a
//! chunk at a time, as on an SSH channel, and stdout to a file when asked.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::exec::{INPUT_CHUNK, Input};
use super::{ExecOutput, SshError};

/// What the process is, which decides what its exit status means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    /// The `ssh` client: exit status 255 is its own failure (connection lost, master gone),
    /// not the remote command's.
    OpenSsh,
    /// The command itself.
    Local,
}

/// OpenSSH's exit status for its own errors.
const SSH_FAILED: i32 = 255;

/// Starts `process` with `stdin`, its stdout and stderr piped. `command` is what the caller
/// asked for, for messages.
pub(super) fn spawn(mut process: Command, command: &str, stdin: Stdio) -> Result<Child, SshError> {
    process
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A run that is given up on (a signal, a timeout) leaves no command behind.
        .kill_on_drop(true);
    process.spawn().map_err(|source| SshError::Spawn { command: command.to_owned(), source })
}

/// Runs `process` to its end, streaming `input` to its stdin, and returns its output and exit
/// status, whatever that status is. `command` is what the caller asked for, for messages.
pub(super) async fn run(
    endpoint: &str,
    command: &str,
    process: Command,
    input: Option<Input<'_>>,
    sink: Option<&mut std::fs::File>,
    via: Via,
) -> Result<ExecOutput, SshError> {
    let stdin = if input.is_some() { Stdio::piped() } else { Stdio::null() };
    let mut child = spawn(process, command, stdin)?;
    let stdin = child.stdin.take();
    let mut stdout_pipe = child.stdout.take().expect("stdout is piped");
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");

    let send = async {
        let (Some(mut stdin), Some(Input { data, progress })) = (stdin, input) else {
            return Ok(());
        };
        let mut chunk = vec![0u8; INPUT_CHUNK];
        let mut sent = 0u64;
        loop {
            let read = data.read(&mut chunk).await.map_err(|err| SshError::Channel {
                endpoint: endpoint.to_owned(),
                action: "reading the input for",
                command: command.to_owned(),
                reason: err.to_string(),
            })?;
            if read == 0 {
                break;
            }
            // The command may end before it has read everything (it failed): its exit status
            // is what counts then, and the rest of the input is not sent.
            if stdin.write_all(&chunk[..read]).await.is_err() {
                return Ok(());
            }
            sent += read as u64;
            progress(sent);
        }
        // Dropping stdin is the end of file the command waits for.
        drop(stdin);
        Ok(())
    };
    // Owns the pipe: output that cannot be saved ends the read, and the pipe's close ends the
    // command, instead of leaving it blocked on a full pipe.
    let read_stdout = async move {
        let mut text = Vec::new();
        let Some(file) = sink else {
            let _ = stdout_pipe.read_to_end(&mut text).await;
            return Ok(text);
        };
        let mut chunk = vec![0u8; INPUT_CHUNK];
        loop {
            let Ok(read @ 1..) = stdout_pipe.read(&mut chunk).await else {
                return Ok(text);
            };
            if let Err(err) = std::io::Write::write_all(file, &chunk[..read]) {
                return Err(SshError::Channel {
                    endpoint: endpoint.to_owned(),
                    action: "saving the output of",
                    command: command.to_owned(),
                    reason: err.to_string(),
                });
            }
        }
    };
    let read_stderr = async {
        let mut text = Vec::new();
        stderr_pipe.read_to_end(&mut text).await.map(|_| text)
    };
    let (sent, stdout, stderr) = tokio::join!(send, read_stdout, read_stderr);
    sent?;
    let stdout = stdout?;
    let status = child.wait().await.map_err(|err| SshError::Channel {
        endpoint: endpoint.to_owned(),
        action: "waiting for",
        command: command.to_owned(),
        reason: err.to_string(),
    })?;
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    let stderr = String::from_utf8_lossy(&stderr.unwrap_or_default()).into_owned();
    match status.code() {
        Some(SSH_FAILED) if via == Via::OpenSsh => Err(SshError::SystemSsh {
            endpoint: endpoint.to_owned(),
            command: command.to_owned(),
            stderr,
        }),
        Some(code) => Ok(ExecOutput { stdout, stderr, exit_status: code as u32 }),
        None => Err(SshError::NoExitStatus {
            endpoint: endpoint.to_owned(),
            command: command.to_owned(),
            signal: status.signal().map(|signal| format!("{signal}")),
        }),
    }
}
