//! `/etc/resolv.conf` management for machines without systemd-resolved.
//!
//! The original file is copied to a backup before anything is written, together with the pid of
//! the daemon that owns the change. `restore` writes the backup back byte for byte. A daemon that
//! finds a backup whose owner is dead (a crash, `kill -9`) restores it before doing anything else.
//!
//! Files are rewritten in place (truncate + write), never renamed over: `/etc/resolv.conf` is often
//! a bind mount (containers, `ip netns exec`) where a rename fails.

use std::{
    fs,
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
};

/// Errors of resolver configuration.
#[derive(Debug, thiserror::Error)]
pub enum ResolvError {
    /// Reading or writing one of the files failed.
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A search domain that would corrupt the file.
    #[error("invalid search domain {0:?}")]
    InvalidDomain(String),
}

/// The parts of a resolv.conf tether reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl ResolvConf {
    pub fn parse(text: &str) -> Self {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("").trim();
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                        conf.nameservers.push(ip);
                    }
                }
                // The last search/domain line wins, as in glibc.
                Some("search") | Some("domain") => conf.search = words.map(str::to_owned).collect(),
                Some("options") => conf.options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
        conf
    }
}

/// The resolv.conf tether writes: its own DNS server first and only, the cluster's search domains
/// before the original ones, the original options kept.
pub fn render(
    original: &ResolvConf,
    dns: IpAddr,
    search: &[String],
) -> Result<String, ResolvError> {
    let mut out = String::from("# Written by tether while connected; restored on `tether quit`.\n");
    out.push_str(&format!("nameserver {dns}\n"));
    let mut domains: Vec<&str> = Vec::new();
    for d in search.iter().chain(&original.search) {
        if d.is_empty()
            || !d
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(ResolvError::InvalidDomain(d.clone()));
        }
        if !domains.contains(&d.as_str()) {
            domains.push(d);
        }
    }
    if !domains.is_empty() {
        out.push_str(&format!("search {}\n", domains.join(" ")));
    }
    if !original.options.is_empty() {
        out.push_str(&format!("options {}\n", original.options.join(" ")));
    }
    Ok(out)
}

/// A resolv.conf under tether's management.
#[derive(Debug, Clone)]
pub struct ResolvConfFile {
    path: PathBuf,
    backup: PathBuf,
    owner: PathBuf,
}

impl ResolvConfFile {
    /// `path` is the live file (normally `/etc/resolv.conf`), `state_dir` where the backup lives.
    pub fn new(path: impl Into<PathBuf>, state_dir: &Path) -> Self {
        ResolvConfFile {
            path: path.into(),
            backup: state_dir.join("resolv.conf.orig"),
            owner: state_dir.join("resolv.conf.owner"),
        }
    }

    pub fn read(&self) -> Result<String, ResolvError> {
        fs::read_to_string(&self.path).map_err(|source| io("reading", &self.path, source))
    }

    /// Restores a backup left by a daemon that is no longer running. Returns whether it did.
    pub fn repair_stale(&self) -> Result<bool, ResolvError> {
        if !self.backup.exists() {
            return Ok(false);
        }
        let owner = fs::read_to_string(&self.owner)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        if let Some(pid) = owner {
            if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
                return Ok(false);
            }
        }
        self.restore()?;
        Ok(true)
    }

    /// Saves the original and writes `content` in its place.
    pub fn install(&self, content: &str) -> Result<(), ResolvError> {
        let original = fs::read(&self.path).map_err(|source| io("reading", &self.path, source))?;
        if let Some(dir) = self.backup.parent() {
            fs::create_dir_all(dir).map_err(|source| io("creating", dir, source))?;
        }
        write_synced(&self.backup, &original)?;
        write_synced(&self.owner, std::process::id().to_string().as_bytes())?;
        write_in_place(&self.path, content.as_bytes())
    }

    /// Puts the original back byte for byte and forgets the backup.
    pub fn restore(&self) -> Result<(), ResolvError> {
        let original = match fs::read(&self.backup) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(io("reading", &self.backup, source)),
        };
        write_in_place(&self.path, &original)?;
        let _ = fs::remove_file(&self.owner);
        fs::remove_file(&self.backup).map_err(|source| io("removing", &self.backup, source))
    }
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> ResolvError {
    ResolvError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ResolvError> {
    let mut f = fs::File::create(path).map_err(|source| io("creating", path, source))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|source| io("writing", path, source))
}

fn write_in_place(path: &Path, bytes: &[u8]) -> Result<(), ResolvError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|source| io("opening", path, source))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|source| io("writing", path, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_renders() {
        let orig = ResolvConf::parse(
            "# comment\nnameserver 10.0.0.53\nnameserver fe80::1\nsearch corp.example\noptions ndots:2 edns0\n",
        );
        assert_eq!(orig.nameservers.len(), 2);
        assert_eq!(orig.search, ["corp.example"]);
        let text = render(
            &orig,
            "198.18.0.2".parse().unwrap(),
            &[
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
        )
        .unwrap();
        assert!(text.contains("nameserver 198.18.0.2\n"));
        assert!(!text.contains("10.0.0.53"));
        assert!(text.contains("search default.svc.cluster.local svc.cluster.local corp.example\n"));
        assert!(text.contains("options ndots:2 edns0\n"));
    }

    #[test]
    fn rejects_domains_that_would_inject_lines() {
        let err = render(
            &ResolvConf::default(),
            "198.18.0.2".parse().unwrap(),
            &["a\nnameserver 1.2.3.4".into()],
        );
        assert!(matches!(err, Err(ResolvError::InvalidDomain(_))));
    }

    #[test]
    fn install_restore_is_byte_exact_and_stale_backups_are_repaired() {
        let dir = std::env::temp_dir().join(format!("tether-resolv-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let live = dir.join("resolv.conf");
        let original = b"nameserver 10.1.1.1\n\n# odd spacing   kept\nsearch x\n";
        fs::write(&live, original).unwrap();
        let f = ResolvConfFile::new(&live, &dir.join("state"));
        f.install("nameserver 198.18.0.2\n").unwrap();
        assert_eq!(
            fs::read_to_string(&live).unwrap(),
            "nameserver 198.18.0.2\n"
        );
        // Our own backup is not stale.
        assert!(!f.repair_stale().unwrap());
        // Pretend the owner died: a pid that cannot exist.
        fs::write(dir.join("state/resolv.conf.owner"), "4194304999").unwrap();
        assert!(f.repair_stale().unwrap());
        assert_eq!(fs::read(&live).unwrap(), original);
        assert!(!f.repair_stale().unwrap(), "nothing left to repair");
        fs::remove_dir_all(&dir).unwrap();
    }
}
