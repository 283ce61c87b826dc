//! Checks a hotfix package before any host is touched, in one streaming pass over the file:
//! its sha256, gzip and tar integrity, path safety of every entry, and the `<comp>/<comp>`
//! entry (regular, executable, built for the hosts' CPU, and there once). Memory stays flat
//! whatever the package size.
//!
//! The check reads exactly the bytes `tar -xzf` on the hosts unpacks: every gzip member (as
//! `gzip -d` does), and nothing after the last one but zero padding. What it checked is pinned
//! down for the hosts by the entry's name as the package spells it and by its sha256.

mod gzip;
mod spool;
mod wire;

pub use self::spool::KeptTar;
pub use self::wire::Wire;

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;
use std::thread;

use indicatif::HumanBytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

use self::gzip::{Members, StreamFault};
use crate::topology::{Arch, Role};

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("specified package({0}) not exists; check the path")]
    Missing(String),
    #[error("cannot read package {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("package {0} is not a gzip file; build it with `tar -czf <comp>.tar.gz <comp>/<comp>`")]
    NotGzip(String),
    #[error("package {path} is damaged or truncated ({detail}); copy or build it again")]
    Corrupt { path: String, detail: String },
    #[error(
        "package {0} has bytes after its gzip data, which make tar fail on every host; copy or build it again"
    )]
    TrailingData(String),
    #[error(
        "package {0} is a gzip file but holds no tar archive; build it with `tar -czf <comp>.tar.gz <comp>/<comp>`"
    )]
    NotTar(String),
    #[error(
        "package {path} unpacks to more than {}; a DM binary is far smaller, so check that this is the right file",
        HumanBytes(*.limit)
    )]
    TooBig { path: String, limit: u64 },
    #[error(
        "package {path} holds {entry} more than once{as_named}; dm-patch cannot tell which one tar would install, so pack it again with one {entry}"
    )]
    Duplicate {
        path: String,
        entry: String,
        /// ` (as 'a' and 'b')` when the names differ as the package spells them, else empty.
        as_named: String,
    },
    #[error(
        "package {path} has an unsafe entry '{entry}' ({why}); dm-patch refuses packages that could write outside their directory"
    )]
    UnsafeEntry { path: String, entry: String, why: &'static str },
    #[error(
        "package {path} has an entry '{entry}' that is {what}; a hotfix package holds only files, directories and links to them"
    )]
    UnsupportedEntry { path: String, entry: String, what: &'static str },
    #[error(
        "package {path} has more than {max} entries; a hotfix package holds a binary and perhaps a few files beside it"
    )]
    TooManyEntries { path: String, max: usize },
    #[error(
        "entry {entry} not found in package {path}; it must hold {entry} (see `tar -tzf {path}`)"
    )]
    EntryMissing { path: String, entry: String },
    #[error(
        "entry {entry} in package {path} is not a regular file; it must be the {comp} binary itself"
    )]
    NotRegular { path: String, entry: String, comp: String },
    #[error(
        "entry {entry} in package {path} is not executable (mode {mode:o}); run `chmod +x {entry}` and pack it again"
    )]
    NotExecutable { path: String, entry: String, mode: u32 },
    #[error(
        "package holds {found}, but the selected instances are {selected}; use the {selected} package or select {found} with -R"
    )]
    WrongComponent { found: String, selected: String },
    #[error("{entry} in package {path} is an ELF binary for {found}, but {instance} runs on {}; use the linux-{arch} build", .arch.machine_name())]
    WrongArch {
        path: String,
        entry: String,
        found: String,
        /// The first selected instance the binary cannot run on, with its host.
        instance: String,
        arch: Arch,
    },
}

/// What the package turned out to be.
#[derive(Debug, Clone, Serialize)]
pub struct Package {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    /// Its sha256 was checked against the one its provider gave (`--expect-sha256`).
    pub sha256_checked: bool,
    #[serde(skip)]
    pub component: Role,
    /// Size of the binary inside.
    #[serde(skip)]
    pub entry_size: u64,
    /// The binary's name exactly as the package spells it (`./dm-worker/dm-worker`, say): what
    /// tar on the hosts is told to unpack.
    #[serde(skip)]
    pub entry_in_package: String,
    /// The sha256 of the binary inside: the hosts must unpack exactly this.
    #[serde(skip)]
    pub entry_sha256: String,
    /// The sizes of all entries together, for the free-space check on hosts.
    #[serde(skip)]
    pub unpacked_size: u64,
    /// The size of the tar stream inside the gzip file (headers and padding included).
    #[serde(skip)]
    pub tar_size: u64,
    /// Everything the package puts under `bin/` on a host, as the host must end up with it:
    /// what staging verifies and what the swap installs.
    #[serde(skip)]
    pub files: Vec<PackageFile>,
    /// `Some` when the entry is an ELF binary, with its CPU; `None` for a script.
    #[serde(skip)]
    pub elf_machine: Option<ElfMachine>,
    /// The tar stream inside, as checked, kept for the uploads (see [`spool`]); `None` when
    /// it was not asked for or could not be kept.
    #[serde(skip)]
    pub kept_tar: Option<KeptTar>,
}

impl Package {
    /// The first 7 hex digits of the sha256, as TiUP names cache and patch files.
    pub fn short_sha(&self) -> &str {
        &self.sha256[..7]
    }

    /// `<comp>/<comp>`: the one entry that matters.
    pub fn entry(&self) -> String {
        entry_name(self.component)
    }
}

/// One thing a package puts under an instance's `bin/`, as checked here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageFile {
    /// Normalised and relative to `bin/`: `dm-worker/dm-worker`.
    pub path: String,
    pub kind: FileKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    Dir,
    File {
        size: u64,
        sha256: String,
        executable: bool,
    },
    /// A link to something inside the package.
    Symlink {
        target: String,
    },
}

/// A package holds a binary and perhaps a few files beside it; more entries than this is not
/// a hotfix (and would make every host's verification long).
const MAX_ENTRIES: usize = 10_000;

fn entry_name(role: Role) -> String {
    format!("{0}/{0}", role.component())
}

/// The CPU an ELF binary was built for (`e_machine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfMachine {
    X86_64,
    Aarch64,
    Other(u16),
}

impl ElfMachine {
    fn name(self) -> String {
        match self {
            ElfMachine::X86_64 => "x86_64".to_owned(),
            ElfMachine::Aarch64 => "aarch64".to_owned(),
            ElfMachine::Other(code) => format!("machine {code}"),
        }
    }

    fn runs_on(self, arch: Arch) -> bool {
        matches!(
            (self, arch),
            (ElfMachine::X86_64, Arch::Amd64) | (ElfMachine::Aarch64, Arch::Arm64)
        )
    }
}

/// Parses the start of an ELF file; `None` when `head` is not ELF (a script, say).
fn elf_machine(head: &[u8]) -> Option<ElfMachine> {
    if head.len() < 20 || &head[..4] != b"\x7fELF" {
        return None;
    }
    let raw = match head[5] {
        2 => u16::from_be_bytes([head[18], head[19]]),
        _ => u16::from_le_bytes([head[18], head[19]]),
    };
    Some(match raw {
        62 => ElfMachine::X86_64,
        183 => ElfMachine::Aarch64,
        other => ElfMachine::Other(other),
    })
}

/// The most a package may unpack to, all entries together: a DM binary is some hundred MiB,
/// and anything far bigger only burns the hosts' time and disk (a gzip bomb, say).
pub const MAX_UNPACKED: u64 = 4 << 30;

/// The package file's bytes as they are read on a thread of their own, which hashes and counts
/// them: the file's sha256 and the caller's unpacking of the same bytes use two cores, and the
/// sha256 still covers exactly the bytes the caller checked.
struct HashedFile {
    chunks: mpsc::Receiver<io::Result<Vec<u8>>>,
    current: io::Cursor<Vec<u8>>,
    reader: Option<thread::JoinHandle<(Sha256, u64)>>,
}

/// How much of the file the reading thread reads at a time, and how many such chunks it may
/// be ahead of the caller.
const FILE_CHUNK: usize = 256 * 1024;
const FILE_CHUNKS_AHEAD: usize = 4;

impl HashedFile {
    fn new(mut file: File) -> HashedFile {
        let (sender, chunks) = mpsc::sync_channel(FILE_CHUNKS_AHEAD);
        let reader = thread::spawn(move || {
            let (mut hasher, mut bytes) = (Sha256::new(), 0u64);
            loop {
                let mut chunk = vec![0; FILE_CHUNK];
                let chunk = match read_fully(&mut file, &mut chunk) {
                    Ok(0) => break,
                    Ok(filled) => {
                        chunk.truncate(filled);
                        hasher.update(&chunk);
                        bytes += filled as u64;
                        Ok(chunk)
                    }
                    Err(err) => Err(err),
                };
                let failed = chunk.is_err();
                // The caller is gone (it refused the package early): nothing waits for more.
                if sender.send(chunk).is_err() || failed {
                    break;
                }
            }
            (hasher, bytes)
        });
        HashedFile { chunks, current: io::Cursor::new(Vec::new()), reader: Some(reader) }
    }

    /// The sha256 (hex) and size of every byte read, once the caller has read to the end.
    fn finish(mut self) -> (String, u64) {
        let reader = self.reader.take().expect("finished once");
        let (hasher, bytes) = reader.join().expect("the reading thread does not panic");
        (hex(&hasher.finalize()), bytes)
    }
}

impl Read for HashedFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            match self.chunks.recv() {
                Ok(chunk) => self.current = io::Cursor::new(chunk?),
                // The thread ended: the end of the file.
                Err(mpsc::RecvError) => return Ok(0),
            }
        }
    }
}

/// Inspects the package at `path` for instances of `selected`, each a (host, instance id,
/// arch) triple for the arch check; with `keep_tar_in`, keeps the tar stream it checks in an
/// unnamed file there, for the uploads ([`Package::kept_tar`]).
pub fn inspect(
    path: &Path,
    selected: Role,
    hosts: &[(String, String, Arch)],
    keep_tar_in: Option<&Path>,
) -> Result<Package, PackageError> {
    inspect_up_to(path, selected, hosts, MAX_UNPACKED, keep_tar_in)
}

/// [`inspect`], refusing a package that unpacks to more than `limit` bytes.
fn inspect_up_to(
    path: &Path,
    selected: Role,
    hosts: &[(String, String, Arch)],
    limit: u64,
    keep_tar_in: Option<&Path>,
) -> Result<Package, PackageError> {
    let shown = path.display().to_string();
    let read_error = |source: io::Error| PackageError::Read { path: shown.clone(), source };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(PackageError::Missing(shown));
        }
        Err(err) => return Err(read_error(err)),
    };
    if file.metadata().map_err(read_error)?.is_dir() {
        return Err(read_error(io::Error::other("it is a directory")));
    }
    let keep_tar_in = spool::keep_in(&file, keep_tar_in);
    let mut source = HashedFile::new(file);
    let mut magic = [0u8; 2];
    let read = read_fully(&mut source, &mut magic).map_err(read_error)?;
    if read < 2 || magic != [0x1f, 0x8b] {
        return Err(PackageError::NotGzip(shown));
    }
    let source = io::Cursor::new(magic).chain(BufReader::with_capacity(256 * 1024, source));
    let members = spool::Keeping::new(Members::new(source, limit), keep_tar_in);
    let mut archive = tar::Archive::new(members);
    let mut scan = Scan {
        shown: &shown,
        limit,
        candidates: Vec::new(),
        files: Vec::new(),
        unpacked: 0,
        headers: 0,
    };
    let scanned = scan.entries(&mut archive);
    let mut members = archive.into_inner();
    // Read to the very end: every member's CRC is checked, what follows the last one must be
    // padding, and the sha256 must cover every byte of the file.
    let drained = scanned
        .and_then(|()| io::copy(&mut members, &mut io::sink()).map_err(|_| Stop::Unreadable));
    if let Err(stop) = drained {
        return Err(scan.refusal(stop, members.get_ref().fault.as_ref()));
    }
    let (members, kept_tar) = members.finish();
    let tar_size = members.unpacked();
    let mut source = members.into_source().into_inner().1.into_inner();
    io::copy(&mut source, &mut io::sink()).map_err(read_error)?;
    let (sha256, size) = source.finish();

    let Scan { candidates, files, unpacked, .. } = scan;
    let package_component = detect_component(&candidates, selected, &shown)?;
    let entry = candidates
        .into_iter()
        .find(|e| e.path == entry_name(package_component))
        .expect("detect_component found this entry");
    if !entry.is_regular {
        return Err(PackageError::NotRegular {
            path: shown,
            entry: entry.path,
            comp: package_component.component().to_owned(),
        });
    }
    if entry.mode & 0o500 != 0o500 {
        return Err(PackageError::NotExecutable {
            path: shown,
            entry: entry.path,
            mode: entry.mode,
        });
    }
    let unable_host =
        |machine: ElfMachine| hosts.iter().find(|(_, _, arch)| !machine.runs_on(*arch));
    if let Some(machine) = entry.elf_machine
        && let Some((host, instance, arch)) = unable_host(machine)
    {
        return Err(PackageError::WrongArch {
            path: shown,
            entry: entry.path,
            found: machine.name(),
            instance: format!("{instance} on {host}"),
            arch: *arch,
        });
    }

    Ok(Package {
        path: path.to_owned(),
        size,
        sha256,
        sha256_checked: false,
        component: package_component,
        entry_size: entry.size,
        entry_in_package: entry.in_package,
        entry_sha256: entry.sha256.expect("a regular entry is hashed"),
        unpacked_size: unpacked,
        tar_size,
        files,
        elf_machine: entry.elf_machine,
        kept_tar,
    })
}

/// The component the package holds must be the selected one; if it holds the other one only,
/// say so plainly.
fn detect_component(entries: &[Entry], selected: Role, shown: &str) -> Result<Role, PackageError> {
    let holds = |role: Role| entries.iter().any(|e| e.path == entry_name(role));
    if holds(selected) {
        return Ok(selected);
    }
    match Role::ALL.into_iter().find(|role| holds(*role)) {
        Some(other) => Err(PackageError::WrongComponent {
            found: other.component().to_owned(),
            selected: selected.component().to_owned(),
        }),
        None => {
            Err(PackageError::EntryMissing { path: shown.to_owned(), entry: entry_name(selected) })
        }
    }
}

/// One `<comp>/<comp>` entry, as far as the checks care.
struct Entry {
    /// Normalised: `dm-worker/dm-worker`.
    path: String,
    /// As the package spells it.
    in_package: String,
    size: u64,
    is_regular: bool,
    mode: u32,
    elf_machine: Option<ElfMachine>,
    /// Of the data, for a regular file.
    sha256: Option<String>,
}

/// Why the walk over the entries stopped.
enum Stop {
    /// A problem with the package that the walk itself found.
    Refused(PackageError),
    /// An error reading the stream: a fault of the gzip data, or else a damaged tar archive.
    /// (Its message is not kept: tar's may quote the bytes it choked on.)
    Unreadable,
}

/// The walk over the entries and what it found.
struct Scan<'a> {
    shown: &'a str,
    limit: u64,
    /// Every `<comp>/<comp>` entry, of either component.
    candidates: Vec<Entry>,
    /// Every entry, as the hosts must end up with it.
    files: Vec<PackageFile>,
    /// The sizes of all entries so far.
    unpacked: u64,
    /// Entry headers read so far.
    headers: u64,
}

impl Scan<'_> {
    /// Walks every tar entry (streaming; each entry's data is skipped, not buffered), refusing
    /// unsafe paths and links, a package over the limit, and a `<comp>/<comp>` entry met
    /// twice; notes each such entry's type, mode, ELF header and sha256.
    fn entries<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<(), Stop> {
        for entry in archive.entries().map_err(|_| Stop::Unreadable)? {
            let mut entry = entry.map_err(|_| Stop::Unreadable)?;
            self.headers += 1;
            let in_package = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let unsafe_entry = |why| {
                Stop::Refused(PackageError::UnsafeEntry {
                    path: self.shown.to_owned(),
                    entry: shown_name(&in_package),
                    why,
                })
            };
            let path = normalize(Path::new(&in_package)).map_err(unsafe_entry)?;
            let kind = entry.header().entry_type();
            let unsupported = |what| {
                Stop::Refused(PackageError::UnsupportedEntry {
                    path: self.shown.to_owned(),
                    entry: shown_name(&in_package),
                    what,
                })
            };
            if kind.is_hard_link() {
                return Err(unsupported("a hard link"));
            }
            let mut link_target = None;
            if kind.is_symlink() {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                let base = Path::new(&path).parent().map(Path::to_path_buf).unwrap_or_default();
                if !resolves_inside(&base, &target) {
                    return Err(unsafe_entry("a link pointing outside the package"));
                }
                link_target = Some(target);
            }
            self.unpacked = self.unpacked.saturating_add(entry.size());
            if self.unpacked > self.limit {
                return Err(Stop::Refused(self.too_big()));
            }
            // GNU tar unpacks a regular file whose name ends in '/' as a directory.
            let is_regular = kind.is_file() && !in_package.ends_with('/');
            let is_dir = kind.is_dir() || (kind.is_file() && in_package.ends_with('/'));
            if !is_regular && !is_dir && link_target.is_none() && !kind.is_pax_global_extensions() {
                return Err(unsupported("neither a file, a directory nor a link"));
            }
            if path.is_empty() || kind.is_pax_global_extensions() {
                continue;
            }
            if let Some(first) = self.files.iter().find(|f| f.path == path) {
                if is_dir && first.kind == FileKind::Dir {
                    continue;
                }
                let first_name = self
                    .candidates
                    .iter()
                    .find(|e| e.path == path)
                    .map_or(path.as_str(), |e| e.in_package.as_str());
                let as_named = if first_name == in_package {
                    String::new()
                } else {
                    format!(" (as '{}' and '{}')", shown_name(first_name), shown_name(&in_package))
                };
                return Err(Stop::Refused(PackageError::Duplicate {
                    path: self.shown.to_owned(),
                    entry: path,
                    as_named,
                }));
            }
            if self.files.len() == MAX_ENTRIES {
                return Err(Stop::Refused(PackageError::TooManyEntries {
                    path: self.shown.to_owned(),
                    max: MAX_ENTRIES,
                }));
            }
            let mode = entry.header().mode().map_err(|_| Stop::Unreadable)?;
            let (head, sha256) = if is_regular {
                let (head, sha256) = head_and_sha256(&mut entry).map_err(|_| Stop::Unreadable)?;
                (head, Some(sha256))
            } else {
                (Vec::new(), None)
            };
            let file_kind = match (&sha256, link_target) {
                (Some(sha256), _) => FileKind::File {
                    size: entry.size(),
                    sha256: sha256.clone(),
                    executable: mode & 0o100 != 0,
                },
                (None, Some(target)) => FileKind::Symlink { target },
                (None, None) => FileKind::Dir,
            };
            self.files.push(PackageFile { path: path.clone(), kind: file_kind });
            if !Role::ALL.iter().any(|role| path == entry_name(*role)) {
                continue;
            }
            self.candidates.push(Entry {
                path,
                in_package,
                size: entry.size(),
                is_regular,
                mode,
                elf_machine: elf_machine(&head),
                sha256,
            });
        }
        Ok(())
    }

    fn too_big(&self) -> PackageError {
        PackageError::TooBig { path: self.shown.to_owned(), limit: self.limit }
    }

    /// The refusal for a walk that stopped: a read error is told by what the gzip layer met,
    /// and never quotes the bytes read.
    fn refusal(&self, stop: Stop, fault: Option<&StreamFault>) -> PackageError {
        let path = self.shown.to_owned();
        match (stop, fault) {
            (Stop::Refused(refusal), _) => refusal,
            (Stop::Unreadable, Some(StreamFault::TooBig)) => self.too_big(),
            (Stop::Unreadable, Some(StreamFault::TrailingData)) => PackageError::TrailingData(path),
            (Stop::Unreadable, Some(StreamFault::Gzip(detail))) => {
                PackageError::Corrupt { path, detail: shown_name(detail) }
            }
            (Stop::Unreadable, None) if self.headers == 0 => PackageError::NotTar(path),
            (Stop::Unreadable, None) => {
                PackageError::Corrupt { path, detail: "its tar data is damaged".to_owned() }
            }
        }
    }
}

/// The first bytes (for the ELF header) and the sha256 of an entry's data, streaming.
fn head_and_sha256(data: &mut impl Read) -> io::Result<(Vec<u8>, String)> {
    // The hashing runs on a thread of its own, beside the unpacking that reads the data: a
    // real build's inflate and its sha256 take two cores instead of one after the other (the
    // check of 128 MiB of machine code: 0.24 s instead of 0.33 s; 256 MiB gzip cannot shrink,
    // where the inflate is a copy and three threads share two cores: 0.25 s instead of 0.20 s).
    thread::scope(|scope| {
        let (sender, chunks) = mpsc::sync_channel::<Vec<u8>>(FILE_CHUNKS_AHEAD);
        let hashing = scope.spawn(move || {
            let mut hasher = Sha256::new();
            chunks.iter().for_each(|chunk| hasher.update(&chunk));
            hex(&hasher.finalize())
        });
        let mut head = Vec::with_capacity(20);
        loop {
            let mut chunk = vec![0u8; FILE_CHUNK];
            let filled = read_fully(data, &mut chunk)?;
            if filled == 0 {
                break;
            }
            let wanted = 20usize.saturating_sub(head.len()).min(filled);
            head.extend_from_slice(&chunk[..wanted]);
            chunk.truncate(filled);
            sender.send(chunk).expect("the hashing thread takes every chunk");
        }
        drop(sender);
        Ok((head, hashing.join().expect("the hashing thread does not panic")))
    })
}

/// A name (or detail) from the package, fit for a one-line message: control characters
/// escaped, and long ones cut.
fn shown_name(name: &str) -> String {
    const MAX_CHARS: usize = 200;
    let mut shown = String::new();
    for (i, c) in name.chars().enumerate() {
        if i == MAX_CHARS {
            shown.push_str("...");
            break;
        }
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// The entry's path without `.` components; an absolute path or any `..` is refused (tar
/// would follow `a/../b` through whatever `a` is on the host).
fn normalize(path: &Path) -> Result<String, &'static str> {
    let mut parts: Vec<&str> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => {
                let part = part.to_str().ok_or("a non-UTF-8 path")?;
                // The hosts' listings are lines of tab-separated fields: such a name could not
                // be verified there, and no DM file is named so.
                if part.chars().any(char::is_control) {
                    return Err("a name with a control character, such as a line break or a tab");
                }
                parts.push(part);
            }
            Component::CurDir => {}
            Component::ParentDir => return Err("a path containing '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("an absolute path"),
        }
    }
    Ok(parts.join("/"))
}

/// Whether a link target, taken relative to `base` inside the package, stays inside it.
fn resolves_inside(base: &Path, target: &str) -> bool {
    let mut depth = 0usize;
    for component in base.join(target).components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => depth -= 1,
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

fn read_fully(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
