//! The monitoring components TiUP deploys beside DM (prometheus, grafana, alertmanager),
//! resolved with TiUP's defaults: `display` shows them; dm-patch never patches them.

use std::fmt;

use serde::Serialize;

use super::meta::{AlertmanagerSpec, Global, GrafanaSpec, Meta, PrometheusSpec};
use super::{Dirs, non_empty};

/// A monitoring component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MonitorRole {
    Prometheus,
    Grafana,
    Alertmanager,
}

impl MonitorRole {
    pub const ALL: [MonitorRole; 3] =
        [MonitorRole::Prometheus, MonitorRole::Grafana, MonitorRole::Alertmanager];

    /// TiUP's component (and role) name.
    pub fn component(self) -> &'static str {
        match self {
            MonitorRole::Prometheus => "prometheus",
            MonitorRole::Grafana => "grafana",
            MonitorRole::Alertmanager => "alertmanager",
        }
    }

    pub fn from_component(name: &str) -> Option<MonitorRole> {
        MonitorRole::ALL.into_iter().find(|role| role.component() == name)
    }
}

impl fmt::Display for MonitorRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.component())
    }
}

/// One prometheus, grafana or alertmanager instance with TiUP's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Monitor {
    pub role: MonitorRole,
    pub host: String,
    /// `manage_host` when set, else `host`: where TiUP checks its status.
    pub manage_host: String,
    /// The port that names it (`host:port`) and answers its status check: prometheus's and
    /// grafana's `port`, alertmanager's `web_port`.
    pub port: u16,
    /// Every port TiUP lists for it, in TiUP's order.
    pub ports: Vec<u16>,
    pub deploy_dir: String,
    /// Grafana has none.
    pub data_dir: Option<String>,
    pub os: String,
    /// As meta.yaml spells it (amd64, arm64, or anything else).
    pub arch: String,
    pub numa_node: Option<String>,
    pub resource_control: Option<yaml_serde::Value>,
    pub patched: bool,
}

impl Monitor {
    /// TiUP's instance ID, `host:port`.
    pub fn id(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The address its status is checked on.
    pub fn status_addr(&self) -> String {
        format!("{}:{}", self.manage_host, self.port)
    }
}

/// The monitoring instances of `meta`, in TiUP's component order. Resolving them never fails:
/// dm-patch only shows them, and a field it cannot make sense of is shown as it is.
pub(super) fn monitors(meta: &Meta) -> Vec<Monitor> {
    let global = meta.topology.global.clone().unwrap_or_default();
    let topology = &meta.topology;
    let mut monitors = Vec::new();
    for spec in topology.monitoring_servers.iter().flatten() {
        monitors.push(prometheus(meta, &global, spec));
    }
    for spec in topology.grafana_servers.iter().flatten() {
        monitors.push(grafana(&global, spec));
    }
    for spec in topology.alertmanager_servers.iter().flatten() {
        monitors.push(alertmanager(&global, spec));
    }
    monitors
}

/// Prometheus lists its port, then (when `monitored` is set) the blackbox and node exporter
/// ports, then `ng_port` when it has one, as current TiUP does.
fn prometheus(meta: &Meta, global: &Global, spec: &PrometheusSpec) -> Monitor {
    let role = MonitorRole::Prometheus;
    let port = spec.port.unwrap_or(9090);
    let mut ports = vec![port];
    if let Some(monitored) = &meta.topology.monitored {
        let port_of = |key: &str, default: u16| {
            monitored
                .get(key)
                .and_then(yaml_serde::Value::as_u64)
                .and_then(|port| u16::try_from(port).ok())
                .unwrap_or(default)
        };
        ports.push(port_of("blackbox_exporter_port", 9115));
        ports.push(port_of("node_exporter_port", 9100));
    }
    ports.extend(spec.ng_port.filter(|&port| port > 0));
    let dirs = [&spec.deploy_dir, &spec.data_dir, &spec.log_dir];
    monitor(role, global, placement!(spec, &spec.numa_node), ports, dirs, DataDir::Yes)
}

fn grafana(global: &Global, spec: &GrafanaSpec) -> Monitor {
    let ports = vec![spec.port.unwrap_or(3000)];
    let dirs = [&spec.deploy_dir, &None, &None];
    monitor(MonitorRole::Grafana, global, placement!(spec, &None), ports, dirs, DataDir::No)
}

fn alertmanager(global: &Global, spec: &AlertmanagerSpec) -> Monitor {
    let ports = vec![spec.web_port.unwrap_or(9093), spec.cluster_port.unwrap_or(9094)];
    let dirs = [&spec.deploy_dir, &spec.data_dir, &spec.log_dir];
    let placement = placement!(spec, &spec.numa_node);
    monitor(MonitorRole::Alertmanager, global, placement, ports, dirs, DataDir::Yes)
}

/// Where and how a monitoring instance runs: the fields every monitoring spec has.
struct Placement<'a> {
    host: &'a str,
    manage_host: &'a Option<String>,
    os: &'a Option<String>,
    arch: &'a Option<String>,
    numa_node: &'a Option<String>,
    resource_control: &'a Option<yaml_serde::Value>,
    patched: Option<bool>,
}

/// The [`Placement`] of a monitoring spec (grafana has no `numa_node`).
macro_rules! placement {
    ($spec:expr, $numa_node:expr) => {
        Placement {
            host: &$spec.host,
            manage_host: &$spec.manage_host,
            os: &$spec.os,
            arch: &$spec.arch,
            numa_node: $numa_node,
            resource_control: &$spec.resource_control,
            patched: $spec.patched,
        }
    };
}
use placement;

/// Whether a component keeps a data dir (grafana does not).
#[derive(Clone, Copy, PartialEq, Eq)]
enum DataDir {
    Yes,
    No,
}

/// A monitoring instance with TiUP's defaults: named by the first of its `ports`, in the
/// directories resolved from its own `dirs` (deploy, data, log).
fn monitor(
    role: MonitorRole,
    global: &Global,
    placement: Placement<'_>,
    ports: Vec<u16>,
    dirs: [&Option<String>; 3],
    data_dir: DataDir,
) -> Monitor {
    let port = ports[0];
    let resolved = Dirs::resolve(global, role.component(), port, dirs);
    Monitor {
        role,
        host: placement.host.to_owned(),
        manage_host: non_empty(placement.manage_host).unwrap_or(placement.host).to_owned(),
        port,
        ports,
        deploy_dir: resolved.deploy_dir,
        data_dir: (data_dir == DataDir::Yes).then_some(resolved.data_dir),
        os: os_of(placement.os, global),
        arch: arch_of(placement.arch, global),
        numa_node: non_empty(placement.numa_node).map(str::to_owned),
        resource_control: placement.resource_control.clone(),
        patched: placement.patched.unwrap_or(false),
    }
}

fn os_of(own: &Option<String>, global: &Global) -> String {
    non_empty(own).or(non_empty(&global.os)).unwrap_or("linux").to_lowercase()
}

/// TiUP's spelling: `x86_64` and `aarch64` become `amd64` and `arm64`.
fn arch_of(own: &Option<String>, global: &Global) -> String {
    let arch = non_empty(own).or(non_empty(&global.arch)).unwrap_or("amd64").to_lowercase();
    match arch.as_str() {
        "x86_64" => "amd64".to_owned(),
        "aarch64" => "arm64".to_owned(),
        _ => arch,
    }
}
