//! The task gate: a patch never leaves a migration task paused.
//!
//! Before the roll, every dm-worker of the cluster says which subtasks it runs and in what
//! stage. A subtask already Paused stops the run before anything changes (the patch must not be
//! blamed for, or hide, an existing failure), unless the operator forces it. After each restart,
//! every (task, source) that ran before must run again on some worker (or have finished) before
//! the roll goes on; one that turns Paused fails the instance at once, with DM's reason.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use futures_util::future::join_all;

use crate::dm::client::DmClient;
use crate::dm::health::Readiness;
use crate::dm::tasks::{Subtask, TaskStage};

/// What the roll must keep true of the cluster's tasks, and what it saw after each instance.
pub struct TaskGate {
    /// Every dm-worker of the cluster: a source may run on any of them.
    workers: Vec<String>,
    /// Every dm-master, for query-status.
    masters: Vec<String>,
    /// (task, source) running (or finished) before the roll.
    expected: BTreeSet<(String, String)>,
    /// Per instance ID, the subtasks seen once the gate passed after its restart.
    checked: Mutex<HashMap<String, Vec<Subtask>>>,
}

/// A subtask found paused before the roll, with DM's reason when it gives one.
#[derive(Debug, Clone)]
pub struct PausedSubtask {
    pub subtask: Subtask,
    pub error: Option<String>,
}

impl PausedSubtask {
    /// One line: which task, where, and why.
    pub fn describe(&self) -> String {
        let why = self.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        format!("{} is Paused on worker {}{why}", self.subtask.name(), self.subtask.worker)
    }
}

impl TaskGate {
    /// Asks every worker for its subtasks: the gate, and the subtasks already paused.
    pub async fn survey(
        client: &DmClient,
        workers: Vec<String>,
        masters: Vec<String>,
    ) -> (TaskGate, Vec<PausedSubtask>) {
        let now = all_subtasks(client, &workers).await;
        let expected =
            now.iter().filter(|s| s.stage.is_healthy()).map(|s| (s.task.clone(), s.source.clone()));
        let gate = TaskGate {
            expected: expected.collect(),
            workers,
            masters,
            checked: Mutex::new(HashMap::new()),
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

    /// One look after `id` restarted: ready when every expected subtask runs again (recorded
    /// for `id`), failed as soon as one is paused.
    pub async fn look(&self, client: &DmClient, id: &str) -> Readiness {
        let now = all_subtasks(client, &self.workers).await;
        let mut waiting = Vec::new();
        for (task, source) in &self.expected {
            let mine: Vec<&Subtask> =
                now.iter().filter(|s| &s.task == task && &s.source == source).collect();
            if mine.iter().any(|s| s.stage.is_healthy()) {
                continue;
            }
            if let Some(paused) = mine.iter().find(|s| s.stage == TaskStage::Paused) {
                let error = client.subtask_error(&self.masters, task, source).await;
                let paused = PausedSubtask { subtask: (*paused).clone(), error };
                return Readiness::Failed(format!("{} after the restart", paused.describe()));
            }
            waiting.push(match mine.first() {
                Some(s) => format!("{} is {} on worker {}", s.name(), s.stage.word(), s.worker),
                None => format!("task '{task}' on source '{source}' runs on no worker"),
            });
        }
        if waiting.is_empty() {
            let seen: Vec<Subtask> = now
                .into_iter()
                .filter(|s| self.expected.contains(&(s.task.clone(), s.source.clone())))
                .collect();
            self.checked.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_owned(), seen);
            Readiness::Ready
        } else {
            Readiness::Waiting(format!("migration tasks not running again: {}", waiting.join("; ")))
        }
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
