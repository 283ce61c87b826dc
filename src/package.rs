//! Checks a hotfix package before any host is touched, in one streaming pass over the file:
//! its sha256, gzip and tar integrity, path safety of every entry, and the `<comp>/<comp>`
//! entry (regular, executable, and built for the hosts' CPU). Memory stays flat whatever the
//! package size.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use serde::Serialize;
use sha2::{Digest, Sha256};

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
        "package {path} has an unsafe entry '{entry}' ({why}); dm-patch refuses packages that could write outside their directory"
    )]
    UnsafeEntry { path: String, entry: String, why: &'static str },
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
    #[serde(skip)]
    pub component: Role,
    /// Size of the binary inside, for the free-space check on hosts.
    #[serde(skip)]
    pub entry_size: u64,
    /// `Some` when the entry is an ELF binary, with its CPU; `None` for a script.
    #[serde(skip)]
    pub elf_machine: Option<ElfMachine>,
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

/// A reader that hashes and counts every byte it passes on.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Inspects the package at `path` for instances of `selected`, each a (host, instance id,
/// arch) triple for the arch check.
pub fn inspect(
    path: &Path,
    selected: Role,
    hosts: &[(String, String, Arch)],
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
    let mut source = Hashing {
        inner: BufReader::with_capacity(256 * 1024, file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut magic = [0u8; 2];
    let read = read_fully(&mut source, &mut magic).map_err(read_error)?;
    if read < 2 || magic != [0x1f, 0x8b] {
        return Err(PackageError::NotGzip(shown));
    }
    let gzip = GzDecoder::new(io::Cursor::new(magic).chain(source));
    let found = scan_tar(gzip, &shown)?;

    let Scan { entries, mut gzip } = found;
    // Read to the very end: the gzip trailer's CRC check catches damage after the tar end
    // marker, and the sha256 must cover every byte of the file.
    io::copy(&mut gzip, &mut io::sink()).map_err(|err| corrupt(&shown, &err))?;
    let mut source = gzip.into_inner().into_inner().1;
    io::copy(&mut source, &mut io::sink()).map_err(read_error)?;

    let package_component = detect_component(&entries, selected, &shown)?;
    let entry = entries
        .iter()
        .rev()
        .find(|e| e.path == entry_name(package_component))
        .expect("detect_component found this entry");
    if !entry.is_regular {
        return Err(PackageError::NotRegular {
            path: shown,
            entry: entry.path.clone(),
            comp: package_component.component().to_owned(),
        });
    }
    if entry.mode & 0o500 != 0o500 {
        return Err(PackageError::NotExecutable {
            path: shown,
            entry: entry.path.clone(),
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
            entry: entry.path.clone(),
            found: machine.name(),
            instance: format!("{instance} on {host}"),
            arch: *arch,
        });
    }

    Ok(Package {
        path: path.to_owned(),
        size: source.bytes,
        sha256: hex(&source.hasher.finalize()),
        component: package_component,
        entry_size: entry.size,
        elf_machine: entry.elf_machine,
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

/// One tar entry, as far as the checks care.
struct Entry {
    path: String,
    size: u64,
    is_regular: bool,
    mode: u32,
    elf_machine: Option<ElfMachine>,
}

struct Scan<R: Read> {
    entries: Vec<Entry>,
    gzip: GzDecoder<R>,
}

/// Walks every tar entry (streaming; each entry's data is skipped, not buffered), refusing
/// unsafe paths and links, and noting each candidate binary entry's type, mode and ELF header.
fn scan_tar<R: Read>(gzip: GzDecoder<R>, shown: &str) -> Result<Scan<R>, PackageError> {
    let mut archive = tar::Archive::new(gzip);
    let mut entries = Vec::new();
    for entry in archive.entries().map_err(|err| corrupt(shown, &err))? {
        let mut entry = entry.map_err(|err| corrupt(shown, &err))?;
        let raw_path = entry.path_bytes().into_owned();
        let raw_path = String::from_utf8_lossy(&raw_path).into_owned();
        let unsafe_entry = |why| PackageError::UnsafeEntry {
            path: shown.to_owned(),
            entry: raw_path.clone(),
            why,
        };
        let path = normalize(Path::new(&raw_path)).map_err(unsafe_entry)?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            let base = if kind.is_symlink() {
                Path::new(&path).parent().map(Path::to_path_buf).unwrap_or_default()
            } else {
                PathBuf::new()
            };
            if !resolves_inside(&base, &target) {
                return Err(unsafe_entry("a link pointing outside the package"));
            }
        }
        if Role::ALL.iter().any(|role| path == entry_name(*role)) {
            let mut head = [0u8; 20];
            let read = if kind.is_file() {
                read_fully(&mut entry, &mut head).map_err(|err| corrupt(shown, &err))?
            } else {
                0
            };
            entries.push(Entry {
                path,
                size: entry.size(),
                is_regular: kind.is_file(),
                mode: entry.header().mode().map_err(|err| corrupt(shown, &err))?,
                elf_machine: elf_machine(&head[..read]),
            });
        }
    }
    Ok(Scan { entries, gzip: archive.into_inner() })
}

/// The entry's path without `.` components; an absolute path or any `..` is refused (tar
/// would follow `a/../b` through whatever `a` is on the host).
fn normalize(path: &Path) -> Result<String, &'static str> {
    let mut parts: Vec<&str> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str().ok_or("a non-UTF-8 path")?),
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

fn corrupt(shown: &str, err: &io::Error) -> PackageError {
    PackageError::Corrupt { path: shown.to_owned(), detail: err.to_string() }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_elf_machine() {
        let mut head = [0u8; 20];
        head[..4].copy_from_slice(b"\x7fELF");
        head[5] = 1;
        head[18] = 62;
        assert_eq!(elf_machine(&head), Some(ElfMachine::X86_64));
        head[18] = 183;
        assert_eq!(elf_machine(&head), Some(ElfMachine::Aarch64));
        assert_eq!(elf_machine(b"#!/bin/sh\nexec true\n"), None);
    }

    #[test]
    fn normalizes_and_refuses_escapes() {
        assert_eq!(normalize(Path::new("./dm-master/dm-master")).unwrap(), "dm-master/dm-master");
        assert!(normalize(Path::new("/etc/passwd")).is_err());
        assert!(normalize(Path::new("../x")).is_err());
        assert!(normalize(Path::new("a/../b")).is_err());
    }

    #[test]
    fn link_targets_must_stay_inside() {
        assert!(resolves_inside(Path::new("dm-master"), "../common/lib"));
        assert!(resolves_inside(Path::new("dm-master"), "lib"));
        assert!(!resolves_inside(Path::new("dm-master"), "../../etc/passwd"));
        assert!(!resolves_inside(Path::new(""), "/bin/sh"));
    }
}
