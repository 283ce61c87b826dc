//! Preflight: before any service is touched, look at every selected instance (in parallel) and
//! at the DM cluster, and report every problem found, not just the first.

use std::collections::HashMap;

use indicatif::HumanBytes;
use tokio::task::JoinSet;

use super::hosts::Hosts;
use super::remote::Remote;
use super::roll::ROLLBACK_DIR;
use super::tree::{PICK_HASHER, VERSION};
use crate::dm::client::{DmClient, DmError};
use crate::dm::version::VersionInfo;
use crate::package::Package;
use crate::plan::{Plan, PlannedInstance};
use crate::ssh::{SshError, shell_quote};

/// What preflight learned of an instance's installed binary.
#[derive(Debug, Clone)]
pub struct InstanceFacts {
    /// What it says of itself (`-V`).
    pub version: VersionInfo,
    /// Its sha256, to recognise instances already on the package; only asked for when its
    /// size is the package binary's (`None` otherwise).
    pub sha256: Option<String>,
}

impl InstanceFacts {
    /// Whether the installed binary already is the package's (an earlier run put it there).
    pub fn on_package(&self, package: &Package) -> bool {
        self.sha256.as_deref() == Some(package.entry_sha256.as_str())
    }
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
        // The package itself is streamed, never stored on the host: what it unpacks to is
        // what staging takes (the swap moves it into bin/).
        let unpacked = plan.package.unpacked_size;
        let entry_size = plan.package.entry_size;
        checks.spawn(async move {
            let result = check_instance(&remote, &planned, unpacked, entry_size).await;
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
            // The cluster answered, but not over TLS with the store's files: starting it, or
            // --offline, is not the advice then.
            Err(err @ DmError::Tls { .. }) => problems.push(format!(
                "the DM cluster refused a TLS connection ({err}); the store's tls/ files must be \
                 the cluster's own (as TiUP deployed them)"
            )),
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
    #[error("{binary} -V failed: {output}")]
    VersionUnknown { binary: String, output: String },
    #[error(
        "only {} free in {dir}, {} needed for what the package unpacks to{}{}",
        HumanBytes(*.free),
        HumanBytes(*.needed),
        backup_note(*.backup),
        rollback_note(*.rollbacks)
    )]
    LowDisk { dir: String, free: u64, needed: u64, backup: u64, rollbacks: u64 },
    #[error(
        "{host}: the check of {dir} printed what it should not ({output}); is this a Linux host?"
    )]
    Unreadable { host: String, dir: String, output: String },
    #[error(transparent)]
    Ssh(#[from] SshError),
}

/// TiUP's backup of `bin/`, when it is still to be made (see [`crate::engine::tree::backup_script`]).
fn backup_note(bytes: u64) -> String {
    if bytes == 0 {
        return String::new();
    }
    format!(" and TiUP's backup of bin/ ({}), made by the first patch", HumanBytes(bytes))
}

/// What the rollback points kept beside `bin/` take, when they take anything.
fn rollback_note(bytes: u64) -> String {
    if bytes == 0 {
        return String::new();
    }
    format!(
        "; the rollback points in {ROLLBACK_DIR}/ take {} of it (--keep-rollbacks keeps fewer)",
        HumanBytes(bytes)
    )
}

/// One round trip: the deploy dir, free space, what TiUP's backup of `bin/` will take if it is
/// still to be made, what the rollback points take, the installed binary's size (its sha256
/// only when the size is the package binary's) and its version.
fn facts_script(planned: &PlannedInstance, entry_size: u64) -> String {
    format!(
        "d={deploy}; b={binary}\n\
         if [ ! -d \"$d\" ]; then echo nodeploy; exit 0; fi\n\
         echo \"free $(df -Pk \"$d\" | awk 'NR==2 {{print $4}}')\"\n\
         if [ ! -d {backup} ]; then echo \"backup $(du -sk \"$d/bin\" 2>/dev/null | cut -f1)\"; fi\n\
         echo \"rollbacks $(du -sk \"$d/{ROLLBACK_DIR}\" 2>/dev/null | cut -f1)\"\n\
         if [ ! -f \"$b\" ]; then echo nobinary; exit 0; fi\n\
         size=$(stat -c %s \"$b\"); echo \"size $size\"\n\
         if [ \"$size\" = {entry_size} ]; then {PICK_HASHER}; \
         echo \"sha256 $($hash \"$b\" | cut -d' ' -f1)\"; fi\n\
         echo {VERSION}\n\"$b\" -V 2>&1 || echo \"exit status $?\"\n",
        deploy = shell_quote(&planned.deploy_dir),
        binary = shell_quote(&planned.binary),
        backup = shell_quote(&planned.backup_dir),
    )
}

async fn check_instance(
    remote: &Remote,
    planned: &PlannedInstance,
    unpacked: u64,
    entry_size: u64,
) -> Result<InstanceFacts, InstanceProblem> {
    let stdout = remote.run(&facts_script(planned, entry_size)).await?;
    let unreadable = || InstanceProblem::Unreadable {
        host: remote.label.clone(),
        dir: planned.deploy_dir.clone(),
        output: stdout.lines().next().unwrap_or_default().to_owned(),
    };
    let (facts, version) = stdout.split_once(&format!("{VERSION}\n")).unwrap_or((&stdout, ""));
    let mut free = None;
    let (mut backup, mut rollbacks) = (0, 0);
    let mut sha256 = None;
    for line in facts.lines() {
        match line.split_once(' ').unwrap_or((line, "")) {
            ("nodeploy", _) => {
                let (dir, host) = (planned.deploy_dir.clone(), remote.label.clone());
                return Err(InstanceProblem::NoDeployDir { dir, host });
            }
            ("nobinary", _) => {
                return Err(InstanceProblem::NoBinary { binary: planned.binary.clone() });
            }
            ("free", kib) => free = Some(kib.parse::<u64>().map_err(|_| unreadable())? * 1024),
            ("backup", kib) => backup = kib.trim().parse::<u64>().unwrap_or(0) * 1024,
            ("rollbacks", kib) => rollbacks = kib.trim().parse::<u64>().unwrap_or(0) * 1024,
            ("sha256", hex) if hex.len() == 64 => sha256 = Some(hex.to_owned()),
            ("size", _) => {}
            _ => return Err(unreadable()),
        }
    }
    let free = free.ok_or_else(unreadable)?;
    let parsed = VersionInfo::parse(version);
    if parsed.release.is_empty() {
        let output = version.lines().map(str::trim).collect::<Vec<_>>().join(" / ");
        return Err(InstanceProblem::VersionUnknown { binary: planned.binary.clone(), output });
    }
    let needed = unpacked + backup;
    if free < needed {
        let dir = planned.deploy_dir.clone();
        return Err(InstanceProblem::LowDisk { dir, free, needed, backup, rollbacks });
    }
    Ok(InstanceFacts { version: parsed, sha256 })
}
