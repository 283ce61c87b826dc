//! HTTP plumbing shared by both roles: listening, the gateway's error shape, forwarding a call
//! to the leader, and the client used between simulated processes.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dm_sandbox::dm_api::{GatewayError, NO_LEADER_MESSAGE};

use crate::cli::Settings;
use crate::tls::Tls;

/// Marks a request a follower forwarded, so that a master which is not the leader either
/// answers "no leader" instead of forwarding it again (no loops between confused followers).
pub const FORWARDED_BY: &str = "x-dm-sim-forwarded-by";

/// Larger than any body the simulator exchanges; guards against a runaway client.
const MAX_BODY: usize = 4 << 20;

/// Binds `addr` and serves `router` on it in the background; over mutual TLS with `tls`.
pub async fn serve(addr: SocketAddr, router: Router, tls: Option<&Tls>) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|err| format!("cannot listen on {addr}: {err}"))?;
    let served = match tls {
        Some(tls) => {
            let listener = tls.listen(listener);
            tokio::spawn(async move { axum::serve(listener, router).await })
        }
        None => tokio::spawn(async move { axum::serve(listener, router).await }),
    };
    tokio::spawn(async move {
        if let Ok(Err(err)) = served.await {
            eprintln!("dm-sim: server on {addr} stopped: {err}");
        }
    });
    Ok(())
}

/// When this process started (read first at start by `main`).
static STARTED: std::sync::LazyLock<std::time::SystemTime> =
    std::sync::LazyLock::new(std::time::SystemTime::now);

/// Notes when this process started, for `process_start_time_seconds`.
pub fn note_start() {
    std::sync::LazyLock::force(&STARTED);
}

/// The process collector's `process_start_time_seconds`, as every DM process exports it: tells
/// a restart apart from a process that kept running.
pub fn process_metrics() -> String {
    let started = STARTED.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!(
        "# HELP process_start_time_seconds Start time of the process since unix epoch in \
         seconds.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {:.2}\n",
        started.as_secs_f64()
    )
}

/// `GET /status`: the running binary's version block, as text.
pub fn status_route(settings: &Settings) -> Router {
    let block = settings.running_version().to_string();
    Router::new().route("/status", get(move || async move { block }))
}

/// A client for talking to other simulated processes on loopback: no proxy, short timeouts
/// (a peer that does not answer quickly is as good as down); with `tls`, over mutual TLS.
pub fn client(timeout: Duration, tls: Option<&Tls>) -> reqwest::Client {
    let builder = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).no_proxy();
    let builder = match tls {
        Some(tls) => tls.client(builder),
        None => builder,
    };
    builder.build().expect("an HTTP client for the other simulated processes builds")
}

/// A gateway error, `{"code","message","details":[]}`, with the gRPC code matching `status`.
pub fn gateway_error(status: StatusCode, message: impl Into<String>) -> Response {
    let code = match status {
        StatusCode::BAD_REQUEST => 3,
        StatusCode::NOT_FOUND => 5,
        StatusCode::NOT_IMPLEMENTED => 12,
        StatusCode::SERVICE_UNAVAILABLE => 14,
        _ => 2,
    };
    let body = GatewayError { code, message: message.into(), details: Vec::new() };
    (status, axum::Json(body)).into_response()
}

pub fn no_leader() -> Response {
    gateway_error(StatusCode::INTERNAL_SERVER_ERROR, NO_LEADER_MESSAGE)
}

/// What grpc-gateway answers for a path it has no route for.
pub async fn not_found() -> Response {
    gateway_error(StatusCode::NOT_FOUND, "Not Found")
}

/// Replays `request` (method, path and query, body) on the master at `leader_addr`, after the
/// latency of DM's follower-to-leader hop, and relays the answer as it comes.
pub async fn forward(
    http: &reqwest::Client,
    scheme: &str,
    forwarder: &str,
    leader_addr: &str,
    delay: Duration,
    request: Request,
) -> Response {
    tokio::time::sleep(delay).await;
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY).await else {
        return gateway_error(StatusCode::BAD_REQUEST, "request body too large");
    };
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut outgoing = http
        .request(parts.method.clone(), format!("{scheme}://{leader_addr}{path}"))
        .header(FORWARDED_BY, forwarder)
        .body(body);
    if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
        outgoing = outgoing.header(header::CONTENT_TYPE, content_type);
    }
    // The leader vanishing mid-call looks, to the caller, like there being no leader.
    let Ok(answer) = outgoing.send().await else {
        return no_leader();
    };
    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let Ok(bytes) = answer.bytes().await else {
        return no_leader();
    };
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    let content_type = content_type.unwrap_or_else(|| HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    response
}
