//! The migration tasks column of `display`: what each dm-worker runs, from its `/metrics`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::dm::client::DmClient;
use crate::dm::tasks::{Subtask, TaskStage};

/// One subtask of a worker, as the JSON shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRow {
    pub task: String,
    pub source: String,
    pub stage: TaskStage,
}

/// The subtasks the worker at `addr` runs; `None` when it does not answer.
pub async fn of_worker(client: &DmClient, addr: &str) -> Option<Vec<TaskRow>> {
    let subtasks = client.worker_subtasks(addr).await.ok()?;
    Some(
        subtasks
            .into_iter()
            .map(|Subtask { task, source, stage, .. }| TaskRow { task, source, stage })
            .collect(),
    )
}

/// The Tasks cell: how many subtasks in each stage (`2 running`, `1 running, 1 paused`), `-`
/// for none or unknown.
pub fn cell(tasks: Option<&[TaskRow]>) -> String {
    let mut counts: BTreeMap<TaskStage, usize> = BTreeMap::new();
    for row in tasks.unwrap_or_default() {
        *counts.entry(row.stage).or_default() += 1;
    }
    if counts.is_empty() {
        return "-".to_owned();
    }
    let parts: Vec<String> =
        counts.iter().map(|(stage, count)| format!("{count} {}", stage.word())).collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(stage: TaskStage) -> TaskRow {
        TaskRow { task: "t".into(), source: "s".into(), stage }
    }

    #[test]
    fn the_cell_counts_subtasks_by_stage() {
        assert_eq!(cell(None), "-");
        assert_eq!(cell(Some(&[])), "-");
        let rows = [row(TaskStage::Paused), row(TaskStage::Running), row(TaskStage::Running)];
        assert_eq!(cell(Some(&rows)), "2 running, 1 paused");
    }
}
