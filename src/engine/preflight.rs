//! Preflight: before any service is touched, look at every selected instance (in parallel) and
//! at the DM cluster, and report every problem found, not just the first.

use std::collections::HashMap;

use tokio::task::JoinSet;

use super::hosts::Hosts;
use super::remote::Remote;
use crate::dm::client::DmClient;
use crate::dm::version::VersionInfo;
use crate::plan::{Plan, PlannedInstance};
use crate::ssh::shell_quote;

/// What preflight learned of one instance.
#[derive(Debug, Clone)]
pub struct InstanceFacts {
    /// What the installed binary says of itself (`-V`).
    pub installed_version: VersionInfo,
    /// sha256 of the installed binary, to recognise instances already on the package.
    pub installed_sha256: Option<String>,
}

/// Checks every instance and, unless `--offline`, that the DM cluster has a leader.
pub async fn check(
    plan: &Plan,
    hosts: &Hosts,
    client: &DmClient,
    masters: &[String],
) -> (HashMap<String, InstanceFacts>, Vec<String>) {
    let mut checks = JoinSet::new();
    for step in &plan.instances {
        let remote = hosts.get(&step.ssh_host, step.ssh_port).clone();
        let step = step.clone();
        let needed = plan.package.size + 2 * plan.package.entry_size;
        checks.spawn(async move {
            let result = check_instance(&remote, &step, needed).await;
            (step.id, result)
        });
    }

    let mut facts = HashMap::new();
    let mut problems = Vec::new();
    while let Some(joined) = checks.join_next().await {
        match joined.expect("preflight tasks do not panic") {
            (id, Ok(found)) => {
                facts.insert(id, found);
            }
            (id, Err(problem)) => problems.push(format!("{id}: {problem}")),
        }
    }
    problems.sort();

    if !plan.offline {
        match client.members_from_any(masters).await {
            Ok(members) if members.leader().is_some() => {}
            Ok(_) => problems.push(
                "the DM cluster has no dm-master leader; fix the cluster first, or use --offline if it is stopped"
                    .to_owned(),
            ),
            Err(err) => problems.push(format!(
                "the DM cluster does not answer ({err}); start it, or use --offline if it is meant to be stopped"
            )),
        }
    }
    (facts, problems)
}

async fn check_instance(
    remote: &Remote,
    step: &PlannedInstance,
    needed_bytes: u64,
) -> Result<InstanceFacts, String> {
    let deploy = shell_quote(&step.deploy_dir);
    remote
        .run(&format!("test -d {deploy}"))
        .await
        .map_err(|_| {
            format!(
                "deploy dir {} does not exist on {}",
                step.deploy_dir, remote.label
            )
        })?;
    let installed_sha256 = remote
        .sha256(&step.binary)
        .await
        .map_err(|e| e.to_string())?;
    if installed_sha256.is_none() {
        return Err(format!(
            "{} is missing; is this a TiUP-deployed DM instance?",
            step.binary
        ));
    }
    let installed_version = remote
        .binary_version(&step.binary)
        .await
        .map_err(|err| format!("{} -V failed: {err}", step.binary))?;
    let free = remote
        .free_bytes(&step.deploy_dir)
        .await
        .map_err(|e| e.to_string())?;
    if free < needed_bytes {
        return Err(format!(
            "only {} free in {}, {} needed for the package, the new binary and the backup",
            crate::output::human_bytes(free),
            step.deploy_dir,
            crate::output::human_bytes(needed_bytes)
        ));
    }
    Ok(InstanceFacts {
        installed_version,
        installed_sha256,
    })
}
