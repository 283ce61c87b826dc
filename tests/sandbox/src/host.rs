//! A simulated host: a real OpenSSH `sshd` on its own loopback address.
//!
//! Each host has its own ed25519 host key, accepts only the cluster key, and sets the
//! environment of every SSH session (`SetEnv`): `PATH` starts with the sandbox's stand-in
//! directory (so `systemctl` is the stand-in), `DM_SANDBOX_HOST_DIR` tells the stand-in whose
//! units to manage, and `HOME` is the host's own home directory. The last one matters: bash
//! sources `~/.bashrc` for commands run by sshd, and the machine's real root `.bashrc` may
//! prepend to `PATH`; a per-host home keeps the session's `PATH` exactly as set here.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::bins::SSHD;
use crate::process::ProcessRecord;
use crate::wait;

/// The port every host's sshd listens on.
pub const SSH_PORT: u16 = 2222;

const SSHD_START_TIMEOUT: Duration = Duration::from_secs(10);
const SSHD_STOP_GRACE: Duration = Duration::from_secs(2);

/// How SSH sessions on a host are set up.
pub struct HostSpec<'a> {
    pub ip: &'a str,
    pub dir: &'a Path,
    /// The only user sshd lets in.
    pub ssh_user: &'a str,
    /// Public half of the cluster key.
    pub authorized_key: &'a str,
    /// First entry of `PATH` in SSH sessions: where the `systemctl` stand-in is.
    pub stand_in_dir: &'a Path,
}

/// Writes the host's sshd directory (config, host key, authorized keys) and its home.
pub fn prepare(spec: &HostSpec) -> Result<PathBuf> {
    let sshd_dir = spec.dir.join("sshd");
    let home = spec.dir.join("home");
    fs::create_dir_all(&sshd_dir)?;
    fs::create_dir_all(&home)?;
    let host_key = sshd_dir.join("ssh_host_ed25519_key");
    keygen(&["-t", "ed25519", "-N", "", "-C", spec.ip], &host_key)?;
    let authorized_keys = sshd_dir.join("authorized_keys");
    fs::write(&authorized_keys, spec.authorized_key)?;
    // Read by sshd with the user's privileges, which may not be root.
    fs::set_permissions(&authorized_keys, fs::Permissions::from_mode(0o644))?;

    let permit_root = if spec.ssh_user == "root" { "prohibit-password" } else { "no" };
    let config = format!(
        "# sshd of the sandbox host {ip}
ListenAddress {ip}:{SSH_PORT}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized_keys}
AllowUsers {user}
PermitRootLogin {permit_root}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
# No PAM: sessions need no account set-up, and the sandbox runs where PAM may not be usable.
UsePAM no
# The sandbox lives in a temporary directory whose owners and modes sshd would refuse.
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
# dm-patch opens many channels (commands, SFTP) over one connection per host.
MaxSessions 64
MaxStartups 64:30:128
Subsystem sftp internal-sftp
SetEnv PATH={path}:/usr/local/bin:/usr/bin:/bin DM_SANDBOX_HOST_DIR={host_dir} HOME={home}
",
        ip = spec.ip,
        host_key = host_key.display(),
        pid_file = sshd_dir.join("sshd.pid").display(),
        authorized_keys = authorized_keys.display(),
        user = spec.ssh_user,
        path = spec.stand_in_dir.display(),
        host_dir = spec.dir.display(),
        home = home.display(),
    );
    let config_path = sshd_dir.join("sshd_config");
    fs::write(&config_path, config)?;
    Ok(config_path)
}

/// A running sshd. Dropping it does not stop it: [`Sshd::stop`] does, as does `sandbox down`
/// from the pid recorded in `sandbox.json`.
pub struct Sshd {
    pub record: ProcessRecord,
    /// Present when this process started sshd, so that it can reap it.
    child: Option<Child>,
}

impl Sshd {
    /// Starts sshd with `config` and waits until it accepts connections on `ip`.
    pub fn start(ip: &str, config: &Path) -> Result<Sshd> {
        // sshd needs its privilege separation directory; only systemd's unit would create it.
        fs::create_dir_all("/run/sshd").context("creating /run/sshd")?;
        let log = config.with_file_name("sshd.log");
        let mut child = Command::new(SSHD)
            .arg("-D")
            .arg("-f")
            .arg(config)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C meant for a test run does not reach the hosts.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {SSHD} for {ip}"))?;
        let record = ProcessRecord::of(child.id());
        let address: SocketAddr = format!("{ip}:{SSH_PORT}").parse()?;
        let mut exited = None;
        let ready = wait::poll(&format!("sshd on {address}"), SSHD_START_TIMEOUT, || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
        });
        let log_text = || fs::read_to_string(&log).unwrap_or_default();
        if let Some(status) = exited {
            bail!("sshd for {ip} exited ({status}): {}", log_text());
        }
        if let Err(err) = ready {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{err}: {}", log_text());
        }
        let record = record.context("sshd vanished right after starting")?;
        Ok(Sshd { record, child: Some(child) })
    }

    /// An sshd started by another process (`sandbox down`).
    pub fn adopt(record: ProcessRecord) -> Sshd {
        Sshd { record, child: None }
    }

    /// Stops the listener and every session it forked, as a host going down would.
    pub fn stop(&mut self) {
        let sessions = self.record.descendants();
        self.record.terminate(SSHD_STOP_GRACE);
        for session in sessions {
            session.kill();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

/// Runs `ssh-keygen ... -f <file>`, replacing any earlier key at `file`.
pub fn keygen(args: &[&str], file: &Path) -> Result<()> {
    for stale in [file.to_path_buf(), file.with_extension("pub")] {
        let _ = fs::remove_file(stale);
    }
    let output = Command::new("ssh-keygen")
        .arg("-q")
        .args(args)
        .arg("-f")
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .context("running ssh-keygen")?;
    if !output.status.success() {
        bail!("ssh-keygen {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

/// Runs `command` on `ip` as `user` with the system `ssh` client and the cluster key.
pub fn ssh(key: &Path, user: &str, ip: &str, command: &str) -> std::io::Result<Output> {
    Command::new("ssh")
        .args(["-i"])
        .arg(key)
        .args(["-p", &SSH_PORT.to_string()])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=5",
        ])
        .arg(format!("{user}@{ip}"))
        .arg(command)
        .stdin(Stdio::null())
        .output()
}
