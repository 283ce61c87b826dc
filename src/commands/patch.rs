//! `dm-patch patch`: resolve -> plan -> confirm -> execute -> report.

use std::time::Duration;

use anyhow::Context;

use super::settings::PatchSettings;
use super::{audit, reach};
use crate::cli::{GlobalArgs, PatchArgs};
use crate::dm::client::{DmClient, MembersResponse};
use crate::engine::report::RunResult;
use crate::engine::{self, Settings, events::Event, signals::Interrupt};
use crate::error::{ExitStatus, UsageError};
use crate::output::{self, Printer, render_plan};
use crate::package;
use crate::plan::{Plan, PlanOptions};
use crate::ssh::Executor;
use crate::topology::store::{self, ClusterLock, Store};
use crate::topology::{Cluster, Instance, Role};

/// `patch --dry-run --format json`: the plan, as a document of its own.
#[derive(serde::Serialize)]
struct PlanDocument<'a> {
    schema_version: u32,
    /// `planned`: the run's result word when nothing is run.
    result: &'static str,
    #[serde(flatten)]
    plan: &'a Plan,
}

/// Everything `patch` needs, checked: after this nothing reads argv or the environment again.
struct PatchConfig {
    cluster: Cluster,
    plan: Plan,
    settings: Settings,
    yes: bool,
    dry_run: bool,
}

pub async fn run(
    args: PatchArgs,
    global: &GlobalArgs,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    let settings = PatchSettings::from(args);
    let (cluster, dry_run) = (settings.cluster.clone(), settings.dry_run);
    audit::recorded(global, cluster, dry_run, async |notes| {
        locked_run(settings, global, printer, notes).await
    })
    .await
}

async fn locked_run(
    settings: PatchSettings,
    global: &GlobalArgs,
    printer: &Printer,
    notes: &mut audit::Notes,
) -> anyhow::Result<ExitStatus> {
    let store = Store::locate(global.tiup_home.clone())?;
    // Fail fast on a cluster another run is patching; a dry run changes nothing and needs no lock.
    let lock = if settings.dry_run { None } else { Some(store.lock(&settings.cluster)?) };
    execute(settings, &store, lock, printer, notes).await
}

/// Checks, plans, confirms and executes one run, holding `lock` (the caller's: `rollback`
/// holds it from finding its targets on); `None` only for a dry run.
pub async fn execute(
    settings: PatchSettings,
    store: &Store,
    lock: Option<ClusterLock>,
    printer: &Printer,
    notes: &mut audit::Notes,
) -> anyhow::Result<ExitStatus> {
    let mut config = resolve(store, settings).await?;
    notes.planned(&config.plan);

    if config.dry_run {
        if printer.is_json() {
            printer.json(&PlanDocument {
                schema_version: output::SCHEMA_VERSION,
                result: "planned",
                plan: &config.plan,
            });
        } else {
            printer.result(render_plan(&config.plan, printer));
            printer.result(if config.plan.strategy.is_offline() {
                "Dry run: no host was contacted and nothing was changed."
            } else {
                "Dry run: nothing was changed; no host was logged in to (the dm-masters were \
                 asked for the members: the leader, and each worker's source)."
            });
        }
        return Ok(ExitStatus::Success);
    }
    let lock = lock.expect("held by the caller for every run that changes something");
    store::check_writable(&config.cluster, &lock, config.plan.overwrite)?;
    output::warn_before_confirm(&config.plan, printer);
    if !confirm(&config, printer)? {
        notes.aborted();
        printer.diagnostic("Aborted: nothing was changed.");
        return Ok(ExitStatus::Failure);
    }
    let progress = output::progress::for_printer(printer);
    let interrupt = Interrupt::install({
        let progress = progress.clone();
        move |first| {
            progress.event(Event::Note(if first {
                "stopping: the instance in flight is put back as it was (never left stopped), then the roll stops"
            } else {
                "already stopping: the instance in flight is being put back as it was"
            }))
        }
    })
    .context("installing the Ctrl-C handler")?;
    notes.executed();
    let report = engine::execute(
        &mut config.cluster,
        config.plan,
        &config.settings,
        &lock,
        progress.clone(),
        &interrupt,
    )
    .await;
    progress.event(Event::Done);
    output::report::render(&report, &config.cluster, printer);
    Ok(exit_status(report.result))
}

/// What a run's result means to whoever called dm-patch.
fn exit_status(result: RunResult) -> ExitStatus {
    match result {
        RunResult::Success => ExitStatus::Success,
        RunResult::PreflightFailed | RunResult::Failed => ExitStatus::Failure,
        RunResult::NeedsAttention => ExitStatus::NeedsAttention,
        RunResult::PackageRefused => ExitStatus::BadInput,
        RunResult::Interrupted => ExitStatus::Interrupted,
    }
}

async fn resolve(store: &Store, args: PatchSettings) -> anyhow::Result<PatchConfig> {
    let cluster = store.load(&args.cluster)?;
    refuse_scale_out_lock(&cluster, args.offline)?;
    let connection = &args.connection;
    let executor = reach::executor(&cluster, connection.ssh, connection.native_ssh)?;
    let jump = reach::jump_host(&connection.proxy)?;
    let (role, selected) = args.filter.select_for_patch(&cluster)?;

    let arch_of_hosts: Vec<_> = selected.iter().map(|i| (i.host.clone(), i.id(), i.arch)).collect();
    let package_path = args.package.clone();
    // The uploads of a tar stream read it where the check kept it, beside meta.yaml (the
    // store's disk, where TiUP keeps packages too; not /tmp, often memory): a dry run uploads
    // nothing, and `--wire gzip` sends the file itself.
    let wire = args.change.wire.chosen();
    let keep_tar_in =
        (!args.dry_run && wire != Some(package::Wire::Gzip)).then(|| cluster.dir.clone());
    let package = tokio::task::spawn_blocking(move || {
        package::inspect(&package_path, role, &arch_of_hosts, keep_tar_in.as_deref())
    })
    .await
    .context("package inspection stopped unexpectedly")??;
    let package = vouched_for(package, args.expect_sha256.as_deref())?;

    if executor == Executor::None {
        refuse_remote_hosts(&selected)?;
    }
    let host_key_policy = args.connection.host_key_policy;
    let reach = reach::open(&cluster, executor, jump, host_key_policy).await?;

    let ssh_timeout = Duration::from_secs(args.connection.ssh_timeout);
    let (members, openapi) = if args.offline {
        (None, false)
    } else {
        find_members(&cluster, role, ssh_timeout, reach.http_proxy()).await
    };
    let proving =
        engine::Proving { canaries: args.proving.canary.map(usize::from), soak: args.proving.soak };
    let options = PlanOptions {
        action: args.action,
        offline: args.offline,
        overwrite: args.overwrite,
        allow_version_change: args.allow_version_change,
        canaries: proving.canaries,
        soak: proving.soak,
        openapi,
        finished_mark: !args.unpatches,
        wire,
    };
    let plan =
        Plan::new(&cluster, &selected, package, members.as_ref(), options).removing(args.remove);

    Ok(PatchConfig {
        cluster,
        plan,
        settings: Settings {
            ssh_timeout,
            wait_timeout: Duration::from_secs(args.connection.wait_timeout),
            concurrency: usize::from(args.connection.concurrency),
            host_key_policy,
            force: args.change.force,
            keep_rollbacks: usize::from(args.change.keep_rollbacks),
            proving,
            reach,
            command_line: std::env::args().collect(),
        },
        yes: args.change.yes,
        dry_run: args.dry_run,
    })
}

/// With `--expect-sha256`, the package is the one its provider vouched for, or it is refused.
fn vouched_for(
    mut package: package::Package,
    expected: Option<&str>,
) -> Result<package::Package, UsageError> {
    let Some(expected) = expected else { return Ok(package) };
    if package.sha256 != expected {
        return Err(UsageError(format!(
            "{}: its sha256 is {}, not {expected} as --expect-sha256 says: it is not the package \
             that was vouched for; nothing was changed",
            package.path.display(),
            package.sha256
        )));
    }
    package.sha256_checked = true;
    Ok(package)
}

/// TiUP's scale-out lock refuses an online patch (or rollback), as TiUP's own patch does: a
/// scale-out is half done. `--offline` goes ahead, as in TiUP.
pub fn refuse_scale_out_lock(cluster: &Cluster, offline: bool) -> Result<(), UsageError> {
    match cluster.scale_out_lock() {
        Some(lock) if !offline => Err(UsageError(format!(
            "cluster '{}' is locked by TiUP's scale-out ({} is there: `tiup dm scale-out \
             --stage1` ran, `--stage2` did not); finish it with `tiup dm scale-out {} <topology> \
             --stage2`, or pass --offline to change the binaries only; nothing was changed",
            cluster.name,
            lock.display(),
            cluster.name
        ))),
        _ => Ok(()),
    }
}

/// `--ssh none` runs every command here: a host that is not this machine is refused up front.
fn refuse_remote_hosts(selected: &[&Instance]) -> Result<(), UsageError> {
    match selected.iter().find(|instance| !crate::ssh::is_this_machine(&instance.ssh_host)) {
        Some(remote) => Err(UsageError(format!(
            "--ssh none runs commands on this machine, but {} is on {}, which is not one of its \
             addresses; use --ssh builtin or system",
            remote.id(),
            remote.ssh_host
        ))),
        None => Ok(()),
    }
}

/// The members list (the leader, and each worker's stage and source), asked of any master;
/// `None` when no master answers (planning goes on; the engine's preflight insists on a leader
/// later, and the roll looks again before each restart). For a worker roll, also whether the
/// masters serve DM's OpenAPI (sources can then be moved on purpose).
async fn find_members(
    cluster: &Cluster,
    role: Role,
    timeout: Duration,
    proxy: Option<&str>,
) -> (Option<MembersResponse>, bool) {
    let client = DmClient::new(timeout, cluster.tls(), proxy);
    let masters: Vec<String> =
        cluster.instances.iter().filter(|i| i.role == Role::Master).map(|i| i.addr()).collect();
    let members = client.members_from_any(&masters).await.ok();
    let openapi =
        members.is_some() && role == Role::Worker && client.serves_openapi(&masters).await;
    (members, openapi)
}

/// Refuses to go on without an explicit yes: a prompt on a terminal, `--yes` elsewhere.
fn confirm(config: &PatchConfig, printer: &Printer) -> anyhow::Result<bool> {
    if config.yes {
        return Ok(true);
    }
    if !printer.interactive {
        return Err(UsageError(
            "refusing to patch without confirmation: stdin is not a terminal; pass --yes to proceed"
                .to_owned(),
        )
        .into());
    }
    output::err(&render_plan(&config.plan, printer));
    let answer = dialoguer::Confirm::new()
        .with_prompt(format!(
            "{} {} instance(s) of cluster '{}'?",
            config.plan.action.verb(),
            config.plan.instances.len(),
            config.cluster.name
        ))
        .default(false)
        .interact()
        .context("reading the confirmation")?;
    Ok(answer)
}
