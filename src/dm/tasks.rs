//! Migration tasks, as dm-patch watches them: every dm-worker exports the stage of each subtask
//! it runs (`dm_worker_task_state{task,source_id,worker}` on `/metrics`), and DM-master's
//! query-status (`GET /apis/v1alpha1/status/{task}`) says why a subtask is paused.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::client::{DmClient, DmError};

/// The metric every dm-worker exports per subtask (tiflow `dm/worker/metrics.go`).
const TASK_STATE_METRIC: &str = "dm_worker_task_state";
/// The syncer's metrics (tiflow `dm/syncer/metrics`): binlog locations and lag.
const BINLOG_FILE_METRIC: &str = "dm_syncer_binlog_file";
const BINLOG_POS_METRIC: &str = "dm_syncer_binlog_pos";
const LAG_METRIC: &str = "dm_syncer_replication_lag_gauge";

/// A subtask's stage (DM's `pb.Stage`), by the gauge's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum TaskStage {
    Invalid,
    New,
    Running,
    Paused,
    Stopped,
    Finished,
    Pausing,
    Resuming,
    Stopping,
}

impl TaskStage {
    fn from_metric(value: f64) -> TaskStage {
        const STAGES: [TaskStage; 9] = [
            TaskStage::Invalid,
            TaskStage::New,
            TaskStage::Running,
            TaskStage::Paused,
            TaskStage::Stopped,
            TaskStage::Finished,
            TaskStage::Pausing,
            TaskStage::Resuming,
            TaskStage::Stopping,
        ];
        STAGES.into_iter().find(|stage| *stage as u8 as f64 == value).unwrap_or(TaskStage::Invalid)
    }

    /// Lower case, as the display's Tasks column counts them.
    pub fn word(self) -> &'static str {
        match self {
            TaskStage::Invalid => "invalid",
            TaskStage::New => "new",
            TaskStage::Running => "running",
            TaskStage::Paused => "paused",
            TaskStage::Stopped => "stopped",
            TaskStage::Finished => "finished",
            TaskStage::Pausing => "pausing",
            TaskStage::Resuming => "resuming",
            TaskStage::Stopping => "stopping",
        }
    }

    /// Replicating, or done replicating: what a patch must leave a task in.
    pub fn is_healthy(self) -> bool {
        matches!(self, TaskStage::Running | TaskStage::Finished)
    }
}

/// One subtask: a task's share of one source, on the worker that runs it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Subtask {
    pub task: String,
    pub source: String,
    pub worker: String,
    pub stage: TaskStage,
    /// How far it has replicated, when its worker exports the syncer's metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// How far a subtask has replicated: its checkpoint against the upstream's position
/// (`dm_syncer_binlog_file`/`_pos`, `node="syncer"` and `node="master"`), and its lag
/// (`dm_syncer_replication_lag_gauge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Progress {
    pub checkpoint: Binlog,
    pub upstream: Binlog,
    pub lag_seconds: u64,
}

/// A binlog location: the file's index (`mysql-bin.000042` is 42) and the position in it.
/// Ordered file first, as DM compares locations (a new file starts its positions again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Binlog {
    pub file: u64,
    pub pos: u64,
}

impl std::fmt::Display for Binlog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({:06}, {})", self.file, self.pos)
    }
}

impl Subtask {
    /// `task 'x' on source 'y'`, as messages name it.
    pub fn name(&self) -> String {
        format!("task '{}' on source '{}'", self.task, self.source)
    }
}

/// The subtasks of Prometheus text: each `dm_worker_task_state` sample, with its progress when
/// the syncer's metrics for the same (task, source) are there too.
pub fn parse_task_metrics(text: &str) -> Vec<Subtask> {
    let mut syncer: HashMap<(String, String), Syncer> = HashMap::new();
    let mut subtasks = Vec::new();
    for sample in text.lines().filter_map(Sample::parse) {
        let (Some(task), Some(source)) = (sample.label("task"), sample.label("source_id")) else {
            continue;
        };
        if sample.name == TASK_STATE_METRIC {
            subtasks.push(Subtask {
                worker: sample.label("worker").unwrap_or_default(),
                stage: TaskStage::from_metric(sample.value),
                progress: None,
                task,
                source,
            });
            continue;
        }
        let seen = syncer.entry((task, source)).or_default();
        let whole = Some(sample.value.max(0.0).round() as u64);
        match (sample.name, sample.label("node").as_deref()) {
            (BINLOG_FILE_METRIC, Some("syncer")) => seen.checkpoint.0 = whole,
            (BINLOG_POS_METRIC, Some("syncer")) => seen.checkpoint.1 = whole,
            (BINLOG_FILE_METRIC, Some("master")) => seen.upstream.0 = whole,
            (BINLOG_POS_METRIC, Some("master")) => seen.upstream.1 = whole,
            (LAG_METRIC, _) => seen.lag_seconds = whole,
            _ => {}
        }
    }
    for subtask in &mut subtasks {
        subtask.progress =
            syncer.get(&(subtask.task.clone(), subtask.source.clone())).and_then(Syncer::progress);
    }
    subtasks
}

/// What the syncer's metrics said of one (task, source), as they are found.
#[derive(Debug, Default)]
struct Syncer {
    checkpoint: (Option<u64>, Option<u64>),
    upstream: (Option<u64>, Option<u64>),
    lag_seconds: Option<u64>,
}

impl Syncer {
    /// The progress, when both locations were given in full.
    fn progress(&self) -> Option<Progress> {
        let location =
            |(file, pos): (Option<u64>, Option<u64>)| Some(Binlog { file: file?, pos: pos? });
        Some(Progress {
            checkpoint: location(self.checkpoint)?,
            upstream: location(self.upstream)?,
            lag_seconds: self.lag_seconds.unwrap_or_default(),
        })
    }
}

/// One sample of Prometheus text: `name{labels} value [timestamp]`.
struct Sample<'t> {
    name: &'t str,
    labels: &'t str,
    value: f64,
}

impl<'t> Sample<'t> {
    fn parse(line: &'t str) -> Option<Sample<'t>> {
        let (name, rest) = line.split_once('{')?;
        let (labels, value) = rest.rsplit_once('}')?;
        let value = value.split_whitespace().next()?.parse().ok()?;
        Some(Sample { name, labels, value })
    }

    fn label(&self, key: &str) -> Option<String> {
        label_value(self.labels, key)
    }
}

/// The value of `key` in a Prometheus label set (`a="x",b="y"`), escapes undone.
fn label_value(labels: &str, key: &str) -> Option<String> {
    let mut rest = labels;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (at, '"') => break at,
                (_, ch) => value.push(ch),
            }
        };
        if name.trim_start_matches(',').trim() == key {
            return Some(value);
        }
        rest = after[end + 1..].trim_start_matches(',');
    }
    None
}

/// query-status of one task: what each source's subtask says.
#[derive(Debug, Deserialize)]
struct QueryStatus {
    result: bool,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    sources: Vec<SourceTaskStatus>,
}

impl QueryStatus {
    /// The errors of `task`'s subtask on `source` (each `message: raw cause`), when it has a
    /// result to say; empty when that result has none.
    fn errors(&self, task: &str, source: &str) -> Option<Vec<String>> {
        let result = self
            .sources
            .iter()
            .filter(|s| s.source_status.source == source)
            .flat_map(|s| &s.sub_task_status)
            .find(|subtask| subtask.name == task)?
            .result
            .as_ref()?;
        let said = |error: &ProcessError| {
            if error.raw_cause.is_empty() {
                error.message.clone()
            } else {
                format!("{}: {}", error.message, error.raw_cause)
            }
        };
        Some(result.errors.iter().map(said).collect())
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SourceTaskStatus {
    #[serde(default)]
    source_status: SourceStatus,
    #[serde(default)]
    sub_task_status: Vec<SubTaskStatus>,
}

#[derive(Debug, Default, Deserialize)]
struct SourceStatus {
    #[serde(default)]
    source: String,
}

#[derive(Debug, Deserialize)]
struct SubTaskStatus {
    #[serde(default)]
    name: String,
    #[serde(default)]
    result: Option<ProcessResult>,
    /// The shard DDL lock the subtask waits in; empty when none.
    #[serde(default, rename = "unresolvedDDLLockID")]
    unresolved_ddl_lock_id: String,
    #[serde(default)]
    sync: Option<SyncStatus>,
}

/// The part of DM's `SyncStatus` that tells of shard DDL: groups not yet resolved.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SyncStatus {
    #[serde(default)]
    unresolved_groups: Vec<ShardingGroup>,
}

#[derive(Debug, Deserialize)]
struct ShardingGroup {
    #[serde(default)]
    target: String,
}

/// Why a subtask is paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseCause {
    /// It failed: DM's errors.
    Error(String),
    /// An operation paused it, without an error (DM filters out the cancel): a source moved on
    /// purpose resumes its subtasks on the new worker a moment later.
    Operation,
    /// No master said.
    Unknown,
}

/// A shard DDL that waits on a source: DM's guide says not to restart the source's worker
/// then (it can be left blocked at the DDL, to be repaired by hand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdlLock {
    pub task: String,
    pub source: String,
    /// DM's lock ID (`unresolvedDDLLockID`), or the unresolved group's target table.
    pub lock: String,
}

impl std::fmt::Display for DdlLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "task '{}' on source '{}' holds the unresolved shard DDL lock {}",
            self.task, self.source, self.lock
        )
    }
}

#[derive(Debug, Deserialize)]
struct ProcessResult {
    #[serde(default)]
    errors: Vec<ProcessError>,
}

/// DM's `pb.ProcessError`: its proto field names start with a capital.
#[derive(Debug, Deserialize)]
struct ProcessError {
    #[serde(default, rename = "Message", alias = "message")]
    message: String,
    #[serde(default, rename = "RawCause", alias = "rawCause")]
    raw_cause: String,
}

impl DmClient {
    /// The unresolved shard DDL locks of `task`, per source, from query-status (any master
    /// forwards it to the leader); none when no master answers.
    pub async fn ddl_locks(&self, masters: &[String], task: &str) -> Vec<DdlLock> {
        let Some(status) = self.query_status(masters, task).await else { return Vec::new() };
        let mut locks = Vec::new();
        for source in &status.sources {
            for subtask in source.sub_task_status.iter().filter(|s| s.name == task) {
                let groups = subtask.sync.as_ref().map(|s| s.unresolved_groups.as_slice());
                let lock = match (subtask.unresolved_ddl_lock_id.as_str(), groups) {
                    ("", Some([group, ..])) => format!("on {}", group.target),
                    ("", _) => continue,
                    (id, _) => id.to_owned(),
                };
                let (task, source) = (task.to_owned(), source.source_status.source.clone());
                locks.push(DdlLock { task, source, lock });
            }
        }
        locks
    }

    /// query-status of `task` from the first master that answers it.
    async fn query_status(&self, masters: &[String], task: &str) -> Option<QueryStatus> {
        for master in masters {
            let Ok(body) = self.get(master, &format!("/apis/v1alpha1/status/{task}")).await else {
                continue;
            };
            if let Ok(status) = serde_json::from_str::<QueryStatus>(&body) {
                return Some(status);
            }
        }
        None
    }

    /// The subtasks the dm-worker at `addr` runs, from its `/metrics`.
    pub async fn worker_subtasks(&self, addr: &str) -> Result<Vec<Subtask>, DmError> {
        Ok(parse_task_metrics(&self.get(addr, "/metrics").await?))
    }

    /// Why `task`'s subtask on `source` is paused, as query-status tells it: DM's errors, or
    /// none when an operation paused it (a transfer resuming it elsewhere, `pause-task`).
    pub async fn pause_cause(&self, masters: &[String], task: &str, source: &str) -> PauseCause {
        let Some(status) = self.query_status(masters, task).await else {
            return PauseCause::Unknown;
        };
        match status.errors(task, source) {
            Some(errors) if errors.is_empty() => PauseCause::Operation,
            Some(errors) => PauseCause::Error(errors.join("; ")),
            None if !status.result && !status.msg.is_empty() => PauseCause::Error(status.msg),
            None => PauseCause::Unknown,
        }
    }

    /// Why `task`'s subtask on `source` stopped, as query-status tells it (any master
    /// forwards it to the leader); `None` when no master says.
    pub async fn subtask_error(
        &self,
        masters: &[String],
        task: &str,
        source: &str,
    ) -> Option<String> {
        match self.pause_cause(masters, task, source).await {
            PauseCause::Error(error) => Some(error),
            PauseCause::Operation | PauseCause::Unknown => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_states_are_read_from_prometheus_text() {
        let text = "# HELP dm_worker_task_state state of task\n# TYPE dm_worker_task_state gauge\n\
            dm_worker_task_state{source_id=\"mysql-replica-01\",task=\"t,1\",worker=\"w1\"} 2\n\
            dm_worker_task_state{source_id=\"s2\",task=\"q\\\"uote\",worker=\"w1\"} 3 1700000000\n\
            dm_worker_task_state_other{source_id=\"s\",task=\"x\",worker=\"w\"} 2\n\
            go_goroutines 12\n";
        let subtasks = parse_task_metrics(text);
        assert_eq!(subtasks.len(), 2, "{subtasks:?}");
        assert_eq!(subtasks[0].progress, None, "no syncer metrics");
        assert_eq!(subtasks[0].task, "t,1");
        assert_eq!(subtasks[0].source, "mysql-replica-01");
        assert_eq!(subtasks[0].stage, TaskStage::Running);
        assert_eq!(subtasks[1].task, "q\"uote");
        assert_eq!(subtasks[1].stage, TaskStage::Paused);
        assert_eq!(TaskStage::from_metric(9.0), TaskStage::Invalid);
    }

    #[test]
    fn progress_is_read_from_the_syncer_metrics() {
        let text = "dm_worker_task_state{source_id=\"s1\",task=\"t1\",worker=\"w1\"} 2\n\
            dm_syncer_binlog_file{node=\"master\",source_id=\"s1\",task=\"t1\"} 42\n\
            dm_syncer_binlog_pos{node=\"master\",source_id=\"s1\",task=\"t1\"} 9000\n\
            dm_syncer_binlog_file{node=\"syncer\",source_id=\"s1\",task=\"t1\"} 41\n\
            dm_syncer_binlog_pos{node=\"syncer\",source_id=\"s1\",task=\"t1\"} 123456\n\
            dm_syncer_replication_lag_gauge{source_id=\"s1\",task=\"t1\",worker=\"w1\"} 2.6\n";
        let progress = parse_task_metrics(text)[0].progress.expect("progress");
        assert_eq!(progress.checkpoint, Binlog { file: 41, pos: 123_456 });
        assert_eq!(progress.upstream, Binlog { file: 42, pos: 9000 });
        assert!(progress.checkpoint < progress.upstream, "file first");
        assert_eq!(progress.lag_seconds, 3);
        assert_eq!(progress.checkpoint.to_string(), "(000041, 123456)");
    }

    #[test]
    fn query_status_errors_are_read_with_their_proto_names() {
        let body = r#"{"result":true,"msg":"","sources":[{"result":true,"msg":"",
            "sourceStatus":{"source":"s1","worker":"w1"},"subTaskStatus":[{"name":"t1",
            "stage":"Paused","unit":"Sync","result":{"isCanceled":false,"errors":[
            {"ErrCode":36069,"Message":"sync unit failed","RawCause":"bad DDL"}]}}]}]}"#;
        let status: QueryStatus = serde_json::from_str(body).unwrap();
        let error = &status.sources[0].sub_task_status[0].result.as_ref().unwrap().errors[0];
        assert_eq!(
            (error.message.as_str(), error.raw_cause.as_str()),
            ("sync unit failed", "bad DDL")
        );
    }

    #[test]
    fn shard_ddl_locks_are_read_from_query_status() {
        let body = r#"{"result":true,"msg":"","sources":[{"result":true,"msg":"",
            "sourceStatus":{"source":"s1","worker":"w1"},"subTaskStatus":[{"name":"t1",
            "stage":"Running","unit":"Sync","unresolvedDDLLockID":"t1-`db`.`tbl`",
            "sync":{"unresolvedGroups":[{"target":"`db`.`tbl`","DDLs":[],"synced":[],
            "unsynced":[]}]}}]}]}"#;
        let status: QueryStatus = serde_json::from_str(body).unwrap();
        let subtask = &status.sources[0].sub_task_status[0];
        assert_eq!(subtask.unresolved_ddl_lock_id, "t1-`db`.`tbl`");
        assert_eq!(subtask.sync.as_ref().unwrap().unresolved_groups[0].target, "`db`.`tbl`");
    }
}
