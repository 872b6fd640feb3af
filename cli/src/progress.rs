//! Progress on long steps (connect, intercept, install): one line that updates in place on a
//! terminal, plain lines otherwise (a pipe, a log, CI), all on stderr so stdout stays the
//! command's result.
//!
//! Hand-written: no progress library (`indicatif` and the like) is in this project's offline
//! registry, and one updating line needs only a carriage return and "erase line".

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use crate::render;

/// Where progress goes, and how.
pub struct Progress<W: Write + Send> {
    out: Mutex<Line<W>>,
}

struct Line<W> {
    out: W,
    /// Updating one line in place (a terminal) rather than printing one per step.
    in_place: bool,
    /// A step is on the line and has no newline yet.
    open: bool,
}

impl Progress<std::io::Stderr> {
    /// On stderr, in place when it is a terminal.
    pub fn stderr() -> Self {
        let err = std::io::stderr();
        let in_place = err.is_terminal();
        Progress::new(err, in_place)
    }
}

impl<W: Write + Send> Progress<W> {
    pub fn new(out: W, in_place: bool) -> Self {
        Progress {
            out: Mutex::new(Line {
                out,
                in_place,
                open: false,
            }),
        }
    }

    /// Shows `stage` as the current step.
    pub fn step(&self, stage: &str) {
        let mut line = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let text = render::progress(stage);
        let _ = if line.in_place {
            line.open = true;
            // Back to the start, erase the line, then the step without its newline.
            write!(line.out, "\r\x1b[2K{}", text.trim_end_matches('\n'))
        } else {
            line.out.write_all(text.as_bytes())
        };
        let _ = line.out.flush();
    }

    /// Clears the updating line, so that what the command prints next starts clean.
    pub fn finish(&self) {
        let mut line = self.out.lock().unwrap_or_else(|p| p.into_inner());
        if std::mem::take(&mut line.open) {
            let _ = write!(line.out, "\r\x1b[2K");
            let _ = line.out.flush();
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
    fn a_terminal_gets_one_line_updated_in_place_and_cleared() {
        let out = Shared::default();
        let p = Progress::new(out.clone(), true);
        p.step("applying Namespace tether");
        p.step("waiting for the traffic manager: ContainerCreating");
        p.finish();
        p.finish();
        p.step("done");
        drop(p);
        assert_eq!(
            out.text(),
            "\r\x1b[2K  applying Namespace tether…\
             \r\x1b[2K  waiting for the traffic manager: ContainerCreating…\
             \r\x1b[2K\
             \r\x1b[2K  done…\
             \r\x1b[2K"
        );
    }

    #[test]
    fn a_pipe_gets_plain_lines() {
        let out = Shared::default();
        let p = Progress::new(out.clone(), false);
        p.step("applying Namespace tether");
        p.step("waiting");
        drop(p);
        assert_eq!(out.text(), "  applying Namespace tether…\n  waiting…\n");
    }
}
