//! One audit record per run in `$TIUP_HOME/storage/dm/audit/`, in TiUP's own format (file named
//! by a base52 timestamp, first line the URL-escaped command line), so `tiup dm audit` lists
//! dm-patch runs beside its own. Best effort: a run never fails because its record could not be
//! written.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::report::Report;

pub struct Audit {
    path: Option<PathBuf>,
}

impl Audit {
    /// Opens a record in `dir` (the store's audit dir) for the run of `command_line`.
    pub fn start(dir: &Path, command_line: &[String]) -> Audit {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or_default();
        let path = dir.join(format!("{}_dm-patch", base52(nanos)));
        let first_line: Vec<String> = command_line.iter().map(|arg| query_escape(arg)).collect();
        let written = fs::create_dir_all(dir).and_then(|()| {
            let mut file = File::create(&path)?;
            writeln!(file, "{}", first_line.join(" "))?;
            writeln!(file, "started: {}", humantime::format_rfc3339_seconds(SystemTime::now()))
        });
        match written {
            Ok(()) => Audit { path: Some(path) },
            Err(err) => {
                tracing::warn!("could not write the audit record {}: {err}", path.display());
                Audit { path: None }
            }
        }
    }

    pub fn finish(&self, report: &Report) {
        let Some(path) = &self.path else { return };
        let appended = OpenOptions::new().append(true).open(path).and_then(|mut file| {
            writeln!(file, "finished: {}", report.finished_at)?;
            writeln!(file, "result: {:?}", report.result)?;
            if let Some(message) = &report.message {
                writeln!(file, "message: {message}")?;
            }
            for problem in &report.problems {
                writeln!(file, "problem: {problem}")?;
            }
            for instance in &report.instances {
                writeln!(file, "instance {}: {}", instance.id, instance.outcome.label())?;
            }
            Ok(())
        });
        if let Err(err) = appended {
            tracing::warn!("could not complete the audit record {}: {err}", path.display());
        }
    }
}

/// TiUP's `base52.Encode`.
fn base52(mut id: i64) -> String {
    const SPACE: &[u8] = b"0123456789bcdfghjkmnpqrstvwxyzBCDFGHJKLMNPQRSTVWXYZ";
    let mut digits = Vec::new();
    while id > 0 {
        digits.push(SPACE[(id % SPACE.len() as i64) as usize]);
        id /= SPACE.len() as i64;
    }
    digits.reverse();
    String::from_utf8(digits).expect("ASCII digits")
}

/// Go's `url.QueryEscape`, which TiUP applies to each argument of the first line.
fn query_escape(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len());
    for byte in arg.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiup_compatible_names_and_lines() {
        assert_eq!(base52(0), "");
        assert_eq!(base52(51), "10");
        assert_eq!(query_escape("/tmp/a b.tar.gz"), "%2Ftmp%2Fa+b.tar.gz");
        assert_eq!(query_escape("-R"), "-R");
    }
}
