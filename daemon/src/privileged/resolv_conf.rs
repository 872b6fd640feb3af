//! `/etc/resolv.conf` management for machines without systemd-resolved.
//!
//! The original file is copied to a backup in root's state directory (see
//! [`runtime_dir`](super::runtime_dir)) before anything is written, together with the pid of
//! the helper that owns the change. `restore` writes the backup back byte for byte. A helper that
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

use super::runtime_dir::{RuntimeDirError, StateDir};

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
    /// Root's state directory or a file in it was refused or failed.
    #[error(transparent)]
    State(#[from] RuntimeDirError),
    /// tether's configuration is installed already (one per session).
    #[error("the resolver configuration is tether's already (backup {0})")]
    AlreadyInstalled(PathBuf),
}

pub use tether_dns::ResolvConf;

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

/// The backup of the original file, in root's state directory.
pub const BACKUP: &str = "resolv.conf.orig";
/// The pid of the helper that owns the change, next to the backup.
pub const OWNER: &str = "resolv.conf.owner";

/// A resolv.conf under tether's management. The backup and owner files live in root's
/// [`StateDir`], opened without following links; the live file is root's own choice.
#[derive(Debug)]
pub struct ResolvConfFile {
    path: PathBuf,
    state: StateDir,
}

impl ResolvConfFile {
    /// `path` is the live file (normally `/etc/resolv.conf`), `state` where the backup lives.
    pub fn new(path: impl Into<PathBuf>, state: StateDir) -> Self {
        ResolvConfFile {
            path: path.into(),
            state,
        }
    }

    pub fn read(&self) -> Result<String, ResolvError> {
        fs::read_to_string(&self.path).map_err(|source| io("reading", &self.path, source))
    }

    /// Restores a backup left by a helper that is no longer running. Returns whether it did.
    pub fn repair_stale(&self) -> Result<bool, ResolvError> {
        if self.state.read(BACKUP)?.is_none() {
            return Ok(false);
        }
        let owner = self
            .state
            .read(OWNER)?
            .and_then(|p| String::from_utf8_lossy(&p).trim().parse::<u32>().ok());
        if let Some(pid) = owner {
            if pid == std::process::id() || crate::process::running(pid) {
                return Ok(false);
            }
        }
        self.restore()?;
        Ok(true)
    }

    /// Saves the original and writes `content` in its place. Refused while a backup exists: a
    /// second install would back up tether's own file, and restoring that would leave tether's
    /// resolver behind.
    pub fn install(&self, content: &str) -> Result<(), ResolvError> {
        if self.state.read(BACKUP)?.is_some() {
            return Err(ResolvError::AlreadyInstalled(
                self.state.path().join(BACKUP),
            ));
        }
        let original = fs::read(&self.path).map_err(|source| io("reading", &self.path, source))?;
        self.state.write(BACKUP, &original)?;
        self.state
            .write(OWNER, std::process::id().to_string().as_bytes())?;
        write_in_place(&self.path, content.as_bytes())
    }

    /// Puts the original back byte for byte and forgets the backup.
    pub fn restore(&self) -> Result<(), ResolvError> {
        let Some(original) = self.state.read(BACKUP)? else {
            return Ok(());
        };
        write_in_place(&self.path, &original)?;
        let _ = self.state.remove(OWNER);
        Ok(self.state.remove(BACKUP)?)
    }
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> ResolvError {
    ResolvError::Io {
        action,
        path: path.to_owned(),
        source,
    }
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

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tether-resolv-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn install_restore_is_byte_exact_and_stale_backups_are_repaired() {
        let dir = scratch("exact");
        let live = dir.join("resolv.conf");
        let original = b"nameserver 10.1.1.1\n\n# odd spacing   kept\nsearch x\n";
        fs::write(&live, original).unwrap();
        let state = || StateDir::open(&dir.join("run")).unwrap();
        let f = ResolvConfFile::new(&live, state());
        f.install("nameserver 198.18.0.2\n").unwrap();
        assert_eq!(
            fs::read_to_string(&live).unwrap(),
            "nameserver 198.18.0.2\n"
        );
        // Our own backup is not stale.
        assert!(!f.repair_stale().unwrap());
        // Pretend the owner died: a pid that cannot exist.
        state().write(OWNER, b"4194304999").unwrap();
        assert!(f.repair_stale().unwrap());
        assert_eq!(fs::read(&live).unwrap(), original);
        assert!(!f.repair_stale().unwrap(), "nothing left to repair");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_zombie_owner_is_dead_and_its_backup_is_repaired() {
        let dir = scratch("zombie");
        let live = dir.join("resolv.conf");
        fs::write(&live, "nameserver 10.1.1.1\n").unwrap();
        let state = || StateDir::open(&dir.join("run")).unwrap();
        let f = ResolvConfFile::new(&live, state());
        f.install("nameserver 198.18.0.2\n").unwrap();
        // A child that exits and is not waited for: a zombie, as a helper killed with `kill -9`
        // is while nobody reaps it.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let zombie = format!("/proc/{}/stat", child.id());
        for _ in 0..200 {
            let stat = fs::read_to_string(&zombie).unwrap();
            if stat
                .rsplit_once(')')
                .unwrap()
                .1
                .trim_start()
                .starts_with('Z')
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(Path::new(&zombie).exists());
        assert!(!crate::process::running(child.id()));
        state()
            .write(OWNER, child.id().to_string().as_bytes())
            .unwrap();
        assert!(f.repair_stale().unwrap(), "a zombie's backup is stale");
        assert_eq!(fs::read_to_string(&live).unwrap(), "nameserver 10.1.1.1\n");
        child.wait().unwrap();
        // A live process's backup is not.
        f.install("nameserver 198.18.0.2\n").unwrap();
        state().write(OWNER, b"1").unwrap();
        assert!(crate::process::running(1));
        assert!(!f.repair_stale().unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_install_is_refused_and_restore_brings_back_the_first_original() {
        let dir = scratch("twice");
        let live = dir.join("resolv.conf");
        fs::write(&live, "nameserver 10.1.1.1\n").unwrap();
        let f = ResolvConfFile::new(&live, StateDir::open(&dir.join("run")).unwrap());
        f.install("nameserver 198.18.0.2\n").unwrap();
        let err = f.install("nameserver 198.18.0.2\n").unwrap_err();
        assert!(matches!(err, ResolvError::AlreadyInstalled(_)), "{err}");
        f.restore().unwrap();
        assert_eq!(fs::read_to_string(&live).unwrap(), "nameserver 10.1.1.1\n");
        fs::remove_dir_all(&dir).unwrap();
    }
}
