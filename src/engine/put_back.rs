//! A package proven bad is put back everywhere this run put it: once a subtask failed on a
//! worker that runs it (see [`super::judge`]), every instance the run patched goes back to what
//! it ran before, from the rollback point its patch left, one at a time, free workers first so
//! that a source leaving a bad worker lands on a good one. Afterwards the package runs nowhere
//! this run put it, and every subtask runs.

use std::collections::HashMap;

use super::events::Event;
use super::hosts::Hosts;
use super::judge;
use super::preflight::InstanceFacts;
use super::report::{Outcome, Report};
use super::roll::{self, Failure, Job, RollContext};
use super::stage::Staged;
use crate::plan::{Plan, PlannedInstance};
use crate::topology::Role;

/// What a put-back needs of the run.
pub struct PutBack<'a> {
    pub context: &'a RollContext<'a>,
    pub hosts: &'a Hosts,
    pub facts: &'a HashMap<String, InstanceFacts>,
    pub staged: &'a HashMap<String, Staged>,
    pub plan: &'a Plan,
}

/// Which instances went back, and which could not.
#[derive(Debug, Default)]
pub struct PutBackDone {
    /// Back on what they ran before, healthy.
    pub put_back: Vec<String>,
    /// Still on the package, or down: the operator must see to them.
    pub needs_operator: Vec<String>,
}

impl PutBack<'_> {
    /// Puts back every instance the report shows patched by this run, with the rollback point
    /// each left (`points`, by instance ID), because of `why`; the report's rows and message
    /// say what happened.
    pub async fn everywhere(
        &self,
        report: &mut Report,
        points: &HashMap<String, String>,
        why: &str,
    ) -> PutBackDone {
        let mut remaining: Vec<&PlannedInstance> = self
            .plan
            .instances
            .iter()
            .filter(|i| {
                report.instances.iter().any(|r| r.id == i.id && r.outcome == Outcome::Patched)
            })
            .collect();
        let mut done = PutBackDone::default();
        while !remaining.is_empty() {
            let planned = self.take_next(&mut remaining).await;
            let job = Job::of(planned, self.plan, self.hosts, self.facts, self.staged);
            let failure = match points.get(&planned.id) {
                Some(point) => {
                    let failure = roll::put_back(self.context, &job, point, why).await;
                    job.remote.rest().await;
                    failure
                }
                None => Failure::NeedsAttention(format!(
                    "{why}; it still runs the package: no rollback point was kept for it \
                     (see --keep-rollbacks); put the cluster's original binary back with \
                     `dm-patch rollback --to-original -N {} --force` (TiUP's backup in {}; \
                     --force because what the package paused is paused still)",
                    planned.id, planned.backup_dir
                )),
            };
            let (outcome, detail) = match failure {
                Failure::RolledBack(detail) => {
                    done.put_back.push(planned.id.clone());
                    (Outcome::RolledBack, detail)
                }
                Failure::NeedsAttention(detail)
                | Failure::Unchanged(detail)
                | Failure::Elsewhere(detail) => {
                    done.needs_operator.push(planned.id.clone());
                    (Outcome::NeedsAttention, detail)
                }
            };
            let row = report.instances.iter_mut().find(|r| r.id == planned.id).expect("a row");
            (row.outcome, row.new_version) = (outcome, None);
            row.detail = Some(detail.clone());
            self.context.progress.event(Event::InstanceFinished {
                id: &planned.id,
                outcome,
                detail: Some(&detail),
            });
        }
        report.result = super::report::RunResult::Failed;
        report.message = Some(self.message(why, &done));
        done
    }

    /// A free worker first, as the roll picks them (for masters, plan order).
    async fn take_next<'p>(&self, remaining: &mut Vec<&'p PlannedInstance>) -> &'p PlannedInstance {
        let context = self.context;
        if remaining[0].role == Role::Worker
            && let Ok(members) = context.client.members_from_any(context.masters).await
        {
            let names: Vec<&str> = remaining.iter().map(|i| i.name.as_str()).collect();
            return remaining.remove(judge::next_worker(&names, members.workers()));
        }
        remaining.remove(0)
    }

    fn message(&self, why: &str, done: &PutBackDone) -> String {
        let put_back = match done.put_back.as_slice() {
            [] => String::new(),
            ids => format!(" Put back on {}, which this run had patched.", ids.join(", ")),
        };
        let attention = match done.needs_operator.as_slice() {
            [] => String::new(),
            [id] => format!(" {id} could not be put back and needs attention (see its detail)."),
            ids => format!(
                " {} could not be put back and need attention (see each instance's detail).",
                ids.join(", ")
            ),
        };
        format!(
            "{why}.{put_back}{attention} The roll stopped; instances after it are untouched. \
             Fix the package, then run again."
        )
    }
}
