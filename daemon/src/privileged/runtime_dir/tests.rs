//! The layout, and symbolic links planted wherever a user could plant them. The tests run as any
//! user: "root" here is this process's user, and the checks that need another user (taking back
//! a directory, a state directory that belongs to someone else) only run as root.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

use super::*;
use crate::privileged::resolv_conf::{ResolvConfFile, BACKUP, OWNER};

/// A fresh directory for one test, mode 0755, under the sticky /tmp.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-rt-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn is_root() -> bool {
    Uid::effective().is_root()
}

/// A file that stands for one of root's (`/etc/shadow`): it must come through unchanged.
struct Victim {
    path: PathBuf,
    content: &'static [u8],
}

impl Victim {
    fn new(dir: &Path) -> Victim {
        let path = dir.join("shadow");
        let content = b"root:$6$secret-hash:19000:0:99999:7:::\n";
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        Victim { path, content }
    }

    #[track_caller]
    fn assert_unchanged(&self) {
        assert_eq!(
            fs::read(&self.path).unwrap(),
            self.content,
            "victim changed"
        );
        assert_eq!(mode(&self.path), 0o640, "victim's mode changed");
    }
}

#[test]
fn the_layout_is_created_with_its_owners_and_modes() {
    let base = scratch("layout");
    let runtime = base.join("run/tether");
    let dir = RuntimeDir::open(&runtime).unwrap();
    let state = dir.state().unwrap();
    let me = (Uid::effective().as_raw(), Gid::effective().as_raw());
    let user = dir.prepare_user_dir(me.0, me.1).unwrap();
    assert_eq!(user, user_dir(&runtime));
    assert_eq!(mode(&runtime), 0o755);
    assert_eq!(mode(state.path()), 0o700);
    assert_eq!(mode(&user), 0o700);
    assert_eq!(socket_path(&runtime), runtime.join("user/daemon.sock"));
    assert_eq!(helper_log_path(&runtime), runtime.join("state/helper.log"));

    // Secrets and logs are created 0600.
    state.write(BACKUP, b"nameserver 10.0.0.1\n").unwrap();
    assert_eq!(mode(&state.path().join(BACKUP)), 0o600);
    drop(state.open_log(HELPER_LOG).unwrap());
    assert_eq!(mode(&helper_log_path(&runtime)), 0o600);
    fs::write(daemon_log_path(&runtime), "old, world-readable\n").unwrap();
    fs::set_permissions(daemon_log_path(&runtime), fs::Permissions::from_mode(0o644)).unwrap();
    drop(open_daemon_log(&runtime).unwrap());
    assert_eq!(mode(&daemon_log_path(&runtime)), 0o600);

    if is_root() {
        let user = dir.prepare_user_dir(65534, 65534).unwrap();
        let meta = fs::metadata(&user).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
        assert_eq!(
            fs::metadata(state.path()).unwrap().uid(),
            0,
            "the state directory stays root's"
        );
        // Another user's log is not left for the new daemon user to fail on.
        assert!(!daemon_log_path(&runtime).exists());
    }
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_link_at_the_runtime_dir_or_a_parent_is_refused() {
    let base = scratch("link-parent");
    let victim_dir = base.join("elsewhere");
    fs::create_dir(&victim_dir).unwrap();
    fs::set_permissions(&victim_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let victim = Victim::new(&victim_dir);

    symlink(&victim_dir, base.join("run")).unwrap();
    let err = RuntimeDir::open(&base.join("run")).unwrap_err();
    assert!(matches!(err, RuntimeDirError::NotADirectory(_)), "{err}");
    let err = RuntimeDir::open(&base.join("run/tether")).unwrap_err();
    assert!(matches!(err, RuntimeDirError::NotADirectory(_)), "{err}");
    // Nothing was created or changed through the link.
    assert_eq!(fs::read_dir(&victim_dir).unwrap().count(), 1);
    assert_eq!(mode(&victim_dir), 0o755);
    victim.assert_unchanged();

    for bad in ["relative/dir", "/tmp/../etc"] {
        assert!(matches!(
            RuntimeDir::open(Path::new(bad)),
            Err(RuntimeDirError::NotAbsolute(_))
        ));
    }
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_parent_others_can_write_is_refused() {
    let base = scratch("shared-parent");
    let shared = base.join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let err = RuntimeDir::open(&shared.join("tether")).unwrap_err();
    assert!(matches!(err, RuntimeDirError::Untrusted { .. }), "{err}");
    assert!(!shared.join("tether").exists());
    // Sticky, like /tmp: others cannot replace what is ours, so it is fine.
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    RuntimeDir::open(&shared.join("tether")).unwrap();
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_link_at_the_state_dir_is_refused_and_nothing_is_written_through_it() {
    let base = scratch("link-state");
    let runtime = base.join("run");
    let victim_dir = base.join("elsewhere");
    fs::create_dir(&victim_dir).unwrap();
    let victim = Victim::new(&victim_dir);
    let dir = RuntimeDir::open(&runtime).unwrap();
    symlink(&victim_dir, runtime.join(STATE_DIR)).unwrap();
    let err = dir.state().unwrap_err();
    assert!(matches!(err, RuntimeDirError::NotADirectory(_)), "{err}");
    assert!(matches!(
        StateDir::open(&runtime),
        Err(RuntimeDirError::NotADirectory(_))
    ));
    assert_eq!(fs::read_dir(&victim_dir).unwrap().count(), 1);
    victim.assert_unchanged();
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn a_state_dir_that_is_not_private_is_refused() {
    let base = scratch("state-mode");
    let runtime = base.join("run");
    let dir = RuntimeDir::open(&runtime).unwrap();
    let state = dir.state().unwrap();
    fs::set_permissions(state.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let err = dir.state().unwrap_err();
    assert!(matches!(err, RuntimeDirError::NotPrivate { .. }), "{err}");
    assert!(err.to_string().contains("sudo rm -rf"), "{err}");
    if is_root() {
        fs::set_permissions(state.path(), fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(state.path(), Some(65534), Some(65534)).unwrap();
        let err = dir.state().unwrap_err();
        assert!(
            matches!(err, RuntimeDirError::NotPrivate { uid: 65534, .. }),
            "{err}"
        );
    }
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn links_in_the_state_dir_are_not_followed() {
    // Only root can write there; this is the second line of defence.
    let base = scratch("link-file");
    let victim = Victim::new(&base);
    let state = StateDir::open(&base.join("run")).unwrap();
    for name in [BACKUP, OWNER, HELPER_LOG] {
        symlink(&victim.path, state.path().join(name)).unwrap();
    }
    assert!(matches!(
        state.write(BACKUP, b"x"),
        Err(RuntimeDirError::NotAFile(_))
    ));
    assert!(matches!(
        state.read(BACKUP),
        Err(RuntimeDirError::NotAFile(_))
    ));
    assert!(matches!(
        state.open_log(HELPER_LOG),
        Err(RuntimeDirError::NotAFile(_))
    ));
    // The live file is not rewritten from a backup that is a link.
    let live = base.join("resolv.conf");
    fs::write(&live, "nameserver 198.18.0.2\n").unwrap();
    let resolv = ResolvConfFile::new(&live, StateDir::open(&base.join("run")).unwrap());
    assert!(resolv.restore().is_err());
    assert!(resolv.repair_stale().is_err());
    assert_eq!(
        fs::read_to_string(&live).unwrap(),
        "nameserver 198.18.0.2\n"
    );
    victim.assert_unchanged();
    fs::remove_dir_all(&base).unwrap();
}

/// What the daemon's user can do: plant links with every name root uses, in its own directory
/// and (as an older tether allowed) in the runtime directory itself; then root goes through a
/// whole session: repair at start, helper log, install, restore, socket removal.
#[test]
fn links_the_daemons_user_plants_are_never_followed_by_root() {
    let base = scratch("user-links");
    let runtime = base.join("run");
    let victim = Victim::new(&base);
    let live = base.join("resolv.conf");
    let original = b"nameserver 10.0.0.53\nsearch corp.example\n";
    fs::write(&live, original).unwrap();

    let dir = RuntimeDir::open(&runtime).unwrap();
    let me = (Uid::effective().as_raw(), Gid::effective().as_raw());
    let user = dir.prepare_user_dir(me.0, me.1).unwrap();
    let names = [BACKUP, OWNER, HELPER_LOG, DAEMON_LOG, SOCKET, STATE_DIR];
    for name in names {
        symlink(&victim.path, user.join(name)).unwrap();
        symlink(&victim.path, runtime.join(name)).unwrap();
    }
    if is_root() {
        // The layout of an older tether: the whole runtime directory was the user's.
        std::os::unix::fs::chown(&runtime, Some(65534), Some(65534)).unwrap();
        fs::set_permissions(&runtime, fs::Permissions::from_mode(0o700)).unwrap();
    }

    // The planted `state` link is refused, not followed.
    assert!(matches!(
        StateDir::open(&runtime),
        Err(RuntimeDirError::NotADirectory(_))
    ));
    victim.assert_unchanged();
    fs::remove_file(runtime.join(STATE_DIR)).unwrap();

    let dir = RuntimeDir::open(&runtime).unwrap();
    let meta = fs::metadata(&runtime).unwrap();
    assert_eq!(meta.uid(), Uid::effective().as_raw(), "taken back");
    assert_eq!(mode(&runtime), 0o755);
    let state = || dir.state().unwrap();
    let resolv = ResolvConfFile::new(&live, state());
    assert!(!resolv.repair_stale().unwrap(), "no backup of ours");
    drop(state().open_log(HELPER_LOG).unwrap());
    resolv.install("nameserver 198.18.0.2\n").unwrap();
    resolv.restore().unwrap();
    dir.remove_socket();
    assert_eq!(fs::read(&live).unwrap(), original);
    victim.assert_unchanged();
    // The socket name was removed, not what it pointed at.
    assert!(fs::symlink_metadata(user.join(SOCKET)).is_err());
    // The daemon (the user) replaces a log that is a link with a file of its own, rather than
    // writing through it.
    let log = open_daemon_log(&runtime).unwrap();
    assert!(log.metadata().unwrap().is_file());
    assert!(fs::symlink_metadata(user.join(DAEMON_LOG))
        .unwrap()
        .file_type()
        .is_file());
    assert_eq!(mode(&user.join(DAEMON_LOG)), 0o600);
    victim.assert_unchanged();
    fs::remove_dir_all(&base).unwrap();
}
