//! Staging: the package goes to every host in one pass (all hosts in parallel, at most
//! `--concurrency` at a time), streamed over SSH straight into `tar -x` in an instance's
//! staging dir (gzipped, or as plain tar when gzip saves little: see
//! [`crate::package::Wire`]), so the host never stores the package itself nor reads anything
//! twice. What was unpacked is then proven identical to what the local check saw (every path, type, size, mode
//! and sha256, and nothing else), owned like the binary it replaces, and its binary asked for
//! its version. Other instances on the same host get a verified copy. TiUP's backup of each
//! instance's `bin` is made in the same command. Nothing that runs is touched; a failure here
//! leaves only files that `cleanup` removes.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::events::{Event, Progress};
use super::hosts::Hosts;
use super::preflight::InstanceFacts;
use super::remote::{Remote, Removal};
use super::tree::Listing;
use crate::dm::version::VersionInfo;
use crate::plan::{HostStaging, Plan, PlannedInstance};
use crate::remote;
use crate::ssh::SshError;

/// The package's tree in an instance's staging dir, verified and ready to be swapped in.
#[derive(Debug, Clone)]
pub struct Staged {
    /// What the new binary says of itself (`-V`) on that host.
    pub version: VersionInfo,
}

/// Why a host could not be staged; each reads as one problem line.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("{host}: cannot read the package: {source}")]
    Package { host: String, source: std::io::Error },
    /// `at` is the host, or the instance when the command was for one. (Boxed: an `SshError`
    /// is large, and every `Result` of staging would pay for it.)
    #[error("{at}: {source}")]
    Ssh { at: String, source: Box<SshError> },
    #[error("{at}: staging failed: {detail}")]
    Failed { at: String, detail: String },
    #[error(
        "{id}: what was unpacked is not what dm-patch checked ({difference}), so nothing was installed"
    )]
    NotTheChecked { id: String, difference: String },
    #[error("{id}: the new binary does not run on this host: {output}")]
    DoesNotRun { id: String, output: String },
}

/// The hosts with an instance that does not run the package yet: the others need nothing
/// staged (a re-run after a partial one uploads only what is left to do).
pub fn hosts_to_stage<'p>(
    plan: &'p Plan,
    facts: &HashMap<String, InstanceFacts>,
) -> Vec<&'p HostStaging> {
    plan.hosts.iter().filter(|host| !to_stage(plan, facts, host).is_empty()).collect()
}

/// The instances on `host` that do not run the package yet, in plan order.
fn to_stage<'p>(
    plan: &'p Plan,
    facts: &HashMap<String, InstanceFacts>,
    host: &HostStaging,
) -> Vec<&'p PlannedInstance> {
    plan.instances
        .iter()
        .filter(|i| i.ssh_host == host.ssh_host && i.ssh_port == host.ssh_port)
        .filter(|i| !facts.get(&i.id).is_some_and(|f| f.on_package(&plan.package)))
        .collect()
}

/// Stages the package on every host where an instance does not run it yet; returns what was
/// staged per instance ID (an instance already on the package as it is, with its version),
/// and problems.
pub async fn stage_all(
    plan: &Arc<Plan>,
    hosts: &Hosts,
    facts: &HashMap<String, InstanceFacts>,
    progress: &Arc<dyn Progress>,
    concurrency: usize,
) -> (HashMap<String, Staged>, Vec<String>) {
    let limit = Arc::new(Semaphore::new(concurrency));
    let mut jobs = JoinSet::new();
    for host in hosts_to_stage(plan, facts) {
        let remote = hosts.get(&host.ssh_host, host.ssh_port).clone();
        let ids: Vec<String> =
            to_stage(plan, facts, host).into_iter().map(|i| i.id.clone()).collect();
        let (plan, progress, limit) = (plan.clone(), progress.clone(), limit.clone());
        jobs.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let instances = plan.instances.iter().filter(|i| ids.contains(&i.id));
            let staged = stage_host(&plan, instances, &remote, progress.as_ref()).await;
            remote.rest().await;
            staged
        });
    }
    let mut staged: HashMap<String, Staged> = facts
        .iter()
        .filter(|(_, installed)| installed.on_package(&plan.package))
        .map(|(id, installed)| (id.clone(), Staged { version: installed.version.clone() }))
        .collect();
    let mut problems = Vec::new();
    while let Some(joined) = jobs.join_next().await {
        match joined.expect("staging tasks do not panic") {
            Ok(instances) => staged.extend(instances),
            Err(problem) => problems.push(problem.to_string()),
        }
    }
    problems.sort();
    if problems.is_empty() {
        problems.extend(differing_versions(&staged));
    }
    (staged, problems)
}

/// Unpacks the package for the first of `instances` (all on one host) and copies it for the
/// others.
async fn stage_host<'p>(
    plan: &Plan,
    mut instances: impl Iterator<Item = &'p PlannedInstance>,
    remote: &Remote,
    progress: &dyn Progress,
) -> Result<Vec<(String, Staged)>, StageError> {
    let label = remote.label.as_str();
    let first = instances.next().expect("a staged host has an instance to stage");

    let package = &plan.package;
    progress.event(Event::UploadStarted { host: label, total: package.wire_size(plan.wire) });
    let mut bytes = package
        .open_for_wire(plan.wire)
        .await
        .map_err(|source| StageError::Package { host: label.to_owned(), source })?;
    let sent = |sent| progress.event(Event::UploadProgress { host: label, sent });
    let output = remote
        .stage_unpack(first, plan, &mut bytes, &sent)
        .await
        .map_err(|source| StageError::Ssh { at: label.to_owned(), source: Box::new(source) })?;
    progress.event(Event::UploadFinished { host: label });
    let listing = verified(plan, first, output)?;
    let block = listing.version.unwrap_or_default();
    let version = VersionInfo::parse(&block);
    if version.release.is_empty() {
        return Err(StageError::DoesNotRun { id: first.id.clone(), output: probe_said(&block) });
    }

    let mut staged = vec![(first.id.clone(), Staged { version: version.clone() })];
    for planned in instances {
        let output = remote.stage_copy(first, planned, plan).await.map_err(|source| {
            StageError::Ssh { at: planned.id.clone(), source: Box::new(source) }
        })?;
        verified(plan, planned, output)?;
        staged.push((planned.id.clone(), Staged { version: version.clone() }));
    }
    Ok(staged)
}

/// What a `-V` that gave no version said, on one short line.
fn probe_said(block: &str) -> String {
    if block.lines().any(|line| line.trim() == "exit status 124") {
        return format!("it did not answer `-V` within {}s", remote::VERSION_PROBE_SECONDS);
    }
    let said = block.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>();
    let said = said.join(" / ");
    match said.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &said[..cut]),
        None => said,
    }
}

/// The listing a staging script printed, once it is proven to hold exactly the package.
fn verified(
    plan: &Plan,
    planned: &PlannedInstance,
    output: crate::ssh::ExecOutput,
) -> Result<Listing, StageError> {
    let at = planned.id.clone();
    if output.exit_status != 0 {
        let stderr: Vec<&str> = output.stderr.lines().map(str::trim).collect();
        let detail = format!("exit status {}: {}", output.exit_status, stderr.join(" / "));
        return Err(StageError::Failed { at, detail });
    }
    let Some(listing) = Listing::parse(&output.stdout) else {
        let detail = "the host's answer could not be read (GNU tar and find are needed)";
        return Err(StageError::Failed { at, detail: detail.to_owned() });
    };
    if let Some(difference) = listing.difference(&plan.package.files) {
        return Err(StageError::NotTheChecked { id: at, difference });
    }
    Ok(listing)
}

/// One package, one version: a host whose copy reports something else is a problem.
fn differing_versions(staged: &HashMap<String, Staged>) -> Option<String> {
    let mut versions: Vec<(&String, &VersionInfo)> =
        staged.iter().map(|(id, s)| (id, &s.version)).collect();
    versions.sort_by_key(|(id, _)| *id);
    let (first_id, first) = versions.first()?;
    let (other_id, other) = versions.iter().find(|(_, v)| *v != *first)?;
    Some(format!(
        "the new binary reports {} on {first_id} but {} on {other_id}",
        first.short(),
        other.short()
    ))
}

/// Removes the staging dirs (except `keep`, staging dirs that hold the only copy of what an
/// operator still needs). Of the `finished` instances (on the package now), every staging dir
/// goes, also those an earlier run cut short left (of another package): they hold nothing the
/// instance can still go back to that its rollback point does not. Best effort: a leftover
/// file is harmless. Hosts side by side (`concurrency` at a time when their connections are
/// spared).
pub async fn cleanup(
    plan: &Plan,
    hosts: &Hosts,
    concurrency: usize,
    keep: &[String],
    finished: &[String],
) {
    let removals = plan.hosts.iter().map(|host| async move {
        let remote = hosts.get(&host.ssh_host, host.ssh_port);
        let removals: Vec<Removal> = plan
            .instances
            .iter()
            .filter(|i| i.ssh_host == host.ssh_host && i.ssh_port == host.ssh_port)
            .filter(|i| !keep.contains(&i.id))
            .map(|i| match finished.contains(&i.id) {
                true => Removal::StagingOf(&i.deploy_dir),
                false => Removal::Dir(&i.staging_dir),
            })
            .collect();
        if removals.is_empty() {
            return;
        }
        if let Err(err) = remote.remove(&removals).await {
            tracing::warn!("{}: could not remove staged files: {err}", remote.label);
        }
        remote.rest().await;
    });
    futures_util::stream::iter(removals)
        .buffer_unordered(hosts.fan_out(concurrency))
        .collect::<Vec<()>>()
        .await;
}
