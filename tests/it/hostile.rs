//! What staging on a host must never do, whatever the package or the host's tools do: follow
//! a link out of the staging dir, install anything but the entry that was checked, or unpack
//! more than the host has room for.
//!
//! Through real sshd (a hosts-only sandbox, as in offline.rs) with `--offline`. A host whose
//! `tar` or `df` misbehaves is a stand-in script put first on the sessions' `PATH` (the
//! sandbox's `bin/path`): once the local check reads the bytes `tar` reads, that (or a tar
//! header the check reads differently, last test) is how a host comes to unpack something
//! other than the checked entry.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use dm_sandbox::Sandbox;
use serde_json::Value;

use crate::hosts::{
    deploy_worker, deploy_worker_on_port, hosts_with_workers, list_workers, patch_offline,
    run_offline, version_script, worker_hotfix,
};
use crate::support::{Entry, Run, Store, dm_patch};

/// A hosts-only sandbox of one host with one dm-worker on v8.5.1; returns its binary's path.
fn one_worker() -> (Sandbox, PathBuf) {
    let (sandbox, deploys) = hosts_with_workers(1, deploy_worker);
    let binary = deploys[0].join("bin/dm-worker/dm-worker");
    (sandbox, binary)
}

/// The deploy dir of the dm-worker whose binary is `binary` (`<deploy>/bin/dm-worker/dm-worker`).
fn deploy_dir_of(binary: &Path) -> PathBuf {
    binary.ancestors().nth(3).expect("a binary inside a deploy dir").to_owned()
}

/// Puts `script` first on `PATH` as `name` in every SSH session of the sandbox.
fn stand_in(sandbox: &Sandbox, name: &str, script: &str) {
    let path = sandbox.root().join("bin/path").join(name);
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A `tar` that runs the real one, then does `then` with `$dir` set to its `-C` dir.
fn tar_that(then: &str) -> String {
    let real = ["/usr/bin/tar", "/bin/tar"].into_iter().find(|p| Path::new(p).exists()).unwrap();
    format!(
        "#!/bin/sh\n{real} \"$@\" || exit\ndir=\nprev=\nfor arg in \"$@\"; do\n  \
         if [ \"$prev\" = -C ]; then dir=$arg; fi\n  prev=$arg\ndone\n{then}\n"
    )
}

/// The report's one problem, which must contain `expected`.
#[track_caller]
fn one_problem(report: &Value, expected: &str) -> String {
    assert_eq!(report["result"], "preflight-failed", "{report}");
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    let problem = problems[0].as_str().unwrap().to_owned();
    assert!(problem.contains(expected), "{problem}");
    problem
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn an_unpacked_link_is_refused_and_its_target_left_alone() {
    let (sandbox, binary) = one_worker();
    let outside = sandbox.root().join("outside.sh");
    fs::write(&outside, version_script("v6.6.6")).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o600)).unwrap();
    let link = format!("ln -sfn {} \"$dir/dm-worker/dm-worker\"", outside.display());
    stand_in(&sandbox, "tar", &tar_that(&link));
    let packages = Store::new();

    let run = run_offline(&sandbox, &packages.good_package("dm-worker"));

    assert_eq!(mode(&outside), 0o600, "chmod --reference followed the link");
    let report = run.code(1).json();
    let problem = one_problem(&report, "dm-worker/dm-worker is a link to");
    assert!(problem.contains("dm-worker/dm-worker"), "{problem}");
    assert_eq!(fs::read_to_string(&binary).unwrap(), version_script("v8.5.1"));
}

#[test]
fn a_host_that_unpacks_another_binary_is_refused() {
    let (sandbox, binary) = one_worker();
    let other = sandbox.root().join("other.sh");
    fs::write(&other, version_script("v6.6.6")).unwrap();
    let swap = format!("cat {} > \"$dir/dm-worker/dm-worker\"", other.display());
    stand_in(&sandbox, "tar", &tar_that(&swap));
    let packages = Store::new();
    let package = worker_hotfix(&packages, "v8.5.2");

    let report = patch_offline(&sandbox, &package, 1);

    one_problem(&report, "sha256");
    assert_eq!(fs::read_to_string(&binary).unwrap(), version_script("v8.5.1"));
}

/// tar is given the checked entry's name as it is in the package: `dm-worker/dm-worker` would
/// not match `./dm-worker/dm-worker`, and every host would fail.
#[test]
fn a_dotted_entry_is_installed() {
    let (sandbox, binary) = one_worker();
    let packages = Store::new();
    let hotfix = version_script("v8.5.2");
    let package = packages.package(
        "dm-worker-hotfix.tar.gz",
        &[
            Entry::dir("./dm-worker/"),
            Entry::file("./dm-worker/dm-worker", 0o755, hotfix.as_bytes()),
        ],
    );

    let report = patch_offline(&sandbox, &package, 0);

    assert_eq!(report["instances"][0]["outcome"], "patched", "{report}");
    assert_eq!(fs::read_to_string(&binary).unwrap(), hotfix);
}

/// TiUP's backup is made while staging, under a temporary name: a copy cut short (here `cp`
/// copies, then fails as on a full disk) stops the run with nothing installed and leaves no
/// `bin.old.<version>` that a later run (or `rollback --to-original`) would take for the real
/// one. Once the host can copy again, the same command makes it.
#[test]
fn a_backup_cut_short_leaves_no_backup_and_installs_nothing() {
    let (sandbox, binary) = one_worker();
    let deploy = deploy_dir_of(&binary);
    let cp = "#!/bin/sh\n/bin/cp \"$@\" || exit\n\
              case \"$*\" in *bin.old.*) echo 'cp: No space left on device' >&2; exit 1;; esac\n";
    stand_in(&sandbox, "cp", cp);
    let packages = Store::new();
    let package = worker_hotfix(&packages, "v8.5.2");

    let report = patch_offline(&sandbox, &package, 1);

    one_problem(&report, "could not back up");
    let backups = |deploy: &Path| -> Vec<String> {
        let names = fs::read_dir(deploy).unwrap().map(|e| e.unwrap().file_name());
        names
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| n.starts_with("bin.old"))
            .collect()
    };
    assert_eq!(backups(&deploy), Vec::<String>::new(), "nothing passes for the backup");
    assert_eq!(fs::read_to_string(&binary).unwrap(), version_script("v8.5.1"));

    fs::remove_file(sandbox.root().join("bin/path/cp")).unwrap();
    let report = patch_offline(&sandbox, &package, 0);
    assert_eq!(report["instances"][0]["outcome"], "patched", "{report}");
    assert_eq!(backups(&deploy), ["bin.old.v8.5.1"]);
    let kept = deploy.join("bin.old.v8.5.1/dm-worker/dm-worker");
    assert_eq!(fs::read_to_string(kept).unwrap(), version_script("v8.5.1"));
}

/// A `df` that says `kib` KiB are free, whatever the disk.
fn df_with_free(sandbox: &Sandbox, kib: u64) {
    let script = format!(
        "#!/bin/sh\necho 'Filesystem 1024-blocks Used Available Capacity Mounted on'\n\
         echo 'fake 1048576 1000 {kib} 1% /'\n"
    );
    stand_in(sandbox, "df", &script);
}

/// Free space is checked against everything the package unpacks to, not just the binary.
#[test]
fn preflight_counts_every_entry_against_free_space() {
    let (sandbox, binary) = one_worker();
    df_with_free(&sandbox, 1024);
    let packages = Store::new();
    let package = packages.package(
        "dm-worker-hotfix.tar.gz",
        &[
            Entry::file("dm-worker/dm-worker", 0o755, version_script("v8.5.2").as_bytes()),
            Entry::file("dm-worker/padding", 0o644, &vec![0; 2 << 20]),
        ],
    );

    let report = patch_offline(&sandbox, &package, 1);

    one_problem(&report, "free in");
    assert_eq!(fs::read_to_string(&binary).unwrap(), version_script("v8.5.1"));
}

/// TiUP's backup of `bin/` counts against free space as long as it is still to be made (it
/// copies all of `bin/`, whatever the package holds), and not once it exists.
#[test]
fn preflight_counts_the_backup_still_to_be_made_against_free_space() {
    let (sandbox, binary) = one_worker();
    let deploy = deploy_dir_of(&binary);
    fs::write(deploy.join("bin/dm-worker/data.bin"), vec![7; 3 << 20]).unwrap();
    df_with_free(&sandbox, 2048);
    let packages = Store::new();
    let package = worker_hotfix(&packages, "v8.5.2");

    let report = patch_offline(&sandbox, &package, 1);

    let problem = one_problem(&report, "free in");
    assert!(problem.contains("TiUP's backup of bin/ (3.0"), "{problem}");
    assert_eq!(fs::read_to_string(&binary).unwrap(), version_script("v8.5.1"));

    // Once the backup exists, the same free space is enough for the package.
    fs::create_dir(deploy.join("bin.old.v8.5.1")).unwrap();
    let report = patch_offline(&sandbox, &package, 0);
    assert_eq!(report["instances"][0]["outcome"], "patched", "{report}");
}

/// Two instances on one host and file system are staged side by side: each fits alone, both
/// do not. Refused before anything is staged, naming both; a re-run with one of them (`-N`)
/// goes through.
#[test]
fn instances_sharing_a_file_system_are_counted_together() {
    let (sandbox, _) = hosts_with_workers(1, deploy_worker);
    let host = sandbox.hosts()[0].clone();
    let deploys = [8262, 8263].map(|port| deploy_worker_on_port(&sandbox, &host, port));
    list_workers(&sandbox, &[(&host, 8262, &deploys[0]), (&host, 8263, &deploys[1])]);
    for deploy in &deploys {
        fs::write(deploy.join("bin/dm-worker/data.bin"), vec![7; 1 << 20]).unwrap();
    }
    // Each needs a little over 1 MiB (its backup, and the tiny package): 1.5 MiB fits one.
    df_with_free(&sandbox, 1536);
    let packages = Store::new();
    let package = worker_hotfix(&packages, "v8.5.2");

    let report = patch_offline(&sandbox, &package, 1);

    let problem = one_problem(&report, "share one file system");
    for port in [8262, 8263] {
        assert!(problem.contains(&format!("{host}:{port}")), "{problem}");
    }
    let staged = |deploy: &PathBuf| fs::read_dir(deploy).unwrap().count();
    assert_eq!(deploys.iter().map(staged).collect::<Vec<_>>(), [1, 1], "only bin/ in each");

    let one = format!("{host}:8262");
    let args = ["patch", sandbox.cluster_name(), &package, "-N", &one, "--offline"];
    let run = Run::of(dm_patch(sandbox.tiup_home()).args(args).args(["--yes", "--format", "json"]));
    assert_eq!(run.success().json()["instances"][0]["outcome"], "patched");
}

/// A package that GNU tar reads differently from the check, with no stand-in at all: a pax
/// global header names every entry after it `dm-worker/dm-worker`, so tar on the host unpacks
/// the last entry there, while the check saw the first. The sha256 of what was unpacked
/// gives it away.
#[test]
fn an_entry_that_tar_names_differently_is_not_installed() {
    use std::io::Write;
    let (sandbox, binary) = one_worker();
    let mut tar = tar::Builder::new(Vec::new());
    let record = b"28 path=dm-worker/dm-worker\n";
    let mut global = tar::Header::new_ustar();
    global.set_path("pax_global_header").unwrap();
    global.set_entry_type(tar::EntryType::XGlobalHeader);
    global.set_size(record.len() as u64);
    global.set_cksum();
    tar.append(&global, &record[..]).unwrap();
    for (name, version) in [("dm-worker/dm-worker", "v8.5.2"), ("dm-worker/other", "v6.6.6")] {
        let script = version_script(version);
        let mut header = tar::Header::new_ustar();
        header.set_path(name).unwrap();
        header.set_mode(0o755);
        header.set_size(script.len() as u64);
        header.set_cksum();
        tar.append(&header, script.as_bytes()).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar.into_inner().unwrap()).unwrap();
    let packages = Store::new();
    let package = packages.file("dm-worker-hotfix.tar.gz", &gz.finish().unwrap());

    let report = patch_offline(&sandbox, &package, 1);

    one_problem(&report, "sha256");
    assert_eq!(fs::read_to_string(&binary).unwrap(), version_script("v8.5.1"));
}

/// The package's binary is asked its version on the host: one that never answers is given up
/// after the probe's time, killed with every process it started, and nothing is installed.
#[test]
fn a_binary_that_hangs_on_dash_v_is_given_up_and_killed() {
    let (sandbox, binary) = one_worker();
    let packages = Store::new();
    // It starts a child that also holds its output open, as a daemonising binary might.
    let hangs = "#!/bin/sh\nsleep 613 &\nexec sleep 613\n";
    let package = packages.package(
        "dm-worker-hangs.tar.gz",
        &[Entry::file("dm-worker/dm-worker", 0o755, hangs.as_bytes())],
    );

    let started = std::time::Instant::now();
    let report = patch_offline(&sandbox, &package, 1);

    assert!(started.elapsed().as_secs() < 60, "given up, not waited for");
    one_problem(&report, "did not answer `-V` within 10s");
    assert_eq!(fs::read_to_string(&binary).unwrap(), version_script("v8.5.1"));
    let left = std::process::Command::new("pgrep").args(["-f", "sleep 613"]).output().unwrap();
    assert!(left.stdout.is_empty(), "the probe's processes are gone: {left:?}");
}

/// One that prints without end is read no further than a few KiB.
#[test]
fn a_binary_that_floods_dash_v_is_cut_short() {
    let (sandbox, binary) = one_worker();
    let packages = Store::new();
    let floods = "#!/bin/sh\nexec yes 'a great deal of output'\n";
    let package = packages.package(
        "dm-worker-floods.tar.gz",
        &[Entry::file("dm-worker/dm-worker", 0o755, floods.as_bytes())],
    );

    let run = run_offline(&sandbox, &package).code(1);

    let problem = one_problem(&run.json(), "the new binary does not run on this host");
    assert!(problem.len() < 1_000, "the message stays short: {} bytes", problem.len());
    assert_eq!(fs::read_to_string(&binary).unwrap(), version_script("v8.5.1"));
}
