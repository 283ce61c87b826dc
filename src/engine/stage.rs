//! Staging: upload the package once per host (all hosts in parallel), verify its sha256 there,
//! and unpack the binary next to `bin` for every selected instance on the host. Nothing that
//! runs is touched; a failure here leaves only files that `cleanup` removes.
//!
//! Only the entry the local check inspected is unpacked (by its exact name), and it is taken
//! only if it is a regular file (never a link, which `chmod` would follow) whose sha256 is the
//! one computed locally.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::events::{Event, Progress};
use super::hosts::Hosts;
use super::remote::Remote;
use crate::dm::version::VersionInfo;
use crate::plan::{HostStaging, Plan, PlannedInstance};
use crate::ssh::{SshError, shell_quote};

/// The exit status of the ownership step when the unpacked binary is not a regular file.
const NOT_REGULAR: u32 = 3;

/// The new binary, unpacked and ready to be swapped in.
#[derive(Debug, Clone)]
pub struct Staged {
    /// `<staging_dir>/<comp>/<comp>`.
    pub binary: String,
    pub sha256: String,
    /// What the new binary says of itself (`-V`) on that host.
    pub version: VersionInfo,
}

/// Why a host could not be staged; each reads as one problem line.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("{host}: upload failed: {source}")]
    Upload { host: String, source: SshError },
    #[error(
        "{host}: the uploaded package's sha256 is {found}, expected {expected}; the transfer was damaged"
    )]
    Damaged { host: String, found: String, expected: String },
    /// `at` is the host, or the instance when the command was for one.
    #[error("{at}: {source}")]
    Ssh { at: String, source: SshError },
    #[error("{id}: {binary} is missing after unpacking")]
    NotUnpacked { id: String, binary: String },
    #[error(
        "{id}: the unpacked {binary} is a link or not a regular file, so it was not installed; this host's tar did not unpack what dm-patch checked"
    )]
    NotRegular { id: String, binary: String },
    #[error(
        "{id}: the unpacked {binary} has sha256 {found}, but the checked {entry} has {expected}, so it was not installed; this host's tar did not unpack what dm-patch checked"
    )]
    NotTheChecked { id: String, binary: String, entry: String, found: String, expected: String },
    #[error("{id}: the new binary does not run on this host: {source}")]
    DoesNotRun { id: String, source: SshError },
    #[error("{id}: {binary} -V printed no Release Version; is it a DM binary?")]
    NoVersion { id: String, binary: String },
}

/// Stages the package on every host; returns what was staged per instance ID, and problems.
pub async fn stage_all(
    plan: &Arc<Plan>,
    hosts: &Hosts,
    progress: &Arc<dyn Progress>,
    concurrency: usize,
) -> (HashMap<String, Staged>, Vec<String>) {
    let limit = Arc::new(Semaphore::new(concurrency));
    let mut jobs = JoinSet::new();
    for host in &plan.hosts {
        let remote = hosts.get(&host.ssh_host, host.ssh_port).clone();
        let (plan, host, progress, limit) =
            (plan.clone(), host.clone(), progress.clone(), limit.clone());
        jobs.spawn(async move {
            let _permit = limit.acquire_owned().await;
            stage_host(&plan, &host, &remote, progress.as_ref()).await
        });
    }
    let mut staged = HashMap::new();
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

async fn stage_host(
    plan: &Plan,
    host: &HostStaging,
    remote: &Remote,
    progress: &dyn Progress,
) -> Result<Vec<(String, Staged)>, StageError> {
    let label = remote.label.as_str();
    let ssh_failed = |source| StageError::Ssh { at: label.to_owned(), source };
    progress.event(Event::UploadStarted { host: label, total: plan.package.size });
    remote
        .session
        .upload(&plan.package.path, &host.remote_package, |sent| {
            progress.event(Event::UploadProgress { host: label, sent });
        })
        .await
        .map_err(|source| StageError::Upload { host: label.to_owned(), source })?;
    progress.event(Event::UploadFinished { host: label });

    let uploaded = remote.sha256(&host.remote_package).await.map_err(ssh_failed)?;
    if uploaded.as_deref() != Some(plan.package.sha256.as_str()) {
        return Err(StageError::Damaged {
            host: label.to_owned(),
            found: uploaded.unwrap_or_else(|| "missing".into()),
            expected: plan.package.sha256.clone(),
        });
    }

    let mut staged = Vec::new();
    let on_this_host = plan
        .instances
        .iter()
        .filter(|i| i.ssh_host == host.ssh_host && i.ssh_port == host.ssh_port);
    for planned in on_this_host {
        let unpacked = unpack(plan, host, remote, planned).await?;
        staged.push((planned.id.clone(), unpacked));
    }
    Ok(staged)
}

/// Unpacks `<comp>/<comp>` into the instance's staging dir, owned like the binary it replaces.
async fn unpack(
    plan: &Plan,
    host: &HostStaging,
    remote: &Remote,
    planned: &PlannedInstance,
) -> Result<Staged, StageError> {
    let id = &planned.id;
    let entry = plan.package.entry();
    let staging = shell_quote(&planned.staging_dir);
    let binary = format!("{}/{entry}", planned.staging_dir);
    let ssh_failed = |source| StageError::Ssh { at: id.clone(), source };
    // The member is named as the package spells it, matched verbatim (GNU tar), and alone.
    // Only what an earlier unpack left is removed first: the binary an earlier run of the same
    // package kept next to it (`<comp>.previous`) is what undoes that run if it was cut short.
    let command = format!(
        "mkdir -p {staging} && rm -rf {unpacked} && tar --no-same-owner --no-wildcards --no-recursion \
         -xzf {package} -C {staging} {member}",
        unpacked = shell_quote(&format!("{}/{}", planned.staging_dir, plan.component.component())),
        package = shell_quote(&host.remote_package),
        member = shell_quote(&plan.package.entry_in_package),
    );
    remote.run(&command).await.map_err(ssh_failed)?;

    // Never through a link: `chmod --reference` would change whatever it points to.
    let new = shell_quote(&binary);
    let parent = format!("{}/{}", planned.staging_dir, plan.component.component());
    let parent = shell_quote(&parent);
    let current = shell_quote(&planned.binary);
    let command = format!(
        "if test -f {new} && ! test -L {new} && ! test -L {parent}; then \
         chown -h --reference={current} {new} && chmod --reference={current} {new}; \
         else exit {NOT_REGULAR}; fi"
    );
    let output = remote.session.exec(&command).await.map_err(ssh_failed)?;
    match output.exit_status {
        0 => {}
        NOT_REGULAR => return Err(StageError::NotRegular { id: id.clone(), binary }),
        exit_status => {
            return Err(ssh_failed(SshError::CommandFailed {
                endpoint: remote.session.endpoint().to_owned(),
                command,
                exit_status,
                stderr: output.stderr.trim().to_owned(),
            }));
        }
    }

    let sha256 = remote
        .sha256(&binary)
        .await
        .map_err(ssh_failed)?
        .ok_or_else(|| StageError::NotUnpacked { id: id.clone(), binary: binary.clone() })?;
    if sha256 != plan.package.entry_sha256 {
        return Err(StageError::NotTheChecked {
            id: id.clone(),
            binary,
            entry,
            found: sha256,
            expected: plan.package.entry_sha256.clone(),
        });
    }
    let version = remote
        .binary_version(&binary)
        .await
        .map_err(|source| StageError::DoesNotRun { id: id.clone(), source })?;
    if version.release.is_empty() {
        return Err(StageError::NoVersion { id: id.clone(), binary });
    }
    Ok(Staged { binary, sha256, version })
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

/// Removes the uploaded packages and the staging dirs (except `keep`, staging dirs that hold
/// the only copy of a binary an operator still needs). Best effort: a leftover file is harmless.
pub async fn cleanup(plan: &Plan, hosts: &Hosts, keep: &[String]) {
    for host in &plan.hosts {
        let remote = hosts.get(&host.ssh_host, host.ssh_port);
        let mut paths = vec![shell_quote(&host.remote_package).into_owned()];
        paths.extend(
            plan.instances
                .iter()
                .filter(|i| i.ssh_host == host.ssh_host && i.ssh_port == host.ssh_port)
                .filter(|i| !keep.contains(&i.id))
                .map(|i| shell_quote(&i.staging_dir).into_owned()),
        );
        if let Err(err) = remote.run(&format!("rm -rf {}", paths.join(" "))).await {
            tracing::warn!("{}: could not remove staged files: {err}", remote.label);
        }
    }
}
