//! One audit record per run in `$TIUP_HOME/storage/dm/audit/`, in TiUP's own format (file named
//! by a base52 timestamp, first line the URL-escaped command line), so `tiup dm audit` lists
//! dm-patch runs beside its own. The lines after the first answer "what changed": the package
//! (path, size, sha256, the version its binary reports), the result, and per instance its
//! outcome and its version before and after. Best effort: a run never fails because its
//! record could not be written.
//!
//! The engine records every run it executes ([`Audit::start`], [`Audit::finish`]); the command
//! layer records the runs that end before the engine starts, refused or aborted at the prompt
//! ([`record_unexecuted`]).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

mod format;
pub mod read;

use self::format::{InstanceEntry, RECORD_SUFFIX, base52, line, query_escape};
use super::report::{Outcome, PackageReport, Report};
use crate::dm::version::VersionInfo;

pub struct Audit {
    path: Option<PathBuf>,
}

impl Audit {
    /// Opens a record in `dir` (the store's audit dir) for the run of `command_line`, saying at
    /// once what the run is about (`report`, as it starts): a run killed later still shows up
    /// in `history`, with each instance it finished ([`Audit::instance`]).
    pub fn start(dir: &Path, command_line: &[String], report: &Report) -> Audit {
        let audit = match create(dir, command_line) {
            Ok(path) => Audit { path: Some(path) },
            Err((path, err)) => {
                tracing::warn!("could not write the audit record {}: {err}", path.display());
                Audit { path: None }
            }
        };
        let mut lines = String::new();
        line(&mut lines, "cluster", &report.cluster);
        line(&mut lines, "component", report.component.component());
        package_lines(&mut lines, &report.package);
        line(&mut lines, "mode", &mode(report.offline, report.overwrite));
        audit.append(&lines);
        audit
    }

    /// An instance finished (as the run goes; the full line follows in [`Audit::finish`]).
    pub fn instance(&self, id: &str, outcome: Outcome, detail: Option<&str>) {
        let detail = detail.map(|d| format!("; {d}")).unwrap_or_default();
        let mut lines = String::new();
        line(&mut lines, &format!("instance {id}"), &format!("{}{detail}", outcome.label()));
        self.append(&lines);
    }

    pub fn finish(&self, report: &Report) {
        self.append(&report_lines(report));
    }

    fn append(&self, lines: &str) {
        let Some(path) = &self.path else { return };
        let appended = OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut file| file.write_all(lines.as_bytes()));
        if let Err(err) = appended {
            tracing::warn!("could not write to the audit record {}: {err}", path.display());
        }
    }
}

/// The run's events, passed on, with each finished instance also written to the audit record.
pub struct Recorded {
    pub inner: std::sync::Arc<dyn super::events::Progress>,
    pub audit: std::sync::Arc<Audit>,
}

impl super::events::Progress for Recorded {
    fn event(&self, event: super::events::Event<'_>) {
        if let super::events::Event::InstanceFinished { id, outcome, detail } = event {
            self.audit.instance(id, outcome, detail);
        }
        self.inner.event(event);
    }
}

/// A run that ended before the engine started: what it was about, as far as it got.
#[derive(Debug, Clone, Default)]
pub struct Unexecuted {
    pub cluster: String,
    /// `refused` (bad input), `aborted` (no at the prompt) or `failed`, spelt as the engine's
    /// results are (`preflight-failed`, `success`...).
    pub result: &'static str,
    pub exit_code: u8,
    pub message: String,
    /// The package, once it was checked.
    pub package: Option<PackageReport>,
    /// `dm-master` or `dm-worker`, once the selection was made.
    pub component: Option<String>,
    pub offline: bool,
    pub overwrite: bool,
    /// The selected instances, none of which was touched.
    pub instances: Vec<String>,
}

/// Writes the whole record of a run the engine never executed (nothing was changed). Failing
/// to write it is only logged at debug level: the run's own one-line error is what the
/// operator needs on stderr.
pub fn record_unexecuted(dir: &Path, command_line: &[String], run: &Unexecuted) {
    let mut lines = String::new();
    line(&mut lines, "cluster", &run.cluster);
    if let Some(component) = &run.component {
        line(&mut lines, "component", component);
    }
    if let Some(package) = &run.package {
        package_lines(&mut lines, package);
    }
    if run.component.is_some() {
        line(&mut lines, "mode", &mode(run.offline, run.overwrite));
    }
    line(&mut lines, "finished", &now());
    line(&mut lines, "result", run.result);
    line(&mut lines, "exit", &run.exit_code.to_string());
    line(&mut lines, "message", &run.message);
    for id in &run.instances {
        line(&mut lines, &format!("instance {id}"), InstanceEntry::not_touched());
    }
    let written = create(dir, command_line).and_then(|path| {
        OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(lines.as_bytes()))
            .map_err(|err| (path, err))
    });
    if let Err((path, err)) = written {
        tracing::debug!("could not write the audit record {}: {err}", path.display());
    }
}

/// Creates the record with its first two lines; returns its path.
fn create(dir: &Path, command_line: &[String]) -> Result<PathBuf, (PathBuf, std::io::Error)> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default();
    let path = dir.join(format!("{}{RECORD_SUFFIX}", base52(nanos)));
    let first_line: Vec<String> = command_line.iter().map(|arg| query_escape(arg)).collect();
    let written = fs::create_dir_all(dir).and_then(|()| {
        // Never through an existing name: two runs in the same nanosecond keep their records.
        let mut file = OpenOptions::new().write(true).create_new(true).open(&path)?;
        writeln!(file, "{}", first_line.join(" "))?;
        writeln!(file, "started: {}", now())?;
        writeln!(file, "by: {}", operator())
    });
    match written {
        Ok(()) => {
            tracing::info!("audit record {}", path.display());
            Ok(path)
        }
        Err(err) => Err((path, err)),
    }
}

/// Everything the report says about what changed, one `key: value` line each.
fn report_lines(report: &Report) -> String {
    let mut lines = String::new();
    line(&mut lines, "cluster", &report.cluster);
    line(&mut lines, "component", report.component.component());
    package_lines(&mut lines, &report.package);
    line(&mut lines, "mode", &mode(report.offline, report.overwrite));
    line(&mut lines, "finished", &report.finished_at);
    line(&mut lines, "result", report.result.word());
    if let Some(message) = &report.message {
        line(&mut lines, "message", message);
    }
    for problem in &report.problems {
        line(&mut lines, "problem", problem);
    }
    for instance in &report.instances {
        let entry = InstanceEntry {
            id: instance.id.clone(),
            outcome: instance.outcome,
            swapped: report.offline && instance.outcome == Outcome::Patched,
            version_before: instance.old_version.as_ref().map(VersionInfo::short),
            version_after: instance.new_version.as_ref().map(VersionInfo::short),
            detail: instance.detail.clone(),
        };
        line(&mut lines, &format!("instance {}", instance.id), &entry.to_value());
        if let Some(sha256) = &instance.old_binary_sha256 {
            line(&mut lines, &format!("instance {} old binary sha256", instance.id), sha256);
        }
    }
    if let Some(kept) = &report.kept_package {
        line(&mut lines, "kept package", kept);
    }
    lines
}

fn package_lines(lines: &mut String, package: &PackageReport) {
    line(lines, "package", &package.path);
    line(lines, "package size", &format!("{} bytes", package.size));
    line(lines, "package sha256", &package.sha256);
    if package.sha256_checked {
        line(lines, "package sha256 checked", "as --expect-sha256 gave it");
    }
    line(lines, "binary sha256", &package.binary_sha256);
    if let Some(version) = &package.version {
        line(lines, "package version", &version.short());
    }
}

fn mode(offline: bool, overwrite: bool) -> String {
    let mode = if offline { "offline" } else { "rolling" };
    if overwrite { format!("{mode}, --overwrite") } else { mode.to_owned() }
}

/// The name of the user running dm-patch, as the login shell set it (`USER`, else `LOGNAME`).
pub fn login_name() -> Option<String> {
    ["USER", "LOGNAME"]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// Who ran it, as `user@host` of this machine.
fn operator() -> String {
    let user = login_name().unwrap_or_else(|| {
        use std::os::unix::fs::MetadataExt;
        let uid = fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
        if uid == 0 { "root".to_owned() } else { format!("uid {uid}") }
    });
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    format!("{user}@{}", if host.is_empty() { "localhost" } else { host })
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dm::version::VersionInfo;
    use crate::engine::report::{InstanceReport, RunResult};
    use crate::topology::Role;

    fn version(release: &str, hash: &str) -> Option<VersionInfo> {
        Some(VersionInfo { release: release.to_owned(), git_hash: hash.to_owned() })
    }

    fn report(offline: bool) -> Report {
        Report {
            action: crate::plan::Action::Patch,
            cluster: "demo".to_owned(),
            component: Role::Worker,
            package: PackageReport {
                path: "/tmp/w.tar.gz".to_owned(),
                sha256: "ab".repeat(32),
                sha256_checked: false,
                size: 1234,
                version: version("v8.5.2", "5d6e7f8aaaa"),
                binary_sha256: "cd".repeat(32),
            },
            offline,
            overwrite: false,
            started_at: "2025-01-01T00:00:00Z".to_owned(),
            finished_at: "2025-01-01T00:01:00Z".to_owned(),
            seconds: 60.0,
            result: RunResult::Failed,
            message: Some("it failed\nbadly".to_owned()),
            problems: Vec::new(),
            paused_before: Vec::new(),
            instances: vec![InstanceReport {
                id: "127.0.9.1:8262".to_owned(),
                role: Role::Worker,
                host: "127.0.9.1".to_owned(),
                old_version: version("v8.5.1", "1a2b3c4dddd"),
                old_binary_sha256: None,
                new_version: version("v8.5.2", "5d6e7f8aaaa"),
                outcome: Outcome::Patched,
                seconds: 3.0,
                detail: None,
                tasks: Vec::new(),
                moved: Vec::new(),
            }],
            soaks: Vec::new(),
            kept_package: None,
            phases: Vec::new(),
        }
    }

    #[test]
    fn a_record_says_what_changed() {
        let lines = report_lines(&report(false));
        for expected in [
            "cluster: demo\n",
            "component: dm-worker\n",
            "package: /tmp/w.tar.gz\n",
            "package size: 1234 bytes\n",
            &format!("package sha256: {}\n", "ab".repeat(32)),
            "package version: v8.5.2 (5d6e7f8)\n",
            &format!("binary sha256: {}\n", "cd".repeat(32)),
            "mode: rolling\n",
            "result: failed\n",
            "message: it failed badly\n",
            "instance 127.0.9.1:8262: patched; version v8.5.1 (1a2b3c4) -> v8.5.2 (5d6e7f8)\n",
        ] {
            assert!(lines.contains(expected), "{expected:?} missing from:\n{lines}");
        }
        let offline = report_lines(&report(true));
        assert!(offline.contains("mode: offline\n"), "{offline}");
        assert!(offline.contains(": swapped (takes effect at restart); version"), "{offline}");
    }

    #[test]
    fn unexecuted_runs_are_recorded_in_tiup_s_format() {
        let dir = tempfile::tempdir().unwrap();
        let run = Unexecuted {
            cluster: "demo".to_owned(),
            result: "aborted",
            exit_code: 1,
            message: "aborted at the prompt: nothing was changed".to_owned(),
            component: Some("dm-worker".to_owned()),
            instances: vec!["127.0.9.1:8262".to_owned()],
            ..Unexecuted::default()
        };
        let argv = ["dm-patch".to_owned(), "patch".to_owned(), "a b".to_owned()];
        record_unexecuted(dir.path(), &argv, &run);
        let records: Vec<_> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(records.len(), 1);
        assert!(records[0].to_string_lossy().ends_with("_dm-patch"));
        let text = fs::read_to_string(&records[0]).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("dm-patch patch a+b"));
        assert!(lines.next().unwrap().starts_with("started: "));
        assert!(text.contains("result: aborted\nexit: 1\n"), "{text}");
        assert!(text.contains("instance 127.0.9.1:8262: not touched\n"), "{text}");
    }
}
