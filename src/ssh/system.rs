//! `--ssh system` (TiUP's system executor): the local OpenSSH client, so that the operator's
//! `~/.ssh/config` (ProxyJump, agent, certificates) applies. TiUP starts one `ssh` connection
//! per command; dm-patch keeps its promise of one connection per host with OpenSSH's connection
//! sharing: a master connection per host, opened once, and every command a client of it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::process::Command;

use super::jump::JumpHost;
use super::session::HostKeyPolicy;
use super::{SshError, SshTarget, shell_quote};

/// TiUP's variable naming the `ssh` client to use instead of the one on `PATH`.
pub const SSH_PATH_ENV: &str = "TIUP_SSH_PATH";

/// Keepalives as dm-patch's own client sends them: a host that vanished is noticed in a minute.
const KEEPALIVE: [&str; 4] = ["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3"];

/// The system client, as this run uses it: where the master connections' sockets live, and the
/// jump host every connection goes through, if any.
pub struct OpenSsh {
    /// Private to this run, removed with it (and the sockets in it).
    control_dir: tempfile::TempDir,
    jump: Option<JumpHost>,
    /// How long an idle master outlives its last command: long enough for any wait of the roll,
    /// short enough that a killed dm-patch leaves nothing behind for long.
    persist: Duration,
    next_socket: AtomicUsize,
}

impl OpenSsh {
    pub fn new(jump: Option<JumpHost>, persist: Duration) -> std::io::Result<OpenSsh> {
        let temp = std::env::temp_dir();
        reap_abandoned(&temp);
        // Named by this process, so that a later run can tell whether it is still at work.
        let control_dir = tempfile::Builder::new()
            .prefix(&format!("{CONTROL_DIR_PREFIX}{}-", std::process::id()))
            .tempdir_in(&temp)?;
        Ok(OpenSsh { control_dir, jump, persist, next_socket: AtomicUsize::new(0) })
    }

    /// Opens the master connection to `target` (`ssh -M -N -f`: it returns once logged in).
    pub(super) async fn connect(
        self: &Arc<Self>,
        target: &SshTarget,
    ) -> Result<OpenSshMaster, SshError> {
        let index = self.next_socket.fetch_add(1, Ordering::Relaxed);
        let socket = self.control_dir.path().join(index.to_string());
        let log = self.control_dir.path().join(format!("{index}.log"));
        let stderr = self.control_dir.path().join(format!("{index}.stderr"));
        let failed =
            |reason: String| SshError::SystemConnect { endpoint: target.endpoint(), reason };
        let stderr_file = std::fs::File::create(&stderr)
            .map_err(|err| failed(format!("cannot create {}: {err}", stderr.display())))?;
        let master = OpenSshMaster {
            _control_dir: self.clone(),
            socket,
            options: options(target, self.jump.as_ref()),
            host: target.addr.clone(),
            close_when_dropped: AtomicBool::new(false),
        };
        let mut connect = master.ssh();
        connect
            .args(["-M", "-N", "-f", "-o"])
            .arg(format!("ControlPersist={}", self.persist.as_secs().max(1)))
            // The backgrounded master keeps its stdio: its messages go to files, so that
            // nothing here waits on a pipe it holds open.
            .arg("-E")
            .arg(&log)
            .arg("--")
            .arg(&master.host)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr_file)
            .kill_on_drop(true);
        let status = match tokio::time::timeout(target.connect_timeout, connect.status()).await {
            Ok(Ok(status)) => status,
            Ok(Err(err)) => {
                return Err(failed(format!(
                    "cannot run {}: {err}",
                    ssh_program().to_string_lossy()
                )));
            }
            Err(_elapsed) => {
                return Err(SshError::Timeout {
                    endpoint: target.endpoint(),
                    timeout: target.connect_timeout,
                });
            }
        };
        if !status.success() {
            let said: String = [&log, &stderr]
                .iter()
                .map(|file| std::fs::read_to_string(file).unwrap_or_default())
                .collect();
            let said: Vec<&str> = said.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            return Err(failed(if said.is_empty() {
                format!("ssh {status}")
            } else {
                said.join(" / ")
            }));
        }
        Ok(master)
    }
}

/// A host's master connection, with what is needed to open it again: opened at login and kept
/// for the run, or opened at the host's first command and let go while the host has nothing
/// to do ([`SystemLink::park`]), as dm-patch's own client does past 32 hosts.
pub(super) struct SystemLink {
    openssh: Arc<OpenSsh>,
    target: SshTarget,
    /// `None` while parked (or not opened yet): the next command opens it. Locked while it is
    /// opened, so that commands side by side wait for the same one.
    current: tokio::sync::Mutex<Option<Arc<OpenSshMaster>>>,
    /// Opened at the first command, and so let go between commands when asked.
    parks: bool,
}

impl SystemLink {
    /// Opens the master connection now, for the whole run.
    pub(super) async fn connect(
        openssh: &Arc<OpenSsh>,
        target: &SshTarget,
    ) -> Result<SystemLink, SshError> {
        let master = openssh.connect(target).await?;
        Ok(SystemLink {
            openssh: openssh.clone(),
            target: target.clone(),
            current: tokio::sync::Mutex::new(Some(Arc::new(master))),
            parks: false,
        })
    }

    /// A link whose master connection is opened at the first command.
    pub(super) fn later(openssh: &Arc<OpenSsh>, target: &SshTarget) -> SystemLink {
        SystemLink {
            openssh: openssh.clone(),
            target: target.clone(),
            current: tokio::sync::Mutex::new(None),
            parks: true,
        }
    }

    /// The master connection, opened first if parked; the command run over it holds it, so
    /// that parking never ends it under a running command.
    pub(super) async fn master(&self) -> Result<Arc<OpenSshMaster>, SshError> {
        let mut current = self.current.lock().await;
        if let Some(master) = &*current {
            return Ok(master.clone());
        }
        tracing::debug!("{}: connecting", self.target.endpoint());
        let master = Arc::new(self.openssh.connect(&self.target).await?);
        *current = Some(master.clone());
        Ok(master)
    }

    /// Lets the master connection go until the next command, if it was opened at the first
    /// one: at once when no command runs over it, else when the last one ends.
    pub(super) async fn park(&self) {
        if !self.parks {
            return;
        }
        let Some(master) = self.current.lock().await.take() else { return };
        tracing::debug!("{}: connection parked", self.target.endpoint());
        match Arc::try_unwrap(master) {
            Ok(master) => {
                // As dm-patch's own client does: closed when this returns, so that the next
                // host's connection never opens beside it.
                let pid = master.pid().await;
                master.close().await;
                if let Some(pid) = pid {
                    gone(pid, PARK_WAIT).await;
                }
            }
            Err(in_use) => in_use.close_when_dropped.store(true, Ordering::Relaxed),
        }
    }

    /// Ends the master connection, if open.
    pub(super) async fn close(&self) {
        if let Some(master) = self.current.lock().await.take() {
            master.close().await;
        }
    }
}

/// One host's master connection.
pub(super) struct OpenSshMaster {
    /// Keeps the socket's directory while the connection is in use.
    _control_dir: Arc<OpenSsh>,
    socket: PathBuf,
    /// The options the master was opened with; clients repeat them so that `ssh` resolves the
    /// same host the same way.
    options: Vec<OsString>,
    host: String,
    /// Parked while a command still ran over it: the last one to let it go ends it.
    close_when_dropped: AtomicBool,
}

impl OpenSshMaster {
    /// `ssh` running `line` over the master connection. Should that have been lost (the host's
    /// sshd restarted, a network blip), `ssh` connects on its own for the command
    /// (`ControlMaster=no`), with the same options, host key check included.
    pub(super) fn command(&self, line: &str) -> Command {
        let mut command = self.ssh();
        command.args(["-o", "ControlMaster=no", "--"]).arg(&self.host).arg(line);
        command
    }

    /// Ends the master connection.
    pub(super) async fn close(&self) {
        let output = self.exit().output().await;
        if let Err(err) = output {
            tracing::debug!(host = %self.host, "ssh -O exit: {err}");
        }
    }

    /// The master's process id, as it says to `ssh -O check` (`Master running (pid=123)`).
    async fn pid(&self) -> Option<u32> {
        let mut check = self.ssh();
        check.args(["-O", "check", "--"]).arg(&self.host).stdin(Stdio::null());
        let output = check.output().await.ok()?;
        let said = String::from_utf8_lossy(&output.stderr);
        let (_, rest) = said.split_once("(pid=")?;
        rest.split(')').next()?.parse().ok()
    }

    /// `ssh -O exit`: asks the master to end.
    fn exit(&self) -> Command {
        let mut exit = self.ssh();
        exit.args(["-O", "exit", "--"]).arg(&self.host).stdin(Stdio::null());
        exit
    }

    fn ssh(&self) -> Command {
        let mut command = Command::new(ssh_program());
        command.arg("-S").arg(&self.socket).args(&self.options);
        command
    }
}

impl Drop for OpenSshMaster {
    fn drop(&mut self) {
        if self.close_when_dropped.load(Ordering::Relaxed)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let mut exit = self.exit();
            runtime.spawn(async move { exit.output().await });
        }
    }
}

/// How long parking waits for a master to end (it ends at once when asked; one that does not
/// is left to end on its own).
const PARK_WAIT: Duration = Duration::from_secs(2);

/// Waits until process `pid` has ended (its sockets closed: gone, or a zombie), looking every
/// millisecond, at most `deadline`.
async fn gone(pid: u32, deadline: Duration) {
    let stat = PathBuf::from(format!("/proc/{pid}/stat"));
    let ended = || match std::fs::read_to_string(&stat) {
        // `pid (comm) state ...`: the state follows the last `)`.
        Ok(text) => {
            text.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        }
        Err(_) => true,
    };
    let waited = tokio::time::timeout(deadline, async {
        while !ended() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    if waited.await.is_err() {
        tracing::debug!("ssh master {pid} did not end at once");
    }
}

/// `<temp dir>/dm-patch-ssh-<pid>-<random>`: one run's master sockets.
const CONTROL_DIR_PREFIX: &str = "dm-patch-ssh-";

/// Ends what runs killed before they could clean up left behind: each control dir of this
/// user's whose run is gone has its masters asked to exit (`ssh -O exit`: they would
/// otherwise linger until `ControlPersist` ran out), then goes. Best effort: a leftover that
/// cannot be removed is logged, never a reason to fail this run.
fn reap_abandoned(temp: &Path) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(me) = std::fs::metadata("/proc/self").map(|m| m.uid()) else { return };
    let Ok(entries) = std::fs::read_dir(temp) else { return };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|name| {
            let rest = name.strip_prefix(CONTROL_DIR_PREFIX)?;
            rest.split_once('-')?.0.parse::<u32>().ok()
        }) else {
            continue;
        };
        let dir = entry.path();
        // Never another user's, never one of a run still at work (this one included).
        let ours = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir() && m.uid() == me);
        if !ours || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let sockets = std::fs::read_dir(&dir).into_iter().flatten().filter_map(Result::ok);
        for socket in sockets.filter(|s| s.file_type().is_ok_and(|t| t.is_socket())) {
            end_master(&socket.path());
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => tracing::info!("removed {}, left by a run that was killed", dir.display()),
            Err(err) => tracing::warn!("cannot remove {}: {err}", dir.display()),
        }
    }
}

/// Asks the master connection listening on `socket` to exit, waiting a few seconds at most.
fn end_master(socket: &Path) {
    let child = std::process::Command::new(ssh_program())
        .arg("-S")
        .arg(socket)
        .args(["-O", "exit", "--", "abandoned"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while matches!(child.try_wait(), Ok(None)) {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ssh_program() -> OsString {
    std::env::var_os(SSH_PATH_ENV).filter(|path| !path.is_empty()).unwrap_or_else(|| "ssh".into())
}

/// The options that make `ssh` log in as dm-patch's own client would: the cluster's user, key
/// and port, never a prompt, host keys checked against the cluster's known_hosts (then the
/// operator's) with the run's policy, and TiUP's jump host as a `ProxyCommand`.
fn options(target: &SshTarget, jump: Option<&JumpHost>) -> Vec<OsString> {
    let mut options: Vec<OsString> = vec!["-o".into(), "BatchMode=yes".into()];
    options.extend([
        "-o".into(),
        format!("ConnectTimeout={}", target.connect_timeout.as_secs().max(1)).into(),
    ]);
    options.extend(KEEPALIVE.map(OsString::from));
    options.extend(
        host_key_options(target.host_key_policy, &target.known_hosts)
            .into_iter()
            .map(OsString::from),
    );
    options.extend(["-o".into(), "LogLevel=ERROR".into()]);
    options.extend(["-i".into(), target.key_path.clone().into_os_string()]);
    options.extend([
        "-p".into(),
        target.port.to_string().into(),
        "-l".into(),
        target.user.clone().into(),
    ]);
    if let Some(jump) = jump {
        let proxy = proxy_command(jump, target.host_key_policy, &target.known_hosts);
        options.extend(["-o".into(), format!("ProxyCommand={proxy}").into()]);
    }
    options
}

/// `StrictHostKeyChecking` for the policy, against the cluster's known_hosts first (where new
/// keys are recorded, unhashed, as dm-patch's own client reads them) and the operator's next.
fn host_key_options(policy: HostKeyPolicy, known_hosts: &Path) -> Vec<String> {
    let (checking, files) = match policy {
        HostKeyPolicy::Strict => ("yes", known_hosts_files(known_hosts)),
        HostKeyPolicy::AcceptNew => ("accept-new", known_hosts_files(known_hosts)),
        HostKeyPolicy::Off => ("no", "/dev/null".to_owned()),
    };
    vec![
        "-o".into(),
        format!("StrictHostKeyChecking={checking}"),
        "-o".into(),
        format!("UserKnownHostsFile={files}"),
        "-o".into(),
        "HashKnownHosts=no".into(),
    ]
}

fn known_hosts_files(cluster_file: &Path) -> String {
    // ssh splits the list on spaces; a path with spaces is quoted.
    let cluster_file = cluster_file.display().to_string();
    let cluster_file =
        if cluster_file.contains(' ') { format!("\"{cluster_file}\"") } else { cluster_file };
    format!("{cluster_file} ~/.ssh/known_hosts")
}

/// TiUP's `ProxyCommand` (`ssh -i <identity> -p <port> <user>@<host> -W %h:%p`), with the jump
/// host's key checked as the hosts' are. `/bin/sh` runs it: every value is quoted, and `%` (a
/// `ProxyCommand` escape) doubled.
fn proxy_command(jump: &JumpHost, policy: HostKeyPolicy, known_hosts: &Path) -> String {
    let mut words = vec![ssh_program().to_string_lossy().into_owned()];
    words.extend(["-o".into(), "BatchMode=yes".into()]);
    words.extend(["-o".into(), format!("ConnectTimeout={}", jump.timeout.as_secs().max(1))]);
    words.extend(host_key_options(policy, known_hosts));
    words.extend(["-o".into(), "LogLevel=ERROR".into()]);
    words.extend(["-i".into(), jump.identity.display().to_string()]);
    words.extend(["-p".into(), jump.port.to_string(), "-l".into(), jump.user.clone()]);
    words.extend(["-W".into(), "%h:%p".into(), "--".into(), jump.addr.clone()]);
    words
        .iter()
        .map(
            |word| {
                if word == "%h:%p" { word.clone() } else { shell_quote(word).replace('%', "%%") }
            },
        )
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_command_quotes_every_value_and_keeps_only_its_own_escapes() {
        let jump = JumpHost {
            addr: "127.0.9.1".into(),
            port: 2222,
            user: "ops".into(),
            identity: "/home/o p/100%.key".into(),
            timeout: Duration::from_secs(7),
        };
        let command = proxy_command(&jump, HostKeyPolicy::Strict, Path::new("/s/known_hosts"));
        assert!(command.contains("-i '/home/o p/100%%.key'"), "{command}");
        assert!(command.contains("ConnectTimeout=7"), "{command}");
        assert!(command.contains("StrictHostKeyChecking=yes"), "{command}");
        assert!(command.ends_with("-p 2222 -l ops -W %h:%p -- 127.0.9.1"), "{command}");
    }

    #[test]
    fn host_keys_are_checked_against_the_clusters_file_first() {
        let options = host_key_options(HostKeyPolicy::AcceptNew, Path::new("/t h/known_hosts"));
        assert!(options.contains(&"StrictHostKeyChecking=accept-new".to_owned()));
        assert!(
            options
                .contains(&"UserKnownHostsFile=\"/t h/known_hosts\" ~/.ssh/known_hosts".to_owned())
        );
        let off = host_key_options(HostKeyPolicy::Off, Path::new("/s/known_hosts"));
        assert!(off.contains(&"UserKnownHostsFile=/dev/null".to_owned()));
    }
}
