//! What the process was asked to be: TiUP's command-line flags, the role, and the `DM_SIM_*`
//! environment (version, faults, timings), read once at start.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dm_sandbox::Fault;
use dm_sandbox::dm_api::VersionInfo;
use sha2::{Digest, Sha256};

use crate::faults::Faults;
use crate::tls::Tls;

pub const DEFAULT_VERSION: &str = "v8.5.1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Worker,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Master => "dm-master",
            Role::Worker => "dm-worker",
        }
    }

    /// `DM_SIM_ROLE`, else the name the binary was run as (`bin/dm-master/dm-master`).
    fn detect(role_var: Option<String>, argv0: &str) -> Result<Role, String> {
        let from_path =
            std::path::Path::new(argv0).file_name().map(|name| name.to_string_lossy().into_owned());
        let name = role_var.or(from_path).unwrap_or_default();
        match name.as_str() {
            "dm-master" => Ok(Role::Master),
            "dm-worker" => Ok(Role::Worker),
            other => Err(format!(
                "cannot tell the role from {other:?}: set DM_SIM_ROLE to dm-master or dm-worker"
            )),
        }
    }
}

/// The simulator's timings (`DM_SIM_*_MS`), defaulting to DM's own.
#[derive(Debug, Clone)]
pub struct Timings {
    pub start_delay: Duration,
    pub master_lease: Duration,
    pub worker_lease: Duration,
    pub scheduler_delay: Duration,
    pub forward_delay: Duration,
    /// How long a subtask replicates before it pauses, under the `late-pause` fault.
    pub late_pause: Duration,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub role: Role,
    /// `--name=value` and `--name value` alike, without the dashes. A flag with no value maps
    /// to the empty string.
    flags: HashMap<String, String>,
    pub version: String,
    pub faults: Faults,
    pub timings: Timings,
    /// Mutual TLS, when `--config` sets `ssl-ca`, `ssl-cert` and `ssl-key`.
    pub tls: Option<Arc<Tls>>,
    /// `openapi = true` in `--config`: DM's OpenAPI under `/api/v1/` (a master's).
    pub openapi: bool,
}

/// Reads the command line and environment; `Err` carries the message for stderr.
pub fn settings_from_env(args: &[String]) -> Result<Settings, String> {
    let argv0 = args.first().map(String::as_str).unwrap_or_default();
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let millis = |name: &str, default: u64| -> Result<Duration, String> {
        match var(name) {
            None => Ok(Duration::from_millis(default)),
            Some(text) => text
                .parse()
                .map(Duration::from_millis)
                .map_err(|_| format!("{name}={text:?} is not a number of milliseconds")),
        }
    };
    let flags = parse_flags(args.get(1..).unwrap_or_default());
    let config = flags.get("config").filter(|path| !path.is_empty()).map(Path::new);
    let tls = match config {
        Some(config) => Tls::from_config(config)?.map(Arc::new),
        None => None,
    };
    // DM's OpenAPI is served only when the master's config says `openapi = true`.
    let openapi = config.and_then(|path| std::fs::read_to_string(path).ok()).is_some_and(|text| {
        text.lines().any(|line| {
            line.split_once('=').is_some_and(|(k, v)| k.trim() == "openapi" && v.trim() == "true")
        })
    });
    Ok(Settings {
        role: Role::detect(var("DM_SIM_ROLE"), argv0)?,
        flags,
        version: var("DM_SIM_VERSION").unwrap_or_else(|| DEFAULT_VERSION.to_owned()),
        faults: Faults::parse(&var("DM_SIM_FAULT").unwrap_or_default())?,
        timings: Timings {
            start_delay: millis("DM_SIM_START_DELAY_MS", 0)?,
            master_lease: millis("DM_SIM_MASTER_LEASE_MS", 60_000)?,
            worker_lease: millis("DM_SIM_WORKER_LEASE_MS", 60_000)?,
            scheduler_delay: millis("DM_SIM_SCHEDULER_DELAY_MS", 1_000)?,
            forward_delay: millis("DM_SIM_FORWARD_DELAY_MS", 100)?,
            late_pause: millis("DM_SIM_LATE_PAUSE_MS", 3_000)?,
        },
        tls,
        openapi,
    })
}

/// Go's flag syntax as TiUP uses it: `--flag=value`, `--flag value`, `-flag`, and bare
/// switches such as `-V`. Anything that is not a flag is ignored.
fn parse_flags(args: &[String]) -> HashMap<String, String> {
    let mut flags = HashMap::new();
    let mut args = args.iter().peekable();
    while let Some(arg) = args.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            continue;
        };
        let (name, value) = match flag.split_once('=') {
            Some((name, value)) => (name, value.to_owned()),
            None => {
                let value = args.next_if(|next| !next.starts_with('-')).cloned();
                (flag, value.unwrap_or_default())
            }
        };
        flags.insert(name.to_owned(), value);
    }
    flags
}

impl Settings {
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags.get(name).map(String::as_str)
    }

    /// A flag the role cannot run without.
    pub fn required(&self, name: &str) -> Result<&str, String> {
        self.flag(name)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| format!("{} needs --{name}", self.role.name()))
    }

    pub fn wants_version(&self) -> bool {
        self.flags.contains_key("V") || self.flags.contains_key("version")
    }

    pub fn has(&self, fault: Fault) -> bool {
        self.faults.has(fault)
    }

    /// `https` with TLS, else `http`: how other processes of the cluster are called.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    pub fn log_file(&self) -> Option<PathBuf> {
        self.flag("log-file").filter(|path| !path.is_empty()).map(PathBuf::from)
    }

    /// The block `-V` prints: the packaged binary's identity.
    pub fn packaged_version(&self) -> VersionInfo {
        version_info(&self.version, &self.faults.to_string())
    }

    /// The block the running server's `/status` serves. With `wrong-version` it is another
    /// binary's, so a patch that only checks `-V` on disk is caught out.
    pub fn running_version(&self) -> VersionInfo {
        if self.has(Fault::WrongVersion) {
            version_info(&format!("{}-stale", self.version), "stale binary")
        } else {
            self.packaged_version()
        }
    }

    /// Where to listen for an address flag: its exact IP, never a wildcard, because many
    /// simulated hosts share this machine. A wildcard (`0.0.0.0:8261`, as TiUP writes with
    /// `listen_host`) takes the IP of the advertised address instead.
    pub fn listen_addr(&self, flag: &str, advertised_flag: &str) -> Result<SocketAddr, String> {
        let listen = socket_addr(self.required(flag)?)?;
        if !listen.ip().is_unspecified() {
            return Ok(listen);
        }
        let advertised = socket_addr(self.required(advertised_flag)?)?;
        Ok(SocketAddr::new(advertised.ip(), listen.port()))
    }
}

/// `host:port` or `http://host:port[/]` as a socket address.
pub fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    let bare =
        text.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/');
    bare.parse().map_err(|_| {
        format!("{text:?} is not an ip:port address (the simulator resolves no host names)")
    })
}

/// A DM-style version block whose commit hash is 40 hex digits derived from the version and
/// the faults, so two different packages never print the same block.
fn version_info(release: &str, salt: &str) -> VersionInfo {
    let digest = Sha256::digest(format!("{release}\n{salt}"));
    let hash: String = digest[..20].iter().map(|b| format!("{b:02x}")).collect();
    VersionInfo {
        release_version: release.to_owned(),
        git_commit_hash: hash,
        git_branch: "HEAD".to_owned(),
        utc_build_time: "2025-01-20 10:00:00".to_owned(),
        go_version: "go version go1.23.4 linux/amd64".to_owned(),
        failpoint_build: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn flags_in_both_spellings() {
        let flags = parse_flags(&args(&[
            "--name=m1",
            "--master-addr",
            "127.0.0.1:8261",
            "-V",
            "--config=conf/dm-master.toml",
        ]));
        assert_eq!(flags["name"], "m1");
        assert_eq!(flags["master-addr"], "127.0.0.1:8261");
        assert_eq!(flags["V"], "");
        assert_eq!(flags["config"], "conf/dm-master.toml");
    }

    #[test]
    fn role_from_the_binary_name() {
        assert_eq!(Role::detect(None, "/deploy/bin/dm-worker/dm-worker"), Ok(Role::Worker));
        assert_eq!(Role::detect(Some("dm-master".into()), "dm-sim"), Ok(Role::Master));
        assert!(Role::detect(None, "dm-sim").is_err());
    }

    #[test]
    fn commit_hash_is_forty_hex_digits_and_tells_packages_apart() {
        let a = version_info("v8.5.1", "");
        let b = version_info("v8.5.1", "ignore-evict");
        assert_eq!(a.git_commit_hash.len(), 40);
        assert!(a.git_commit_hash.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.git_commit_hash, b.git_commit_hash);
    }
}
