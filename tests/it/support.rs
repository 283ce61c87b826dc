//! What every test needs: the one way to run `dm-patch` ([`dm_patch`]), what a run gave
//! ([`Run`]), and a throwaway TiUP store with packages for tests that need no hosts
//! (`Store::demo()`, then `store.run([...])` or `store.refused([...])`).

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::process::Command;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::Value;
use tempfile::TempDir;

pub const META_V3: &str = include_str!("fixtures/meta-v3.yaml");
pub const META_V2: &str = include_str!("fixtures/meta-v2.yaml");

/// `dm-patch` with `tiup_home` as TIUP_HOME in a clean, colourless environment.
pub fn dm_patch(tiup_home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dm-patch"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TIUP_HOME", tiup_home)
        .env("NO_COLOR", "1");
    command
}

/// What one run of `dm-patch` gave. The assertions print stderr when they fail.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn of(command: &mut Command) -> Run {
        let output = command.output().expect("dm-patch runs");
        Run {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
        }
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn code(self, code: i32) -> Run {
        assert_eq!(self.code, Some(code), "stderr:\n{}", self.stderr);
        self
    }

    #[track_caller]
    pub fn success(self) -> Run {
        self.code(0)
    }

    /// stdout as the one JSON document of `--format json`.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| {
            panic!("stdout is not JSON ({err}): {}\nstderr: {}", self.stdout, self.stderr)
        })
    }

    /// A patch report's instances as `(id, outcome)`, in the order they were visited.
    #[track_caller]
    pub fn outcomes(&self) -> Vec<(String, String)> {
        let report = self.json();
        let instances = report["instances"].as_array().expect("a patch report");
        instances.iter().map(|i| (text(&i["id"]), text(&i["outcome"]))).collect()
    }

    /// Just the outcomes, in order.
    #[track_caller]
    pub fn outcome_names(&self) -> Vec<String> {
        self.outcomes().into_iter().map(|(_, o)| o).collect()
    }
}

fn text(value: &Value) -> String {
    value.as_str().expect("a string").to_owned()
}

/// A throwaway TiUP home.
pub struct Store {
    dir: TempDir,
}

impl Store {
    pub fn new() -> Store {
        Store { dir: tempfile::tempdir().expect("temp dir") }
    }

    /// A store with the cluster `demo` (yaml.v3, 3 masters and 3 workers on 127.0.9.x, where
    /// nothing listens).
    pub fn demo() -> Store {
        Store::new().cluster("demo", META_V3)
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    pub fn cluster_dir(&self, name: &str) -> PathBuf {
        self.home().join("storage/dm/clusters").join(name)
    }

    /// Writes `storage/dm/clusters/<name>/meta.yaml` (and an ssh/ dir, as TiUP has).
    pub fn cluster(self, name: &str, meta: &str) -> Store {
        let dir = self.cluster_dir(name);
        fs::create_dir_all(dir.join("ssh")).unwrap();
        fs::write(dir.join("meta.yaml"), meta).unwrap();
        self
    }

    pub fn meta(&self, name: &str) -> String {
        fs::read_to_string(self.cluster_dir(name).join("meta.yaml")).unwrap()
    }

    /// A package file built from `entries`, under the store's temp dir.
    pub fn package(&self, file_name: &str, entries: &[Entry]) -> String {
        let path = self.home().join(file_name);
        write_package(&path, entries);
        path.display().to_string()
    }

    /// A well-formed package of `comp` holding a small script.
    pub fn good_package(&self, comp: &str) -> String {
        self.package(
            &format!("{comp}-hotfix.tar.gz"),
            &[Entry::file(&format!("{comp}/{comp}"), 0o755, b"#!/bin/sh\necho hotfix\n")],
        )
    }

    /// A file of `bytes` under the store's temp dir.
    pub fn file(&self, file_name: &str, bytes: &[u8]) -> String {
        let path = self.home().join(file_name);
        fs::write(&path, bytes).unwrap();
        path.display().to_string()
    }

    /// `dm-patch` with this store as TIUP_HOME.
    pub fn dm_patch<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = dm_patch(self.home());
        command.args(args);
        command
    }

    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Run::of(&mut self.dm_patch(args))
    }

    /// Runs `args` as bad input: exit 2, one line on stderr, nothing on stdout, and the demo
    /// cluster's meta.yaml unchanged. Returns that line with paths redacted.
    #[track_caller]
    pub fn refused(&self, args: &[&str]) -> String {
        let before = self.meta("demo");
        let run = self.run(args).code(2);
        assert!(run.stdout.is_empty(), "{run:?}");
        assert_eq!(self.meta("demo"), before, "meta.yaml changed");
        assert_eq!(run.stderr.lines().count(), 1, "one line expected: {run:?}");
        self.redact(&run.stderr)
    }

    /// Replaces this store's temp path with `[HOME]` so snapshots are stable.
    pub fn redact(&self, text: &str) -> String {
        text.replace(&self.home().display().to_string(), "[HOME]")
    }
}

/// Writes a package (gzip tarball) of `entries` at `path`.
pub fn write_package(path: &Path, entries: &[Entry]) {
    let encoder = GzEncoder::new(fs::File::create(path).unwrap(), Compression::fast());
    let mut tar = tar::Builder::new(encoder);
    for entry in entries {
        entry.append_to(&mut tar);
    }
    tar.into_inner().unwrap().finish().unwrap();
}

/// One tar entry; the raw header lets tests build the hostile entries that `tar::Builder`
/// itself refuses to write.
#[derive(Clone)]
pub struct Entry {
    path: String,
    kind: tar::EntryType,
    mode: u32,
    data: Vec<u8>,
    link: Option<String>,
}

impl Entry {
    pub fn file(path: &str, mode: u32, data: &[u8]) -> Entry {
        Entry {
            path: path.to_owned(),
            kind: tar::EntryType::Regular,
            mode,
            data: data.to_vec(),
            link: None,
        }
    }

    pub fn dir(path: &str) -> Entry {
        Entry {
            path: path.to_owned(),
            kind: tar::EntryType::Directory,
            mode: 0o755,
            data: Vec::new(),
            link: None,
        }
    }

    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry {
            path: path.to_owned(),
            kind: tar::EntryType::Symlink,
            mode: 0o777,
            data: Vec::new(),
            link: Some(target.to_owned()),
        }
    }

    /// The first bytes of an ELF executable for `machine` (62 x86-64, 183 aarch64).
    pub fn elf(path: &str, machine: u16) -> Entry {
        let mut data = vec![0u8; 64];
        data[..4].copy_from_slice(b"\x7fELF");
        data[4] = 2; // 64-bit
        data[5] = 1; // little endian
        data[18..20].copy_from_slice(&machine.to_le_bytes());
        Entry::file(path, 0o755, &data)
    }

    fn append_to<W: Write>(&self, tar: &mut tar::Builder<W>) {
        let mut header = tar::Header::new_gnu();
        let name = &mut header.as_old_mut().name;
        name[..self.path.len()].copy_from_slice(self.path.as_bytes());
        header.set_entry_type(self.kind);
        header.set_mode(self.mode);
        header.set_size(self.data.len() as u64);
        if let Some(link) = &self.link {
            header.set_link_name(link).unwrap();
        }
        header.set_cksum();
        tar.append(&header, self.data.as_slice()).unwrap();
    }
}

/// Waits for `child` and returns its exit status and peak resident memory (KiB), from the
/// kernel's own accounting (`wait4`), so nothing the test does is counted.
pub fn wait_with_peak_rss(child: &mut std::process::Child) -> (std::process::ExitStatus, i64) {
    use std::os::unix::process::ExitStatusExt;
    let mut status = 0;
    // SAFETY: rusage is plain data the kernel fills in; the pid is our own child, not yet reaped.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    (std::process::ExitStatus::from_raw(status), usage.ru_maxrss)
}

/// Makes `path` immutable (`chattr +i`) for as long as it lives, so a test can make the store
/// unwritable even as root; the attribute is removed when it is dropped, whatever the test did.
pub struct Immutable(PathBuf);

impl Immutable {
    pub fn new(path: impl Into<PathBuf>) -> Immutable {
        let path = path.into();
        let status = Command::new("chattr").arg("+i").arg(&path).status();
        assert!(status.expect("chattr (e2fsprogs) is installed").success(), "chattr +i");
        Immutable(path)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// A small tmpfs mounted on a new temp dir for as long as it lives (a file system a test can
/// fill); unmounted and removed when it is dropped, whatever the test did.
pub struct SmallFileSystem {
    dir: TempDir,
}

impl SmallFileSystem {
    pub fn mount(size: &str) -> SmallFileSystem {
        let dir = tempfile::Builder::new().prefix("dm-patch-small-fs-").tempdir().unwrap();
        let options = format!("size={size}");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
            .arg(dir.path())
            .status();
        assert!(status.expect("mount runs").success(), "mount a tmpfs (as root)");
        SmallFileSystem { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes zeros to a file in it until the file system is full.
    pub fn fill(&self) {
        let mut file = fs::File::create(self.path().join("filler")).unwrap();
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
    }
}

impl Drop for SmallFileSystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Runs the ignored test `name` of this test binary in a process of its own, with `env`, and
/// returns the number it printed as `<key>=<number>`. Memory is measured that way: the kernel
/// counts the peak of whatever process starts a program in that program's peak, and this
/// process holds every test running beside it.
#[track_caller]
pub fn number_from_child_test(name: &str, env: &[(&str, &OsStr)], key: &str) -> u64 {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", name, "--nocapture", "--test-threads=1"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert!(child.status.success(), "{stdout}\n{stderr}");
    let prefix = format!("{key}=");
    stdout
        .lines()
        .find_map(|line| line.split(prefix.as_str()).nth(1))
        .unwrap_or_else(|| panic!("{name} printed no {key}:\n{stdout}\n{stderr}"))
        .parse()
        .unwrap()
}

/// Checks `document` against the JSON Schema `docs/schema/<schema>.json`: the contract
/// scripts rely on (see docs/json.md).
#[track_caller]
pub fn conforms(schema: &str, document: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("docs/schema/{schema}.json"));
    let text = fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path:?}: {err}"));
    let schema_value: Value = serde_json::from_str(&text).expect("a schema is JSON");
    let validator = jsonschema::validator_for(&schema_value).expect("a valid JSON Schema");
    let errors: Vec<String> = validator.iter_errors(document).map(|err| err.to_string()).collect();
    assert!(errors.is_empty(), "not a {schema} document: {errors:#?}\n{document:#}");
}
