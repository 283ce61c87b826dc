//! Every shell script dm-patch runs on a host, kept beside this file as `*.sh` and embedded in
//! the binary, and the one format they all answer in.
//!
//! A script gets values only as positional parameters (`$1`, ...), each quoted by
//! [`shell_quote`]: nothing is spliced into its body. It is sent as
//! `sh -c '<lib.sh, then the script>' dm-patch-<name> <args>` (`bash -c` for one that needs
//! `pipefail`), so a host needs no file of
//! ours, and its stdin is the command's (the package, for `unpack`). It answers in lines
//! `key<TAB>value` ([`Answer`]). CI runs `shellcheck` on each, and the tests below run each
//! one here, against a scratch deploy dir, with hostile names.

use std::fmt::Write;

use crate::ssh::shell_quote;

/// The functions every script may use; sent ahead of each.
const LIB: &str = include_str!("lib.sh");

/// How long a binary of the package may take to answer `-V` on a host (a DM binary answers at
/// once; `version_of` in lib.sh): a binary that hangs must hold up nothing.
pub const VERSION_PROBE_SECONDS: u64 = 10;

/// One script: its name (`dm-patch-<name>` is its `$0` on the host, so `ps` says what runs)
/// and its body.
#[derive(Debug, Clone, Copy)]
pub struct Script {
    pub name: &'static str,
    /// `sh` (POSIX), or `bash` for the one script that needs `pipefail`.
    pub shell: &'static str,
    body: &'static str,
}

macro_rules! script {
    ($name:literal) => {
        script!($name, "sh")
    };
    ($name:literal, $shell:literal) => {
        Script { name: $name, shell: $shell, body: include_str!(concat!($name, ".sh")) }
    };
}

/// `unpack STAGING REFERENCE ENTRY TAR_FLAGS`, the package on stdin: the tree, listed.
pub const UNPACK: Script = script!("unpack");
/// `copy FROM_STAGING STAGING REFERENCE`: another instance's verified tree, listed.
pub const COPY: Script = script!("copy");
/// `backup BIN BACKUP`: TiUP's `bin.old.<version>`, once.
pub const BACKUP: Script = script!("backup");
/// `go`: waits for dm-patch's go-ahead on stdin (the steps of a roll in one command).
pub const GO: Script = script!("go");
/// `swap BIN STAGING COUNT PATH...`: the tree into `bin/`, what it replaced kept.
pub const SWAP: Script = script!("swap");
/// `restore BIN PREVIOUS PATH...`: what a swap replaced, back.
pub const RESTORE: Script = script!("restore");
/// `version BINARY`: what it says to `-V`, bounded.
pub const VERSION: Script = script!("version");
/// `action STAGING ACTION`: what the run staging there is for.
pub const ACTION: Script = script!("action");
/// `cleanup KIND PATH...`: a dir (`dir`), or a deploy dir's staging dirs (`staging`), gone.
pub const CLEANUP: Script = script!("cleanup");

/// `keep_point PREVIOUS POINTS STAMP MANIFEST BINARY KEEP DEPLOY`: a rollback point, the oldest
/// gone, then the instance's staging dirs.
pub const KEEP_POINT: Script = script!("keep_point");
/// `kept PREVIOUS POINTS SHA7 BINARY`: what an earlier run of a package kept, if anything.
pub const KEPT: Script = script!("kept");

/// `facts DEPLOY BINARY BACKUP ROLLBACKS ENTRY_SIZE SCOPE SERVICE [KIND PATH WANT]...`: what
/// preflight needs of an instance.
pub const FACTS: Script = script!("facts");

/// `survey DEPLOY COMPONENT VERSION ROLLBACKS`: what an instance could go back to.
pub const SURVEY: Script = script!("survey");
/// `pack DIR`: a rollback target's tree as a gzipped tar on stdout.
pub const PACK: Script = script!("pack", "bash");

/// `stop SCOPE UNIT`: a unit stopped, and what systemd says of it then.
pub const STOP: Script = script!("stop");

/// Every script, for the checks that cover them all.
pub const ALL: [Script; 15] = [
    UNPACK, COPY, BACKUP, GO, SWAP, RESTORE, VERSION, ACTION, CLEANUP, KEEP_POINT, KEPT, FACTS,
    SURVEY, PACK, STOP,
];

impl Script {
    /// The command line that runs this script on a host with `args` as its positional
    /// parameters, each quoted: the only way values enter it.
    pub fn command<I, S>(self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let source = self.source();
        let (shell, name) = (self.shell, self.name);
        let mut line = format!("{shell} -c {} dm-patch-{name}", shell_quote(&source));
        for arg in args {
            let _ = write!(line, " {}", shell_quote(arg.as_ref()));
        }
        line
    }

    /// The program the host's shell runs: the shared functions, then the script.
    pub fn source(self) -> String {
        format!("{LIB}\n{}", self.body)
    }
}

/// What a script said: its `key<TAB>value` lines, in order.
#[derive(Debug, Default)]
pub struct Answer<'a> {
    lines: Vec<(&'a str, &'a str)>,
}

/// A line of a script's output that is not `key<TAB>value`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a line of a script's answer: {line:?}")]
pub struct BadAnswer {
    pub line: String,
}

impl<'a> Answer<'a> {
    pub fn parse(stdout: &'a str) -> Result<Answer<'a>, BadAnswer> {
        let lines = stdout
            .lines()
            .map(|line| line.split_once('\t').ok_or_else(|| BadAnswer { line: line.to_owned() }))
            .collect::<Result<_, _>>()?;
        Ok(Answer { lines })
    }

    /// Every line, as `(key, value)`.
    pub fn lines(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.lines.iter().copied()
    }

    /// The lines of `key` as one block, each line ended (a multi-line answer such as `-V`'s);
    /// `None` when the script said none.
    pub fn block(&self, key: &str) -> Option<String> {
        let mut block = None::<String>;
        for (_, value) in self.lines.iter().filter(|(k, _)| *k == key) {
            let block = block.get_or_insert_default();
            block.push_str(value);
            block.push('\n');
        }
        block
    }
}

#[cfg(test)]
mod tests;
