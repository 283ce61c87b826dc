//! Patching one instance: back up, (evict,) stop, swap, start, verify; on failure put back the
//! binary that ran just before, start it, and confirm it is healthy.

use std::time::Duration;

use super::events::{Event, Progress};
use super::preflight::InstanceFacts;
use super::remote::{Remote, UnitState};
use super::stage::Staged;
use crate::dm::client::DmClient;
use crate::dm::health::{Readiness, master_readiness, wait_until, worker_readiness};
use crate::dm::version::VersionInfo;
use crate::plan::PlannedInstance;
use crate::ssh::shell_quote;
use crate::topology::Role;

/// What every instance's roll needs to know about the cluster.
pub struct RollContext<'a> {
    pub client: &'a DmClient,
    /// Every dm-master's address: members can be asked of any of them.
    pub masters: &'a [String],
    pub wait_timeout: Duration,
    pub offline: bool,
    pub progress: &'a dyn Progress,
}

/// How an instance's roll ended, when it did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// Nothing was changed on the instance (e.g. the leader would not move).
    Untouched(String),
    /// It failed after its service was stopped, and is back on its previous binary, healthy.
    RolledBack(String),
    /// It failed and could not be brought back; the message says what to do.
    NeedsAttention(String),
}

/// One instance and everything known about it.
pub struct Job<'a> {
    pub step: &'a PlannedInstance,
    pub remote: &'a Remote,
    pub facts: &'a InstanceFacts,
    pub staged: &'a Staged,
}

impl Job<'_> {
    /// Where the binary that ran before is kept until the instance is done.
    fn previous_binary(&self) -> String {
        format!(
            "{}/{}.previous",
            self.step.staging_dir,
            self.step.role.component()
        )
    }

    fn say(&self, context: &RollContext<'_>, step: &str) {
        context.progress.event(Event::Step {
            id: &self.step.id,
            step,
        });
    }
}

/// Patches one instance. On `Ok` it runs the new binary (or, offline, has it in place).
pub async fn patch_instance(context: &RollContext<'_>, job: &Job<'_>) -> Result<(), Failure> {
    let step = job.step;
    job.say(context, "backing up bin");
    back_up(job).await.map_err(Failure::Untouched)?;

    if context.offline {
        job.say(context, "swapping the binary");
        return swap_in(job).await.map_err(|err| {
            Failure::NeedsAttention(format!(
                "{err}; the previous binary is at {} on {}",
                job.previous_binary(),
                job.remote.label
            ))
        });
    }

    let evicted = match step.role {
        Role::Master => make_way_for_master(context, job).await?,
        Role::Worker => {
            job.say(context, "checking for a dm-master leader");
            require_leader(context).await.map_err(Failure::Untouched)?;
            false
        }
    };

    let attempt = async {
        job.say(context, "stopping");
        stop(job).await?;
        job.say(context, "swapping the binary");
        swap_in(job).await?;
        job.say(context, "starting");
        job.remote
            .start(&step.service)
            .await
            .map_err(|e| e.to_string())?;
        job.say(context, "waiting until healthy on the new version");
        wait_ready(context, job, &job.staged.version).await
    };
    let Err(reason) = attempt.await else {
        return Ok(());
    };

    job.say(context, "failed: rolling back");
    let restored = roll_back(context, job).await;
    if evicted {
        // A restarted master forgets its evict flag; this covers a restart that did not happen,
        // so the cluster is never left with a master that refuses to lead.
        let _ = context
            .client
            .cancel_evict_leader(&step.instance.addr())
            .await;
    }
    match restored {
        Ok(()) => Err(Failure::RolledBack(format!(
            "{reason}; rolled back to {}",
            job.facts.installed_version.short()
        ))),
        Err(rollback_error) => Err(Failure::NeedsAttention(format!(
            "{reason}; rolling back failed too: {rollback_error}. The previous binary is at {} on {}: \
             copy it over {}, then `systemctl start {}`",
            job.previous_binary(),
            job.remote.label,
            step.binary,
            step.service
        ))),
    }
}

/// TiUP's backup (`bin` -> `bin.old.<version>`, kept if present) and our own copy of exactly
/// the binary that runs now, which is what a roll back restores.
async fn back_up(job: &Job<'_>) -> Result<(), String> {
    let deploy_bin = format!("{}/bin", job.step.deploy_dir);
    let backup = shell_quote(&job.step.backup_dir);
    let current = shell_quote(&job.step.binary);
    let previous = shell_quote(&job.previous_binary()).into_owned();
    let command = format!(
        "{{ test -d {backup} || cp -rp {bin} {backup}; }} && {{ ln -f {current} {previous} 2>/dev/null || cp -p {current} {previous}; }}",
        bin = shell_quote(&deploy_bin),
    );
    job.remote
        .run(&command)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Renames the staged binary over the installed one: atomic, same file system.
async fn swap_in(job: &Job<'_>) -> Result<(), String> {
    let command = format!(
        "mv -f {} {}",
        shell_quote(&job.staged.binary),
        shell_quote(&job.step.binary)
    );
    job.remote
        .run(&command)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

async fn stop(job: &Job<'_>) -> Result<(), String> {
    let unit = &job.step.service;
    job.remote.stop(unit).await.map_err(|e| e.to_string())?;
    match job
        .remote
        .unit_state(unit)
        .await
        .map_err(|e| e.to_string())?
    {
        UnitState::NotActive => Ok(()),
        UnitState::Active => Err(format!("{unit} is still active after `systemctl stop`")),
    }
}

/// Waits until the instance is healthy and runs `expected`; gives up at once if its service
/// exits.
async fn wait_ready(
    context: &RollContext<'_>,
    job: &Job<'_>,
    expected: &VersionInfo,
) -> Result<(), String> {
    let instance = &job.step.instance;
    let addr = instance.addr();
    wait_until(context.wait_timeout, || async {
        match job.remote.unit_state(&job.step.service).await {
            Ok(UnitState::Active) => {}
            Ok(UnitState::NotActive) => {
                return Readiness::Failed(format!(
                    "{} exited after start (see its log in {})",
                    job.step.service, instance.log_dir
                ));
            }
            Err(err) => return Readiness::Waiting(err.to_string()),
        }
        match instance.role {
            Role::Master => master_readiness(context.client, &addr, &instance.name, expected).await,
            Role::Worker => {
                worker_readiness(
                    context.client,
                    &addr,
                    &instance.name,
                    context.masters,
                    expected,
                )
                .await
            }
        }
    })
    .await
}

/// Puts the previous binary back, starts it, and waits until it is healthy on its old version.
async fn roll_back(context: &RollContext<'_>, job: &Job<'_>) -> Result<(), String> {
    let unit = &job.step.service;
    // It may be running (the new binary started but never turned healthy).
    job.remote.stop(unit).await.map_err(|e| e.to_string())?;
    let command = format!(
        "mv -f {} {}",
        shell_quote(&job.previous_binary()),
        shell_quote(&job.step.binary)
    );
    job.remote.run(&command).await.map_err(|e| e.to_string())?;
    job.remote.start(unit).await.map_err(|e| e.to_string())?;
    wait_ready(context, job, &job.facts.installed_version).await
}

/// Before a dm-master stops: the others must keep a quorum, and if it leads, it hands over
/// first. Returns whether it was evicted.
async fn make_way_for_master(context: &RollContext<'_>, job: &Job<'_>) -> Result<bool, Failure> {
    let instance = &job.step.instance;
    job.say(context, "waiting for the other dm-masters to be alive");
    // The previous master may still be rejoining: wait (within the deadline) until stopping
    // this one keeps a quorum, rather than failing at the first look.
    let quorum_kept = wait_until(context.wait_timeout, || async {
        let answer = match context.client.members_from_any(context.masters).await {
            Ok(answer) => answer,
            Err(err) => return Readiness::Waiting(err.to_string()),
        };
        let masters = answer.masters();
        let alive_others = masters
            .iter()
            .filter(|m| m.alive && m.name != instance.name)
            .count();
        let quorum = masters.len() / 2 + 1;
        if masters.len() <= 1 || alive_others >= quorum {
            Readiness::Ready
        } else {
            Readiness::Waiting(format!(
                "stopping {} would leave {alive_others} of {} dm-masters alive, below the quorum of {quorum}",
                instance.name,
                masters.len()
            ))
        }
    })
    .await;
    if let Err(reason) = quorum_kept {
        return Err(Failure::Untouched(format!(
            "{reason}; bring the others back first"
        )));
    }
    let members = context
        .client
        .members_from_any(context.masters)
        .await
        .map_err(|err| Failure::Untouched(err.to_string()))?;
    let alive_others = members
        .masters()
        .iter()
        .filter(|m| m.alive && m.name != instance.name)
        .count();
    let leads = members.leader().is_some_and(|l| l.name == instance.name);
    if !leads || alive_others == 0 {
        return Ok(false);
    }

    job.say(context, "evicting the leader");
    let addr = instance.addr();
    context
        .client
        .evict_leader(&addr)
        .await
        .map_err(|err| Failure::Untouched(format!("evicting the leader failed: {err}")))?;
    let others: Vec<String> = context
        .masters
        .iter()
        .filter(|a| **a != addr)
        .cloned()
        .collect();
    let moved = wait_until(context.wait_timeout, || async {
        match context.client.members_from_any(&others).await {
            Ok(members) => match members.leader() {
                Some(leader) if leader.name != instance.name => Readiness::Ready,
                Some(_) => Readiness::Waiting(format!("{} still leads", instance.name)),
                None => Readiness::Waiting("no leader elected yet".to_owned()),
            },
            Err(err) => Readiness::Waiting(err.to_string()),
        }
    })
    .await;
    if let Err(reason) = moved {
        let _ = context.client.cancel_evict_leader(&addr).await;
        return Err(Failure::Untouched(format!(
            "the leader did not move after eviction: {reason}; eviction was cancelled"
        )));
    }
    Ok(true)
}

/// Workers are restarted only while a leader can rebind their sources.
async fn require_leader(context: &RollContext<'_>) -> Result<(), String> {
    wait_until(context.wait_timeout, || async {
        match context.client.members_from_any(context.masters).await {
            Ok(members) if members.leader().is_some() => Readiness::Ready,
            Ok(_) => Readiness::Waiting("the DM cluster has no leader".to_owned()),
            Err(err) => Readiness::Waiting(err.to_string()),
        }
    })
    .await
}
