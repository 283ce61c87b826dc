//! dm-sim: a DM simulator that runs as `dm-master` or `dm-worker`, faithful to the DM-master
//! HTTP API dm-patch relies on (members, leader eviction, `/status`, `/health`), started by
//! TiUP's run scripts with TiUP's flags. See tests/sandbox/README.md for its contract.

mod master;
mod worker;

use std::collections::HashMap;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Everything read from the command line and the environment, once.
#[derive(Debug, Clone)]
pub struct Settings {
    pub flags: HashMap<String, String>,
    pub version: String,
    pub faults: Vec<String>,
    pub start_delay: Duration,
    pub master_lease: Duration,
    pub worker_lease: Duration,
    pub scheduler_delay: Duration,
    pub forward_delay: Duration,
}

impl Settings {
    pub fn flag(&self, name: &str) -> String {
        self.flags.get(name).cloned().unwrap_or_default()
    }

    pub fn has_fault(&self, fault: &str) -> bool {
        self.faults.iter().any(|f| f == fault)
    }

    /// The block `-V` prints and `/status` serves. `wrong-version` makes the running server
    /// report another binary, as if an old one were still running.
    pub fn version_block(&self, running: bool) -> String {
        let release = if running && self.has_fault("wrong-version") {
            "v0.0.0-stale".to_owned()
        } else {
            self.version.clone()
        };
        let digest = Sha256::digest(format!("{release}|{}", self.faults.join(",")));
        let hash: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
        format!(
            "Release Version: {release}\nGit Commit Hash: {hash}\nGit Branch: HEAD\n\
             UTC Build Time: 2025-01-20 10:00:00\nGo Version: go version go1.23.4 linux/amd64\n\
             Failpoint Build: false\n"
        )
    }

    /// `ip:port` to bind: the given address, or the advertised one when it says 0.0.0.0.
    pub fn bind_addr(&self, listen_flag: &str) -> String {
        let listen = self.flag(listen_flag);
        match listen.strip_prefix("0.0.0.0:") {
            Some(port) => {
                let advertised = self.flag("advertise-addr");
                let ip = advertised
                    .split(':')
                    .next()
                    .unwrap_or("127.0.0.1")
                    .to_owned();
                format!("{ip}:{port}")
            }
            None => listen,
        }
    }
}

fn millis(name: &str, default: u64) -> Duration {
    let value = std::env::var(name).ok().and_then(|v| v.parse().ok());
    Duration::from_millis(value.unwrap_or(default))
}

fn parse_flags(args: &[String]) -> HashMap<String, String> {
    let mut flags = HashMap::new();
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        let Some(name) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            continue;
        };
        match name.split_once('=') {
            Some((key, value)) => {
                flags.insert(key.to_owned(), value.to_owned());
            }
            None => {
                let value = match iter.peek() {
                    Some(next) if !next.starts_with('-') => iter.next().cloned().unwrap(),
                    _ => String::new(),
                };
                flags.insert(name.to_owned(), value);
            }
        }
    }
    flags
}

/// Appends one line to the instance's log file (`--log-file`), for whoever debugs a test.
pub fn log(settings: &Settings, line: &str) {
    use std::io::Write;
    let path = settings.flag("log-file");
    if path.is_empty() {
        return;
    }
    if let Some(parent) = std::path::Path::new(&path).parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        let _ = writeln!(file, "{line}");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let role = std::env::var("DM_SIM_ROLE").unwrap_or_else(|_| {
        std::path::Path::new(&args[0])
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let settings = Settings {
        flags: parse_flags(&args[1..]),
        version: std::env::var("DM_SIM_VERSION").unwrap_or_else(|_| "v8.5.1".to_owned()),
        faults: std::env::var("DM_SIM_FAULT")
            .unwrap_or_default()
            .split(',')
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect(),
        start_delay: millis("DM_SIM_START_DELAY_MS", 0),
        master_lease: millis("DM_SIM_MASTER_LEASE_MS", 60_000),
        worker_lease: millis("DM_SIM_WORKER_LEASE_MS", 60_000),
        scheduler_delay: millis("DM_SIM_SCHEDULER_DELAY_MS", 1_000),
        forward_delay: millis("DM_SIM_FORWARD_DELAY_MS", 100),
    };
    if settings.flags.contains_key("V") {
        print!("{}", settings.version_block(false));
        return;
    }
    if settings.has_fault("exit-at-start") {
        eprintln!("[FATAL] dm-sim: exit-at-start fault: refusing to start");
        std::process::exit(1);
    }
    std::thread::sleep(settings.start_delay);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let code = runtime.block_on(async {
        match role.as_str() {
            "dm-master" => master::run(settings).await,
            "dm-worker" => worker::run(settings).await,
            other => {
                eprintln!(
                    "dm-sim: unknown role {other:?}; set DM_SIM_ROLE to dm-master or dm-worker"
                );
                2
            }
        }
    });
    std::process::exit(code);
}
