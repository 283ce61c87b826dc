//! A typed client of the DM-master HTTP API (the subset a rolling patch needs).
//!
//! Conventions of DM's grpc-gateway: camelCase fields, HTTP 200 even when `result` is false
//! (the reason is in `msg`), gateway errors as `{"code","message","details"}`.

use std::time::Duration;

use serde::Deserialize;

use super::tls::{self, TlsProblem};
use super::version::VersionInfo;
use crate::topology::tls::ClientTls;

#[derive(Debug, thiserror::Error)]
pub enum DmError {
    #[error("{addr}: {source}")]
    Http {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    /// The TLS handshake failed: the instance refused our client certificate, or we refused
    /// its certificate. Says which of the store's files is concerned.
    #[error("{addr}: TLS: {problem}")]
    Tls { addr: String, problem: TlsProblem },
    /// A plain HTTP call was answered as a Go HTTPS server answers one: the cluster runs with
    /// TLS while meta.yaml says it does not.
    #[error(
        "{addr}: it serves HTTPS only, but meta.yaml says global.enable_tls: false; the cluster \
         was deployed (or changed) with TLS behind TiUP's back: set enable_tls as the cluster \
         runs, with its certificates in the store's tls/ dir"
    )]
    ServesHttps { addr: String },
    #[error("{addr}: HTTP {status}: {message}")]
    Status { addr: String, status: u16, message: String },
    #[error("{addr}: DM refused: {message}")]
    Refused { addr: String, message: String },
    #[error("no dm-master answered ({tried}); is the cluster running?")]
    NoMaster { tried: String },
}

#[derive(Debug, Clone, Deserialize)]
pub struct MembersResponse {
    pub result: bool,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub members: Vec<MemberSection>,
}

/// One element of `members`: exactly one of the three sections.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MemberSection {
    Leader(LeaderSection),
    Master(MasterSection),
    Worker(WorkerSection),
}

#[derive(Debug, Clone, Deserialize)]
pub struct LeaderSection {
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub addr: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MasterSection {
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub masters: Vec<MasterMember>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MasterMember {
    pub name: String,
    #[serde(default)]
    pub alive: bool,
    #[serde(default, rename = "clientURLs")]
    pub client_urls: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSection {
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub workers: Vec<WorkerMember>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerMember {
    pub name: String,
    #[serde(default)]
    pub addr: String,
    #[serde(default)]
    pub stage: String,
    #[serde(default)]
    pub source: String,
}

impl WorkerMember {
    /// It runs no source now: free, or offline (stopped).
    pub fn runs_no_source(&self) -> bool {
        matches!(self.stage.as_str(), "free" | "offline")
    }
}

impl MembersResponse {
    /// The leader's name, if the cluster has one.
    pub fn leader(&self) -> Option<&LeaderSection> {
        self.members.iter().find_map(|section| match section {
            MemberSection::Leader(leader) if !leader.name.is_empty() => Some(leader),
            _ => None,
        })
    }

    pub fn masters(&self) -> &[MasterMember] {
        self.members
            .iter()
            .find_map(|section| match section {
                MemberSection::Master(master) => Some(master.masters.as_slice()),
                _ => None,
            })
            .unwrap_or_default()
    }

    pub fn workers(&self) -> &[WorkerMember] {
        self.members
            .iter()
            .find_map(|section| match section {
                MemberSection::Worker(worker) => Some(worker.workers.as_slice()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// The worker section's own `msg`, e.g. "scheduler has not started" just after a leader
    /// change.
    pub fn worker_msg(&self) -> &str {
        self.members
            .iter()
            .find_map(|section| match section {
                MemberSection::Worker(worker) => Some(worker.msg.as_str()),
                _ => None,
            })
            .unwrap_or_default()
    }
}

#[derive(Debug, Deserialize)]
struct CommonResponse {
    result: bool,
    #[serde(default)]
    msg: String,
}

#[derive(Debug, Deserialize)]
struct GatewayError {
    #[serde(default)]
    message: String,
}

/// Health of one dm-master, from `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Unhealthy,
}

/// A client bound to no address: every call names the dm-master (or dm-worker) it talks to,
/// because leader eviction must reach the leader itself and health is per instance.
#[derive(Debug, Clone)]
pub struct DmClient {
    http: reqwest::Client,
    /// `Some` for a TLS cluster: HTTPS with the cluster's CA and client certificate.
    tls: Option<ClientTls>,
}

/// An HTTP client builder for the cluster's instances: each call ends within `timeout`; it goes
/// through `proxy` (the jump host's tunnel, `http://127.0.0.1:<port>`) when given, and never
/// through a proxy of the environment.
pub fn http_builder(timeout: Duration, proxy: Option<&str>) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder().timeout(timeout).no_proxy();
    let Some(proxy) = proxy else {
        return builder;
    };
    let proxy = reqwest::Proxy::all(proxy).expect("the tunnel's URL is a valid proxy URL");
    // The tunnel reads one request head per connection (plain HTTP goes in absolute form): no
    // connection is reused.
    builder.proxy(proxy).pool_max_idle_per_host(0)
}

impl DmClient {
    /// A client whose calls each end within `timeout`, for a plain cluster (`tls: None`:
    /// HTTP) or a TLS one (`cluster.tls()`: HTTPS trusting exactly the cluster's CA, presenting
    /// its client certificate, and checking each instance's certificate against the host it is
    /// reached at, IP SANs included), through `proxy` when given (see [`http_builder`]).
    pub fn new(timeout: Duration, tls: Option<&ClientTls>, proxy: Option<&str>) -> DmClient {
        let mut builder = http_builder(timeout, proxy).connect_timeout(timeout);
        if let Some(tls) = tls {
            builder = builder.tls_backend_preconfigured((*tls.config()).clone());
        }
        let http = builder.build().expect("the HTTP client's TLS backend initialises");
        DmClient { http, tls: tls.cloned() }
    }

    fn url(&self, addr: &str, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{addr}{path}")
    }

    /// A failed call, as a TLS problem naming the file concerned when the handshake failed.
    fn http_error(&self, addr: &str, source: reqwest::Error) -> DmError {
        match self.tls.as_ref().and_then(|files| tls::problem(&source, files)) {
            Some(problem) => DmError::Tls { addr: addr.to_owned(), problem },
            None => DmError::Http { addr: addr.to_owned(), source },
        }
    }

    /// `GET /apis/v1alpha1/members` (all sections) from `addr`.
    pub async fn members(&self, addr: &str) -> Result<MembersResponse, DmError> {
        let body = self.get(addr, "/apis/v1alpha1/members").await?;
        let members: MembersResponse =
            serde_json::from_str(&body).map_err(|err| DmError::Refused {
                addr: addr.to_owned(),
                message: format!("unexpected members answer: {err}"),
            })?;
        if !members.result {
            return Err(DmError::Refused { addr: addr.to_owned(), message: members.msg });
        }
        Ok(members)
    }

    /// Members from the first of `addrs` that answers. When none does, the most telling
    /// failure: DM's own refusal, else a TLS problem (the same at every master, as they share
    /// the CA), else "no dm-master answered".
    pub async fn members_from_any(&self, addrs: &[String]) -> Result<MembersResponse, DmError> {
        let (mut refused, mut tls) = (None, None);
        for addr in addrs {
            match self.members(addr).await {
                Ok(members) => return Ok(members),
                Err(err @ DmError::Refused { .. }) => refused = Some(err),
                Err(err @ (DmError::Tls { .. } | DmError::ServesHttps { .. })) => {
                    tls = tls.or(Some(err))
                }
                Err(_) => {}
            }
        }
        Err(refused.or(tls).unwrap_or_else(|| DmError::NoMaster { tried: addrs.join(", ") }))
    }

    /// The version block served at `GET /status` by a dm-master or dm-worker.
    pub async fn status(&self, addr: &str) -> Result<VersionInfo, DmError> {
        let body = self.get(addr, "/status").await?;
        Ok(VersionInfo::parse(&body))
    }

    /// Whether the masters serve DM's OpenAPI (`openapi = true` in their config), asked of any
    /// of them: only then can a source be moved on purpose.
    pub async fn serves_openapi(&self, masters: &[String]) -> bool {
        for master in masters {
            match self.get(master, "/api/v1/cluster/workers").await {
                Ok(_) => return true,
                Err(DmError::Status { status: 404, .. }) => return false,
                Err(_) => continue,
            }
        }
        false
    }

    /// `POST /api/v1/sources/{source}/transfer` (DM's OpenAPI; any master passes it on to the
    /// leader): `source` moves to `worker`, which must be free. Its subtasks resume there from
    /// the checkpoint they had.
    pub async fn transfer_source(
        &self,
        masters: &[String],
        source: &str,
        worker: &str,
    ) -> Result<(), DmError> {
        let mut last = DmError::NoMaster { tried: masters.join(", ") };
        for master in masters {
            let path = format!("/api/v1/sources/{source}/transfer");
            let body = serde_json::json!({ "worker_name": worker });
            let request = self.http.post(self.url(master, &path)).json(&body);
            let response = match self.send(request, master).await {
                Ok(response) => response,
                Err(err) => {
                    last = err;
                    continue;
                }
            };
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let body = response.text().await.unwrap_or_default();
            let message = serde_json::from_str::<OpenApiError>(&body)
                .map(|err| err.error_msg)
                .unwrap_or_else(|_| format!("HTTP {status}: {}", body.trim()));
            return Err(DmError::Refused { addr: master.clone(), message });
        }
        Err(last)
    }

    /// When the process at `addr` started (`process_start_time_seconds` on its `/metrics`, as
    /// Prometheus' process collector exports it); `None` when it does not say.
    pub async fn process_start(&self, addr: &str) -> Option<f64> {
        let metrics = self.get(addr, "/metrics").await.ok()?;
        metrics.lines().find_map(|line| {
            let value = line.strip_prefix("process_start_time_seconds ")?;
            value.split_whitespace().next()?.parse().ok()
        })
    }

    pub async fn health(&self, addr: &str) -> Result<Health, DmError> {
        let response = self.send(self.http.get(self.url(addr, "/health")), addr).await?;
        Ok(if response.status().is_success() { Health::Healthy } else { Health::Unhealthy })
    }

    /// `PUT /apis/v1alpha1/leader/1` on the leader itself (never forwarded).
    pub async fn evict_leader(&self, leader_addr: &str) -> Result<(), DmError> {
        self.operate_leader(leader_addr, 1).await
    }

    /// `PUT /apis/v1alpha1/leader/2`: lets `addr` run for leader again.
    pub async fn cancel_evict_leader(&self, addr: &str) -> Result<(), DmError> {
        self.operate_leader(addr, 2).await
    }

    async fn operate_leader(&self, addr: &str, op: u8) -> Result<(), DmError> {
        let path = format!("/apis/v1alpha1/leader/{op}");
        let response = self.send(self.http.put(self.url(addr, &path)), addr).await?;
        let body = self.body(response, addr).await?;
        let answer: CommonResponse = serde_json::from_str(&body).map_err(|err| {
            DmError::Refused { addr: addr.to_owned(), message: format!("unexpected answer: {err}") }
        })?;
        if answer.result {
            Ok(())
        } else {
            Err(DmError::Refused { addr: addr.to_owned(), message: answer.msg })
        }
    }

    pub(super) async fn get(&self, addr: &str, path: &str) -> Result<String, DmError> {
        let response = self.send(self.http.get(self.url(addr, path)), addr).await?;
        self.body(response, addr).await
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        addr: &str,
    ) -> Result<reqwest::Response, DmError> {
        let started = std::time::Instant::now();
        let (client, request) = request.build_split();
        let request = request.map_err(|source| self.http_error(addr, source))?;
        let (method, url) = (request.method().clone(), request.url().clone());
        let response = client.execute(request).await;
        let millis = started.elapsed().as_millis();
        match &response {
            Ok(answer) => tracing::info!("{method} {url} -> {} ({millis} ms)", answer.status()),
            Err(err) => tracing::info!("{method} {url} -> {err} ({millis} ms)"),
        }
        response.map_err(|source| self.http_error(addr, source))
    }

    /// The body of a successful answer; a gateway error becomes its message.
    async fn body(&self, response: reqwest::Response, addr: &str) -> Result<String, DmError> {
        let status = response.status();
        let body = response.text().await.map_err(|source| self.http_error(addr, source))?;
        tracing::debug!("{addr}: answer {status}: {}", body.chars().take(300).collect::<String>());
        if status.is_success() {
            return Ok(body);
        }
        // Go's HTTPS servers (DM's among them) answer a plain HTTP request with this 400.
        if self.tls.is_none() && status == 400 && body.contains("HTTP request to an HTTPS server") {
            return Err(DmError::ServesHttps { addr: addr.to_owned() });
        }
        let message = serde_json::from_str::<GatewayError>(&body)
            .map(|err| err.message)
            .unwrap_or_else(|_| body.trim().to_owned());
        Err(DmError::Status { addr: addr.to_owned(), status: status.as_u16(), message })
    }
}

/// An error of DM's OpenAPI: HTTP 400 `{"error_code": N, "error_msg": "..."}`.
#[derive(Debug, Deserialize)]
struct OpenApiError {
    #[serde(default)]
    error_msg: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reference_members() {
        let json = r#"{"result":true,"msg":"","members":[
          {"leader":{"msg":"","name":"dm-127.0.0.11-8261","addr":"127.0.0.11:8261"}},
          {"master":{"msg":"","masters":[{"name":"dm-127.0.0.11-8261","memberID":"1154",
             "alive":true,"peerURLs":["http://127.0.0.11:8291"],"clientURLs":["http://127.0.0.11:8261"]}]}},
          {"worker":{"msg":"","workers":[{"name":"dm-127.0.0.21-8262","addr":"127.0.0.21:8262",
             "stage":"bound","source":"mysql-replica-01"}]}}]}"#;
        let members: MembersResponse = serde_json::from_str(json).unwrap();
        assert_eq!(members.leader().unwrap().addr, "127.0.0.11:8261");
        assert!(members.masters()[0].alive);
        assert_eq!(members.masters()[0].client_urls, ["http://127.0.0.11:8261"]);
        assert_eq!(members.workers()[0].stage, "bound");
        assert_eq!(members.worker_msg(), "");
    }
}
