//! How `sync` shows progress: a bar on a terminal (`indicatif`), plain lines otherwise, from
//! the client's status (documents and bytes done and to do, the time left, what is deferred).

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use syncline::{Progress, Status};

/// Least time between two plain progress lines.
const LINE_EVERY: Duration = Duration::from_millis(500);

/// Draws the progress of one sync; cheap to clone, shared with the status listener.
#[derive(Clone)]
pub struct Reporter(Arc<Mutex<State>>);

enum State {
    /// A bar on the terminal.
    Bar(ProgressBar),
    /// Plain lines on stdout, no more often than [`LINE_EVERY`].
    Lines { last: Option<Instant> },
}

impl Reporter {
    /// A bar when stdout is a terminal, plain lines otherwise.
    pub fn new() -> Self {
        let state = if std::io::stdout().is_terminal() {
            let bar = ProgressBar::new(0);
            let style =
                ProgressStyle::with_template("{spinner} [{bar:30}] {bytes}/{total_bytes} {msg}")
                    .map(|s| s.progress_chars("=> "))
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            State::Bar(bar)
        } else {
            State::Lines { last: None }
        };
        Self(Arc::new(Mutex::new(state)))
    }

    /// Shows a new status.
    pub fn status(&self, status: &Status) {
        let Status::Syncing { progress } = status else {
            return;
        };
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *state {
            State::Bar(bar) => {
                bar.set_length(progress.bytes_total + progress.upload.bytes_total);
                bar.set_position(progress.bytes_done + progress.upload.bytes_done);
                bar.set_message(describe(progress));
            }
            State::Lines { last } => {
                if last.is_none_or(|at| at.elapsed() >= LINE_EVERY) {
                    *last = Some(Instant::now());
                    println!("progress: {}", describe(progress));
                }
            }
        }
    }

    /// Removes the bar (the summary line follows).
    pub fn finish(&self) {
        if let State::Bar(bar) = &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            bar.finish_and_clear();
        }
    }
}

/// One line: documents and bytes each way, what is deferred, the time left.
pub fn describe(p: &Progress) -> String {
    let mut line = format!(
        "down {}/{} todos {}/{} bytes, up {}/{} todos {}/{} bytes",
        p.docs_done,
        p.docs_total,
        p.bytes_done,
        p.bytes_total,
        p.upload.docs_done,
        p.upload.docs_total,
        p.upload.bytes_done,
        p.upload.bytes_total
    );
    if p.deferred > 0 {
        line.push_str(&format!(", {} deferred", p.deferred));
    }
    if let Some(eta) = p.eta_ms {
        line.push_str(&format!(", {:.1} s left", eta as f64 / 1000.0));
    }
    line
}
