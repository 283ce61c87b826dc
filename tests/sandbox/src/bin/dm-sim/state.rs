//! The cluster's shared state, what DM keeps in etcd: sources, workers and their bindings, and
//! masters taken out of the cluster. The leader owns it; followers mirror the leader's copy on
//! every poll so a new leader carries on with it; every master persists it to
//! `<data-dir>/sim-state.json`, so a whole-cluster restart keeps its sources.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use dm_sandbox::dm_api::WorkerStage;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Grows with every change, so a master taking over can pick the newest copy among those
    /// it sees.
    pub revision: u64,
    pub sources: BTreeMap<String, Source>,
    pub workers: BTreeMap<String, Worker>,
    /// Masters offlined through `DELETE /apis/v1alpha1/members/master/{name}`.
    pub removed_masters: BTreeSet<String>,
    /// Migration tasks and the sources each replicates from.
    #[serde(default)]
    pub tasks: BTreeMap<String, BTreeSet<String>>,
    /// Shard DDL locks not yet resolved: a task's DDL that waits on a source until every
    /// upstream table of its shard group has run it.
    #[serde(default)]
    pub ddl_locks: Vec<DdlLock>,
}

/// A pessimistic shard DDL lock of `task`, held on `source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DdlLock {
    pub task: String,
    pub source: String,
    /// DM's lock ID: the task and the shard group's target table.
    pub id: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The worker it is bound to now.
    pub bound_to: Option<String>,
    /// The worker it was bound to last, preferred when the source is bound again.
    pub previous_worker: Option<String>,
    /// When it was last moved on purpose (OpenAPI transfer), in ms since the epoch: its
    /// subtasks show Paused, without an error, until they resume on the new worker.
    #[serde(default)]
    pub transferred_at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worker {
    pub addr: String,
    pub stage: WorkerStage,
}

impl ClusterState {
    /// The source bound to `worker`, if any.
    pub fn source_of(&self, worker: &str) -> Option<&str> {
        self.sources
            .iter()
            .find(|(_, source)| source.bound_to.as_deref() == Some(worker))
            .map(|(name, _)| name.as_str())
    }

    /// The copy with the higher revision: what a master taking over the scheduler keeps.
    pub fn newer(self, other: &ClusterState) -> ClusterState {
        if other.revision > self.revision { other.clone() } else { self }
    }
}

/// Where a master keeps its copy, and what it last wrote there.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    written: Option<ClusterState>,
}

impl StateFile {
    pub fn in_data_dir(data_dir: &Path) -> StateFile {
        StateFile { path: data_dir.join("sim-state.json"), written: None }
    }

    /// The state saved by an earlier run; a fresh cluster when there is none. A file that does
    /// not parse is an error: silently starting empty would lose the sources.
    pub fn load(&mut self) -> Result<ClusterState, String> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ClusterState::default());
            }
            Err(err) => return Err(format!("cannot read {}: {err}", self.path.display())),
        };
        let state: ClusterState = serde_json::from_str(&text)
            .map_err(|err| format!("{} is not a saved state: {err}", self.path.display()))?;
        self.written = Some(state.clone());
        Ok(state)
    }

    /// Writes `state` if it differs from what was written last; atomically (a sibling file
    /// renamed over the old one), so a crash never leaves half a file.
    pub fn save(&mut self, state: &ClusterState) -> std::io::Result<()> {
        if self.written.as_ref() == Some(state) {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(state).expect("the state serialises");
        let partial = self.path.with_extension("json.partial");
        std::fs::write(&partial, text)?;
        std::fs::rename(&partial, &self.path)?;
        self.written = Some(state.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = StateFile::in_data_dir(dir.path());
        assert_eq!(file.load().unwrap(), ClusterState::default());
        let mut state = ClusterState::default();
        state.sources.insert("mysql-replica-01".into(), Source::default());
        state.revision = 3;
        file.save(&state).unwrap();
        let mut again = StateFile::in_data_dir(dir.path());
        assert_eq!(again.load().unwrap(), state);
    }
}
