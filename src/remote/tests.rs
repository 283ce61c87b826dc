//! Each script run here with the local shell, as a host's login shell would run its command
//! line, against a scratch deploy dir; and each checked by `shellcheck`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use sha2::Digest;

use super::*;

/// Names a careless script would split, glob, run or read as an option.
const HOSTILE: [&str; 5] = ["a b", "'q", "$(touch pwned)", "-n", "*"];

/// Runs `script` with `args` as a host would (its command line given to a shell), in `cwd`.
fn run(script: Script, args: &[&str], stdin: &[u8], cwd: &Path) -> Output {
    run_with_path(script, args, stdin, cwd, &std::env::var("PATH").unwrap())
}

/// [`run`], with `path` as `PATH` (stand-ins for the host's commands first).
fn run_with_path(script: Script, args: &[&str], stdin: &[u8], cwd: &Path, path: &str) -> Output {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(script.command(args))
        .current_dir(cwd)
        .env("PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(output: Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    String::from_utf8(output.stdout).unwrap()
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// Every file under `dir` with its content, sorted: what a tree holds.
fn contents(dir: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(next) = pending.pop() {
        for entry in fs::read_dir(&next).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap().display().to_string();
                found.push((relative, fs::read_to_string(&path).unwrap_or_default()));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn every_script_passes_shellcheck() {
    for script in ALL {
        let check = Command::new("shellcheck")
            .args([&format!("--shell={}", script.shell), "--severity=style", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn();
        let mut check = check.unwrap_or_else(|err| {
            panic!("shellcheck: {err}; `bash scripts/test` installs it, as the tests need it")
        });
        check.stdin.take().unwrap().write_all(script.source().as_bytes()).unwrap();
        let output = check.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{}.sh:\n{said}", script.name);
    }
}

#[test]
fn the_version_probe_waits_as_long_as_messages_say() {
    assert!(LIB.contains(&format!("timeout -k 1 {VERSION_PROBE_SECONDS} \"$1\" -V")));
}

#[test]
fn answers_are_key_tab_value_lines() {
    let answer = Answer::parse("version\tRelease Version: v1\nversion\t\nsha\tabc ./x\n").unwrap();
    assert_eq!(answer.block("version").as_deref(), Some("Release Version: v1\n\n"));
    assert_eq!(answer.lines().nth(2), Some(("sha", "abc ./x")));
    assert_eq!(answer.block("entry"), None);
    let bad = Answer::parse("entry\tf\nnonsense\n").unwrap_err();
    assert_eq!(bad.line, "nonsense");
}

/// A package with hostile names is swapped in, and restored, exactly: what it replaces and
/// what a rollback takes away kept, what it adds noted, and no name run or split.
#[test]
fn swap_then_restore_with_hostile_names() {
    let scratch = tempfile::tempdir().unwrap();
    let (bin, staging) = (scratch.path().join("bin"), scratch.path().join("bin.patch-1"));
    write(&bin.join("dm-worker/dm-worker"), "old binary");
    write(&bin.join("dm-worker/conf/'q"), "old conf");
    write(&bin.join("dm-worker/old $(touch pwned)"), "added by the patch taken back");
    let moved: Vec<String> = HOSTILE
        .iter()
        .map(|name| format!("dm-worker/{name}"))
        .chain(["dm-worker/dm-worker".into()])
        .collect();
    for path in &moved {
        write(&staging.join("tree").join(path), &format!("new {path}"));
    }
    let taken_away = "dm-worker/old $(touch pwned)";
    let before = contents(&bin);
    let (bin_arg, staging_arg) = (bin.to_str().unwrap(), staging.to_str().unwrap());
    let count = moved.len().to_string();
    let mut args = vec![bin_arg, staging_arg, &count];
    args.extend(moved.iter().map(String::as_str));
    args.push(taken_away);

    ok(run(SWAP, &args, b"", scratch.path()));

    let after: Vec<(String, String)> = contents(&bin);
    let expected: Vec<(String, String)> = {
        let mut files: Vec<_> = moved.iter().map(|p| (p.clone(), format!("new {p}"))).collect();
        files.push(("dm-worker/conf/'q".into(), "old conf".into()));
        files.sort();
        files
    };
    assert_eq!(after, expected);
    let previous = staging.join("previous");
    let added = fs::read_to_string(previous.join(".added")).unwrap();
    let mut added: Vec<&str> = added.lines().collect();
    added.sort_unstable();
    let mut new: Vec<&str> =
        moved.iter().map(String::as_str).filter(|p| *p != "dm-worker/dm-worker").collect();
    new.sort_unstable();
    assert_eq!(added, new, "what the package added");
    assert_eq!(fs::read_to_string(previous.join("dm-worker/dm-worker")).unwrap(), "old binary");

    let mut args = vec![bin_arg, previous.to_str().unwrap()];
    args.extend(moved.iter().map(String::as_str));
    args.push(taken_away);
    ok(run(RESTORE, &args, b"", scratch.path()));

    assert_eq!(contents(&bin), before, "bin/ as it was");
    assert!(!scratch.path().join("pwned").exists(), "a name was run");
}

/// A directory where the package has a file stops the swap before anything moves (exit 3).
#[test]
fn swap_refuses_a_directory_in_the_way() {
    let scratch = tempfile::tempdir().unwrap();
    let (bin, staging) = (scratch.path().join("bin"), scratch.path().join("bin.patch-1"));
    write(&bin.join("dm-worker/dm-worker/inside"), "a directory where a file goes");
    write(&staging.join("tree/dm-worker/dm-worker"), "new");
    let args = [bin.to_str().unwrap(), staging.to_str().unwrap(), "1", "dm-worker/dm-worker"];
    let output = run(SWAP, &args, b"", scratch.path());
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("is a directory"));
    assert!(staging.join("tree/dm-worker/dm-worker").exists(), "nothing moved");
}

/// The package unpacked from stdin is listed, hashed and its binary asked for its version;
/// `copy` lists a copy of it the same way.
#[test]
fn unpack_lists_the_tree_and_its_version_and_copy_the_same() {
    let scratch = tempfile::tempdir().unwrap();
    let source = scratch.path().join("source");
    let binary = source.join("dm-worker/dm-worker");
    write(&binary, "#!/bin/sh\necho 'Release Version: v8.5.2'\n");
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
    write(&source.join("dm-worker/a b.toml"), "x");
    let tar = Command::new("tar").args(["-cf", "-", "-C"]).arg(&source).arg("dm-worker").output();
    let tar = tar.unwrap().stdout;
    let staging = scratch.path().join("deploy/bin.patch-1");
    let reference = scratch.path().join("source/dm-worker/a b.toml");
    let args =
        [staging.to_str().unwrap(), reference.to_str().unwrap(), "dm-worker/dm-worker", "-xf", "-"];

    let stdout = ok(run(UNPACK, &args, &tar, scratch.path()));

    let answer = Answer::parse(&stdout).unwrap();
    let entries: Vec<&str> =
        answer.lines().filter(|(k, _)| *k == "entry").map(|(_, v)| v).collect();
    assert!(entries.iter().any(|e| e.ends_with("\tdm-worker/a b.toml\t")), "{stdout}");
    let hashes = answer.lines().filter(|(k, _)| *k == "sha").count();
    assert_eq!(hashes, 2, "{stdout}");
    let version = answer.block("version").unwrap();
    assert_eq!(version, "Release Version: v8.5.2\nexit status 0\n");

    let copy = scratch.path().join("deploy/bin.patch-2");
    let args =
        [staging.to_str().unwrap(), copy.to_str().unwrap(), reference.to_str().unwrap(), "-"];
    let copied = ok(run(COPY, &args, b"", scratch.path()));
    let listed = |text: &str| -> Vec<String> {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    let unpacked_listing: String =
        stdout.lines().filter(|l| !l.starts_with("version\t")).map(|l| format!("{l}\n")).collect();
    assert_eq!(listed(&copied), listed(&unpacked_listing));
}

/// For a roll (`flush`), unpack and copy write every staged file to disk with `sync -d` (so
/// that the swap, with the service stopped, does not wait for it); offline (`-`) they leave it
/// to the kernel; and a `sync` that knows no `-d` (coreutils before 8.24) changes nothing else.
#[test]
fn a_roll_stages_files_written_to_disk_and_an_old_sync_is_no_matter() {
    let scratch = tempfile::tempdir().unwrap();
    let source = scratch.path().join("source");
    write(&source.join("dm-worker/dm-worker"), "#!/bin/sh\necho 'Release Version: v8.5.2'\n");
    write(&source.join("dm-worker/conf/a b.toml"), "x");
    let tar = Command::new("tar").args(["-cf", "-", "-C"]).arg(&source).arg("dm-worker").output();
    let tar = tar.unwrap().stdout;
    let reference = source.join("dm-worker/conf/a b.toml");
    let reference = reference.to_str().unwrap();
    // A `sync` that notes its arguments, then refuses -d as coreutils 8.22 does.
    let (fake, calls) = (scratch.path().join("fake"), scratch.path().join("sync-calls"));
    let refuse = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\necho \"sync: invalid option -- 'd'\" >&2\nexit 1\n",
        calls.display()
    );
    write(&fake.join("sync"), &refuse);
    fs::set_permissions(fake.join("sync"), fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap());
    let synced = || fs::read_to_string(&calls).unwrap_or_default();

    for flush in ["flush", "-"] {
        let staging = scratch.path().join(format!("deploy/bin.patch-{flush}"));
        let staging = staging.to_str().unwrap();
        let args = [staging, reference, "dm-worker/dm-worker", "-xf", flush];
        let before = synced();
        let stdout = ok(run_with_path(UNPACK, &args, &tar, scratch.path(), &path));
        assert_eq!(Answer::parse(&stdout).unwrap().lines().filter(|(k, _)| *k == "sha").count(), 2);
        let copy = scratch.path().join(format!("deploy/bin.copy-{flush}"));
        let args = [staging, copy.to_str().unwrap(), reference, flush];
        ok(run_with_path(COPY, &args, b"", scratch.path(), &path));
        let calls = synced()[before.len()..].to_owned();
        if flush == "flush" {
            for tree in [format!("{staging}/tree"), format!("{}/tree", copy.display())] {
                for file in ["dm-worker/dm-worker", "dm-worker/conf/a b.toml"] {
                    let named = format!("{tree}/{file}");
                    assert!(calls.contains(&named), "{named} was not synced: {calls}");
                }
            }
            assert!(calls.lines().all(|line| line.starts_with("-d -- ")), "{calls}");
        } else {
            assert_eq!(calls, "", "an offline staging synced");
        }
    }
}

/// TiUP's backup is made once, whole; what a copy cut short left is replaced.
#[test]
fn backup_is_made_once_and_never_from_a_partial_copy() {
    let scratch = tempfile::tempdir().unwrap();
    let (bin, backup) = (scratch.path().join("bin"), scratch.path().join("bin.old.v8.5.1"));
    write(&bin.join("dm-worker/dm-worker"), "original");
    write(&scratch.path().join("bin.old.v8.5.1.partial/leftover"), "cut short");
    let args = [bin.to_str().unwrap(), backup.to_str().unwrap()];

    ok(run(BACKUP, &args, b"", scratch.path()));
    write(&bin.join("dm-worker/dm-worker"), "patched");
    ok(run(BACKUP, &args, b"", scratch.path()));

    assert_eq!(contents(&backup), [("dm-worker/dm-worker".to_owned(), "original".to_owned())]);
    assert!(!scratch.path().join("bin.old.v8.5.1.partial").exists());
}

/// A binary that floods its answer is read 4 KiB at most, then stopped.
#[test]
fn a_version_answer_is_bounded() {
    let scratch = tempfile::tempdir().unwrap();
    let binary = scratch.path().join("floods");
    write(&binary, "#!/bin/sh\nwhile :; do echo 'Release Version: v8.5.2'; done\n");
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
    let stdout = ok(run(VERSION, &[binary.to_str().unwrap()], b"", scratch.path()));
    let block = Answer::parse(&stdout).unwrap().block("version").unwrap();
    assert!(block.starts_with("Release Version: v8.5.2\n"), "{block}");
    assert!(block.len() <= 4096 + 1, "{} bytes", block.len());
}

/// `cleanup` removes a dir, or a deploy dir's staging dirs and nothing else of it.
#[test]
fn cleanup_removes_staging_dirs_and_named_dirs_only() {
    let scratch = tempfile::tempdir().unwrap();
    let deploy = scratch.path().join("deploy $(touch pwned) *");
    for dir in ["bin.patch-1a2b3c4", "bin.patch-5d6e7f8", "bin", "bin.old.v8.5.1"] {
        write(&deploy.join(dir).join("file"), "x");
    }
    let point = scratch.path().join("point 'x'");
    write(&point.join("file"), "x");
    let args = ["staging", deploy.to_str().unwrap(), "dir", point.to_str().unwrap()];

    ok(run(CLEANUP, &args, b"", scratch.path()));

    let mut left: Vec<String> = fs::read_dir(&deploy)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["bin", "bin.old.v8.5.1"]);
    assert!(!point.exists());
    assert!(!scratch.path().join("pwned").exists(), "a name was run");
}

/// What a patch replaced becomes a rollback point with its manifest; the oldest points go; the
/// instance's staging dirs go too (this run's and an older one's), and nothing else.
#[test]
fn keep_point_keeps_the_newest_points_with_a_manifest() {
    let scratch = tempfile::tempdir().unwrap();
    let deploy = scratch.path().join("deploy 'a' $(touch pwned)");
    let previous = deploy.join("bin.patch-1234567/previous");
    write(&previous.join("dm-worker/dm-worker"), "old");
    write(&deploy.join("bin.patch-1234567/tree/dm-worker/dm-worker"), "new");
    write(&deploy.join("bin.patch-7654321/tree/dm-worker/dm-worker"), "an older run's");
    write(&deploy.join("bin/dm-worker/dm-worker"), "new");
    let points = deploy.join("bin.rollback");
    for older in ["20260101T000000.000Z-aaaaaaa", "20260201T000000.000Z-bbbbbbb"] {
        write(&points.join(older).join(".manifest"), "from v1\n");
    }
    let (previous_arg, points_arg) = (previous.to_str().unwrap(), points.to_str().unwrap());
    let stamp = "20261204T000000.000Z-1234567";
    let manifest = "from v8.5.1\nto v8.5.2\n";
    let deploy_arg = deploy.to_str().unwrap();
    let args = [previous_arg, points_arg, stamp, manifest, "dm-worker/dm-worker", "2", deploy_arg];

    let stdout = ok(run(KEEP_POINT, &args, b"", scratch.path()));

    let point = points.join(stamp);
    let said: Vec<(String, String)> = Answer::parse(&stdout)
        .unwrap()
        .lines()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    let sha_of_old: String =
        sha2::Sha256::digest(b"old").iter().map(|byte| format!("{byte:02x}")).collect();
    let kept = ("kept".to_owned(), point.display().to_string());
    let cleaned = ("cleaned".to_owned(), deploy.display().to_string());
    assert_eq!(said, [("binary".to_owned(), sha_of_old.clone()), kept, cleaned.clone()]);
    let manifest = fs::read_to_string(point.join(".manifest")).unwrap();
    assert_eq!(manifest, format!("from v8.5.1\nto v8.5.2\nbinary {sha_of_old}\n"));
    let mut left: Vec<String> = fs::read_dir(&points)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["20260201T000000.000Z-bbbbbbb", stamp], "the newest two");
    assert!(!previous.exists(), "previous/ became the point");
    let mut in_deploy: Vec<String> = fs::read_dir(&deploy)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    in_deploy.sort();
    assert_eq!(in_deploy, ["bin", "bin.rollback"], "the staging dirs went, nothing else");
    assert!(!scratch.path().join("pwned").exists(), "a name was run");

    // Nothing replaced, nothing kept; the staging dirs are gone all the same.
    let stdout = ok(run(KEEP_POINT, &args, b"", scratch.path()));
    let said: Vec<(String, String)> = Answer::parse(&stdout)
        .unwrap()
        .lines()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    assert_eq!(said, [cleaned]);
}

/// What an earlier run kept: its staging dir's previous/ when it holds the binary, else its
/// newest rollback point.
#[test]
fn kept_finds_previous_then_the_newest_point_of_the_package() {
    let scratch = tempfile::tempdir().unwrap();
    let deploy = scratch.path().join("deploy $(touch pwned)");
    let previous = deploy.join("bin.patch-1234567/previous");
    let points = deploy.join("bin.rollback");
    for point in ["20260101T0-1234567", "20260301T0-1234567", "20260401T0-7654321"] {
        write(&points.join(point).join(".manifest"), "from v1\n");
    }
    let args = |previous: &Path| {
        let list = [previous, &points].map(|p| p.to_str().unwrap().to_owned());
        [list[0].clone(), list[1].clone(), "1234567".to_owned(), "dm-worker/dm-worker".to_owned()]
    };
    let kept = |stdout: String| stdout.strip_prefix("kept\t").map(|d| d.trim_end().to_owned());

    let said = ok(run(KEPT, &args(&previous).each_ref().map(String::as_str), b"", scratch.path()));
    assert_eq!(kept(said), Some(points.join("20260301T0-1234567").display().to_string()));

    write(&previous.join("dm-worker/dm-worker"), "old");
    let said = ok(run(KEPT, &args(&previous).each_ref().map(String::as_str), b"", scratch.path()));
    assert_eq!(kept(said), Some(previous.display().to_string()));
    assert!(!scratch.path().join("pwned").exists(), "a name was run");
}

/// What preflight asks of an instance: space, the backup still to make, the binary (hashed
/// only at the package binary's size) and which of the package's other files differ.
#[test]
fn facts_say_the_binary_and_which_other_files_differ() {
    let scratch = tempfile::tempdir().unwrap();
    let deploy = scratch.path().join("deploy $(touch pwned)");
    let binary = deploy.join("bin/dm-worker/dm-worker");
    let script = "#!/bin/sh\necho 'Release Version: v8.5.1'\n";
    write(&binary, script);
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).unwrap();
    write(&deploy.join("bin/dm-worker/a b.toml"), "same");
    std::os::unix::fs::symlink("elsewhere", deploy.join("bin/dm-worker/link")).unwrap();
    let sha = |bytes: &[u8]| -> String {
        sha2::Sha256::digest(bytes).iter().map(|byte| format!("{byte:02x}")).collect()
    };
    let (same, size) = (sha(b"same"), script.len().to_string());
    let (deploy_arg, binary_arg) = (deploy.to_str().unwrap(), binary.to_str().unwrap());
    let backup = deploy.join("bin.old.v8.5.1");
    let binary_sha = sha(script.as_bytes());
    let backup = backup.to_str().unwrap();
    let head = [deploy_arg, binary_arg, backup, "bin.rollback", &size, &binary_sha, "", "x"];
    let others = ["file", "dm-worker/a b.toml", &same, "link", "dm-worker/link", "dm-worker"];
    let args: Vec<&str> = head.iter().chain(&others).copied().collect();

    let stdout = ok(run(FACTS, &args, b"", scratch.path()));

    let answer = Answer::parse(&stdout).unwrap();
    let said =
        |key: &str| answer.lines().filter(|(k, _)| *k == key).map(|(_, v)| v).collect::<Vec<_>>();
    assert!(said("free")[0].parse::<u64>().unwrap() > 0, "{stdout}");
    assert!(said("backup")[0].parse::<u64>().is_ok(), "still to make: {stdout}");
    assert_eq!(said("size"), [size.as_str()]);
    assert_eq!(said("sha256"), [sha(script.as_bytes()).as_str()]);
    assert_eq!(said("differs"), ["dm-worker/link"], "{stdout}");
    assert_eq!(answer.block("version").unwrap(), "Release Version: v8.5.1\nexit status 0\n");
    assert!(!scratch.path().join("pwned").exists(), "a name was run");

    let missing = ["/no/such/deploy", binary_arg, "/b", "bin.rollback", "1", "-", "", "x"];
    assert_eq!(ok(run(FACTS, &missing, b"", scratch.path())), "deploy\tmissing\n");

    // Another binary of the same size: the other files decide nothing, and are not hashed.
    let other_binary = "0".repeat(64);
    let head = [deploy_arg, binary_arg, backup, "bin.rollback", &size, &other_binary, "", "x"];
    let args: Vec<&str> = head.iter().chain(&others).copied().collect();
    let stdout = ok(run(FACTS, &args, b"", scratch.path()));
    let answer = Answer::parse(&stdout).unwrap();
    assert!(answer.lines().any(|(key, _)| key == "sha256"), "{stdout}");
    assert!(!answer.lines().any(|(key, _)| key == "differs"), "{stdout}");
}

/// What an instance could go back to: what it runs, its newest point, TiUP's backup and what
/// bin/ has beyond it, and what a patch cut short left (not what a rollback left).
#[test]
fn survey_says_what_an_instance_could_go_back_to() {
    let scratch = tempfile::tempdir().unwrap();
    let deploy = scratch.path().join("deploy $(touch pwned)");
    let version = |release: &str| {
        format!("#!/bin/sh\necho 'Release Version: {release}'\necho 'Git Commit Hash: 1a2b3c4'\n")
    };
    let executable = |path: &Path, text: &str| {
        write(path, text);
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    };
    executable(&deploy.join("bin/dm-worker/dm-worker"), &version("v8.5.3"));
    write(&deploy.join("bin/dm-worker/hotfix a.toml"), "added");
    executable(&deploy.join("bin.old.v8.5.1/dm-worker/dm-worker"), &version("v8.5.1"));
    let point = deploy.join("bin.rollback/20261204T0-1234567");
    write(&point.join(".manifest"), "from v8.5.2 (1a2b3c4)\nto v8.5.3 (1a2b3c4)\naction patch\n");
    write(&point.join(".added"), "dm-worker/hotfix a.toml\n");
    let cut = deploy.join("bin.patch-7654321");
    executable(&cut.join("previous/dm-worker/dm-worker"), &version("v8.5.2"));
    write(&cut.join("action"), "patch\n");
    write(&deploy.join("bin.patch-1111111/action"), "rollback\n");
    let args = [deploy.to_str().unwrap(), "dm-worker", "v8.5.1", "bin.rollback"];

    let stdout = ok(run(SURVEY, &args, b"", scratch.path()));

    let answer = Answer::parse(&stdout).unwrap();
    let said =
        |key: &str| answer.lines().filter(|(k, _)| *k == key).map(|(_, v)| v).collect::<Vec<_>>();
    assert_eq!(said("running.release"), ["v8.5.3"], "{stdout}");
    assert_eq!(said("running.hash"), ["1a2b3c4"], "{stdout}");
    assert_eq!(said("running.binary")[0].len(), 64, "{stdout}");
    assert_eq!(said("point.dir"), [point.to_str().unwrap()]);
    assert_eq!(said("point.from"), ["v8.5.2 (1a2b3c4)"]);
    assert_eq!(said("point.action"), ["patch"]);
    assert_eq!(said("point.added"), ["dm-worker/hotfix a.toml"]);
    assert_eq!(said("original.release"), ["v8.5.1"]);
    assert_eq!(said("extra"), ["dm-worker/hotfix a.toml"]);
    let cut_previous = cut.join("previous");
    assert_eq!(
        said("cut.dir"),
        [cut_previous.to_str().unwrap()],
        "the patch's, not the rollback's"
    );
    assert_eq!(said("cut.release"), ["v8.5.2"]);
    assert!(!scratch.path().join("pwned").exists(), "a name was run");
}

/// A rollback target's tree travels as a gzipped tar, without its .manifest and .added.
#[test]
fn pack_sends_the_tree_without_the_points_own_files() {
    let scratch = tempfile::tempdir().unwrap();
    let point = scratch.path().join("point $(touch pwned)");
    write(&point.join("dm-worker/dm-worker"), "binary");
    write(&point.join("dm-worker/a b.toml"), "conf");
    write(&point.join(".manifest"), "from v1\n");
    write(&point.join(".added"), "x\n");

    let packed = run(PACK, &[point.to_str().unwrap()], b"", scratch.path());
    assert!(packed.status.success(), "{}", String::from_utf8_lossy(&packed.stderr));

    let listed = Command::new("tar")
        .args(["-tzf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut listed = listed;
    listed.stdin.take().unwrap().write_all(&packed.stdout).unwrap();
    let names = String::from_utf8(listed.wait_with_output().unwrap().stdout).unwrap();
    let mut names: Vec<&str> = names.lines().collect();
    names.sort_unstable();
    assert_eq!(names, ["dm-worker/", "dm-worker/a b.toml", "dm-worker/dm-worker"]);
    assert!(!scratch.path().join("pwned").exists(), "a name was run");
}

/// `stop` asks the systemd of the scope (`--user` for user units) to stop the unit, then what
/// it says of it; a stop that fails is the script's failure.
#[test]
fn stop_stops_in_the_scope_then_says_the_state() {
    let scratch = tempfile::tempdir().unwrap();
    let calls = scratch.path().join("calls");
    let stand_in = scratch.path().join("systemctl");
    let script = format!(
        "#!/bin/sh\nprintf '%s|' \"$@\" >> '{}'\necho >> '{}'\n\
         case \"$*\" in *is-active*) echo inactive; exit 3 ;; *fail*) exit 1 ;; esac\n",
        calls.display(),
        calls.display()
    );
    write(&stand_in, &script);
    fs::set_permissions(&stand_in, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", scratch.path().display(), std::env::var("PATH").unwrap());
    let stop = |scope: &str, unit: &str| {
        Command::new("bash")
            .arg("-c")
            .arg(STOP.command([scope, unit]))
            .env("PATH", &path)
            .current_dir(scratch.path())
            .output()
            .unwrap()
    };

    let stopped = stop("user", "dm-worker $(touch pwned).service");
    assert_eq!(ok(stopped), "state\tinactive\n");
    let said = fs::read_to_string(&calls).unwrap();
    let expected = "--user|stop|dm-worker $(touch pwned).service|\n\
                    --user|is-active|dm-worker $(touch pwned).service|\n";
    assert_eq!(said, expected);
    assert!(!stop("system", "fail.service").status.success(), "a failed stop fails");
    assert!(fs::read_to_string(&calls).unwrap().ends_with("stop|fail.service|\n"));
    assert!(!scratch.path().join("pwned").exists(), "a name was run");
}

/// `go` lets the next step of a roll's command run only on the word `go`: the end of its input
/// (a dm-patch that is gone) or any other word stops the command there; it reads one line, so
/// the next step's word is left for the next `go`.
#[test]
fn go_goes_on_the_word_go_only() {
    let scratch = tempfile::tempdir().unwrap();
    assert_eq!(ok(run(GO, &[], b"go\n", scratch.path())), "");
    assert!(!run(GO, &[], b"", scratch.path()).status.success(), "no word");
    assert!(!run(GO, &[], b"stop\n", scratch.path()).status.success(), "another word");
    assert!(!run(GO, &[], b"go on\n", scratch.path()).status.success(), "more than the word");

    let go = GO.command::<_, &str>([]);
    let both = format!("{go} && echo first && {go} && echo second");
    let two_words = Command::new("bash")
        .arg("-c")
        .arg(format!("printf 'go\\n' | {{ {both}; }}"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&two_words.stdout), "first\n", "one word, one step");
}
