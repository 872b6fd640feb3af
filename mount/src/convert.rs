//! Between the file protocol and FUSE: attributes, times, errors and paths.

use std::ffi::OsStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileType, INodeNo};
use tether_proto::files::{FileAttr, FileErrorKind, FileKind, Timestamp};

/// How long the kernel may trust an entry or attributes it was given: sshfs's default. Files
/// changed in the pod show within a second; within it, `stat`s and lookups stay on the laptop.
pub(crate) const TTL: Duration = Duration::from_secs(1);

/// The block size shown by `stat` (a hint for the size of reads).
const BLOCK_SIZE: u32 = 4096;

/// The longest name of a directory entry (Linux's `NAME_MAX`).
const NAME_MAX: usize = 255;

/// The errno the kernel is told for a failure the agent reports.
pub(crate) fn errno(kind: FileErrorKind) -> Errno {
    match kind {
        FileErrorKind::Io => Errno::EIO,
        FileErrorKind::NotFound => Errno::ENOENT,
        FileErrorKind::PermissionDenied => Errno::EACCES,
        FileErrorKind::NotPermitted => Errno::EPERM,
        FileErrorKind::Exists => Errno::EEXIST,
        FileErrorKind::NotADirectory => Errno::ENOTDIR,
        FileErrorKind::IsADirectory => Errno::EISDIR,
        FileErrorKind::NotEmpty => Errno::ENOTEMPTY,
        FileErrorKind::ReadOnly => Errno::EROFS,
        FileErrorKind::NoSpace => Errno::ENOSPC,
        FileErrorKind::Invalid => Errno::EINVAL,
        FileErrorKind::NameTooLong => Errno::ENAMETOOLONG,
        FileErrorKind::CrossesMounts => Errno::EXDEV,
        FileErrorKind::BadHandle => Errno::EBADF,
        FileErrorKind::TooManyLinks => Errno::ELOOP,
        FileErrorKind::TooBig => Errno::EFBIG,
        FileErrorKind::Quota => Errno::EDQUOT,
    }
}

/// The FUSE file type of a protocol kind. Devices, FIFOs and sockets (which the agent lists but
/// never opens) are shown as sockets: a FIFO or a device node would be opened by the laptop's
/// kernel as one of its own, a socket just fails to open.
pub(crate) fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::File => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Other => FileType::Socket,
    }
}

/// A protocol time as a `SystemTime` (the epoch for one out of range).
pub(crate) fn system_time(t: Timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.nanos.min(999_999_999)));
    let time = if t.secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(t.secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(t.secs.unsigned_abs()))
    };
    time.and_then(|time| time.checked_add(nanos))
        .unwrap_or(UNIX_EPOCH)
}

/// A `SystemTime` as a protocol time.
pub(crate) fn timestamp(time: SystemTime) -> Timestamp {
    match time.duration_since(UNIX_EPOCH) {
        Ok(since) => Timestamp {
            secs: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            nanos: since.subsec_nanos(),
        },
        Err(before) => {
            let before = before.duration();
            let secs = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            match before.subsec_nanos() {
                0 => Timestamp {
                    secs: -secs,
                    nanos: 0,
                },
                n => Timestamp {
                    secs: -secs - 1,
                    nanos: 1_000_000_000 - n,
                },
            }
        }
    }
}

/// The attributes shown for inode `ino`: the pod's, owned by `uid`:`gid` (the laptop user).
pub(crate) fn attr(ino: u64, attr: &FileAttr, uid: u32, gid: u32) -> fuser::FileAttr {
    let ctime = system_time(attr.ctime);
    fuser::FileAttr {
        ino: INodeNo(ino),
        size: attr.size,
        blocks: attr.blocks,
        atime: system_time(attr.atime),
        mtime: system_time(attr.mtime),
        ctime,
        crtime: ctime,
        kind: file_type(attr.kind),
        // The mask keeps the value within 12 bits.
        perm: (attr.perm & 0o7777) as u16,
        nlink: attr.nlink,
        uid,
        gid,
        rdev: 0,
        blksize: BLOCK_SIZE,
        flags: 0,
    }
}

/// The container path of `name` in the directory at `parent`. Names the protocol cannot carry
/// (not UTF-8) are `EINVAL`; `.`, `..` and names with a `/` are never sent by the kernel and
/// refused alike.
pub(crate) fn child(parent: &str, name: &OsStr) -> Result<String, Errno> {
    let name = name.to_str().ok_or(Errno::EINVAL)?;
    if name.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(Errno::EINVAL);
    }
    Ok(if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    })
}

/// The directory holding `path` (`/` for `/` itself).
pub(crate) fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(at) => &path[..at],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [(FileErrorKind, i32); 17] = [
        (FileErrorKind::Io, libc::EIO),
        (FileErrorKind::NotFound, libc::ENOENT),
        (FileErrorKind::PermissionDenied, libc::EACCES),
        (FileErrorKind::NotPermitted, libc::EPERM),
        (FileErrorKind::Exists, libc::EEXIST),
        (FileErrorKind::NotADirectory, libc::ENOTDIR),
        (FileErrorKind::IsADirectory, libc::EISDIR),
        (FileErrorKind::NotEmpty, libc::ENOTEMPTY),
        (FileErrorKind::ReadOnly, libc::EROFS),
        (FileErrorKind::NoSpace, libc::ENOSPC),
        (FileErrorKind::Invalid, libc::EINVAL),
        (FileErrorKind::NameTooLong, libc::ENAMETOOLONG),
        (FileErrorKind::CrossesMounts, libc::EXDEV),
        (FileErrorKind::BadHandle, libc::EBADF),
        (FileErrorKind::TooManyLinks, libc::ELOOP),
        (FileErrorKind::TooBig, libc::EFBIG),
        (FileErrorKind::Quota, libc::EDQUOT),
    ];

    #[test]
    fn each_error_kind_is_its_errno() {
        for (kind, code) in KINDS {
            assert_eq!(errno(kind).code(), code, "{kind:?}");
        }
        // Every kind is in the table (they are numbered from 0).
        for n in 0..KINDS.len() {
            let kind = FileErrorKind::from(u16::try_from(n).expect("small"));
            assert!(KINDS.iter().any(|(k, _)| *k == kind));
        }
    }

    #[test]
    fn attributes_are_the_pods_owned_by_the_laptop_user() {
        let pod = FileAttr {
            kind: FileKind::File,
            size: 10_000,
            perm: 0o104_640,
            nlink: 3,
            uid: 1000,
            gid: 2000,
            atime: Timestamp { secs: 10, nanos: 5 },
            mtime: Timestamp { secs: 20, nanos: 6 },
            ctime: Timestamp { secs: 30, nanos: 7 },
            blocks: 24,
        };
        let shown = attr(42, &pod, 501, 20);
        assert_eq!(shown.ino, INodeNo(42));
        assert_eq!(shown.kind, FileType::RegularFile);
        assert_eq!((shown.size, shown.blocks, shown.nlink), (10_000, 24, 3));
        assert_eq!(shown.perm, 0o4640, "permission bits only");
        assert_eq!((shown.uid, shown.gid), (501, 20));
        assert_eq!(shown.blksize, 4096);
        assert_eq!(shown.mtime, UNIX_EPOCH + Duration::new(20, 6));
        assert_eq!(shown.atime, UNIX_EPOCH + Duration::new(10, 5));
        assert_eq!(shown.ctime, UNIX_EPOCH + Duration::new(30, 7));

        let kinds = [
            (FileKind::Directory, FileType::Directory),
            (FileKind::Symlink, FileType::Symlink),
            (FileKind::Other, FileType::Socket),
        ];
        for (kind, shown) in kinds {
            assert_eq!(attr(2, &FileAttr { kind, ..pod }, 0, 0).kind, shown);
        }
    }

    #[test]
    fn times_round_trip_before_and_after_the_epoch() {
        for t in [
            Timestamp { secs: 0, nanos: 0 },
            Timestamp {
                secs: 1_700_000_000,
                nanos: 123_456_789,
            },
            Timestamp { secs: -1, nanos: 0 },
            Timestamp {
                secs: -2,
                nanos: 800_000_000,
            },
        ] {
            assert_eq!(timestamp(system_time(t)), t);
        }
        assert_eq!(
            system_time(Timestamp {
                secs: -2,
                nanos: 800_000_000
            }),
            UNIX_EPOCH - Duration::new(1, 200_000_000)
        );
        // Out of range: the epoch, not a panic.
        let far = Timestamp {
            secs: i64::MAX,
            nanos: u32::MAX,
        };
        let _ = system_time(far);
    }

    #[test]
    fn a_child_path_is_joined_without_a_double_slash() {
        assert_eq!(child("/", OsStr::new("etc")), Ok("/etc".to_owned()));
        assert_eq!(
            child("/etc/config", OsStr::new("app.yaml")),
            Ok("/etc/config/app.yaml".to_owned())
        );
        assert_eq!(child("/", OsStr::new("..")), Err(Errno::EINVAL));
        assert_eq!(child("/", OsStr::new(".")), Err(Errno::EINVAL));
        assert_eq!(child("/", OsStr::new("a/b")), Err(Errno::EINVAL));
        assert_eq!(
            child("/", OsStr::new(&"x".repeat(256))),
            Err(Errno::ENAMETOOLONG)
        );
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(child("/", OsStr::from_bytes(b"\xff")), Err(Errno::EINVAL));
    }

    #[test]
    fn the_parent_of_a_path() {
        assert_eq!(parent("/"), "/");
        assert_eq!(parent("/etc"), "/");
        assert_eq!(parent("/etc/config/app.yaml"), "/etc/config");
    }
}
