//! dm-worker: serves `/status`, registers with the masters in `--join` and keeps alive; says
//! goodbye on SIGTERM, so the leader marks it offline at once.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use crate::{Settings, log};

const KEEPALIVE: Duration = Duration::from_millis(200);
/// How long a starting worker looks for a master before giving up (DM exits with code 2).
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(settings: Settings) -> i32 {
    let bind = settings.bind_addr("worker-addr");
    let listener = match tokio::net::TcpListener::bind(&bind).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("dm-worker: cannot listen on {bind}: {err}");
            return 1;
        }
    };
    let status = settings.version_block(true);
    let app = Router::new().route("/status", get(move || async move { status }));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let name = settings.flag("name");
    let addr = settings.flag("advertise-addr");
    let masters: Vec<String> = settings
        .flag("join")
        .split(',')
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(800))
        .no_proxy()
        .build()
        .expect("an HTTP client");
    let body = json!({ "name": name, "addr": addr });
    let mut sigterm = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut sigint = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let started = Instant::now();
    let mut registered = false;
    log(&settings, &format!("dm-worker {name} started on {bind}"));

    loop {
        if !settings.has_fault("never-healthy") {
            let answered = post_any(&http, &masters, "/sim/v1/workers/keepalive", &body).await;
            if answered && !registered {
                registered = true;
                log(&settings, "registered with the leader");
            }
            if !registered && started.elapsed() > REGISTER_TIMEOUT {
                eprintln!("dm-worker: no dm-master answered in {REGISTER_TIMEOUT:?}");
                return 2;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(KEEPALIVE) => {}
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    post_any(&http, &masters, "/sim/v1/workers/offline", &body).await;
    log(&settings, "stopped gracefully");
    0
}

/// Posts to the first master that answers with success.
async fn post_any(
    http: &reqwest::Client,
    masters: &[String],
    path: &str,
    body: &serde_json::Value,
) -> bool {
    for master in masters {
        let url = format!("http://{master}{path}");
        if let Ok(response) = http.post(&url).json(body).send().await
            && response.status().is_success()
        {
            return true;
        }
    }
    false
}
