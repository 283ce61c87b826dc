//! What the engine does on a host, as named operations over one SSH session: the only caller
//! of the scripts of [`crate::remote`], each operation typed here. Every value that goes into a
//! remote command passes through `shell_quote`.

use tokio::io::AsyncRead;

use crate::dm::version::VersionInfo;
use crate::package::{FileKind, PackageFile};
use crate::plan::{Action, Plan, PlannedInstance};
use crate::remote::{self, Answer};
use crate::ssh::{ExecOutput, HostSession, SshError, shell_quote};
use crate::topology::layout::{DeployLayout, ROLLBACK_DIR};
use crate::topology::{Instance, SystemdMode};

/// One host's SSH session plus how services are managed there.
#[derive(Clone)]
pub struct Remote {
    pub session: HostSession,
    pub systemd_mode: SystemdMode,
    /// `host:port` of the SSH endpoint, for messages.
    pub label: String,
}

/// `swap` of `planned`'s staged tree into its `bin/`: the package's `files`, then the paths the
/// swap takes away (`remove`).
fn swap_command(planned: &PlannedInstance, files: &[PackageFile], remove: &[String]) -> String {
    let bin = planned.instance.layout().bin();
    let count = moved_paths(files).count().to_string();
    let head = [bin.as_str(), planned.staging_dir.as_str(), count.as_str()];
    let paths = moved_paths(files).chain(remove.iter().map(String::as_str));
    remote::SWAP.command(head.into_iter().chain(paths))
}

/// What `systemctl is-active` says of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitState {
    Active,
    /// Inactive, failed, activating... anything but running.
    NotActive,
}

impl UnitState {
    /// The state `systemctl is-active` said.
    fn said(state: &str) -> UnitState {
        if state == "active" { UnitState::Active } else { UnitState::NotActive }
    }
}

impl Remote {
    /// The host's part of a phase is done: a connection made for it is let go (see
    /// [`super::hosts::KEEP_OPEN_UP_TO`]), and its next command logs in again.
    pub async fn rest(&self) {
        self.session.park().await;
    }

    /// Runs `command` and requires exit status 0.
    pub async fn run(&self, command: &str) -> Result<String, SshError> {
        self.session.run(command).await
    }

    /// `systemctl <args>` as this host manages services (`--user` for user units).
    pub fn systemctl(&self, args: &str) -> String {
        match self.systemd_mode {
            SystemdMode::System => format!("systemctl {args}"),
            SystemdMode::User => format!("systemctl --user {args}"),
        }
    }

    /// `system`, or `user` for user units: how the scripts are told which systemd to ask.
    pub fn scope(&self) -> &'static str {
        match self.systemd_mode {
            SystemdMode::System => "system",
            SystemdMode::User => "user",
        }
    }

    /// `systemctl stop`, then what `is-active` says of the unit, in one round trip.
    pub async fn stop(&self, unit: &str) -> Result<UnitState, SshError> {
        let stdout = self.run(&remote::STOP.command([self.scope(), unit])).await?;
        let answer = Answer::parse(&stdout).unwrap_or_default();
        let state = answer.lines().find(|(key, _)| *key == "state").map(|(_, state)| state);
        Ok(UnitState::said(state.unwrap_or_default()))
    }

    pub async fn start(&self, unit: &str) -> Result<(), SshError> {
        self.run(&self.systemctl(&format!("start {}", shell_quote(unit)))).await.map(drop)
    }

    pub async fn unit_state(&self, unit: &str) -> Result<UnitState, SshError> {
        let command = self.systemctl(&format!("is-active {}", shell_quote(unit)));
        let output = self.session.exec(&command).await?;
        Ok(if output.exit_status == 0 && output.stdout.trim() == "active" {
            UnitState::Active
        } else {
            UnitState::NotActive
        })
    }

    /// `<binary> -V`, parsed; bounded in time and size (see `version_of` in `remote/lib.sh`).
    pub async fn binary_version(&self, binary: &str) -> Result<VersionInfo, SshError> {
        let stdout = self.run(&remote::VERSION.command([binary])).await?;
        let block = Answer::parse(&stdout).ok().and_then(|answer| answer.block("version"));
        Ok(VersionInfo::parse(&block.unwrap_or_default()))
    }

    /// Stages the package arriving on `input` for `planned`, in one round trip, each step only
    /// once the one before it succeeded: TiUP's backup of `bin/` (made once, never from a copy
    /// cut short), what the run is for (the plan's action: a rollback cut short is told apart
    /// from a patch cut short), then the package (in the plan's wire form) unpacked into the
    /// staging dir (what an earlier unpack left goes first), owned like the binary, listed,
    /// hashed, and its binary asked for its version. What the scripts answered comes back
    /// whatever their exit status.
    pub async fn stage_unpack(
        &self,
        planned: &PlannedInstance,
        plan: &Plan,
        input: &mut (dyn AsyncRead + Unpin + Send),
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<ExecOutput, SshError> {
        let (staging, binary) = (&planned.staging_dir, &planned.binary);
        let entry = plan.package.entry();
        let flush = flush(plan);
        let unpack =
            remote::UNPACK.command([staging, binary, &entry, plan.wire.tar_flags(), flush]);
        let script = format!("{} && {unpack}", staging_steps(planned, plan.action));
        self.session.exec_with_input(&script, input, progress).await
    }

    /// Stages `planned` from `from`, another instance of this host already staged: as
    /// [`Remote::stage_unpack`], with a copy of `from`'s verified tree instead of the upload.
    pub async fn stage_copy(
        &self,
        from: &PlannedInstance,
        planned: &PlannedInstance,
        plan: &Plan,
    ) -> Result<ExecOutput, SshError> {
        let args = [&from.staging_dir, &planned.staging_dir, &planned.binary, flush(plan)];
        let steps = staging_steps(planned, plan.action);
        let script = format!("{steps} && {}", remote::COPY.command(args));
        self.session.exec(&script).await
    }

    /// Run with the service stopped (or `--offline`): keeps in the staging dir's `previous/`
    /// what the package replaces in `bin/` and the files in `remove` (hard links), notes what
    /// it adds, then moves the tree's files and links into `bin/` and deletes the `remove`
    /// files (a rollback takes back what its patch added). A directory in `bin/` where the
    /// package has a file stops it before anything moved.
    pub async fn swap_in(
        &self,
        planned: &PlannedInstance,
        files: &[PackageFile],
        remove: &[String],
    ) -> Result<(), SshError> {
        self.run(&swap_command(planned, files, remove)).await.map(drop)
    }

    /// An instance's stop, swap and start in one command, each step only once the roll says
    /// `go` (see [`RollTalk`]): one SSH channel and one remote shell for the three, and a
    /// dm-patch that is gone between two steps leaves the instance where the last one left it,
    /// as separate commands would.
    pub async fn converse_roll(
        &self,
        planned: &PlannedInstance,
        files: &[PackageFile],
        remove: &[String],
    ) -> Result<RollTalk<'_>, SshError> {
        let unit = planned.service.as_str();
        let go = remote::GO.command::<_, &str>([]);
        let steps = [
            go.clone(),
            remote::STOP.command([self.scope(), unit]),
            go.clone(),
            swap_command(planned, files, remove),
            "printf 'reached\\tswapped\\n'".to_owned(),
            go,
            self.systemctl(&format!("start {}", shell_quote(unit))),
            "printf 'reached\\tstarted\\n'".to_owned(),
        ];
        Ok(RollTalk { talk: self.session.converse(&steps.join(" && ")).await? })
    }

    /// Puts back what [`Remote::swap_in`] replaced or deleted, kept in `kept` (the staging
    /// dir's `previous/`, or the rollback point it became), and removes what it added.
    pub async fn restore(
        &self,
        planned: &PlannedInstance,
        kept: &str,
        files: &[PackageFile],
        remove: &[String],
    ) -> Result<(), SshError> {
        let bin = planned.instance.layout().bin();
        let paths = moved_paths(files).chain(remove.iter().map(String::as_str));
        self.run(&remote::RESTORE.command([bin.as_str(), kept].into_iter().chain(paths)))
            .await
            .map(drop)
    }

    /// After a patch: what it replaced in `bin/` becomes the rollback point `point.stamp` with
    /// its manifest (and the sha256 of the binary that ran before); only the newest
    /// `point.keep` points stay. The instance's staging dirs then go, in the same round trip:
    /// it is done with them.
    pub async fn keep_point(
        &self,
        planned: &PlannedInstance,
        point: &PointToKeep<'_>,
    ) -> Result<PointKept, SshError> {
        let stdout = self.run(&keep_point_command(planned, point)).await?;
        Ok(point_kept(planned, point, &stdout))
    }

    /// `--offline`: [`Remote::swap_in`] and, once it succeeded, [`Remote::keep_point`], in one
    /// round trip (nothing comes between them offline: no stop, no start). The swap's failure
    /// is the outer error (nothing is kept then); the keeping's, the inner one.
    pub async fn swap_in_and_keep_point(
        &self,
        planned: &PlannedInstance,
        files: &[PackageFile],
        remove: &[String],
        point: &PointToKeep<'_>,
    ) -> Result<Result<PointKept, SshError>, SshError> {
        let (swap, keep) =
            (swap_command(planned, files, remove), keep_point_command(planned, point));
        let output =
            self.session.exec(&format!("{swap} && printf 'swapped\\t-\\n' && {keep}")).await?;
        let swapped = Answer::parse(&output.stdout)
            .is_ok_and(|answer| answer.lines().any(|(key, _)| key == "swapped"));
        let endpoint = self.session.endpoint();
        match (output.exit_status, swapped) {
            (0, _) => Ok(Ok(point_kept(planned, point, &output.stdout))),
            (_, true) => Ok(Err(output.failure(endpoint, &keep))),
            (_, false) => Err(output.failure(endpoint, &swap)),
        }
    }

    /// Where an earlier run of the package staged for `planned` kept what it replaced: its
    /// staging dir's `previous/` (a run cut short), or its newest rollback point (an
    /// `--offline` run keeps one at once). `None` when it kept nothing, or the host did not say.
    pub async fn kept_by_earlier_run(&self, planned: &PlannedInstance) -> Option<String> {
        let layout = planned.instance.layout();
        let (points, binary) = (layout.rollback_points(), layout.entry());
        let previous = DeployLayout::previous(&planned.staging_dir);
        let sha7 = planned.staging_dir.rsplit('-').next().unwrap_or_default();
        let command = remote::KEPT.command([previous.as_str(), &points, sha7, &binary]);
        let stdout = self.run(&command).await.ok()?;
        let answer = Answer::parse(&stdout).ok()?;
        answer.lines().find(|(key, _)| *key == "kept").map(|(_, dir)| dir.to_owned())
    }

    /// Removes each of `what`: a dir ([`Removal::Dir`]), or every staging dir of a deploy dir
    /// ([`Removal::StagingOf`]).
    pub async fn remove(&self, what: &[Removal<'_>]) -> Result<(), SshError> {
        let pairs = what.iter().flat_map(|removal| match removal {
            Removal::Dir(dir) => ["dir", *dir],
            Removal::StagingOf(deploy) => ["staging", *deploy],
        });
        self.run(&remote::CLEANUP.command(pairs)).await.map(drop)
    }

    /// What preflight needs of `planned`, in one round trip (see `remote/facts.sh`): its deploy
    /// dir, free space and file system, what TiUP's backup of `bin/` will take if it is still
    /// to be made, what the rollback points take, the installed binary's size (its sha256 only
    /// at the package binary's size, and only when that is the package binary's, how `others`
    /// compare) and its version; with `unit_scope`, whether systemd knows the unit.
    pub async fn facts(
        &self,
        planned: &PlannedInstance,
        entry: (u64, &str),
        others: &[PackageFile],
        unit_scope: Option<&str>,
    ) -> Result<String, SshError> {
        let (entry_size, entry_sha256) = entry;
        let mut args: Vec<String> = vec![
            planned.deploy_dir.clone(),
            planned.binary.clone(),
            planned.backup_dir.clone(),
            ROLLBACK_DIR.to_owned(),
            entry_size.to_string(),
            entry_sha256.to_owned(),
            unit_scope.unwrap_or_default().to_owned(),
            planned.service.clone(),
        ];
        for file in others {
            let (kind, want) = match &file.kind {
                FileKind::File { sha256, .. } => ("file", sha256.as_str()),
                FileKind::Symlink { target } => ("link", target.as_str()),
                FileKind::Dir => ("dir", "-"),
            };
            args.extend([kind.to_owned(), file.path.clone(), want.to_owned()]);
        }
        self.run(&remote::FACTS.command(args)).await
    }
}

/// What [`Remote::remove`] removes.
#[derive(Debug, Clone, Copy)]
pub enum Removal<'a> {
    /// This dir.
    Dir(&'a str),
    /// Every staging dir (`bin.patch-*`) of this deploy dir.
    StagingOf(&'a str),
}

/// The steps of an instance's roll in one command (see [`Remote::converse_roll`]), taken one
/// at a time.
pub struct RollTalk<'r> {
    talk: crate::ssh::Conversation<'r>,
}

/// How a step of a [`RollTalk`] ended.
#[derive(Debug)]
pub enum StepEnd {
    Done,
    /// The stop ran, but systemd says the unit is still active: the command goes no further.
    StillActive,
    /// The command ended before the step was done: what it said, and its exit status.
    Ended(ExecOutput),
}

impl RollTalk<'_> {
    /// Lets the next step go, and waits until the command says it is done (`reached<TAB>what`,
    /// or for the stop, `state<TAB>...`), or ends.
    pub async fn step(&mut self, reached: &str) -> Result<StepEnd, SshError> {
        self.talk.say("go").await?;
        while let Some(line) = self.talk.hear().await? {
            match line.split_once('\t') {
                Some(("state", state)) if reached == "stopped" => {
                    return Ok(match UnitState::said(state) {
                        UnitState::Active => StepEnd::StillActive,
                        UnitState::NotActive => StepEnd::Done,
                    });
                }
                Some(("reached", step)) if step == reached => return Ok(StepEnd::Done),
                _ => {}
            }
        }
        Ok(StepEnd::Ended(self.talk.end().await?))
    }

    /// The command's end, once its last step is done.
    pub async fn end(mut self) -> Result<ExecOutput, SshError> {
        self.talk.end().await
    }
}

/// What keeping a rollback point did.
#[derive(Debug, Clone)]
pub struct PointKept {
    /// The point; `None` when the patch replaced nothing there was to keep.
    pub point: Option<KeptPoint>,
    /// The instance's staging dirs are gone: the run's cleanup has nothing left to do for it.
    pub staging_removed: bool,
}

/// A rollback point a patch left.
#[derive(Debug, Clone)]
pub struct KeptPoint {
    pub dir: String,
    /// The sha256 of the binary that ran before the patch (recorded in its manifest).
    pub binary_sha256: Option<String>,
}

/// What `instance` could go back to (see `remote/survey.sh`), asked over `session`.
pub async fn survey(
    session: &HostSession,
    instance: &Instance,
    cluster_version: &str,
) -> Result<String, SshError> {
    let (deploy, comp) = (instance.deploy_dir.as_str(), instance.role.component());
    session.run(&remote::SURVEY.command([deploy, comp, cluster_version, ROLLBACK_DIR])).await
}

/// Streams the tree in `dir` (without a point's own files) into `file` as a gzipped tar.
pub async fn pack(
    session: &HostSession,
    dir: &str,
    file: &mut std::fs::File,
) -> Result<ExecOutput, SshError> {
    session.exec_to_file(&remote::PACK.command([dir]), file).await
}

/// A rollback point to keep after a patch (see [`Remote::keep_point`]).
pub struct PointToKeep<'a> {
    /// Its name under `bin.rollback/`.
    pub stamp: &'a str,
    /// Its `.manifest`: what ran before and after, the package, the run's action.
    pub manifest: &'a str,
    /// How many of the newest points stay.
    pub keep: usize,
}

fn keep_point_command(planned: &PlannedInstance, point: &PointToKeep<'_>) -> String {
    let layout = planned.instance.layout();
    let (points, binary, keep) = (layout.rollback_points(), layout.entry(), point.keep.to_string());
    let previous = DeployLayout::previous(&planned.staging_dir);
    let deploy = planned.deploy_dir.as_str();
    let args = [previous.as_str(), &points, point.stamp, point.manifest, &binary, &keep, deploy];
    remote::KEEP_POINT.command(args)
}

/// What `keep_point` answered in `stdout`.
fn point_kept(planned: &PlannedInstance, point: &PointToKeep<'_>, stdout: &str) -> PointKept {
    let answer = Answer::parse(stdout).unwrap_or_default();
    let said = |wanted: &str| answer.lines().find(|(key, _)| *key == wanted).map(|(_, v)| v);
    let binary_sha256 = said("binary").map(str::to_owned);
    let dir = format!("{}/{}", planned.instance.layout().rollback_points(), point.stamp);
    PointKept {
        point: said("kept").map(|_| KeptPoint { dir, binary_sha256 }),
        staging_removed: said("cleaned").is_some(),
    }
}

/// TiUP's backup of the instance's `bin` and the note of what the run is for, as the first
/// steps of staging: made while `bin` is as it was and before any service is touched, as TiUP
/// backs up every instance before its restarts.
fn staging_steps(planned: &PlannedInstance, action: Action) -> String {
    let backup =
        remote::BACKUP.command([planned.instance.layout().bin(), planned.backup_dir.clone()]);
    let action = remote::ACTION.command([planned.staging_dir.as_str(), action.word()]);
    format!("{backup} && {action}")
}

/// Whether staging writes the staged files to disk (`flush`, see `list_tree` in
/// `remote/lib.sh`): for a roll, whose swap comes with the service stopped. An offline swap
/// stops nothing, and leaves the writing to the kernel, as TiUP's install does.
fn flush(plan: &Plan) -> &'static str {
    if plan.strategy.is_offline() { "-" } else { "flush" }
}

/// The paths a swap moves: the package's files and links (directories are made as needed).
fn moved_paths(files: &[PackageFile]) -> impl Iterator<Item = &str> {
    files.iter().filter(|f| f.kind != FileKind::Dir).map(|f| f.path.as_str())
}
