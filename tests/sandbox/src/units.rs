//! The service manager behind the `systemctl` stand-in: TiUP's unit files, started and stopped
//! by pid, on one sandbox host.
//!
//! A host keeps its units in `<host>/systemd/` (`<host>/systemd/user/` for `systemctl --user`)
//! and what it knows about running ones in `run/<unit>.pid` next to them: `<pid> <start time>`.
//! A unit is *active* while that process runs (see [`ProcessRecord::is_running`]), *failed*
//! when it stopped without being asked to, and *inactive* when it was stopped or never started.
//! Services are detached (own session, stdio on `/dev/null`) so they outlive the SSH session
//! that started them, and run with the clean environment systemd gives services.

use std::fs::{self, File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::process::ProcessRecord;
use crate::sudo::user_ids;

/// Names the host directory in SSH sessions and for the stand-in.
pub const HOST_DIR_VAR: &str = "DM_SANDBOX_HOST_DIR";

/// systemd's `DefaultTimeoutStopSec`, used when a unit sets no `TimeoutStopSec=`.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(90);

/// The environment systemd starts services with (before `User=` adds HOME and friends).
const SERVICE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The units of one host, system or user scope.
pub struct ServiceManager {
    units_dir: PathBuf,
    run_dir: PathBuf,
}

/// What `systemctl is-active` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitState {
    Active(ProcessRecord),
    /// The recorded process ended without `stop`: crashed, or exited at once.
    Failed,
    Inactive,
}

impl UnitState {
    /// The word `systemctl is-active` prints.
    pub fn as_str(&self) -> &'static str {
        match self {
            UnitState::Active(_) => "active",
            UnitState::Failed => "failed",
            UnitState::Inactive => "inactive",
        }
    }
}

/// The parts of a unit file the stand-in acts on.
#[derive(Debug)]
pub struct Unit {
    /// Always with the `.service` suffix.
    pub name: String,
    pub path: PathBuf,
    pub description: String,
    pub exec_start: Vec<String>,
    pub user: Option<String>,
    pub stop_timeout: Duration,
}

/// `dm-worker-8262` and `dm-worker-8262.service` name the same unit.
pub fn unit_file_name(name: &str) -> String {
    if name.contains('.') { name.to_owned() } else { format!("{name}.service") }
}

impl ServiceManager {
    /// The units of the host at `host_dir`; `user_scope` for `systemctl --user`.
    pub fn for_host(host_dir: &Path, user_scope: bool) -> ServiceManager {
        let units_dir =
            if user_scope { host_dir.join("systemd/user") } else { host_dir.join("systemd") };
        ServiceManager { run_dir: units_dir.join("run"), units_dir }
    }

    /// The host named by `$DM_SANDBOX_HOST_DIR`, as an SSH session on a sandbox host has it.
    pub fn from_env(user_scope: bool) -> Result<ServiceManager> {
        let host_dir = std::env::var_os(HOST_DIR_VAR).ok_or_else(|| {
            anyhow!("{HOST_DIR_VAR} is not set: this systemctl only manages dm-sandbox hosts")
        })?;
        Ok(ServiceManager::for_host(Path::new(&host_dir), user_scope))
    }

    pub fn units_dir(&self) -> &Path {
        &self.units_dir
    }

    /// Reads the unit `name`; `Ok(None)` when there is no such unit file.
    pub fn unit(&self, name: &str) -> Result<Option<Unit>> {
        let name = unit_file_name(name);
        let path = self.units_dir.join(&name);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        parse_unit(name, path, &text).map(Some)
    }

    /// The unit's process, if it runs.
    pub fn running(&self, name: &str) -> Option<ProcessRecord> {
        match self.state(name) {
            UnitState::Active(record) => Some(record),
            _ => None,
        }
    }

    pub fn state(&self, name: &str) -> UnitState {
        match self.read_record(&unit_file_name(name)) {
            Some(record) if record.is_running() => UnitState::Active(record),
            Some(_) => UnitState::Failed,
            None => UnitState::Inactive,
        }
    }

    /// Starts `unit` unless it runs already. Like systemd for `Type=simple`, this succeeds once
    /// the process is launched, even if it exits right away (`is-active` then says so).
    pub fn start(&self, unit: &Unit) -> Result<ProcessRecord> {
        let _lock = self.lock(&unit.name)?;
        if let UnitState::Active(record) = self.state(&unit.name) {
            return Ok(record);
        }
        let record = launch(unit)?;
        self.write_record(&unit.name, &record)?;
        Ok(record)
    }

    /// Stops `unit`: SIGTERM to its process group, SIGKILL after `TimeoutStopSec`, and returns
    /// only once the process is gone. Stopping a stopped unit succeeds.
    pub fn stop(&self, unit: &Unit) -> Result<()> {
        let _lock = self.lock(&unit.name)?;
        self.stop_locked(&unit.name, unit.stop_timeout)
    }

    pub fn restart(&self, unit: &Unit) -> Result<ProcessRecord> {
        self.stop(unit)?;
        self.start(unit)
    }

    /// SIGKILLs every unit's process on this host at once (teardown, or the host "losing
    /// power"); no unit file is needed.
    pub fn kill_all(&self) -> Result<()> {
        for name in self.recorded_units() {
            let _lock = self.lock(&name)?;
            self.stop_locked(&name, Duration::ZERO)?;
        }
        Ok(())
    }

    /// Units with a record: running, or stopped without being asked to.
    pub fn recorded_units(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.run_dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.strip_suffix(".pid").map(str::to_owned))
            .collect();
        names.sort();
        names
    }

    fn stop_locked(&self, name: &str, timeout: Duration) -> Result<()> {
        if let Some(record) = self.read_record(name) {
            record.terminate(timeout);
            if record.is_running() {
                bail!("{name}: process {} survived SIGKILL", record.pid);
            }
        }
        match fs::remove_file(self.record_path(name)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err.into()),
            _ => Ok(()),
        }
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.run_dir.join(format!("{name}.pid"))
    }

    fn read_record(&self, name: &str) -> Option<ProcessRecord> {
        let text = fs::read_to_string(self.record_path(name)).ok()?;
        let (pid, start_time) = text.trim().split_once(' ')?;
        Some(ProcessRecord { pid: pid.parse().ok()?, start_time: start_time.parse().ok()? })
    }

    fn write_record(&self, name: &str, record: &ProcessRecord) -> Result<()> {
        // Written aside and renamed, so that readers never see half a record.
        let path = self.record_path(name);
        let staging = self.run_dir.join(format!(".{name}.pid.{}", std::process::id()));
        fs::write(&staging, format!("{} {}\n", record.pid, record.start_time))?;
        fs::rename(&staging, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// Serialises start/stop of one unit between concurrent `systemctl` runs.
    fn lock(&self, name: &str) -> Result<File> {
        fs::create_dir_all(&self.run_dir)
            .with_context(|| format!("creating {}", self.run_dir.display()))?;
        let path = self.run_dir.join(format!("{name}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // flock(2); released when the file is closed.
        file.lock().context("locking the unit")?;
        Ok(file)
    }
}

fn parse_unit(name: String, path: PathBuf, text: &str) -> Result<Unit> {
    let mut unit = Unit {
        description: name.clone(),
        name,
        path,
        exec_start: Vec::new(),
        user: None,
        stop_timeout: DEFAULT_STOP_TIMEOUT,
    };
    for line in text.lines().map(str::trim) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "Description" => unit.description = value.to_owned(),
            "ExecStart" => unit.exec_start = split_command_line(value)?,
            "User" => unit.user = Some(value.to_owned()),
            "TimeoutStopSec" => {
                let seconds = value.trim_end_matches('s').parse::<u64>();
                unit.stop_timeout = Duration::from_secs(seconds.with_context(|| {
                    format!("{}: TimeoutStopSec={value} is not in seconds", unit.name)
                })?);
            }
            _ => {}
        }
    }
    if unit.exec_start.is_empty() {
        bail!("{} has no ExecStart=", unit.path.display());
    }
    Ok(unit)
}

/// Splits an `ExecStart=` value into words, with systemd's single and double quotes.
fn split_command_line(line: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else {
            return Ok(words);
        };
        let mut word = String::new();
        if first == '\'' || first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some(c) if c == first => break,
                    Some('\\') if first == '"' => word.extend(chars.next()),
                    Some(c) => word.push(c),
                    None => bail!("unterminated quote in ExecStart={line}"),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                word.push(c);
            }
        }
        words.push(word);
    }
}

/// Starts the unit's command detached: a session of its own, stdio on /dev/null, systemd's
/// clean environment, as `User=` when we are root and that user exists.
fn launch(unit: &Unit) -> Result<ProcessRecord> {
    let mut command = Command::new(&unit.exec_start[0]);
    command
        .args(&unit.exec_start[1..])
        .env_clear()
        .env("PATH", SERVICE_PATH)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: getuid(2) cannot fail.
    let running_as_root = unsafe { libc::getuid() } == 0;
    if let Some(user) = &unit.user
        && running_as_root
        && let Some((uid, gid)) = user_ids(user)
    {
        command.uid(uid).gid(gid).env("USER", user).env("LOGNAME", user);
    }
    // SAFETY: setsid(2) is async-signal-safe, as required between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("{}: starting {}", unit.name, unit.exec_start.join(" ")))?;
    // Read the start time even if the process has already exited (a zombie until this
    // stand-in exits): the record then reads "failed", which is the truth.
    let start_time = crate::process::start_time(child.id())
        .with_context(|| format!("{}: process {} vanished", unit.name, child.id()))?;
    // Not waited for: when this stand-in exits, the service is reparented and lives on.
    Ok(ProcessRecord { pid: child.id(), start_time })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_start_words_follow_systemd_quoting() {
        assert_eq!(
            split_command_line("/bin/bash -c '/d/scripts/run_dm-worker.sh'").unwrap(),
            ["/bin/bash", "-c", "/d/scripts/run_dm-worker.sh"]
        );
        assert_eq!(split_command_line(r#"a "b \" c"  d"#).unwrap(), ["a", "b \" c", "d"]);
        assert!(split_command_line("a 'b").is_err());
    }

    #[test]
    fn unit_names_get_the_service_suffix() {
        assert_eq!(unit_file_name("dm-master-8261"), "dm-master-8261.service");
        assert_eq!(unit_file_name("dm-master-8261.service"), "dm-master-8261.service");
    }
}
