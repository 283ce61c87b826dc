//! The closing summary of a patch run: a table on a terminal, one JSON document for scripts.

use super::{Printer, Style, table::tiup_table};
use crate::engine::report::{Outcome, Report, RunResult};

pub fn render(report: &Report, printer: &Printer) {
    if printer.is_json() {
        printer.json(report);
        return;
    }
    let rows: Vec<Vec<String>> = report
        .instances
        .iter()
        .map(|instance| {
            let old = instance
                .old_version
                .as_ref()
                .map(|v| v.short())
                .unwrap_or_else(|| "-".to_owned());
            let new = instance
                .new_version
                .as_ref()
                .map(|v| v.short())
                .unwrap_or_else(|| "-".to_owned());
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
                printer.paint(instance.outcome.label(), style),
                format!("{:.1}s", instance.seconds),
            ]
        })
        .collect();
    printer.result(tiup_table(
        &["Instance", "Role", "Version", "Result", "Time"],
        &rows,
    ));
    for problem in &report.problems {
        printer.result(format!("  - {problem}"));
    }
    if let Some(kept) = &report.kept_package {
        printer.info(format!("Package kept as {kept}"));
    }
    let headline = match report.result {
        RunResult::Success => printer.paint(
            &format!(
                "Patched cluster '{}' ({}) in {:.1}s.",
                report.cluster, report.component, report.seconds
            ),
            Style::Good,
        ),
        _ => printer.paint(
            report
                .message
                .as_deref()
                .unwrap_or("The patch did not finish."),
            Style::Bad,
        ),
    };
    printer.result(headline);
}
