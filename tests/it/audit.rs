//! The audit trail: every `patch` run that could change something leaves one record in
//! `$TIUP_HOME/storage/dm/audit/`, in TiUP's format (`tiup dm audit` lists it), saying what
//! changed: refused runs, runs aborted at the prompt, and runs executed on the hosts.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::hosts::{deploy_worker, hosts_with_workers, run_offline, worker_hotfix};
use crate::support::Store;

/// The audit records under `home`, oldest first.
fn records(home: &Path) -> Vec<String> {
    let dir = home.join("storage/dm/audit");
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with("_dm-patch"), "{name}");
    }
    paths.iter().map(|path| fs::read_to_string(path).unwrap()).collect()
}

/// The one record under `home`.
#[track_caller]
fn the_record(home: &Path) -> String {
    let mut all = records(home);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.remove(0)
}

#[track_caller]
fn assert_lines(record: &str, expected: &[&str]) {
    for line in expected {
        assert!(record.lines().any(|l| l == *line), "{line:?} missing from:\n{record}");
    }
}

/// Bad input (exit 2) before anything is planned: the command line, the result and why.
#[test]
fn a_run_refused_for_bad_input_is_recorded() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    store.refused(&["patch", "demo", &pkg, "-R", "tikv", "--yes"]);
    let record = the_record(store.home());
    let first = record.lines().next().unwrap();
    assert!(first.ends_with(" patch demo %2F") || first.contains(" patch demo %2F"), "{first}");
    assert!(first.ends_with("-R tikv --yes"), "{first}");
    assert_lines(&record, &["cluster: demo", "result: refused", "exit: 2"]);
    assert!(record.contains("message: unknown role 'tikv'"), "{record}");
}

/// Refused once the plan was made (no one to confirm): the package and the instances are named.
#[test]
fn a_run_refused_after_planning_names_the_package() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    store.refused(&["patch", "demo", &pkg, "-R", "dm-worker"]);
    let record = the_record(store.home());
    let size = fs::metadata(&pkg).unwrap().len();
    assert_lines(
        &record,
        &[
            &format!("package: {pkg}"),
            &format!("package size: {size} bytes"),
            &format!("package sha256: {}", sha256(&pkg)),
            "component: dm-worker",
            "mode: rolling",
            "result: refused",
            "exit: 2",
            "instance 127.0.9.1:8262: not touched",
            "instance 127.0.9.2:8262: not touched",
        ],
    );
}

#[test]
fn a_refused_jump_host_login_is_recorded() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    let jump = ["--ssh-proxy-host", "127.0.9.9", "--ssh-proxy-use-password"];
    store.refused(&[&["patch", "demo", &pkg, "-R", "dm-worker", "--yes"][..], &jump].concat());
    let record = the_record(store.home());
    assert_lines(&record, &["result: refused", "exit: 2"]);
    assert!(record.contains("logs in to the jump host with a key only"), "{record}");
}

/// A dry run changes nothing and leaves no record.
#[test]
fn a_dry_run_is_not_recorded() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    store.run(["patch", "demo", &pkg, "-R", "dm-worker", "--dry-run"]).success();
    assert_eq!(records(store.home()), Vec::<String>::new());
}

/// No at the prompt, on a terminal (`script` gives dm-patch one): exit 1, recorded as aborted.
#[test]
fn a_run_aborted_at_the_prompt_is_recorded() {
    let store = Store::demo();
    let pkg = store.good_package("dm-worker");
    let command = format!("{} patch demo {pkg} -R dm-worker", env!("CARGO_BIN_EXE_dm-patch"));
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TIUP_HOME", store.home())
        .env("NO_COLOR", "1")
        .env("TERM", "dumb")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    // The screen, read as it comes; each time it grows, it is passed on, and it is returned
    // whole when the terminal closes.
    let mut terminal = child.stdout.take().unwrap();
    let (shown, screen_grew) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let (mut screen, mut buffer) = (Vec::new(), [0u8; 4096]);
        while let Ok(read @ 1..) = terminal.read(&mut buffer) {
            screen.extend_from_slice(&buffer[..read]);
            let _ = shown.send(String::from_utf8_lossy(&screen).into_owned());
        }
        String::from_utf8_lossy(&screen).into_owned()
    });
    let wait_for = |text: &str| loop {
        let screen = screen_grew.recv_timeout(std::time::Duration::from_secs(60));
        if screen.expect("the screen grows until it shows what is waited for").contains(text) {
            break;
        }
    };
    let mut stdin = child.stdin.take().unwrap();
    // Answered once the prompt is up, and the terminal kept open until the answer is taken.
    wait_for("instance(s) of cluster 'demo'?");
    std::io::Write::write_all(&mut stdin, b"n").unwrap();
    wait_for("Aborted");
    drop(stdin);
    let status = child.wait().unwrap();
    let screen = reader.join().unwrap();
    assert_eq!(status.code(), Some(1), "{screen}");
    assert!(screen.contains("Aborted: nothing was changed."), "{screen}");
    let record = the_record(store.home());
    assert_lines(
        &record,
        &[
            "result: aborted",
            "exit: 1",
            "message: aborted at the prompt; nothing was changed",
            &format!("package sha256: {}", sha256(&pkg)),
            "instance 127.0.9.1:8262: not touched",
        ],
    );
}

/// A run executed through real sshd: the package (path, size, sha256, the version its binary
/// reports), the mode, the result, and each instance's outcome and versions before and after.
#[test]
fn an_executed_run_records_what_changed() {
    let (sandbox, _) = hosts_with_workers(1, deploy_worker);
    let packages = Store::new();
    let package = worker_hotfix(&packages, "v8.5.2");
    let report = run_offline(&sandbox, &package).success().json();
    let id = report["instances"][0]["id"].as_str().unwrap().to_owned();
    let record = the_record(sandbox.tiup_home());
    let hash = |version: &str| format!("{:0>40}", version.replace(['v', '.'], ""))[..7].to_owned();
    assert_lines(
        &record,
        &[
            &format!("cluster: {}", sandbox.cluster_name()),
            "component: dm-worker",
            &format!("package: {package}"),
            &format!("package sha256: {}", sha256(&package)),
            &format!("package version: v8.5.2 ({})", hash("v8.5.2")),
            "mode: offline",
            "result: success",
            &format!(
                "instance {id}: swapped (takes effect at restart); version v8.5.1 ({}) -> v8.5.2 ({})",
                hash("v8.5.1"),
                hash("v8.5.2")
            ),
        ],
    );
    assert!(record.lines().next().unwrap().contains("--offline"), "{record}");
}

fn sha256(path: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(fs::read(path).unwrap());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
