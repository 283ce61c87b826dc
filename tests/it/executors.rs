//! TiUP's executors and jump host, through real sshd: the system's ssh client (chosen by the
//! cluster's `global.ssh_type`), `--ssh none` on this machine, and `--ssh-proxy-*` from a
//! network namespace where the jump host is the only way to the cluster.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use dm_sandbox::{JumpHost, Sandbox};

use crate::cluster::Cluster;
use crate::support::Run;

/// `Accepted publickey` lines in the sshd log of `ip`: one per SSH login.
fn logins(cluster: &Cluster, ip: &str) -> usize {
    let log = cluster.sandbox.host_dir(ip).join("sshd/sshd.log");
    fs::read_to_string(log).unwrap_or_default().matches("Accepted publickey").count()
}

/// The command lines of the running processes that mention `text`.
fn processes_mentioning(text: &str) -> Vec<String> {
    let entries = fs::read_dir("/proc").unwrap().filter_map(Result::ok);
    let lines = entries.filter_map(|entry| fs::read(entry.path().join("cmdline")).ok());
    let lines = lines.map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "));
    lines.filter(|line| line.contains(text)).collect()
}

/// An `ssh` that notes each of its command lines in `log`, then is the real one.
fn recording_ssh(dir: &Path, log: &Path) -> std::path::PathBuf {
    let wrapper = dir.join("ssh");
    let script = format!("#!/bin/sh\necho \"$*\" >> '{}'\nexec ssh \"$@\"\n", log.display());
    fs::write(&wrapper, script).unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

#[test]
fn the_clusters_ssh_type_system_patches_over_one_shared_connection_per_host() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(2));
    let meta = cluster.cluster_dir().join("meta.yaml");
    let text = fs::read_to_string(&meta).unwrap();
    fs::write(&meta, text.replace("ssh_type: builtin", "ssh_type: system")).unwrap();
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let scratch = tempfile::tempdir().unwrap();
    let calls = scratch.path().join("ssh-calls");
    let ssh = recording_ssh(scratch.path(), &calls);
    let hosts = cluster.sandbox.hosts();
    let before: Vec<usize> = hosts.iter().map(|ip| logins(&cluster, ip)).collect();

    let mut command = cluster.dm_patch();
    command.args(["patch", cluster.sandbox.cluster_name(), &pkg, "-R", "dm-worker"]);
    let run = Run::of(command.args(["--yes", "--format", "json"]).env("TIUP_SSH_PATH", &ssh));

    let run = run.success();
    assert_eq!(run.outcome_names(), ["patched"; 2]);
    for id in cluster.ids("dm-worker") {
        assert_eq!(cluster.version(&id).as_deref(), Some("v8.5.2"), "{id}");
    }
    let calls = fs::read_to_string(&calls).unwrap();
    let masters =
        calls.lines().filter(|line| line.starts_with("-S ") && line.contains(" -M ")).count();
    assert_eq!(masters, 2, "one master connection per host:\n{calls}");
    assert!(calls.lines().any(|line| line.contains("ControlMaster=no")), "{calls}");
    for (ip, before) in hosts.iter().zip(before) {
        assert_eq!(logins(&cluster, ip), before + 1, "{ip}: one SSH login for the whole run");
    }
    // The master connections and their sockets are gone with the run.
    let socket = calls.split_whitespace().nth(1).unwrap();
    let control_dir = Path::new(socket).parent().unwrap();
    assert!(!control_dir.exists(), "{control_dir:?} is left");
    let leftover = processes_mentioning(&control_dir.display().to_string());
    assert!(leftover.is_empty(), "{leftover:?}");
}

/// With the system's ssh too, a host's connection lost mid-roll does not stop the roll.
#[test]
fn the_system_client_goes_on_after_a_lost_connection() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(2).sources(1));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let workers = cluster.ids("dm-worker");
    let second_host = workers[1].split(':').next().unwrap().to_owned();
    let before = logins(&cluster, &second_host);

    let args = ["-R", "dm-worker", "--ssh", "system"];
    let run = cluster.patch_when(&pkg, &args, ": waiting until healthy", |_| {
        cluster.sandbox.drop_ssh_connections(&second_host);
    });

    assert_eq!(run.success().outcome_names(), ["patched", "patched"]);
    for id in &workers {
        assert_eq!(cluster.version(id).as_deref(), Some("v8.5.2"), "{id}");
    }
    // Its master connection was lost: ssh connected on its own for what came after.
    assert!(logins(&cluster, &second_host) > before + 1, "the connection was not lost");
}

#[test]
fn ssh_none_patches_a_cluster_whose_host_is_this_machine_without_ssh() {
    let cluster = Cluster::start(Sandbox::builder().hosts(1).masters(1).workers(1));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let ip = cluster.sandbox.hosts()[0].clone();
    let before = logins(&cluster, &ip);
    // What the host's sshd gives its sessions, given to dm-patch's own commands instead.
    let path = format!(
        "{}:{}",
        cluster.sandbox.stand_in_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut command = cluster.dm_patch();
    command.env("PATH", path).env("DM_SANDBOX_HOST_DIR", cluster.sandbox.host_dir(&ip));
    let run = Run::of(command.args([
        "patch",
        cluster.sandbox.cluster_name(),
        &pkg,
        "-R",
        "dm-worker",
        "--ssh",
        "none",
        "--yes",
        "--format",
        "json",
    ]));

    assert_eq!(run.success().outcome_names(), ["patched"]);
    let worker = &cluster.ids("dm-worker")[0];
    assert_eq!(cluster.version(worker).as_deref(), Some("v8.5.2"));
    assert_eq!(logins(&cluster, &ip), before, "no SSH login");
}

#[test]
fn a_jump_host_carries_ssh_and_the_dm_api_to_a_cluster_reachable_only_through_it() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(1));
    let jump = JumpHost::start(&cluster.sandbox).expect("the jump host starts");
    let jump_key = jump.key().display().to_string();
    let proxy = [
        "--ssh-proxy-host",
        jump.ip(),
        "--ssh-proxy-port",
        "2222",
        "--ssh-proxy-user",
        "root",
        "--ssh-proxy-identity-file",
        &jump_key,
    ];
    let isolated = |args: &[&str]| {
        let mut command = cluster.dm_patch();
        command.args(args);
        jump.isolate(&mut command);
        Run::of(&mut command)
    };
    let name = cluster.sandbox.cluster_name();
    let v852 = cluster.package("dm-worker", "v8.5.2", &[]);
    let patch = |package: &str, extra: &[&str]| {
        let mut args = vec!["patch", name, package, "-R", "dm-worker", "--yes", "--format", "json"];
        args.extend(extra);
        isolated(&args)
    };

    // From there, the cluster cannot be reached directly.
    let direct = patch(&v852, &[]).code(1);
    assert!(direct.stderr.contains("cannot connect to"), "{}", direct.stderr);

    // The jump host's key is checked like every host's: unknown to a strict policy, refused.
    let strict = patch(&v852, &[&proxy[..], &["--host-key-policy", "strict"]].concat()).code(1);
    assert!(strict.stderr.contains(&format!("host key of {}", jump.ip())), "{}", strict.stderr);

    let worker = &cluster.ids("dm-worker")[0];
    let run = patch(&v852, &proxy).success();
    assert_eq!(run.outcome_names(), ["patched"]);
    assert_eq!(cluster.version(worker).as_deref(), Some("v8.5.2"));
    let known_hosts = fs::read_to_string(cluster.cluster_dir().join("ssh/known_hosts")).unwrap();
    assert!(known_hosts.contains(&format!("[{}]:2222 ", jump.ip())), "{known_hosts}");
    assert_eq!(jump.logins(), 1, "one login to the jump host for SSH and the DM API");

    // The system's ssh client goes through it too (TiUP's ProxyCommand).
    let v853 = cluster.package("dm-worker", "v8.5.3", &[]);
    patch(&v853, &[&proxy[..], &["--ssh", "system"]].concat()).success();
    assert_eq!(cluster.version(worker).as_deref(), Some("v8.5.3"));

    // display asks the DM API through it.
    let display = isolated(&[&["display", name, "--format", "json"], &proxy[..]].concat());
    let json = display.success().json();
    let statuses: Vec<&str> = json["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|instance| instance["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.len(), 2, "{json}");
    assert!(statuses.iter().all(|s| !s.contains("Down") && !s.contains("N/A")), "{json}");
}

/// A run killed with `--ssh system` leaves its master connections running and their sockets'
/// dir in the temp dir; the next run ends those masters and removes the dir.
#[test]
fn the_next_run_reaps_what_a_killed_system_client_left() {
    let cluster = Cluster::start(Sandbox::builder().hosts(2).masters(1).workers(2).sources(1));
    let pkg = cluster.package("dm-worker", "v8.5.2", &[]);
    let args = ["-R", "dm-worker", "--ssh", "system"];
    let mut killed = None;
    let run = cluster.patch_when(&pkg, &args, ": waiting until healthy", |pid| {
        let kill = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        assert!(kill.unwrap().success());
        killed = Some(pid);
    });
    assert_eq!(run.code, None, "killed: {run:?}");
    let prefix = format!("dm-patch-ssh-{}-", killed.unwrap());
    let temp = std::env::temp_dir();
    let left: Vec<_> = fs::read_dir(&temp)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .map(|entry| entry.path())
        .collect();
    assert_eq!(left.len(), 1, "the killed run's control dir: {left:?}");
    let control_dir = left[0].display().to_string();
    assert!(!processes_mentioning(&control_dir).is_empty(), "its masters outlive it");

    cluster.patch(&pkg, &args).success();

    assert!(!left[0].exists(), "{control_dir} is left");
    let leftover = processes_mentioning(&control_dir);
    assert!(leftover.is_empty(), "{leftover:?}");
}
