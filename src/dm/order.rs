//! In what order a rolling patch visits instances, and why (dm-master-api.md, "Safe rolling
//! order"): masters followers first and the leader last, after its eviction; workers one at a
//! time, each waited for until it is `free` or `bound` again.

use serde::Serialize;

use super::client::WorkerMember;
use crate::topology::{Instance, Role};

/// Why an instance sits where it does in the roll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Position {
    /// A dm-master follower: restarted before the leader, each only after the previous one
    /// is healthy again, so the etcd quorum is never at risk.
    Follower,
    /// The dm-master leader: evicted first, patched last.
    Leader,
    /// A dm-master whose role could not be learned (no leader answered); the leader is found
    /// again just before each restart, so it is still evicted and moved last.
    MasterRoleUnknown,
    /// A dm-worker whose stage is not known (no master answered): one at a time, only while a
    /// leader exists, waited for until free/bound; its stage is looked at again before each
    /// restart.
    Worker,
    /// A dm-worker that runs no source (free, or offline): first, so that the sources of the
    /// bound workers move onto the package.
    FreeWorker,
    /// A dm-worker bound to a source: after the free workers; when it stops, DM moves its
    /// source to a free worker, which runs the package by then.
    BoundWorker,
    /// `--offline`: the binary is swapped and nothing is restarted.
    Offline,
}

impl Position {
    pub fn reason(self) -> &'static str {
        match self {
            Position::Follower => "follower: patched before the leader, one at a time",
            Position::Leader => "leader: evicted first, then patched last",
            Position::MasterRoleUnknown => {
                "leader not known yet: checked again before each restart"
            }
            Position::Worker => "worker: one at a time, waits until free/bound again",
            Position::FreeWorker => {
                "free worker: first, so that each bound worker's source moves onto the package"
            }
            Position::BoundWorker => {
                "bound worker: its source moves once, to a free worker on the package (or waits \
                 for it when none is free)"
            }
            Position::Offline => "offline: binary swapped, no restart",
        }
    }
}

/// Orders `instances` (all of one role, in meta.yaml order) for the roll. `leader` is the
/// dm-master leader's member name when known; `workers`, the workers as the members list shows
/// them (empty when not known).
pub fn roll_order<'a>(
    instances: &[&'a Instance],
    leader: Option<&str>,
    workers: &[WorkerMember],
    offline: bool,
) -> Vec<(&'a Instance, Position)> {
    if offline {
        return instances.iter().map(|i| (*i, Position::Offline)).collect();
    }
    let mut ordered: Vec<(&Instance, Position)> = instances
        .iter()
        .map(|i| {
            let position = match (i.role, leader) {
                (Role::Worker, _) => match workers.iter().find(|w| w.name == i.name) {
                    Some(w) if w.runs_no_source() => Position::FreeWorker,
                    Some(_) => Position::BoundWorker,
                    None => Position::Worker,
                },
                (Role::Master, Some(leader)) if i.name == leader => Position::Leader,
                (Role::Master, Some(_)) => Position::Follower,
                (Role::Master, None) => Position::MasterRoleUnknown,
            };
            (*i, position)
        })
        .collect();
    // A stable sort keeps meta.yaml order among followers and among workers of one kind (the
    // roll itself looks again before each restart: see `engine::judge::next_worker`).
    ordered.sort_by_key(|(_, position)| match position {
        Position::FreeWorker => 0,
        Position::Leader | Position::BoundWorker => 2,
        _ => 1,
    });
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Cluster;
    use crate::topology::meta::Meta;
    use std::path::Path;

    fn masters() -> Cluster {
        let meta: Meta = yaml_serde::from_str(
            "topology:\n  master_servers:\n  - host: a\n  - host: b\n  - host: c\n",
        )
        .unwrap();
        Cluster::new("t", Path::new("/s"), meta).unwrap()
    }

    #[test]
    fn leader_goes_last_followers_keep_order() {
        let cluster = masters();
        let all: Vec<&Instance> = cluster.instances.iter().collect();
        let order = roll_order(&all, Some("dm-a-8261"), &[], false);
        let names: Vec<(&str, Position)> =
            order.iter().map(|(i, p)| (i.host.as_str(), *p)).collect();
        assert_eq!(
            names,
            [("b", Position::Follower), ("c", Position::Follower), ("a", Position::Leader)]
        );
    }

    #[test]
    fn offline_and_unknown_leader_keep_meta_order() {
        let cluster = masters();
        let all: Vec<&Instance> = cluster.instances.iter().collect();
        let hosts = |order: Vec<(&Instance, Position)>| -> Vec<String> {
            order.iter().map(|(i, _)| i.host.clone()).collect()
        };
        assert_eq!(hosts(roll_order(&all, None, &[], false)), ["a", "b", "c"]);
        assert_eq!(hosts(roll_order(&all, Some("dm-a-8261"), &[], true)), ["a", "b", "c"]);
    }

    #[test]
    fn free_workers_go_first() {
        let meta: Meta = yaml_serde::from_str(
            "topology:\n  worker_servers:\n  - host: a\n  - host: b\n  - host: c\n",
        )
        .unwrap();
        let cluster = Cluster::new("t", Path::new("/s"), meta).unwrap();
        let all: Vec<&Instance> = cluster.instances.iter().collect();
        let member = |host: &str, stage: &str| WorkerMember {
            name: format!("dm-{host}-8262"),
            addr: String::new(),
            stage: stage.into(),
            source: if stage == "bound" { format!("s-{host}") } else { String::new() },
        };
        let workers = [member("a", "bound"), member("b", "bound"), member("c", "free")];
        let order = roll_order(&all, None, &workers, false);
        let names: Vec<(&str, Position)> =
            order.iter().map(|(i, p)| (i.host.as_str(), *p)).collect();
        assert_eq!(
            names,
            [
                ("c", Position::FreeWorker),
                ("a", Position::BoundWorker),
                ("b", Position::BoundWorker)
            ]
        );
    }
}
