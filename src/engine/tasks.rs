//! The task gate: a patch never leaves a migration task paused.
//!
//! Before the roll, every dm-worker of the cluster says which subtasks it runs and in what
//! stage. A subtask already Paused stops the run before anything changes (the patch must not be
//! blamed for, or hide, an existing failure), unless the operator forces it. After each restart,
//! every (task, source) that ran before must run again on some worker (or have finished) before
//! the roll goes on; one that turns Paused fails the instance at once, with DM's reason, and is
//! blamed on the build of the worker that runs it now (see [`super::judge`]): on a worker that
//! runs the package, it proves the package bad.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use futures_util::future::join_all;

use super::judge::{self, Judging, Suspects, Verdict};
use crate::dm::client::DmClient;
use crate::dm::health::Readiness;
use crate::dm::tasks::{Subtask, TaskStage};
use crate::topology::Role;

/// What the roll must keep true of the cluster's tasks, and what it saw after each instance.
pub struct TaskGate {
    /// Every dm-worker of the cluster: a source may run on any of them.
    workers: Vec<String>,
    /// Every dm-master, for query-status.
    masters: Vec<String>,
    /// What the roll restarts: a worker's build runs the subtasks of its source; a master's
    /// build schedules them all.
    component: Role,
    /// (task, source) running (or finished) before the roll.
    expected: BTreeSet<(String, String)>,
    /// Per instance ID, the subtasks seen once the gate passed after its restart.
    checked: Mutex<HashMap<String, Vec<Subtask>>>,
    /// The workers (member names) that run the package now.
    on_package: Mutex<BTreeSet<String>>,
    /// The failure that ended the last wait, if one did.
    failure: Mutex<Option<TaskFailure>>,
    /// The first failure that proved the package bad: from then on it is put back.
    proven_bad: Mutex<Option<TaskFailure>>,
}

/// A subtask found paused, with DM's reason when it gives one.
#[derive(Debug, Clone)]
pub struct PausedSubtask {
    pub subtask: Subtask,
    pub error: Option<String>,
}

impl PausedSubtask {
    /// One line: which task, where, and why.
    pub fn describe(&self) -> String {
        self.describe_with("")
    }

    /// [`PausedSubtask::describe`] with `about` said of the worker.
    fn describe_with(&self, about: &str) -> String {
        let why = self.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        format!("{} is Paused on worker {}{about}{why}", self.subtask.name(), self.subtask.worker)
    }
}

/// A subtask that failed during the roll, and whether that proves the package bad.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .paused.describe_with(if *.against_package { ", which runs the package" } else { ", which does not run the package" }))]
pub struct TaskFailure {
    pub paused: PausedSubtask,
    /// It failed on a worker that runs the package (or under a master on it).
    pub against_package: bool,
}

impl TaskGate {
    /// Asks every worker for its subtasks: the gate, and the subtasks already paused.
    pub async fn survey(
        client: &DmClient,
        workers: Vec<String>,
        masters: Vec<String>,
        component: Role,
    ) -> (TaskGate, Vec<PausedSubtask>) {
        let now = all_subtasks(client, &workers).await;
        let expected =
            now.iter().filter(|s| s.stage.is_healthy()).map(|s| (s.task.clone(), s.source.clone()));
        let gate = TaskGate {
            expected: expected.collect(),
            workers,
            masters,
            component,
            checked: Mutex::new(HashMap::new()),
            on_package: Mutex::new(BTreeSet::new()),
            failure: Mutex::new(None),
            proven_bad: Mutex::new(None),
        };
        let mut paused = Vec::new();
        for subtask in now.into_iter().filter(|s| s.stage == TaskStage::Paused) {
            let error = client.subtask_error(&gate.masters, &subtask.task, &subtask.source).await;
            paused.push(PausedSubtask { subtask, error });
        }
        (gate, paused)
    }

    /// Whether it has anything to watch.
    pub fn is_empty(&self) -> bool {
        self.expected.is_empty()
    }

    /// The worker `name` runs the package from now on (or, `false`, no longer does).
    pub fn runs_package(&self, name: &str, runs: bool) {
        let mut on_package = self.on_package.lock().unwrap_or_else(|p| p.into_inner());
        if runs {
            on_package.insert(name.to_owned());
        } else {
            on_package.remove(name);
        }
    }

    /// One look after `id` restarted: ready when every expected subtask runs again (recorded
    /// for `id`); failed as soon as one is paused (see [`judge::judge`] for whom it blames,
    /// and [`TaskGate::take_failure`]).
    pub async fn look(&self, client: &DmClient, id: &str, judging: Judging) -> Readiness {
        let now = all_subtasks(client, &self.workers).await;
        let on_package = self.on_package.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let suspects = match self.component {
            Role::Master => Suspects::Everyone,
            Role::Worker => Suspects::Workers(&on_package),
        };
        let (subtask, against_package) = match judge::judge(&self.expected, &now, suspects, judging)
        {
            Verdict::Healthy => {
                let seen: Vec<Subtask> = now
                    .into_iter()
                    .filter(|s| self.expected.contains(&(s.task.clone(), s.source.clone())))
                    .collect();
                let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
                checked.insert(id.to_owned(), seen);
                return Readiness::Ready;
            }
            Verdict::Waiting(why) => return Readiness::Waiting(why),
            Verdict::AgainstPackage(subtask) => (subtask, true),
            Verdict::Elsewhere(subtask) => (subtask, false),
        };
        let error = client.subtask_error(&self.masters, &subtask.task, &subtask.source).await;
        let failure = TaskFailure { paused: PausedSubtask { subtask, error }, against_package };
        let said = failure.to_string();
        if against_package {
            let mut proven_bad = self.proven_bad.lock().unwrap_or_else(|p| p.into_inner());
            proven_bad.get_or_insert_with(|| failure.clone());
        }
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(failure);
        Readiness::Failed(said)
    }

    /// The failure that ended the last wait on [`TaskGate::look`], if one did.
    pub fn take_failure(&self) -> Option<TaskFailure> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// What proved the package bad during the roll, if anything did.
    pub fn proven_bad(&self) -> Option<TaskFailure> {
        self.proven_bad.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The subtasks seen running once `id` passed the gate (none if it did not, or had none).
    pub fn checked(&self, id: &str) -> Vec<Subtask> {
        let checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        checked.get(id).cloned().unwrap_or_default()
    }
}

/// The subtasks of every worker that answers (a stopped worker runs none).
async fn all_subtasks(client: &DmClient, workers: &[String]) -> Vec<Subtask> {
    let answers = join_all(workers.iter().map(|addr| client.worker_subtasks(addr))).await;
    let mut subtasks: Vec<Subtask> = answers.into_iter().flatten().flatten().collect();
    subtasks.sort();
    subtasks
}
