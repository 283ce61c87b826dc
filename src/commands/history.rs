//! `dm-patch history <cluster> [<run-id>]`: the runs against a cluster, from the audit records
//! every run leaves in `$TIUP_HOME/storage/dm/audit/` (see [`crate::engine::audit`]), newest
//! first; one run in full with its ID (the record's name, as `tiup dm audit` shows it).

use std::collections::HashMap;
use std::fs;

use serde::Serialize;

use crate::cli::{GlobalArgs, HistoryArgs};
use crate::error::{ExitStatus, UsageError};
use crate::output::Printer;
use crate::output::table::tiup_table;
use crate::topology::store::Store;

/// The suffix of the records dm-patch writes (TiUP's own have none).
const RECORD_SUFFIX: &str = "_dm-patch";

/// One run, as its audit record tells it.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub id: String,
    pub started: String,
    pub by: String,
    pub command: String,
    pub component: String,
    pub package: Option<String>,
    pub package_sha256: Option<String>,
    pub package_version: Option<String>,
    pub mode: String,
    pub result: String,
    pub message: Option<String>,
    /// `(instance, what happened to it)`, in the record's order.
    pub instances: Vec<InstanceLine>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceLine {
    pub id: String,
    pub outcome: String,
}

pub fn run(
    args: HistoryArgs,
    global: &GlobalArgs,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    let store = Store::locate(global.tiup_home.clone())?;
    // The cluster must exist: a typo should not read as "no history".
    store.load(&args.cluster)?;
    let mut runs = read_runs(&store, &args.cluster);
    if let Some(id) = &args.run_id {
        let Some(run) = runs.into_iter().find(|run| &run.id == id) else {
            return Err(UsageError(format!(
                "no run {id} against cluster '{}' in the audit records; `dm-patch history {}` \
                 lists them",
                args.cluster, args.cluster
            ))
            .into());
        };
        if printer.is_json() {
            printer.json(&run);
        } else {
            printer.result(render_one(&run));
        }
        return Ok(ExitStatus::Success);
    }
    runs.truncate(args.limit.unwrap_or(usize::MAX));
    if printer.is_json() {
        printer.json(&runs);
    } else if runs.is_empty() {
        printer.result(format!("No dm-patch run against cluster '{}' is recorded.", args.cluster));
    } else {
        printer.result(render_list(&runs));
    }
    Ok(ExitStatus::Success)
}

/// What each patched instance of `cluster` would go back to with `dm-patch rollback`: the
/// version it ran before the newest run that installed something on it (by instance ID).
pub fn rollback_versions(runs: &[Run]) -> HashMap<String, String> {
    let mut versions = HashMap::new();
    for run in runs {
        for instance in &run.instances {
            let Some(rest) = instance.outcome.strip_prefix("patched; version ") else {
                continue;
            };
            let before = rest.split(" -> ").next().unwrap_or_default();
            if before != "-" {
                versions.entry(instance.id.clone()).or_insert_with(|| before.to_owned());
            }
        }
    }
    versions
}

/// The binary dm-patch last left installed on each instance of `cluster` (its `short()`
/// version, by instance ID), from the newest record that changed or checked it: what an
/// `--offline` swap put in place, for instance, which runs only from the next restart.
pub fn installed_versions(runs: &[Run]) -> HashMap<String, String> {
    const INSTALLED: [&str; 3] =
        ["patched; version ", "swapped (takes effect at restart); version ", "skipped"];
    let mut versions: HashMap<String, Option<String>> = HashMap::new();
    for run in runs {
        for instance in &run.instances {
            if instance.outcome.starts_with("not ") || versions.contains_key(&instance.id) {
                continue;
            }
            let installed = INSTALLED
                .iter()
                .any(|prefix| instance.outcome.starts_with(prefix))
                .then(|| instance.outcome.split(" -> ").nth(1))
                .flatten()
                .map(|after| after.split(';').next().unwrap_or(after).trim().to_owned())
                .filter(|after| after != "-");
            versions.insert(instance.id.clone(), installed);
        }
    }
    versions.into_iter().filter_map(|(id, version)| Some((id, version?))).collect()
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
            let text = crate::topology::store::read_small_file(&path, RECORD_MAX_BYTES).ok()?;
            let run = parse(name.trim_end_matches(RECORD_SUFFIX), &text)?;
            (text.lines().any(|line| line == format!("cluster: {cluster}"))).then_some(run)
        })
        .collect()
}

/// TiUP's base52 (`0-9`, then consonants, lower case first), read back.
fn base52_value(text: &str) -> u128 {
    const SPACE: &[u8] = b"0123456789bcdfghjkmnpqrstvwxyzBCDFGHJKLMNPQRSTVWXYZ";
    text.bytes().fold(0u128, |value, byte| {
        let digit = SPACE.iter().position(|d| *d == byte).unwrap_or(0) as u128;
        value.saturating_mul(52).saturating_add(digit)
    })
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
            "component" => run.component = value,
            "package" => run.package = Some(value),
            "package sha256" => run.package_sha256 = Some(value),
            "package version" => run.package_version = Some(value),
            "mode" => run.mode = value,
            "result" => run.result = value,
            "message" => run.message = Some(value),
            _ => {
                if let Some(instance) = key.strip_prefix("instance ").filter(|k| !k.contains(' ')) {
                    // Written as the run went, then in full at its end: the last line holds.
                    match run.instances.iter_mut().find(|i| i.id == instance) {
                        Some(seen) => seen.outcome = value,
                        None => run
                            .instances
                            .push(InstanceLine { id: instance.to_owned(), outcome: value }),
                    }
                }
            }
        }
    }
    Some(run)
}

fn render_list(runs: &[Run]) -> String {
    let headers = [
        "ID",
        "Started",
        "By",
        "Command",
        "Component",
        "Package",
        "Result",
        "Instances",
        "Versions",
    ];
    let cells: Vec<Vec<String>> = runs
        .iter()
        .map(|run| {
            vec![
                run.id.clone(),
                run.started.clone(),
                run.by.clone(),
                subcommand(run),
                run.component.clone(),
                package_cell(run),
                run.result.clone(),
                instances_cell(run),
                versions_cell(run),
            ]
        })
        .collect();
    tiup_table(&headers, &cells)
}

/// `patch` or `rollback`: the first word after the program.
fn subcommand(run: &Run) -> String {
    let words: Vec<&str> = run.command.split(' ').collect();
    let known = ["patch", "rollback"];
    words.iter().find(|word| known.contains(word)).unwrap_or(&"-").to_string()
}

/// The distinct version changes of the instances: `v8.5.1 (1a2b3c4) -> v8.5.2 (5d6e7f8)`.
fn versions_cell(run: &Run) -> String {
    let mut changes: Vec<&str> = Vec::new();
    for instance in &run.instances {
        let change = instance.outcome.split("; ").find_map(|part| part.strip_prefix("version "));
        if let Some(change) = change.filter(|c| *c != "- -> -")
            && !changes.contains(&change)
        {
            changes.push(change);
        }
    }
    if changes.is_empty() { "-".to_owned() } else { changes.join(", ") }
}

/// `dm-worker-hotfix.tar.gz (v8.5.2 (5d6e7f8))`.
fn package_cell(run: &Run) -> String {
    let name = run.package.as_deref().map(|path| path.rsplit('/').next().unwrap_or(path));
    match (name, &run.package_version) {
        (Some(name), Some(version)) => format!("{name} ({version})"),
        (Some(name), None) => name.to_owned(),
        (None, _) => "-".to_owned(),
    }
}

/// How many instances ended each way: `2 patched, 1 not reached`.
fn instances_cell(run: &Run) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for instance in &run.instances {
        let outcome = instance.outcome.split(';').next().unwrap_or_default().to_owned();
        match counts.iter_mut().find(|(o, _)| *o == outcome) {
            Some((_, count)) => *count += 1,
            None => counts.push((outcome, 1)),
        }
    }
    if counts.is_empty() {
        return "-".to_owned();
    }
    counts
        .iter()
        .map(|(outcome, count)| format!("{count} {outcome}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_one(run: &Run) -> String {
    let mut out = String::new();
    let mut fact =
        |label: &str, value: &str| out.push_str(&format!("{:<17}{value}\n", format!("{label}:")));
    fact("Run", &run.id);
    fact("Started", &run.started);
    fact("By", &run.by);
    fact("Command", &run.command);
    fact("Component", &run.component);
    fact("Package", run.package.as_deref().unwrap_or("-"));
    fact("Package sha256", run.package_sha256.as_deref().unwrap_or("-"));
    fact("Package version", run.package_version.as_deref().unwrap_or("-"));
    fact("Mode", &run.mode);
    fact("Result", &run.result);
    if let Some(message) = &run.message {
        fact("Message", message);
    }
    if !run.instances.is_empty() {
        let cells: Vec<Vec<String>> =
            run.instances.iter().map(|i| vec![i.id.clone(), i.outcome.clone()]).collect();
        out.push('\n');
        out.push_str(&tiup_table(&["Instance", "Outcome; version before -> after"], &cells));
    }
    out.trim_end().to_owned()
}

/// Undoes Go's `url.QueryEscape` (what TiUP writes on a record's first line).
fn query_unescape(word: &str) -> String {
    let bytes = word.as_bytes();
    let hex = |byte: u8| (byte as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', high, low]) => hex(*high).zip(hex(*low)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, byte) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back() {
        let text = "%2Fusr%2Fbin%2Fdm-patch patch demo %2Ftmp%2Fw+1.tar.gz -R dm-worker\n\
                    started: 2026-12-01T03:00:00Z\nby: ops@bastion\ncluster: demo\n\
                    component: dm-worker\npackage: /tmp/w 1.tar.gz\npackage sha256: ab\n\
                    package version: v8.5.2 (5d6e7f8)\nmode: rolling\nresult: Failed\n\
                    message: it broke\ninstance 127.0.9.1:8262: patched; version v8.5.1 (1a2b3c4) -> v8.5.2 (5d6e7f8)\n\
                    instance 127.0.9.1:8262 old binary sha256: cd\n\
                    instance 127.0.9.2:8262: not reached; version - -> -\n";
        let run = parse("7Yq", text).unwrap();
        assert_eq!(run.command, "/usr/bin/dm-patch patch demo /tmp/w 1.tar.gz -R dm-worker");
        assert_eq!(run.by, "ops@bastion");
        assert_eq!(run.result, "Failed");
        assert_eq!(run.instances.len(), 2);
        assert_eq!(instances_cell(&run), "1 patched, 1 not reached");
        assert_eq!(versions_cell(&run), "v8.5.1 (1a2b3c4) -> v8.5.2 (5d6e7f8)");
        assert_eq!(subcommand(&run), "patch");
        assert_eq!(package_cell(&run), "w 1.tar.gz (v8.5.2 (5d6e7f8))");
    }

    #[test]
    fn record_names_sort_by_their_base52_time() {
        assert!(base52_value("h4txQDC5rSQ") > base52_value("h4txQDyV1rP"));
        assert_eq!(base52_value("10"), 52);
    }

    #[test]
    fn query_escapes_come_undone() {
        assert_eq!(query_unescape("a%2Fb+c%25"), "a/b c%");
        assert_eq!(query_unescape("50%"), "50%");
    }
}
