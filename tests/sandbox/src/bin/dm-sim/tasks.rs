//! Migration tasks in the simulator: which sources a task replicates from (kept in the shared
//! state, as DM keeps task configs in etcd), which subtasks each worker runs (those of the
//! source bound to it, told in the keepalive answer), and query-status, answered from what the
//! bound workers say when asked.

use std::collections::{BTreeSet, HashMap};

use dm_sandbox::task_api::{
    Assignment, ProcessError, ProcessResult, QueryStatusResponse, ShardingGroup, SourceStatus,
    SourceTaskStatus, SubTaskStatus, SubtaskReport, SyncStatus, TaskStage,
};

use crate::scheduler::Events;
use crate::state::{ClusterState, DdlLock};

/// The table every simulated shard group merges into.
const SHARD_TARGET: &str = "`shard_db`.`shard_table`";

/// DM's error code for a subtask the sync unit stopped (`codeSyncerUnitPanic`'s neighbourhood;
/// any code serves, the simulator only has to give one).
const PAUSED_ERROR_CODE: i32 = 36069;

/// `POST /api/v1/tasks`: a task over existing sources.
pub fn create(state: &mut ClusterState, name: &str, sources: &[String]) -> Result<Events, String> {
    if state.tasks.contains_key(name) {
        return Err(format!("task {name} already exists"));
    }
    if sources.is_empty() {
        return Err(format!("task {name} names no source"));
    }
    if let Some(missing) = sources.iter().find(|source| !state.sources.contains_key(*source)) {
        return Err(format!("source {missing} not exists"));
    }
    state.tasks.insert(name.to_owned(), sources.iter().cloned().collect::<BTreeSet<_>>());
    Ok(vec![format!("task {name} created on {}", sources.join(","))])
}

/// The source bound to `worker` and the tasks that replicate from it.
pub fn assignment(state: &ClusterState, worker: &str) -> Assignment {
    let Some(source) = state.source_of(worker) else {
        return Assignment::default();
    };
    let tasks = state
        .tasks
        .iter()
        .filter(|(_, sources)| sources.contains(source))
        .map(|(task, _)| task.clone())
        .collect();
    let transferred_at_ms = state.sources.get(source).and_then(|s| s.transferred_at_ms);
    Assignment { source: Some(source.to_owned()), tasks, transferred_at_ms }
}

/// `GET /apis/v1alpha1/status/{task}`: per source, its worker and the subtask it reported.
pub fn query_status(
    state: &ClusterState,
    reports: &HashMap<String, Vec<SubtaskReport>>,
    task: &str,
) -> QueryStatusResponse {
    let Some(sources) = state.tasks.get(task) else {
        return QueryStatusResponse {
            result: false,
            msg: format!("task {task} has no source or not exist"),
            sources: Vec::new(),
        };
    };
    let sources = sources
        .iter()
        .map(|source| {
            let worker = state.sources.get(source).and_then(|s| s.bound_to.clone());
            let reported =
                worker.as_ref().and_then(|worker| reports.get(worker)).and_then(|subtasks| {
                    subtasks.iter().find(|s| s.task == task && &s.source == source)
                });
            let lock = state.ddl_locks.iter().find(|l| l.task == task && &l.source == source);
            let sub_task_status = reported.map(|subtask| SubTaskStatus {
                name: task.to_owned(),
                stage: subtask.stage,
                unit: "Sync".to_owned(),
                // Paused by an operation (a transfer), it has no error: DM filters out the
                // cancel (dm/syncer/syncer.go).
                result: (subtask.stage == TaskStage::Paused).then(|| ProcessResult {
                    is_canceled: subtask.error.is_empty(),
                    errors: (!subtask.error.is_empty())
                        .then(|| ProcessError {
                            err_code: PAUSED_ERROR_CODE,
                            message: subtask.error.clone(),
                            raw_cause: String::new(),
                        })
                        .into_iter()
                        .collect(),
                }),
                unresolved_ddl_lock_id: lock.map(|l| l.id.clone()).unwrap_or_default(),
                sync: Some(sync_status(subtask, lock)),
            });
            let msg = match (&worker, &sub_task_status) {
                (None, _) => format!("source {source} is not bound to any worker"),
                (Some(_), None) => format!("no sub task with name {task} has started"),
                _ => String::new(),
            };
            SourceTaskStatus {
                result: msg.is_empty(),
                msg,
                source_status: SourceStatus {
                    source: source.clone(),
                    worker: worker.unwrap_or_default(),
                },
                sub_task_status: sub_task_status.into_iter().collect(),
            }
        })
        .collect();
    QueryStatusResponse { result: true, msg: String::new(), sources }
}

/// The `sync` block of a subtask's status: its progress, and the shard DDL it waits on.
fn sync_status(subtask: &SubtaskReport, lock: Option<&DdlLock>) -> SyncStatus {
    let group = |lock: &DdlLock| ShardingGroup {
        target: SHARD_TARGET.to_owned(),
        ddls: vec![format!("ALTER TABLE {SHARD_TARGET} ADD COLUMN `c` INT")],
        synced: vec![format!("`{}`.`shard_table`", lock.source)],
        unsynced: vec!["`another_source`.`shard_table`".to_owned()],
    };
    SyncStatus {
        master_binlog: subtask.master.location(),
        syncer_binlog: subtask.syncer.location(),
        seconds_behind_master: subtask.lag_seconds.to_string(),
        synced: subtask.syncer == subtask.master,
        blocking_ddls: Vec::new(),
        unresolved_groups: lock.map(group).into_iter().collect(),
    }
}

/// `POST /sim/v1/shard-ddl/{task}/{source}`: a shard DDL of `task` now waits on `source`.
pub fn lock_ddl(state: &mut ClusterState, task: &str, source: &str) -> Result<Events, String> {
    if !state.tasks.get(task).is_some_and(|sources| sources.contains(source)) {
        return Err(format!("task {task} does not replicate from source {source}"));
    }
    if state.ddl_locks.iter().any(|l| l.task == task && l.source == source) {
        return Ok(Events::new());
    }
    let id = format!("{task}-{SHARD_TARGET}");
    state.ddl_locks.push(DdlLock {
        task: task.to_owned(),
        source: source.to_owned(),
        id: id.clone(),
    });
    Ok(vec![format!("shard DDL lock {id} waits on source {source}")])
}

/// `DELETE /sim/v1/shard-ddl/{task}/{source}`: the lock is resolved.
pub fn resolve_ddl(state: &mut ClusterState, task: &str, source: &str) -> Events {
    let before = state.ddl_locks.len();
    state.ddl_locks.retain(|l| !(l.task == task && l.source == source));
    if state.ddl_locks.len() == before {
        return Events::new();
    }
    vec![format!("shard DDL lock of task {task} on source {source} resolved")]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Source;

    fn state() -> ClusterState {
        let mut state = ClusterState::default();
        for source in ["s1", "s2"] {
            state.sources.insert(source.into(), Source::default());
        }
        state.sources.get_mut("s1").unwrap().bound_to = Some("w1".into());
        state
    }

    #[test]
    fn a_worker_runs_the_tasks_of_its_source() {
        let mut state = state();
        create(&mut state, "t1", &["s1".into(), "s2".into()]).unwrap();
        create(&mut state, "t2", &["s2".into()]).unwrap();
        assert!(create(&mut state, "t3", &["s9".into()]).is_err());
        let assigned = assignment(&state, "w1");
        assert_eq!(assigned.source.as_deref(), Some("s1"));
        assert_eq!(assigned.tasks, ["t1"]);
        assert_eq!(assignment(&state, "w2"), Assignment::default());
    }

    #[test]
    fn query_status_gives_each_sources_worker_stage_and_error() {
        let mut state = state();
        create(&mut state, "t1", &["s1".into(), "s2".into()]).unwrap();
        let paused = SubtaskReport {
            task: "t1".into(),
            source: "s1".into(),
            stage: TaskStage::Paused,
            error: "sync unit failed".into(),
            syncer: Default::default(),
            master: Default::default(),
            lag_seconds: 0,
        };
        let reports = HashMap::from([("w1".to_owned(), vec![paused])]);
        let status = query_status(&state, &reports, "t1");
        assert!(status.result);
        let s1 = &status.sources[0];
        assert_eq!(s1.source_status.worker, "w1");
        assert_eq!(s1.sub_task_status[0].stage, TaskStage::Paused);
        let errors = &s1.sub_task_status[0].result.as_ref().unwrap().errors;
        assert_eq!(errors[0].message, "sync unit failed");
        assert!(!status.sources[1].result, "s2 has no worker");
        assert!(!query_status(&state, &reports, "nope").result);
    }

    #[test]
    fn a_shard_ddl_lock_shows_on_its_sources_subtask_until_resolved() {
        let mut state = state();
        create(&mut state, "t1", &["s1".into()]).unwrap();
        assert!(lock_ddl(&mut state, "t1", "s2").is_err(), "t1 has no s2");
        lock_ddl(&mut state, "t1", "s1").unwrap();
        let running = SubtaskReport {
            task: "t1".into(),
            source: "s1".into(),
            stage: TaskStage::Running,
            error: String::new(),
            syncer: Default::default(),
            master: Default::default(),
            lag_seconds: 0,
        };
        let reports = HashMap::from([("w1".to_owned(), vec![running])]);
        let subtask = &query_status(&state, &reports, "t1").sources[0].sub_task_status[0];
        assert_eq!(subtask.unresolved_ddl_lock_id, "t1-`shard_db`.`shard_table`");
        assert_eq!(subtask.sync.as_ref().unwrap().unresolved_groups.len(), 1);
        resolve_ddl(&mut state, "t1", "s1");
        let subtask = &query_status(&state, &reports, "t1").sources[0].sub_task_status[0];
        assert_eq!(subtask.unresolved_ddl_lock_id, "");
    }
}
