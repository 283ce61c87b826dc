//! The package's tree on a host, as staging lists it (`remote/unpack.sh`, `remote/copy.sh`,
//! run by [`super::remote::Remote`]), read back and proven identical to what the local check
//! saw; the swap into `bin/` and back is run the same way (`remote/swap.sh`, `restore.sh`).
//!
//! Layout of an instance's staging dir (`<deploy_dir>/bin.patch-<sha7>/`):
//! - `tree/`: the package, unpacked, verified, owned like the binary it replaces;
//! - `previous/`: what the swap replaced in `bin/` (hard links, so free), and `previous/.added`,
//!   the files the swap added; this is what an undo puts back.
//!
//! Every path given to those scripts comes from the local check (normalised, inside the package, no
//! control characters) and is passed quoted; the host's answers are parsed strictly and compared
//! with the local facts, so a host (or a tar) that unpacks something else is caught.

use std::collections::BTreeMap;

use crate::package::{FileKind, PackageFile};
use crate::remote::Answer;

/// What an unpack or copy script printed, parsed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Path (relative to the tree) -> what is there.
    pub entries: BTreeMap<String, Found>,
    /// The `-V` block of the new binary, when the script printed one.
    pub version: Option<String>,
}

/// One entry of a tree, as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Dir,
    File {
        size: u64,
        sha256: Option<String>,
        executable: bool,
    },
    Symlink {
        target: String,
    },
    /// Anything else (a FIFO, a device...), with find's type letter.
    Other(char),
}

impl Listing {
    /// Parses what staging answered (`remote/unpack.sh`, `remote/copy.sh`); `None` when it is
    /// not a listing.
    pub fn parse(stdout: &str) -> Option<Listing> {
        let answer = Answer::parse(stdout).ok()?;
        let mut listing = Listing { version: answer.block("version"), ..Listing::default() };
        for (key, value) in answer.lines() {
            match key {
                "entry" => {
                    let mut fields = value.splitn(5, '\t');
                    let (kind, size, mode, path, target) = (
                        fields.next()?,
                        fields.next()?.parse::<u64>().ok()?,
                        u32::from_str_radix(fields.next()?, 8).ok()?,
                        fields.next()?,
                        fields.next()?,
                    );
                    let found = match kind {
                        "d" => Found::Dir,
                        "f" => Found::File { size, sha256: None, executable: mode & 0o100 != 0 },
                        "l" => Found::Symlink { target: target.to_owned() },
                        other => Found::Other(other.chars().next()?),
                    };
                    listing.entries.insert(path.to_owned(), found);
                }
                "sha" => {
                    // `<hex> *./path` (openssl -r) or `<hex>  ./path` (sha256sum).
                    let (hex, path) = value.split_once(' ')?;
                    let path = path.trim_start_matches([' ', '*']).strip_prefix("./")?;
                    match listing.entries.get_mut(path) {
                        Some(Found::File { sha256, .. }) if hex.len() == 64 => {
                            *sha256 = Some(hex.to_owned());
                        }
                        _ => return None,
                    }
                }
                "version" => {}
                _ => return None,
            }
        }
        Some(listing)
    }

    /// The first difference between this tree and the package's `files`, said for the
    /// operator; `None` when the tree holds exactly the package.
    pub fn difference(&self, files: &[PackageFile]) -> Option<String> {
        let expected = expected_entries(files);
        for (path, want) in &expected {
            let found = self.entries.get(path);
            if found != Some(want) {
                return Some(match found {
                    None => format!("{path} is missing"),
                    Some(found) => {
                        format!("{path} is {}, the package has {}", found.said(), want.said())
                    }
                });
            }
        }
        let extra = self.entries.keys().find(|path| !expected.contains_key(*path))?;
        Some(format!("{extra} is not in the package"))
    }
}

impl Found {
    fn said(&self) -> String {
        match self {
            Found::Dir => "a directory".to_owned(),
            Found::File { size, sha256, executable } => format!(
                "a{} file of {size} bytes with sha256 {}",
                if *executable { "n executable" } else { "" },
                sha256.as_deref().unwrap_or("unknown")
            ),
            Found::Symlink { target } => format!("a link to {target}"),
            Found::Other(kind) => format!("of type '{kind}'"),
        }
    }
}

/// What a tree holding exactly `files` lists: each file, link and directory, and the parent
/// directories tar creates for them.
fn expected_entries(files: &[PackageFile]) -> BTreeMap<String, Found> {
    let mut expected = BTreeMap::new();
    for file in files {
        let mut parent = file.path.as_str();
        while let Some((dir, _)) = parent.rsplit_once('/') {
            expected.insert(dir.to_owned(), Found::Dir);
            parent = dir;
        }
        let found = match &file.kind {
            FileKind::Dir => Found::Dir,
            FileKind::File { size, sha256, executable } => {
                Found::File { size: *size, sha256: Some(sha256.clone()), executable: *executable }
            }
            FileKind::Symlink { target } => Found::Symlink { target: target.clone() },
        };
        expected.insert(file.path.clone(), found);
    }
    expected
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<PackageFile> {
        vec![
            PackageFile {
                path: "dm-worker/dm-worker".into(),
                kind: FileKind::File { size: 3, sha256: "a".repeat(64), executable: true },
            },
            PackageFile {
                path: "dm-worker/conf/x.toml".into(),
                kind: FileKind::File { size: 1, sha256: "b".repeat(64), executable: false },
            },
            PackageFile {
                path: "dm-worker/link".into(),
                kind: FileKind::Symlink { target: "dm-worker".into() },
            },
        ]
    }

    fn listing(lines: &[&str]) -> Listing {
        Listing::parse(&lines.join("\n")).expect("a listing")
    }

    const GOOD: [&str; 8] = [
        "entry\td\t4096\t755\tdm-worker\t",
        "entry\tf\t3\t755\tdm-worker/dm-worker\t",
        "entry\td\t4096\t755\tdm-worker/conf\t",
        "entry\tf\t1\t644\tdm-worker/conf/x.toml\t",
        "entry\tl\t9\t777\tdm-worker/link\tdm-worker",
        "sha\taaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa *./dm-worker/dm-worker",
        "sha\tbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb  ./dm-worker/conf/x.toml",
        "version\tRelease Version: v8.5.2",
    ];

    #[test]
    fn a_tree_that_holds_exactly_the_package_has_no_difference() {
        let listing = listing(&GOOD);
        assert_eq!(listing.difference(&files()), None);
        assert_eq!(listing.version.as_deref(), Some("Release Version: v8.5.2\n"));
    }

    #[test]
    fn every_kind_of_difference_is_named() {
        let differ = |from: &str, to: &str| {
            let lines: Vec<String> = GOOD.iter().map(|l| l.replace(from, to)).collect();
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            listing(&lines).difference(&files()).expect("a difference")
        };
        assert!(differ("aaaaaaaa", "cccccccc").contains("dm-worker/dm-worker is an executable"));
        assert!(differ("f\t3\t755", "f\t3\t644").contains("the package has an executable"));
        assert!(
            differ("link\tdm-worker", "link\telsewhere").contains("dm-worker/link is a link to")
        );
        let extra = [&GOOD[..5], &["entry\tf\t0\t644\tdm-worker/evil\t"], &GOOD[5..]].concat();
        assert_eq!(
            listing(&extra).difference(&files()).unwrap(),
            "dm-worker/evil is not in the package"
        );
        // The conf dir, x.toml and x.toml's hash gone.
        let missing = [&GOOD[..2], &GOOD[4..6], &GOOD[7..]].concat();
        assert!(listing(&missing).difference(&files()).unwrap().contains("is missing"));
    }

    #[test]
    fn output_that_is_not_a_listing_is_refused() {
        assert_eq!(Listing::parse("entry\tnonsense"), None);
        assert_eq!(Listing::parse("sha\tabc ./x"), None);
        assert_eq!(Listing::parse("hello"), None);
        assert_eq!(Listing::parse("other\tkey"), None);
    }
}
