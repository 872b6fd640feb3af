//! Who runs what `tether connect` starts: the daemon, and the command after `--`.
//!
//! `sudo tether connect` runs as root, but neither the daemon nor `-- CMD` should: both run as
//! the user who ran `sudo` (`SUDO_UID`, `SUDO_GID`), with that user's supplementary groups and
//! `HOME`, `USER` and `LOGNAME` (sudo may have left root's `HOME`, and the kubeconfig's default
//! path, `~/.kube/config`, comes from it). The daemon reads the kubeconfig itself, so it is read
//! with the user's rights: root's credentials are never picked up by default.
//!
//! When root ran tether without `sudo`, the command runs as root (the invoking user) and the
//! daemon as `nobody`; the helper then reads root's kubeconfig for it, as root asked.
//!
//! [`invoking_user`] decides, from the variables and the account database passed in; [`Identity::apply`]
//! makes a [`Command`] switch to it between fork and exec.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use nix::unistd::{Gid, Uid};

/// The uid and gid of `nobody`, for a daemon started by root without `sudo`.
pub const NOBODY: (u32, u32) = (65534, 65534);

/// A user to run a process as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Variables set for the process (`HOME`, `USER`, `LOGNAME`).
    pub env: Vec<(String, String)>,
}

/// The `SUDO_*` variables, as found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sudo {
    pub uid: Option<String>,
    pub gid: Option<String>,
}

impl Sudo {
    /// This process's `SUDO_UID` and `SUDO_GID`.
    pub fn from_env() -> Sudo {
        Sudo {
            uid: std::env::var("SUDO_UID").ok(),
            gid: std::env::var("SUDO_GID").ok(),
        }
    }
}

/// An account of the user database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub gid: u32,
    pub home: PathBuf,
}

/// Why the invoking user could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// `SUDO_UID` or `SUDO_GID` is not a number.
    #[error("{name}={value:?} is not a numeric id")]
    NotAnId { name: &'static str, value: String },
    /// `SUDO_UID` names no account.
    #[error("SUDO_UID {0} has no account in the user database")]
    NoAccount(u32),
    /// The user database could not be read.
    #[error("looking up uid {0} in the user database")]
    Lookup(u32, #[source] nix::Error),
}

fn parse_id(name: &'static str, value: &str) -> Result<u32, IdentityError> {
    value.trim().parse().map_err(|_| IdentityError::NotAnId {
        name,
        value: value.to_owned(),
    })
}

/// The user who ran `sudo tether …`, or `None` when root ran tether itself. `account` looks a
/// uid up in the user database, `groups` an account's supplementary groups.
pub fn invoking_user(
    sudo: &Sudo,
    account: impl FnOnce(u32) -> Result<Option<Account>, IdentityError>,
    groups: impl FnOnce(&Account, u32) -> Vec<u32>,
) -> Result<Option<Identity>, IdentityError> {
    let Some(uid) = sudo.uid.as_deref() else {
        return Ok(None);
    };
    let uid = parse_id("SUDO_UID", uid)?;
    if uid == 0 {
        return Ok(None);
    }
    let account = account(uid)?.ok_or(IdentityError::NoAccount(uid))?;
    let gid = match sudo.gid.as_deref() {
        Some(gid) => parse_id("SUDO_GID", gid)?,
        None => account.gid,
    };
    let mut groups = groups(&account, gid);
    if !groups.contains(&gid) {
        groups.push(gid);
    }
    groups.sort_unstable();
    groups.dedup();
    let home = account.home.display().to_string();
    Ok(Some(Identity {
        uid,
        gid,
        groups,
        env: vec![
            ("HOME".to_owned(), home),
            ("USER".to_owned(), account.name.clone()),
            ("LOGNAME".to_owned(), account.name),
        ],
    }))
}

/// The daemon's user: the invoking user, or `nobody` (no groups, environment unchanged).
pub fn daemon_identity(invoking: Option<Identity>) -> Identity {
    invoking.unwrap_or(Identity {
        uid: NOBODY.0,
        gid: NOBODY.1,
        groups: Vec::new(),
        env: Vec::new(),
    })
}

/// [`invoking_user`] with this process's variables and the system's user database.
pub fn from_system() -> Result<Option<Identity>, IdentityError> {
    invoking_user(
        &Sudo::from_env(),
        |uid| {
            let user = nix::unistd::User::from_uid(Uid::from_raw(uid))
                .map_err(|e| IdentityError::Lookup(uid, e))?;
            Ok(user.map(|u| Account {
                name: u.name,
                gid: u.gid.as_raw(),
                home: u.dir,
            }))
        },
        |account, gid| {
            std::ffi::CString::new(account.name.as_str())
                .ok()
                .and_then(|name| nix::unistd::getgrouplist(&name, Gid::from_raw(gid)).ok())
                .map(|gids| gids.into_iter().map(Gid::as_raw).collect())
                .unwrap_or_default()
        },
    )
}

impl Identity {
    /// Makes `command` run as this identity: its environment, then, between fork and exec,
    /// its supplementary groups, gid and uid, in that order (each later one needs the rights
    /// the earlier ones drop). Spawning fails unless this process may switch (root).
    pub fn apply(&self, command: &mut Command) {
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let groups: Vec<Gid> = self.groups.iter().copied().map(Gid::from_raw).collect();
        let (uid, gid) = (Uid::from_raw(self.uid), Gid::from_raw(self.gid));
        #[allow(unsafe_code)] // `pre_exec` has no safe form: it runs between fork and exec.
        // SAFETY: the closure makes three system calls on memory allocated before the fork
        // (`groups` is moved in); it allocates nothing and takes no lock, so it is safe in the
        // forked child of a multi-threaded process.
        unsafe {
            command.pre_exec(move || {
                nix::unistd::setgroups(&groups)?;
                nix::unistd::setgid(gid)?;
                nix::unistd::setuid(uid)?;
                Ok(())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice(uid: u32) -> Result<Option<Account>, IdentityError> {
        Ok((uid == 1000).then(|| Account {
            name: "alice".into(),
            gid: 1000,
            home: "/home/alice".into(),
        }))
    }

    fn sudo(uid: Option<&str>, gid: Option<&str>) -> Sudo {
        Sudo {
            uid: uid.map(String::from),
            gid: gid.map(String::from),
        }
    }

    #[test]
    fn the_sudo_user_with_groups_and_home() {
        let id = invoking_user(&sudo(Some("1000"), Some("1000")), alice, |a, gid| {
            assert_eq!((a.name.as_str(), gid), ("alice", 1000));
            vec![27, 1000, 998]
        })
        .unwrap()
        .expect("an invoking user");
        assert_eq!(
            id,
            Identity {
                uid: 1000,
                gid: 1000,
                groups: vec![27, 998, 1000],
                env: [
                    ("HOME", "/home/alice"),
                    ("USER", "alice"),
                    ("LOGNAME", "alice")
                ]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .to_vec(),
            }
        );
        assert_ne!(daemon_identity(Some(id.clone())).uid, 0);
        assert_eq!(daemon_identity(Some(id.clone())), id);
    }

    #[test]
    fn sudo_gid_wins_and_is_always_a_group() {
        let id = invoking_user(&sudo(Some("1000"), Some("2000")), alice, |_, _| vec![27])
            .unwrap()
            .unwrap();
        assert_eq!((id.uid, id.gid), (1000, 2000));
        assert_eq!(id.groups, [27, 2000]);
        // Without SUDO_GID: the account's primary group.
        let id = invoking_user(&sudo(Some("1000"), None), alice, |_, _| Vec::new())
            .unwrap()
            .unwrap();
        assert_eq!((id.gid, id.groups.as_slice()), (1000, &[1000][..]));
    }

    #[test]
    fn root_itself_runs_as_root_and_its_daemon_as_nobody() {
        for vars in [sudo(None, None), sudo(Some("0"), Some("0"))] {
            let id = invoking_user(&vars, |_| panic!("no lookup"), |_, _| panic!("no lookup"));
            assert_eq!(id.unwrap(), None, "{vars:?}");
        }
        let daemon = daemon_identity(None);
        assert_eq!((daemon.uid, daemon.gid), NOBODY);
        assert!(daemon.groups.is_empty(), "nobody keeps no group of root's");
    }

    #[test]
    fn garbage_or_unknown_ids_are_errors_not_root() {
        let err = invoking_user(&sudo(Some("alice"), None), alice, |_, _| Vec::new());
        assert!(matches!(
            err,
            Err(IdentityError::NotAnId {
                name: "SUDO_UID",
                ..
            })
        ));
        let err = invoking_user(&sudo(Some("1000"), Some("x")), alice, |_, _| Vec::new());
        assert!(matches!(
            err,
            Err(IdentityError::NotAnId {
                name: "SUDO_GID",
                ..
            })
        ));
        let err = invoking_user(&sudo(Some("4242"), None), alice, |_, _| Vec::new());
        assert!(matches!(err, Err(IdentityError::NoAccount(4242))));
    }

    #[test]
    fn apply_switches_user_in_the_child() {
        // Needs root to switch; as any other user the spawn fails (which is also right).
        if !Uid::effective().is_root() {
            return;
        }
        let id = Identity {
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
            env: vec![("HOME".into(), "/nonexistent".into())],
        };
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "id -u; id -g; id -G; echo $HOME"]);
        id.apply(&mut cmd);
        let out = cmd.output().expect("sh runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "65534\n65534\n65534\n/nonexistent\n"
        );
    }
}
