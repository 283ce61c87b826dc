//! The plan as an operator reads it before saying yes (and as `--dry-run` prints it).

use indicatif::HumanBytes;

use super::{Printer, Style, table::tiup_table};
use crate::plan::Plan;

pub fn render_plan(plan: &Plan, printer: &Printer) -> String {
    let comp = plan.component.component();
    let mut out = String::new();
    let headline =
        format!("Patch {comp} of cluster '{}' (version {})", plan.cluster, plan.cluster_version);
    out.push_str(&printer.paint(&headline, Style::Bold));
    out.push('\n');
    out.push_str(&format!(
        "Package:  {} ({}, sha256 {})\n",
        plan.package.path.display(),
        HumanBytes(plan.package.size),
        plan.package.sha256
    ));
    let mode = match (plan.strategy.is_offline(), plan.leader.as_deref()) {
        (true, _) => "offline: swap binaries only; nothing is stopped, started or called; a \
                       running instance keeps its old binary until its next restart"
            .to_owned(),
        (false, Some(leader)) => {
            format!("rolling, one instance at a time (dm-master leader: {leader})")
        }
        (false, None) => "rolling, one instance at a time".to_owned(),
    };
    out.push_str(&format!("Mode:     {mode}\n"));
    if let Some(soak) = plan.soak_seconds {
        let canaries: Vec<&str> =
            plan.instances.iter().filter(|i| i.canary).map(|i| i.id.as_str()).collect();
        let when = match canaries.as_slice() {
            [] => "after each instance".to_owned(),
            ids => format!("after the canary phase ({}), before the rest", ids.join(", ")),
        };
        out.push_str(&format!(
            "Soak:     {soak}s {when}: the instances on the package stay healthy and every \
             subtask keeps replicating, or what this run patched is put back\n"
        ));
    }
    if plan.overwrite {
        out.push_str(&format!(
            "Keep:     patch/{comp}-<sha1[:7]>.tar.gz, linked as patch/{comp}.tar.gz \
             (--overwrite)\n"
        ));
    }
    out.push('\n');

    let rows: Vec<Vec<String>> = plan
        .instances
        .iter()
        .enumerate()
        .map(|(n, step)| {
            let role = if step.marked_patched {
                format!("{} (patched)", step.role)
            } else {
                step.role.to_string()
            };
            let mut order = match &step.source {
                Some(source) => format!("{} [source {source}]", step.reason),
                None => step.reason.to_owned(),
            };
            if step.canary {
                order.insert_str(0, "canary; ");
            }
            vec![(n + 1).to_string(), step.id.clone(), role, step.deploy_dir.clone(), order]
        })
        .collect();
    out.push_str(&tiup_table(&["#", "ID", "Role", "Deploy Dir", "Order"], &rows));
    out.push_str("\n\nOn each instance: back up bin to bin.old.");
    out.push_str(&plan.cluster_version);
    out.push_str(" (kept if present), unpack the package next to bin,\n");
    if plan.strategy.is_offline() {
        out.push_str("swap the binary in place; the services stay as they are.\n");
    } else {
        out.push_str(
            "stop the service, swap the binary, start it, and wait until it is healthy on the new\n\
             version and every migration subtask runs again; on failure the previous binary is\n\
             put back and the roll stops. A subtask that fails on a worker running the package\n\
             proves it bad: every instance this run patched is put back.\n",
        );
    }
    out
}

/// What the operator must know before saying yes, on stderr (also with `--yes`).
pub fn warn_before_confirm(plan: &Plan, printer: &Printer) {
    if plan.strategy.is_offline() {
        printer.warning(
            "with --offline the new binaries take effect only at the next restart of each \
             instance: a running instance keeps running its old binary until then",
        );
    }
}
