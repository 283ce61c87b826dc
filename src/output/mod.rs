//! Everything the user sees: plain lines, tables, JSON, progress and errors. Commands and the
//! engine decide what to say; this module decides how it looks.

mod plan;
pub mod progress;
pub mod report;
pub mod table;

pub use plan::{render_plan, warn_before_confirm};

use std::io::{IsTerminal, Write};

use serde::Serialize;

use crate::cli::Format;

/// The version of every JSON document dm-patch prints (`schema_version`); it changes only when
/// a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// How output is produced for this run: decided once from flags and the terminal. Colours
/// follow `console`'s rules: only on a terminal, never with `NO_COLOR` or `TERM=dumb`.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub format: Format,
    pub quiet: bool,
    /// `-v` count: with logs on stderr, progress is shown as plain lines, not bars.
    pub verbose: u8,
    /// stderr and stdin are terminals: progress bars and prompts are possible.
    pub interactive: bool,
}

impl Printer {
    pub fn new(format: Format, quiet: bool, verbose: u8) -> Printer {
        Printer {
            format,
            quiet,
            verbose,
            interactive: std::io::stderr().is_terminal() && std::io::stdin().is_terminal(),
        }
    }

    pub fn is_json(&self) -> bool {
        self.format == Format::Json
    }

    /// A line of the human-readable result on stdout (nothing in JSON mode or with `-q`).
    pub fn info(&self, line: impl AsRef<str>) {
        if !self.quiet && !self.is_json() {
            out(line.as_ref());
        }
    }

    /// A line that belongs to the result even with `-q` (text mode only).
    pub fn result(&self, line: impl AsRef<str>) {
        if !self.is_json() {
            out(line.as_ref());
        }
    }

    /// A diagnostic for the operator (a problem, why a run stopped): always on stderr, in
    /// every format, so stdout holds nothing but the result.
    pub fn diagnostic(&self, line: impl AsRef<str>) {
        err(line.as_ref());
    }

    /// A warning for the operator on stderr, in every format (not with `-q`).
    pub fn warning(&self, line: impl AsRef<str>) {
        if !self.quiet {
            let label = Style::Warn.console().for_stderr().apply_to("warning:");
            err(&format!("{label} {}", line.as_ref()));
        }
    }

    /// The one JSON document of a `--format json` run.
    pub fn json<T: Serialize>(&self, value: &T) {
        let mut stdout = std::io::stdout().lock();
        // A closed pipe is not worth a panic; the exit status still tells the story.
        let _ = serde_json::to_writer_pretty(&mut stdout, value);
        let _ = writeln!(stdout);
    }

    /// `text` styled for stdout (plain where stdout takes no colour).
    pub fn paint(&self, text: &str, style: Style) -> String {
        style.console().apply_to(text).to_string()
    }

    /// `error:` in red where stderr is a terminal.
    pub fn paint_stderr(&self, text: &str) -> String {
        Style::Bad.console().for_stderr().apply_to(text).to_string()
    }

    /// The error a run ends with, on stderr: `error: <message>`, or in JSON mode one line
    /// `{"error": ..., "kind": ..., "exit_code": ..., "schema_version": 1}` (TiUP's key, so a
    /// script reading stderr as JSON keeps working).
    pub fn error(&self, message: &str, status: crate::error::ExitStatus) {
        if self.is_json() {
            let line = serde_json::json!({
                "error": message,
                "kind": status.kind(),
                "exit_code": status.code(),
                "schema_version": SCHEMA_VERSION,
            });
            err(&line.to_string());
        } else {
            err(&format!("{} {message}", self.paint_stderr("error:")));
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Style {
    Good,
    Bad,
    Warn,
    Bold,
    Dim,
}

impl Style {
    fn console(self) -> console::Style {
        let style = console::Style::new();
        match self {
            Style::Good => style.green(),
            Style::Bad => style.red(),
            Style::Warn => style.yellow(),
            Style::Bold => style.bold(),
            Style::Dim => style.dim(),
        }
    }
}

/// A line on stdout. A closed stdout or stderr (a pipe read by `head`, the terminal of an
/// operator whose SSH session dropped) is no reason to panic: the exit status and the audit
/// record still tell the story.
pub fn out(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// A line on stderr; see [`out`].
pub fn err(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
