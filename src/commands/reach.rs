//! How a command reaches the cluster, from its flags and the cluster's topology, as TiUP
//! decides it: `--ssh`, else `--native-ssh` (or `TIUP_NATIVE_SSH`), else the cluster's
//! `global.ssh_type`, else dm-patch's own client; and the jump host of `--ssh-proxy-*`.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{ProxyArgs, native_ssh_from_env};
use crate::engine::audit;
use crate::error::UsageError;
use crate::ssh::{Executor, HostKeyPolicy, JumpHost, Reach};
use crate::topology::Cluster;

/// TiUP's defaults for the jump host.
const PROXY_PORT: u16 = 22;
const PROXY_TIMEOUT: Duration = Duration::from_secs(5);

/// The executor the flags and the cluster ask for.
pub fn executor(
    cluster: &Cluster,
    ssh: Option<Executor>,
    native_ssh: bool,
) -> Result<Executor, UsageError> {
    if let Some(executor) = ssh {
        return Ok(executor);
    }
    if native_ssh || native_ssh_from_env() {
        return Ok(Executor::System);
    }
    let global = cluster.meta.topology.global.as_ref();
    match global.and_then(|g| g.ssh_type.as_deref()) {
        None | Some("") => Ok(Executor::Builtin),
        Some(text) => text.parse().map_err(|_| {
            UsageError(format!(
                "cluster '{}' sets global.ssh_type: {text}, which is none of {}; correct \
                 meta.yaml or pass --ssh",
                cluster.name,
                Executor::NAMES.join(", ")
            ))
        }),
    }
}

/// The jump host the flags name, with TiUP's defaults; `None` without `--ssh-proxy-host` (the
/// other flags are then ignored, as in TiUP).
pub fn jump_host(proxy: &ProxyArgs) -> Result<Option<JumpHost>, UsageError> {
    // An empty host is no jump host, as TiUP reads it (`if SSHProxyHost != ""`).
    let Some(addr) = proxy.ssh_proxy_host.clone().filter(|host| !host.is_empty()) else {
        return Ok(None);
    };
    if proxy.ssh_proxy_use_password {
        return Err(UsageError(
            "--ssh-proxy-use-password: dm-patch logs in to the jump host with a key only; pass \
             --ssh-proxy-identity-file instead"
                .into(),
        ));
    }
    let user = proxy.ssh_proxy_user.clone().or_else(audit::login_name).ok_or_else(|| {
        UsageError("cannot tell who the current user is; pass --ssh-proxy-user".into())
    })?;
    let identity = match &proxy.ssh_proxy_identity_file {
        Some(file) => file.clone(),
        None => home()
            .map(|home| home.join(".ssh").join("id_rsa"))
            .ok_or_else(|| UsageError("HOME is not set; pass --ssh-proxy-identity-file".into()))?,
    };
    Ok(Some(JumpHost {
        addr,
        port: proxy.ssh_proxy_port.unwrap_or(PROXY_PORT),
        user,
        identity,
        timeout: proxy.ssh_proxy_timeout.map_or(PROXY_TIMEOUT, Duration::from_secs),
    }))
}

/// Logs in to the jump host, if any, checking its key against the cluster's known_hosts.
pub async fn open(
    cluster: &Cluster,
    executor: Executor,
    jump: Option<JumpHost>,
    host_key_policy: HostKeyPolicy,
) -> anyhow::Result<Reach> {
    Ok(Reach::open(executor, jump, &cluster.known_hosts(), host_key_policy).await?)
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|home| !home.is_empty()).map(PathBuf::from)
}
