//! Serde types of the DM-master HTTP API (see `dm-master-api.md` in the project's reference
//! facts), shared by the simulator, which serialises them, and by the tests, which read them.
//!
//! The v1alpha1 API is DM's grpc-gateway: proto field names in camelCase, every field present
//! even when empty, 64-bit integers as JSON strings, enums by name, and HTTP 200 even when
//! `result` is false. The types here serialise exactly that way and deserialise strictly enough
//! to catch a missing field. The source-creation types belong to DM's OpenAPI (`/api/v1`), whose
//! fields are snake_case.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `GET /apis/v1alpha1/members` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersResponse {
    pub result: bool,
    pub msg: String,
    pub members: Vec<MemberSection>,
}

/// One element of `members`: a single-key object, `{"leader": ...}`, `{"master": ...}` or
/// `{"worker": ...}`, as grpc-gateway renders a proto `oneof`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberSection {
    Leader(LeaderSection),
    Master(MasterSection),
    Worker(WorkerSection),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderSection {
    pub msg: String,
    /// Empty when the cluster has no leader or the `names` filter excludes it.
    pub name: String,
    /// The leader's client address, `host:port`.
    pub addr: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterSection {
    pub msg: String,
    pub masters: Vec<MasterMember>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterMember {
    pub name: String,
    /// The etcd member id: a uint64, hence a JSON string.
    #[serde(rename = "memberID", with = "u64_as_string")]
    pub member_id: u64,
    pub alive: bool,
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    #[serde(rename = "clientURLs")]
    pub client_urls: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSection {
    /// "scheduler has not started" just after a leader change, while `workers` is empty.
    pub msg: String,
    pub workers: Vec<WorkerMember>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerMember {
    pub name: String,
    pub addr: String,
    pub stage: WorkerStage,
    /// The source bound to this worker; empty unless `stage` is `bound` (or `relay`).
    pub source: String,
}

/// A worker's stage as the scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerStage {
    Offline,
    Free,
    Bound,
    Relay,
}

impl WorkerStage {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStage::Offline => "offline",
            WorkerStage::Free => "free",
            WorkerStage::Bound => "bound",
            WorkerStage::Relay => "relay",
        }
    }

    /// Registered and keeping its lease: what a rolling patch waits for after a start.
    pub fn is_online(self) -> bool {
        self != WorkerStage::Offline
    }
}

impl fmt::Display for WorkerStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl MembersResponse {
    /// The leader section, when the answer has one naming a leader.
    pub fn leader(&self) -> Option<&LeaderSection> {
        self.sections().find_map(|section| match section {
            MemberSection::Leader(leader) if !leader.name.is_empty() => Some(leader),
            _ => None,
        })
    }

    /// The leader's name, when there is one.
    pub fn leader_name(&self) -> Option<&str> {
        self.leader().map(|leader| leader.name.as_str())
    }

    /// The masters of the master section (empty without one).
    pub fn masters(&self) -> &[MasterMember] {
        self.master_section().map(|section| section.masters.as_slice()).unwrap_or_default()
    }

    /// The workers of the worker section (empty without one, or before the scheduler starts).
    pub fn workers(&self) -> &[WorkerMember] {
        self.worker_section().map(|section| section.workers.as_slice()).unwrap_or_default()
    }

    pub fn master(&self, name: &str) -> Option<&MasterMember> {
        self.masters().iter().find(|master| master.name == name)
    }

    pub fn worker(&self, name: &str) -> Option<&WorkerMember> {
        self.workers().iter().find(|worker| worker.name == name)
    }

    pub fn master_section(&self) -> Option<&MasterSection> {
        self.sections().find_map(|section| match section {
            MemberSection::Master(master) => Some(master),
            _ => None,
        })
    }

    pub fn worker_section(&self) -> Option<&WorkerSection> {
        self.sections().find_map(|section| match section {
            MemberSection::Worker(worker) => Some(worker),
            _ => None,
        })
    }

    fn sections(&self) -> impl Iterator<Item = &MemberSection> {
        self.members.iter()
    }
}

/// Which sections `GET /apis/v1alpha1/members` returns, and for which names. No switch at all
/// means every section; an empty `names` means every member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembersQuery {
    pub leader: bool,
    pub master: bool,
    pub worker: bool,
    pub names: Vec<String>,
}

impl MembersQuery {
    pub const PATH: &'static str = "/apis/v1alpha1/members";

    /// Path and query string, e.g. `/apis/v1alpha1/members?worker=true&names=w1`.
    pub fn path(&self) -> String {
        let switches = [("leader", self.leader), ("master", self.master), ("worker", self.worker)];
        let pairs: Vec<String> = switches
            .iter()
            .filter(|(_, on)| *on)
            .map(|(switch, _)| format!("{switch}=true"))
            .chain(self.names.iter().map(|name| format!("names={name}")))
            .collect();
        if pairs.is_empty() {
            Self::PATH.to_owned()
        } else {
            format!("{}?{}", Self::PATH, pairs.join("&"))
        }
    }

    /// Whether no switch is set, which asks for all three sections.
    pub fn all_sections(&self) -> bool {
        !(self.leader || self.master || self.worker)
    }
}

/// The operation of `PUT /apis/v1alpha1/leader/{op}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaderOp {
    /// `1` or `EvictLeaderOp`: the leader resigns and will not run again until cancelled or
    /// restarted.
    Evict,
    /// `2` or `CancelEvictLeaderOp`.
    CancelEvict,
}

impl LeaderOp {
    /// The numeric spelling DM's own clients use.
    pub fn path(self) -> &'static str {
        match self {
            LeaderOp::Evict => "/apis/v1alpha1/leader/1",
            LeaderOp::CancelEvict => "/apis/v1alpha1/leader/2",
        }
    }

    /// Reads either spelling of the op, as the gateway accepts both.
    pub fn parse(op: &str) -> Option<LeaderOp> {
        match op {
            "1" | "EvictLeaderOp" => Some(LeaderOp::Evict),
            "2" | "CancelEvictLeaderOp" => Some(LeaderOp::CancelEvict),
            _ => None,
        }
    }
}

/// `{"result","msg"}`: the answer of leader operations and of offlining a member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommonResponse {
    pub result: bool,
    pub msg: String,
}

impl CommonResponse {
    pub fn ok() -> CommonResponse {
        CommonResponse { result: true, msg: String::new() }
    }

    pub fn refused(msg: impl Into<String>) -> CommonResponse {
        CommonResponse { result: false, msg: msg.into() }
    }
}

/// `GET /health`: `{"health":"true","reason":""}` with HTTP 200, else HTTP 503.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// `"true"` or `"false"`: a string, as etcd's health endpoint writes it.
    pub health: String,
    pub reason: String,
}

impl HealthResponse {
    pub fn is_healthy(&self) -> bool {
        self.health == "true"
    }
}

/// An error written by the gateway itself, with HTTP 400/500/501/503.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayError {
    /// The gRPC status code (2 unknown, 3 invalid argument, 5 not found, 14 unavailable).
    pub code: i32,
    pub message: String,
    pub details: Vec<serde_json::Value>,
}

/// The message of the HTTP 500 a follower answers when it knows no leader to forward to.
pub const NO_LEADER_MESSAGE: &str = "master is not leader, and can't forward request to leader";

/// The worker section's `msg` (and a refused call's message) just after a leader change.
pub const SCHEDULER_NOT_STARTED: &str = "scheduler has not started";

/// `POST /api/v1/sources` (DM's OpenAPI) body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSourceRequest {
    pub source: SourceConfig,
}

/// The fields of an upstream source that matter here (DM's OpenAPI has more). Only the name is
/// needed to read one, since the simulator connects to no MySQL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceConfig {
    pub source_name: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub enable_gtid: bool,
    #[serde(default)]
    pub enable: bool,
}

impl SourceConfig {
    /// A source named `name` replicating from a MySQL on `host:port` as root.
    pub fn new(name: impl Into<String>, host: impl Into<String>, port: u16) -> SourceConfig {
        SourceConfig {
            source_name: name.into(),
            host: host.into(),
            port,
            user: "root".to_owned(),
            password: String::new(),
            enable_gtid: true,
            enable: true,
        }
    }
}

/// The version block of `dm-master -V` / `dm-worker -V` and of `GET /status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub release_version: String,
    pub git_commit_hash: String,
    pub git_branch: String,
    pub utc_build_time: String,
    pub go_version: String,
    pub failpoint_build: bool,
}

impl VersionInfo {
    /// Reads the block; `None` when a line is missing.
    pub fn parse(text: &str) -> Option<VersionInfo> {
        let field = |label: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(label)?.strip_prefix(':'))
                .map(|value| value.trim().to_owned())
        };
        Some(VersionInfo {
            release_version: field("Release Version")?,
            git_commit_hash: field("Git Commit Hash")?,
            git_branch: field("Git Branch")?,
            utc_build_time: field("UTC Build Time")?,
            go_version: field("Go Version")?,
            failpoint_build: field("Failpoint Build")? == "true",
        })
    }
}

/// The six lines, each ending in a newline, exactly as DM prints them.
impl fmt::Display for VersionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Release Version: {}", self.release_version)?;
        writeln!(f, "Git Commit Hash: {}", self.git_commit_hash)?;
        writeln!(f, "Git Branch: {}", self.git_branch)?;
        writeln!(f, "UTC Build Time: {}", self.utc_build_time)?;
        writeln!(f, "Go Version: {}", self.go_version)?;
        writeln!(f, "Failpoint Build: {}", self.failpoint_build)
    }
}

/// grpc-gateway writes 64-bit integers as JSON strings (JavaScript numbers cannot hold them);
/// a plain number is accepted too.
mod u64_as_string {
    use super::*;

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum StringOrNumber {
            String(String),
            Number(u64),
        }
        match StringOrNumber::deserialize(deserializer)? {
            StringOrNumber::String(text) => text.parse().map_err(serde::de::Error::custom),
            StringOrNumber::Number(number) => Ok(number),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_keeps_the_gateway_shape() {
        let text = r#"{"result":true,"msg":"","members":[
            {"leader":{"msg":"","name":"m1","addr":"127.0.0.11:8261"}},
            {"master":{"msg":"","masters":[{"name":"m1","memberID":"11540000000000000001",
               "alive":true,"peerURLs":["http://127.0.0.11:8291"],
               "clientURLs":["http://127.0.0.11:8261"]}]}},
            {"worker":{"msg":"","workers":[{"name":"w1","addr":"127.0.0.21:8262",
               "stage":"bound","source":"mysql-replica-01"}]}}]}"#;
        let members: MembersResponse = serde_json::from_str(text).unwrap();
        assert_eq!(members.leader_name(), Some("m1"));
        assert_eq!(members.masters()[0].member_id, 11_540_000_000_000_000_001);
        assert_eq!(members.workers()[0].stage, WorkerStage::Bound);
        let again: serde_json::Value = serde_json::to_value(&members).unwrap();
        let original: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(again, original);
    }

    #[test]
    fn a_missing_field_is_an_error() {
        let text = r#"{"name":"w1","addr":"a","stage":"free"}"#;
        assert!(serde_json::from_str::<WorkerMember>(text).is_err());
    }

    #[test]
    fn version_block_round_trips() {
        let text = "Release Version: v8.5.1\nGit Commit Hash: 0123\nGit Branch: HEAD\n\
                    UTC Build Time: 2025-01-20 10:00:00\n\
                    Go Version: go version go1.23.4 linux/amd64\nFailpoint Build: false\n";
        let info = VersionInfo::parse(text).unwrap();
        assert_eq!(info.utc_build_time, "2025-01-20 10:00:00");
        assert_eq!(info.to_string(), text);
    }

    #[test]
    fn members_query_paths() {
        assert_eq!(MembersQuery::default().path(), MembersQuery::PATH);
        let query = MembersQuery {
            worker: true,
            names: vec!["a".into(), "b".into()],
            ..MembersQuery::default()
        };
        assert_eq!(query.path(), "/apis/v1alpha1/members?worker=true&names=a&names=b");
    }
}
