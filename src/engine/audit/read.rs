//! The audit records read back, as typed runs: for `history`, and for `display` (what each
//! instance runs, and what `rollback` would put back). Records written by older dm-patch
//! versions read the same way.

use std::collections::HashMap;
use std::fs;

use serde::Serialize;

use super::format::{InstanceEntry, RECORD_SUFFIX, base52_value, query_unescape, result_word};
use crate::engine::report::Outcome;
use crate::topology::store::{Store, read_small_file};

/// One run, as its audit record tells it.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// The record's name without its suffix, as `tiup dm audit` shows it.
    pub id: String,
    pub started: String,
    pub by: String,
    pub command: String,
    pub cluster: String,
    pub component: String,
    pub package: Option<String>,
    pub package_sha256: Option<String>,
    pub package_version: Option<String>,
    pub mode: String,
    /// `success`, `failed`, `needs-attention`, `refused`, `aborted`..., or `unfinished` for a
    /// run that never wrote its end (killed).
    pub result: String,
    pub message: Option<String>,
    /// How each instance ended, in the record's order.
    pub instances: Vec<InstanceEntry>,
}

impl Run {
    /// `patch` or `rollback`: the first of those words on its command line.
    pub fn subcommand(&self) -> &'static str {
        let words = self.command.split(' ');
        words
            .filter_map(|word| ["patch", "rollback"].into_iter().find(|known| *known == word))
            .next()
            .unwrap_or("-")
    }
}

/// More than any audit record holds (a record is some lines per instance).
const RECORD_MAX_BYTES: u64 = 4 << 20;

/// Every record of `cluster`, newest first.
pub fn read_runs(store: &Store, cluster: &str) -> Vec<Run> {
    let Ok(entries) = fs::read_dir(store.audit_dir()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(RECORD_SUFFIX))
        .collect();
    // A record's name is its creation time in nanoseconds, in TiUP's base52.
    names.sort_by_key(|name| std::cmp::Reverse(base52_value(name.trim_end_matches(RECORD_SUFFIX))));
    names
        .into_iter()
        .filter_map(|name| {
            // Only regular files, and none larger than a record ever is: a FIFO or a link to
            // /dev/zero dropped in the audit dir must not hold `history` (or `display`).
            let path = store.audit_dir().join(&name);
            let text = read_small_file(&path, RECORD_MAX_BYTES).ok()?;
            parse(name.trim_end_matches(RECORD_SUFFIX), &text)
        })
        .filter(|run| run.cluster == cluster)
        .collect()
}

/// A record: the command line (URL-escaped words), then `key: value` lines.
fn parse(id: &str, text: &str) -> Option<Run> {
    let mut lines = text.lines();
    let command: Vec<String> = lines.next()?.split(' ').map(query_unescape).collect();
    let mut run = Run {
        id: id.to_owned(),
        started: String::new(),
        by: "-".to_owned(),
        command: command.join(" "),
        cluster: String::new(),
        component: "-".to_owned(),
        package: None,
        package_sha256: None,
        package_version: None,
        mode: "-".to_owned(),
        result: "unfinished".to_owned(),
        message: None,
        instances: Vec::new(),
    };
    for line in lines {
        let Some((key, value)) = line.split_once(": ") else { continue };
        let value = value.to_owned();
        match key {
            "started" => run.started = value,
            "by" => run.by = value,
            "cluster" => run.cluster = value,
            "component" => run.component = value,
            "package" => run.package = Some(value),
            "package sha256" => run.package_sha256 = Some(value),
            "package version" => run.package_version = Some(value),
            "mode" => run.mode = value,
            "result" => run.result = result_word(&value),
            "message" => run.message = Some(value),
            _ => {
                let Some(id) = key.strip_prefix("instance ").filter(|k| !k.contains(' ')) else {
                    continue;
                };
                let Some(entry) = InstanceEntry::parse(id, &value) else { continue };
                // Written as the run went, then in full at its end: the last line holds.
                match run.instances.iter_mut().find(|seen| seen.id == id) {
                    Some(seen) => *seen = entry,
                    None => run.instances.push(entry),
                }
            }
        }
    }
    Some(run)
}

/// What each patched instance would go back to with `dm-patch rollback`: the version it ran
/// before the newest run that patched it (by instance ID).
pub fn rollback_versions(runs: &[Run]) -> HashMap<String, String> {
    let mut versions = HashMap::new();
    for run in runs {
        for entry in run.instances.iter().filter(|e| e.outcome == Outcome::Patched && !e.swapped) {
            if let Some(before) = &entry.version_before {
                versions.entry(entry.id.clone()).or_insert_with(|| before.clone());
            }
        }
    }
    versions
}

/// The binary dm-patch last left installed on each instance (its `short()` version, by
/// instance ID), from the newest record that changed or checked it: what an `--offline` swap
/// put in place, for instance, which runs only from the next restart.
pub fn installed_versions(runs: &[Run]) -> HashMap<String, String> {
    let mut versions: HashMap<String, Option<String>> = HashMap::new();
    for run in runs {
        for entry in &run.instances {
            if entry.outcome == Outcome::NotReached || versions.contains_key(&entry.id) {
                continue;
            }
            let installed = matches!(entry.outcome, Outcome::Patched | Outcome::Skipped)
                .then(|| entry.version_after.clone())
                .flatten();
            versions.insert(entry.id.clone(), installed);
        }
    }
    versions.into_iter().filter_map(|(id, version)| Some((id, version?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as an older dm-patch wrote it (Rust's variant names for the result).
    const OLDER: &str = "%2Fusr%2Fbin%2Fdm-patch patch demo %2Ftmp%2Fw+1.tar.gz -R dm-worker\n\
        started: 2026-12-01T03:00:00Z\nby: ops@bastion\ncluster: demo\n\
        component: dm-worker\npackage: /tmp/w 1.tar.gz\npackage sha256: ab\n\
        package version: v8.5.2 (5d6e7f8)\nmode: rolling\nresult: PreflightFailed\n\
        message: it broke\n\
        instance 127.0.9.1:8262: patched; version v8.5.1 (1a2b3c4) -> v8.5.2 (5d6e7f8)\n\
        instance 127.0.9.1:8262 old binary sha256: cd\n\
        instance 127.0.9.2:8262: not reached; version - -> -\n\
        instance 127.0.9.3:8262: failed, rolled back; version v8.5.1 (1a2b3c4) -> -; it; broke\n";

    #[test]
    fn a_record_of_an_older_version_reads_back() {
        let run = parse("7Yq", OLDER).unwrap();
        assert_eq!(run.command, "/usr/bin/dm-patch patch demo /tmp/w 1.tar.gz -R dm-worker");
        assert_eq!((run.by.as_str(), run.cluster.as_str()), ("ops@bastion", "demo"));
        assert_eq!(run.result, "preflight-failed");
        assert_eq!(run.subcommand(), "patch");
        let outcomes: Vec<Outcome> = run.instances.iter().map(|i| i.outcome).collect();
        assert_eq!(outcomes, [Outcome::Patched, Outcome::NotReached, Outcome::RolledBack]);
        assert_eq!(run.instances[2].detail.as_deref(), Some("it; broke"));
        let back = rollback_versions(std::slice::from_ref(&run));
        assert_eq!(back.get("127.0.9.1:8262").map(String::as_str), Some("v8.5.1 (1a2b3c4)"));
        let installed = installed_versions(&[run]);
        assert_eq!(installed.get("127.0.9.1:8262").map(String::as_str), Some("v8.5.2 (5d6e7f8)"));
        assert_eq!(installed.len(), 1);
    }

    #[test]
    fn the_last_line_of_an_instance_holds() {
        let text = "dm-patch patch demo p.tar.gz\ncluster: demo\n\
                    instance a:1: patched\ninstance a:1: patched; version v1 -> v2\n";
        let run = parse("x", text).unwrap();
        assert_eq!(run.result, "unfinished", "killed before its end");
        assert_eq!(run.instances.len(), 1);
        assert_eq!(run.instances[0].version_after.as_deref(), Some("v2"));
    }
}
