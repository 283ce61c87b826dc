//! dm-master: leadership among the masters of `--initial-cluster`, the members API, leader
//! eviction, forwarding from followers, and the scheduler that binds sources to workers.
//!
//! Masters poll each other's state over the peer port every 100 ms. Leadership is decided the
//! same way on every master, so they agree without a consensus protocol: keep a leader while it
//! is up and eligible; adopt the leader a peer reports; otherwise, with a quorum reachable,
//! elect the eligible master with the lowest name. A leader that stops gracefully announces its
//! resignation; one that vanishes is waited for (`DM_SIM_MASTER_LEASE_MS`), as etcd's lease is.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Digest;
use tokio::signal::unix::{SignalKind, signal};

use crate::{Settings, log};

const TICK: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
struct Peer {
    name: String,
    peer_url: String,
}

/// The scheduler's state: the leader's, mirrored by followers so a new leader continues it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Scheduler {
    sources: BTreeSet<String>,
    workers: BTreeMap<String, WorkerRecord>,
    /// source -> worker it is bound to.
    bindings: BTreeMap<String, String>,
    /// source -> the worker it was last bound to, preferred when it is bound again.
    last_worker: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WorkerRecord {
    addr: String,
    stage: String,
    #[serde(skip)]
    last_seen: Option<Instant>,
}

/// What a master tells its peers about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PeerState {
    name: String,
    client_addr: String,
    eligible: bool,
    leader: Option<String>,
    scheduler: Scheduler,
}

struct View {
    evicted: bool,
    leader: Option<String>,
    /// Masters that answered the last poll (self included unless never-healthy).
    alive: BTreeSet<String>,
    client_addrs: BTreeMap<String, String>,
    leader_last_seen: Instant,
    resigned: BTreeSet<String>,
    leading_since: Option<Instant>,
    scheduler: Scheduler,
}

struct Master {
    settings: Settings,
    name: String,
    client_addr: String,
    peers: Vec<Peer>,
    http: reqwest::Client,
    view: Mutex<View>,
}

type Shared = Arc<Master>;

pub async fn run(settings: Settings) -> i32 {
    let name = settings.flag("name");
    let client_addr = settings.flag("advertise-addr");
    let peers: Vec<Peer> = settings
        .flag("initial-cluster")
        .split(',')
        .filter_map(|entry| entry.split_once('='))
        .map(|(name, url)| Peer {
            name: name.to_owned(),
            peer_url: url.trim_end_matches('/').to_owned(),
        })
        .collect();
    let client_bind = settings.bind_addr("master-addr");
    let peer_bind = settings
        .flag("peer-urls")
        .trim_start_matches("http://")
        .to_owned();
    let state_file = std::path::Path::new(&settings.flag("data-dir")).join("sim-state.json");
    let scheduler = Scheduler {
        sources: std::fs::read_to_string(&state_file)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default(),
        ..Scheduler::default()
    };
    let master = Arc::new(Master {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .no_proxy()
            .build()
            .expect("an HTTP client"),
        view: Mutex::new(View {
            evicted: false,
            leader: None,
            alive: BTreeSet::new(),
            client_addrs: BTreeMap::new(),
            leader_last_seen: Instant::now(),
            resigned: BTreeSet::new(),
            leading_since: None,
            scheduler,
        }),
        settings,
        name,
        client_addr,
        peers,
    });

    let client_api = Router::new()
        .route("/status", get(status))
        .route("/health", get(health))
        .route("/apis/v1alpha1/members", get(members))
        .route("/apis/v1alpha1/leader/{op}", put(operate_leader))
        .route("/api/v1/sources", post(create_source))
        .route("/sim/v1/workers/keepalive", post(keepalive))
        .route("/sim/v1/workers/offline", post(worker_offline))
        .with_state(master.clone());
    let peer_api = Router::new()
        .route("/sim/peer/state", get(peer_state))
        .route("/sim/peer/resign", post(peer_resigned))
        .with_state(master.clone());
    let (client_listener, peer_listener) = match (
        tokio::net::TcpListener::bind(&client_bind).await,
        tokio::net::TcpListener::bind(&peer_bind).await,
    ) {
        (Ok(client), Ok(peer)) => (client, peer),
        (client, peer) => {
            eprintln!(
                "dm-master: cannot listen on {client_bind} / {peer_bind}: {:?} {:?}",
                client.err(),
                peer.err()
            );
            return 1;
        }
    };
    tokio::spawn(async move { axum::serve(client_listener, client_api).await });
    tokio::spawn(async move { axum::serve(peer_listener, peer_api).await });
    log(
        &master.settings,
        &format!("dm-master {} started", master.name),
    );

    let ticker = master.clone();
    tokio::spawn(async move {
        loop {
            tick(&ticker, &state_file).await;
            tokio::time::sleep(TICK).await;
        }
    });

    let mut sigterm = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut sigint = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    resign(&master).await;
    0
}

/// On a graceful stop the leader tells its peers at once, so they elect within a tick.
async fn resign(master: &Shared) {
    let leads = {
        let mut view = master.view.lock().unwrap();
        // Peers polling in the meantime must not pick this master again.
        view.evicted = true;
        view.leader.as_deref() == Some(master.name.as_str())
    };
    if leads {
        log(&master.settings, "resigning leadership");
        for peer in master.peers.iter().filter(|p| p.name != master.name) {
            let url = format!("{}/sim/peer/resign", peer.peer_url);
            let _ = master
                .http
                .post(url)
                .json(&json!({ "name": master.name }))
                .send()
                .await;
        }
    }
}

fn eligible(master: &Master, view: &View) -> bool {
    !view.evicted && !master.settings.has_fault("never-healthy")
}

async fn tick(master: &Shared, state_file: &std::path::Path) {
    let mut answers = Vec::new();
    for peer in master.peers.iter().filter(|p| p.name != master.name) {
        let url = format!("{}/sim/peer/state", peer.peer_url);
        let http = master.http.clone();
        answers.push(tokio::spawn(async move {
            let response = http.get(url).send().await.ok()?;
            response.json::<PeerState>().await.ok()
        }));
    }
    let mut states = Vec::new();
    for answer in answers {
        if let Ok(Some(state)) = answer.await {
            states.push(state);
        }
    }

    let mut view = master.view.lock().unwrap();
    let me_eligible = eligible(master, &view);
    let mut alive: BTreeSet<String> = states.iter().map(|s| s.name.clone()).collect();
    let mut candidates: BTreeSet<String> = states
        .iter()
        .filter(|s| s.eligible)
        .map(|s| s.name.clone())
        .collect();
    if !master.settings.has_fault("never-healthy") {
        alive.insert(master.name.clone());
    }
    if me_eligible {
        candidates.insert(master.name.clone());
    }
    for state in &states {
        view.client_addrs
            .insert(state.name.clone(), state.client_addr.clone());
    }
    let quorum = master.peers.len() / 2 + 1;

    let current = view.leader.clone();
    let keep = match &current {
        Some(leader) if alive.contains(leader) => {
            view.leader_last_seen = Instant::now();
            candidates.contains(leader)
        }
        Some(leader) => {
            !view.resigned.contains(leader)
                && view.leader_last_seen.elapsed() < master.settings.master_lease
        }
        None => false,
    };
    if !keep {
        let reported = states
            .iter()
            .filter_map(|s| s.leader.clone())
            .find(|l| alive.contains(l) && candidates.contains(l));
        let elected = reported.or_else(|| {
            (alive.len() >= quorum)
                .then(|| candidates.iter().next().cloned())
                .flatten()
        });
        if elected != current {
            log(&master.settings, &format!("leader is now {elected:?}"));
            view.leader_last_seen = Instant::now();
        }
        view.leader = elected;
    }
    view.alive = alive;
    if let Some(leader) = view.leader.clone() {
        view.resigned.remove(&leader);
    }

    let leads = view.leader.as_deref() == Some(master.name.as_str());
    if leads {
        if view.leading_since.is_none() {
            view.leading_since = Some(Instant::now());
            let now = Instant::now();
            for worker in view.scheduler.workers.values_mut() {
                worker.last_seen = Some(now);
            }
        }
        if scheduler_started(master, &view) {
            schedule(master, &mut view.scheduler);
        }
    } else {
        view.leading_since = None;
        let leader_state = states
            .iter()
            .find(|s| Some(&s.name) == view.leader.as_ref() && s.leader == view.leader);
        if let Some(state) = leader_state {
            view.scheduler = state.scheduler.clone();
        }
    }
    let sources: Vec<&String> = view.scheduler.sources.iter().collect();
    if !sources.is_empty() {
        let _ = std::fs::write(state_file, serde_json::to_string(&sources).unwrap());
    }
}

fn scheduler_started(master: &Master, view: &View) -> bool {
    view.leading_since
        .is_some_and(|since| since.elapsed() >= master.settings.scheduler_delay)
}

/// Expires silent workers and binds every unbound source to a free worker.
fn schedule(master: &Master, scheduler: &mut Scheduler) {
    let lease = master.settings.worker_lease;
    let expired: Vec<String> = scheduler
        .workers
        .iter()
        .filter(|(_, w)| w.stage != "offline" && w.last_seen.is_some_and(|t| t.elapsed() > lease))
        .map(|(name, _)| name.clone())
        .collect();
    for name in expired {
        set_offline(scheduler, &name);
    }
    let unbound: Vec<String> = scheduler
        .sources
        .iter()
        .filter(|s| !scheduler.bindings.contains_key(*s))
        .cloned()
        .collect();
    for source in unbound {
        let free = |name: &String| {
            scheduler
                .workers
                .get(name)
                .is_some_and(|w| w.stage == "free")
        };
        let preferred = scheduler
            .last_worker
            .get(&source)
            .filter(|w| free(w))
            .cloned();
        let worker = preferred.or_else(|| scheduler.workers.keys().find(|w| free(w)).cloned());
        if let Some(worker) = worker {
            scheduler.bindings.insert(source.clone(), worker.clone());
            scheduler.last_worker.insert(source, worker.clone());
            scheduler.workers.get_mut(&worker).unwrap().stage = "bound".to_owned();
        }
    }
}

fn set_offline(scheduler: &mut Scheduler, name: &str) {
    if let Some(worker) = scheduler.workers.get_mut(name) {
        worker.stage = "offline".to_owned();
    }
    scheduler.bindings.retain(|_, bound| bound != name);
}

// ---- client API -------------------------------------------------------------------------

async fn status(State(master): State<Shared>) -> String {
    master.settings.version_block(true)
}

async fn health(State(master): State<Shared>) -> Response {
    let view = master.view.lock().unwrap();
    let leader_up = view.leader.as_ref().is_some_and(|l| view.alive.contains(l));
    if leader_up && !master.settings.has_fault("never-healthy") {
        Json(json!({"health": "true", "reason": ""})).into_response()
    } else {
        let body = json!({"health": "false", "reason": "no leader"});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

fn gateway_error(status: StatusCode, message: &str) -> Response {
    let body = json!({"code": 2, "message": message, "details": []});
    (status, Json(body)).into_response()
}

/// Where a call that only the leader answers goes.
enum Route {
    Here,
    Forward(String),
    NoLeader,
}

fn route(master: &Master) -> Route {
    let view = master.view.lock().unwrap();
    match view.leader.as_deref() {
        Some(leader) if leader == master.name => Route::Here,
        Some(leader) if view.alive.contains(leader) => {
            Route::Forward(client_addr(master, &view, leader))
        }
        _ => Route::NoLeader,
    }
}

fn no_leader() -> Response {
    gateway_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "master is not leader, and can't forward request to leader",
    )
}

fn client_addr(master: &Master, view: &View, name: &str) -> String {
    if name == master.name {
        return master.client_addr.clone();
    }
    view.client_addrs.get(name).cloned().unwrap_or_else(|| {
        let peer = master.peers.iter().find(|p| p.name == name);
        let host = peer
            .and_then(|p| p.peer_url.trim_start_matches("http://").split(':').next())
            .unwrap_or("127.0.0.1");
        format!("{host}:8261")
    })
}

async fn forward(
    master: &Master,
    addr: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Response {
    tokio::time::sleep(master.settings.forward_delay).await;
    let url = format!("http://{addr}{path}");
    let request = match method {
        "GET" => master.http.get(url),
        _ => master.http.post(url).json(&body.unwrap_or(Value::Null)),
    };
    match request.send().await {
        Ok(response) => {
            let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
            let text = response.text().await.unwrap_or_default();
            (status, [("content-type", "application/json")], text).into_response()
        }
        Err(_) => no_leader(),
    }
}

async fn members(State(master): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    match route(&master) {
        Route::NoLeader => return no_leader(),
        Route::Forward(addr) => {
            let path = format!("/apis/v1alpha1/members?{query}");
            return forward(&master, &addr, "GET", &path, None).await;
        }
        Route::Here => {}
    }
    let mut sections = BTreeSet::new();
    let mut names = BTreeSet::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
        match key {
            "leader" | "master" | "worker" if value == "true" => {
                sections.insert(key.to_owned());
            }
            "names" => {
                names.insert(value.to_owned());
            }
            _ => {}
        }
    }
    if sections.is_empty() {
        sections.extend(["leader", "master", "worker"].map(str::to_owned));
    }
    let wanted = |name: &str| names.is_empty() || names.contains(name);
    let view = master.view.lock().unwrap();
    let mut members = Vec::new();
    if sections.contains("leader") {
        let leader = view.leader.clone().unwrap_or_default();
        let addr = client_addr(&master, &view, &leader);
        members.push(json!({"leader": {"msg": "", "name": leader, "addr": addr}}));
    }
    if sections.contains("master") {
        let masters: Vec<Value> = master
            .peers
            .iter()
            .filter(|p| wanted(&p.name))
            .map(|p| {
                let digest = sha2::Sha256::digest(p.name.as_bytes());
                let id = u64::from_be_bytes(digest[..8].try_into().unwrap());
                json!({
                    "name": p.name,
                    "memberID": id.to_string(),
                    "alive": view.alive.contains(&p.name),
                    "peerURLs": [p.peer_url],
                    "clientURLs": [format!("http://{}", client_addr(&master, &view, &p.name))],
                })
            })
            .collect();
        members.push(json!({"master": {"msg": "", "masters": masters}}));
    }
    if sections.contains("worker") {
        let started = scheduler_started(&master, &view);
        let workers: Vec<Value> = if started {
            view.scheduler
                .workers
                .iter()
                .filter(|(name, _)| wanted(name))
                .map(|(name, w)| {
                    let source = view
                        .scheduler
                        .bindings
                        .iter()
                        .find(|(_, bound)| *bound == name)
                        .map(|(source, _)| source.clone())
                        .unwrap_or_default();
                    json!({"name": name, "addr": w.addr, "stage": w.stage, "source": source})
                })
                .collect()
        } else {
            Vec::new()
        };
        let msg = if started {
            ""
        } else {
            "scheduler has not started"
        };
        members.push(json!({"worker": {"msg": msg, "workers": workers}}));
    }
    Json(json!({"result": true, "msg": "", "members": members})).into_response()
}

async fn operate_leader(State(master): State<Shared>, Path(op): Path<String>) -> Response {
    let mut view = master.view.lock().unwrap();
    match op.as_str() {
        "1" | "EvictLeaderOp" => {
            let leads = view.leader.as_deref() == Some(master.name.as_str());
            if !(leads && master.settings.has_fault("ignore-evict")) {
                view.evicted = true;
                log(
                    &master.settings,
                    "evicted: will not lead until cancelled or restarted",
                );
            }
        }
        "2" | "CancelEvictLeaderOp" => view.evicted = false,
        other => {
            return gateway_error(
                StatusCode::BAD_REQUEST,
                &format!("invalid leader op {other}"),
            );
        }
    }
    Json(json!({"result": true, "msg": ""})).into_response()
}

/// Runs `apply` on the leader's scheduler, forwarding from a follower.
async fn leader_call(
    master: Shared,
    path: &str,
    body: Value,
    apply: impl FnOnce(&Master, &mut Scheduler, &Value) -> Response,
) -> Response {
    match route(&master) {
        Route::NoLeader => no_leader(),
        Route::Forward(addr) => forward(&master, &addr, "POST", path, Some(body)).await,
        Route::Here => {
            let mut view = master.view.lock().unwrap();
            if !scheduler_started(&master, &view) {
                return gateway_error(StatusCode::SERVICE_UNAVAILABLE, "scheduler has not started");
            }
            apply(&master, &mut view.scheduler, &body)
        }
    }
}

async fn create_source(State(master): State<Shared>, Json(body): Json<Value>) -> Response {
    leader_call(
        master,
        "/api/v1/sources",
        body,
        |master, scheduler, body| {
            let name = body["source"]["source_name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if name.is_empty() {
                return gateway_error(StatusCode::BAD_REQUEST, "source_name is required");
            }
            scheduler.sources.insert(name.clone());
            schedule(master, scheduler);
            Json(body["source"].clone()).into_response()
        },
    )
    .await
}

async fn keepalive(State(master): State<Shared>, Json(body): Json<Value>) -> Response {
    leader_call(
        master,
        "/sim/v1/workers/keepalive",
        body,
        |master, scheduler, body| {
            let name = body["name"].as_str().unwrap_or_default().to_owned();
            let addr = body["addr"].as_str().unwrap_or_default().to_owned();
            let record = scheduler.workers.entry(name).or_insert(WorkerRecord {
                addr: addr.clone(),
                stage: "offline".to_owned(),
                last_seen: None,
            });
            record.addr = addr;
            record.last_seen = Some(Instant::now());
            if record.stage == "offline" {
                record.stage = "free".to_owned();
            }
            schedule(master, scheduler);
            Json(json!({"result": true, "msg": ""})).into_response()
        },
    )
    .await
}

async fn worker_offline(State(master): State<Shared>, Json(body): Json<Value>) -> Response {
    leader_call(
        master,
        "/sim/v1/workers/offline",
        body,
        |master, scheduler, body| {
            set_offline(scheduler, body["name"].as_str().unwrap_or_default());
            schedule(master, scheduler);
            Json(json!({"result": true, "msg": ""})).into_response()
        },
    )
    .await
}

// ---- peer API ---------------------------------------------------------------------------

async fn peer_state(State(master): State<Shared>) -> Json<PeerState> {
    let view = master.view.lock().unwrap();
    Json(PeerState {
        name: master.name.clone(),
        client_addr: master.client_addr.clone(),
        eligible: eligible(&master, &view),
        leader: view.leader.clone(),
        scheduler: view.scheduler.clone(),
    })
}

async fn peer_resigned(State(master): State<Shared>, Json(body): Json<Value>) -> StatusCode {
    let name = body["name"].as_str().unwrap_or_default().to_owned();
    let mut view = master.view.lock().unwrap();
    if view.leader.as_deref() == Some(name.as_str()) {
        view.leader = None;
    }
    view.alive.remove(&name);
    view.resigned.insert(name);
    StatusCode::OK
}
