//! The typed shape of TiUP's `meta.yaml` for a DM cluster.
//!
//! Every struct keeps the keys it does not model in a flattened `extra` mapping, and every
//! modelled key is optional and skipped when absent, so a load followed by a save writes back
//! exactly what was read plus what dm-patch changed. Field order follows TiUP's Go structs
//! (components/dm/spec/topology_dm.go), which is the order TiUP writes them in.

use serde::{Deserialize, Serialize};
use yaml_serde::{Mapping, Value};

/// The whole file: `user`, `dm_version`, `topology`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// The SSH user TiUP logs in as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The cluster's DM version, e.g. `v8.5.1`; names TiUP's `bin.old.<version>` backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dm_version: Option<String>,
    #[serde(default)]
    pub topology: Topology,
    #[serde(flatten)]
    pub extra: Mapping,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<Global>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitored: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_sources: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_configs: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_servers: Option<Vec<InstanceSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_servers: Option<Vec<InstanceSpec>>,
    #[serde(flatten)]
    pub extra: Mapping,
}

/// `topology.global`: the defaults every instance inherits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Global {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_tls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_control: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_mode: Option<String>,
    #[serde(flatten)]
    pub extra: Mapping,
}

/// One entry of `master_servers` or `worker_servers`.
///
/// TiUP's `MasterSpec` and `WorkerSpec` differ only in `peer_port` and `v1_source_path`, which a
/// worker entry simply never has, so one type serves both lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceSpec {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manage_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patched: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_exporter: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_control: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v1_source_path: Option<String>,
    #[serde(flatten)]
    pub extra: Mapping,
}
