//! Everything the user sees: plain lines, tables, JSON, progress and errors. Commands and the
//! engine decide what to say; this module decides how it looks.

mod plan;
pub mod progress;
pub mod report;
pub mod table;

pub use plan::render_plan;

use std::io::{IsTerminal, Write};

use serde::Serialize;

use crate::cli::Format;

/// How output is produced for this run: decided once from flags and the terminal.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    pub format: Format,
    pub quiet: bool,
    pub verbose: u8,
    /// ANSI colours: only on a terminal, and never with `NO_COLOR` set.
    pub color: bool,
    /// The same for stderr, where errors and progress go.
    pub stderr_color: bool,
    /// stderr is a terminal: progress bars and prompts are possible.
    pub interactive: bool,
}

impl Printer {
    pub fn new(format: Format, quiet: bool, verbose: u8) -> Printer {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
            || std::env::var("TERM").is_ok_and(|term| term == "dumb");
        Printer {
            format,
            quiet,
            verbose,
            color: std::io::stdout().is_terminal() && !no_color,
            stderr_color: std::io::stderr().is_terminal() && !no_color,
            interactive: std::io::stderr().is_terminal() && std::io::stdin().is_terminal(),
        }
    }

    pub fn is_json(&self) -> bool {
        self.format == Format::Json
    }

    /// A line of the human-readable result on stdout (nothing in JSON mode or with `-q`).
    pub fn info(&self, line: impl AsRef<str>) {
        if !self.quiet && !self.is_json() {
            println!("{}", line.as_ref());
        }
    }

    /// A line that belongs to the result even with `-q` (text mode only).
    pub fn result(&self, line: impl AsRef<str>) {
        if !self.is_json() {
            println!("{}", line.as_ref());
        }
    }

    /// The one JSON document of a `--format json` run.
    pub fn json<T: Serialize>(&self, value: &T) {
        let mut stdout = std::io::stdout().lock();
        // A closed pipe is not worth a panic; the exit status still tells the story.
        let _ = serde_json::to_writer_pretty(&mut stdout, value);
        let _ = writeln!(stdout);
    }

    pub fn paint(&self, text: &str, style: Style) -> String {
        paint(self.color, text, style)
    }

    /// `error:` in red where stderr is a terminal.
    pub fn paint_stderr(&self, text: &str) -> String {
        paint(self.stderr_color, text, Style::Bad)
    }
}

fn paint(enabled: bool, text: &str, style: Style) -> String {
    if !enabled {
        return text.to_owned();
    }
    let code = match style {
        Style::Good => "32",
        Style::Bad => "31",
        Style::Warn => "33",
        Style::Bold => "1",
        Style::Dim => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

#[derive(Debug, Clone, Copy)]
pub enum Style {
    Good,
    Bad,
    Warn,
    Bold,
    Dim,
}

/// Bytes as a person reads them: `12.3 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_bytes() {
        assert_eq!(super::human_bytes(512), "512 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(1 << 30), "1.0 GiB");
    }
}
