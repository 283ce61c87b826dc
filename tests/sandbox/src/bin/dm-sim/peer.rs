//! The masters' own protocol on the peer port (8291), standing in for etcd:
//!
//! - `GET /sim/peer/state` -> [`PeerReport`]: who the master is, whether it may lead, the
//!   leader it follows, its term and claim, and its copy of the cluster state;
//! - `POST /sim/peer/resign` [`Resignation`]: a leader stepping down (eviction, SIGTERM) tells
//!   its peers, so they elect at once instead of waiting for a lease.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::election::Ballot;
use crate::master::Master;
use crate::state::ClusterState;

/// How long a peer may take to answer a poll before this tick counts it as silent.
pub const POLL_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerReport {
    pub name: String,
    /// Its client address (`--advertise-addr`), where followers forward calls.
    pub client_addr: String,
    pub healthy: bool,
    pub eligible: bool,
    pub term: u64,
    /// `Some(term)` while it leads.
    pub claim: Option<u64>,
    /// The leader it follows, itself included, also while waiting out a vanished one's lease.
    pub leader: Option<String>,
    pub state: ClusterState,
}

impl PeerReport {
    pub fn ballot(&self) -> Ballot {
        Ballot {
            name: self.name.clone(),
            healthy: self.healthy,
            eligible: self.eligible,
            term: self.term,
            claim: self.claim,
            follows_someone: self.leader.is_some(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resignation {
    pub name: String,
    pub term: u64,
}

/// A master in `--initial-cluster`.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    /// `http://ip:8291` (`https://` on a TLS cluster)
    pub peer_url: String,
}

/// `name1=http://ip:8291,name2=http://ip:8291,...`, sorted by name.
pub fn parse_initial_cluster(text: &str) -> Result<Vec<Member>, String> {
    let mut members = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, url) = entry
            .split_once('=')
            .ok_or_else(|| format!("--initial-cluster entry {entry:?} is not name=url"))?;
        members
            .push(Member { name: name.to_owned(), peer_url: url.trim_end_matches('/').to_owned() });
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(members)
}

/// What one poll of a peer found out.
pub enum PollOutcome {
    Answered(Box<PeerReport>),
    /// Nothing listens there: the process is gone.
    Refused,
    /// It did not answer in time or answered nonsense: maybe busy, maybe gone.
    Silent,
}

/// Asks every peer for its state, all at once.
pub async fn poll_peers(master: &Master) -> Vec<(String, PollOutcome)> {
    let polls = master.peers().map(|peer| {
        let http = master.http.clone();
        let url = format!("{}/sim/peer/state", peer.peer_url);
        let name = peer.name.clone();
        tokio::spawn(async move {
            let outcome = match http.get(url).timeout(POLL_TIMEOUT).send().await {
                Ok(answer) => match answer.json::<PeerReport>().await {
                    Ok(report) => PollOutcome::Answered(Box::new(report)),
                    Err(_) => PollOutcome::Silent,
                },
                Err(err) if err.is_connect() => PollOutcome::Refused,
                Err(_) => PollOutcome::Silent,
            };
            (name, outcome)
        })
    });
    let polls: Vec<_> = polls.collect();
    let mut outcomes = Vec::with_capacity(polls.len());
    for poll in polls {
        if let Ok(outcome) = poll.await {
            outcomes.push(outcome);
        }
    }
    outcomes
}

/// Tells every peer that this master resigned from `term`; best effort, all at once.
pub async fn announce_resignation(master: &Master, term: u64) {
    let resignation = Resignation { name: master.name.clone(), term };
    let sends: Vec<_> = master
        .peers()
        .map(|peer| {
            let request = master
                .http
                .post(format!("{}/sim/peer/resign", peer.peer_url))
                .timeout(POLL_TIMEOUT)
                .json(&resignation);
            tokio::spawn(async move { request.send().await })
        })
        .collect();
    for send in sends {
        // A peer that is down learns the new leader from the others when it comes back.
        let _ = send.await;
    }
}

pub fn router(master: Arc<Master>) -> Router {
    Router::new()
        .route("/sim/peer/state", get(state))
        .route("/sim/peer/resign", post(resign))
        .with_state(master)
}

async fn state(State(master): State<Arc<Master>>) -> Json<PeerReport> {
    Json(master.report())
}

async fn resign(
    State(master): State<Arc<Master>>,
    Json(resignation): Json<Resignation>,
) -> StatusCode {
    master.peer_resigned(&resignation);
    StatusCode::NO_CONTENT
}
