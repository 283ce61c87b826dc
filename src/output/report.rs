//! The closing summary of a patch run: a table on a terminal, one JSON document for scripts.

use super::{Printer, Style, table::tiup_table};
use crate::engine::report::{Outcome, Report, RunResult};

/// The result on stdout (the table, or the JSON document); why a run did not succeed, and
/// every problem found, on stderr.
pub fn render(report: &Report, printer: &Printer) {
    for problem in &report.problems {
        printer.diagnostic(format!("  - {problem}"));
    }
    if report.result != RunResult::Success {
        let message = report.message.as_deref().unwrap_or("The patch did not finish.");
        printer.diagnostic(format!("{} {message}", printer.paint_stderr("error:")));
    }
    if printer.is_json() {
        printer.json(report);
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
                printer.paint(instance.outcome.label(), style),
                format!("{:.1}s", instance.seconds),
            ]
        })
        .collect();
    printer.result(tiup_table(&["Instance", "Role", "Version", "Result", "Time"], &rows));
    if let Some(kept) = &report.kept_package {
        printer.info(format!("Package kept as {kept}"));
    }
    if report.result == RunResult::Success {
        let headline = format!(
            "Patched cluster '{}' ({}) in {:.1}s.",
            report.cluster, report.component, report.seconds
        );
        printer.result(printer.paint(&headline, Style::Good));
    }
}
