//! Preflight: before any service is touched, look at every selected instance (in parallel) and
//! at the DM cluster, and report every problem found, not just the first.

use std::collections::{BTreeMap, HashMap};

use std::sync::Arc;

use indicatif::HumanBytes;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::hosts::Hosts;
use super::remote::Remote;
use crate::dm::client::{DmClient, DmError};
use crate::dm::version::VersionInfo;
use crate::package::{Package, PackageFile};
use crate::plan::{Plan, PlannedInstance, Strategy};
use crate::remote::Answer;
use crate::ssh::SshError;
use crate::topology::layout::ROLLBACK_DIR;

/// What preflight learned of an instance's installed binary.
#[derive(Debug, Clone)]
pub struct InstanceFacts {
    /// What it says of itself (`-V`).
    pub version: VersionInfo,
    /// Its sha256, to recognise instances already on the package; only asked for when its
    /// size is the package binary's (`None` otherwise).
    pub sha256: Option<String>,
    /// When the binary is the package's: the package's other files and links that `bin/` does
    /// not hold as the package has them (a repack of the same binary with a changed config).
    pub other_files_differ: Vec<String>,
}

/// What staging an instance takes on its host's disk, and what that disk has.
#[derive(Debug, Clone)]
struct DiskUse {
    /// The file system of the deploy dir (its device number), as the host reports it.
    file_system: String,
    free: u64,
    /// What the package unpacks to, plus TiUP's backup of `bin/` while it is still to be made.
    needed: u64,
}

impl InstanceFacts {
    /// Whether `bin/` already holds the package, every file of it (an earlier run put it
    /// there).
    pub fn on_package(&self, package: &Package) -> bool {
        self.sha256.as_deref() == Some(package.entry_sha256.as_str())
            && self.other_files_differ.is_empty()
    }
}

/// Checks every instance and, unless `--offline`, that the DM cluster has a leader. Hosts are
/// checked side by side (`concurrency` at a time when their connections are spared), the
/// instances of one host at once.
pub async fn check(
    plan: &Plan,
    hosts: &Hosts,
    client: &DmClient,
    masters: &[String],
    concurrency: usize,
) -> (HashMap<String, InstanceFacts>, Vec<String>) {
    // The package itself is streamed, never stored on the host: what it unpacks to is what
    // staging takes (the swap moves it into bin/).
    let unpacked = plan.package.unpacked_size;
    let (entry, entry_size) = (plan.package.entry(), plan.package.entry_size);
    let entry_sha256: Arc<str> = plan.package.entry_sha256.as_str().into();
    let others: Arc<[PackageFile]> =
        plan.package.files.iter().filter(|f| f.path != entry).cloned().collect();
    // Offline, nothing is stopped or started: the service need not be known.
    let needs_unit = plan.strategy == Strategy::Rolling;
    let limit = Arc::new(Semaphore::new(hosts.fan_out(concurrency)));
    let mut checks = JoinSet::new();
    for host in &plan.hosts {
        let remote = hosts.get(&host.ssh_host, host.ssh_port).clone();
        let on_host =
            |i: &&PlannedInstance| i.ssh_host == host.ssh_host && i.ssh_port == host.ssh_port;
        let instances: Vec<PlannedInstance> =
            plan.instances.iter().filter(on_host).cloned().collect();
        let (entry_sha256, others, limit) = (entry_sha256.clone(), others.clone(), limit.clone());
        checks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let each = instances.iter().map(|planned| {
                let script = FactsScript {
                    planned,
                    entry_size,
                    entry_sha256: &entry_sha256,
                    others: &others,
                };
                let remote = &remote;
                async move {
                    let result = check_instance(remote, &script, unpacked, needs_unit).await;
                    (planned.id.clone(), result)
                }
            });
            let results = futures_util::future::join_all(each).await;
            remote.rest().await;
            results
        });
    }

    let mut facts = HashMap::new();
    let mut disks = HashMap::new();
    let mut problems = Vec::new();
    while let Some(joined) = checks.join_next().await {
        for result in joined.expect("preflight tasks do not panic") {
            match result {
                (id, Ok((found, disk))) => {
                    facts.insert(id.clone(), found);
                    disks.insert(id, disk);
                }
                (id, Err(problem)) => problems.push(format!("{id}: {problem}")),
            }
        }
    }
    problems.sort();
    problems.extend(shared_disk_problems(plan, &facts, &disks));
    if plan.strategy == Strategy::Rolling {
        problems.extend(leader_problem(client, masters).await);
    }
    (facts, problems)
}

/// Why the DM cluster cannot be rolled, if it cannot: it must answer and have a leader.
async fn leader_problem(client: &DmClient, masters: &[String]) -> Option<String> {
    match client.members_from_any(masters).await {
        Ok(members) if members.leader().is_some() => None,
        Ok(_) => Some(
            "the DM cluster has no dm-master leader; fix the cluster first, or use --offline if it is stopped"
                .to_owned(),
        ),
        // The cluster answered, but not over TLS with the store's files: starting it, or
        // --offline, is not the advice then.
        Err(err @ DmError::Tls { .. }) => Some(format!(
            "the DM cluster refused a TLS connection ({err}); the store's tls/ files must be \
             the cluster's own (as TiUP deployed them)"
        )),
        Err(err @ DmError::ServesHttps { .. }) => {
            Some(format!("the DM cluster answered, but not in plain HTTP: {err}"))
        }
        Err(err) => Some(format!(
            "the DM cluster does not answer ({err}); start it, or use --offline if it is meant to be stopped"
        )),
    }
}

/// Instances on one host and file system are staged side by side: each may fit alone while
/// together they do not. One problem per such file system, naming its instances (instances
/// already on the package are not staged, and do not count).
fn shared_disk_problems(
    plan: &Plan,
    facts: &HashMap<String, InstanceFacts>,
    disks: &HashMap<String, DiskUse>,
) -> Vec<String> {
    // By host and file system; members in plan order.
    let mut groups: BTreeMap<(&str, u16, &str), Vec<&PlannedInstance>> = BTreeMap::new();
    for planned in &plan.instances {
        let Some(disk) = disks.get(&planned.id) else { continue };
        if facts.get(&planned.id).is_some_and(|f| f.on_package(&plan.package)) {
            continue;
        }
        let key = (planned.ssh_host.as_str(), planned.ssh_port, disk.file_system.as_str());
        groups.entry(key).or_default().push(planned);
    }
    groups
        .into_values()
        .filter(|members| members.len() > 1)
        .filter_map(|members| {
            let uses: Vec<&DiskUse> = members.iter().map(|m| &disks[&m.id]).collect();
            let free = uses.iter().map(|d| d.free).min()?;
            let needed: u64 = uses.iter().map(|d| d.needed).sum();
            let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
            (free < needed).then(|| {
                format!(
                    "{}: their deploy dirs share one file system with only {} free, {} needed to \
                     stage them all (what the package unpacks to, and TiUP's backups of bin/ \
                     still to be made); free some space, or patch them one run at a time with -N",
                    ids.join(", "),
                    HumanBytes(free),
                    HumanBytes(needed)
                )
            })
        })
        .collect()
}

/// What makes an instance unfit to be patched.
#[derive(Debug, thiserror::Error)]
enum InstanceProblem {
    #[error("deploy dir {dir} does not exist on {host}")]
    NoDeployDir { dir: String, host: String },
    #[error("{binary} is missing; is this a TiUP-deployed DM instance?")]
    NoBinary { binary: String },
    #[error(
        "systemd does not know {unit} on {host} (`{systemctl} status` finds no such unit); \
         is global.systemd_mode in meta.yaml right for this cluster?"
    )]
    NoUnit { unit: String, host: String, systemctl: String },
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

/// What the facts of an instance are asked with.
struct FactsScript<'a> {
    planned: &'a PlannedInstance,
    /// The size of the package's binary: the installed one is hashed only when it has it.
    entry_size: u64,
    /// The package binary's sha256: the other files are compared only when the installed
    /// binary has it.
    entry_sha256: &'a str,
    /// The package's other files and links, compared with `bin/` when the binary is the same.
    others: &'a [PackageFile],
}

async fn check_instance(
    remote: &Remote,
    script: &FactsScript<'_>,
    unpacked: u64,
    needs_unit: bool,
) -> Result<(InstanceFacts, DiskUse), InstanceProblem> {
    let planned = script.planned;
    let unit_scope = needs_unit.then(|| remote.scope());
    let entry = (script.entry_size, script.entry_sha256);
    let stdout = remote.facts(planned, entry, script.others, unit_scope).await?;
    let unreadable = || InstanceProblem::Unreadable {
        host: remote.label.clone(),
        dir: planned.deploy_dir.clone(),
        output: stdout.lines().next().unwrap_or_default().to_owned(),
    };
    let answer = Answer::parse(&stdout).map_err(|_| unreadable())?;
    let (mut free, mut file_system) = (None, String::new());
    let (mut backup, mut rollbacks) = (0, 0);
    let mut sha256 = None;
    let mut other_files_differ = Vec::new();
    for (key, value) in answer.lines() {
        match (key, value) {
            ("deploy", _) => {
                let (dir, host) = (planned.deploy_dir.clone(), remote.label.clone());
                return Err(InstanceProblem::NoDeployDir { dir, host });
            }
            ("binary", _) => {
                return Err(InstanceProblem::NoBinary { binary: planned.binary.clone() });
            }
            ("unit", _) => {
                return Err(InstanceProblem::NoUnit {
                    unit: planned.service.clone(),
                    host: remote.label.clone(),
                    systemctl: remote.systemctl("").trim_end().to_owned(),
                });
            }
            ("free", kib) => free = Some(kib.parse::<u64>().map_err(|_| unreadable())? * 1024),
            ("fs", device) => file_system = device.to_owned(),
            ("backup", kib) => backup = kib.trim().parse::<u64>().unwrap_or(0) * 1024,
            ("rollbacks", kib) => rollbacks = kib.trim().parse::<u64>().unwrap_or(0) * 1024,
            ("sha256", hex) if hex.len() == 64 => sha256 = Some(hex.to_owned()),
            ("differs", path) => other_files_differ.push(path.to_owned()),
            ("size" | "version", _) => {}
            _ => return Err(unreadable()),
        }
    }
    let version = answer.block("version").unwrap_or_default();
    let version = version.as_str();
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
    let disk = DiskUse { file_system, free, needed };
    Ok((InstanceFacts { version: parsed, sha256, other_files_differ }, disk))
}
