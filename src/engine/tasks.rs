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
use std::fmt;
use std::sync::Mutex;

use futures_util::future::join_all;

use super::judge::{self, Expected, FirstSeen, Judging, Suspects, Verdict};
use crate::dm::client::DmClient;
use crate::dm::health::Readiness;
use crate::dm::tasks::{DdlLock, PauseCause, Subtask, TaskStage};
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
    /// (task, source) running (or finished) before the roll, with its lag then.
    expected: Expected,
    /// The first checkpoint of each subtask seen since the current wait began.
    first_seen: Mutex<FirstSeen>,
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

/// A subtask that failed during the roll (paused, or running without replicating), and
/// whether that proves the package bad.
#[derive(Debug, Clone, thiserror::Error)]
pub struct TaskFailure {
    pub paused: PausedSubtask,
    /// Why a subtask that still says Running failed: it stalled, or lags too far.
    pub stalled: Option<String>,
    /// It failed on a worker that runs the package (or under a master on it).
    pub against_package: bool,
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let runs = if self.against_package { "runs" } else { "does not run" };
        match &self.stalled {
            None => f.write_str(&self.paused.describe_with(&format!(", which {runs} the package"))),
            Some(why) => {
                write!(f, "{why}; worker {} {runs} the package", self.paused.subtask.worker)
            }
        }
    }
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
        let expected = now.iter().filter(|s| s.stage.is_healthy()).map(|s| {
            let lag = s.progress.map(|p| p.lag_seconds);
            ((s.task.clone(), s.source.clone()), lag)
        });
        let gate = TaskGate {
            expected: expected.collect(),
            first_seen: Mutex::new(FirstSeen::new()),
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

    /// The unresolved shard DDL locks of the watched tasks on `source` (on any source when
    /// `None`).
    pub async fn ddl_locks(&self, client: &DmClient, source: Option<&str>) -> Vec<DdlLock> {
        let on_source = |s: &str| source.is_none_or(|wanted| wanted == s);
        let tasks: BTreeSet<&String> =
            self.expected.keys().filter(|(_, s)| on_source(s)).map(|(task, _)| task).collect();
        let mut locks = Vec::new();
        for task in tasks {
            let found = client.ddl_locks(&self.masters, task).await;
            locks.extend(found.into_iter().filter(|lock| on_source(&lock.source)));
        }
        locks
    }

    /// Whether it has anything to watch.
    pub fn is_empty(&self) -> bool {
        self.expected.is_empty()
    }

    /// Whether the subtasks of `source` run on `worker` (member name) alone now, as the workers
    /// report them: after a source was moved, the worker that had it may still report them
    /// for a moment.
    pub async fn runs_on(&self, client: &DmClient, source: &str, worker: &str) -> Readiness {
        let now = all_subtasks(client, &self.workers).await;
        let expected = self.expected.keys().filter(|(_, s)| s == source);
        let elsewhere = now.iter().find(|s| s.source == source && s.worker != worker);
        let missing = expected.clone().find(|(task, _)| {
            !now.iter().any(|s| &s.task == task && s.source == source && s.worker == worker)
        });
        match (missing, elsewhere) {
            (None, None) => Readiness::Ready,
            (Some((task, _)), _) => Readiness::Waiting(format!(
                "task '{task}' on source '{source}' does not run on worker {worker} yet"
            )),
            (None, Some(s)) => {
                Readiness::Waiting(format!("{} still runs on worker {} too", s.name(), s.worker))
            }
        }
    }

    /// The workers (member names) that run the package now.
    pub fn on_package(&self) -> BTreeSet<String> {
        self.on_package.lock().unwrap_or_else(|p| p.into_inner()).clone()
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

    /// A wait on the subtasks begins: each must be seen to replicate from now on.
    pub fn begin_watch(&self) {
        self.first_seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// One look after `id` restarted: ready when every expected subtask runs again and
    /// replicates (recorded for `id`); failed as soon as one is paused (see [`judge::judge`]
    /// for whom it blames, and [`TaskGate::take_failure`]).
    pub async fn look(&self, client: &DmClient, id: &str, judging: Judging) -> Readiness {
        let now = all_subtasks(client, &self.workers).await;
        let first_seen = {
            let mut first_seen = self.first_seen.lock().unwrap_or_else(|p| p.into_inner());
            judge::note_first_seen(&mut first_seen, &now);
            first_seen.clone()
        };
        let on_package = self.on_package.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let suspects = self.suspects(&on_package);
        let verdict = judge::judge(&self.expected, &first_seen, &now, suspects, judging);
        let (subtask, against_package) = match verdict {
            Verdict::Healthy => {
                let seen: Vec<Subtask> = now
                    .into_iter()
                    .filter(|s| self.expected.contains_key(&(s.task.clone(), s.source.clone())))
                    .collect();
                let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
                checked.insert(id.to_owned(), seen);
                return Readiness::Ready;
            }
            Verdict::Waiting(why) => return Readiness::Waiting(why),
            Verdict::AgainstPackage(subtask) => (subtask, true),
            Verdict::Elsewhere(subtask) => (subtask, false),
        };
        let error = match client.pause_cause(&self.masters, &subtask.task, &subtask.source).await {
            PauseCause::Error(error) => Some(error),
            PauseCause::Unknown => None,
            // Not a failure: a source moved on purpose resumes its subtasks a moment later (an
            // operator's pause-task would be waited for until the deadline, then named).
            PauseCause::Operation => {
                return Readiness::Waiting(format!(
                    "{} is Paused without an error on worker {}: paused by an operation, such \
                     as a source moved on purpose that resumes there",
                    subtask.name(),
                    subtask.worker
                ));
            }
        };
        let paused = PausedSubtask { subtask, error };
        let failure = TaskFailure { paused, stalled: None, against_package };
        let said = failure.to_string();
        self.note_evidence(&failure);
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(failure);
        Readiness::Failed(said)
    }

    /// At the end of a wait that ran out: a subtask that runs but does not replicate (see
    /// [`judge::stalled`]), as a failure (when putting back, only one off the package counts).
    pub async fn stalled(&self, client: &DmClient, judging: Judging) -> Option<TaskFailure> {
        let now = all_subtasks(client, &self.workers).await;
        let first_seen = self.first_seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (subtask, why) = judge::stalled(&self.expected, &first_seen, &now)?;
        let on_package = self.on_package.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let against_package = judge::blames_package(&subtask.worker, self.suspects(&on_package));
        if against_package && judging == Judging::PutBack {
            return None;
        }
        let paused = PausedSubtask { subtask, error: None };
        let failure = TaskFailure { paused, stalled: Some(why), against_package };
        self.note_evidence(&failure);
        Some(failure)
    }

    fn suspects<'a>(&self, on_package: &'a BTreeSet<String>) -> Suspects<'a> {
        match self.component {
            Role::Master => Suspects::Everyone,
            Role::Worker => Suspects::Workers(on_package),
        }
    }

    /// A failure against the package proves it bad (the first one is kept, to be told).
    fn note_evidence(&self, failure: &TaskFailure) {
        if failure.against_package {
            let mut proven_bad = self.proven_bad.lock().unwrap_or_else(|p| p.into_inner());
            proven_bad.get_or_insert_with(|| failure.clone());
        }
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
