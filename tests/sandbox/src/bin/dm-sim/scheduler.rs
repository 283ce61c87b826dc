//! The leader's scheduler: workers' keepalive leases and the binding of sources to workers,
//! following DM's rules ("Workers and sources" in the reference):
//!
//! - a new or returning worker comes back `free`, or `bound` when a source is waiting (a source
//!   prefers the worker it had before);
//! - a worker that says goodbye goes `offline` at once, and its source moves to a `free` worker
//!   at once if there is one (and does not move back later); with none, it waits;
//! - a worker that vanishes without a goodbye goes `offline` when its lease runs out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dm_sandbox::dm_api::WorkerStage;

use crate::state::{ClusterState, Source, Worker};

/// Something the scheduler did, for the event log.
pub type Events = Vec<String>;

#[derive(Debug)]
pub struct Scheduler {
    lease: Duration,
    /// Last keepalive of each worker. Not part of the shared state: a master taking over gives
    /// every online worker a fresh lease, since it cannot know how old the last one was.
    keepalives: HashMap<String, Instant>,
}

impl Scheduler {
    /// A scheduler taking over `state` at `now`.
    pub fn start(lease: Duration, state: &ClusterState, now: Instant) -> Scheduler {
        let keepalives = state
            .workers
            .iter()
            .filter(|(_, worker)| worker.stage.is_online())
            .map(|(name, _)| (name.clone(), now))
            .collect();
        Scheduler { lease, keepalives }
    }

    /// A worker registers or renews its lease.
    pub fn keepalive(
        &mut self,
        state: &mut ClusterState,
        name: &str,
        addr: &str,
        now: Instant,
    ) -> Events {
        self.keepalives.insert(name.to_owned(), now);
        let worker = state
            .workers
            .entry(name.to_owned())
            .or_insert(Worker { addr: addr.to_owned(), stage: WorkerStage::Offline });
        worker.addr = addr.to_owned();
        if worker.stage.is_online() {
            return Events::new();
        }
        worker.stage = WorkerStage::Free;
        let mut events = vec![format!("worker {name} ({addr}) is online")];
        events.extend(bind_waiting_sources(state));
        events
    }

    /// A worker said goodbye (graceful stop).
    pub fn goodbye(&mut self, state: &mut ClusterState, name: &str) -> Events {
        self.keepalives.remove(name);
        take_offline(state, name, "stopped")
    }

    /// Takes offline the workers whose lease ran out.
    pub fn expire_leases(&mut self, state: &mut ClusterState, now: Instant) -> Events {
        let expired: Vec<String> = self
            .keepalives
            .iter()
            .filter(|(_, last)| now.duration_since(**last) >= self.lease)
            .map(|(name, _)| name.clone())
            .collect();
        let mut events = Events::new();
        for name in expired {
            self.keepalives.remove(&name);
            events.extend(take_offline(state, &name, "lease expired"));
        }
        events
    }

    /// `POST /api/v1/sources`: adds a source and binds it if a worker is free.
    pub fn create_source(
        &mut self,
        state: &mut ClusterState,
        name: &str,
    ) -> Result<Events, String> {
        if state.sources.contains_key(name) {
            return Err(format!("source {name} already exists"));
        }
        state.sources.insert(name.to_owned(), Source::default());
        let mut events = vec![format!("source {name} created")];
        events.extend(bind_waiting_sources(state));
        Ok(events)
    }

    /// `POST /api/v1/sources/{source}/transfer` (DM's `TransferSource`): the source moves to
    /// `worker`, which must be free; its old worker is free then. Moving it to the worker it
    /// is bound to does nothing.
    pub fn transfer_source(
        &mut self,
        state: &mut ClusterState,
        source: &str,
        worker: &str,
        now_ms: u64,
    ) -> Result<Events, String> {
        let Some(current) = state.sources.get(source).map(|s| s.bound_to.clone()) else {
            return Err(format!("source {source} not exists"));
        };
        if current.as_deref() == Some(worker) {
            return Ok(Events::new());
        }
        match state.workers.get(worker) {
            None => return Err(format!("dm-worker with name {worker} not exists")),
            Some(target) if target.stage != WorkerStage::Free => {
                return Err(format!("dm-worker {worker} is {}, not free", target.stage));
            }
            Some(_) => {}
        }
        if let Some(old) = current.as_ref().and_then(|old| state.workers.get_mut(old)) {
            old.stage = WorkerStage::Free;
        }
        state.workers.get_mut(worker).expect("checked above").stage = WorkerStage::Bound;
        let moved = state.sources.get_mut(source).expect("checked above");
        moved.bound_to = Some(worker.to_owned());
        moved.previous_worker = Some(worker.to_owned());
        moved.transferred_at_ms = Some(now_ms);
        let from = current.unwrap_or_else(|| "no worker".to_owned());
        Ok(vec![
            format!("source {source} transferred from {from} to worker {worker}"),
            format!("source {source} bound to worker {worker}"),
        ])
    }

    /// `DELETE /apis/v1alpha1/members/worker/{name}`: only an offline worker can go.
    pub fn remove_worker(
        &mut self,
        state: &mut ClusterState,
        name: &str,
    ) -> Result<Events, String> {
        let Some(worker) = state.workers.get(name) else {
            return Err(format!("dm-worker with name {name} not exists"));
        };
        if worker.stage.is_online() {
            return Err(format!(
                "dm-worker {name} is still {}, stop it before offlining it",
                worker.stage
            ));
        }
        state.workers.remove(name);
        for source in state.sources.values_mut() {
            if source.previous_worker.as_deref() == Some(name) {
                source.previous_worker = None;
            }
        }
        Ok(vec![format!("worker {name} removed from the cluster")])
    }
}

fn take_offline(state: &mut ClusterState, name: &str, why: &str) -> Events {
    let Some(worker) = state.workers.get_mut(name) else {
        return Events::new();
    };
    if !worker.stage.is_online() {
        return Events::new();
    }
    worker.stage = WorkerStage::Offline;
    let mut events = vec![format!("worker {name} is offline ({why})")];
    for (source_name, source) in &mut state.sources {
        if source.bound_to.as_deref() == Some(name) {
            source.bound_to = None;
            events.push(format!("source {source_name} unbound from {name}"));
        }
    }
    events.extend(bind_waiting_sources(state));
    events
}

/// Binds every unbound source to a free worker: first each to its previous worker when that
/// one is free, then the rest to the free workers in name order.
fn bind_waiting_sources(state: &mut ClusterState) -> Events {
    let mut events = Events::new();
    for prefer_previous in [true, false] {
        let waiting: Vec<String> = state
            .sources
            .iter()
            .filter(|(_, source)| source.bound_to.is_none())
            .map(|(name, _)| name.clone())
            .collect();
        for source_name in waiting {
            let is_free = |worker: &str| {
                state.workers.get(worker).is_some_and(|w| w.stage == WorkerStage::Free)
            };
            let previous = state.sources[&source_name].previous_worker.clone();
            let chosen = if prefer_previous {
                previous.filter(|worker| is_free(worker))
            } else {
                state.workers.keys().find(|worker| is_free(worker)).cloned()
            };
            let Some(worker) = chosen else { continue };
            state.workers.get_mut(&worker).expect("a free worker is known").stage =
                WorkerStage::Bound;
            let source = state.sources.get_mut(&source_name).expect("listed above");
            source.bound_to = Some(worker.clone());
            source.previous_worker = Some(worker.clone());
            events.push(format!("source {source_name} bound to worker {worker}"));
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(3);

    fn stage(state: &ClusterState, worker: &str) -> WorkerStage {
        state.workers[worker].stage
    }

    #[test]
    fn sources_bind_to_workers_in_name_order_and_extra_workers_stay_free() {
        let now = Instant::now();
        let mut state = ClusterState::default();
        let mut scheduler = Scheduler::start(LEASE, &state, now);
        scheduler.create_source(&mut state, "s1").unwrap();
        for worker in ["w1", "w2"] {
            scheduler.keepalive(&mut state, worker, "addr", now);
        }
        assert_eq!(state.source_of("w1"), Some("s1"));
        assert_eq!(stage(&state, "w2"), WorkerStage::Free);
    }

    #[test]
    fn a_stopped_workers_source_moves_to_a_free_worker_and_stays() {
        let now = Instant::now();
        let mut state = ClusterState::default();
        let mut scheduler = Scheduler::start(LEASE, &state, now);
        scheduler.create_source(&mut state, "s1").unwrap();
        scheduler.keepalive(&mut state, "w1", "addr", now);
        scheduler.keepalive(&mut state, "w2", "addr", now);
        scheduler.goodbye(&mut state, "w1");
        assert_eq!(stage(&state, "w1"), WorkerStage::Offline);
        assert_eq!(state.source_of("w2"), Some("s1"));
        scheduler.keepalive(&mut state, "w1", "addr", now);
        assert_eq!(stage(&state, "w1"), WorkerStage::Free, "no move back");
    }

    #[test]
    fn without_a_free_worker_the_source_waits_for_its_own() {
        let now = Instant::now();
        let mut state = ClusterState::default();
        let mut scheduler = Scheduler::start(LEASE, &state, now);
        for source in ["s1", "s2"] {
            scheduler.create_source(&mut state, source).unwrap();
        }
        scheduler.keepalive(&mut state, "w1", "addr", now);
        scheduler.keepalive(&mut state, "w2", "addr", now);
        scheduler.goodbye(&mut state, "w2");
        assert_eq!(state.sources["s2"].bound_to, None);
        scheduler.keepalive(&mut state, "w3", "addr", now);
        assert_eq!(state.source_of("w3"), Some("s2"), "a newcomer takes it");
        scheduler.goodbye(&mut state, "w3");
        scheduler.keepalive(&mut state, "w2", "addr", now);
        assert_eq!(state.source_of("w2"), Some("s2"));
    }

    #[test]
    fn a_silent_worker_goes_offline_when_its_lease_ends() {
        let start = Instant::now();
        let mut state = ClusterState::default();
        let mut scheduler = Scheduler::start(LEASE, &state, start);
        scheduler.keepalive(&mut state, "w1", "addr", start);
        scheduler.expire_leases(&mut state, start + LEASE / 2);
        assert_eq!(stage(&state, "w1"), WorkerStage::Free);
        scheduler.expire_leases(&mut state, start + LEASE);
        assert_eq!(stage(&state, "w1"), WorkerStage::Offline);
    }

    #[test]
    fn a_transfer_moves_a_source_to_a_free_worker_only() {
        let now = Instant::now();
        let mut state = ClusterState::default();
        let mut scheduler = Scheduler::start(LEASE, &state, now);
        scheduler.create_source(&mut state, "s1").unwrap();
        for worker in ["w1", "w2"] {
            scheduler.keepalive(&mut state, worker, "addr", now);
        }
        assert!(scheduler.transfer_source(&mut state, "s1", "w9", 0).is_err());
        assert!(scheduler.transfer_source(&mut state, "s1", "w1", 0).unwrap().is_empty());
        scheduler.transfer_source(&mut state, "s1", "w2", 7).unwrap();
        assert_eq!(state.source_of("w2"), Some("s1"));
        assert_eq!(stage(&state, "w1"), WorkerStage::Free);
        assert_eq!(state.sources["s1"].transferred_at_ms, Some(7));
        let err = scheduler.transfer_source(&mut state, "s1", "w1", 8);
        assert!(err.is_ok(), "w1 is free again: {err:?}");
        scheduler.create_source(&mut state, "s2").unwrap();
        assert_eq!(state.source_of("w2"), Some("s2"));
        assert!(scheduler.transfer_source(&mut state, "s1", "w2", 9).is_err(), "w2 is bound");
    }

    #[test]
    fn only_an_offline_worker_can_be_removed() {
        let now = Instant::now();
        let mut state = ClusterState::default();
        let mut scheduler = Scheduler::start(LEASE, &state, now);
        scheduler.keepalive(&mut state, "w1", "addr", now);
        assert!(scheduler.remove_worker(&mut state, "w1").is_err());
        scheduler.goodbye(&mut state, "w1");
        scheduler.remove_worker(&mut state, "w1").unwrap();
        assert!(state.workers.is_empty());
    }
}
