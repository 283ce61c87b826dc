//! Every `patch` run that could change something leaves an audit record. The engine records
//! the runs it executes; this wrapper records the others: refused for bad input (exit 2),
//! refused by a check the command makes, or aborted at the prompt. Dry runs change nothing and
//! are not recorded.
//!
//! `commands::patch` tells this module what it learned as it went ([`planned`], [`aborted`]);
//! a process runs one command, so that is kept in one place for the process.

use std::sync::Mutex;

use crate::cli::{GlobalArgs, PatchArgs};
use crate::engine::audit::{Unexecuted, record_unexecuted};
use crate::engine::report::PackageReport;
use crate::error::{ExitStatus, exit_status_of};
use crate::output::Printer;
use crate::plan::Plan;
use crate::topology::store::Store;

/// What the patch command learned before it ended.
#[derive(Default)]
struct Notes {
    planned: Option<Unexecuted>,
    aborted: bool,
}

static NOTES: Mutex<Option<Notes>> = Mutex::new(None);

fn with_notes(change: impl FnOnce(&mut Notes)) {
    let mut notes = NOTES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    change(notes.get_or_insert_with(Notes::default));
}

/// The plan is made: the package is checked and the instances are chosen.
pub fn planned(plan: &Plan) {
    let facts = Unexecuted {
        cluster: plan.cluster.clone(),
        package: Some(PackageReport {
            path: plan.package.path.display().to_string(),
            sha256: plan.package.sha256.clone(),
            size: plan.package.size,
            version: None,
            binary_sha256: plan.package.entry_sha256.clone(),
        }),
        component: Some(plan.component.component().to_owned()),
        offline: plan.offline,
        overwrite: plan.overwrite,
        instances: plan.instances.iter().map(|i| i.id.clone()).collect(),
        ..Unexecuted::default()
    };
    with_notes(|notes| notes.planned = Some(facts));
}

/// The operator said no at the prompt.
pub fn aborted() {
    with_notes(|notes| notes.aborted = true);
}

/// `dm-patch patch`, with its audit record when the engine does not write one.
pub async fn patch(
    args: PatchArgs,
    global: &GlobalArgs,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    let dry_run = args.dry_run;
    let cluster = args.cluster.clone();
    let result = super::patch::run(args, global, printer).await;
    if !dry_run {
        record(global, &cluster, &result);
    }
    result
}

fn record(global: &GlobalArgs, cluster: &str, result: &anyhow::Result<ExitStatus>) {
    let notes = NOTES.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
    let notes = notes.unwrap_or_default();
    let (result, exit, message) = match result {
        Ok(status) if notes.aborted => {
            ("Aborted", *status, "aborted at the prompt; nothing was changed".to_owned())
        }
        // The engine ran, and wrote the record.
        Ok(_) => return,
        Err(err) => {
            let status = exit_status_of(err);
            let result = if status == ExitStatus::BadInput { "Refused" } else { "Failed" };
            (result, status, format!("{}; nothing was changed", crate::one_line(err)))
        }
    };
    // Only in an existing TiUP store: a mistyped --tiup-home gets no audit directory.
    let Ok(store) = Store::locate(global.tiup_home.clone()) else { return };
    if !store.home().join("storage").join("dm").is_dir() {
        return;
    }
    let mut run = notes.planned.unwrap_or_default();
    if run.cluster.is_empty() {
        run.cluster = cluster.to_owned();
    }
    run.result = result;
    run.exit_code = exit.code();
    run.message = message;
    let command_line: Vec<String> = std::env::args().collect();
    record_unexecuted(&store.audit_dir(), &command_line, &run);
}
