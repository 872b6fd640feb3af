//! A local user against tether's root helper: `sudo tether connect` run by a real local user
//! (`SUDO_UID` of `nobody`, the account the daemon then runs as), who plants symbolic links
//! wherever that user can write, then connects, quits and has the daemon killed. No root-owned
//! file outside tether's own state may change, and the workstation's resolver configuration ends
//! byte for byte as it was. And `sudo tether connect -- CMD` runs CMD as that user.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
};

use tether_e2e::{eventually, run, runtime_dir, tether_bin, Run, WS};

const NOBODY: u32 = 65534;

/// `tether ARGS` on the workstation as `sudo` run by `nobody` would: root, with `SUDO_*` naming
/// the user, and the user's own kubeconfig.
fn sudo_tether(kubeconfig: &Path, args: &[&str]) -> Run {
    run(Command::new("ip")
        .args(["netns", "exec", WS])
        .arg(tether_bin())
        .args(args)
        .env("TETHER_RUNTIME_DIR", runtime_dir(WS))
        .env("KUBECONFIG", kubeconfig)
        .env("SUDO_UID", NOBODY.to_string())
        .env("SUDO_GID", NOBODY.to_string())
        .env("SUDO_USER", "nobody"))
}

/// A shell command run as `nobody` (the attacker), in the workstation namespace.
fn as_nobody(script: &str) -> Run {
    run(Command::new("ip").args(["netns", "exec", WS]).args([
        "setpriv",
        "--reuid",
        &NOBODY.to_string(),
        "--regid",
        &NOBODY.to_string(),
        "--clear-groups",
        "sh",
        "-c",
        script,
    ]))
}

/// What a file is: owner, mode and content (`None` if absent).
fn fingerprint(path: &Path) -> Option<(u32, u32, Vec<u8>)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some((meta.uid(), meta.mode(), std::fs::read(path).ok()?))
}

/// The workstation namespace's `/etc/resolv.conf` (`ip netns exec` binds it from here).
fn ws_resolv_conf() -> PathBuf {
    PathBuf::from(format!("/etc/netns/{WS}/resolv.conf"))
}

/// A copy of the cluster's kubeconfig that only `nobody` can read, in a directory of its own.
struct UserKubeconfig(PathBuf);

impl UserKubeconfig {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("tether-e2e-nobody-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kc = dir.join("config");
        std::fs::copy(tether_e2e::kubeconfig(), &kc).unwrap();
        for path in [&dir, &kc] {
            std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&kc, std::fs::Permissions::from_mode(0o600)).unwrap();
        Self(dir)
    }

    fn path(&self) -> PathBuf {
        self.0.join("config")
    }
}

impl Drop for UserKubeconfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Quits (as root, like the user's `sudo tether quit`) on drop.
struct Session<'a>(&'a Path);

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = sudo_tether(self.0, &["quit"]);
    }
}

#[test]
fn links_planted_by_the_daemons_user_change_no_root_file() {
    let kc = UserKubeconfig::new();
    // Root's files the links point at: a canary of our own, the password hashes.
    let canary = std::env::temp_dir().join(format!("tether-e2e-canary-{}", std::process::id()));
    std::fs::write(&canary, "root's own file\n").unwrap();
    std::fs::set_permissions(&canary, std::fs::Permissions::from_mode(0o600)).unwrap();
    let watched = [
        canary.clone(),
        PathBuf::from("/etc/shadow"),
        ws_resolv_conf(),
    ];
    let before: Vec<_> = watched.iter().map(|p| fingerprint(p)).collect();

    let runtime = runtime_dir(WS);
    let _session = Session(&kc.path());
    sudo_tether(&kc.path(), &["connect"]).expect_ok("connect as nobody's sudo");
    let status: serde_json::Value = serde_json::from_str(
        &sudo_tether(&kc.path(), &["status", "-o", "json"]).expect_ok("status"),
    )
    .expect("status JSON");
    let daemon_pid = status["daemon_pid"].as_u64().expect("daemon pid");

    // Every name root used to write in the user's reach, as links to root's files, in every
    // directory the user can write to; and attempts on the directories that are root's.
    let mut planted = Vec::new();
    for dir in [runtime.join("user"), runtime.clone(), runtime.join("state")] {
        for (name, target) in [
            ("resolv.conf.orig", "/etc/shadow"),
            ("resolv.conf.owner", canary.to_str().unwrap()),
            ("helper.log", canary.to_str().unwrap()),
            ("daemon.log.new", canary.to_str().unwrap()),
        ] {
            let link = dir.join(name);
            let out = as_nobody(&format!("ln -sf {target} {} 2>/dev/null", link.display()));
            if out.ok {
                planted.push(link);
            }
        }
    }
    // The user owns their own directory, so they can always plant there; never in root's.
    assert!(
        planted.iter().all(|p| p.starts_with(runtime.join("user"))),
        "the user could write in a root directory: {planted:?}"
    );
    assert!(!planted.is_empty(), "no link could be planted at all");
    // The daemon's own log becomes a link to root's canary too.
    as_nobody(&format!(
        "ln -sf {} {}",
        canary.display(),
        runtime.join("user/daemon.log").display()
    ))
    .expect_ok("replace the daemon's log with a link");

    // quit, connect again (the helper reads its state; the daemon, as the user, replaces a log
    // that is a link with a file of its own), kill -9 of the daemon, then the repair that `quit`
    // does.
    sudo_tether(&kc.path(), &["quit"]).expect_ok("quit");
    sudo_tether(&kc.path(), &["connect"]).expect_ok("connect again among the links");
    let log = std::fs::symlink_metadata(runtime.join("user/daemon.log")).expect("the log");
    assert!(
        log.file_type().is_file(),
        "the daemon's log is a link again"
    );
    assert_eq!((log.uid(), log.mode() & 0o777), (NOBODY, 0o600));
    let status: serde_json::Value = serde_json::from_str(
        &sudo_tether(&kc.path(), &["status", "-o", "json"]).expect_ok("status"),
    )
    .expect("status JSON");
    let pid = status["daemon_pid"].as_u64().expect("daemon pid");
    assert_ne!(pid, daemon_pid);
    run(Command::new("kill").args(["-9", &pid.to_string()])).expect_ok("kill -9 the daemon");
    eventually(
        std::time::Duration::from_secs(15),
        "the killed daemon's helper is gone",
        || (!Path::new(&format!("/proc/{pid}")).exists()).then_some(()),
    );
    sudo_tether(&kc.path(), &["quit"]).expect_ok("quit repairs");

    let after: Vec<_> = watched.iter().map(|p| fingerprint(p)).collect();
    for ((path, before), after) in watched.iter().zip(&before).zip(&after) {
        assert_eq!(before, after, "{} changed", path.display());
    }
    // The attacker's links are the attacker's: removed, so the next run starts as a user would.
    for link in &planted {
        let _ = std::fs::remove_file(link);
    }
    let _ = std::fs::remove_file(&canary);
}

#[test]
fn connect_runs_the_command_as_the_invoking_user() {
    let kc = UserKubeconfig::new();
    let _session = Session(&kc.path());
    let out = sudo_tether(&kc.path(), &["connect", "--", "id", "-u"]).expect_ok("connect -- id");
    // Between connect's own lines, CMD printed its uid.
    let uids: Vec<&str> = out
        .lines()
        .filter(|l| !l.trim().is_empty() && l.trim().chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(uids, ["65534"], "{out}");
    // The kubeconfig was read as the user: one that only root can read is refused.
    let root_only = std::env::temp_dir().join(format!("tether-e2e-rootkc-{}", std::process::id()));
    std::fs::copy(tether_e2e::kubeconfig(), &root_only).unwrap();
    std::fs::set_permissions(&root_only, std::fs::Permissions::from_mode(0o600)).unwrap();
    let refused = sudo_tether(&root_only, &["connect"]);
    let _ = sudo_tether(&root_only, &["quit"]);
    let _ = std::fs::remove_file(&root_only);
    assert!(
        !refused.ok && refused.stderr.contains("kubeconfig"),
        "a kubeconfig only root can read was used: {refused:?}"
    );
}
