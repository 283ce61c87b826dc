//! The typed shape of TiUP's `meta.yaml` for a DM cluster.
//!
//! Every struct keeps the keys it does not model in a flattened `extra` mapping, and every
//! modelled key is optional (`serde(default)`) and skipped when absent
//! (`skip_serializing_none`), so a load followed by a save writes back
//! exactly what was read plus what dm-patch changed. Field order follows TiUP's Go structs
//! (components/dm/spec/topology_dm.go), which is the order TiUP writes them in.

use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;
use yaml_serde::{Mapping, Value};

/// The whole file: `user`, `dm_version`, `topology`.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Meta {
    /// The SSH user TiUP logs in as.
    pub user: Option<String>,
    /// The cluster's DM version, e.g. `v8.5.1`; names TiUP's `bin.old.<version>` backups.
    pub dm_version: Option<String>,
    pub topology: Topology,
    #[serde(flatten)]
    pub extra: Mapping,
}

#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Topology {
    pub global: Option<Global>,
    pub monitored: Option<Value>,
    pub component_sources: Option<Value>,
    pub server_configs: Option<Value>,
    pub master_servers: Option<Vec<InstanceSpec>>,
    pub worker_servers: Option<Vec<InstanceSpec>>,
    pub monitoring_servers: Option<Vec<PrometheusSpec>>,
    pub grafana_servers: Option<Vec<GrafanaSpec>>,
    pub alertmanager_servers: Option<Vec<AlertmanagerSpec>>,
    #[serde(flatten)]
    pub extra: Mapping,
}

/// `topology.global`: the defaults every instance inherits.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Global {
    pub user: Option<String>,
    pub group: Option<String>,
    pub ssh_port: Option<u16>,
    pub ssh_type: Option<String>,
    pub enable_tls: Option<bool>,
    pub listen_host: Option<String>,
    pub deploy_dir: Option<String>,
    pub data_dir: Option<String>,
    pub log_dir: Option<String>,
    pub resource_control: Option<Value>,
    pub os: Option<String>,
    pub arch: Option<String>,
    pub systemd_mode: Option<String>,
    #[serde(flatten)]
    pub extra: Mapping,
}

/// One entry of `master_servers` or `worker_servers`.
///
/// TiUP's `MasterSpec` and `WorkerSpec` differ only in `peer_port` and `v1_source_path`, which a
/// worker entry simply never has, so one type serves both lists.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InstanceSpec {
    pub host: String,
    pub manage_host: Option<String>,
    pub ssh_port: Option<u16>,
    pub patched: Option<bool>,
    pub ignore_exporter: Option<bool>,
    pub name: Option<String>,
    pub port: Option<u16>,
    pub peer_port: Option<u16>,
    pub deploy_dir: Option<String>,
    pub data_dir: Option<String>,
    pub log_dir: Option<String>,
    pub source: Option<String>,
    pub numa_node: Option<String>,
    pub config: Option<Value>,
    pub resource_control: Option<Value>,
    pub arch: Option<String>,
    pub os: Option<String>,
    pub v1_source_path: Option<String>,
    #[serde(flatten)]
    pub extra: Mapping,
}

/// One entry of `monitoring_servers` (TiUP's `PrometheusSpec`, pkg/cluster/spec/monitoring.go).
/// dm-patch only shows these; every TiUP field is named so that a load and save keep TiUP's
/// order, and the ones display does not read stay raw values.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PrometheusSpec {
    pub host: String,
    pub manage_host: Option<String>,
    pub ssh_port: Option<u16>,
    pub patched: Option<bool>,
    pub ignore_exporter: Option<bool>,
    pub port: Option<u16>,
    pub ng_port: Option<u16>,
    pub deploy_dir: Option<String>,
    pub data_dir: Option<String>,
    pub log_dir: Option<String>,
    pub numa_node: Option<String>,
    pub prom_remote_write_to_vm: Option<Value>,
    pub enable_prom_agent_mode: Option<Value>,
    pub remote_config: Option<Value>,
    pub external_alertmanagers: Option<Value>,
    pub pushgateway_addrs: Option<Value>,
    pub storage_retention: Option<Value>,
    pub storage_retention_size: Option<Value>,
    pub storage_retention_time: Option<Value>,
    pub resource_control: Option<Value>,
    pub arch: Option<String>,
    pub os: Option<String>,
    pub rule_dir: Option<Value>,
    pub additional_scrape_conf: Option<Value>,
    pub scrape_interval: Option<Value>,
    pub scrape_timeout: Option<Value>,
    pub additional_args: Option<Value>,
    pub ng_monitoring_config: Option<Value>,
    #[serde(flatten)]
    pub extra: Mapping,
}

/// One entry of `grafana_servers` (TiUP's `GrafanaSpec`, pkg/cluster/spec/grafana.go).
/// Grafana has no data dir.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GrafanaSpec {
    pub host: String,
    pub manage_host: Option<String>,
    pub ssh_port: Option<u16>,
    pub patched: Option<bool>,
    pub ignore_exporter: Option<bool>,
    pub port: Option<u16>,
    pub deploy_dir: Option<String>,
    pub config: Option<Value>,
    pub resource_control: Option<Value>,
    pub arch: Option<String>,
    pub os: Option<String>,
    pub dashboard_dir: Option<Value>,
    pub username: Option<Value>,
    pub password: Option<Value>,
    pub anonymous_enable: Option<Value>,
    pub root_url: Option<Value>,
    pub domain: Option<Value>,
    pub default_theme: Option<Value>,
    pub org_name: Option<Value>,
    pub org_role: Option<Value>,
    pub use_vm_as_datasource: Option<Value>,
    #[serde(flatten)]
    pub extra: Mapping,
}

/// One entry of `alertmanager_servers` (TiUP's `AlertmanagerSpec`,
/// pkg/cluster/spec/alertmanager.go).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AlertmanagerSpec {
    pub host: String,
    pub manage_host: Option<String>,
    pub ssh_port: Option<u16>,
    pub patched: Option<bool>,
    pub ignore_exporter: Option<bool>,
    pub web_port: Option<u16>,
    pub cluster_port: Option<u16>,
    pub listen_host: Option<String>,
    pub deploy_dir: Option<String>,
    pub data_dir: Option<String>,
    pub log_dir: Option<String>,
    pub numa_node: Option<String>,
    pub resource_control: Option<Value>,
    pub additional_args: Option<Value>,
    pub arch: Option<String>,
    pub os: Option<String>,
    pub config_file: Option<Value>,
    #[serde(flatten)]
    pub extra: Mapping,
}
