//! The test bed itself, through real sshd: hosts, the systemctl stand-in, the store, and the
//! simulated cluster's leadership and source scheduling.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use dm_sandbox::process::ProcessRecord;
use dm_sandbox::units::ServiceManager;
use dm_sandbox::{Sandbox, SandboxBuilder};

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn hosts_only(hosts: usize) -> SandboxBuilder {
    Sandbox::builder().hosts(hosts).masters(0).workers(0).sources(0)
}

/// Every sshd the sandbox started, by pid and start time, read from its state file.
/// 3 hosts, 3 masters, 1 worker bound to 1 source.
fn three_masters() -> Sandbox {
    let builder = Sandbox::builder().hosts(3).masters(3).workers(1).sources(1);
    builder.start().expect("the cluster comes up")
}

fn sshd_records(sandbox: &Sandbox) -> Vec<ProcessRecord> {
    let state = dm_sandbox::state::SandboxState::load(sandbox.root()).expect("sandbox.json");
    state.hosts.iter().filter_map(|h| h.sshd).collect()
}

#[test]
fn hosts_run_commands_over_ssh_with_the_stand_in_first_on_path() {
    let sandbox = hosts_only(3).start().expect("hosts come up");
    let stand_in_dir = sandbox.root().join("bin/path");
    for ip in sandbox.hosts() {
        let output =
            sandbox.ssh(&ip, "echo $PATH; command -v systemctl; echo $DM_SANDBOX_HOST_DIR");
        assert!(output.status.success(), "{ip}: {output:?}");
        let text = stdout(&output);
        let lines: Vec<&str> = text.lines().collect();
        let first_on_path = lines[0].split(':').next().unwrap();
        assert_eq!(first_on_path, stand_in_dir.to_str().unwrap(), "{ip}");
        assert_eq!(lines[1], stand_in_dir.join("systemctl").to_str().unwrap());
        assert_eq!(lines[2], sandbox.host_dir(&ip).to_str().unwrap());
    }
}

#[test]
fn hosts_only_mode_writes_a_store_with_empty_server_lists() {
    let sandbox = hosts_only(2).start().expect("hosts come up");
    let meta = sandbox.meta_yaml();
    assert!(meta.contains("    master_servers: []\n    worker_servers: []\n"), "{meta}");
    assert!(meta.contains("        ssh_port: 2222\n"), "{meta}");
    let key = sandbox.ssh_key();
    assert_eq!(key, sandbox.tiup_home().join("storage/dm/clusters/dm-sandbox/ssh/id_rsa"));
    let pem = fs::read_to_string(key).unwrap();
    assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "TiUP's PKCS#1 format");
    assert!(key.with_extension("pub").is_file());
    assert!(sandbox.instances().is_empty());
}

#[test]
fn teardown_stops_every_sshd_and_releases_the_subnet() {
    let sandbox = hosts_only(2).start().expect("hosts come up");
    let root = sandbox.root().to_path_buf();
    let sshds = sshd_records(&sandbox);
    assert_eq!(sshds.len(), 2);
    assert!(sshds.iter().all(ProcessRecord::is_running));
    let subnet = sandbox.hosts()[0].rsplit_once('.').unwrap().0.to_owned();
    drop(sandbox);
    for sshd in &sshds {
        assert!(!sshd.is_running(), "sshd {} is still running", sshd.pid);
    }
    assert!(!root.exists(), "the sandbox directory is removed");
    assert!(!std::path::Path::new(dm_sandbox::claim::CLAIMS_DIR).join(subnet).exists());
}

#[test]
fn a_stopped_host_refuses_ssh() {
    let sandbox = hosts_only(2).start().expect("hosts come up");
    let [first, second] = [&sandbox.hosts()[0], &sandbox.hosts()[1]].map(String::clone);
    sandbox.stop_host(&first);
    assert!(!sandbox.ssh(&first, "true").status.success());
    assert!(sandbox.ssh(&second, "true").status.success());
}

#[test]
fn the_sudo_deploy_user_reaches_the_stand_in_through_sudo() {
    let sandbox = hosts_only(1).ssh_user("dmsandbox").start().expect("hosts come up");
    let ip = &sandbox.hosts()[0];
    let whoami = sandbox.ssh(ip, "id -un");
    assert_eq!(stdout(&whoami), "dmsandbox", "{whoami:?}");
    let command = sandbox.as_root("id -un; command -v systemctl; echo $DM_SANDBOX_HOST_DIR");
    let output = sandbox.ssh(ip, &command);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "root");
    assert_eq!(lines[1], Sandbox::shared_stand_in_dir().join("systemctl").to_str().unwrap());
    assert_eq!(lines[2], sandbox.host_dir(ip).to_str().unwrap());
    assert!(sandbox.meta_yaml().starts_with("user: dmsandbox\n"));
}

/// The sudoers drop-ins in /etc/sudoers.d, with their text.
fn sudoers_drop_ins() -> Vec<(std::path::PathBuf, String)> {
    fs::read_dir("/etc/sudoers.d")
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| {
                    let text = fs::read_to_string(entry.path()).unwrap_or_default();
                    (entry.path(), text)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn passwd_entry(user: &str) -> Option<String> {
    let output = std::process::Command::new("getent").args(["passwd", user]).output().unwrap();
    output.status.success().then(|| stdout(&output))
}

#[test]
fn a_deploy_users_sudo_setup_and_account_go_with_its_last_sandbox() {
    // A user no other test logs in as, so that no parallel test keeps it in use.
    let user = "dmsbxlast";
    assert_eq!(
        passwd_entry(user),
        None,
        "the test needs {user} not to exist yet (left by a crashed run? `sandbox cleanup`)"
    );
    let drop_in = std::path::Path::new("/etc/sudoers.d").join(format!("dm-sandbox-{user}"));
    let sandbox = hosts_only(1).ssh_user(user).start().expect("hosts come up");
    let ip = &sandbox.hosts()[0];
    let output = sandbox.ssh(ip, &sandbox.as_root("id -un; command -v systemctl"));
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        stdout(&output),
        "root\n/run/dm-sandbox/bin/systemctl",
        "sudo finds the stand-in outside /tmp"
    );
    let text = fs::read_to_string(&drop_in).expect("the sandbox installs a drop-in");
    assert!(text.contains("secure_path=\"/run/dm-sandbox/bin:"), "{text}");
    assert!(passwd_entry(user).is_some());
    drop(sandbox);

    assert!(!drop_in.exists(), "{} outlived the last sandbox of {user}", drop_in.display());
    assert_eq!(passwd_entry(user), None, "the user the test bed created outlived its last sandbox");
    for (path, text) in sudoers_drop_ins() {
        assert!(!text.contains("/tmp"), "{} names a path under /tmp: {text}", path.display());
    }
}

/// Deletes the user when dropped.
struct UserGuard(&'static str);

impl Drop for UserGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel").arg(self.0).output();
    }
}

#[test]
fn a_deploy_user_that_was_there_before_is_kept() {
    let user = "dmsbxkept";
    assert_eq!(passwd_entry(user), None, "the test needs {user} not to exist yet");
    let created = std::process::Command::new("useradd")
        .args(["--system", "--shell", "/bin/bash", "--password", "*", user])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let _guard = UserGuard(user);
    let before = passwd_entry(user).unwrap();

    let sandbox = hosts_only(1).ssh_user(user).start().expect("hosts come up");
    let whoami = sandbox.ssh(&sandbox.hosts()[0], "id -un");
    assert_eq!(stdout(&whoami), user, "{whoami:?}");
    drop(sandbox);

    assert_eq!(passwd_entry(user), Some(before), "a user of the machine stays");
    assert!(!std::path::Path::new("/etc/sudoers.d").join(format!("dm-sandbox-{user}")).exists());
}

/// Writes a unit on `ip` whose service runs `script` (a TiUP-shaped unit and run script).
fn write_unit(sandbox: &Sandbox, ip: &str, name: &str, script: &str) {
    let host_dir = sandbox.host_dir(ip);
    let script_path = host_dir.join(format!("{name}.sh"));
    fs::write(&script_path, format!("#!/bin/bash\n{script}\n")).unwrap();
    fs::set_permissions(&script_path, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(host_dir.join("systemd")).unwrap();
    let unit = format!(
        "[Unit]\nDescription={name} service\n\n[Service]\nUser=root\nExecStart=/bin/bash -c '{}'\n",
        script_path.display()
    );
    fs::write(host_dir.join("systemd").join(format!("{name}.service")), unit).unwrap();
}

#[test]
fn the_stand_in_starts_stops_and_reports_units() {
    let sandbox = hosts_only(1).start().expect("hosts come up");
    let ip = sandbox.hosts()[0].clone();
    write_unit(&sandbox, &ip, "sleeper-1", "exec sleep 600");
    let manager = dm_sandbox::units::ServiceManager::for_host(&sandbox.host_dir(&ip), false);

    let inactive = sandbox.ssh(&ip, "systemctl is-active sleeper-1.service");
    assert_eq!((inactive.status.code(), stdout(&inactive).as_str()), (Some(3), "inactive"));

    let started = sandbox.ssh(&ip, "systemctl start sleeper-1");
    assert!(started.status.success(), "{started:?}");
    let record = manager.running("sleeper-1").expect("the unit runs after start");
    assert!(record.is_running());
    let active = sandbox.ssh(&ip, "systemctl is-active sleeper-1");
    assert_eq!((active.status.code(), stdout(&active).as_str()), (Some(0), "active"));
    // The service outlived the SSH session that started it, in a session of its own.
    // SAFETY: getsid(2) has no memory-safety preconditions.
    assert_eq!(unsafe { libc::getsid(record.pid as libc::pid_t) }, record.pid as libc::pid_t);

    let status = sandbox.ssh(&ip, "systemctl status sleeper-1");
    assert!(stdout(&status).contains(&format!("Main PID: {}", record.pid)), "{status:?}");

    let stopped = sandbox.ssh(&ip, "systemctl stop sleeper-1.service");
    assert!(stopped.status.success(), "{stopped:?}");
    assert!(!record.is_running(), "stop returns once the process is gone");
    let after = sandbox.ssh(&ip, "systemctl is-active sleeper-1");
    assert_eq!((after.status.code(), stdout(&after).as_str()), (Some(3), "inactive"));

    let missing = sandbox.ssh(&ip, "systemctl start no-such-unit");
    assert_eq!(missing.status.code(), Some(5), "{missing:?}");
    for verb in ["daemon-reload", "enable sleeper-1", "disable sleeper-1"] {
        assert!(sandbox.ssh(&ip, &format!("systemctl {verb}")).status.success(), "{verb}");
    }
}

#[test]
fn a_unit_whose_process_dies_is_not_active() {
    let sandbox = hosts_only(1).start().expect("hosts come up");
    let ip = sandbox.hosts()[0].clone();
    write_unit(&sandbox, &ip, "crasher-1", "exit 1");
    write_unit(&sandbox, &ip, "victim-1", "exec sleep 600");

    // As with systemd and Type=simple, start succeeds; the unit then reads failed.
    let started = sandbox.ssh(&ip, "systemctl start crasher-1");
    assert!(started.status.success(), "{started:?}");
    sandbox.wait_until("crasher-1 to be reported failed", Duration::from_secs(5), || {
        let output = sandbox.ssh(&ip, "systemctl is-active crasher-1");
        output.status.code() == Some(3) && stdout(&output) == "failed"
    });

    assert!(sandbox.ssh(&ip, "systemctl start victim-1").status.success());
    let manager = dm_sandbox::units::ServiceManager::for_host(&sandbox.host_dir(&ip), false);
    let record = manager.running("victim-1").expect("victim-1 runs");
    record.kill();
    let output = sandbox.ssh(&ip, "systemctl is-active victim-1");
    assert_eq!((output.status.code(), stdout(&output).as_str()), (Some(3), "failed"));
    // Starting it again gives a new process.
    assert!(sandbox.ssh(&ip, "systemctl restart victim-1").status.success());
    let again = manager.running("victim-1").expect("victim-1 runs again");
    assert_ne!(again, record);
}

#[test]
fn a_sandbox_comes_up_fast_and_goes_down_clean() {
    let started = Instant::now();
    let sandbox = hosts_only(6).start().expect("hosts come up");
    let up = started.elapsed();
    let sshds = sshd_records(&sandbox);
    let started = Instant::now();
    drop(sandbox);
    let down = started.elapsed();
    eprintln!("6 hosts: up in {up:?}, down in {down:?}");
    assert!(sshds.iter().all(|sshd| !sshd.is_running()));
    assert!(up < Duration::from_secs(10), "6 hosts took {up:?} to come up");
}

#[test]
fn units_run_as_their_user_when_started_through_sudo() {
    let sandbox = hosts_only(1).ssh_user("dmsandbox").start().expect("hosts come up");
    let ip = sandbox.hosts()[0].clone();
    let host_dir = sandbox.host_dir(&ip);
    let script = host_dir.join("whoami.sh");
    let marker = host_dir.join("home/whoami.out");
    fs::write(&script, format!("#!/bin/bash\nid -un > {}\nexec sleep 600\n", marker.display()))
        .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(host_dir.join("systemd")).unwrap();
    let unit =
        format!("[Service]\nUser=dmsandbox\nExecStart=/bin/bash -c '{}'\n", script.display());
    fs::write(host_dir.join("systemd/whoami-1.service"), unit).unwrap();

    let started = sandbox.ssh(&ip, &sandbox.as_root("systemctl start whoami-1"));
    assert!(started.status.success(), "{started:?}");
    sandbox.wait_until("the unit to write who it runs as", Duration::from_secs(5), || {
        fs::read_to_string(&marker).is_ok_and(|text| text.trim() == "dmsandbox")
    });
    let stopped = sandbox.ssh(&ip, &sandbox.as_root("systemctl stop whoami-1"));
    assert!(stopped.status.success(), "{stopped:?}");
}

/// Runs `sandbox down` on the sandbox at `root` when the test panics.
struct DownOnPanic {
    cli: &'static str,
    root: std::path::PathBuf,
}

impl Drop for DownOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() && self.root.join("sandbox.json").exists() {
            let _ = std::process::Command::new(self.cli)
                .arg("down")
                .arg("--root")
                .arg(&self.root)
                .output();
        }
    }
}

#[test]
fn the_cli_brings_hosts_up_builds_packages_and_tears_down() {
    let sandbox_cli = env!("CARGO_BIN_EXE_sandbox");
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("sandbox");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(sandbox_cli).args(args).output().unwrap();
        assert!(output.status.success(), "sandbox {args:?}: {output:?}");
        stdout(&output)
    };
    let root_arg = root.to_str().unwrap();
    let up = run(&[
        "up",
        "--root",
        root_arg,
        "--hosts",
        "2",
        "--masters",
        "0",
        "--workers",
        "0",
        "--sources",
        "0",
    ]);
    // A failed assertion below must not leave the hosts `up` started running.
    let _down_on_panic = DownOnPanic { cli: sandbox_cli, root: root.clone() };
    assert!(up.contains(&format!("export TIUP_HOME={root_arg}/tiup")), "{up}");
    assert!(up.contains("export DM_SANDBOX_CLUSTER=dm-sandbox"), "{up}");
    let state = dm_sandbox::state::SandboxState::load(&root).unwrap();
    let sshds: Vec<ProcessRecord> = state.hosts.iter().filter_map(|h| h.sshd).collect();
    assert_eq!(sshds.len(), 2);

    let status = run(&["status", "--root", root_arg]);
    assert_eq!(status.matches("sshd up").count(), 2, "{status}");
    let package = run(&[
        "package",
        "--root",
        root_arg,
        "dm-master",
        "--version",
        "v8.5.2",
        "--fault",
        "never-healthy",
    ]);
    assert!(package.ends_with("packages/dm-master-v8.5.2-never-healthy.tar.gz"), "{package}");
    let typo = std::process::Command::new(sandbox_cli)
        .args(["package", "--root", root_arg, "dm-master", "--version", "v8.5.2"])
        .args(["--fault", "never-heathy"])
        .output()
        .unwrap();
    assert!(!typo.status.success());
    let message = String::from_utf8_lossy(&typo.stderr);
    assert!(
        message.contains("unknown fault \"never-heathy\" (known: exit-at-start, never-healthy, wrong-version, ignore-evict, paused-tasks, stalled-tasks, late-pause)"),
        "{message}"
    );
    let listing = std::process::Command::new("tar").args(["tzvf", &package]).output().unwrap();
    assert!(stdout(&listing).starts_with("-rwxr-xr-x"), "{listing:?}");
    assert!(stdout(&listing).ends_with(" dm-master/dm-master"), "{listing:?}");

    run(&["down", "--root", root_arg]);
    assert!(sshds.iter().all(|sshd| !sshd.is_running()));
    assert!(!root.exists());
}

/// Every process a cluster sandbox runs: its services and its sshds.
fn all_processes(sandbox: &Sandbox) -> Vec<ProcessRecord> {
    let mut records = sshd_records(sandbox);
    for ip in sandbox.hosts() {
        let manager = ServiceManager::for_host(&sandbox.host_dir(&ip), false);
        records.extend(manager.recorded_units().iter().filter_map(|unit| manager.running(unit)));
    }
    records
}

#[test]
fn a_cluster_comes_up_fast_and_goes_down_clean() {
    let started = Instant::now();
    let sandbox = Sandbox::builder()
        .hosts(6)
        .masters(3)
        .workers(3)
        .sources(2)
        .start()
        .expect("the cluster comes up");
    let up = started.elapsed();
    let processes = all_processes(&sandbox);
    assert_eq!(processes.len(), 6 + 6, "6 sshds and 6 services");
    assert!(sandbox.leader_name().is_some());
    for instance in sandbox.instances() {
        assert_eq!(
            sandbox.status_version(&instance.id).as_deref(),
            Some("v8.5.1"),
            "{}",
            instance.id
        );
    }
    let started = Instant::now();
    drop(sandbox);
    let down = started.elapsed();
    eprintln!("6 hosts, 3 masters, 3 workers, 2 sources: up in {up:?}, down in {down:?}");
    for process in &processes {
        assert!(!process.is_running(), "pid {} outlived the sandbox", process.pid);
    }
    assert!(up < Duration::from_secs(10), "the cluster took {up:?} to come up");
}

#[test]
fn the_members_api_has_the_reference_shape() {
    let sandbox = Sandbox::builder()
        .hosts(3)
        .masters(3)
        .workers(2)
        .sources(1)
        .start()
        .expect("the cluster comes up");
    let members = sandbox.members_json().expect("a master answers");
    assert_eq!(members["result"], true);
    assert_eq!(members["msg"], "");
    let sections = members["members"].as_array().unwrap();
    let keys: Vec<&str> =
        sections.iter().map(|s| s.as_object().unwrap().keys().next().unwrap().as_str()).collect();
    assert_eq!(keys, ["leader", "master", "worker"]);
    let leader = &sections[0]["leader"];
    assert_eq!(leader["msg"], "");
    let leader_instance = sandbox.leader().expect("the leader is one of ours");
    assert_eq!(leader["name"], leader_instance.name.as_str());
    assert_eq!(leader["addr"], leader_instance.id.as_str());

    let masters = sections[1]["master"]["masters"].as_array().unwrap();
    assert_eq!(masters.len(), 3);
    for master in masters {
        assert!(master["name"].as_str().unwrap().starts_with("dm-127."), "{master}");
        assert!(
            master["memberID"].as_str().unwrap().parse::<u64>().is_ok(),
            "64-bit ids are strings: {master}"
        );
        assert_eq!(master["alive"], true);
        assert!(master["peerURLs"][0].as_str().unwrap().ends_with(":8291"), "{master}");
        assert!(master["clientURLs"][0].as_str().unwrap().ends_with(":8261"), "{master}");
    }
    let workers = sections[2]["worker"]["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    let stages: Vec<&str> = workers.iter().map(|w| w["stage"].as_str().unwrap()).collect();
    assert_eq!(stages.iter().filter(|s| **s == "bound").count(), 1, "{workers:?}");
    assert_eq!(stages.iter().filter(|s| **s == "free").count(), 1, "{workers:?}");
    for worker in workers {
        assert!(worker["addr"].as_str().unwrap().ends_with(":8262"), "{worker}");
        assert!(worker["source"].is_string(), "{worker}");
    }
}

#[test]
fn stopping_the_leader_over_ssh_elects_another() {
    let sandbox = three_masters();
    let leader = sandbox.leader().expect("a leader");
    let output = sandbox.ssh(&leader.host, &format!("systemctl stop {}", leader.unit));
    assert!(output.status.success(), "{output:?}");
    assert_eq!(sandbox.pid(&leader.id), None);
    sandbox.wait_until("another leader", Duration::from_secs(10), || {
        sandbox.leader_name().is_some_and(|name| name != leader.name)
    });
}

#[test]
fn evicting_the_leader_moves_leadership() {
    let sandbox = three_masters();
    let leader = sandbox.leader().expect("a leader");
    let pid = sandbox.pid(&leader.id);
    let answer: serde_json::Value = reqwest::blocking::Client::new()
        .put(format!("{}/apis/v1alpha1/leader/1", leader.url()))
        .send()
        .and_then(|response| response.json())
        .expect("the leader answers the eviction");
    assert_eq!(answer["result"], true, "{answer}");
    sandbox.wait_until("leadership to move", Duration::from_secs(10), || {
        sandbox.leader_name().is_some_and(|name| name != leader.name)
    });
    assert_eq!(sandbox.pid(&leader.id), pid, "the evicted leader keeps running");
}

#[test]
fn a_stopped_bound_workers_source_rebinds_to_a_free_worker() {
    let sandbox = Sandbox::builder()
        .hosts(3)
        .masters(1)
        .workers(3)
        .sources(1)
        .start()
        .expect("the cluster comes up");
    let workers_now = || -> Vec<(String, String, String)> {
        let members = sandbox.members_json().expect("the master answers");
        let workers =
            members["members"][2]["worker"]["workers"].as_array().cloned().unwrap_or_default();
        workers
            .iter()
            .map(|w| {
                let text = |key: &str| w[key].as_str().unwrap_or_default().to_owned();
                (text("name"), text("stage"), text("source"))
            })
            .collect()
    };
    let (bound_name, _, source) =
        workers_now().into_iter().find(|(_, stage, _)| stage == "bound").expect("a bound worker");
    let bound = sandbox.instances().into_iter().find(|i| i.name == bound_name).unwrap();
    sandbox.stop_service(&bound.id);
    sandbox.wait_until("the source to be bound to another worker", Duration::from_secs(10), || {
        workers_now().iter().any(|(name, stage, bound_source)| {
            *name != bound_name && stage == "bound" && *bound_source == source
        })
    });
}

#[test]
fn a_tls_cluster_answers_only_clients_with_a_certificate_of_its_ca() {
    let sandbox = Sandbox::builder()
        .hosts(2)
        .masters(2)
        .workers(1)
        .sources(1)
        .tls(true)
        .start()
        .expect("the TLS cluster comes up");
    assert!(sandbox.tls());
    assert!(
        sandbox.meta_yaml().contains("\n        enable_tls: true\n"),
        "{}",
        sandbox.meta_yaml()
    );
    let store = sandbox.store_tls_dir();
    for file in ["ca.crt", "ca.pem", "client.crt", "client.pem"] {
        assert!(store.join(file).is_file(), "the store has tls/{file}");
    }
    let key = fs::read_to_string(store.join("client.pem")).unwrap();
    assert!(key.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "TiUP's PKCS#1 client key");

    // The sandbox's own helpers speak mutual TLS.
    let members = sandbox.members_json().expect("a master answers over TLS");
    let masters = members["members"][1]["master"]["masters"].as_array().unwrap();
    for master in masters {
        assert!(master["clientURLs"][0].as_str().unwrap().starts_with("https://"), "{master}");
        assert!(master["peerURLs"][0].as_str().unwrap().starts_with("https://"), "{master}");
    }
    let worker = &members["members"][2]["worker"]["workers"][0];
    assert_eq!(worker["stage"], "bound", "the worker registered over TLS: {members}");
    let worker_id = sandbox.instances().into_iter().find(|i| !i.is_master()).unwrap().id;
    assert_eq!(sandbox.status_version(&worker_id).as_deref(), Some("v8.5.1"));

    // Everyone else is turned away: plain HTTP, no client certificate, another CA's.
    let master = sandbox.leader().expect("a leader");
    let status = |client: reqwest::blocking::Client, url: String| {
        client.get(format!("{url}/status")).timeout(Duration::from_secs(2)).send()
    };
    // Plain HTTP gets what a Go HTTPS server answers it (DM serves over `tls.NewListener`).
    let plain = reqwest::blocking::Client::builder().no_proxy().build().unwrap();
    let answer = status(plain, master.url()).expect("an answer to plain HTTP");
    assert_eq!(answer.status(), 400);
    let body = answer.text().unwrap();
    assert_eq!(
        body, "Client sent an HTTP request to an HTTPS server.\n",
        "plain HTTP is not served"
    );
    let ca = reqwest::Certificate::from_pem(&fs::read(store.join("ca.crt")).unwrap()).unwrap();
    let anonymous =
        reqwest::blocking::Client::builder().no_proxy().tls_certs_only([ca]).build().unwrap();
    assert!(
        status(anonymous, sandbox.url(&master.id)).is_err(),
        "a client certificate is required"
    );
    let stranger = tempfile::tempdir().unwrap();
    for file in ["ca.crt", "client.crt", "client.pem"] {
        fs::copy(store.join(file), stranger.path().join(file)).unwrap();
    }
    dm_sandbox::tls::write_foreign_client(stranger.path(), sandbox.cluster_name()).unwrap();
    let builder = reqwest::blocking::Client::builder().no_proxy();
    let foreign = dm_sandbox::tls::https_client(builder, stranger.path()).unwrap().build().unwrap();
    assert!(status(foreign, sandbox.url(&master.id)).is_err(), "another CA's client is refused");
    // The cluster is none the worse for it.
    assert!(sandbox.members_json().is_some());
}
