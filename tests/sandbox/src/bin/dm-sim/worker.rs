//! dm-worker: serves `/status` and `/metrics` on its port, registers with the masters of
//! `--join` and keeps its lease alive every 200 ms, and says goodbye on SIGTERM so the leader
//! takes it offline (and moves its source) at once. A worker that finds no master for 10 s at
//! start exits 2, as DM's does.
//!
//! The keepalive answer names the source bound to it and that source's tasks, whose subtasks it
//! then (re)starts (see [`crate::subtasks`] for how they replicate, or fail to). `/metrics`
//! serves their `dm_worker_task_state` and the syncer's binlog positions and lag;
//! `/sim/v1/subtasks` lists them for the leader's query-status (DM's master asks its workers
//! over gRPC).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::routing::get;
use dm_sandbox::Fault;
use dm_sandbox::task_api::render_task_metrics;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::Settings;
use crate::events::EventLog;
use crate::http;
use crate::subtasks::{Behaviour, Subtasks};

const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(200);
/// How long a starting worker looks for a master before giving up.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Exit code of a worker that found no master, as DM's.
const EXIT_NO_MASTER: i32 = 2;

/// The masters of `--join`, tried in order starting with the one that answered last.
struct Masters {
    addrs: Vec<String>,
    last_answered: usize,
    http: reqwest::Client,
    /// `http`, or `https` on a TLS cluster.
    scheme: &'static str,
}

impl Masters {
    /// POSTs `body` to `path` on the first master that accepts it; its answer's body, or
    /// `None` when none did.
    async fn post(&mut self, path: &str, body: &serde_json::Value) -> Option<String> {
        for offset in 0..self.addrs.len() {
            let index = (self.last_answered + offset) % self.addrs.len();
            let url = format!("{}://{}{path}", self.scheme, self.addrs[index]);
            let answer = match self.http.post(url).json(body).send().await {
                Ok(answer) if answer.status().is_success() => answer.text().await.ok(),
                _ => None,
            };
            if answer.is_some() {
                self.last_answered = index;
                return answer;
            }
        }
        None
    }
}

/// The subtasks this worker runs, shared with `/metrics`.
type Shared = Arc<Mutex<Subtasks>>;

/// Runs a dm-worker until SIGTERM (or SIGINT); returns the exit code.
pub async fn run(settings: Settings) -> Result<i32, String> {
    let name = settings.required("name")?.to_owned();
    let listen = settings.listen_addr("worker-addr", "advertise-addr")?;
    let addr = match settings.flag("advertise-addr").filter(|a| !a.is_empty()) {
        Some(addr) => addr.to_owned(),
        None => listen.to_string(),
    };
    let join: Vec<String> = settings
        .required("join")?
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    let log = EventLog::new(settings.log_file(), &name);
    let subtasks: Shared = Arc::new(Mutex::new(Subtasks::new(Behaviour::of(&settings))));
    let reports = {
        let subtasks = subtasks.clone();
        move || subtasks.lock().expect("subtasks lock").reports(SystemTime::now())
    };
    let metrics = {
        let (reports, name) = (reports.clone(), name.clone());
        move || async move { http::process_metrics() + &render_task_metrics(&name, &reports()) }
    };
    let listing = move || async move { axum::Json(reports()) };
    let router = Router::new()
        .merge(http::status_route(&settings))
        .route("/metrics", get(metrics))
        .route("/sim/v1/subtasks", get(listing))
        .fallback(http::not_found);
    http::serve(listen, router, settings.tls.as_deref()).await?;
    log.event(format!(
        "dm-worker {} listening on {listen}{}, joining {}",
        settings.version,
        if settings.tls.is_some() { " over mutual TLS" } else { "" },
        join.join(",")
    ));

    let mut sigterm = signal(SignalKind::terminate()).map_err(|err| err.to_string())?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|err| err.to_string())?;
    if settings.has(Fault::NeverHealthy) {
        log.event("never-healthy: not registering with the masters");
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
        return Ok(0);
    }

    // A master may hold a call until its freshly elected scheduler starts, then forward it.
    let call_timeout =
        settings.timings.scheduler_delay + settings.timings.forward_delay + Duration::from_secs(2);
    let mut masters = Masters {
        addrs: join,
        last_answered: 0,
        http: http::client(call_timeout, settings.tls.as_deref()),
        scheme: settings.scheme(),
    };
    let started = Instant::now();
    let mut registered = false;
    let mut connected = false;
    loop {
        let keepalive = json!({ "name": name, "addr": addr });
        let answer = tokio::select! {
            answer = masters.post("/sim/v1/workers/keepalive", &keepalive) => answer,
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        };
        let answered = answer.is_some();
        if let Some(assignment) = answer.and_then(|text| serde_json::from_str(&text).ok())
            && let Some(change) =
                subtasks.lock().expect("subtasks lock").follow(&assignment, SystemTime::now())
        {
            log.event(change);
        }
        if answered != connected {
            connected = answered;
            log.event(if answered {
                "keepalive accepted by the leader"
            } else {
                "no master accepts keepalives; retrying"
            });
        }
        registered |= answered;
        if !registered && started.elapsed() >= REGISTER_TIMEOUT {
            eprintln!(
                "[FATAL] dm-worker {name}: no dm-master of --join answered in {}s",
                REGISTER_TIMEOUT.as_secs()
            );
            log.event("no master answered; exiting");
            return Ok(EXIT_NO_MASTER);
        }
        tokio::select! {
            _ = tokio::time::sleep(KEEPALIVE_INTERVAL) => {}
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }

    let said_goodbye =
        masters.post("/sim/v1/workers/offline", &json!({ "name": name })).await.is_some();
    log.event(if said_goodbye {
        "stopped; the leader took this worker offline"
    } else {
        "stopped; no master heard the goodbye"
    });
    Ok(0)
}
