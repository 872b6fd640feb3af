//! The `--since` window: parsing it, and cutting a local log to it.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

/// `30s`, `10m`, `2h`, `1d`, `1h30m` as a duration.
pub fn parse_since(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 30s, 10m, 2h, 1d or 1h30m");
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        total += n * unit;
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// The lines of `text` (a tracing log: each record starts with an RFC 3339 timestamp) from
/// `since` on. Lines without a timestamp (a record's continuation) go with the record before.
/// At most the last `max_bytes` are kept, cut at a line.
pub fn cut(text: &str, since: Timestamp, max_bytes: usize) -> String {
    let mut out = String::new();
    let mut keep = false;
    for line in text.lines() {
        if let Some(at) = line
            .split_whitespace()
            .next()
            .and_then(|w| w.parse::<Timestamp>().ok())
        {
            keep = at >= since;
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    if out.len() > max_bytes {
        let start = out.len() - max_bytes;
        let start = out[start..].find('\n').map_or(start, |i| start + i + 1);
        out = format!("[… earlier lines cut …]\n{}", &out[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_since("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_since("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_since("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "10", "m", "5x", "0s", "-1h"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cuts_to_the_window_keeping_continuations() {
        let log = "2025-01-01T10:00:00.000001Z  INFO old\n\
                   2025-01-01T10:10:00.5Z  WARN new\n  caused by: x\n\
                   2025-01-01T10:11:00Z  INFO newer\n";
        let since: Timestamp = "2025-01-01T10:05:00Z".parse().unwrap();
        assert_eq!(
            cut(log, since, 1 << 20),
            "2025-01-01T10:10:00.5Z  WARN new\n  caused by: x\n2025-01-01T10:11:00Z  INFO newer\n"
        );
        assert_eq!(
            cut(log, since, 40),
            "[… earlier lines cut …]\n2025-01-01T10:11:00Z  INFO newer\n"
        );
    }
}
