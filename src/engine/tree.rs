//! The package's tree on a host, as shell scripts run over SSH and what they print: unpacking it
//! from stdin into an instance's staging dir, proving it identical to what the local check saw,
//! and swapping it into `bin/` (as TiUP's `tar -xzf <pkg> -C bin` would) and back.
//!
//! Layout of an instance's staging dir (`<deploy_dir>/bin.patch-<sha7>/`):
//! - `tree/`: the package, unpacked, verified, owned like the binary it replaces;
//! - `previous/`: what the swap replaced in `bin/` (hard links, so free), and `previous/.added`,
//!   the files the swap added; this is what an undo puts back.
//!
//! Every path in these scripts comes from the local check (normalised, inside the package, no
//! control characters) and is passed quoted; the host's answers are parsed strictly and compared
//! with the local facts, so a host (or a tar) that unpacks something else is caught.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::package::{FileKind, PackageFile, Wire};
use crate::ssh::shell_quote;

/// Sets `$hash` to the fastest sha256 tool the host has: OpenSSL uses the CPU's SHA
/// instructions, coreutils' `sha256sum` does not (0.23 s against 0.93 s for 256 MiB on one
/// x86-64 core).
pub(super) const PICK_HASHER: &str = "if command -v openssl >/dev/null 2>&1; \
     then hash='openssl dgst -sha256 -r'; else hash=sha256sum; fi";

/// How long a binary of the package may take to answer `-V` on a host (a DM binary answers at
/// once), and how much of its answer is read: a binary that hangs or floods must hold up
/// nothing.
pub(super) const VERSION_PROBE_SECONDS: u64 = 10;
const VERSION_PROBE_BYTES: u64 = 4096;

/// Prints what `binary -V` says, at most [`VERSION_PROBE_BYTES`] of it, then `exit status N`
/// (also under `set -e`: the status is caught, not fatal).
/// A binary still running after [`VERSION_PROBE_SECONDS`] is killed with every process of its
/// group (`timeout` leads one; whatever survived a TERM gets a KILL a second later), and says
/// `exit status 124`.
pub fn version_probe(binary: &str) -> String {
    version_probe_of(&shell_quote(binary))
}

/// [`version_probe`] of a binary named by a shell word the caller made safe (a quoted path,
/// or one built from a variable: `"$p"/dm-worker/dm-worker`).
pub fn version_probe_of(binary: &str) -> String {
    format!(
        "{{ timeout -k 1 {VERSION_PROBE_SECONDS} {binary} -V 2>&1 < /dev/null && s=0 || s=$?; \
         echo \"exit status $s\"; }} | head -c {VERSION_PROBE_BYTES}"
    )
}

/// The markers between the sections of a script's output.
const LIST: &str = "@@list";
const SHA: &str = "@@sha";
pub(super) const VERSION: &str = "@@version";

/// Unpacks the package arriving on stdin in the form `wire` into `<staging>/tree` (what an
/// earlier unpack left there goes first; `previous/` stays), then lists and hashes it, owns it
/// like `reference` and prints the version of `<tree>/<entry>`.
pub fn unpack_script(staging: &str, reference: &str, entry: &str, wire: Wire) -> String {
    let tree = format!("{staging}/tree");
    format!(
        "set -e\nrm -rf {tree}\nmkdir -p {tree}\n\
         tar --no-same-owner {flags} - -C {tree}\n{}\n\
         echo {VERSION}\n{probe}\n",
        verify_script(&tree, reference),
        tree = shell_quote(&tree),
        probe = version_probe(&format!("{tree}/{entry}")),
        flags = wire.tar_flags(),
    )
}

/// TiUP's backup of `bin` as `backup` (`bin.old.<cluster version>`), made once and kept if it
/// exists. The copy is made under a temporary name and renamed, so a copy cut short (a full
/// disk, a killed run) never passes for the backup, and what it left is removed.
pub fn backup_script(bin: &str, backup: &str) -> String {
    format!(
        "set -e\nif [ ! -d {backup} ]; then\n\
         \x20 rm -rf {partial}\n\
         \x20 if ! cp -rp {bin} {partial}; then\n\
         \x20   rm -rf {partial}; printf 'could not back up %s to %s\\n' {bin} {backup} >&2; exit 1\n\
         \x20 fi\n\
         \x20 mv -T {partial} {backup}\n\
         fi",
        bin = shell_quote(bin),
        backup = shell_quote(backup),
        partial = shell_quote(&format!("{backup}.partial")),
    )
}

/// Copies an instance's verified tree from another instance's staging dir on the same host,
/// then lists, hashes and owns it as [`unpack_script`] does.
pub fn copy_script(from_staging: &str, staging: &str, reference: &str) -> String {
    let tree = format!("{staging}/tree");
    format!(
        "set -e\nrm -rf {tree}\nmkdir -p {staging}\ncp -a {from} {tree}\n{}\n",
        verify_script(&tree, reference),
        tree = shell_quote(&tree),
        staging = shell_quote(staging),
        from = shell_quote(&format!("{from_staging}/tree")),
    )
}

/// Owns `tree` like `reference` (never through a link), then prints every entry (type, size,
/// mode, path, link target) and the sha256 of every regular file, each byte read once.
fn verify_script(tree: &str, reference: &str) -> String {
    format!(
        "chown -hR --reference={reference} {tree}\ncd {tree}\n{PICK_HASHER}\n\
         echo {LIST}\nfind . -mindepth 1 -printf '%y\\t%s\\t%m\\t%P\\t%l\\n'\n\
         echo {SHA}\nfind . -type f -exec $hash {{}} +",
        reference = shell_quote(reference),
        tree = shell_quote(tree),
    )
}

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
    /// Parses a script's stdout; `None` when it is not what the scripts print.
    pub fn parse(stdout: &str) -> Option<Listing> {
        let mut listing = Listing::default();
        let mut section = "";
        let mut version = String::new();
        for line in stdout.lines() {
            if [LIST, SHA, VERSION].contains(&line) {
                section = line;
                continue;
            }
            match section {
                LIST => {
                    let mut fields = line.splitn(5, '\t');
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
                SHA => {
                    // `<hex> *./path` (openssl -r) or `<hex>  ./path` (sha256sum).
                    let (hex, path) = line.split_once(' ')?;
                    let path = path.trim_start_matches([' ', '*']).strip_prefix("./")?;
                    match listing.entries.get_mut(path) {
                        Some(Found::File { sha256, .. }) if hex.len() == 64 => {
                            *sha256 = Some(hex.to_owned());
                        }
                        _ => return None,
                    }
                }
                VERSION => {
                    version.push_str(line);
                    version.push('\n');
                }
                _ => return None,
            }
        }
        listing.version = (section == VERSION).then_some(version);
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

/// The paths a swap moves: the package's files and links (directories are made as needed).
fn moved_paths(files: &[PackageFile]) -> String {
    let mut list = String::new();
    for file in files.iter().filter(|f| f.kind != FileKind::Dir) {
        let _ = writeln!(list, "{}", shell_quote(&file.path));
    }
    list
}

/// Run with the service stopped (or `--offline`): keeps in `previous/` what the package
/// replaces in `bin/` and the files in `remove` (hard links) and notes in `previous/.added`
/// what it adds, then moves the tree's files and links into `bin/` and deletes the `remove`
/// files (a rollback takes back what its patch added). A directory in `bin/` where the package
/// has a file stops it before anything moved (exit 3).
pub fn swap_script(bin: &str, staging: &str, files: &[PackageFile], remove: &[String]) -> String {
    format!(
        "set -e\nb={bin}\nt={tree}\np={previous}\nrm -rf \"$p\"\nmkdir -p \"$p\"\n: > \"$p/.added\"\n\
         for f in {list}; do\n\
         \x20 if [ -d \"$b/$f\" ] && [ ! -L \"$b/$f\" ]; then echo \"$b/$f is a directory\" >&2; exit 3; fi\n\
         done\n\
         keep() {{ mkdir -p \"$p/$(dirname \"$1\")\"; ln -P \"$b/$1\" \"$p/$1\" 2>/dev/null || cp -a \"$b/$1\" \"$p/$1\"; }}\n\
         for f in {list}; do\n\
         \x20 if [ -e \"$b/$f\" ] || [ -L \"$b/$f\" ]; then keep \"$f\"\n\
         \x20 else printf '%s\\n' \"$f\" >> \"$p/.added\"; fi\n\
         done\n\
         for f in {removed}; do\n\
         \x20 if [ -f \"$b/$f\" ] || [ -L \"$b/$f\" ]; then keep \"$f\"; fi\n\
         done\n\
         for f in {list}; do mkdir -p \"$b/$(dirname \"$f\")\"; mv -f \"$t/$f\" \"$b/$f\"; done\n\
         for f in {removed}; do if [ -e \"$p/$f\" ] || [ -L \"$p/$f\" ]; then rm -f \"$b/$f\"; fi; done\n",
        bin = shell_quote(bin),
        tree = shell_quote(&format!("{staging}/tree")),
        previous = shell_quote(&format!("{staging}/previous")),
        list = moved_paths(files).trim_end().replace('\n', " "),
        removed = quoted_list(remove),
    )
}

/// Puts back what [`swap_script`] replaced or deleted, kept in `previous` (the staging dir's
/// `previous/`, or the rollback point it became), and removes what it added; does nothing
/// where the swap did not get to keep anything (no `previous`).
pub fn restore_script(
    bin: &str,
    previous: &str,
    files: &[PackageFile],
    remove: &[String],
) -> String {
    format!(
        "set -e\nb={bin}\np={previous}\n\
         for f in {list} {removed}; do\n\
         \x20 if [ -e \"$p/$f\" ] || [ -L \"$p/$f\" ]; then mv -f \"$p/$f\" \"$b/$f\"; fi\n\
         done\n\
         if [ -f \"$p/.added\" ]; then while IFS= read -r f; do rm -f \"$b/$f\"; done < \"$p/.added\"; fi\n",
        bin = shell_quote(bin),
        previous = shell_quote(previous),
        list = moved_paths(files).trim_end().replace('\n', " "),
        removed = quoted_list(remove),
    )
}

/// Paths for a `for` list, each quoted.
fn quoted_list(paths: &[String]) -> String {
    paths.iter().map(|path| shell_quote(path).into_owned()).collect::<Vec<_>>().join(" ")
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

    const GOOD: [&str; 11] = [
        "@@list",
        "d\t4096\t755\tdm-worker\t",
        "f\t3\t755\tdm-worker/dm-worker\t",
        "d\t4096\t755\tdm-worker/conf\t",
        "f\t1\t644\tdm-worker/conf/x.toml\t",
        "l\t9\t777\tdm-worker/link\tdm-worker",
        "@@sha",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa *./dm-worker/dm-worker",
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb  ./dm-worker/conf/x.toml",
        "@@version",
        "Release Version: v8.5.2",
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
        let extra = [&GOOD[..6], &["f\t0\t644\tdm-worker/evil\t"], &GOOD[6..]].concat();
        assert_eq!(
            listing(&extra).difference(&files()).unwrap(),
            "dm-worker/evil is not in the package"
        );
        // The conf dir, x.toml and x.toml's hash gone.
        let missing = [&GOOD[..3], &GOOD[5..8], &GOOD[9..]].concat();
        assert!(listing(&missing).difference(&files()).unwrap().contains("is missing"));
    }

    #[test]
    fn output_that_is_not_a_listing_is_refused() {
        assert_eq!(Listing::parse("@@list\nnonsense"), None);
        assert_eq!(Listing::parse("@@sha\nabc ./x"), None);
        assert_eq!(Listing::parse("hello"), None);
    }

    #[test]
    fn scripts_quote_every_path() {
        let swap =
            swap_script("/d/my bin", "/d/bin.patch-1", &files(), &["dm-worker/old x".into()]);
        assert!(swap.contains("b='/d/my bin'"), "{swap}");
        assert!(
            swap.contains("for f in dm-worker/dm-worker dm-worker/conf/x.toml dm-worker/link;")
        );
        assert!(swap.contains("for f in 'dm-worker/old x'; do"), "{swap}");
        let restore = restore_script("/d/bin", "/d/st/previous", &files(), &[]);
        assert!(restore.contains("p=/d/st/previous"), "{restore}");
    }
}
