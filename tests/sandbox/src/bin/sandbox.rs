//! `sandbox`: bring a sandbox DM cluster up, build hotfix packages for it, look at it, and
//! take it down again. `up` prints `export` lines, so `eval "$(sandbox up)"` sets TIUP_HOME.
//! `cleanup` removes what a crashed run left on the machine.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use dm_sandbox::machine::STATE_DIR;
use dm_sandbox::package::{package_file_name, write_package};
use dm_sandbox::state::SandboxState;
use dm_sandbox::units::ServiceManager;
use dm_sandbox::{Fault, SSH_PORT, Sandbox};

#[derive(Parser)]
#[command(about = "A DM cluster on real OpenSSH hosts (loopback), for trying dm-patch")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start hosts, write the TiUP store, deploy and start the cluster; leave it running.
    Up {
        /// Directory for the sandbox (created, must be empty); default: a new one under /tmp.
        #[arg(long)]
        root: Option<PathBuf>,
        /// Cluster name in the TiUP store.
        #[arg(long, default_value = "dm-sandbox")]
        name: String,
        #[arg(long, default_value_t = 5)]
        hosts: usize,
        #[arg(long, default_value_t = 3)]
        masters: usize,
        #[arg(long, default_value_t = 3)]
        workers: usize,
        #[arg(long, default_value_t = 2)]
        sources: usize,
        /// Migration tasks (task-1, ...), each over every source
        #[arg(long, default_value_t = 0)]
        tasks: usize,
        /// DM version the cluster is deployed with.
        #[arg(long, default_value = "v8.5.1")]
        version: String,
        /// User SSH logs in as: root, or a deploy user set up with passwordless sudo.
        #[arg(long, default_value = "root")]
        ssh_user: String,
        /// Deploy with `global.enable_tls`: every instance serves HTTPS and wants a client
        /// certificate of the cluster's CA (the store's tls/client.crt and client.pem).
        #[arg(long)]
        tls: bool,
    },
    /// Build a hotfix package (TiUP's format) whose binary runs the simulator.
    Package {
        #[arg(long)]
        root: PathBuf,
        /// dm-master or dm-worker.
        component: String,
        /// Release Version the packaged binary reports.
        #[arg(long)]
        version: String,
        /// A simulator fault: exit-at-start, never-healthy, wrong-version, ignore-evict.
        #[arg(long = "fault", value_parser = parse_fault)]
        faults: Vec<Fault>,
        /// Output file; default: <root>/packages/<component>-<version>[-<faults>].tar.gz.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Show hosts and instances, and whether each runs.
    Status {
        #[arg(long)]
        root: PathBuf,
    },
    /// Stop what `up` started (by recorded pid) and remove the sandbox.
    Down {
        #[arg(long)]
        root: PathBuf,
        /// Keep the sandbox's directory (logs, store) after stopping everything.
        #[arg(long)]
        keep: bool,
    },
    /// After a crashed run: stop and remove sandboxes whose owner is gone, then remove the
    /// machine-wide state (/run/dm-sandbox, sudoers drop-ins, users the test bed created)
    /// that no live sandbox uses.
    Cleanup,
}

fn parse_fault(name: &str) -> Result<Fault, String> {
    name.parse().map_err(|err: dm_sandbox::fault::UnknownFault| err.to_string())
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sandbox: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Up {
            root,
            name,
            hosts,
            masters,
            workers,
            sources,
            tasks,
            version,
            ssh_user,
            tls,
        } => {
            let mut builder = Sandbox::builder()
                .cluster_name(&name)
                .hosts(hosts)
                .masters(masters)
                .workers(workers)
                .sources(sources)
                .tasks(tasks)
                .version(&version)
                .ssh_user(&ssh_user)
                .tls(tls);
            if let Some(root) = root {
                builder = builder.root(root);
            }
            let started = Instant::now();
            let sandbox = builder.start()?;
            println!(
                "# dm-sandbox is up in {:.1?}: cluster {name} ({version}{}), ssh user {ssh_user}, sshd on port {SSH_PORT}",
                started.elapsed(),
                if tls { ", TLS" } else { "" }
            );
            for instance in sandbox.instances() {
                println!("#   {:<22} {:<9} {}", instance.id, instance.role, instance.deploy_dir);
            }
            let root = sandbox.detach()?;
            println!("export DM_SANDBOX_ROOT={}", root.display());
            println!("export TIUP_HOME={}", root.join("tiup").display());
            println!("export DM_SANDBOX_CLUSTER={name}");
            Ok(())
        }
        Command::Package { root, component, version, faults, output } => {
            let output = match output {
                Some(path) => path,
                None => {
                    let dir = root.join("packages");
                    std::fs::create_dir_all(&dir)?;
                    dir.join(package_file_name(&component, &version, &faults))
                }
            };
            let dm_sim = root.join("bin/dm-sim");
            if !dm_sim.is_file() {
                anyhow::bail!("{} is not a sandbox root (no bin/dm-sim)", root.display());
            }
            write_package(&output, &component, &version, &faults, &dm_sim)?;
            println!("{}", output.display());
            Ok(())
        }
        Command::Status { root } => status(&root),
        Command::Cleanup => cleanup(),
        Command::Down { root, keep } => {
            let sandbox = Sandbox::open(&root)?;
            if keep { sandbox.down_keeping_files() } else { sandbox.down() }
        }
    }
}

fn cleanup() -> Result<()> {
    let sweep = dm_sandbox::machine::cleanup()?;
    for line in &sweep.removed {
        println!("{line}");
    }
    for line in &sweep.kept {
        println!("kept {line}");
    }
    if sweep.removed.is_empty() && sweep.kept.is_empty() && sweep.problems.is_empty() {
        println!("nothing to clean up: {STATE_DIR} and the sudoers drop-ins are gone");
    }
    if !sweep.problems.is_empty() {
        anyhow::bail!("cleanup left things behind: {}", sweep.problems.join("; "));
    }
    Ok(())
}

fn status(root: &Path) -> Result<()> {
    let state = SandboxState::load(root).context("reading the sandbox state")?;
    println!(
        "cluster {} ({}{}), ssh user {}, TIUP_HOME={}",
        state.cluster_name,
        state.version,
        if state.tls { ", TLS" } else { "" },
        state.ssh_user,
        root.join("tiup").display()
    );
    for host in &state.hosts {
        let sshd = match host.sshd {
            Some(record) if record.is_running() => format!("sshd up (pid {})", record.pid),
            _ => "sshd down".to_owned(),
        };
        println!("host {:<16} {sshd}", host.ip);
    }
    for instance in &state.instances {
        let manager = ServiceManager::for_host(&root.join("hosts").join(&instance.host), false);
        let unit_state = manager.state(&instance.unit);
        let pid = manager
            .running(&instance.unit)
            .map(|r| format!(" (pid {})", r.pid))
            .unwrap_or_default();
        println!("{:<22} {:<9} {}{pid}", instance.id, instance.role, unit_state.as_str());
    }
    Ok(())
}
