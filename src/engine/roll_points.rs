//! Rollback targets on the hosts: each instance's newest rollback point (what the last patch
//! replaced, kept by [`super::roll::keep_rollback_point`]) or TiUP's `bin.old.<version>`, found
//! over one SSH connection per host, and fetched as a package.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;

use super::hosts::ssh_target;
use super::remote::{pack, survey};
use crate::remote::Answer;
use crate::ssh::{HostKeyPolicy, HostSession, Reach, SshError};
use crate::topology::{Arch, Cluster, Instance, Role};

/// Where to go back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// What ran just before the last dm-patch run that changed the instance.
    LastPatch,
    /// The cluster's release binary, as TiUP backed it up (`bin.old.<cluster version>`).
    Original,
}

/// One instance's way back.
#[derive(Debug, Clone)]
pub struct RollbackTarget {
    pub id: String,
    pub host: String,
    pub role: Role,
    pub component: String,
    pub arch: Arch,
    pub ssh_host: String,
    pub ssh_port: u16,
    /// What its installed binary says it is now.
    pub running: String,
    /// The sha256 of its installed binary.
    pub running_sha256: String,
    /// Its newest rollback point was left by a rollback (what that rollback took back), not
    /// by a patch.
    pub point_left_by_rollback: bool,
    /// A rollback cut short already brought it to this target (see [`resume_interrupted`]):
    /// the target's tree is on another instance's host.
    pub already_there: bool,
    /// The directory on the host to go back to; `None` when there is nothing.
    pub source: Option<String>,
    /// What the target binary is (`v8.5.1 (1a2b3c4)`).
    pub version: String,
    pub binary_sha256: String,
    /// The target is the cluster's original binary (then the instance is no longer patched).
    pub is_original: bool,
    /// Files (relative to `bin/`) that go away with the rollback: what the rollback point's
    /// `.added` lists (what the patch being taken back added), or, going back to the original,
    /// every file in `bin/` that TiUP's backup does not have (what patches added since).
    pub added: Vec<String>,
}

/// A rollback cut short (Ctrl-C, a dropped session, a kill) left the instances it finished on
/// their target, each with a new rollback point holding what it took back: their newest point
/// is no longer the way back. Such an instance, running the very binary another selected
/// instance goes back to, is already there: it takes that target (and the roll, finding it on
/// the package, skips it), so the same `rollback` command finishes the job.
pub fn resume_interrupted(targets: &mut [RollbackTarget]) {
    let goals: Vec<RollbackTarget> = targets
        .iter()
        .filter(|t| !t.point_left_by_rollback && t.source.is_some())
        .cloned()
        .collect();
    for target in targets.iter_mut().filter(|t| t.point_left_by_rollback) {
        let reached = goals.iter().find(|goal| {
            !goal.binary_sha256.is_empty() && goal.binary_sha256 == target.running_sha256
        });
        if let Some(goal) = reached {
            target.source.clone_from(&goal.source);
            target.version.clone_from(&goal.version);
            target.binary_sha256.clone_from(&goal.binary_sha256);
            target.is_original = goal.is_original;
            target.added.clone_from(&goal.added);
            target.already_there = true;
        }
    }
}

impl RollbackTarget {
    /// A line of `.added` that is not a plain path inside `bin/` (no absolute path, no `.`
    /// or `..`, no empty part, no control character, as the swap itself writes them); such a
    /// point is refused.
    pub fn unsafe_added(&self) -> Option<&str> {
        let inside_bin = |path: &str| {
            !path.is_empty()
                && !path.chars().any(char::is_control)
                && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
        };
        self.added.iter().map(String::as_str).find(|path| !inside_bin(path))
    }
}

/// Finds every selected instance's target, one SSH connection per host, `concurrency` hosts
/// at a time. Targets come in `selected` order; the first host that fails, in that order, is
/// the error.
pub async fn find_targets(
    cluster: &Cluster,
    selected: &[&Instance],
    reach: &Reach,
    policy: HostKeyPolicy,
    timeout: Duration,
    concurrency: usize,
    kind: TargetKind,
) -> Result<Vec<RollbackTarget>, SshError> {
    let transport = reach
        .transport(timeout * 4)
        .map_err(|err| SshError::Spawn { command: "ssh".into(), source: err })?;
    let mut by_host: Vec<((String, u16), Vec<&Instance>)> = Vec::new();
    for instance in selected {
        let key = (instance.ssh_host.clone(), instance.ssh_port);
        match by_host.iter_mut().find(|(host, _)| *host == key) {
            Some((_, instances)) => instances.push(instance),
            None => by_host.push((key, vec![instance])),
        }
    }
    let surveys = futures_util::stream::iter(by_host)
        .map(|((host, port), instances)| {
            let target = ssh_target(cluster, (&host, port), policy, timeout, transport.clone());
            async move {
                let session = HostSession::connect(&target).await?;
                let surveyed = async {
                    let mut found = Vec::new();
                    for instance in instances {
                        let facts = survey(&session, instance, cluster.version()).await?;
                        found.push(target_from(cluster, instance, &facts, kind));
                    }
                    Ok(found)
                }
                .await;
                session.close().await;
                surveyed
            }
        })
        .buffered(concurrency.max(1))
        .collect::<Vec<Result<Vec<RollbackTarget>, SshError>>>()
        .await;
    let mut targets: HashMap<String, RollbackTarget> = HashMap::new();
    for survey in surveys {
        targets.extend(survey?.into_iter().map(|target| (target.id.clone(), target)));
    }
    Ok(selected.iter().filter_map(|instance| targets.remove(&instance.id())).collect())
}

/// Streams the target's tree (without the manifest) to `path` as a gzipped tar.
pub async fn download(
    cluster: &Cluster,
    target: &RollbackTarget,
    reach: &Reach,
    policy: HostKeyPolicy,
    timeout: Duration,
    path: &Path,
) -> anyhow::Result<()> {
    let source = target.source.as_deref().expect("only targets with a source are fetched");
    let transport = reach.transport(timeout * 4)?;
    let ssh = ssh_target(cluster, (&target.ssh_host, target.ssh_port), policy, timeout, transport);
    let session = HostSession::connect(&ssh).await?;
    let mut file = std::fs::File::create(path)?;
    let output = pack(&session, source, &mut file).await;
    session.close().await;
    let output = output?;
    if output.exit_status != 0 {
        anyhow::bail!("{}: packing {source} failed: {}", target.ssh_host, output.stderr.trim());
    }
    Ok(())
}

/// What [`survey`] answered: `<section>.<key>` values, and its lists.
#[derive(Default)]
struct Survey<'f> {
    sections: HashMap<&'f str, HashMap<&'f str, String>>,
    /// The newest point's `.added`.
    added: Vec<String>,
    /// What `bin/` has beyond TiUP's backup.
    extra: Vec<String>,
    /// The `.added` of what a run cut short left.
    cut_added: Vec<String>,
}

impl<'f> Survey<'f> {
    /// The survey; what is not a script's answer is as good as nothing found.
    fn parse(facts: &'f str) -> Survey<'f> {
        let mut survey = Survey::default();
        let Ok(answer) = Answer::parse(facts) else { return survey };
        for (key, value) in answer.lines() {
            let list = match key {
                "point.added" => &mut survey.added,
                "extra" => &mut survey.extra,
                "cut.added" => &mut survey.cut_added,
                _ => {
                    if let Some((section, field)) = key.split_once('.') {
                        let fields = survey.sections.entry(section).or_default();
                        fields.insert(field, value.trim().to_owned());
                    }
                    continue;
                }
            };
            list.push(value.to_owned());
        }
        survey
    }
}

/// The target, from what [`survey`] answered.
fn target_from(
    cluster: &Cluster,
    instance: &Instance,
    facts: &str,
    kind: TargetKind,
) -> RollbackTarget {
    let Survey { sections, mut added, extra, cut_added } = Survey::parse(facts);
    let field = |section: &str, key: &str| sections.get(section).and_then(|s| s.get(key)).cloned();
    let version = |section: &str| {
        let release = field(section, "release").unwrap_or_default();
        let hash = field(section, "hash").unwrap_or_default();
        crate::dm::version::VersionInfo { release, git_hash: hash }.short()
    };
    let original_sha = field("original", "binary");
    // A run cut short left its staging dir: what it left is the newest change, and going back
    // means undoing it (the binary its swap replaced), or, cut short before its swap, starting
    // the instance again on what it has.
    let cut_short = kind == TargetKind::LastPatch && field("cut", "dir").is_some();
    let (source, target_version, binary) = match kind {
        TargetKind::LastPatch if cut_short => {
            added = cut_added;
            (field("cut", "dir"), version("cut"), field("cut", "binary"))
        }
        TargetKind::LastPatch => (
            field("point", "dir"),
            field("point", "from").unwrap_or_default(),
            field("point", "binary"),
        ),
        TargetKind::Original => {
            let dir = original_sha.as_ref().map(|_| instance.layout().backup(cluster.version()));
            (dir, version("original"), original_sha.clone())
        }
    };
    let binary_sha256 = binary.unwrap_or_default();
    // TiUP's backup is a copy of all of bin/ before any patch: what bin/ has beyond it, every
    // patch since added.
    if kind == TargetKind::Original {
        // In find's order, which differs between hosts: sorted, so that instances with the
        // same files are one group.
        added = extra;
        added.sort();
    }
    RollbackTarget {
        id: instance.id(),
        host: instance.host.clone(),
        role: instance.role,
        component: instance.role.component().to_owned(),
        arch: instance.arch,
        ssh_host: instance.ssh_host.clone(),
        ssh_port: instance.ssh_port,
        running: version("running"),
        running_sha256: field("running", "binary").unwrap_or_default(),
        already_there: false,
        point_left_by_rollback: kind == TargetKind::LastPatch
            && !cut_short
            && field("point", "action").as_deref() == Some("rollback"),
        source: source.filter(|_| !binary_sha256.is_empty()),
        version: target_version,
        is_original: original_sha.as_deref() == Some(binary_sha256.as_str()),
        binary_sha256,
        added,
    }
}
