//! What can go wrong talking to a host. Each variant carries what the operator needs to act
//! (the endpoint, the user and key, the command), and displays as one line.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot use the SSH key {}: {reason}", .path.display())]
    KeyUnreadable { path: PathBuf, reason: String },

    #[error("cannot connect to {endpoint}: {source}")]
    Connect { endpoint: String, source: std::io::Error },

    #[error("{endpoint} did not complete the SSH handshake and login within {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },

    #[error("SSH handshake with {endpoint} failed: {reason}")]
    Handshake { endpoint: String, reason: String },

    #[error("{endpoint} rejected public-key login as user {user:?} with the key {}", .key.display())]
    AuthRejected { endpoint: String, user: String, key: PathBuf },

    #[error(
        "the host key of {endpoint} ({fingerprint}) is not recorded in {} and the host key \
         policy is strict; record it there (or connect once with the policy accept-new)",
        .known_hosts.display()
    )]
    HostKeyUnknown { endpoint: String, fingerprint: String, known_hosts: PathBuf },

    #[error(
        "the host key of {host} port {port} has CHANGED (possible man-in-the-middle): it \
         presented {presented}, but {}:{line} records {recorded}; if the host was rebuilt, \
         remove line {line} from {} and connect again",
        .known_hosts.display(),
        .known_hosts.display()
    )]
    HostKeyChanged {
        host: String,
        port: u16,
        presented: String,
        recorded: String,
        known_hosts: PathBuf,
        line: usize,
    },

    #[error(
        "the host key of {endpoint} ({fingerprint}) is REVOKED by {}:{line}; the host must \
         be given a new key (and recorded) before dm-patch connects to it",
        .known_hosts.display()
    )]
    HostKeyRevoked { endpoint: String, fingerprint: String, known_hosts: PathBuf, line: usize },

    #[error("cannot use the known hosts file {}: {source}", .path.display())]
    KnownHosts { path: PathBuf, source: std::io::Error },

    #[error("cannot use the jump host {jump}: {reason}")]
    Jump { jump: String, reason: String },

    #[error("the jump host {jump} could not connect to {target}: {reason}")]
    Forward { jump: String, target: String, reason: String },

    #[error("cannot connect to {endpoint} with the system's ssh client: {reason}")]
    SystemConnect { endpoint: String, reason: String },

    #[error(
        "{endpoint}: the system's ssh client failed running `{}`: {}",
        one_line(.command),
        if .stderr.trim().is_empty() { "exit status 255, no message".to_owned() } else { stderr_lines(.stderr) }
    )]
    SystemSsh { endpoint: String, command: String, stderr: String },

    #[error(
        "--ssh none runs commands on this machine, but {host} is not one of its addresses; \
         use --ssh builtin or system for remote hosts"
    )]
    NotLocal { host: String },

    #[error("cannot run `{}` on this machine: {source}", one_line(.command))]
    Spawn { command: String, source: std::io::Error },

    /// A step of running `command` failed; `action` names the step and leads to the command
    /// (`opening a channel for`, `saving the output of`).
    #[error("{endpoint}: {action} `{}` failed: {reason}", one_line(.command))]
    Channel { endpoint: String, action: &'static str, command: String, reason: String },

    #[error(
        "{endpoint}: `{}` ended without an exit status ({})",
        one_line(.command),
        .signal.as_deref().map_or("the connection or the remote shell went away".into(), |s| format!("killed by signal {s}"))
    )]
    NoExitStatus { endpoint: String, command: String, signal: Option<String> },

    #[error(
        "{endpoint}: `{}` exited with status {exit_status}{}",
        one_line(.command),
        stderr_suffix(.stderr)
    )]
    CommandFailed { endpoint: String, command: String, exit_status: u32, stderr: String },
}

/// Keeps a command on one line of an error message, each of dm-patch's scripts in it shown by its
/// name and arguments (as `-v` logs it), not its body.
fn one_line(text: &str) -> String {
    super::exec::without_script_bodies(text).replace('\n', "\\n")
}

/// `: <stderr>` with its lines joined, or nothing when stderr was empty.
fn stderr_suffix(stderr: &str) -> String {
    let lines = stderr_lines(stderr);
    if lines.is_empty() { String::new() } else { format!(": {lines}") }
}

/// The non-empty lines of `stderr`, joined on one line.
fn stderr_lines(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
    lines.join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_command_reads_as_one_line_with_its_stderr() {
        let err = SshError::CommandFailed {
            endpoint: "127.0.0.1:22".into(),
            command: "tar -xzf x\nrm x".into(),
            exit_status: 2,
            stderr: "tar: x: Cannot open\ntar: Error is not recoverable\n".into(),
        };
        assert_eq!(
            err.to_string(),
            "127.0.0.1:22: `tar -xzf x\\nrm x` exited with status 2: tar: x: Cannot open / tar: \
             Error is not recoverable"
        );
    }

    /// A channel that fails for one of dm-patch's scripts names it by its name and arguments.
    #[test]
    fn a_channel_failure_reads_as_the_scripts_name_and_arguments() {
        let command = crate::remote::SWAP.command(["/d/bin", "/d/bin.patch-1234567", "1"]);
        let err = SshError::Channel {
            endpoint: "127.0.0.1:22".into(),
            action: "opening a channel for",
            command,
            reason: "the connection is gone".into(),
        };
        assert_eq!(
            err.to_string(),
            "127.0.0.1:22: opening a channel for `dm-patch-swap /d/bin /d/bin.patch-1234567 1` \
             failed: the connection is gone"
        );
    }

    /// A script of dm-patch's that fails is named by its name and arguments, not its body.
    #[test]
    fn a_failed_script_reads_as_its_name_and_arguments() {
        let command = crate::remote::SWAP.command(["/d/bin", "/d/bin.patch-1234567", "1"]);
        let err = SshError::CommandFailed {
            endpoint: "127.0.0.1:22".into(),
            command: format!("{} && printf done", command),
            exit_status: 3,
            stderr: "/d/bin/dm-worker is a directory\n".into(),
        };
        assert_eq!(
            err.to_string(),
            "127.0.0.1:22: `dm-patch-swap /d/bin /d/bin.patch-1234567 1 && printf done` exited \
             with status 3: /d/bin/dm-worker is a directory"
        );
    }

    #[test]
    fn a_changed_host_key_names_the_line_to_remove() {
        let err = SshError::HostKeyChanged {
            host: "127.0.9.5".into(),
            port: 22,
            presented: "SHA256:new".into(),
            recorded: "SHA256:old".into(),
            known_hosts: "/home/u/.tiup/storage/dm/clusters/c/ssh/known_hosts".into(),
            line: 3,
        };
        let message = err.to_string();
        assert!(!message.contains('\n'));
        assert!(message.contains("127.0.9.5 port 22"));
        assert!(message.contains("SHA256:new") && message.contains("SHA256:old"));
        assert!(
            message
                .contains("remove line 3 from /home/u/.tiup/storage/dm/clusters/c/ssh/known_hosts")
        );
    }
}
