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
