//! An OpenSSH-format known_hosts file: the cluster's own `ssh/known_hosts`.
//!
//! Entries name a host as `host` (port 22) or `[host]:port`, as OpenSSH does: plain, as a
//! comma list of patterns (`*`, `?`; a matching `!pattern` excludes the line), or hashed
//! (`|1|salt|hash`, as `ssh-keyscan -H` and `HashKnownHosts` write them). `@revoked` keys are
//! refused for the hosts they name; `@cert-authority` lines are skipped (dm-patch does not
//! take host certificates), which can only make a key look unknown, never wrongly trusted.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::{HashAlg, PublicKey};
use sha1::Sha1;
use wildmatch::WildMatch;

/// One recorded key for a host, with its 1-based line number in the file.
#[derive(Debug, Clone)]
pub struct KnownKey {
    pub line: usize,
    pub key: PublicKey,
    /// An `@revoked` line: this key must never be trusted for the host.
    pub revoked: bool,
}

/// How a host's name is written in known_hosts.
pub fn host_entry_name(host: &str, port: u16) -> String {
    if port == 22 { host.to_owned() } else { format!("[{host}]:{port}") }
}

/// `SHA256:<base64>`, as `ssh-keygen -l` and OpenSSH's warnings print it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The keys recorded (or revoked) for `host` on `port`. A missing file records nothing; lines
/// that do not parse are skipped (OpenSSH skips them too).
pub fn recorded_keys(path: &Path, host: &str, port: u16) -> io::Result<Vec<KnownKey>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    // OpenSSH compares (and hashes) host names in lower case.
    let name = host_entry_name(host, port).to_ascii_lowercase();
    Ok(text
        .lines()
        .enumerate()
        .filter_map(|(index, line)| {
            let mut fields = line.split_whitespace();
            let mut names = fields.next().filter(|n| !n.starts_with('#'))?;
            let mut revoked = false;
            if let Some(marker) = names.strip_prefix('@') {
                // Anything but @revoked is a certificate authority: not used here.
                revoked = marker == "revoked";
                if !revoked {
                    return None;
                }
                names = fields.next()?;
            }
            let (algorithm, base64) = (fields.next()?, fields.next()?);
            if !names_match(names, &name) {
                return None;
            }
            let key = PublicKey::from_openssh(&format!("{algorithm} {base64}")).ok()?;
            Some(KnownKey { line: index + 1, key, revoked })
        })
        .collect())
}

/// Whether a line's host field names `name` (lower case, `host` or `[host]:port`).
fn names_match(field: &str, name: &str) -> bool {
    if let Some(hashed) = field.strip_prefix("|1|") {
        return hashed_name_is(hashed, name);
    }
    let mut matched = false;
    for pattern in field.to_ascii_lowercase().split(',') {
        match pattern.strip_prefix('!') {
            Some(excluded) if WildMatch::new(excluded).matches(name) => return false,
            Some(_) => {}
            None => matched |= WildMatch::new(pattern).matches(name),
        }
    }
    matched
}

/// `salt|hash` of a hashed name: the hash is HMAC-SHA1 of the name, keyed with the salt.
fn hashed_name_is(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// What the file says about a presented key.
#[derive(Debug)]
pub enum Verdict {
    /// A recorded key for this host matches.
    Known,
    /// Nothing is recorded for this host.
    Unknown,
    /// Keys are recorded for this host, none of them this one; the first is reported.
    Changed(KnownKey),
    /// The presented key is `@revoked` for this host.
    Revoked(KnownKey),
}

pub fn judge(recorded: &[KnownKey], presented: &PublicKey) -> Verdict {
    let is_presented = |known: &&KnownKey| known.key.key_data() == presented.key_data();
    if let Some(revoked) = recorded.iter().filter(|known| known.revoked).find(is_presented) {
        return Verdict::Revoked(revoked.clone());
    }
    let mut trusted = recorded.iter().filter(|known| !known.revoked);
    if trusted.clone().any(|known| is_presented(&known)) {
        return Verdict::Known;
    }
    match trusted.next() {
        None => Verdict::Unknown,
        Some(first) => Verdict::Changed(first.clone()),
    }
}

/// Serialises appends in this process: hosts are connected in parallel, and two writers must
/// not interleave or both decide a host is new.
static APPEND: Mutex<()> = Mutex::new(());

/// Records `key` for `host`/`port` unless an identical entry is already there (another
/// connection may have recorded it since the caller looked).
///
/// The line goes out in one `write` on an `O_APPEND` descriptor, so even another process
/// appending at the same time cannot interleave with it.
pub fn record(path: &Path, host: &str, port: u16, key: &PublicKey) -> io::Result<()> {
    let _guard = APPEND.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if matches!(judge(&recorded_keys(path, host, port)?, key), Verdict::Known) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file =
        OpenOptions::new().read(true).append(true).create(true).mode(0o644).open(path)?;
    let mut entry = String::new();
    if !ends_with_newline(&mut file)? {
        entry.push('\n');
    }
    let openssh =
        key.to_openssh().map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
    entry.push_str(&format!("{} {openssh}\n", host_entry_name(host, port)));
    file.write_all(entry.as_bytes())
}

/// True for an empty file too: nothing to terminate.
fn ends_with_newline(file: &mut std::fs::File) -> io::Result<bool> {
    use std::io::{Seek, SeekFrom};
    if file.metadata()?.len() == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEj9eaUJ2NjSc9frZzuiJcx6NciNeZl7gTkn/laDz2vd";
    const ED25519_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPQ/qWvoYw8f35z77KAyCp3MWvmsnkAkWD5ME0Ue/S0u";

    fn key(openssh: &str) -> PublicKey {
        PublicKey::from_openssh(openssh).unwrap()
    }

    #[test]
    fn entries_use_bracketed_names_off_port_22() {
        assert_eq!(host_entry_name("127.0.9.1", 22), "127.0.9.1");
        assert_eq!(host_entry_name("127.0.9.1", 2222), "[127.0.9.1]:2222");
    }

    /// The lines of `text` as a known_hosts file, looked up for `host` on `port`: the line
    /// numbers found, revoked ones marked with a minus sign.
    fn lookup(text: &str, host: &str, port: u16) -> Vec<i64> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, text).unwrap();
        let found = recorded_keys(&path, host, port).unwrap();
        found.iter().map(|k| if k.revoked { -(k.line as i64) } else { k.line as i64 }).collect()
    }

    #[test]
    fn lookup_matches_exact_names_and_counts_every_line() {
        let text = format!(
            "# a comment\n\n127.0.9.1 {ED25519_A}\n[127.0.9.1]:2222,other\t{ED25519_B} comment\n\
             @cert-authority [127.0.9.1]:2222 {ED25519_A}\nbroken line\n"
        );
        assert_eq!(lookup(&text, "127.0.9.1", 2222), [4]);
        assert_eq!(lookup(&text, "127.0.9.1", 22), [3]);
        assert_eq!(lookup(&text, "OTHER", 22), [4], "names are compared in lower case");
        assert!(lookup(&text, "127.0.9.2", 22).is_empty());
    }

    /// What `ssh-keyscan -H` and `ssh-keygen -H` write (these lines are from ssh-keygen -H).
    #[test]
    fn hashed_names_match_their_host_and_port_only() {
        let text = format!(
            "|1|m8wnrUoiioWGBArN7A/Gjsu6slU=|N8nNGREB4AjcVL7btq0UutuL6RY= {ED25519_A}\n\
             |1|nRhwqrPiqZakQNGRbZFa1n94fWY=|fsCSa3VWEc+fkzSk5VfMkZE43g8= {ED25519_B}\n\
             |1|bm90IGJhc2U2NA|!!! {ED25519_B}\n"
        );
        assert_eq!(lookup(&text, "127.0.9.1", 2222), [1]);
        assert_eq!(lookup(&text, "127.0.9.3", 22), [2]);
        assert!(lookup(&text, "127.0.9.1", 22).is_empty());
        assert!(lookup(&text, "127.0.9.3", 2222).is_empty());
    }

    #[test]
    fn patterns_match_with_wildcards_and_negations_exclude() {
        let text = format!(
            "127.0.9.*,!127.0.9.7 {ED25519_A}\n[127.0.9.?]:2222 {ED25519_B}\n\
             @revoked 127.0.9.5 {ED25519_A}\n"
        );
        assert_eq!(lookup(&text, "127.0.9.1", 22), [1]);
        assert!(lookup(&text, "127.0.9.7", 22).is_empty(), "excluded by !127.0.9.7");
        assert_eq!(lookup(&text, "127.0.9.4", 2222), [2]);
        assert!(lookup(&text, "127.0.9.14", 2222).is_empty(), "? is one character");
        assert_eq!(lookup(&text, "127.0.9.5", 22), [1, -3]);
    }

    #[test]
    fn a_missing_file_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(recorded_keys(&dir.path().join("none"), "h", 22).unwrap().is_empty());
    }

    #[test]
    fn judge_tells_known_unknown_changed_and_revoked() {
        let recorded = vec![KnownKey { line: 7, key: key(ED25519_A), revoked: false }];
        assert!(matches!(judge(&recorded, &key(ED25519_A)), Verdict::Known));
        assert!(matches!(judge(&[], &key(ED25519_A)), Verdict::Unknown));
        assert!(matches!(judge(&recorded, &key(ED25519_B)), Verdict::Changed(k) if k.line == 7));

        // A revoked key is refused even where the same key is also recorded as trusted; a
        // host with only revoked entries has no trusted key (a new one is unknown).
        let revoked = KnownKey { line: 9, key: key(ED25519_A), revoked: true };
        let both = [recorded[0].clone(), revoked.clone()];
        assert!(matches!(judge(&both, &key(ED25519_A)), Verdict::Revoked(k) if k.line == 9));
        let only_revoked = [revoked];
        assert!(matches!(judge(&only_revoked, &key(ED25519_B)), Verdict::Unknown));
    }

    #[test]
    fn record_appends_once_and_terminates_an_unterminated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh/known_hosts");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("127.0.9.9 {ED25519_B}")).unwrap();
        record(&path, "127.0.9.1", 2222, &key(ED25519_A)).unwrap();
        record(&path, "127.0.9.1", 2222, &key(ED25519_A)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("127.0.9.9 {ED25519_B}\n[127.0.9.1]:2222 {ED25519_A}\n"));
    }

    #[test]
    fn parallel_records_of_many_hosts_all_land_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::thread::scope(|scope| {
            for i in 0..16 {
                let path = &path;
                scope.spawn(move || {
                    record(path, &format!("127.0.9.{i}"), 22, &key(ED25519_A)).unwrap()
                });
            }
        });
        for i in 0..16 {
            assert_eq!(recorded_keys(&path, &format!("127.0.9.{i}"), 22).unwrap().len(), 1);
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 16);
    }
}
