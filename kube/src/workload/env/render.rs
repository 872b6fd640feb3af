//! Writing a resolved environment for `sh`, `docker run --env-file`, or as JSON.

use std::fmt;

/// How an env file is written.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EnvSyntax {
    /// `NAME='value'` lines, for `set -a; . FILE` in any POSIX shell.
    Sh,
    /// `NAME=value` lines, for `docker run --env-file FILE`.
    Docker,
    /// One JSON object, `{"NAME": "value", ...}`, in order.
    Json,
}

/// An env file's text and the variables it could not hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    /// Variables left out of `text`, in input order; worth a warning to the user.
    pub skipped: Vec<Skipped>,
}

/// A variable the chosen syntax cannot represent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub name: String,
    pub reason: SkipReason,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.name, self.reason)
    }
}

/// Why a variable was left out of an env file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// `sh`: the name is not a shell variable name (`[A-Za-z_][A-Za-z0-9_]*`).
    NotShellName,
    /// `sh`, `docker`: a NUL byte, which no environment can hold.
    Nul,
    /// `docker`: the name is empty, has `=` or whitespace, or starts with `#`.
    NotDockerName,
    /// `docker`: a newline, or a carriage return at the end, which the line format loses.
    LineBreak,
    /// `docker`: a line of 64 KiB or more, which docker's line reader rejects.
    TooLong,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::NotShellName => "not a valid shell variable name (use --env-syntax json)",
            SkipReason::Nul => "the value contains a NUL byte",
            SkipReason::NotDockerName => "the name cannot be written in a docker env file (use --env-syntax json)",
            SkipReason::LineBreak => "the value contains a line break, which a docker env file cannot hold (use --env-syntax sh or json)",
            SkipReason::TooLong => "longer than the 64 KiB line a docker env file allows (use --env-syntax sh or json)",
        })
    }
}

/// Writes `vars` (names expected unique, as [`resolve`] returns them) as an env file.
pub fn render(vars: &[(String, String)], syntax: EnvSyntax) -> Rendered {
    let mut out = Rendered::default();
    let mut skip = |name: &str, reason| {
        out.skipped.push(Skipped {
            name: name.to_owned(),
            reason,
        })
    };
    let mut text = String::new();
    match syntax {
        EnvSyntax::Sh => {
            for (name, value) in vars {
                if !is_shell_name(name) {
                    skip(name, SkipReason::NotShellName);
                } else if value.contains('\0') {
                    skip(name, SkipReason::Nul);
                } else {
                    text.push_str(name);
                    text.push_str("='");
                    text.push_str(&value.replace('\'', r"'\''"));
                    text.push_str("'\n");
                }
            }
        }
        EnvSyntax::Docker => {
            for (name, value) in vars {
                let bad_name = name.is_empty()
                    || name.starts_with('#')
                    || name.contains(|c: char| c == '=' || c.is_whitespace() || c == '\u{feff}');
                if bad_name {
                    skip(name, SkipReason::NotDockerName);
                } else if value.contains('\0') {
                    skip(name, SkipReason::Nul);
                } else if value.contains('\n') || value.ends_with('\r') {
                    skip(name, SkipReason::LineBreak);
                } else if name.len() + 1 + value.len() >= 64 * 1024 {
                    skip(name, SkipReason::TooLong);
                } else {
                    text.push_str(name);
                    text.push('=');
                    text.push_str(value);
                    text.push('\n');
                }
            }
        }
        EnvSyntax::Json => {
            text.push('{');
            for (i, (name, value)) in vars.iter().enumerate() {
                text.push_str(if i == 0 { "\n  " } else { ",\n  " });
                text.push_str(&json_string(name));
                text.push_str(": ");
                text.push_str(&json_string(value));
            }
            text.push_str(if vars.is_empty() { "}\n" } else { "\n}\n" });
        }
    }
    out.text = text;
    out
}

pub(super) fn is_shell_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && bytes.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

pub(super) fn json_string(s: &str) -> String {
    // Serializing a `str` cannot fail: it has no map keys or custom impls to reject.
    serde_json::to_string(s).expect("a str serializes to JSON")
}
