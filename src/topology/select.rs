//! Which instances a command acts on: `-R` roles AND `-N` nodes, with TiUP's rules and messages.

use super::{Cluster, Instance, Role};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error(
        "the flag -R or -N must be specified at least one; e.g. -R dm-worker, or -N <host:port>"
    )]
    NothingSpecified,
    #[error(
        "role '{0}' is not patched by dm-patch, which patches dm-master and dm-worker; use `tiup dm patch` for it"
    )]
    UnsupportedRole(String),
    #[error("unknown role '{0}': use -R dm-master or -R dm-worker")]
    UnknownRole(String),
    #[error("unknown node '{node}': the cluster's instances are {valid}")]
    UnknownNode { node: String, valid: String },
    #[error(
        "no instance found on specified role({roles}) and nodes({nodes}); check -R and -N against `dm-patch display`"
    )]
    NoMatch { roles: String, nodes: String },
    #[error("can't patch more than one component at once: [{0}]; run once per component with -R")]
    MixedComponents(String),
}

/// Roles TiUP knows in a DM cluster that dm-patch deliberately leaves to TiUP.
const TIUP_ONLY_ROLES: [&str; 3] = ["grafana", "prometheus", "alertmanager"];

/// `-R`/`-N` as typed, comma lists already split.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub roles: Vec<String>,
    pub nodes: Vec<String>,
}

impl Filter {
    /// Checks every role and node name against the cluster; returns the matching roles.
    fn validate(&self, cluster: &Cluster) -> Result<Vec<Role>, SelectError> {
        let mut roles = Vec::new();
        for name in &self.roles {
            match Role::from_component(name) {
                Some(role) => roles.push(role),
                None if TIUP_ONLY_ROLES.contains(&name.as_str()) => {
                    return Err(SelectError::UnsupportedRole(name.clone()));
                }
                None => return Err(SelectError::UnknownRole(name.clone())),
            }
        }
        for node in &self.nodes {
            if !cluster.instances.iter().any(|i| i.id() == *node) {
                let valid: Vec<String> = cluster.instances.iter().map(Instance::id).collect();
                return Err(SelectError::UnknownNode {
                    node: node.clone(),
                    valid: if valid.is_empty() {
                        "none (the topology lists no dm-master or dm-worker)".to_owned()
                    } else {
                        valid.join(", ")
                    },
                });
            }
        }
        Ok(roles)
    }

    fn matches(&self, roles: &[Role], instance: &Instance) -> bool {
        (roles.is_empty() || roles.contains(&instance.role))
            && (self.nodes.is_empty() || self.nodes.contains(&instance.id()))
    }

    /// Instances of `cluster` that match, in meta.yaml order, with no requirement on how many
    /// components they span (display shows any mix).
    pub fn apply<'c>(&self, cluster: &'c Cluster) -> Result<Vec<&'c Instance>, SelectError> {
        let roles = self.validate(cluster)?;
        Ok(cluster.instances.iter().filter(|i| self.matches(&roles, i)).collect())
    }

    /// What `patch` acts on: at least one filter, at least one instance, one component.
    pub fn select_for_patch<'c>(
        &self,
        cluster: &'c Cluster,
    ) -> Result<(Role, Vec<&'c Instance>), SelectError> {
        if self.roles.is_empty() && self.nodes.is_empty() {
            return Err(SelectError::NothingSpecified);
        }
        let selected = self.apply(cluster)?;
        let Some(first) = selected.first() else {
            return Err(SelectError::NoMatch {
                roles: go_list(&self.roles),
                nodes: go_list(&self.nodes),
            });
        };
        let mut components: Vec<Role> = selected.iter().map(|i| i.role).collect();
        components.dedup();
        if components.len() > 1 {
            let names: Vec<&str> = components.iter().map(|r| r.component()).collect();
            return Err(SelectError::MixedComponents(names.join(" ")));
        }
        Ok((first.role, selected))
    }
}

/// Formats a list as Go's `%v` does, as TiUP's messages show it: `[a b]`.
fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::meta::Meta;
    use std::path::Path;

    fn cluster() -> Cluster {
        let meta: Meta = yaml_serde::from_str(
            "topology:\n  master_servers:\n  - host: 127.0.9.1\n  - host: 127.0.9.2\n  worker_servers:\n  - host: 127.0.9.1\n  - host: 127.0.9.3\n",
        )
        .unwrap();
        Cluster::new("t", Path::new("/s"), meta).unwrap()
    }

    fn filter(roles: &[&str], nodes: &[&str]) -> Filter {
        Filter {
            roles: roles.iter().map(|s| s.to_string()).collect(),
            nodes: nodes.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn ids(f: Filter) -> Result<Vec<String>, SelectError> {
        let c = cluster();
        f.select_for_patch(&c).map(|(_, found)| found.iter().map(|i| i.id()).collect())
    }

    #[test]
    fn role_and_node_intersect() {
        assert_eq!(ids(filter(&["dm-worker"], &[])).unwrap(), ["127.0.9.1:8262", "127.0.9.3:8262"]);
        assert_eq!(
            ids(filter(&["dm-worker"], &["127.0.9.3:8262", "127.0.9.1:8261"])).unwrap(),
            ["127.0.9.3:8262"]
        );
        assert_eq!(ids(filter(&[], &["127.0.9.2:8261"])).unwrap(), ["127.0.9.2:8261"]);
    }

    #[test]
    fn tiup_rules() {
        assert_eq!(ids(filter(&[], &[])), Err(SelectError::NothingSpecified));
        assert_eq!(
            ids(filter(&["dm-master"], &["127.0.9.3:8262"])),
            Err(SelectError::NoMatch {
                roles: "[dm-master]".into(),
                nodes: "[127.0.9.3:8262]".into()
            })
        );
        assert_eq!(
            ids(filter(&[], &["127.0.9.1:8261", "127.0.9.1:8262"])),
            Err(SelectError::MixedComponents("dm-master dm-worker".into()))
        );
        assert_eq!(ids(filter(&["tidb"], &[])), Err(SelectError::UnknownRole("tidb".into())));
        assert_eq!(
            ids(filter(&["grafana"], &[])),
            Err(SelectError::UnsupportedRole("grafana".into()))
        );
        let err = ids(filter(&[], &["127.0.9.9:8261"])).unwrap_err();
        assert!(err.to_string().contains("127.0.9.1:8261, 127.0.9.2:8261"), "{err}");
    }
}
