//! What an image reference says about the tether version inside it.

/// The version an image's tag names, without a leading `v`: `repo/tether-agent:0.1.0` and
/// `…:v0.1.0` give `0.1.0`, `…:1.2.3-rc.1` gives `1.2.3-rc.1`. `None` for a tag that names no
/// version (`latest`, the local cluster's content-hash tags, a digest) and for no tag at all
/// (`registry:5000/tether-agent`: the colon is the registry's port).
///
/// A version is two or more dot-separated numbers, then perhaps a `-` or `+` suffix.
pub fn tag_version(image: &str) -> Option<&str> {
    let (_, tag) = image.rsplit_once(':')?;
    if tag.contains('/') || image.contains('@') {
        return None;
    }
    let version = tag.strip_prefix('v').unwrap_or(tag);
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    let numeric = parts.len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    numeric.then_some(version)
}

#[cfg(test)]
mod tests {
    use super::tag_version;

    #[test]
    fn versions_are_read_from_tags_and_nothing_else() {
        for (image, version) in [
            ("r.example/tether-agent:1.2.3", "1.2.3"),
            ("r.example:5000/tether-agent:v0.1.0", "0.1.0"),
            ("tether-agent:0.1.0-rc.1", "0.1.0-rc.1"),
            ("tether-agent:2.0", "2.0"),
        ] {
            assert_eq!(tag_version(image), Some(version), "{image}");
        }
        for image in [
            "tether-agent",
            "r.example:5000/tether-agent",
            "tether-agent:latest",
            "tether.local/tether-agent:2fdfde58b0d9",
            "tether-agent:1",
            "tether-agent:1..2",
            "tether-agent:sha-1.2",
            "tether-agent@sha256:0123",
            "tether-agent:",
        ] {
            assert_eq!(tag_version(image), None, "{image}");
        }
    }
}
