//! Every `patch` or `rollback` run that could change something leaves an audit record. The
//! engine records the runs it executes; [`record`] records the others: refused for bad input
//! (exit 2), refused by a check the command makes (a rollback target that cannot be fetched),
//! or aborted at the prompt. Dry runs change nothing and are not recorded.
//!
//! The command tells its [`Notes`] what it learned as it went, and hands them to [`record`]
//! when it ends.

use crate::cli::GlobalArgs;
use crate::engine::audit::{Unexecuted, record_unexecuted};
use crate::engine::report::PackageReport;
use crate::error::{ExitStatus, exit_status_of};
use crate::plan::Plan;
use crate::topology::store::Store;

/// What a command learned before it ended, for the record of a run the engine did not execute.
#[derive(Debug, Default)]
pub struct Notes {
    planned: Option<Unexecuted>,
    aborted: bool,
    /// The engine ran, and wrote the record itself.
    executed: bool,
}

impl Notes {
    /// The plan is made: the package is checked and the instances are chosen.
    pub fn planned(&mut self, plan: &Plan) {
        self.planned = Some(Unexecuted {
            cluster: plan.cluster.clone(),
            package: Some(PackageReport::of(&plan.package)),
            component: Some(plan.component.component().to_owned()),
            offline: plan.strategy.is_offline(),
            overwrite: plan.overwrite,
            instances: plan.instances.iter().map(|i| i.id.clone()).collect(),
            ..Unexecuted::default()
        });
    }

    /// The operator said no at the prompt.
    pub fn aborted(&mut self) {
        self.aborted = true;
    }

    /// The engine executed the plan: its record is written.
    pub fn executed(&mut self) {
        self.executed = true;
    }
}

/// Runs `command`, a change to `cluster` (a dry run changes nothing), then records it unless
/// the engine did.
pub async fn recorded(
    global: &GlobalArgs,
    cluster: String,
    dry_run: bool,
    command: impl AsyncFnOnce(&mut Notes) -> anyhow::Result<ExitStatus>,
) -> anyhow::Result<ExitStatus> {
    let mut notes = Notes::default();
    let result = command(&mut notes).await;
    if !dry_run {
        record(global, &cluster, notes, &result);
    }
    result
}

/// Records a run of `cluster` that ended with `result`, unless the engine already did.
fn record(global: &GlobalArgs, cluster: &str, notes: Notes, result: &anyhow::Result<ExitStatus>) {
    if notes.executed {
        return;
    }
    let (result, exit, message) = match result {
        Ok(status) if notes.aborted => {
            ("aborted", *status, "aborted at the prompt; nothing was changed".to_owned())
        }
        // Nothing was asked of the cluster (a dry run ends here too, and is not recorded).
        Ok(_) => return,
        Err(err) => {
            let status = exit_status_of(err);
            let result = if status == ExitStatus::BadInput { "refused" } else { "failed" };
            let message = crate::one_line(err);
            // Every error before the engine runs changes nothing; most say so already.
            let message = if message.ends_with("nothing was changed") {
                message
            } else {
                format!("{message}; nothing was changed")
            };
            (result, status, message)
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
