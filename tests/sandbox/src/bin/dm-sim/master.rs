//! dm-master: the process, its view of the cluster, and the 100 ms tick that polls the peers,
//! runs the election, mirrors or schedules the cluster state, and persists it.
//!
//! The HTTP API lives in `master_api.rs`, the peer protocol in `peer.rs`, the election rule in
//! `election.rs` and the binding rules in `scheduler.rs`; this file ties them together.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dm_sandbox::Fault;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{Settings, socket_addr};
use crate::election::{Ballot, Election};
use crate::events::EventLog;
use crate::peer::{self, Member, PeerReport, PollOutcome, Resignation};
use crate::scheduler::{Events, Scheduler};
use crate::state::{ClusterState, StateFile};
use crate::{http, master_api};

const TICK: Duration = Duration::from_millis(100);
/// A peer whose last answer is older than this no longer counts as up. Longer than a slow poll
/// on a busy machine, so a loaded peer does not flap between alive and dead; a peer whose port
/// refuses connections is down at once.
const ANSWER_GRACE: Duration = Duration::from_secs(1);

pub struct Master {
    pub settings: Settings,
    pub name: String,
    /// `--advertise-addr`: where clients (and forwarding followers) reach this master.
    pub client_addr: String,
    /// Every master of `--initial-cluster`, this one included, by name.
    pub members: Vec<Member>,
    pub http: reqwest::Client,
    pub log: EventLog,
    view: Mutex<View>,
}

/// Everything that changes, behind one lock (held briefly, never across an await).
pub struct View {
    pub election: Election,
    /// Set by `leader/1`, cleared by `leader/2`; lost on restart, as in DM.
    pub evicted: bool,
    /// Set on SIGTERM, so the master never campaigns again while it exits.
    pub stopping: bool,
    /// Each peer's last answer and when it came.
    sightings: BTreeMap<String, (Instant, PeerReport)>,
    /// Client addresses of the masters, as they last reported them.
    pub client_addrs: BTreeMap<String, String>,
    /// When this master last became leader.
    pub leading_since: Option<Instant>,
    /// Runs on the leader once `DM_SIM_SCHEDULER_DELAY_MS` has passed since it won.
    pub scheduler: Option<Scheduler>,
    pub state: ClusterState,
    state_file: StateFile,
}

impl View {
    /// The peers that answered recently, with their last report.
    pub fn reachable(&self, now: Instant) -> impl Iterator<Item = &PeerReport> {
        self.sightings
            .values()
            .filter(move |(at, _)| now.duration_since(*at) < ANSWER_GRACE)
            .map(|(_, report)| report)
    }

    pub fn is_reachable(&self, name: &str, now: Instant) -> bool {
        self.reachable(now).any(|report| report.name == name)
    }

    /// Applies a change to the cluster state, counting a revision if anything changed.
    pub fn change_state<T>(&mut self, change: impl FnOnce(&mut ClusterState) -> T) -> T {
        let before = self.state.clone();
        let outcome = change(&mut self.state);
        if self.state != before {
            self.state.revision = before.revision + 1;
        }
        outcome
    }

    /// Runs a scheduler operation, when the scheduler runs.
    pub fn schedule<T>(
        &mut self,
        operation: impl FnOnce(&mut Scheduler, &mut ClusterState) -> T,
    ) -> Option<T> {
        let mut scheduler = self.scheduler.take()?;
        let outcome = self.change_state(|state| operation(&mut scheduler, state));
        self.scheduler = Some(scheduler);
        Some(outcome)
    }
}

impl Master {
    pub fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().expect("no panic while holding the view")
    }

    /// The other masters of the cluster.
    pub fn peers(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(move |m| m.name != self.name)
    }

    /// Healthy in the etcd sense: counts towards quorum and may be reported alive.
    pub fn healthy(&self) -> bool {
        !self.settings.has(Fault::NeverHealthy)
    }

    fn eligible(&self, view: &View) -> bool {
        self.healthy() && !view.evicted && !view.stopping
    }

    fn ballot(&self, view: &View) -> Ballot {
        Ballot {
            name: self.name.clone(),
            healthy: self.healthy(),
            eligible: self.eligible(view),
            term: view.election.term(),
            claim: view.election.claim(),
            follows_someone: view.election.leader().is_some(),
        }
    }

    /// What `GET /sim/peer/state` answers.
    pub fn report(&self) -> PeerReport {
        let view = self.view();
        PeerReport {
            name: self.name.clone(),
            client_addr: self.client_addr.clone(),
            healthy: self.healthy(),
            eligible: self.eligible(&view),
            term: view.election.term(),
            claim: view.election.claim(),
            leader: view.election.leader_name().map(str::to_owned),
            state: view.state.clone(),
        }
    }

    pub fn peer_resigned(&self, resignation: &Resignation) {
        let mut view = self.view();
        view.election.peer_resigned(&resignation.name, resignation.term);
        drop(view);
        self.log.event(format!("{} resigned from term {}", resignation.name, resignation.term));
    }

    /// Steps down if leading and tells the peers, so they elect at once.
    pub async fn resign(&self, why: &str) {
        let term = {
            let mut view = self.view();
            let term = view.election.resign();
            if term.is_some() {
                view.leading_since = None;
                view.scheduler = None;
            }
            term
        };
        if let Some(term) = term {
            self.log.event(format!("resigned leadership of term {term} ({why})"));
            peer::announce_resignation(self, term).await;
        }
    }

    /// Where the leader's client API is: `Some(None)` when this master leads, `Some(addr)`
    /// when a reachable peer does, `None` when there is no leader to talk to.
    pub fn leader_route(&self) -> Option<Option<String>> {
        let view = self.view();
        let leader = view.election.leader_name()?;
        if leader == self.name {
            return Some(None);
        }
        if !view.is_reachable(leader, Instant::now()) {
            return None;
        }
        view.client_addrs.get(leader).cloned().map(Some)
    }

    async fn tick(&self) {
        let outcomes = peer::poll_peers(self).await;
        let now = Instant::now();
        let mut events = Events::new();
        let mut view = self.view();
        for (name, outcome) in outcomes {
            match outcome {
                PollOutcome::Answered(report) => {
                    view.client_addrs.insert(name.clone(), report.client_addr.clone());
                    view.sightings.insert(name, (now, *report));
                }
                PollOutcome::Refused => {
                    view.sightings.remove(&name);
                }
                PollOutcome::Silent => {}
            }
        }

        let ballots: Vec<Ballot> = view.reachable(now).map(PeerReport::ballot).collect();
        let own = self.ballot(&view);
        let cluster_size =
            self.members.iter().filter(|m| !view.state.removed_masters.contains(&m.name)).count();
        let leader_before = view.election.leader_name().map(str::to_owned);
        let was_leading = view.election.is_leader();
        view.election.step(&own, &ballots, cluster_size, now);
        let leader_now = view.election.leader_name().map(str::to_owned);
        if leader_now != leader_before {
            events.push(match &leader_now {
                Some(leader) => format!(
                    "leader is {leader} (term {})",
                    view.election.leader().map_or(0, |l| l.term)
                ),
                None => "no leader".to_owned(),
            });
        }

        match (was_leading, view.election.is_leader()) {
            (false, true) => {
                // Carry on with the newest copy of the cluster state any master has.
                let newest = view
                    .reachable(now)
                    .map(|report| &report.state)
                    .fold(view.state.clone(), ClusterState::newer);
                view.state = newest;
                view.leading_since = Some(now);
                events.push("became leader; the scheduler starts shortly".to_owned());
            }
            (true, false) => {
                view.leading_since = None;
                view.scheduler = None;
                events.push("lost leadership".to_owned());
            }
            _ => {}
        }

        if let Some(since) = view.leading_since {
            if view.scheduler.is_none()
                && now.duration_since(since) >= self.settings.timings.scheduler_delay
            {
                view.scheduler =
                    Some(Scheduler::start(self.settings.timings.worker_lease, &view.state, now));
                events.push("scheduler started".to_owned());
            }
            let expired = view.schedule(|scheduler, state| scheduler.expire_leases(state, now));
            events.extend(expired.unwrap_or_default());
        } else if let Some(leader) = leader_now {
            let mirrored = view
                .reachable(now)
                .find(|report| report.name == leader && report.claim.is_some())
                .map(|report| report.state.clone());
            if let Some(state) = mirrored {
                view.state = state;
            }
        }
        self.persist(&mut view);
        drop(view);
        for event in events {
            self.log.event(event);
        }
    }

    /// Saves the cluster state when it changed; a failure is logged, not fatal (the state
    /// lives on in the other masters).
    pub fn persist(&self, view: &mut View) {
        let View { state, state_file, .. } = view;
        if let Err(err) = state_file.save(state) {
            self.log.event(format!("cannot save the cluster state: {err}"));
        }
    }
}

/// Runs a dm-master until SIGTERM (or SIGINT); returns the exit code.
pub async fn run(settings: Settings) -> Result<i32, String> {
    let name = settings.required("name")?.to_owned();
    let client_listen = settings.listen_addr("master-addr", "advertise-addr")?;
    let client_addr = match settings.flag("advertise-addr").filter(|a| !a.is_empty()) {
        Some(addr) => addr.to_owned(),
        None => client_listen.to_string(),
    };
    let peer_listen = peer_listen_addr(&settings)?;
    let members = peer::parse_initial_cluster(settings.required("initial-cluster")?)?;
    if !members.iter().any(|m| m.name == name) {
        return Err(format!("--initial-cluster does not name this master ({name})"));
    }
    let data_dir = PathBuf::from(settings.required("data-dir")?);
    let mut state_file = StateFile::in_data_dir(&data_dir);
    let state = state_file.load()?;

    let log = EventLog::new(settings.log_file(), &name);
    let master = Arc::new(Master {
        view: Mutex::new(View {
            election: Election::new(
                &name,
                settings.timings.master_lease,
                Instant::now() + settings.timings.master_lease,
            ),
            evicted: false,
            stopping: false,
            sightings: BTreeMap::new(),
            client_addrs: BTreeMap::from([(name.clone(), client_addr.clone())]),
            leading_since: None,
            scheduler: None,
            state,
            state_file,
        }),
        http: http::client(Duration::from_secs(5), settings.tls.as_deref()),
        settings,
        name,
        client_addr,
        members,
        log,
    });

    // DM serves its peer (etcd) port with the same certificates as its client port.
    let tls = master.settings.tls.clone();
    http::serve(client_listen, master_api::router(master.clone()), tls.as_deref()).await?;
    http::serve(peer_listen, peer::router(master.clone()), tls.as_deref()).await?;
    master.log.event(format!(
        "dm-master {} listening on {client_listen} (peer {peer_listen}){}",
        master.settings.version,
        if tls.is_some() { " over mutual TLS" } else { "" }
    ));

    let ticking = master.clone();
    tokio::spawn(async move {
        loop {
            ticking.tick().await;
            tokio::time::sleep(TICK).await;
        }
    });

    let mut sigterm = signal(SignalKind::terminate()).map_err(|err| err.to_string())?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|err| err.to_string())?;
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    master.view().stopping = true;
    master.resign("stopping").await;
    master.log.event("stopped");
    Ok(0)
}

/// The first of `--peer-urls` (`http(s)://ip:8291,...`); a wildcard IP takes the first of
/// `--advertise-peer-urls`'s.
fn peer_listen_addr(settings: &Settings) -> Result<SocketAddr, String> {
    let first = |urls: &str| socket_addr(urls.split(',').next().unwrap_or_default());
    let listen = first(settings.required("peer-urls")?)?;
    if !listen.ip().is_unspecified() {
        return Ok(listen);
    }
    let advertised = first(settings.required("advertise-peer-urls")?)?;
    Ok(SocketAddr::new(advertised.ip(), listen.port()))
}
