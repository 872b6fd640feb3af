//! Progress on long steps (connect, intercept, install): on a terminal, a spinner line from
//! `indicatif` that shows the current step and is cleared before the result; elsewhere (a pipe,
//! a log, CI) one plain line per step. All on stderr, so stdout stays the command's result.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::render;

/// How often the spinner turns while a step lasts.
const TICK: Duration = Duration::from_millis(120);

/// Where progress goes, and how.
pub struct Progress<W: Write + Send> {
    out: Out<W>,
}

enum Out<W> {
    /// A terminal: one spinner line, updated in place.
    Spinner(ProgressBar),
    /// Anything else: a line per step.
    Lines(Mutex<W>),
}

impl Progress<std::io::Stderr> {
    /// On stderr: a spinner when it is a terminal, plain lines otherwise.
    pub fn stderr() -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress::lines(std::io::stderr());
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("  {spinner} {msg}…") {
            bar.set_style(style);
        }
        Progress {
            out: Out::Spinner(bar),
        }
    }
}

impl<W: Write + Send> Progress<W> {
    /// One plain line per step on `out`.
    pub fn lines(out: W) -> Self {
        Progress {
            out: Out::Lines(Mutex::new(out)),
        }
    }

    /// Shows `stage` as the current step.
    pub fn step(&self, stage: &str) {
        match &self.out {
            Out::Spinner(bar) => {
                bar.set_message(stage.to_owned());
                bar.enable_steady_tick(TICK);
            }
            Out::Lines(out) => {
                let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
                let _ = out.write_all(render::progress(stage).as_bytes());
                let _ = out.flush();
            }
        }
    }

    /// Clears the spinner, so that what the command prints next starts on a clean line.
    pub fn finish(&self) {
        if let Out::Spinner(bar) = &self.out {
            bar.finish_and_clear();
        }
    }
}

impl<W: Write + Send> Drop for Progress<W> {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A writer whose bytes the test reads after the progress is dropped.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn a_pipe_gets_plain_lines() {
        let out = Shared::default();
        let p = Progress::lines(out.clone());
        p.step("applying Namespace tether");
        p.step("waiting");
        drop(p);
        assert_eq!(out.text(), "  applying Namespace tether…\n  waiting…\n");
    }
}
