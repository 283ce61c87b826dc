//! A small builder for tests that need a TiUP store and packages but no hosts:
//! `Store::new().cluster("demo", META_V3)` then `store.dm_patch(["patch", ...])`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use flate2::Compression;
use flate2::write::GzEncoder;
use tempfile::TempDir;

pub const META_V3: &str = include_str!("fixtures/meta-v3.yaml");
pub const META_V2: &str = include_str!("fixtures/meta-v2.yaml");

/// A throwaway TiUP home.
pub struct Store {
    dir: TempDir,
}

impl Store {
    pub fn new() -> Store {
        Store {
            dir: tempfile::tempdir().expect("temp dir"),
        }
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
    pub fn package(&self, file_name: &str, entries: &[Entry]) -> PathBuf {
        let path = self.home().join(file_name);
        let encoder = GzEncoder::new(fs::File::create(&path).unwrap(), Compression::fast());
        let mut tar = tar::Builder::new(encoder);
        for entry in entries {
            entry.append_to(&mut tar);
        }
        tar.into_inner().unwrap().finish().unwrap();
        path
    }

    /// A well-formed package of `comp` holding a small script.
    pub fn good_package(&self, comp: &str) -> PathBuf {
        self.package(
            &format!("{comp}-hotfix.tar.gz"),
            &[Entry::file(
                &format!("{comp}/{comp}"),
                0o755,
                b"#!/bin/sh\necho hotfix\n",
            )],
        )
    }

    /// `dm-patch` with this store as TIUP_HOME and a clean, colourless environment.
    pub fn dm_patch<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::cargo_bin("dm-patch").unwrap();
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TIUP_HOME", self.home())
            .env("NO_COLOR", "1")
            .args(args);
        cmd
    }

    /// Replaces this store's temp path with `[HOME]` so snapshots are stable.
    pub fn redact(&self, text: &str) -> String {
        text.replace(&self.home().display().to_string(), "[HOME]")
    }
}

/// One tar entry; the raw header lets tests build the hostile entries that `tar::Builder`
/// itself refuses to write.
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
