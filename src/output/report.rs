//! The closing summary of a patch run: a table on a terminal, one JSON document for scripts.

use serde_json::Value;

use super::{Printer, Style, table::tiup_table};
use crate::engine::report::{InstanceReport, Outcome, Report, RunResult};
use crate::plan::Action;
use crate::topology::Cluster;

/// What the summary says of an instance's outcome. With `--offline` nothing is restarted, so a
/// swapped binary runs only from the instance's next restart: it says so, rather than claim a
/// version the instance may not run.
/// A rollback speaks of rolling back.
pub fn outcome_label(report: &Report, instance: &InstanceReport) -> &'static str {
    match (instance.outcome, report.action) {
        (Outcome::Patched, _) if report.offline => Outcome::SWAPPED_LABEL,
        (Outcome::Patched, Action::Rollback) => "rolled back",
        (Outcome::Skipped, Action::Rollback) => "skipped (already on its rollback target)",
        (outcome, _) => outcome.label(),
    }
}

/// When the new binary runs: `now` (restarted on it and checked), `next-restart` (`--offline`:
/// installed, not restarted), or nothing (the instance does not have it).
fn takes_effect(report: &Report, instance: &InstanceReport) -> Option<&'static str> {
    match instance.outcome {
        Outcome::Patched | Outcome::Skipped if report.offline => Some("next-restart"),
        Outcome::Patched | Outcome::Skipped => Some("now"),
        _ => None,
    }
}

/// The result on stdout (the table, or the JSON document); why a run did not succeed, every
/// problem found, and where to look for a failed instance, on stderr.
pub fn render(report: &Report, cluster: &Cluster, printer: &Printer) {
    for problem in &report.problems {
        printer.diagnostic(format!("  - {problem}"));
    }
    if report.result != RunResult::Success {
        let message = report.message.as_deref().unwrap_or("The patch did not finish.");
        printer.diagnostic(format!("{} {message}", printer.paint_stderr("error:")));
    }
    for (id, log) in failed_instance_logs(report, cluster) {
        printer.diagnostic(format!("  {id}: see its log {log}"));
    }
    if printer.is_json() {
        printer.json(&json(report));
        return;
    }
    let rows: Vec<Vec<String>> = report
        .instances
        .iter()
        .map(|instance| {
            let old =
                instance.old_version.as_ref().map(|v| v.short()).unwrap_or_else(|| "-".to_owned());
            let new =
                instance.new_version.as_ref().map(|v| v.short()).unwrap_or_else(|| "-".to_owned());
            let style = match instance.outcome {
                Outcome::Patched | Outcome::Skipped => Style::Good,
                Outcome::NotReached => Style::Dim,
                Outcome::FailedUnchanged | Outcome::RolledBack => Style::Warn,
                Outcome::NeedsAttention => Style::Bad,
            };
            vec![
                instance.id.clone(),
                instance.role.to_string(),
                format!("{old} -> {new}"),
                printer.paint(outcome_label(report, instance), style),
                format!("{:.1}s", instance.seconds),
            ]
        })
        .collect();
    // Offline, the versions are those of the binaries installed, not of what runs.
    let version = if report.offline { "Binary" } else { "Version" };
    printer.result(tiup_table(&["Instance", "Role", version, "Result", "Time"], &rows));
    for soak in &report.soaks {
        let failure = soak.failure.as_deref().map(|f| format!(": {f}")).unwrap_or_default();
        printer.info(format!(
            "Soak of {} ({} look(s) over {:.0}s): {}{failure}",
            soak.canaries.join(", "),
            soak.looks,
            soak.watched_seconds,
            soak.result
        ));
    }
    if let Some(kept) = &report.kept_package {
        printer.info(format!("Package kept as {kept}"));
    }
    if report.result == RunResult::Success {
        let headline = if report.offline {
            format!(
                "Swapped the {} binary of cluster '{}' in {:.1}s; it runs from each instance's \
                 next restart.",
                report.component, report.cluster, report.seconds
            )
        } else {
            format!(
                "{} cluster '{}' ({}) in {:.1}s.",
                report.action.done(),
                report.cluster,
                report.component,
                report.seconds
            )
        };
        printer.result(printer.paint(&headline, Style::Good));
    }
}

/// The report as JSON, each instance with `takes_effect` beside its outcome.
fn json(report: &Report) -> Value {
    let mut value = serde_json::to_value(report).unwrap_or(Value::Null);
    if let Some(document) = value.as_object_mut() {
        document.insert("schema_version".to_owned(), super::SCHEMA_VERSION.into());
    }
    if let Some(instances) = value.get_mut("instances").and_then(Value::as_array_mut) {
        for (row, instance) in instances.iter_mut().zip(&report.instances) {
            if let Some(row) = row.as_object_mut() {
                let effect = takes_effect(report, instance).map(str::to_owned);
                row.insert("takes_effect".to_owned(), effect.map_or(Value::Null, Value::String));
            }
        }
    }
    value
}

/// For each instance that failed, where its log is: `<log_dir>/<comp>.log on <host>` (and its
/// stderr log beside it), as TiUP's run scripts write them.
fn failed_instance_logs(report: &Report, cluster: &Cluster) -> Vec<(String, String)> {
    report
        .instances
        .iter()
        .filter(|i| {
            matches!(
                i.outcome,
                Outcome::FailedUnchanged | Outcome::RolledBack | Outcome::NeedsAttention
            )
        })
        .filter_map(|failed| {
            let instance = cluster.instances.iter().find(|i| i.id() == failed.id)?;
            let comp = instance.role.component();
            Some((
                failed.id.clone(),
                format!(
                    "{dir}/{comp}.log (and {dir}/{comp}_stderr.log) on {host}",
                    dir = instance.log_dir,
                    host = instance.ssh_host
                ),
            ))
        })
        .collect()
}
