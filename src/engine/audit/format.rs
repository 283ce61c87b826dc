//! The audit record's format, in one place for the writer ([`super`]) and the reader
//! ([`super::read`]): TiUP's file name (a base52 timestamp) and first line (the URL-escaped
//! command line), then `key: value` lines, among them one per instance saying how it ended.

use serde::Serialize;

use crate::engine::report::Outcome;

/// The suffix of the records dm-patch writes (TiUP's own have none).
pub const RECORD_SUFFIX: &str = "_dm-patch";

/// What an `--offline` swap's outcome reads as: the binary runs from the next restart.
const SWAPPED: &str = Outcome::SWAPPED_LABEL;
/// What a run that never reached the engine says of its selected instances.
const NOT_TOUCHED: &str = "not touched";

/// One `key: value` line; a value never spans lines.
pub fn line(lines: &mut String, key: &str, value: &str) {
    lines.push_str(key);
    lines.push_str(": ");
    lines.push_str(&value.replace(['\n', '\r'], " "));
    lines.push('\n');
}

/// How one instance ended, as a record's `instance <id>: ...` line says it:
/// `patched; version v8.5.1 (1a2b3c4) -> v8.5.2 (5d6e7f8)`, then why, when it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceEntry {
    pub id: String,
    pub outcome: Outcome,
    /// Installed by `--offline`: it runs from the instance's next restart.
    pub swapped: bool,
    /// The version it ran before and after (`short()` form), when known.
    pub version_before: Option<String>,
    pub version_after: Option<String>,
    pub detail: Option<String>,
}

impl InstanceEntry {
    /// The outcome as the record and `history` say it.
    pub fn label(&self) -> &'static str {
        if self.swapped { SWAPPED } else { self.outcome.label() }
    }

    /// The value of its `instance <id>` line.
    pub fn to_value(&self) -> String {
        let version = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        let mut text = format!(
            "{}; version {} -> {}",
            self.label(),
            version(&self.version_before),
            version(&self.version_after)
        );
        if let Some(detail) = &self.detail {
            text.push_str("; ");
            text.push_str(detail);
        }
        text
    }

    /// Reads the value of an `instance <id>` line, as any dm-patch wrote it; `None` for an
    /// outcome this one does not know.
    pub fn parse(id: &str, value: &str) -> Option<InstanceEntry> {
        let (label, rest) = value.split_once("; ").unwrap_or((value, ""));
        let (outcome, swapped) = match label {
            SWAPPED => (Outcome::Patched, true),
            NOT_TOUCHED => (Outcome::NotReached, false),
            label => (Outcome::ALL.into_iter().find(|o| o.label() == label)?, false),
        };
        let (versions, detail) = match rest.strip_prefix("version ") {
            Some(versions) => versions.split_once("; ").unwrap_or((versions, "")),
            None => ("", rest),
        };
        let known = |v: &str| (!v.is_empty() && v != "-").then(|| v.to_owned());
        let (before, after) = versions.split_once(" -> ").unwrap_or((versions, ""));
        Some(InstanceEntry {
            id: id.to_owned(),
            outcome,
            swapped,
            version_before: known(before),
            version_after: known(after),
            detail: (!detail.is_empty()).then(|| detail.to_owned()),
        })
    }

    /// The value of an instance line of a run that never reached the engine.
    pub fn not_touched() -> &'static str {
        NOT_TOUCHED
    }
}

/// A run's result as `history` says it, whichever way its record spells it: kebab-case now
/// (`preflight-failed`), Rust's variant names in records of older versions
/// (`PreflightFailed`).
pub fn result_word(recorded: &str) -> String {
    let mut word = String::with_capacity(recorded.len() + 4);
    for (i, c) in recorded.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                word.push('-');
            }
            word.push(c.to_ascii_lowercase());
        } else {
            word.push(c);
        }
    }
    word
}

/// TiUP's `base52.Encode`.
pub fn base52(mut id: i64) -> String {
    let mut digits = Vec::new();
    while id > 0 {
        digits.push(BASE52[(id % BASE52.len() as i64) as usize]);
        id /= BASE52.len() as i64;
    }
    digits.reverse();
    String::from_utf8(digits).expect("ASCII digits")
}

/// TiUP's base52, read back.
pub fn base52_value(text: &str) -> u128 {
    text.bytes().fold(0u128, |value, byte| {
        let digit = BASE52.iter().position(|d| *d == byte).unwrap_or(0) as u128;
        value.saturating_mul(52).saturating_add(digit)
    })
}

/// TiUP's base52 digits: `0-9`, then consonants, lower case first.
const BASE52: &[u8] = b"0123456789bcdfghjkmnpqrstvwxyzBCDFGHJKLMNPQRSTVWXYZ";

/// Go's `url.QueryEscape`, which TiUP applies to each argument of the first line.
pub fn query_escape(arg: &str) -> String {
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

/// Undoes [`query_escape`] (Go's `url.QueryUnescape`).
pub fn query_unescape(word: &str) -> String {
    let bytes = word.as_bytes();
    let hex = |byte: u8| (byte as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', high, low]) => hex(*high).zip(hex(*low)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, byte) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiup_compatible_names_and_lines() {
        assert_eq!(base52(0), "");
        assert_eq!(base52(51), "10");
        assert_eq!(base52_value("10"), 52);
        assert!(base52_value("h4txQDC5rSQ") > base52_value("h4txQDyV1rP"));
        assert_eq!(query_escape("/tmp/a b.tar.gz"), "%2Ftmp%2Fa+b.tar.gz");
        assert_eq!(query_escape("-R"), "-R");
        assert_eq!(query_unescape("a%2Fb+c%25"), "a/b c%");
        assert_eq!(query_unescape("50%"), "50%");
    }

    #[test]
    fn every_outcome_reads_back_as_written() {
        for outcome in Outcome::ALL {
            for swapped in [false, true] {
                if swapped && outcome != Outcome::Patched {
                    continue;
                }
                let entry = InstanceEntry {
                    id: "127.0.9.1:8262".to_owned(),
                    outcome,
                    swapped,
                    version_before: Some("v8.5.1 (1a2b3c4)".to_owned()),
                    version_after: None,
                    detail: Some("it broke; badly".to_owned()),
                };
                assert_eq!(InstanceEntry::parse(&entry.id, &entry.to_value()), Some(entry));
            }
        }
        let untouched = InstanceEntry::parse("x", "not touched").unwrap();
        assert_eq!((untouched.outcome, untouched.version_before), (Outcome::NotReached, None));
        assert_eq!(InstanceEntry::parse("x", "teleported; version - -> -"), None);
    }

    #[test]
    fn results_read_in_one_vocabulary() {
        assert_eq!(result_word("PreflightFailed"), "preflight-failed");
        assert_eq!(result_word("Success"), "success");
        assert_eq!(result_word("needs-attention"), "needs-attention");
        assert_eq!(result_word("unfinished"), "unfinished");
    }
}
