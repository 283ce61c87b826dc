//! `dm-patch rollback`: go back, with the same care as going forward.
//!
//! Each patch keeps what it replaced in `bin/` as a rollback point beside it
//! (`<deploy>/bin.rollback/<stamp>/`, with a `.manifest`; see `engine::roll`). Rolling back
//! finds, for every selected instance, its newest point (or, with `--to-original`, TiUP's
//! `bin.old.<cluster version>`), fetches that tree from one host as a package, proves it is
//! the binary the manifest recorded, and runs it through `patch`: the same checks, staging,
//! rolling order, leader eviction, health, version and task gates, and undo of a failed step.
//! Instances whose targets differ are rolled back one group at a time (`-N`), so that each run
//! is one plan with one report. Afterwards meta.yaml's `patched` is true exactly when an
//! instance runs something other than the cluster's original binary.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use super::settings::PatchSettings;
use super::{audit, reach};
use crate::cli::{GlobalArgs, ProvingArgs, RollbackArgs};
use crate::engine::roll_points::{RollbackTarget, TargetKind, find_targets, resume_interrupted};
use crate::error::{ExitStatus, UsageError};
use crate::output::Printer;
use crate::output::table::tiup_table;
use crate::plan::Action;
use crate::topology::select::Filter;
use crate::topology::store::{self, Store};

pub async fn run(
    args: RollbackArgs,
    global: &GlobalArgs,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    let (cluster, dry_run) = (args.cluster.clone(), args.dry_run);
    audit::recorded(global, cluster, dry_run, async |notes| {
        roll_back(args, global, printer, notes).await
    })
    .await
}

async fn roll_back(
    args: RollbackArgs,
    global: &GlobalArgs,
    printer: &Printer,
    notes: &mut audit::Notes,
) -> anyhow::Result<ExitStatus> {
    let store = Store::locate(global.tiup_home.clone())?;
    // One lock from the survey of the instances to the last mark written: another run never
    // changes them in between. A dry run changes nothing and needs none.
    let lock = if args.dry_run { None } else { Some(store.lock(&args.cluster)?) };
    let cluster = store.load(&args.cluster)?;
    super::patch::refuse_scale_out_lock(&cluster, args.offline)?;
    if let Some(lock) = &lock {
        // As for patch: a store that cannot take the marks is found before any host is asked.
        store::check_writable(&cluster, lock, false)?;
    }
    let connection = &args.connection;
    let executor = reach::executor(&cluster, connection.ssh, connection.native_ssh)?;
    let jump = reach::jump_host(&connection.proxy)?;
    let filter = Filter { roles: args.filter.roles.clone(), nodes: args.filter.nodes.clone() };
    let (_, selected) = filter.select_for_patch(&cluster)?;
    let policy = connection.host_key_policy;
    let reach = reach::open(&cluster, executor, jump, policy).await?;
    let kind = if args.to_original { TargetKind::Original } else { TargetKind::LastPatch };
    let timeout = Duration::from_secs(connection.ssh_timeout);
    let concurrency = usize::from(connection.concurrency);
    let mut targets =
        find_targets(&cluster, &selected, &reach, policy, timeout, concurrency, kind).await?;
    resume_interrupted(&mut targets);

    let missing: Vec<&RollbackTarget> = targets.iter().filter(|t| t.source.is_none()).collect();
    if !missing.is_empty() {
        let patched = |t: &&RollbackTarget| selected.iter().any(|i| i.id() == t.id && i.patched);
        let what = match kind {
            // Marked patched with no point: a patch kept none (`--keep-rollbacks 0`), or its
            // point lost its manifest. Never marked: nothing replaced its binary.
            TargetKind::LastPatch if missing.iter().any(patched) => {
                "no rollback point was kept for it (a patch with --keep-rollbacks 0 keeps none, \
                 and a point without its .manifest is not used); --to-original goes back to the \
                 cluster's original binary"
            }
            TargetKind::LastPatch => "no rollback point (no dm-patch run has replaced its binary)",
            TargetKind::Original => "no TiUP backup bin.old.<cluster version>",
        };
        let ids: Vec<&str> = missing.iter().map(|t| t.id.as_str()).collect();
        return Err(UsageError(format!(
            "nothing to go back to for {}: {what}; nothing was changed",
            ids.join(", ")
        ))
        .into());
    }
    if let Some((target, path)) = targets.iter().find_map(|t| Some((t, t.unsafe_added()?))) {
        return Err(UsageError(format!(
            "the rollback of {} would delete {path:?}, which is not a plain path inside bin/; \
             check {} on its host; nothing was changed",
            target.id,
            target.source.as_deref().unwrap_or("its rollback point"),
        ))
        .into());
    }
    let groups = group_by_binary(&targets);
    if args.dry_run {
        print_plan(&args.cluster, &targets, printer);
        return Ok(ExitStatus::Success);
    }
    if groups.len() > 1 {
        let lines: Vec<String> = groups
            .values()
            .map(|group| {
                let ids: Vec<&str> = group.iter().map(|t| t.id.as_str()).collect();
                format!("-N {} (to {})", ids.join(","), group[0].version)
            })
            .collect();
        return Err(UsageError(format!(
            "the selected instances go back to different binaries (or take back different \
             files); roll back one group at a time: {}; nothing was changed",
            lines.join("; ")
        ))
        .into());
    }
    let group = groups.into_values().next().expect("at least one instance is selected");
    // The tree is fetched from an instance whose own point it is.
    let target = group.iter().find(|t| !t.already_there).copied().unwrap_or(group[0]);
    // In the cluster's cache in the store, as TiUP keeps packages, not in the machine's temp
    // dir: a rollback killed before it removes its scratch leaves it where the cluster lives.
    let cache = cluster.cache_dir();
    let not_writable =
        |source| store::StoreError::NotWritable { path: cache.display().to_string(), source };
    fs::create_dir_all(&cache).map_err(not_writable)?;
    let scratch = tempfile::Builder::new()
        .prefix("dm-patch-rollback-")
        .tempdir_in(&cache)
        .map_err(not_writable)?;
    let package = fetch_package(&cluster, target, scratch.path(), &reach, policy, timeout).await?;
    reach.close().await;

    let settings = PatchSettings {
        cluster: args.cluster,
        package,
        filter: Filter { nodes: group.iter().map(|t| t.id.clone()).collect(), roles: Vec::new() },
        overwrite: false,
        offline: args.offline,
        // It ran on this cluster before: another release line is no reason to refuse it.
        allow_version_change: true,
        change: args.change,
        proving: ProvingArgs::default(),
        // The target is proven by its binary's sha256, recorded when its point was kept.
        expect_sha256: None,
        dry_run: false,
        connection: args.connection,
        action: Action::Rollback,
        remove: target.added.clone(),
        // Each instance's mark changes as it finishes, so that a rollback cut short leaves
        // marks that are true.
        unpatches: target.is_original,
    };
    super::patch::execute(settings, &store, lock, printer, notes).await
}

/// The instances by the binary they go back to (and the files that go with their patch).
fn group_by_binary(targets: &[RollbackTarget]) -> BTreeMap<String, Vec<&RollbackTarget>> {
    let mut groups: BTreeMap<String, Vec<&RollbackTarget>> = BTreeMap::new();
    for target in targets {
        let key = format!("{} {}", target.binary_sha256, target.added.join("\n"));
        groups.entry(key).or_default().push(target);
    }
    groups
}

#[derive(Serialize)]
struct PlannedRollback<'a> {
    id: &'a str,
    from_version: &'a str,
    to_version: &'a str,
    rollback_point: &'a str,
    /// Files (relative to `bin/`) the rollback deletes: what the patches it takes back added.
    deletes: &'a [String],
}

fn print_plan(cluster: &str, targets: &[RollbackTarget], printer: &Printer) {
    let rows: Vec<PlannedRollback> = targets
        .iter()
        .map(|t| PlannedRollback {
            id: &t.id,
            from_version: &t.running,
            to_version: &t.version,
            rollback_point: t.source.as_deref().unwrap_or("-"),
            deletes: &t.added,
        })
        .collect();
    if printer.is_json() {
        printer.json(&serde_json::json!({
            "schema_version": crate::output::SCHEMA_VERSION,
            "action": "rollback",
            "result": "planned",
            "cluster": cluster,
            "instances": rows,
        }));
        return;
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let point = r.rollback_point.rsplit('/').next().unwrap_or(r.rollback_point);
            let deletes = if r.deletes.is_empty() { "-".to_owned() } else { r.deletes.join(", ") };
            vec![
                r.id.to_owned(),
                format!("{} -> {}", r.from_version, r.to_version),
                point.to_owned(),
                deletes,
            ]
        })
        .collect();
    let header = ["Instance", "Version", "Rollback point", "Deletes from bin/"];
    printer.result(tiup_table(&header, &cells));
    printer.result("Dry run: nothing was changed.");
}

/// Fetches the target's tree from its host as a package (streamed to a file), and proves its
/// binary is the one recorded.
async fn fetch_package(
    cluster: &crate::topology::Cluster,
    target: &RollbackTarget,
    dir: &Path,
    reach: &crate::ssh::Reach,
    policy: crate::ssh::HostKeyPolicy,
    timeout: Duration,
) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{}-rollback.tar.gz", target.component));
    crate::engine::roll_points::download(cluster, target, reach, policy, timeout, &path)
        .await
        .with_context(|| format!("fetching the rollback target of {}", target.id))?;
    let hosts = [(target.host.clone(), target.id.clone(), target.arch)];
    let (inspected, role) = (path.clone(), target.role);
    let checked = tokio::task::spawn_blocking(move || {
        crate::package::inspect(&inspected, role, &hosts, None)
    })
    .await
    .context("the check of the rollback target stopped unexpectedly")?
    .map_err(|err| anyhow::anyhow!("the rollback target of {} is not usable: {err}", target.id))?;
    if checked.entry_sha256 != target.binary_sha256 {
        anyhow::bail!(
            "the rollback target of {} on its host has changed since it was recorded (its \
             binary's sha256 is {}, the record says {}); nothing was changed",
            target.id,
            checked.entry_sha256,
            target.binary_sha256
        );
    }
    Ok(path)
}
