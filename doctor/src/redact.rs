//! Takes secrets out of text before it leaves the machine: PEM private keys, bearer tokens,
//! JWTs, the values of `token:` / `password=`-like settings, and known secret values (those of
//! the Secrets of the namespaces gathered, verbatim and base64-encoded).

use regex::Regex;

/// Known secret values shorter than this are not searched for: `true` or `8080` would redact
/// half a log and protect nothing.
pub const MIN_SECRET_LEN: usize = 8;

/// Keys of Secret data that hold nothing secret (a service account token Secret's namespace and
/// CA certificate, a TLS Secret's certificate): searching for them would redact every mention of
/// the namespace.
pub const PUBLIC_KEYS: [&str; 4] = ["namespace", "ca.crt", "tls.crt", "service-ca.crt"];

/// The values of a Secret's data worth searching for.
pub fn secret_values<'a>(data: impl IntoIterator<Item = (&'a String, &'a [u8])>) -> Vec<Vec<u8>> {
    data.into_iter()
        .filter(|(k, _)| !PUBLIC_KEYS.contains(&k.as_str()))
        .map(|(_, v)| v.to_vec())
        .collect()
}

/// What replaces a redacted value. (It must not look like what it replaces: the archive is
/// scanned for `PRIVATE KEY`.)
pub const MARK: &str = "<redacted>";

/// A redactor: built once, applied to every text.
#[derive(Debug, Clone)]
pub struct Redactor {
    patterns: Vec<(Regex, &'static str)>,
    /// Longest first, so that a value containing another is replaced whole.
    values: Vec<String>,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new()
    }
}

impl Redactor {
    /// The pattern-based redactor.
    pub fn new() -> Redactor {
        // The patterns are literals that compile (tested); a failure is a programming error.
        let re = |p: &str| Regex::new(p).expect("a valid redaction pattern");
        Redactor {
            patterns: vec![
                (
                    re(
                        r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)",
                    ),
                    "<redacted key>",
                ),
                (
                    re(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
                    "<redacted jwt>",
                ),
                (
                    re(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9\-._~+/]{8,}=*"),
                    "$1$2<redacted>",
                ),
                (
                    re(concat!(
                        r#"(?i)\b([a-z0-9_.-]*(?:token|password|passwd|pwd|secret|api[_-]?key|apikey|"#,
                        r#"client[_-]?key|private[_-]?key|credentials?)s?)("?'?\s*[:=]\s*"?'?)([^\s"',;}\]]+)"#
                    )),
                    "$1$2<redacted>",
                ),
            ],
            values: Vec::new(),
        }
    }

    /// Also redacts these values (a Secret's), their base64 forms, and the longer lines of
    /// multi-line ones (a certificate's body).
    pub fn with_values<I, V>(mut self, values: I) -> Redactor
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        for value in values {
            let value = value.as_ref();
            if value.len() < MIN_SECRET_LEN {
                continue;
            }
            self.add(&base64(value));
            let Ok(text) = std::str::from_utf8(value) else {
                continue;
            };
            self.add(text.trim());
            if text.trim().contains('\n') {
                for line in text.lines().map(str::trim).filter(|l| l.len() >= 16) {
                    self.add(line);
                }
            }
        }
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        self.values.dedup();
        self
    }

    fn add(&mut self, value: &str) {
        if value.len() >= MIN_SECRET_LEN {
            self.values.push(value.to_owned());
        }
    }

    /// How many known values it searches for.
    pub fn known_values(&self) -> usize {
        self.values.len()
    }

    /// `text` without its secrets.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), MARK);
            }
        }
        for (pattern, with) in &self.patterns {
            if pattern.is_match(&out) {
                out = pattern.replace_all(&out, *with).into_owned();
            }
        }
        out
    }
}

/// Standard base64 with padding (how Secret data travels in YAML and JSON).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
