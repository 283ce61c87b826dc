//! A run over many hosts holds SSH connections only for the hosts it is working on, through
//! real sshd: past `KEEP_OPEN_UP_TO` hosts, at most `--concurrency` are open at once.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use dm_sandbox::Sandbox;

use crate::hosts::{deploy_worker, run_offline_with, worker_hotfix, workers_on};
use crate::support::Store;

/// The TCP connections open now whose far end is one of `hosts` (dm-patch's side of each SSH
/// connection to them: sshd's side has the client's address at its far end), by their own
/// address.
fn open_to(hosts: &HashSet<Ipv4Addr>) -> HashSet<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // `sl local remote state ...`; addresses are little-endian hex `IP:PORT`.
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, state) = (*fields.get(1)?, *fields.get(2)?, *fields.get(3)?);
            let ip = u32::from_str_radix(remote.split(':').next()?, 16).ok()?;
            let to_a_host = hosts.contains(&Ipv4Addr::from(ip.to_le_bytes()));
            (state == "01" && to_a_host).then(|| local.to_owned())
        })
        .collect()
}

/// The most connections to `hosts` seen open at once while `work` runs, looked at every few
/// milliseconds. The kernel lists sockets while they change (one closing early in a listing
/// and the next opening late in it would both show), so a connection counts only when two
/// listings in a row show it: one that is really open lasts a login and a command, far longer.
fn peak_connections<T>(hosts: &HashSet<Ipv4Addr>, work: impl FnOnce() -> T) -> (T, usize) {
    let (done, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let watcher = {
        let (done, peak, hosts) = (done.clone(), peak.clone(), hosts.clone());
        std::thread::spawn(move || {
            let mut before = HashSet::new();
            while !done.load(Ordering::Relaxed) {
                let now = open_to(&hosts);
                peak.fetch_max(now.intersection(&before).count(), Ordering::Relaxed);
                before = now;
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let result = work();
    done.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    (result, peak.load(Ordering::Relaxed))
}

/// 34 hosts, `-c 2`: every host is checked, staged and swapped, yet never more than 2 hold a
/// connection at once (each one logs in for its part of a phase, and lets go after it), with
/// dm-patch's own client and with the system's (its master connections). Logged in as a deploy
/// user with sudo, as on a TiUP host.
#[test]
fn a_run_over_many_hosts_holds_connections_only_for_the_hosts_at_work() {
    let builder = Sandbox::builder().hosts(34).masters(0).workers(0).ssh_user("tidb");
    let (sandbox, deploys) = workers_on(builder, deploy_worker);
    let hosts: HashSet<Ipv4Addr> = sandbox.hosts().iter().map(|h| h.parse().unwrap()).collect();
    let packages = Store::new();

    for (client, version) in [("builtin", "v8.5.2"), ("system", "v8.5.3")] {
        let package = worker_hotfix(&packages, version);
        let args = ["-c", "2", "--ssh", client];
        let (run, peak) = peak_connections(&hosts, || run_offline_with(&sandbox, &package, &args));
        let report = run.code(0).json();
        let instances = report["instances"].as_array().unwrap();
        assert_eq!(instances.len(), 34, "--ssh {client}");
        assert!(instances.iter().all(|i| i["outcome"] == "patched"), "--ssh {client}: {report}");
        for deploy in &deploys {
            let binary = std::fs::read_to_string(deploy.join("bin/dm-worker/dm-worker")).unwrap();
            assert!(binary.contains(version), "--ssh {client}: {}: {binary}", deploy.display());
        }
        assert!(peak >= 1, "--ssh {client}: no connection was seen: the watch is blind");
        // A host lets its connection go, closed, before the next host may open one.
        assert!(peak <= 2, "--ssh {client}: {peak} connections were open at once, with -c 2");
    }
}
