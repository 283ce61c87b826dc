//! Preflight: before any service is touched, look at every selected instance (in parallel) and
//! at the DM cluster, and report every problem found, not just the first.

use std::collections::HashMap;

use indicatif::HumanBytes;
use tokio::task::JoinSet;

use super::hosts::Hosts;
use super::remote::Remote;
use crate::dm::client::DmClient;
use crate::dm::version::VersionInfo;
use crate::plan::{Plan, PlannedInstance};
use crate::ssh::SshError;

/// What preflight learned of an instance's installed binary.
#[derive(Debug, Clone)]
pub struct InstanceFacts {
    /// What it says of itself (`-V`).
    pub version: VersionInfo,
    /// Its sha256, to recognise instances already on the package.
    pub sha256: Option<String>,
}

/// Checks every instance and, unless `--offline`, that the DM cluster has a leader.
pub async fn check(
    plan: &Plan,
    hosts: &Hosts,
    client: &DmClient,
    masters: &[String],
) -> (HashMap<String, InstanceFacts>, Vec<String>) {
    let mut checks = JoinSet::new();
    for planned in &plan.instances {
        let remote = hosts.get(&planned.ssh_host, planned.ssh_port).clone();
        let planned = planned.clone();
        // The upload, everything it unpacks to, and room for the backup of the binary.
        let needed = plan.package.size + 2 * plan.package.unpacked_size;
        checks.spawn(async move {
            let result = check_instance(&remote, &planned, needed).await;
            (planned.id, result)
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

/// What makes an instance unfit to be patched.
#[derive(Debug, thiserror::Error)]
enum InstanceProblem {
    #[error("deploy dir {dir} does not exist on {host}")]
    NoDeployDir { dir: String, host: String },
    #[error("{binary} is missing; is this a TiUP-deployed DM instance?")]
    NoBinary { binary: String },
    #[error("{binary} -V failed: {source}")]
    VersionUnknown { binary: String, source: SshError },
    #[error(
        "only {} free in {dir}, {} needed for the package, what it unpacks to and the backup",
        HumanBytes(*.free),
        HumanBytes(*.needed)
    )]
    LowDisk { dir: String, free: u64, needed: u64 },
    #[error(transparent)]
    Ssh(#[from] SshError),
}

async fn check_instance(
    remote: &Remote,
    planned: &PlannedInstance,
    needed: u64,
) -> Result<InstanceFacts, InstanceProblem> {
    if !remote.is_dir(&planned.deploy_dir).await? {
        return Err(InstanceProblem::NoDeployDir {
            dir: planned.deploy_dir.clone(),
            host: remote.label.clone(),
        });
    }
    let sha256 = remote.sha256(&planned.binary).await?;
    if sha256.is_none() {
        return Err(InstanceProblem::NoBinary { binary: planned.binary.clone() });
    }
    let version = remote.binary_version(&planned.binary).await.map_err(|source| {
        InstanceProblem::VersionUnknown { binary: planned.binary.clone(), source }
    })?;
    let free = remote.free_bytes(&planned.deploy_dir).await?;
    if free < needed {
        return Err(InstanceProblem::LowDisk { dir: planned.deploy_dir.clone(), free, needed });
    }
    Ok(InstanceFacts { version, sha256 })
}
