//! An error with its causes, the one way every tether crate prints one.
//!
//! Not part of the wire protocol; it lives here because every crate already depends on this one.

use std::error::Error;
use std::fmt;

/// Displays an error and its causes: `outer: inner: root` with `{}`, and with `{:#}` one cause per
/// line (`outer\n  caused by: inner\n  caused by: root`) for a command's final error message.
///
/// ```
/// use tether_proto::ErrorChain;
/// let e = std::io::Error::other("disk full");
/// tracing_free_log(&format!("write failed: {}", ErrorChain(&e)));
/// # fn tracing_free_log(_: &str) {}
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            if f.alternate() {
                write!(f, "\n  caused by: {cause}")?;
            } else {
                write!(f, ": {cause}")?;
            }
            source = cause.source();
        }
        Ok(())
    }
}

/// [`ErrorChain`] as a `String`, for messages that travel on (to a client, into a report).
pub fn error_chain(e: &(dyn Error + 'static)) -> String {
    ErrorChain(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connect")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn one_line_and_one_cause_per_line() {
        let e = Outer(std::io::Error::other("refused"));
        assert_eq!(error_chain(&e), "connect: refused");
        assert_eq!(
            format!("{:#}", ErrorChain(&e)),
            "connect\n  caused by: refused"
        );
    }
}
