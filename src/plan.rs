//! What a patch will do, as a plain value: printable (`--dry-run`), testable without a network,
//! and the only input of the engine.

use std::time::Duration;

use serde::Serialize;

use crate::dm::client::MembersResponse;
use crate::dm::order::{Position, roll_order};
use crate::package::{Package, Wire};
use crate::topology::{Cluster, Instance, Role};

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub action: Action,
    pub cluster: String,
    pub component: Role,
    /// The cluster's DM version (`dm_version`), which names TiUP's `bin.old.<version>` backup.
    pub cluster_version: String,
    pub package: Package,
    /// The package's form on its way to the hosts (`--wire`, else its default).
    pub wire: Wire,
    /// Rolling (restarts, one instance at a time) or offline (`--offline`: swaps only). In
    /// JSON, as `offline: true|false`.
    #[serde(rename = "offline", serialize_with = "Strategy::serialize_as_offline")]
    pub strategy: Strategy,
    pub overwrite: bool,
    /// A package whose binary reports another release line than the cluster's may be used.
    pub allow_version_change: bool,
    /// The dm-master leader's member name when it was learned while planning.
    pub leader: Option<String>,
    /// `--soak`, in seconds: how long the build is watched, after the canaries (those
    /// instances marked `canary`) or, without `--canary`, after each instance.
    pub soak_seconds: Option<u64>,
    /// The masters serve DM's OpenAPI: a worker roll moves each source on purpose.
    pub openapi: bool,
    /// The `patched` mark each finished instance gets (see [`PlanOptions::finished_mark`]).
    pub finished_mark: bool,
    /// One upload per host, shared by every selected instance on it.
    pub hosts: Vec<HostStaging>,
    /// The instances in the order they will be patched.
    pub instances: Vec<PlannedInstance>,
    /// Files under `bin/` (relative to it, none of the package's) that the swap deletes: what
    /// the patch being rolled back added. Each is kept beside what the swap replaced, so an
    /// undo, and the rollback point this run leaves, put it back.
    pub remove: Vec<String>,
}

/// How the instances are changed: the two ways a run goes, each its own path through the
/// engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// One instance at a time: (evicted,) stopped, swapped, started, proven healthy on the
    /// package, its migration tasks running again; undone if it fails.
    Rolling,
    /// `--offline`: binaries swapped side by side; nothing is stopped, started or asked of DM.
    Offline,
}

impl Strategy {
    pub fn is_offline(self) -> bool {
        self == Strategy::Offline
    }

    fn serialize_as_offline<S: serde::Serializer>(
        strategy: &Strategy,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_bool(strategy.is_offline())
    }
}

/// What a run is for: the same engine patches forward and rolls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    #[default]
    Patch,
    /// `dm-patch rollback`: the package is a rollback target fetched from a host.
    Rollback,
}

impl Action {
    /// The verb of the prompt: `Patch`, `Roll back`.
    pub fn verb(self) -> &'static str {
        match self {
            Action::Patch => "Patch",
            Action::Rollback => "Roll back",
        }
    }

    /// What going ahead regardless is called, in the advice to pass `--force`.
    pub fn anyway(self) -> &'static str {
        match self {
            Action::Patch => "patch anyway",
            Action::Rollback => "roll back anyway",
        }
    }

    /// One word for it, as rollback points record it: `patch`, `rollback`.
    pub fn word(self) -> &'static str {
        match self {
            Action::Patch => "patch",
            Action::Rollback => "rollback",
        }
    }

    /// The summary's: `Patched`, `Rolled back`.
    pub fn done(self) -> &'static str {
        match self {
            Action::Patch => "Patched",
            Action::Rollback => "Rolled back",
        }
    }
}

/// A host the package goes to, once, whatever the number of selected instances on it.
#[derive(Debug, Clone, Serialize)]
pub struct HostStaging {
    /// Where SSH goes (`manage_host` or `host`).
    pub ssh_host: String,
    pub ssh_port: u16,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedInstance {
    pub id: String,
    pub role: Role,
    pub name: String,
    pub host: String,
    pub port: u16,
    pub ssh_host: String,
    pub ssh_port: u16,
    pub deploy_dir: String,
    pub service: String,
    /// The binary that gets replaced.
    pub binary: String,
    /// TiUP's one-time backup of `bin` (kept if it already exists).
    pub backup_dir: String,
    /// Where the package is unpacked (`tree/`) and what the swap replaced is kept
    /// (`previous/`), next to `bin`.
    pub staging_dir: String,
    pub position: Position,
    pub reason: &'static str,
    /// meta.yaml already marks it `patched` (by an earlier patch, perhaps another package).
    pub marked_patched: bool,
    /// The source bound to it when planned (a dm-worker's).
    pub source: Option<String>,
    /// Patched in the canary phase, before the build is watched (`--canary`).
    pub canary: bool,
    #[serde(skip)]
    pub instance: Instance,
}

/// What the operator asked for beyond the instances and the package.
#[derive(Debug, Clone, Copy)]
pub struct PlanOptions {
    /// What the run is for, as it is told.
    pub action: Action,
    /// `--offline`: swap binaries only; no restart, no DM API call.
    pub offline: bool,
    /// `--overwrite`: keep the package in the store as the cluster's permanent patch.
    pub overwrite: bool,
    /// `--allow-version-change`: the package may move the cluster to another release line.
    pub allow_version_change: bool,
    /// `--canary N`: the build is watched once N instances run it (see [`canary_phase`]).
    pub canaries: Option<usize>,
    /// `--soak`: how long each watch lasts.
    pub soak: Option<Duration>,
    /// The masters serve DM's OpenAPI: a source can be moved on purpose.
    pub openapi: bool,
    /// The `patched` mark a finished instance gets: `false` when it runs the cluster's
    /// original binary again (`rollback --to-original`).
    pub finished_mark: bool,
    /// `--wire`: the package's form on the wire; `None`, its default.
    pub wire: Option<Wire>,
}

/// How many of `instances` (in roll order) the canary phase touches for `canaries`: dm-masters,
/// the first `canaries`; dm-workers, up to the one after which `canaries` workers on the
/// package run a source. A free worker runs none until a source moves onto it: with DM's
/// OpenAPI (`openapi`) one is moved there on purpose from a bound worker, without stopping it;
/// without, only when a bound worker stops, and each bound worker patched leaves one patched
/// worker bound (itself, or the free one that took its source).
pub fn canary_phase(instances: &[PlannedInstance], canaries: usize, openapi: bool) -> usize {
    let mut donors = instances.iter().filter(|i| i.position == Position::BoundWorker).count();
    let mut bound = 0;
    for (index, planned) in instances.iter().enumerate() {
        bound += match planned.position {
            Position::FreeWorker if openapi && donors > 0 => {
                donors -= 1;
                1
            }
            Position::FreeWorker => 0,
            _ => 1,
        };
        if bound >= canaries {
            return index + 1;
        }
    }
    instances.len()
}

impl Plan {
    /// Lays out the patch of `selected` (one role, meta.yaml order) with `package`, with what
    /// the DM-masters said of the cluster (`None` when none answered, or with `--offline`).
    pub fn new(
        cluster: &Cluster,
        selected: &[&Instance],
        mut package: Package,
        members: Option<&MembersResponse>,
        options: PlanOptions,
    ) -> Plan {
        let leader = members.and_then(|m| m.leader()).map(|leader| leader.name.clone());
        let workers = members.map(MembersResponse::workers).unwrap_or_default();
        let PlanOptions {
            action,
            offline,
            overwrite,
            allow_version_change,
            canaries,
            soak,
            openapi,
            finished_mark,
            wire,
        } = options;
        let wire = wire.unwrap_or_else(|| package.default_wire());
        if wire == Wire::Gzip {
            // The package file itself goes: its kept tar stream's disk space is freed now.
            package.kept_tar = None;
        }
        let sha = package.short_sha().to_owned();
        let cluster_version = cluster.version().to_owned();

        let mut hosts: Vec<HostStaging> = Vec::new();
        for instance in selected {
            let known = hosts
                .iter()
                .any(|h| h.ssh_host == instance.ssh_host && h.ssh_port == instance.ssh_port);
            if !known {
                hosts.push(HostStaging {
                    ssh_host: instance.ssh_host.clone(),
                    ssh_port: instance.ssh_port,
                });
            }
        }

        let mut instances: Vec<PlannedInstance> =
            roll_order(selected, leader.as_deref(), workers, offline)
                .into_iter()
                .map(|(instance, position)| PlannedInstance {
                    id: instance.id(),
                    role: instance.role,
                    name: instance.name.clone(),
                    host: instance.host.clone(),
                    port: instance.port,
                    ssh_host: instance.ssh_host.clone(),
                    ssh_port: instance.ssh_port,
                    deploy_dir: instance.deploy_dir.clone(),
                    service: instance.service(),
                    binary: instance.binary_path(),
                    backup_dir: instance.layout().backup(&cluster_version),
                    staging_dir: instance.layout().staging(&sha),
                    position,
                    reason: position.reason(),
                    marked_patched: instance.patched,
                    source: workers
                        .iter()
                        .find(|w| w.name == instance.name && !w.source.is_empty())
                        .map(|w| w.source.clone()),
                    canary: false,
                    instance: (*instance).clone(),
                })
                .collect();
        if let Some(canaries) = canaries {
            let touched = canary_phase(&instances, canaries, openapi);
            instances.iter_mut().take(touched).for_each(|planned| planned.canary = true);
        }

        Plan {
            action,
            cluster: cluster.name.clone(),
            component: package.component,
            cluster_version,
            wire,
            package,
            strategy: if offline { Strategy::Offline } else { Strategy::Rolling },
            overwrite,
            allow_version_change,
            leader,
            soak_seconds: soak.map(|soak| soak.as_secs()),
            openapi,
            finished_mark,
            hosts,
            instances,
            remove: Vec::new(),
        }
    }

    /// This plan, deleting `paths` from `bin/` with the swap (those the package itself holds
    /// are left to it).
    pub fn removing(mut self, paths: Vec<String>) -> Plan {
        let ours = |path: &String| self.package.files.iter().any(|f| &f.path == path);
        self.remove = paths.into_iter().filter(|path| !ours(path)).collect();
        self
    }
}
