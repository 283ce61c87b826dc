//! Uploads one file with dm-patch's SSH layer and prints the throughput: the dm-patch side of
//! `scripts/bench-upload`.
//!
//! cargo run --release --example upload -- --host 127.0.0.1 --port 22 --user root \
//!     --key ~/.ssh/id_rsa ./package.tar.gz /tmp/package.tar.gz

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use dm_patch::ssh::{HostKeyPolicy, HostSession, Privilege, SshTarget};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    host: String,
    #[arg(long, default_value_t = 22)]
    port: u16,
    #[arg(long, default_value = "root")]
    user: String,
    /// Private key to log in with
    #[arg(long)]
    key: PathBuf,
    /// known_hosts file; without it host keys are not checked
    #[arg(long)]
    known_hosts: Option<PathBuf>,
    local: PathBuf,
    remote: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let target = SshTarget {
        addr: args.host,
        port: args.port,
        user: args.user,
        key_path: args.key,
        host_key_policy: match args.known_hosts {
            Some(_) => HostKeyPolicy::AcceptNew,
            None => HostKeyPolicy::Off,
        },
        known_hosts: args.known_hosts.unwrap_or_default(),
        connect_timeout: Duration::from_secs(10),
        privilege: Privilege::Root,
    };
    let size = match std::fs::metadata(&args.local) {
        Ok(metadata) => metadata.len(),
        Err(err) => {
            eprintln!("error: cannot read {}: {err}", args.local.display());
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let uploaded = async {
        let session = HostSession::connect(&target).await?;
        session.upload(&args.local, &args.remote, |_| {}).await?;
        session.close().await;
        Ok::<_, dm_patch::ssh::SshError>(())
    };
    if let Err(err) = uploaded.await {
        eprintln!("error: {err}");
        return ExitCode::FAILURE;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{size} bytes in {seconds:.3} s: {:.1} MiB/s",
        size as f64 / seconds / (1024.0 * 1024.0)
    );
    ExitCode::SUCCESS
}
