//! `dm-patch display`: TiUP's cluster table, every component of the topology (dm-master,
//! dm-worker, prometheus, grafana, alertmanager), with live status, and for DM the version each
//! instance runs.
//!
//! All queries go out at once, each bounded by `--status-timeout` (one members call through
//! whichever master answers first, one `/status` per DM instance, one `/metrics` per dm-worker
//! for the migration tasks it runs, one TCP connect per monitoring instance, and with `--uptime`
//! one `/metrics` per instance), so a dead host costs
//! one timeout, not one each. `--format json` prints TiUP's document
//! (`{"cluster_meta": {...}, "instances": [...]}`, pkg/cluster/manager/display.go) with
//! dm-patch's own fields after TiUP's in each instance.

mod tasks;
mod uptime;

use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;
use yaml_serde::Value;

use self::tasks::TaskRow;
use self::uptime::Metrics;
use super::reach;
use crate::cli::{DisplayArgs, GlobalArgs};
use crate::dm::client::{DmClient, DmError, MembersResponse};
use crate::dm::version::VersionInfo;
use crate::error::{ExitStatus, UsageError};
use crate::output::table::tiup_table;
use crate::output::{self, Printer, Style};
use crate::ssh::{Executor, Reach};
use crate::topology::store::Store;
use crate::topology::tls::{CA_CERT, CLIENT_CERT, CLIENT_KEY, TLS_DIR};
use crate::topology::{Cluster, Instance, Monitor, MonitorRole, Role};

/// TiUP's `display --format json` document.
#[derive(Debug, Serialize)]
pub struct DisplayJson {
    /// dm-patch's: the version of this document's shape (TiUP's keys are kept as they are).
    pub schema_version: u32,
    pub cluster_meta: ClusterMeta,
    /// Left out when no instance is shown, as TiUP does (`omitempty`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<Row>,
}

/// TiUP's `ClusterMetaInfo`.
#[derive(Debug, Serialize)]
pub struct ClusterMeta {
    pub cluster_type: &'static str,
    pub cluster_name: String,
    pub cluster_version: String,
    pub deploy_user: String,
    pub ssh_type: String,
    pub tls_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_key: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub grafana_urls: Vec<String>,
}

/// One instance: TiUP's `InstInfo` fields, named and filled as TiUP fills them, then
/// dm-patch's own.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: String,
    /// The role, with ` (patched)` once meta.yaml marks it patched.
    pub role: String,
    pub host: String,
    pub manage_host: String,
    pub ports: String,
    pub os_arch: String,
    pub status: String,
    /// TiUP fills it only for `tiup cluster display --process`: always `-` here.
    pub memory: String,
    pub memory_limit: String,
    pub cpu_quota: String,
    /// How long the instance has run (`--uptime`), else `-`.
    pub since: String,
    pub data_dir: String,
    pub deploy_dir: String,
    pub numa_node: String,
    pub numa_cores: String,
    /// The version meta.yaml gives the component (TiUP's): the cluster's, or empty for
    /// alertmanager.
    pub version: String,
    /// TiUP's `ComponentName` (TiUP gives the field no JSON name: Go's field name is the key).
    #[serde(rename = "ComponentName")]
    pub component_name: String,
    /// TiUP's `Port`: the instance's main port.
    #[serde(rename = "Port")]
    pub port: u16,
    /// dm-patch: the component, without ` (patched)`.
    pub component: String,
    /// dm-patch: meta.yaml marks it patched.
    pub patched: bool,
    /// dm-patch: what the running instance reports on `/status` (DM only; `null` when it does
    /// not answer).
    pub running_version: Option<String>,
    /// dm-patch, dm-workers that answer: the subtasks of migration tasks it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<TaskRow>>,
    /// dm-patch, patched instances: the version `dm-patch rollback` would put back (what ran
    /// before the newest run that installed something on it, from the audit records).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_to: Option<String>,
}

/// The roles `display` knows, as `-R` takes them.
const ROLES: [&str; 5] = ["dm-master", "dm-worker", "prometheus", "grafana", "alertmanager"];

pub async fn run(
    args: DisplayArgs,
    global: &GlobalArgs,
    printer: &Printer,
) -> anyhow::Result<ExitStatus> {
    let store = Store::locate(global.tiup_home.clone())?;
    let cluster = store.load(&args.cluster)?;
    // display makes no SSH connection, but an executor that cannot be is still refused.
    reach::executor(&cluster, args.tiup.ssh, args.tiup.native_ssh)?;
    let jump = reach::jump_host(&args.proxy)?;
    if args.version_only {
        // TiUP prints the bare version, whatever the format.
        output::out(cluster.version());
        return Ok(ExitStatus::Success);
    }
    let (instances, monitors) = select(&cluster, &args.filter.roles, &args.filter.nodes)?;

    let timeout = Duration::from_secs(args.status_timeout);
    let policy = args.tiup.host_key_policy.unwrap_or_default();
    let reach = reach::open(&cluster, Executor::Builtin, jump, policy).await?;
    let client = DmClient::new(timeout, cluster.tls(), reach.http_proxy());
    let metrics = Metrics::new(timeout, &cluster, reach.http_proxy());
    let reach = std::sync::Arc::new(reach);
    let uptime = args.uptime;
    let (members, dm_facts, monitor_facts) = tokio::join!(
        members_from_first(&client, &cluster),
        all(instances.iter().map(|instance| {
            let (client, metrics, addr) = (client.clone(), metrics.clone(), instance.addr());
            let is_worker = instance.role == Role::Worker;
            async move {
                let worker_tasks =
                    async { if is_worker { tasks::of_worker(&client, &addr).await } else { None } };
                tokio::join!(
                    running_version(&client, &addr),
                    metrics.since(&addr, true, uptime),
                    worker_tasks
                )
            }
        })),
        all(monitors.iter().map(|monitor| {
            let (metrics, addr) = (metrics.clone(), monitor.status_addr());
            let reach = reach.clone();
            async move {
                tokio::join!(
                    port_status(&reach, &addr, timeout),
                    metrics.since(&addr, false, uptime)
                )
            }
        })),
    );

    let mut rows: Vec<Row> = Vec::new();
    // The audit records say what each patched instance goes back to, and what dm-patch last
    // installed on each.
    let runs = crate::engine::audit::read::read_runs(&store, &cluster.name);
    let rollback_versions = crate::engine::audit::read::rollback_versions(&runs);
    // What dm-patch last installed, to tell a binary on disk that is not the one running.
    let installed = crate::engine::audit::read::installed_versions(&runs);
    for (instance, (version, since, tasks)) in instances.iter().zip(dm_facts) {
        let pending = match (&version, installed.get(&instance.id())) {
            (Some(running), Some(on_disk)) => running.short() != *on_disk,
            _ => false,
        };
        let release = version.map(|v| v.release);
        let mut row = dm_row(&cluster, instance, members.as_ref(), release, since);
        if pending {
            // An `--offline` swap while it ran: it runs its old binary until restarted.
            row.status.push_str(" (restart pending)");
        }
        row.tasks = tasks;
        if instance.patched {
            row.rollback_to = rollback_versions.get(&instance.id()).cloned();
        }
        rows.push(row);
    }
    for (monitor, (up, since)) in monitors.iter().zip(monitor_facts) {
        rows.push(monitor_row(&cluster, monitor, up, since));
    }
    // TiUP's order: role name (with " (patched)"), then host, then ports, as strings.
    rows.sort_by(|a, b| (&a.role, &a.host, &a.ports).cmp(&(&b.role, &b.host, &b.ports)));

    let meta = cluster_meta(&cluster);
    if printer.is_json() {
        let schema_version = output::SCHEMA_VERSION;
        printer.json(&DisplayJson { schema_version, cluster_meta: meta, instances: rows });
    } else {
        let columns = Columns { uptime, rollback_info: args.rollback_info };
        printer.result(render(&cluster, &meta, &rows, columns, printer));
    }
    Ok(ExitStatus::Success)
}

/// The DM and monitoring instances `-R` and `-N` choose (all when neither is given). Roles
/// and nodes the topology does not have are refused, naming the ones it has.
fn select<'c>(
    cluster: &'c Cluster,
    roles: &[String],
    nodes: &[String],
) -> Result<(Vec<&'c Instance>, Vec<&'c Monitor>), UsageError> {
    if let Some(role) = roles.iter().find(|role| !ROLES.contains(&role.as_str())) {
        return Err(UsageError(format!(
            "unknown role '{role}': a DM cluster's roles are {}",
            ROLES.join(", ")
        )));
    }
    let ids: Vec<String> = cluster
        .instances
        .iter()
        .map(Instance::id)
        .chain(cluster.monitors.iter().map(Monitor::id))
        .collect();
    if let Some(node) = nodes.iter().find(|node| !ids.contains(node)) {
        return Err(UsageError(format!(
            "unknown node '{node}': the cluster's instances are {}",
            ids.join(", ")
        )));
    }
    let wanted = |role: &str, id: String| {
        (roles.is_empty() || roles.iter().any(|r| r == role))
            && (nodes.is_empty() || nodes.contains(&id))
    };
    let instances =
        cluster.instances.iter().filter(|i| wanted(i.role.component(), i.id())).collect();
    let monitors = cluster.monitors.iter().filter(|m| wanted(m.role.component(), m.id())).collect();
    Ok((instances, monitors))
}

/// Runs `calls` at once; their answers in input order.
async fn all<F>(calls: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let mut set = JoinSet::new();
    for (index, call) in calls.enumerate() {
        set.spawn(async move { (index, call.await) });
    }
    let mut answers: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    while let Some(answer) = set.join_next().await {
        if let Ok((index, output)) = answer {
            answers[index] = Some(output);
        }
    }
    answers.into_iter().map(|answer| answer.expect("every call answers")).collect()
}

/// Members from whichever dm-master answers first; `None` if none does, after a warning that
/// says why (a cluster that refuses TLS would otherwise just look down).
async fn members_from_first(client: &DmClient, cluster: &Cluster) -> Option<MembersResponse> {
    let mut calls = JoinSet::new();
    for master in cluster.instances.iter().filter(|i| i.role == Role::Master) {
        let client = client.clone();
        let addr = master.addr();
        calls.spawn(async move {
            let started = Instant::now();
            let answer = client.members(&addr).await;
            let ms = started.elapsed().as_millis();
            match &answer {
                Ok(members) => tracing::info!(
                    "GET /apis/v1alpha1/members on {addr}: leader {}, {} master(s), {} worker(s) \
                     ({ms} ms)",
                    members.leader().map(|l| l.name.as_str()).unwrap_or("none"),
                    members.masters().len(),
                    members.workers().len()
                ),
                Err(err) => {
                    tracing::info!(
                        "GET /apis/v1alpha1/members on {addr}: {} ({ms} ms)",
                        causes(err)
                    )
                }
            }
            answer
        });
    }
    let mut first_failure = None;
    while let Some(answer) = calls.join_next().await {
        match answer {
            Ok(Ok(members)) => return Some(members),
            Ok(Err(err)) => first_failure = first_failure.or(Some(err)),
            Err(_) => {}
        }
    }
    if let Some(err) = first_failure {
        let hint = match err {
            DmError::Tls { .. } => {
                "; the store's tls/ files must be the cluster's own (as TiUP deployed them)"
            }
            _ => "",
        };
        tracing::warn!(
            "no dm-master answered ({}){hint}: the DM instances' status comes from their own \
             ports",
            causes(&err)
        );
    }
    None
}

/// The version a DM instance reports on `/status`; `None` when it does not answer.
async fn running_version(client: &DmClient, addr: &str) -> Option<VersionInfo> {
    let started = Instant::now();
    let answer = client.status(addr).await;
    let ms = started.elapsed().as_millis();
    match answer {
        Ok(version) => {
            tracing::info!("GET /status on {addr}: {} ({ms} ms)", version.short());
            Some(version)
        }
        Err(err) => {
            tracing::info!("GET /status on {addr}: {} ({ms} ms)", causes(&err));
            None
        }
    }
}

/// An error and its causes on one line, each said once (reqwest's own message hides why).
fn causes(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !line.contains(&cause_text) {
            line.push_str(": ");
            line.push_str(&cause_text);
        }
        source = cause.source();
    }
    line
}

/// Whether something accepts connections on `addr` within `timeout`: how a monitoring
/// instance is Up or Down.
async fn port_status(reach: &Reach, addr: &str, timeout: Duration) -> bool {
    let started = Instant::now();
    let connected = tokio::time::timeout(timeout, reach.probe(addr)).await;
    let ms = started.elapsed().as_millis();
    let (up, how) = match connected {
        Ok(Ok(_)) => (true, "accepts connections".to_owned()),
        Ok(Err(err)) => (false, err.to_string()),
        Err(_) => (false, format!("no answer within {}s", timeout.as_secs())),
    };
    tracing::info!("TCP connect {addr}: {how} ({ms} ms)");
    up
}

fn dm_row(
    cluster: &Cluster,
    instance: &Instance,
    members: Option<&MembersResponse>,
    running_version: Option<String>,
    since: String,
) -> Row {
    let spec = cluster.spec_of(instance);
    let component = instance.role.component();
    let manage_host = spec
        .and_then(|s| s.manage_host.as_deref())
        .filter(|h| !h.is_empty())
        .unwrap_or(&instance.host);
    let resource_control = spec.and_then(|s| s.resource_control.as_ref());
    Row {
        id: instance.id(),
        role: role_name(component, instance.patched),
        host: instance.host.clone(),
        manage_host: manage_host.to_owned(),
        ports: match instance.peer_port {
            Some(peer) => format!("{}/{peer}", instance.port),
            None => instance.port.to_string(),
        },
        os_arch: os_arch(&instance.os, &instance.arch.to_string()),
        status: status(instance, members, running_version.is_some()),
        memory: "-".to_owned(),
        memory_limit: resource(resource_control, "memory_limit"),
        cpu_quota: resource(resource_control, "cpu_quota"),
        since,
        data_dir: instance.data_dir.clone(),
        deploy_dir: instance.deploy_dir.clone(),
        numa_node: spec
            .and_then(|s| s.numa_node.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "-".to_owned()),
        numa_cores: "-".to_owned(),
        version: cluster.version().to_owned(),
        component_name: component.to_owned(),
        port: instance.port,
        component: component.to_owned(),
        patched: instance.patched,
        running_version,
        tasks: None,
        rollback_to: None,
    }
}

fn monitor_row(cluster: &Cluster, monitor: &Monitor, up: bool, since: String) -> Row {
    let component = monitor.role.component();
    Row {
        id: monitor.id(),
        role: role_name(component, monitor.patched),
        host: monitor.host.clone(),
        manage_host: monitor.manage_host.clone(),
        ports: monitor.ports.iter().map(u16::to_string).collect::<Vec<_>>().join("/"),
        os_arch: os_arch(&monitor.os, &monitor.arch),
        status: if up { "Up" } else { "Down" }.to_owned(),
        memory: "-".to_owned(),
        memory_limit: resource(monitor.resource_control.as_ref(), "memory_limit"),
        cpu_quota: resource(monitor.resource_control.as_ref(), "cpu_quota"),
        since,
        data_dir: monitor.data_dir.clone().unwrap_or_else(|| "-".to_owned()),
        deploy_dir: monitor.deploy_dir.clone(),
        numa_node: monitor.numa_node.clone().unwrap_or_else(|| "-".to_owned()),
        numa_cores: "-".to_owned(),
        // TiUP: alertmanager follows no cluster version; prometheus and grafana do.
        version: match monitor.role {
            MonitorRole::Alertmanager => String::new(),
            MonitorRole::Prometheus | MonitorRole::Grafana => cluster.version().to_owned(),
        },
        component_name: component.to_owned(),
        port: monitor.ports.first().copied().unwrap_or_default(),
        component: component.to_owned(),
        patched: monitor.patched,
        running_version: None,
        tasks: None,
        rollback_to: None,
    }
}

fn role_name(component: &str, patched: bool) -> String {
    if patched { format!("{component} (patched)") } else { component.to_owned() }
}

/// TiUP's `tui.OsArch`: amd64 reads x86_64, arm64 aarch64.
fn os_arch(os: &str, arch: &str) -> String {
    let arch = match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        other => other,
    };
    format!("{os}/{arch}")
}

/// A `resource_control` setting as written, or `-`.
fn resource(resource_control: Option<&Value>, key: &str) -> String {
    let value = resource_control.and_then(|rc| rc.get(key));
    match value {
        Some(Value::String(text)) if !text.is_empty() => text.clone(),
        Some(Value::Number(number)) => number.to_string(),
        _ => "-".to_owned(),
    }
}

/// TiUP's status words: masters Healthy, Healthy|L, Unhealthy, Down (its own port does not
/// answer), N/A; workers the stage the masters give them, capitalised (Free, Bound, Offline,
/// Relay), N/A, and Down only when no master answers: TiUP asks the masters, not the worker.
fn status(instance: &Instance, members: Option<&MembersResponse>, answers: bool) -> String {
    if instance.role == Role::Master && !answers {
        return "Down".to_owned();
    }
    let Some(members) = members else {
        return match instance.role {
            Role::Master => "N/A",
            Role::Worker => "Down",
        }
        .to_owned();
    };
    match instance.role {
        Role::Master => match members.masters().iter().find(|m| m.name == instance.name) {
            None => "N/A".to_owned(),
            Some(master) if !master.alive => "Unhealthy".to_owned(),
            Some(_) if members.leader().is_some_and(|l| l.name == instance.name) => {
                "Healthy|L".to_owned()
            }
            Some(_) => "Healthy".to_owned(),
        },
        Role::Worker => match members.workers().iter().find(|w| w.name == instance.name) {
            Some(worker) if !worker.stage.is_empty() => capitalise(&worker.stage),
            _ => "N/A".to_owned(),
        },
    }
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

fn cluster_meta(cluster: &Cluster) -> ClusterMeta {
    let global = cluster.meta.topology.global.as_ref();
    let tls_enabled = global.and_then(|g| g.enable_tls).unwrap_or(false);
    let tls_file = |name: &str| {
        tls_enabled.then(|| cluster.dir.join(TLS_DIR).join(name).display().to_string())
    };
    // Every grafana of the topology, filtered or not, as TiUP lists them.
    let grafana_urls = cluster
        .monitors
        .iter()
        .filter(|m| m.role == MonitorRole::Grafana)
        .map(|m| format!("http://{}:{}", m.host, m.port))
        .collect();
    ClusterMeta {
        cluster_type: "dm",
        cluster_name: cluster.name.clone(),
        cluster_version: cluster.version().to_owned(),
        deploy_user: global.and_then(|g| g.user.clone()).unwrap_or_else(|| "tidb".to_owned()),
        ssh_type: global
            .and_then(|g| g.ssh_type.clone())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "builtin".to_owned()),
        tls_enabled,
        tls_ca_cert: tls_file(CA_CERT),
        tls_client_cert: tls_file(CLIENT_CERT),
        tls_client_key: tls_file(CLIENT_KEY),
        grafana_urls,
    }
}

/// The text TiUP prints: the cluster's facts, the TLS files, the Grafana URL, the table and
/// the node count. The Version column (what each DM instance runs) is dm-patch's.
/// The optional columns of the table.
#[derive(Debug, Clone, Copy)]
struct Columns {
    /// Since (`--uptime`).
    uptime: bool,
    /// Rollback To (`--rollback-info`).
    rollback_info: bool,
}

fn render(
    cluster: &Cluster,
    meta: &ClusterMeta,
    rows: &[Row],
    columns: Columns,
    printer: &Printer,
) -> String {
    let uptime = columns.uptime;
    let mut out = String::new();
    let mut fact = |label: &str, value: &str| {
        out.push_str(&format!(
            "{:<20}{}\n",
            format!("{label}:"),
            printer.paint(value, Style::Bold)
        ));
    };
    fact("Cluster type", meta.cluster_type);
    fact("Cluster name", &meta.cluster_name);
    fact("Cluster version", &meta.cluster_version);
    fact("Deploy user", &meta.deploy_user);
    fact("SSH type", &meta.ssh_type);
    if meta.tls_enabled {
        fact("TLS encryption", "enabled");
        fact("CA certificate", meta.tls_ca_cert.as_deref().unwrap_or_default());
        fact("Client private key", meta.tls_client_key.as_deref().unwrap_or_default());
        fact("Client certificate", meta.tls_client_cert.as_deref().unwrap_or_default());
    }
    if !meta.grafana_urls.is_empty() {
        fact("Grafana URL", &meta.grafana_urls.join(","));
    }

    // TiUP adds a Manage Host column when any instance is managed through another address.
    let manage_host = cluster.instances.iter().any(|i| i.ssh_host != i.host)
        || cluster.monitors.iter().any(|m| m.manage_host != m.host);
    let mut headers = vec!["ID", "Role", "Host"];
    if manage_host {
        headers.push("Manage Host");
    }
    headers.extend(["Ports", "OS/Arch", "Status"]);
    if uptime {
        headers.push("Since");
    }
    headers.extend(["Version", "Data Dir", "Deploy Dir"]);
    // dm-patch's own column, last so TiUP's keep their places; only when a worker runs tasks.
    let with_tasks = rows.iter().any(|row| row.tasks.as_ref().is_some_and(|t| !t.is_empty()));
    if with_tasks {
        headers.push("Tasks");
    }
    if columns.rollback_info {
        headers.push("Rollback To");
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut cells = vec![row.id.clone(), row.role.clone(), row.host.clone()];
            if manage_host {
                cells.push(row.manage_host.clone());
            }
            cells.extend([
                row.ports.clone(),
                row.os_arch.clone(),
                printer.paint(&row.status, status_style(&row.status)),
            ]);
            if uptime {
                cells.push(row.since.clone());
            }
            cells.extend([
                row.running_version.clone().unwrap_or_else(|| "-".to_owned()),
                row.data_dir.clone(),
                row.deploy_dir.clone(),
            ]);
            if with_tasks {
                cells.push(tasks::cell(row.tasks.as_deref()));
            }
            if columns.rollback_info {
                cells.push(row.rollback_to.clone().unwrap_or_else(|| "-".to_owned()));
            }
            cells
        })
        .collect();
    out.push_str(&tiup_table(&headers, &cells));
    out.push_str(&format!("\nTotal nodes: {}", rows.len()));
    out
}

/// TiUP's colours (`formatInstanceStatus`).
fn status_style(status: &str) -> Style {
    let status = status.to_lowercase();
    if ["up", "healthy", "free", "bound", "relay"].iter().any(|p| status.starts_with(p)) {
        Style::Good
    } else if ["down", "err", "inactive", "unhealthy"].iter().any(|p| status.starts_with(p)) {
        Style::Bad
    } else {
        Style::Warn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_arch_as_tiup() {
        assert_eq!(os_arch("linux", "amd64"), "linux/x86_64");
        assert_eq!(os_arch("linux", "arm64"), "linux/aarch64");
        assert_eq!(os_arch("linux", "riscv64"), "linux/riscv64");
    }
}
