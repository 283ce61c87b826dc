//! The version block DM prints for `-V` and serves at `/status`.

use serde::Serialize;

/// The `(major, minor)` of a version such as `v8.5.1` or `8.5.0-20250120`: what a hotfix must
/// keep. `None` for anything else.
pub fn release_line(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.trim().trim_start_matches('v').split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// `Release Version` and `Git Commit Hash` of a DM binary or of a running instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    pub release: String,
    pub git_hash: String,
}

impl VersionInfo {
    pub fn parse(block: &str) -> VersionInfo {
        let field = |name: &str| {
            block
                .lines()
                .find_map(|line| line.trim().strip_prefix(name))
                .map(|value| value.trim().to_owned())
                .unwrap_or_default()
        };
        VersionInfo { release: field("Release Version:"), git_hash: field("Git Commit Hash:") }
    }

    /// Whether a running instance reporting `self` runs the binary that printed `expected`.
    /// Both fields count: a hotfix often keeps the Release Version and changes only the hash.
    pub fn matches(&self, expected: &VersionInfo) -> bool {
        self.release == expected.release
            && (expected.git_hash.is_empty() || self.git_hash == expected.git_hash)
    }

    /// The release line, `(major, minor)`, of this version's Release Version.
    pub fn release_line(&self) -> Option<(u64, u64)> {
        release_line(&self.release)
    }

    /// `v8.5.1 (1a2b3c4)` for messages and tables.
    pub fn short(&self) -> String {
        match self.git_hash.get(..7) {
            Some(hash) if !self.release.is_empty() => format!("{} ({hash})", self.release),
            _ if !self.release.is_empty() => self.release.clone(),
            _ => "unknown".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_compares() {
        let block = "Release Version: v8.5.1\nGit Commit Hash: 1a2b3c4d5e\nGit Branch: HEAD\n";
        let info = VersionInfo::parse(block);
        assert_eq!(info.release, "v8.5.1");
        assert_eq!(info.short(), "v8.5.1 (1a2b3c4)");
        let other_hash = VersionInfo::parse("Release Version: v8.5.1\nGit Commit Hash: ffff\n");
        assert!(!other_hash.matches(&info));
        assert!(info.matches(&info.clone()));
        assert_eq!(VersionInfo::parse("garbage").short(), "unknown");
    }

    #[test]
    fn release_lines() {
        assert_eq!(release_line("v8.5.1"), Some((8, 5)));
        assert_eq!(release_line("8.5.0-20250120"), Some((8, 5)));
        assert_eq!(release_line("v7.5"), Some((7, 5)));
        assert_eq!(release_line("v0.0.0"), Some((0, 0)));
        assert_eq!(release_line("nightly"), None);
        assert_eq!(release_line(""), None);
    }
}
