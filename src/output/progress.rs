//! Engine events on stderr: progress bars on a terminal, plain timestamped lines elsewhere
//! (CI logs), nothing with `-q`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Printer;
use crate::engine::events::{Event, Progress};
use crate::engine::report::Outcome;

/// The progress sink that suits this run: bars on a terminal, unless `-v` logs go there too.
pub fn for_printer(printer: &Printer) -> Arc<dyn Progress> {
    if printer.quiet {
        Arc::new(Silent)
    } else if std::io::stderr().is_terminal() && printer.verbose == 0 {
        Arc::new(Bars::new())
    } else {
        Arc::new(Lines { started: Instant::now() })
    }
}

struct Silent;

impl Progress for Silent {
    fn event(&self, _: Event<'_>) {}
}

/// One line per event that matters, with the time since the start: readable in a CI log.
struct Lines {
    started: Instant,
}

impl Progress for Lines {
    fn event(&self, event: Event<'_>) {
        let line = match event {
            Event::Done => return,
            Event::Phase(phase) => format!("{phase}..."),
            Event::UploadStarted { host, total } => {
                format!("{host}: uploading {}", HumanBytes(total))
            }
            Event::UploadProgress { .. } => return,
            Event::UploadFinished { host } => format!("{host}: uploaded"),
            Event::Step { id, step } => format!("{id}: {step}"),
            Event::InstanceFinished { id, outcome, detail } => match detail {
                Some(detail) => format!("{id}: {}: {detail}", outcome.label()),
                None => format!("{id}: {}", outcome.label()),
            },
            Event::Note(note) => note.to_owned(),
        };
        // A closed stderr (a CI runner gone, `| head`) must not stop a roll half way.
        let seconds = self.started.elapsed().as_secs_f64();
        let _ = writeln!(std::io::stderr(), "[{seconds:>6.1}s] {line}");
    }
}

/// indicatif bars: one per host while uploading, then one line per instance showing its step.
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn new() -> Bars {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, key: &str, make: impl FnOnce() -> ProgressBar) -> ProgressBar {
        let mut bars = self.bars.lock().expect("progress state is never poisoned");
        bars.entry(key.to_owned()).or_insert_with(|| self.multi.add(make())).clone()
    }

    fn existing(&self, key: &str) -> Option<ProgressBar> {
        let bars = self.bars.lock().expect("progress state is never poisoned");
        bars.get(key).cloned()
    }
}

impl Progress for Bars {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::Done => {
                let _ = self.multi.clear();
            }
            Event::Phase(phase) => {
                let _ = self.multi.println(format!("{phase}..."));
            }
            Event::UploadStarted { host, total } => {
                let style = ProgressStyle::with_template(
                    "  {prefix:<22} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec}",
                )
                .expect("a valid template")
                .progress_chars("=> ");
                self.bar(&format!("upload {host}"), || {
                    ProgressBar::new(total).with_style(style).with_prefix(host.to_owned())
                });
            }
            Event::UploadProgress { host, sent } => {
                if let Some(bar) = self.existing(&format!("upload {host}")) {
                    bar.set_position(sent);
                }
            }
            Event::UploadFinished { host } => {
                if let Some(bar) = self.existing(&format!("upload {host}")) {
                    bar.finish();
                }
            }
            Event::Step { id, step } => {
                let bar = self.bar(id, || {
                    let style = ProgressStyle::with_template("  {spinner} {prefix:<22} {msg}")
                        .expect("a valid template");
                    let bar =
                        ProgressBar::new_spinner().with_style(style).with_prefix(id.to_owned());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                });
                bar.set_message(step.to_owned());
            }
            Event::InstanceFinished { id, outcome, detail } => {
                let mark = match outcome {
                    Outcome::Patched | Outcome::Skipped => "✔",
                    _ => "✘",
                };
                let message = match detail {
                    Some(detail) => format!("{mark} {}: {detail}", outcome.label()),
                    None => format!("{mark} {}", outcome.label()),
                };
                let bar = self.bar(id, || {
                    let style = ProgressStyle::with_template("  {prefix:<24} {msg}")
                        .expect("a valid template");
                    ProgressBar::new_spinner().with_style(style).with_prefix(id.to_owned())
                });
                bar.finish_with_message(message);
            }
            Event::Note(note) => {
                let _ = self.multi.println(note);
            }
        }
    }
}
