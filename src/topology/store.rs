//! TiUP's store on disk: `$TIUP_HOME/storage/dm/clusters/<name>/`, the very files `tiup dm`
//! reads, so an operator can switch between the two tools freely.

use std::fs::{self, File, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::marks::{self, Mark};
use super::meta::{InstanceSpec, Meta};
use super::tls::TlsFileError;
use super::{Cluster, Role, yaml_v3};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "no TiUP home: set TIUP_HOME or pass --tiup-home (HOME is not set either, so ~/.tiup cannot be used)"
    )]
    NoHome,
    #[error(
        "invalid cluster name '{0}': use only letters, digits, '-', '_' and '.' (as `tiup dm` does)"
    )]
    BadName(String),
    #[error(
        "cluster '{name}' not found: {dir} does not exist; check the name with `ls {parent}` or point --tiup-home at the right TiUP home"
    )]
    NotFound { name: String, dir: String, parent: String },
    #[error("cannot read {path}: {source}; check its permissions")]
    Read { path: String, source: io::Error },
    #[error("invalid {path}: {message}; fix the file or restore it from a backup")]
    Parse { path: String, message: String },
    #[error("cannot write {path}: {source}; meta.yaml was left as it was")]
    Write { path: String, source: io::Error },
    #[error(
        "cannot write {path} ({source}); dm-patch saves meta.yaml as each instance finishes, so it \
         touches no host until the store is writable: check its permissions, free space, `lsattr` and \
         mounts"
    )]
    NotWritable { path: String, source: io::Error },
    #[error(
        "cluster '{0}' is locked by another dm-patch run; wait for it to finish (or end it) and try again"
    )]
    Locked(String),
    #[error(
        "TLS file {0}; meta.yaml sets global.enable_tls, so DM is reached with the cluster's CA \
         and client certificate from the store's tls/ directory, as `tiup dm` does: restore the file"
    )]
    Tls(#[source] TlsFileError),
}

/// `$TIUP_HOME`: where TiUP keeps every cluster it manages.
#[derive(Debug, Clone)]
pub struct Store {
    home: PathBuf,
}

impl Store {
    /// `explicit` (from `--tiup-home`), else `$TIUP_HOME`, else `~/.tiup`.
    pub fn locate(explicit: Option<PathBuf>) -> Result<Store, StoreError> {
        let home = explicit
            .or_else(|| std::env::var_os("TIUP_HOME").filter(|v| !v.is_empty()).map(PathBuf::from))
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".tiup")))
            .ok_or(StoreError::NoHome)?;
        Ok(Store { home })
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    fn clusters_dir(&self) -> PathBuf {
        self.home.join("storage").join("dm").join("clusters")
    }

    /// Where dm-patch keeps one record per run, beside TiUP's own audit log.
    pub fn audit_dir(&self) -> PathBuf {
        self.home.join("storage").join("dm").join("audit")
    }

    /// Loads `<name>/meta.yaml` and resolves its instances; for a TLS cluster, also reads and
    /// checks the CA and client certificate in `<name>/tls/`.
    pub fn load(&self, name: &str) -> Result<Cluster, StoreError> {
        let dir = self.cluster_dir(name)?;
        let path = dir.join("meta.yaml");
        let display = path.display().to_string();
        let text = read_meta(&path)
            .map_err(|source| StoreError::Read { path: display.clone(), source })?;
        let invalid = |message: String| StoreError::Parse { path: display.clone(), message };
        if text.trim().is_empty() {
            return Err(invalid("the file is empty".to_owned()));
        }
        let meta: Meta = yaml_serde::from_str(&text).map_err(|err| invalid(err.to_string()))?;
        let mut cluster = Cluster::new(name, &dir, meta).map_err(|err| invalid(err.to_string()))?;
        if cluster.instances.is_empty() {
            return Err(invalid(
                "it lists no dm-master and no dm-worker (is `topology` missing?)".to_owned(),
            ));
        }
        cluster.load_tls().map_err(StoreError::Tls)?;
        Ok(cluster)
    }

    /// Takes the cluster's exclusive lock, failing at once if another run holds it. The lock is
    /// an advisory `flock` on the cluster directory itself, so it adds no file to TiUP's store
    /// and is released by the kernel however the process ends.
    pub fn lock(&self, name: &str) -> Result<ClusterLock, StoreError> {
        let dir = self.cluster_dir(name)?;
        let handle = File::open(&dir)
            .map_err(|source| StoreError::Read { path: dir.display().to_string(), source })?;
        match handle.try_lock() {
            Ok(()) => Ok(ClusterLock { store: self.clone(), _handle: handle }),
            Err(TryLockError::WouldBlock) => Err(StoreError::Locked(name.to_owned())),
            Err(TryLockError::Error(source)) => {
                Err(StoreError::Read { path: dir.display().to_string(), source })
            }
        }
    }

    fn cluster_dir(&self, name: &str) -> Result<PathBuf, StoreError> {
        let valid = !name.is_empty()
            && name != "."
            && name != ".."
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid {
            return Err(StoreError::BadName(name.to_owned()));
        }
        let parent = self.clusters_dir();
        let dir = parent.join(name);
        if !dir.is_dir() {
            return Err(StoreError::NotFound {
                name: name.to_owned(),
                dir: dir.display().to_string(),
                parent: parent.display().to_string(),
            });
        }
        Ok(dir)
    }
}

/// The largest meta.yaml read: TiUP's are a few KiB; anything near this is not one.
const META_MAX_BYTES: u64 = 16 << 20;

/// Reads meta.yaml, refusing what is not a regular file of sane size (see [`read_small_file`]).
fn read_meta(path: &Path) -> io::Result<String> {
    read_small_file(path, META_MAX_BYTES)
}

/// Reads a file of the store that is at most `max` bytes, refusing what is not a regular file:
/// a FIFO would block even the open, a link to /dev/zero would never end. It is looked at
/// before it is opened, and read no further than `max` whatever it grows to.
pub fn read_small_file(path: &Path, max: u64) -> io::Result<String> {
    let metadata = fs::metadata(path)?;
    if !metadata.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if metadata.len() > max {
        return Err(io::Error::other(format!("{} bytes, more than it ever holds", metadata.len())));
    }
    let mut text = String::new();
    File::open(path)?.take(max).read_to_string(&mut text)?;
    Ok(text)
}

/// Proof that this process holds the cluster's lock; saving meta.yaml requires one.
#[derive(Debug)]
pub struct ClusterLock {
    store: Store,
    _handle: File,
}

impl ClusterLock {
    /// The store the locked cluster lives in.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// Writes the cluster's `patched` marks into its meta.yaml, atomically: a temporary file in the
/// same directory, fsync, rename, fsync of the directory. A crash leaves either the old file or
/// the new one.
///
/// The marks go into meta.yaml as it is on disk now, not as it was read at the start: during a
/// long roll an operator may change the cluster with TiUP (`tiup dm edit-config`), which takes
/// no lock of ours, and what TiUP wrote is kept. Only `patched` is dm-patch's to write.
pub fn save(cluster: &Cluster, _lock: &ClusterLock) -> Result<(), StoreError> {
    let path = cluster.dir.join("meta.yaml");
    let write_error =
        |source: io::Error| StoreError::Write { path: path.display().to_string(), source };
    let (on_disk, meta) = with_patched_marks(cluster, &path).map_err(write_error)?;
    let value = yaml_serde::to_value(&meta).map_err(|err| write_error(io::Error::other(err)))?;
    // The file as it is with only its marks changed, when that edit reads as the meta meant;
    // else written whole, as current TiUP writes it.
    let marks: Vec<Mark> = cluster
        .instances
        .iter()
        .map(|i| Mark { role: i.role, host: &i.host, port: i.port, patched: i.patched })
        .collect();
    let edited = marks::with_marks(&on_disk, &marks).filter(|edited| reads_as(edited, &value));
    let text = match edited {
        Some(text) => text,
        None => yaml_v3::to_string(&value).map_err(|err| write_error(io::Error::other(err)))?,
    };

    let mut temp = tempfile::Builder::new()
        .prefix(".meta.yaml.")
        .tempfile_in(&cluster.dir)
        .map_err(write_error)?;
    temp.write_all(text.as_bytes()).map_err(write_error)?;
    // Keep the file's mode: TiUP writes meta.yaml 0644.
    let mode = fs::metadata(&path).map(|m| m.permissions()).ok();
    if let Some(mode) = mode {
        temp.as_file().set_permissions(mode).map_err(write_error)?;
    }
    temp.as_file().sync_all().map_err(write_error)?;
    temp.persist(&path).map_err(|err| write_error(err.error))?;
    File::open(&cluster.dir).and_then(|dir| dir.sync_all()).map_err(write_error)
}

/// meta.yaml as it is on disk, with each of the cluster's instances marked `patched` (or not)
/// as `cluster` says. Instances are matched by role, host and port; one that is no longer
/// listed (scaled in meanwhile) has nothing to mark, unless this process marked it: a
/// meta.yaml that lost an instance the run changed (emptied, or its port changed) is not the
/// cluster the run patched, and is never written (the marks are said to be missing instead).
fn with_patched_marks(cluster: &Cluster, path: &Path) -> io::Result<(String, Meta)> {
    let text = read_meta(path)?;
    let mut meta: Meta = yaml_serde::from_str(&text).map_err(|err| {
        io::Error::other(format!("it changed on disk and no longer reads as meta.yaml: {err}"))
    })?;
    let mut lost = Vec::new();
    for instance in &cluster.instances {
        let topology = &mut meta.topology;
        let list = match instance.role {
            Role::Master => topology.master_servers.as_mut(),
            Role::Worker => topology.worker_servers.as_mut(),
        };
        let default_port = instance.role.default_port();
        let same = |spec: &&mut InstanceSpec| {
            spec.host == instance.host && spec.port.unwrap_or(default_port) == instance.port
        };
        match list.and_then(|list| list.iter_mut().find(same)) {
            Some(spec) => spec.patched = instance.patched.then_some(true),
            None if cluster.marked(instance) => lost.push(instance.id()),
            None => {}
        }
    }
    if !lost.is_empty() {
        return Err(io::Error::other(format!(
            "it changed on disk and no longer lists {} (emptied, or edited meanwhile), so it \
             was left as it is",
            lost.join(", ")
        )));
    }
    Ok((text, meta))
}

/// Whether `text` reads as meta.yaml with the same content as `value`.
fn reads_as(text: &str, value: &yaml_serde::Value) -> bool {
    let meta = yaml_serde::from_str::<Meta>(text);
    meta.ok().and_then(|meta| yaml_serde::to_value(&meta).ok()).as_ref() == Some(value)
}

/// Proves, before any host is touched, that meta.yaml can be saved (a file can be created
/// beside it and it can be opened for writing: an immutable or read-only store fails here)
/// and, when `patch_dir` is asked for, that the package can be kept in `patch/`.
pub fn check_writable(
    cluster: &Cluster,
    lock: &ClusterLock,
    patch_dir: bool,
) -> Result<(), StoreError> {
    let not_writable = |path: &Path, source: io::Error| StoreError::NotWritable {
        path: path.display().to_string(),
        source,
    };
    let meta = cluster.dir.join("meta.yaml");
    // Room for what the run writes, not only the right to: meta.yaml saved again beside itself
    // (a temporary copy, renamed), and the audit record.
    let meta_size = fs::metadata(&meta).map(|m| m.len()).unwrap_or(0);
    let mut probes = vec![(cluster.dir.clone(), meta_size + WRITE_ROOM)];
    let audit = lock.store().audit_dir();
    let audit = if audit.is_dir() { audit } else { audit.parent().unwrap_or(&audit).to_owned() };
    if audit.is_dir() {
        probes.push((audit, WRITE_ROOM));
    }
    if patch_dir && cluster.patch_dir().is_dir() {
        probes.push((cluster.patch_dir(), 0));
    }
    for (dir, bytes) in probes {
        probe(&dir, bytes).map_err(|err| not_writable(&dir, err))?;
    }
    fs::OpenOptions::new().write(true).open(&meta).map_err(|err| not_writable(&meta, err))?;
    Ok(())
}

/// What a run writes to the store beyond meta.yaml's own size, at the most: an audit record,
/// a meta.yaml grown by the marks.
const WRITE_ROOM: u64 = 64 << 10;

/// Creates a file in `dir` (new, never through an existing name), writes `bytes` to it and
/// syncs them to disk (a full file system fails here), then removes it.
fn probe(dir: &Path, bytes: u64) -> io::Result<()> {
    let path = dir.join(format!(".dm-patch-probe.{}", std::process::id()));
    let mut file = fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
    let written = io::copy(&mut io::repeat(0).take(bytes), &mut file).and_then(|_| file.sync_all());
    drop(file);
    let removed = fs::remove_file(&path);
    written.and(removed)
}

/// `--overwrite`: keeps the package as `patch/<comp>-<sha1[:7]>.tar.gz` with the relative
/// symlink `patch/<comp>.tar.gz` pointing at it, exactly as TiUP names them (its
/// `utils.Checksum` is SHA-1), so TiUP's later scale-out and upgrade reuse it. The sha1 is
/// computed while the package is copied (one read of the file); so is its sha256, which must
/// start with `checked_sha256` (all or a prefix of the sha256 the package check found), so the
/// file kept is the file that was checked. Both are replaced atomically, so running twice with
/// the same package is fine.
pub fn keep_package(
    cluster: &Cluster,
    role: Role,
    package: &Path,
    checked_sha256: &str,
) -> Result<PathBuf, StoreError> {
    use sha1::{Digest, Sha1};
    use sha2::Sha256;

    let dir = cluster.patch_dir();
    let comp = role.component();
    let write_error =
        |source: io::Error| StoreError::Write { path: dir.display().to_string(), source };
    fs::create_dir_all(&dir).map_err(write_error)?;
    let mut temp =
        tempfile::Builder::new().prefix(".patch.").tempfile_in(&dir).map_err(write_error)?;

    let read_error =
        |source: io::Error| StoreError::Read { path: package.display().to_string(), source };
    let mut source = File::open(package).map_err(read_error)?;
    let mode = source.metadata().map_err(read_error)?.permissions();
    let (mut sha1, mut sha256) = (Sha1::new(), Sha256::new());
    let mut buffer = vec![0u8; 256 << 10];
    loop {
        let read = match source.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(read_error(err)),
        };
        sha1.update(&buffer[..read]);
        sha256.update(&buffer[..read]);
        temp.write_all(&buffer[..read]).map_err(write_error)?;
    }
    let sha256 = hex(&sha256.finalize());
    if !sha256.starts_with(&checked_sha256.to_ascii_lowercase()) {
        return Err(read_error(io::Error::other(format!(
            "the package changed since it was checked (its sha256 is now {sha256}); nothing was \
             kept"
        ))));
    }
    let short_sha1 = &hex(&sha1.finalize())[..7];
    let file_name = format!("{comp}-{short_sha1}.tar.gz");
    let kept = dir.join(&file_name);
    let link = dir.join(format!("{comp}.tar.gz"));
    temp.as_file().set_permissions(mode).map_err(write_error)?;
    temp.as_file().sync_all().map_err(write_error)?;
    temp.persist(&kept).map_err(|err| write_error(err.error))?;

    let temp_link = dir.join(format!(".{comp}.tar.gz.link"));
    let _ = fs::remove_file(&temp_link);
    std::os::unix::fs::symlink(&file_name, &temp_link).map_err(write_error)?;
    fs::rename(&temp_link, &link).map_err(write_error)?;
    File::open(&dir).and_then(|dir| dir.sync_all()).map_err(write_error)?;
    Ok(kept)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use yaml_serde::Value;

    const V3: &str = include_str!("../../tests/it/fixtures/meta-v3.yaml");
    const V2: &str = include_str!("../../tests/it/fixtures/meta-v2.yaml");

    fn store_with(meta: &str) -> (tempfile::TempDir, Store) {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("storage/dm/clusters/demo");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("meta.yaml"), meta).unwrap();
        let store = Store::locate(Some(home.path().to_owned())).unwrap();
        (home, store)
    }

    fn saved_unchanged(meta: &str) -> String {
        let (_home, store) = store_with(meta);
        let cluster = store.load("demo").unwrap();
        let lock = store.lock("demo").unwrap();
        save(&cluster, &lock).unwrap();
        fs::read_to_string(cluster.dir.join("meta.yaml")).unwrap()
    }

    /// Every key, known or not, comes back with the same value.
    #[test]
    fn load_then_save_keeps_everything() {
        for fixture in [V3, V2] {
            let written = saved_unchanged(fixture);
            let before: Value = yaml_serde::from_str(fixture).unwrap();
            let after: Value = yaml_serde::from_str(&written).unwrap();
            assert_eq!(before, after, "semantics changed:\n{written}");
        }
        let written = saved_unchanged(V3);
        for key in [
            "a_future_top_level_key",
            "a_future_topology_section",
            "a_future_instance_key",
            "pd_mode",
            "ng_port",
            "external_alertmanagers",
            "rpc-timeout",
        ] {
            assert!(written.contains(key), "{key} was dropped");
        }
    }

    /// Current TiUP's layout is written back as it was, line for line, apart from keys dm-patch
    /// does not model moving after the ones it does.
    #[test]
    fn yaml_v3_layout_survives() {
        let written = saved_unchanged(V3);
        let mut before: Vec<&str> = V3.lines().collect();
        let mut after: Vec<&str> = written.lines().collect();
        before.sort_unstable();
        after.sort_unstable();
        assert_eq!(before, after);
    }

    #[test]
    fn a_second_lock_fails_at_once() {
        let (_home, store) = store_with(V3);
        let _held = store.lock("demo").unwrap();
        assert!(matches!(store.lock("demo"), Err(StoreError::Locked(_))));
    }

    #[test]
    fn a_kept_package_is_named_by_its_sha1() {
        let (home, store) = store_with(V3);
        let cluster = store.load("demo").unwrap();
        let package = home.path().join("pkg.tar.gz");
        fs::write(&package, b"abc").unwrap();
        // sha1("abc") = a9993e36..., sha256("abc") = ba7816bf...
        let kept = keep_package(&cluster, Role::Worker, &package, "ba7816bf").unwrap();
        assert_eq!(kept, cluster.patch_dir().join("dm-worker-a9993e3.tar.gz"));
        assert_eq!(fs::read(&kept).unwrap(), b"abc");
        let link = fs::read_link(cluster.patch_dir().join("dm-worker.tar.gz")).unwrap();
        assert_eq!(link, Path::new("dm-worker-a9993e3.tar.gz"));

        // A package that is not the one checked is not kept.
        fs::write(&package, b"abd").unwrap();
        let err = keep_package(&cluster, Role::Worker, &package, "ba7816bf").unwrap_err();
        assert!(err.to_string().contains("changed since it was checked"), "{err}");
    }

    /// TiUP's older yaml.v2 layout is kept: marking an instance adds its mark and nothing else.
    #[test]
    fn a_yaml_v2_file_changes_only_in_its_marks() {
        let (_home, store) = store_with(V2);
        let mut cluster = store.load("demo").unwrap();
        let lock = store.lock("demo").unwrap();
        cluster.mark_patched(Role::Master, 0);
        save(&cluster, &lock).unwrap();
        let written = fs::read_to_string(cluster.dir.join("meta.yaml")).unwrap();
        let entry = "  master_servers:\n  - host: 127.0.9.21\n";
        let expected = V2.replacen(entry, &format!("{entry}    patched: true\n"), 1);
        assert_eq!(written, expected);
    }

    #[test]
    fn patched_mark_is_saved() {
        let (_home, store) = store_with(V2);
        let mut cluster = store.load("demo").unwrap();
        let lock = store.lock("demo").unwrap();
        cluster.mark_patched(Role::Master, 0);
        save(&cluster, &lock).unwrap();
        let reloaded = store.load("demo").unwrap();
        assert!(reloaded.instances.iter().all(|i| i.patched));
    }
}
