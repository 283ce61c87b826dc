//! dm-master's client API (port 8261): DM's v1alpha1 gateway (`members`, `leader`, offlining a
//! member, query-status), `/status`, `/health`, source and task creation from DM's OpenAPI, and
//! the calls workers make
//! (`/sim/v1/workers/...`), which stand in for DM's gRPC keepalive.
//!
//! Leader eviction, `/status` and `/health` answer for this master itself; every other call is
//! served by the leader, so a follower forwards it (see [`leader_only`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use dm_sandbox::Fault;
use dm_sandbox::dm_api::{
    CommonResponse, CreateSourceRequest, HealthResponse, LeaderOp, LeaderSection, MasterMember,
    MasterSection, MemberSection, MembersResponse, SCHEDULER_NOT_STARTED, WorkerMember,
    WorkerSection,
};
use dm_sandbox::task_api::{CreateTaskRequest, SubtaskReport};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::http::{self, FORWARDED_BY, gateway_error, no_leader};
use crate::master::Master;
use crate::scheduler::{Events, Scheduler};
use crate::state::ClusterState;
use crate::tasks;

type Shared = State<Arc<Master>>;

/// How often a worker call polls for the scheduler of a freshly elected leader.
const SCHEDULER_POLL: Duration = Duration::from_millis(50);

pub fn router(master: Arc<Master>) -> Router {
    let served_by_leader = Router::new()
        .route("/apis/v1alpha1/members", get(members))
        .route("/apis/v1alpha1/members/{kind}/{name}", delete(offline_member))
        .route("/api/v1/sources", post(create_source))
        .route("/api/v1/tasks", post(create_task))
        .route("/apis/v1alpha1/status/{task}", get(query_status))
        .route("/sim/v1/workers/keepalive", post(worker_keepalive))
        .route("/sim/v1/workers/offline", post(worker_goodbye))
        .route("/sim/v1/shard-ddl/{task}/{source}", post(lock_ddl).delete(resolve_ddl))
        .route("/api/v1/cluster/workers", get(openapi_workers))
        .route("/api/v1/sources/{source}/transfer", post(transfer_source))
        .route_layer(middleware::from_fn_with_state(master.clone(), leader_only));
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(|| async { http::process_metrics() }))
        .route("/apis/v1alpha1/leader/{op}", put(operate_leader))
        .merge(served_by_leader)
        .with_state(master.clone())
        .merge(http::status_route(&master.settings))
        .fallback(http::not_found)
}

/// Serves the call here on the leader; on a follower, forwards it to the leader (with DM's
/// extra latency), or answers DM's "not leader" error when there is none.
async fn leader_only(State(master): Shared, request: Request, next: Next) -> Response {
    match master.leader_route() {
        Some(None) => next.run(request).await,
        Some(Some(_)) | None if request.headers().contains_key(FORWARDED_BY) => no_leader(),
        Some(Some(leader_addr)) => {
            let (delay, scheme) = (master.settings.timings.forward_delay, master.settings.scheme());
            http::forward(&master.http, scheme, &master.name, &leader_addr, delay, request).await
        }
        None => no_leader(),
    }
}

/// 200 while this master is healthy and part of a cluster with a live leader, else 503.
async fn health(State(master): Shared) -> Response {
    let reason = {
        let view = master.view();
        let leader = view.election.leader_name();
        if !master.healthy() {
            Some("etcd member is not healthy")
        } else if leader.is_none() {
            Some("no leader")
        } else if leader.is_some_and(|l| l != master.name && !view.is_reachable(l, Instant::now()))
        {
            Some("the leader does not answer")
        } else {
            None
        }
    };
    let answer = |health: &str, reason: &str| HealthResponse {
        health: health.to_owned(),
        reason: reason.to_owned(),
    };
    match reason {
        None => Json(answer("true", "")).into_response(),
        Some(reason) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(answer("false", reason))).into_response()
        }
    }
}

/// `PUT /apis/v1alpha1/leader/{op}`: acts on this master only, never forwarded.
async fn operate_leader(State(master): Shared, Path(op): Path<String>) -> Response {
    let Some(op) = LeaderOp::parse(&op) else {
        return gateway_error(StatusCode::BAD_REQUEST, format!("invalid leader op {op:?}"));
    };
    match op {
        LeaderOp::Evict if master.settings.has(Fault::IgnoreEvict) => {
            master.log.event("asked to resign; ignoring it (ignore-evict)");
        }
        LeaderOp::Evict => {
            master.view().evicted = true;
            master.log.event("evicted: will not lead until cancelled or restarted");
            let resigning = master.clone();
            tokio::spawn(async move { resigning.resign("evicted").await });
        }
        LeaderOp::CancelEvict => {
            master.view().evicted = false;
            master.log.event("eviction cancelled: may lead again");
        }
    }
    Json(CommonResponse::ok()).into_response()
}

/// `GET /apis/v1alpha1/members?leader=&master=&worker=&names=...` on the leader.
async fn members(State(master): Shared, RawQuery(query): RawQuery) -> Response {
    let mut sections = BTreeSet::new();
    let mut names = BTreeSet::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "names" => {
                names.insert(value.into_owned());
            }
            switch @ ("leader" | "master" | "worker") if is_true(&value) => {
                sections.insert(switch.to_owned());
            }
            _ => {}
        }
    }
    let all = sections.is_empty();
    let wanted = |section: &str| all || sections.contains(section);
    let listed = |name: &str| names.is_empty() || names.contains(name);

    let view = master.view();
    let now = Instant::now();
    let mut members = Vec::new();
    if wanted("leader") {
        let mut leader = LeaderSection::default();
        if listed(&master.name) {
            leader.name = master.name.clone();
            leader.addr = master.client_addr.clone();
        }
        members.push(MemberSection::Leader(leader));
    }
    if wanted("master") {
        let masters = master
            .members
            .iter()
            .filter(|m| listed(&m.name) && !view.state.removed_masters.contains(&m.name))
            .map(|m| {
                let alive = if m.name == master.name {
                    master.healthy()
                } else {
                    view.reachable(now).any(|r| r.name == m.name && r.healthy)
                };
                MasterMember {
                    name: m.name.clone(),
                    member_id: member_id(&m.name),
                    alive,
                    peer_urls: vec![m.peer_url.clone()],
                    client_urls: view
                        .client_addrs
                        .get(&m.name)
                        .map(|addr| format!("{}://{addr}", master.settings.scheme()))
                        .into_iter()
                        .collect(),
                }
            })
            .collect();
        members.push(MemberSection::Master(MasterSection { msg: String::new(), masters }));
    }
    if wanted("worker") {
        let section = match view.scheduler {
            None => WorkerSection { msg: SCHEDULER_NOT_STARTED.to_owned(), workers: Vec::new() },
            Some(_) => {
                WorkerSection { msg: String::new(), workers: worker_members(&view.state, &listed) }
            }
        };
        members.push(MemberSection::Worker(section));
    }
    Json(MembersResponse { result: true, msg: String::new(), members }).into_response()
}

fn worker_members(state: &ClusterState, listed: &dyn Fn(&str) -> bool) -> Vec<WorkerMember> {
    state
        .workers
        .iter()
        .filter(|(name, _)| listed(name))
        .map(|(name, worker)| WorkerMember {
            name: name.clone(),
            addr: worker.addr.clone(),
            stage: worker.stage,
            source: state.source_of(name).unwrap_or_default().to_owned(),
        })
        .collect()
}

/// grpc-gateway's reading of a bool query parameter.
fn is_true(value: &str) -> bool {
    matches!(value, "true" | "True" | "TRUE" | "t" | "T" | "1")
}

/// A stable stand-in for the etcd member id of `name`.
fn member_id(name: &str) -> u64 {
    let digest = Sha256::digest(name.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 8 bytes"))
}

/// `DELETE /apis/v1alpha1/members/{master|worker}/{name}`: only a stopped member can go.
async fn offline_member(
    State(master): Shared,
    Path((kind, name)): Path<(String, String)>,
) -> Response {
    let outcome = match kind.as_str() {
        "master" => offline_master(&master, &name),
        "worker" => {
            let removal =
                with_scheduler(&master, |scheduler, state| scheduler.remove_worker(state, &name));
            match removal.await {
                Ok(outcome) => outcome,
                Err(refusal) => return refusal,
            }
        }
        other => {
            let message = format!("invalid member type {other:?}: master or worker");
            return gateway_error(StatusCode::BAD_REQUEST, message);
        }
    };
    let answer = match outcome {
        Ok(events) => {
            events.into_iter().for_each(|event| master.log.event(event));
            CommonResponse::ok()
        }
        Err(msg) => CommonResponse::refused(msg),
    };
    Json(answer).into_response()
}

fn offline_master(master: &Master, name: &str) -> Result<Events, String> {
    let mut view = master.view();
    let known = master.members.iter().any(|m| m.name == name);
    if !known || view.state.removed_masters.contains(name) {
        return Err(format!("dm-master with name {name} not exists"));
    }
    if name == master.name {
        return Err(format!("dm-master {name} is the leader: evict it first"));
    }
    if view.is_reachable(name, Instant::now()) {
        return Err(format!("dm-master {name} is still running: stop it first"));
    }
    view.change_state(|state| state.removed_masters.insert(name.to_owned()));
    master.persist(&mut view);
    Ok(vec![format!("master {name} removed from the cluster")])
}

/// `POST /api/v1/sources` on the leader, refused with 503 until its scheduler runs.
async fn create_source(
    State(master): Shared,
    Json(request): Json<CreateSourceRequest>,
) -> Response {
    let name = request.source.source_name.clone();
    let created = {
        let mut view = master.view();
        let created = view.schedule(|scheduler, state| scheduler.create_source(state, &name));
        master.persist(&mut view);
        created
    };
    match created {
        None => gateway_error(StatusCode::SERVICE_UNAVAILABLE, SCHEDULER_NOT_STARTED),
        Some(Err(message)) => gateway_error(StatusCode::BAD_REQUEST, message),
        Some(Ok(events)) => {
            events.into_iter().for_each(|event| master.log.event(event));
            (StatusCode::CREATED, Json(request.source)).into_response()
        }
    }
}

/// `POST /api/v1/tasks` on the leader: a task over existing sources.
async fn create_task(State(master): Shared, Json(request): Json<CreateTaskRequest>) -> Response {
    let sources: Vec<String> =
        request.task.source_config.source_conf.iter().map(|s| s.source_name.clone()).collect();
    let created =
        with_scheduler(&master, |_, state| tasks::create(state, &request.task.name, &sources));
    match created.await {
        Err(refusal) => refusal,
        Ok(Err(message)) => gateway_error(StatusCode::BAD_REQUEST, message),
        Ok(Ok(events)) => {
            events.into_iter().for_each(|event| master.log.event(event));
            (StatusCode::CREATED, Json(request.task)).into_response()
        }
    }
}

/// `GET /apis/v1alpha1/status/{task}` on the leader (query-status of one task): like DM's, it
/// asks each bound worker for its subtasks there and then.
async fn query_status(State(master): Shared, Path(task): Path<String>) -> Response {
    let state = match with_scheduler(&master, |_, state| state.clone()).await {
        Ok(state) => state,
        Err(refusal) => return refusal,
    };
    let sources = state.tasks.get(&task).into_iter().flatten();
    let bound: BTreeSet<&String> =
        sources.filter_map(|source| state.sources.get(source)?.bound_to.as_ref()).collect();
    let mut reports = HashMap::new();
    for name in bound {
        let Some(worker) = state.workers.get(name) else { continue };
        let url = format!("{}://{}/sim/v1/subtasks", master.settings.scheme(), worker.addr);
        let answer =
            async { master.http.get(url).send().await?.json::<Vec<SubtaskReport>>().await };
        if let Ok(subtasks) = answer.await {
            reports.insert(name.clone(), subtasks);
        }
    }
    Json(tasks::query_status(&state, &reports, &task)).into_response()
}

/// An OpenAPI error: HTTP 400 `{"error_code": N, "error_msg": "..."}`.
fn openapi_error(message: String) -> Response {
    const TRANSFER_REFUSED: i32 = 46_004;
    let body = json!({ "error_code": TRANSFER_REFUSED, "error_msg": message });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// `GET /api/v1/cluster/workers` (DM's OpenAPI, only with `openapi = true`).
async fn openapi_workers(State(master): Shared) -> Response {
    if !master.settings.openapi {
        return http::not_found().await;
    }
    let state = match with_scheduler(&master, |_, state| state.clone()).await {
        Ok(state) => state,
        Err(refusal) => return refusal,
    };
    let data: Vec<serde_json::Value> = state
        .workers
        .iter()
        .map(|(name, worker)| {
            json!({
                "name": name,
                "addr": worker.addr,
                "bound_stage": worker.stage.to_string(),
                "bound_source_name": state.source_of(name).unwrap_or_default(),
            })
        })
        .collect();
    Json(json!({ "total": data.len(), "data": data })).into_response()
}

#[derive(Debug, Deserialize)]
struct TransferRequest {
    worker_name: String,
}

/// `POST /api/v1/sources/{source}/transfer` (DM's OpenAPI, only with `openapi = true`): the
/// source moves to a free worker; 200 with an empty body.
async fn transfer_source(
    State(master): Shared,
    Path(source): Path<String>,
    Json(request): Json<TransferRequest>,
) -> Response {
    if !master.settings.openapi {
        return http::not_found().await;
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_millis() as u64)
        .unwrap_or_default();
    let worker = &request.worker_name;
    let moved = with_scheduler(&master, |scheduler, state| {
        scheduler.transfer_source(state, &source, worker, now_ms)
    });
    match moved.await {
        Err(refusal) => refusal,
        Ok(Err(message)) => openapi_error(message),
        Ok(Ok(events)) => {
            events.into_iter().for_each(|event| master.log.event(event));
            StatusCode::OK.into_response()
        }
    }
}

/// `POST /sim/v1/shard-ddl/{task}/{source}`: a shard DDL lock waits on the source.
async fn lock_ddl(State(master): Shared, Path((task, source)): Path<(String, String)>) -> Response {
    match with_scheduler(&master, |_, state| tasks::lock_ddl(state, &task, &source)).await {
        Err(refusal) => refusal,
        Ok(Err(message)) => gateway_error(StatusCode::BAD_REQUEST, message),
        Ok(Ok(events)) => {
            events.into_iter().for_each(|event| master.log.event(event));
            Json(CommonResponse::ok()).into_response()
        }
    }
}

/// `DELETE /sim/v1/shard-ddl/{task}/{source}`: the lock is resolved.
async fn resolve_ddl(
    State(master): Shared,
    Path((task, source)): Path<(String, String)>,
) -> Response {
    match with_scheduler(&master, |_, state| tasks::resolve_ddl(state, &task, &source)).await {
        Err(refusal) => refusal,
        Ok(events) => {
            events.into_iter().for_each(|event| master.log.event(event));
            Json(CommonResponse::ok()).into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
struct WorkerCall {
    name: String,
    #[serde(default)]
    addr: String,
}

/// A worker registers or renews its lease (every 200 ms); the answer tells it the source bound
/// to it and that source's tasks.
async fn worker_keepalive(State(master): Shared, Json(call): Json<WorkerCall>) -> Response {
    let now = Instant::now();
    let keepalive = with_scheduler(&master, |scheduler, state| {
        let events = scheduler.keepalive(state, &call.name, &call.addr, now);
        (events, tasks::assignment(state, &call.name))
    });
    match keepalive.await {
        Ok((events, assignment)) => {
            events.into_iter().for_each(|event| master.log.event(event));
            Json(assignment).into_response()
        }
        Err(refusal) => refusal,
    }
}

/// A worker says goodbye on SIGTERM: offline at once, its source moves to a free worker.
async fn worker_goodbye(State(master): Shared, Json(call): Json<WorkerCall>) -> Response {
    let goodbye = with_scheduler(&master, |scheduler, state| scheduler.goodbye(state, &call.name));
    match goodbye.await {
        Ok(events) => {
            events.into_iter().for_each(|event| master.log.event(event));
            Json(CommonResponse::ok()).into_response()
        }
        Err(refusal) => refusal,
    }
}

/// Runs a scheduler operation on this leader, waiting for the scheduler of a freshly elected
/// leader to start (as DM's worker calls wait); a refusal when leadership is lost meanwhile.
async fn with_scheduler<T>(
    master: &Master,
    operation: impl FnOnce(&mut Scheduler, &mut ClusterState) -> T,
) -> Result<T, Response> {
    let deadline =
        Instant::now() + master.settings.timings.scheduler_delay + Duration::from_secs(1);
    loop {
        {
            let mut view = master.view();
            if !view.election.is_leader() {
                return Err(no_leader());
            }
            if view.scheduler.is_some() {
                let outcome = view.schedule(operation).expect("the scheduler runs");
                master.persist(&mut view);
                return Ok(outcome);
            }
        }
        if Instant::now() >= deadline {
            return Err(gateway_error(StatusCode::SERVICE_UNAVAILABLE, SCHEDULER_NOT_STARTED));
        }
        tokio::time::sleep(SCHEDULER_POLL).await;
    }
}
