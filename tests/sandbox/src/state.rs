//! `sandbox.json`: what a sandbox started, so that another process (`sandbox down`, `sandbox
//! status`) can find it and stop exactly that, by pid and start time.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::process::ProcessRecord;
use crate::topology::Instance;

pub const STATE_FILE: &str = "sandbox.json";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxState {
    pub cluster_name: String,
    /// `127.<a>.<b>`, the claimed subnet.
    pub subnet: String,
    pub ssh_user: String,
    pub version: String,
    /// Whether the cluster serves its API over mutual TLS (older state files: no).
    #[serde(default)]
    pub tls: bool,
    pub hosts: Vec<HostState>,
    pub instances: Vec<Instance>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostState {
    pub ip: String,
    /// The host's sshd listener; `None` once it was stopped.
    pub sshd: Option<ProcessRecord>,
}

impl SandboxState {
    pub fn load(root: &Path) -> Result<SandboxState> {
        let path = root.join(STATE_FILE);
        let text = fs::read_to_string(&path).with_context(|| {
            format!("reading {} (is {} a sandbox root?)", path.display(), root.display())
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Written aside and renamed: a reader never sees half of it.
    pub fn save(&self, root: &Path) -> Result<()> {
        let staged =
            crate::machine::stage(root, serde_json::to_string_pretty(self)?.as_bytes(), 0o644)?;
        crate::machine::install(staged, &root.join(STATE_FILE))
    }
}
