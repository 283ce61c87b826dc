//! `dm-patch history <cluster> [<run-id>]`: the runs against a cluster, from the audit records
//! every run leaves in `$TIUP_HOME/storage/dm/audit/` (see [`crate::engine::audit`]), newest
//! first; one run in full with its ID (the record's name, as `tiup dm audit` shows it).

use serde::Serialize;

use crate::cli::{GlobalArgs, HistoryArgs};
use crate::engine::audit::read::{Run, read_runs};
use crate::engine::report::Outcome;
use crate::error::{ExitStatus, UsageError};
use crate::output::table::tiup_table;
use crate::output::{Printer, SCHEMA_VERSION};
use crate::topology::store::Store;

/// `history --format json`: the runs, newest first.
#[derive(Serialize)]
struct RunsDocument<'a> {
    schema_version: u32,
    cluster: &'a str,
    runs: &'a [Run],
}

/// `history <cluster> <run-id> --format json`: one run.
#[derive(Serialize)]
struct RunDocument<'a> {
    schema_version: u32,
    #[serde(flatten)]
    run: &'a Run,
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
            printer.json(&RunDocument { schema_version: SCHEMA_VERSION, run: &run });
        } else {
            printer.result(render_one(&run));
        }
        return Ok(ExitStatus::Success);
    }
    runs.truncate(args.limit.unwrap_or(usize::MAX));
    if printer.is_json() {
        let cluster = &args.cluster;
        printer.json(&RunsDocument { schema_version: SCHEMA_VERSION, cluster, runs: &runs });
    } else if runs.is_empty() {
        printer.result(format!("No dm-patch run against cluster '{}' is recorded.", args.cluster));
    } else {
        printer.result(render_list(&runs));
    }
    Ok(ExitStatus::Success)
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
                run.subcommand().to_owned(),
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

/// The distinct version changes of the instances: `v8.5.1 (1a2b3c4) -> v8.5.2 (5d6e7f8)`.
fn versions_cell(run: &Run) -> String {
    let mut changes: Vec<String> = Vec::new();
    for entry in &run.instances {
        let (before, after) = (&entry.version_before, &entry.version_after);
        if before.is_none() && after.is_none() {
            continue;
        }
        let known = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        let change = format!("{} -> {}", known(before), known(after));
        if !changes.contains(&change) {
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
    for entry in &run.instances {
        // A rollback speaks of rolling back, as its summary did.
        let rolled_back =
            run.subcommand() == "rollback" && entry.outcome == Outcome::Patched && !entry.swapped;
        let outcome = if rolled_back { "rolled back" } else { entry.label() }.to_owned();
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
            run.instances.iter().map(|i| vec![i.id.clone(), i.to_value()]).collect();
        out.push('\n');
        out.push_str(&tiup_table(&["Instance", "Outcome; version before -> after"], &cells));
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_reads_as_rows() {
        let text = "dm-patch patch demo /tmp/w.tar.gz\ncluster: demo\n\
                    package: /tmp/w 1.tar.gz\npackage version: v8.5.2 (5d6e7f8)\nresult: failed\n\
                    instance a:1: patched; version v8.5.1 (1a2b3c4) -> v8.5.2 (5d6e7f8)\n\
                    instance b:1: not reached; version - -> -\n";
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("storage/dm");
        std::fs::create_dir_all(store_dir.join("audit")).unwrap();
        std::fs::write(store_dir.join("audit/7Yq_dm-patch"), text).unwrap();
        let store = Store::locate(Some(dir.path().to_owned())).unwrap();
        let run = read_runs(&store, "demo").remove(0);
        assert_eq!(instances_cell(&run), "1 patched, 1 not reached");
        let rollback = Run { command: "dm-patch rollback demo".to_owned(), ..run.clone() };
        assert_eq!(instances_cell(&rollback), "1 rolled back, 1 not reached");
        assert_eq!(versions_cell(&run), "v8.5.1 (1a2b3c4) -> v8.5.2 (5d6e7f8)");
        assert_eq!(package_cell(&run), "w 1.tar.gz (v8.5.2 (5d6e7f8))");
    }
}
