//! The file system mounted for real: `/dev/fuse` mounted on a temporary directory as the root
//! helper does it, served over the in-memory agent of `memory`, and used with `std::fs` as an
//! app on the laptop would. Needs root and `/dev/fuse`; skipped (with a note) without them.

mod memory;

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memory::{Memory, HANG};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use tether_mount::{serve, FileService, MountOptions};

/// A mount of `/dev/fuse` that is undone (lazily) when dropped, whatever the test did.
struct Mounted {
    dir: PathBuf,
    mounted: bool,
}

impl Mounted {
    /// Mounts a new `/dev/fuse` descriptor on a new temporary directory; `None` (and a note)
    /// where that is not possible.
    fn new() -> Option<(Mounted, OwnedFd)> {
        if !nix::unistd::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
            eprintln!("skipped: mounting needs root and /dev/fuse");
            return None;
        }
        // Each test its own directory: the tests of this file run at once.
        static MOUNTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = MOUNTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("tether-mount-{}-{n}", std::process::id()));
        fs::create_dir_all(&dir).expect("a temporary directory");
        // Removes the directory, should the mount fail.
        let mut guard = Mounted {
            dir: dir.clone(),
            mounted: false,
        };
        let fuse = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .expect("/dev/fuse opens");
        let options = format!(
            "fd={},rootmode=40000,user_id=0,group_id=0,default_permissions",
            fuse.as_raw_fd()
        );
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        if let Err(errno) = mount(
            Some("tether"),
            &dir,
            Some("fuse"),
            flags,
            Some(options.as_str()),
        ) {
            eprintln!("skipped: mounting /dev/fuse failed: {errno}");
            return None;
        }
        guard.mounted = true;
        Some((guard, OwnedFd::from(fuse)))
    }

    fn path(&self, container_path: &str) -> PathBuf {
        self.dir.join(container_path.trim_start_matches('/'))
    }

    fn unmount(&mut self) {
        if self.mounted {
            umount2(&self.dir, MntFlags::MNT_DETACH).expect("unmounts");
            self.mounted = false;
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            let _ = umount2(&self.dir, MntFlags::MNT_DETACH);
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

fn errno(error: &std::io::Error) -> Option<i32> {
    error.raw_os_error()
}

/// 1.5 MiB that is not the same in any two 4 KiB pages.
fn big() -> Vec<u8> {
    (0..3 * 512 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[test]
fn an_app_reads_and_changes_the_pods_files_through_the_mount() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let Some((mut mnt, fd)) = Mounted::new() else {
        return;
    };
    let memory = Arc::new(Memory::new(
        &["/data", "/data/sub", "/slow"],
        &[("/data/hello.txt", b"hello world")],
    ));
    let options = MountOptions {
        call_timeout: Duration::from_secs(2),
        ..MountOptions::new(1234, 5678)
    };
    let service: Arc<dyn FileService> = memory.clone();
    let served = serve(fd, service, runtime.handle().clone(), options).expect("serves");

    // The root is the container's `/`, read-only above the mounts.
    let mut names: Vec<_> = fs::read_dir(mnt.path("/"))
        .expect("lists /")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .into_string()
                .expect("UTF-8")
        })
        .collect();
    names.sort();
    assert_eq!(names, ["data", "slow"]);
    let refused = fs::write(mnt.path("/new"), b"x").expect_err("/ is read-only");
    assert_eq!(errno(&refused), Some(libc::EROFS), "{refused}");

    // Reading, listing, stat: the pod's files owned by the laptop user.
    let hello = mnt.path("/data/hello.txt");
    assert_eq!(fs::read_to_string(&hello).expect("reads"), "hello world");
    let meta = fs::metadata(&hello).expect("stats");
    assert_eq!(meta.len(), 11);
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
    assert!(meta.is_file());
    let mut names: Vec<_> = fs::read_dir(mnt.path("/data"))
        .expect("lists")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .into_string()
                .expect("UTF-8")
        })
        .collect();
    names.sort();
    assert_eq!(names, ["hello.txt", "sub"]);
    let missing = fs::metadata(mnt.path("/data/missing")).expect_err("not there");
    assert_eq!(missing.kind(), ErrorKind::NotFound);

    // Writing more than one `Write` (and reading back more than one `Read`) holds.
    let data = big();
    let new = mnt.path("/data/new.bin");
    fs::write(&new, &data).expect("writes");
    assert_eq!(fs::metadata(&new).expect("stats").len(), data.len() as u64);
    assert!(fs::read(&new).expect("reads back") == data, "same bytes");
    let exists = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&new)
        .expect_err("O_EXCL");
    assert_eq!(exists.kind(), ErrorKind::AlreadyExists);

    // An unchanged file is read again from the laptop's page cache; a changed one is not.
    let reads = memory.reads();
    assert!(fs::read(&new).expect("reads again") == data);
    assert_eq!(
        memory.reads(),
        reads,
        "the second read came from the page cache"
    );
    memory.replace("/data/new.bin", b"changed in the pod");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        fs::read(&new).expect("reads the change"),
        b"changed in the pod"
    );

    // Rename a file, then the directory holding it: the kernel's inodes follow.
    let moved = mnt.path("/data/sub/moved.bin");
    fs::rename(&new, &moved).expect("renames");
    assert_eq!(
        fs::metadata(&new).expect_err("gone").kind(),
        ErrorKind::NotFound
    );
    assert_eq!(fs::read(&moved).expect("reads"), b"changed in the pod");
    let file = fs::File::open(&moved).expect("opens");
    fs::rename(mnt.path("/data/sub"), mnt.path("/data/sub2")).expect("renames a directory");
    drop(file);
    assert_eq!(
        fs::read(mnt.path("/data/sub2/moved.bin")).expect("reads under the new name"),
        b"changed in the pod"
    );

    // Truncate, append, chmod.
    let file = OpenOptions::new()
        .write(true)
        .open(mnt.path("/data/sub2/moved.bin"))
        .expect("opens");
    file.set_len(7).expect("truncates");
    drop(file);
    let mut file = OpenOptions::new()
        .append(true)
        .open(mnt.path("/data/sub2/moved.bin"))
        .expect("opens to append");
    file.write_all(b"!").expect("appends");
    drop(file);
    assert_eq!(
        fs::read(mnt.path("/data/sub2/moved.bin")).expect("reads"),
        b"changed!"
    );
    fs::set_permissions(&hello, fs::Permissions::from_mode(0o600)).expect("chmods");
    assert_eq!(
        fs::metadata(&hello).expect("stats").permissions().mode() & 0o7777,
        0o600
    );

    // Symbolic links are resolved by the laptop's kernel.
    let link = mnt.path("/data/link");
    std::os::unix::fs::symlink("hello.txt", &link).expect("links");
    assert_eq!(
        fs::read_link(&link).expect("reads the link"),
        Path::new("hello.txt")
    );
    assert_eq!(fs::read_to_string(&link).expect("follows"), "hello world");
    assert!(fs::symlink_metadata(&link)
        .expect("lstats")
        .file_type()
        .is_symlink());

    // Directories: create, refuse to remove while full, remove.
    let dir = mnt.path("/data/made");
    fs::create_dir(&dir).expect("mkdir");
    fs::write(dir.join("f"), b"1").expect("writes in it");
    let full = fs::remove_dir(&dir).expect_err("not empty");
    assert_eq!(errno(&full), Some(libc::ENOTEMPTY));
    fs::remove_file(dir.join("f")).expect("unlinks");
    fs::remove_dir(&dir).expect("rmdir");
    assert!(!dir.exists());

    // A stalled operation fails with EIO after the time limit, and holds up nothing else.
    let slow = mnt.path(HANG);
    let stalled = std::thread::spawn(move || fs::metadata(slow));
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let mut text = String::new();
    fs::File::open(&hello)
        .and_then(|mut f| f.read_to_string(&mut text))
        .expect("reads meanwhile");
    assert!(started.elapsed() < Duration::from_secs(1), "not held up");
    let stalled = stalled
        .join()
        .expect("no panic")
        .expect_err("no answer in time");
    assert_eq!(errno(&stalled), Some(libc::EIO), "{stalled}");

    let stats = nix::sys::statvfs::statvfs(&mnt.path("/data")).expect("statfs");
    assert_eq!(stats.blocks(), 1000);

    // Unmounting ends the session.
    mnt.unmount();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(served.join());
    });
    let ended = done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the session ends after the unmount");
    ended.expect("ends cleanly");
}

#[test]
fn a_directory_larger_than_one_answer_is_listed_whole() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let Some((mnt, fd)) = Mounted::new() else {
        return;
    };
    // Names of 200 bytes: 6,000 of them, with their attributes, are more than one frame holds.
    let long = "n".repeat(200);
    let paths: Vec<String> = (0..6_000).map(|i| format!("/big/{i:04}{long}")).collect();
    let files: Vec<(&str, &[u8])> = paths.iter().map(|p| (p.as_str(), &b""[..])).collect();
    let memory = Arc::new(Memory::new(&["/big"], &files));
    let service: Arc<dyn FileService> = memory.clone();
    let served = serve(
        fd,
        service,
        runtime.handle().clone(),
        MountOptions::new(0, 0),
    )
    .expect("serves");
    let names: Vec<String> = fs::read_dir(mnt.path("/big"))
        .expect("lists")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .into_string()
                .expect("UTF-8")
        })
        .collect();
    assert_eq!(names.len(), paths.len());
    let expected: Vec<&str> = paths.iter().map(|p| &p["/big/".len()..]).collect();
    assert_eq!(names, expected, "every name once, in the pod's order");
    drop(mnt);
    served.join().expect("the file system ends cleanly");
}
