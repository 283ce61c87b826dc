//! The command line, as clap parses it. Nothing here is validated beyond syntax and ranges: the commands
//! turn these into plain, checked configurations before doing anything.
//!
//! TiUP's flags are accepted where TiUP scripts put them. TiUP makes `--ssh-timeout`,
//! `--wait-timeout`, `-y/--yes`, `-c/--concurrency`, `--ssh`, `--native-ssh` and `--format`
//! persistent flags of `tiup dm`, so a script may pass them before the subcommand
//! (`tiup dm --yes patch ...`) or after it. dm-patch lists each option only under the
//! subcommand it applies to, and accepts the others silently where TiUP does (hidden from help):
//! before any subcommand, and on `display`.

use std::ffi::OsStr;
use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, StringValueParser, TypedValueParser};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use clap_complete::ArgValueCandidates;

use crate::ssh::{Executor, HostKeyPolicy};

/// `dm-patch --version`: the version, the commit it was built from and the target.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("DM_PATCH_GIT_COMMIT"),
    ", ",
    env!("DM_PATCH_TARGET"),
    ")"
);

/// clap's rendering of a usage error as one line: its first line and the indented lines right
/// under it, which name what is missing or allowed (`<PACKAGE>`, `[possible values: ...]`).
fn one_line(rendered: &str) -> String {
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or("error: invalid usage").trim_end();
    let details: Vec<&str> = lines
        .take_while(|line| line.starts_with(char::is_whitespace) && !line.trim().is_empty())
        .map(str::trim)
        .collect();
    match details.as_slice() {
        [] => first.to_owned(),
        details => format!("{first} {}", details.join(", ")),
    }
}

impl Cli {
    /// Parses the process's arguments. Help and `--version` print as clap prints them and exit
    /// 0; a usage error is one line on stderr and exit 2, like every other bad input.
    pub fn parse_or_exit() -> Cli {
        match Cli::try_parse_args(std::env::args_os()) {
            Ok(cli) => cli,
            Err(err) if !err.use_stderr() => err.exit(),
            Err(err) => {
                let message =
                    format!("{}; see `dm-patch --help`", one_line(&err.render().to_string()));
                let status = crate::error::ExitStatus::BadInput;
                // The arguments did not parse, but a script that asked for JSON gets its error
                // as JSON too.
                let format =
                    if asks_for_json(std::env::args()) { Format::Json } else { Format::Text };
                let error = message.strip_prefix("error: ").unwrap_or(&message);
                crate::output::Printer::new(format, false, 0).error(error, status);
                std::process::exit(i32::from(status.code()));
            }
        }
    }

    /// Parses `args` (the program name first), then applies the flags given before the
    /// subcommand to it, unless the subcommand was given the same flag itself.
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut command = Cli::command();
        let matches = command.try_get_matches_from_mut(args)?;
        let mut cli = Cli::from_arg_matches(&matches).map_err(|err| err.format(&mut command))?;
        cli.apply_leading(&matches);
        Ok(cli)
    }

    fn apply_leading(&mut self, matches: &ArgMatches) {
        let leading = &self.leading;
        let leading_proxy = self.leading_proxy.clone().into_proxy();
        let (name, connection, yes) = match &mut self.command {
            Command::Patch(args) => ("patch", &mut args.connection, &mut args.change.yes),
            Command::Rollback(args) => ("rollback", &mut args.connection, &mut args.change.yes),
            Command::Display(args) => {
                let tiup = &mut args.tiup;
                tiup.ssh = tiup.ssh.or(leading.ssh);
                tiup.native_ssh |= leading.native_ssh;
                args.proxy.fill_from(leading_proxy);
                return;
            }
            Command::History(_) | Command::Completions { .. } | Command::Man => return,
        };
        let given = |id: &str| {
            matches.subcommand_matches(name).and_then(|m| m.value_source(id))
                == Some(ValueSource::CommandLine)
        };
        if let (Some(value), false) = (leading.ssh_timeout, given("ssh_timeout")) {
            connection.ssh_timeout = value;
        }
        if let (Some(value), false) = (leading.wait_timeout, given("wait_timeout")) {
            connection.wait_timeout = value;
        }
        if let (Some(value), false) = (leading.concurrency, given("concurrency")) {
            connection.concurrency = value;
        }
        if let (Some(value), false) = (leading.host_key_policy, given("host_key_policy")) {
            connection.host_key_policy = value;
        }
        connection.ssh = connection.ssh.or(leading.ssh);
        connection.native_ssh |= leading.native_ssh;
        connection.proxy.fill_from(leading_proxy);
        *yes |= leading.yes;
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "dm-patch",
    version = LONG_VERSION,
    about = "Hot-fix a running TiDB Data Migration (DM) cluster, safely: a drop-in for `tiup dm patch`",
    long_about = None,
    after_help = EXIT_STATUSES,
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// TiUP's persistent flags given before the subcommand (`dm-patch --yes patch ...`).
    #[command(flatten)]
    pub leading: TiupArgs,
    #[command(flatten)]
    pub leading_proxy: LeadingProxyArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The exit statuses, as `--help` lists them (README.md and the man page say the same).
const EXIT_STATUSES: &str = "Exit status: 0 done; 1 failed, every instance as it was (or patched \
and healthy); 2 bad input or refused before any change; 3 failed and something needs a person \
(an instance not put back, meta.yaml not saved); 130 interrupted, the instance in flight put back";

/// Where help lists the options every subcommand takes.
const GLOBAL: &str = "Global options";

/// The options every subcommand takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// TiUP's home directory (default: $TIUP_HOME, else ~/.tiup)
    #[arg(long, global = true, value_name = "DIR", help_heading = GLOBAL)]
    pub tiup_home: Option<PathBuf>,
    /// Output format: human-readable text (`default`, as TiUP names it), or one JSON document
    /// for scripts
    #[arg(long, global = true, value_enum, default_value_t = Format::Text, help_heading = GLOBAL)]
    pub format: Format,
    /// More detail on stderr: -v each remote command and DM API call with its answer and
    /// timing, -vv also SSH and HTTP details
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,
    /// Only errors and the final result
    #[arg(short, long, global = true, conflicts_with = "verbose", help_heading = GLOBAL)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Text for people (TiUP's `default`; `text` is accepted too)
    #[value(name = "default", alias = "text")]
    Text,
    /// One JSON document on stdout
    Json,
}

/// The environment variable with which TiUP turns on `--native-ssh` (localdata's
/// `EnvNameNativeSSHClient`).
pub const NATIVE_SSH_ENV: &str = "TIUP_NATIVE_SSH";

/// `TIUP_NATIVE_SSH`'s value when it asks for the system's ssh client, as TiUP reads it
/// (`true`, `1` or `enable`, any case).
pub fn native_ssh_from_env() -> bool {
    std::env::var(NATIVE_SSH_ENV)
        .is_ok_and(|value| ["true", "1", "enable"].contains(&value.to_lowercase().as_str()))
}

/// TiUP's jump host (`--ssh-proxy-*`): SSH connections and DM API calls all go through it.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Jump host (SSH proxy)")]
pub struct ProxyArgs {
    /// Reach the cluster through this jump host: every SSH connection and DM API call
    #[arg(long, value_name = "HOST")]
    pub ssh_proxy_host: Option<String>,
    /// The jump host's SSH port [default: 22]
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub ssh_proxy_port: Option<u16>,
    /// The user to log in to the jump host as [default: the current user]
    #[arg(long, value_name = "USER")]
    pub ssh_proxy_user: Option<String>,
    /// The private key to log in to the jump host with [default: ~/.ssh/id_rsa]
    #[arg(long, value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub ssh_proxy_identity_file: Option<PathBuf>,
    /// TiUP's password login to the jump host (refused: dm-patch logs in with a key)
    #[arg(long, hide = true)]
    pub ssh_proxy_use_password: bool,
    /// Timeout in seconds to log in to the jump host (1 to 3600) [default: 5]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ssh_proxy_timeout: Option<u64>,
}

impl ProxyArgs {
    /// Takes each value not given here from `other`.
    fn fill_from(&mut self, other: ProxyArgs) {
        self.ssh_proxy_host = self.ssh_proxy_host.take().or(other.ssh_proxy_host);
        self.ssh_proxy_port = self.ssh_proxy_port.or(other.ssh_proxy_port);
        self.ssh_proxy_user = self.ssh_proxy_user.take().or(other.ssh_proxy_user);
        self.ssh_proxy_identity_file =
            self.ssh_proxy_identity_file.take().or(other.ssh_proxy_identity_file);
        self.ssh_proxy_use_password |= other.ssh_proxy_use_password;
        self.ssh_proxy_timeout = self.ssh_proxy_timeout.or(other.ssh_proxy_timeout);
    }
}

/// The jump host flags before the subcommand, unlisted (see [`TiupArgs`]).
#[derive(Debug, Clone, Default, Args)]
pub struct LeadingProxyArgs {
    #[arg(long = "ssh-proxy-host", id = "leading_proxy_host", hide = true)]
    host: Option<String>,
    #[arg(long = "ssh-proxy-port", id = "leading_proxy_port", hide = true,
          value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    #[arg(long = "ssh-proxy-user", id = "leading_proxy_user", hide = true)]
    user: Option<String>,
    #[arg(long = "ssh-proxy-identity-file", id = "leading_proxy_identity", hide = true)]
    identity_file: Option<PathBuf>,
    #[arg(long = "ssh-proxy-use-password", id = "leading_proxy_password", hide = true)]
    use_password: bool,
    #[arg(long = "ssh-proxy-timeout", id = "leading_proxy_timeout", hide = true,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: Option<u64>,
}

impl LeadingProxyArgs {
    fn into_proxy(self) -> ProxyArgs {
        ProxyArgs {
            ssh_proxy_host: self.host,
            ssh_proxy_port: self.port,
            ssh_proxy_user: self.user,
            ssh_proxy_identity_file: self.identity_file,
            ssh_proxy_use_password: self.use_password,
            ssh_proxy_timeout: self.timeout,
        }
    }
}

/// TiUP's persistent flags where dm-patch accepts them without listing them: before the
/// subcommand (they then apply to `patch`), and on `display` (which makes no SSH connection and
/// waits for nothing, so they change nothing there, as in TiUP, except that an unknown executor
/// is refused).
#[derive(Debug, Clone, Default, Args)]
pub struct TiupArgs {
    #[arg(long, hide = true, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ssh_timeout: Option<u64>,
    #[arg(long, hide = true, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub wait_timeout: Option<u64>,
    #[arg(short, long, hide = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: Option<u16>,
    #[arg(long, hide = true, value_name = "POLICY", value_parser = host_key_policy_parser())]
    pub host_key_policy: Option<HostKeyPolicy>,
    #[arg(long, hide = true, value_name = "TYPE", value_parser = executor_parser())]
    pub ssh: Option<Executor>,
    #[arg(long, hide = true)]
    pub native_ssh: bool,
    #[arg(short, long, hide = true)]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replace the dm-master or dm-worker binary of running instances with a hotfix package
    Patch(PatchArgs),
    /// Show the cluster's instances with their live status and version
    Display(DisplayArgs),
    /// Put back what ran before the last patch of each instance (or the cluster's original
    /// binary), with the same care as `patch`
    Rollback(RollbackArgs),
    /// List the dm-patch runs against a cluster (newest first), or show one in full
    History(HistoryArgs),
    /// Print a shell completion script
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page, as roff for man(1)
    Man,
}

/// `-N` and `-R` of `patch`, as TiUP takes them: repeatable, and comma lists.
#[derive(Debug, Args)]
pub struct InstanceFilterArgs {
    /// Only these instances, by ID (host:port); repeat or separate with commas
    #[arg(short = 'N', long = "node", value_name = "ID", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Only these roles; repeat or separate with commas
    #[arg(short = 'R', long = "role", value_name = "ROLE", value_delimiter = ',',
          value_parser = RoleParser(&["dm-master", "dm-worker"]))]
    pub roles: Vec<String>,
}

/// How `patch` reaches and waits for the hosts.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Timeout in seconds for SSH connections and for HTTP calls to DM (1 to 3600)
    #[arg(long, value_name = "SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ssh_timeout: u64,
    /// Timeout in seconds for an instance to stop, start, or become healthy (1 to 86400)
    #[arg(long, value_name = "SECS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub wait_timeout: u64,
    /// Hosts worked on in parallel (connections, uploads, checks); the roll itself is always one
    /// instance at a time
    #[arg(short, long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// How to treat SSH host keys, checked against the cluster's ssh/known_hosts
    #[arg(long, value_name = "POLICY", default_value = "accept-new",
          value_parser = host_key_policy_parser())]
    pub host_key_policy: HostKeyPolicy,
    /// How to reach the hosts, as TiUP's --ssh: dm-patch's own SSH client, the system's ssh
    /// (~/.ssh/config, agent, one shared connection per host), or none (the hosts are this
    /// machine) [default: the cluster's global.ssh_type, else builtin]
    #[arg(long, value_name = "TYPE", value_parser = executor_parser())]
    pub ssh: Option<Executor>,
    /// TiUP's older spelling of --ssh system
    #[arg(long, hide = true)]
    pub native_ssh: bool,
    #[command(flatten)]
    pub proxy: ProxyArgs,
}

#[derive(Debug, Args)]
pub struct PatchArgs {
    /// Name of the cluster in the TiUP store
    #[arg(add = ArgValueCandidates::new(crate::commands::completions::cluster_names))]
    pub cluster: String,
    /// The hotfix package: a .tar.gz holding <component>/<component>
    #[arg(value_hint = clap::ValueHint::FilePath)]
    pub package: PathBuf,
    #[command(flatten)]
    pub filter: InstanceFilterArgs,
    /// Keep the package as the cluster's permanent patch (patch/<comp>.tar.gz), so TiUP's later
    /// scale-out and upgrade reuse it
    #[arg(long)]
    pub overwrite: bool,
    /// The cluster is stopped: only replace binaries; no restart, no DM API calls. Instances
    /// that are running keep their old binary until their next restart
    #[arg(long)]
    pub offline: bool,
    /// Accept a package whose binary reports another release line (major.minor) than the
    /// cluster's dm_version; a hotfix normally stays on its release line
    #[arg(long)]
    pub allow_version_change: bool,
    #[command(flatten)]
    pub change: ChangeArgs,
    #[command(flatten)]
    pub proving: ProvingArgs,
    /// The package's sha256 as its provider gave it (support sends one with a hotfix): a
    /// package whose sum differs is refused before any host is contacted
    #[arg(long, value_name = "HEX", value_parser = sha256_hex)]
    pub expect_sha256: Option<String>,
    /// Check everything and print the plan; connect to no host, change nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct DisplayArgs {
    /// Name of the cluster in the TiUP store
    #[arg(add = ArgValueCandidates::new(crate::commands::completions::cluster_names))]
    pub cluster: String,
    #[command(flatten)]
    pub filter: DisplayFilterArgs,
    /// Add a Since column: how long each instance has been running
    #[arg(long)]
    pub uptime: bool,
    /// Print only the cluster's version
    #[arg(long = "version", id = "version_only")]
    pub version_only: bool,
    /// Add a Rollback To column: the version `dm-patch rollback` would put back on each patched
    /// instance
    #[arg(long)]
    pub rollback_info: bool,
    /// Timeout in seconds for each status query (1 to 3600)
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub status_timeout: u64,
    #[command(flatten)]
    pub proxy: ProxyArgs,
    #[command(flatten)]
    pub tiup: TiupArgs,
}

/// What `patch` and `rollback` share about making a change.
#[derive(Debug, Clone, Args)]
pub struct ChangeArgs {
    /// Go ahead even when a migration task is already paused: it is named, and left as it is
    /// (by default the run stops before changing anything)
    #[arg(long)]
    pub force: bool,
    /// How many rollback points (what each run replaced) to keep per instance, for
    /// `dm-patch rollback`; older ones are removed
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(0..=100))]
    pub keep_rollbacks: u16,
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub yes: bool,
    /// How the package travels to the hosts: tar (the host only writes it), gzip (fewer bytes,
    /// the host inflates them: for hosts behind a slow link), or auto: tar for dm-worker (DM
    /// recommends 10 Gigabit NICs for them), gzip for dm-master when it saves a tenth
    #[arg(long, value_enum, value_name = "FORM", default_value_t = WireArg::Auto)]
    pub wire: WireArg,
}

/// `--wire`: the package's form on the wire, or the default for its component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum WireArg {
    #[default]
    Auto,
    Tar,
    Gzip,
}

impl WireArg {
    /// The form asked for; `None`: the package's default.
    pub fn chosen(self) -> Option<crate::package::Wire> {
        match self {
            WireArg::Auto => None,
            WireArg::Tar => Some(crate::package::Wire::Tar),
            WireArg::Gzip => Some(crate::package::Wire::Gzip),
        }
    }
}

/// Proving a build under real traffic before the whole cluster runs it.
#[derive(Debug, Clone, Default, Args)]
pub struct ProvingArgs {
    /// Patch the first N instances of the roll, watch them for --soak, then go on. A dm-worker
    /// proves nothing without subtasks: the canary phase goes on until N workers on the package
    /// run a source (with a free worker, that is the free one and the worker whose source moves
    /// onto it); the plan says which instances it touches
    #[arg(long, value_name = "N", requires = "soak", conflicts_with = "offline",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub canary: Option<u16>,
    /// How long to watch before going on (e.g. 30s, 10m): after the canaries with --canary,
    /// else after each instance. They must stay healthy and not restart, and every migration
    /// subtask must keep running and replicating; a failure puts the canaries back
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          conflicts_with = "offline")]
    pub soak: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Name of the cluster in the TiUP store
    #[arg(add = ArgValueCandidates::new(crate::commands::completions::cluster_names))]
    pub cluster: String,
    #[command(flatten)]
    pub filter: InstanceFilterArgs,
    /// Go back to the cluster's original binary (TiUP's bin.old.<cluster version>) instead of
    /// what ran before the last patch; the instances are then no longer marked patched
    #[arg(long)]
    pub to_original: bool,
    /// The cluster is stopped: only put the binaries back; no restart, no DM API calls
    #[arg(long)]
    pub offline: bool,
    #[command(flatten)]
    pub change: ChangeArgs,
    /// Print what each instance would go back to; change nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Name of the cluster in the TiUP store
    #[arg(add = ArgValueCandidates::new(crate::commands::completions::cluster_names))]
    pub cluster: String,
    /// Show this run in full (its ID as the list shows it)
    pub run_id: Option<String>,
    /// Only the newest N runs
    #[arg(short = 'n', long = "limit", value_name = "N")]
    pub limit: Option<usize>,
}

/// `-N` and `-R` of `display`: any role of the topology, monitoring included.
#[derive(Debug, Args)]
pub struct DisplayFilterArgs {
    /// Only these instances, by ID (host:port); repeat or separate with commas
    #[arg(short = 'N', long = "node", value_name = "ID", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Only these roles; repeat or separate with commas
    #[arg(short = 'R', long = "role", value_name = "ROLE", value_delimiter = ',',
          value_parser = RoleParser(&["dm-master", "dm-worker", "prometheus", "grafana", "alertmanager"]))]
    pub roles: Vec<String>,
}

/// A sha256 in hex (64 digits, either case), kept in lower case as dm-patch prints them.
fn sha256_hex(text: &str) -> Result<String, String> {
    let hex = text.trim();
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err("a sha256 is 64 hex digits (as `sha256sum` prints it)".to_owned())
    }
}

/// Whether `args` ask for `--format json` (`--format json` or `--format=json`), read without
/// clap: for the error of a command line clap refused.
fn asks_for_json(args: impl IntoIterator<Item = String>) -> bool {
    let mut previous = String::new();
    args.into_iter().any(|arg| {
        let json = arg == "--format=json" || (previous == "--format" && arg == "json");
        previous = arg;
        json
    })
}

/// `builtin`, `system` or `none`, listed in help and completions.
fn executor_parser() -> impl TypedValueParser<Value = Executor> {
    PossibleValuesParser::new(Executor::NAMES)
        .map(|name| name.parse::<Executor>().expect("every listed name parses"))
}

/// `strict`, `accept-new` or `off`, listed in help and completions.
fn host_key_policy_parser() -> impl TypedValueParser<Value = HostKeyPolicy> {
    PossibleValuesParser::new(HostKeyPolicy::NAMES)
        .map(|name| name.parse::<HostKeyPolicy>().expect("every listed name parses"))
}

/// A role name: any string is taken (the commands refuse unknown roles with TiUP's messages),
/// but the known roles are listed in help and offered by shell completion.
#[derive(Debug, Clone, Copy)]
struct RoleParser(&'static [&'static str]);

impl TypedValueParser for RoleParser {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        StringValueParser::new().parse_ref(cmd, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(self.0.iter().copied().map(PossibleValue::new)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_args(std::iter::once("dm-patch").chain(args.iter().copied())).unwrap()
    }

    fn patch(cli: Cli) -> PatchArgs {
        match cli.command {
            Command::Patch(args) => args,
            other => panic!("not patch: {other:?}"),
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn tiup_flags_before_the_subcommand_apply_to_patch() {
        let args = patch(parse(&[
            "--yes",
            "-c",
            "3",
            "--wait-timeout",
            "9",
            "--ssh-timeout",
            "7",
            "patch",
            "c",
            "p",
            "-R",
            "dm-worker",
        ]));
        assert!(args.change.yes);
        assert_eq!(args.connection.concurrency, 3);
        assert_eq!(args.connection.wait_timeout, 9);
        assert_eq!(args.connection.ssh_timeout, 7);
    }

    #[test]
    fn the_subcommand_s_own_flag_wins() {
        let args =
            patch(parse(&["--wait-timeout", "9", "patch", "c", "p", "--wait-timeout", "120"]));
        assert_eq!(args.connection.wait_timeout, 120);
        let args = patch(parse(&["patch", "c", "p"]));
        assert_eq!(args.connection.wait_timeout, 120);
        assert_eq!(args.connection.host_key_policy, HostKeyPolicy::AcceptNew);
        assert_eq!(args.connection.ssh, None);
        assert!(!args.change.yes);
    }

    #[test]
    fn tiup_formats_and_executors_parse() {
        let cli = parse(&["display", "c", "--format", "default"]);
        assert_eq!(cli.global.format, Format::Text);
        let cli = parse(&["--format", "text", "display", "c"]);
        assert_eq!(cli.global.format, Format::Text);
        let args = patch(parse(&["--native-ssh", "patch", "c", "p"]));
        assert!(args.connection.native_ssh);
        let args = patch(parse(&["--ssh", "system", "patch", "c", "p"]));
        assert_eq!(args.connection.ssh, Some(Executor::System));
        let args = patch(parse(&["patch", "c", "p", "--ssh", "none"]));
        assert_eq!(args.connection.ssh, Some(Executor::None));
    }

    #[test]
    fn jump_host_flags_parse_before_and_after_the_subcommand() {
        let args = patch(parse(&[
            "--ssh-proxy-host",
            "127.0.9.1",
            "--ssh-proxy-port",
            "2222",
            "patch",
            "c",
            "p",
            "--ssh-proxy-port",
            "22",
            "--ssh-proxy-user",
            "ops",
        ]));
        let proxy = args.connection.proxy;
        assert_eq!(proxy.ssh_proxy_host.as_deref(), Some("127.0.9.1"));
        assert_eq!(proxy.ssh_proxy_port, Some(22));
        assert_eq!(proxy.ssh_proxy_user.as_deref(), Some("ops"));
        let cli = parse(&["--ssh-proxy-timeout", "9", "display", "c"]);
        match cli.command {
            Command::Display(args) => assert_eq!(args.proxy.ssh_proxy_timeout, Some(9)),
            other => panic!("not display: {other:?}"),
        }
    }

    #[test]
    fn display_takes_tiup_s_persistent_flags_unlisted() {
        let cli = parse(&["display", "c", "-y", "-c", "2", "--wait-timeout", "3", "--uptime"]);
        match cli.command {
            Command::Display(args) => {
                assert!(args.uptime && args.tiup.yes);
                assert_eq!(args.status_timeout, 10);
            }
            other => panic!("not display: {other:?}"),
        }
    }

    #[test]
    fn unknown_roles_are_left_to_the_commands() {
        let args = patch(parse(&["patch", "c", "p", "-R", "tikv,dm-worker"]));
        assert_eq!(args.filter.roles, ["tikv", "dm-worker"]);
    }
}
