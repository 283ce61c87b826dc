//! An OpenSSH-format known_hosts file: the cluster's own `ssh/known_hosts`.
//!
//! Entries name a host as `host` (port 22) or `[host]:port`, possibly several comma-separated
//! on one line. Hashed names (`|1|...`), wildcard patterns and `@cert-authority`/`@revoked`
//! markers are not matched: TiUP never writes them into a cluster's store, and skipping them
//! can only make a key look unknown, never wrongly trusted.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use russh::keys::{HashAlg, PublicKey};

/// One recorded key for a host, with its 1-based line number in the file.
#[derive(Debug, Clone)]
pub struct KnownKey {
    pub line: usize,
    pub key: PublicKey,
}

/// How a host's name is written in known_hosts.
pub fn host_entry_name(host: &str, port: u16) -> String {
    if port == 22 { host.to_owned() } else { format!("[{host}]:{port}") }
}

/// `SHA256:<base64>`, as `ssh-keygen -l` and OpenSSH's warnings print it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The keys recorded for `host` on `port`. A missing file records nothing; lines that do not
/// parse are skipped (OpenSSH skips them too).
pub fn recorded_keys(path: &Path, host: &str, port: u16) -> io::Result<Vec<KnownKey>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let name = host_entry_name(host, port);
    Ok(text
        .lines()
        .enumerate()
        .filter_map(|(index, line)| {
            let mut fields = line.split_whitespace();
            let names = fields.next().filter(|n| !n.starts_with('#') && !n.starts_with('@'))?;
            let (algorithm, base64) = (fields.next()?, fields.next()?);
            if !names.split(',').any(|candidate| candidate == name) {
                return None;
            }
            let key = PublicKey::from_openssh(&format!("{algorithm} {base64}")).ok()?;
            Some(KnownKey { line: index + 1, key })
        })
        .collect())
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
}

pub fn judge(recorded: &[KnownKey], presented: &PublicKey) -> Verdict {
    if recorded.iter().any(|known| known.key.key_data() == presented.key_data()) {
        return Verdict::Known;
    }
    match recorded.first() {
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
        assert_eq!(host_entry_name("10.0.0.1", 22), "10.0.0.1");
        assert_eq!(host_entry_name("10.0.0.1", 2222), "[10.0.0.1]:2222");
    }

    #[test]
    fn lookup_matches_exact_names_and_counts_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(
            &path,
            format!(
                "# a comment\n\n10.0.0.1 {ED25519_A}\n[10.0.0.1]:2222,other\t{ED25519_B} comment\n\
                 |1|c2FsdA==|aGFzaA== {ED25519_A}\n@revoked [10.0.0.1]:2222 {ED25519_A}\nbroken line\n"
            ),
        )
        .unwrap();
        let on_2222 = recorded_keys(&path, "10.0.0.1", 2222).unwrap();
        assert_eq!(on_2222.len(), 1);
        assert_eq!(on_2222[0].line, 4);
        assert_eq!(on_2222[0].key.key_data(), key(ED25519_B).key_data());
        assert_eq!(recorded_keys(&path, "10.0.0.1", 22).unwrap()[0].line, 3);
        assert!(recorded_keys(&path, "10.0.0.2", 22).unwrap().is_empty());
    }

    #[test]
    fn a_missing_file_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(recorded_keys(&dir.path().join("none"), "h", 22).unwrap().is_empty());
    }

    #[test]
    fn judge_tells_known_unknown_and_changed() {
        let recorded = vec![KnownKey { line: 7, key: key(ED25519_A) }];
        assert!(matches!(judge(&recorded, &key(ED25519_A)), Verdict::Known));
        assert!(matches!(judge(&[], &key(ED25519_A)), Verdict::Unknown));
        assert!(matches!(judge(&recorded, &key(ED25519_B)), Verdict::Changed(k) if k.line == 7));
    }

    #[test]
    fn record_appends_once_and_terminates_an_unterminated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh/known_hosts");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("10.0.0.9 {ED25519_B}")).unwrap();
        record(&path, "10.0.0.1", 2222, &key(ED25519_A)).unwrap();
        record(&path, "10.0.0.1", 2222, &key(ED25519_A)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("10.0.0.9 {ED25519_B}\n[10.0.0.1]:2222 {ED25519_A}\n"));
    }

    #[test]
    fn parallel_records_of_many_hosts_all_land_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::thread::scope(|scope| {
            for i in 0..16 {
                let path = &path;
                scope.spawn(move || {
                    record(path, &format!("10.0.0.{i}"), 22, &key(ED25519_A)).unwrap()
                });
            }
        });
        for i in 0..16 {
            assert_eq!(recorded_keys(&path, &format!("10.0.0.{i}"), 22).unwrap().len(), 1);
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 16);
    }
}
