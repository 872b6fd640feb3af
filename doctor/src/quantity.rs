//! Kubernetes resource quantities (`250m`, `1.5`, `64Mi`, `2G`, `1e3`) as numbers, and back as
//! short text.

/// A quantity's value: cores for CPU, bytes for memory. `None` if it does not parse.
pub fn parse(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    // `1e3` / `1E3`: a decimal exponent.
    if let Some(exp) = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))
    {
        if let Ok(exp) = exp.parse::<i32>() {
            return Some(number.parse::<f64>().ok()? * 10f64.powi(exp));
        }
    }
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        _ => return None,
    };
    Some(number.parse::<f64>().ok()? * factor)
}

/// CPU cores as `850m` or `2`.
pub fn cpu(cores: f64) -> String {
    let milli = (cores * 1000.0).round() as u64;
    if milli.is_multiple_of(1000) {
        format!("{}", milli / 1000)
    } else {
        format!("{milli}m")
    }
}

/// Bytes as `512Mi` or `1.5Gi`.
pub fn memory(bytes: f64) -> String {
    const MI: f64 = 1024.0 * 1024.0;
    const GI: f64 = MI * 1024.0;
    if bytes >= GI {
        format!("{:.1}Gi", bytes / GI)
    } else {
        format!("{:.0}Mi", bytes / MI)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_suffixes_kubernetes_uses() {
        assert_eq!(parse("250m"), Some(0.25));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("1.5"), Some(1.5));
        assert_eq!(parse("64Mi"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(parse("2G"), Some(2e9));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("100k"), Some(1e5));
        assert_eq!(parse("24560420Ki"), Some(24560420.0 * 1024.0));
        assert_eq!(parse("lots"), None);
        assert_eq!(parse("3Xi"), None);
    }

    #[test]
    fn prints_short_text() {
        assert_eq!(cpu(0.85), "850m");
        assert_eq!(cpu(2.0), "2");
        assert_eq!(memory(512.0 * 1024.0 * 1024.0), "512Mi");
        assert_eq!(memory(1.5 * 1024.0 * 1024.0 * 1024.0), "1.5Gi");
    }
}
