use super::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-fuse-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn me() -> Owner {
    Owner {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
    }
}

#[test]
fn mountinfo_lines_are_read_by_mount_point_type_and_source() {
    let info = "\
36 35 98:0 / /tmp/a\\040b rw,nosuid,nodev - fuse.tether tether rw,user_id=0,group_id=0
37 35 98:0 / /tmp/c rw - fuse.sshfs tether rw
38 35 98:0 / /tmp/d rw - fuse.tether other rw
39 35 98:0 / /tmp/e rw shared:1 - fuse tether rw
";
    let points: Vec<(String, String)> = tether_mounts(info).collect();
    // Not /tmp/c (another FUSE program) nor /tmp/d (another source).
    assert_eq!(
        points,
        [
            ("/tmp/a b".to_owned(), "98:0".to_owned()),
            ("/tmp/e".to_owned(), "98:0".to_owned())
        ]
    );
    assert_eq!(unescape("a\\011b\\134"), "a\tb\\");
    assert_eq!(unescape("trailing\\04"), "trailing\\04");
}

#[test]
fn root_mounts_only_in_places_for_scratch_directories() {
    assert!(under_root_place(Path::new("/tmp/x")));
    assert!(under_root_place(Path::new("/mnt/a/b")));
    assert!(!under_root_place(Path::new("/tmp")), "not the place itself");
    assert!(!under_root_place(Path::new("/etc/sudoers.d")));
    assert!(!under_root_place(Path::new("/tmpfoo/x")));
    assert!(!under_root_place(Path::new("/root/.ssh")));
}

#[test]
fn directories_that_are_not_the_users_own_empty_ones_are_refused() {
    let base = scratch("refusals");
    let mounts = Mounts::new(me());
    let relative = mounts.check_dir(Path::new("tmp/x")).unwrap_err();
    assert!(matches!(relative, MountError::NotAbsolute(_)), "{relative}");
    let dotdot = mounts.check_dir(&base.join("..").join("x")).unwrap_err();
    assert!(matches!(dotdot, MountError::NotAbsolute(_)), "{dotdot}");
    let missing = mounts.check_dir(&base.join("missing")).unwrap_err();
    assert!(matches!(missing, MountError::Missing(_)), "{missing}");

    let full = base.join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join(".hidden"), b"x").unwrap();
    let not_empty = mounts.check_dir(&full).unwrap_err();
    assert!(matches!(not_empty, MountError::NotEmpty(_)), "{not_empty}");

    let file = base.join("file");
    std::fs::write(&file, b"x").unwrap();
    let not_dir = mounts.check_dir(&file).unwrap_err();
    assert!(matches!(not_dir, MountError::NotADirectory(_)), "{not_dir}");

    let empty = base.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let link = base.join("link");
    std::os::unix::fs::symlink(&empty, &link).unwrap();
    let linked = mounts.check_dir(&link).unwrap_err();
    assert!(matches!(linked, MountError::NotADirectory(_)), "{linked}");

    // Someone else's directory: the owner is one uid off.
    let other = Mounts::new(Owner {
        uid: me().uid + 1,
        gid: me().gid,
    });
    let not_owner = other.check_dir(&empty).unwrap_err();
    assert!(
        matches!(not_owner, MountError::NotOwner { .. }),
        "{not_owner}"
    );

    // The user's own empty directory passes (for root, only in a scratch place: temp_dir is
    // /tmp here).
    if std::env::temp_dir().starts_with("/tmp") || me().uid != 0 {
        mounts
            .check_dir(&empty)
            .expect("an empty directory of the user's");
    }
    // Root's empty directory outside the scratch places is refused.
    if me().uid == 0 {
        let etc_like = Path::new("/var/lib");
        let refused = mounts.check_dir(etc_like).unwrap_err();
        assert!(
            matches!(
                refused,
                MountError::NotAPlaceForRoot(_) | MountError::NotEmpty(_)
            ),
            "{refused}"
        );
    }
    std::fs::remove_dir_all(&base).unwrap();
}

/// With root and /dev/fuse, a real mount: recorded, visible in mountinfo, unmounted by
/// `unmount_all`; a stale record (its helper gone) is repaired.
#[test]
fn mounts_are_recorded_and_undone() {
    if !nix::unistd::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("skipped: needs root and /dev/fuse");
        return;
    }
    let base = scratch("real");
    let state = StateDir::open(&base.join("run")).unwrap();
    let mut mounts = Mounts::new(me());
    let made = mounts
        .mount(&state, None)
        .expect("mount on a new directory");
    // Whatever fails below, nothing stays mounted.
    struct Undo(PathBuf);
    impl Drop for Undo {
        fn drop(&mut self) {
            let _ = umount2(&self.0, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _undo = Undo(made.dir.clone());
    assert!(
        made.dir.to_string_lossy().starts_with("/tmp/tether-mount-"),
        "{:?}",
        made.dir
    );
    assert!(is_mounted_fuse(&made.dir));
    assert!(state.read(RECORD).unwrap().is_some(), "recorded");
    // Read-ahead is set on the mount's own device, and only on a mount of the session's.
    mounts.read_ahead(&made.dir).expect("read-ahead");
    let info = mountinfo();
    let (_, dev) = tether_mounts(&info)
        .find(|(point, _)| Path::new(point) == made.dir)
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("/sys/class/bdi/{dev}/read_ahead_kb"))
            .unwrap()
            .trim(),
        READAHEAD_KB.to_string()
    );
    assert!(matches!(
        mounts.read_ahead(Path::new("/")),
        Err(MountError::NotOurs(_))
    ));
    // Asked again, or below it, without touching the (unserved, so hanging) mount.
    let again = mounts.mount(&state, Some(&made.dir)).unwrap_err();
    assert!(matches!(again, MountError::AlreadyMounted(_)), "{again}");
    let below = mounts.mount(&state, Some(&made.dir.join("x"))).unwrap_err();
    assert!(matches!(below, MountError::AlreadyMounted(_)), "{below}");
    // Nobody serves it: the daemon's descriptor closes, as in a `kill -9` of the daemon.
    drop(made.fuse);
    mounts.unmount_all(&state);
    assert!(!is_mounted_fuse(&made.dir), "unmounted");
    assert!(!made.dir.exists(), "the directory the helper made is gone");
    assert!(state.read(RECORD).unwrap().is_none());

    // A record left by a helper that no longer runs.
    let mut mounts = Mounts::new(me());
    let made = mounts.mount(&state, None).unwrap();
    let _undo = Undo(made.dir.clone());
    drop(made.fuse);
    let record = Record {
        helper: 4_194_400, // above any pid_max: no such process
        mounts: mounts.active.clone(),
    };
    state
        .write(RECORD, &serde_json::to_vec(&record).unwrap())
        .unwrap();
    assert_eq!(repair_stale(&state).unwrap(), 1);
    assert!(!is_mounted_fuse(&made.dir));
    assert!(!made.dir.exists());
    assert_eq!(repair_stale(&state).unwrap(), 0, "nothing left");
    std::fs::remove_dir_all(&base).unwrap();
}
