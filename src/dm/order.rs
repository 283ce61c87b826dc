//! In what order a rolling patch visits instances, and why (dm-master-api.md, "Safe rolling
//! order"): masters followers first and the leader last, after its eviction; workers one at a
//! time, each waited for until it is `free` or `bound` again.

use serde::Serialize;

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
    /// A dm-worker: one at a time, only while a leader exists, waited for until free/bound.
    Worker,
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
            Position::Offline => "offline: binary swapped, no restart",
        }
    }
}

/// Orders `instances` (all of one role, in meta.yaml order) for the roll. `leader` is the
/// dm-master leader's member name when known.
pub fn roll_order<'a>(
    instances: &[&'a Instance],
    leader: Option<&str>,
    offline: bool,
) -> Vec<(&'a Instance, Position)> {
    if offline {
        return instances.iter().map(|i| (*i, Position::Offline)).collect();
    }
    let mut ordered: Vec<(&Instance, Position)> = instances
        .iter()
        .map(|i| {
            let position = match (i.role, leader) {
                (Role::Worker, _) => Position::Worker,
                (Role::Master, Some(leader)) if i.name == leader => Position::Leader,
                (Role::Master, Some(_)) => Position::Follower,
                (Role::Master, None) => Position::MasterRoleUnknown,
            };
            (*i, position)
        })
        .collect();
    // A stable sort keeps meta.yaml order among followers and among workers.
    ordered.sort_by_key(|(_, position)| *position == Position::Leader);
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
        let order = roll_order(&all, Some("dm-a-8261"), false);
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
        assert_eq!(hosts(roll_order(&all, None, false)), ["a", "b", "c"]);
        assert_eq!(hosts(roll_order(&all, Some("dm-a-8261"), true)), ["a", "b", "c"]);
    }
}
