//! The files a stream has open, by handle, and the operations on them.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, PoisonError};

use tether_proto::files::{FileAttr, FileErrorKind, MAX_IO};

use super::sys::OpError;

/// The most files one stream may hold open at once.
pub const MAX_HANDLES: usize = 1024;

/// The files of one stream, by handle. Closing the stream drops the table, and with it every
/// file still open.
#[derive(Debug, Default)]
pub struct Handles {
    table: Mutex<HandleTable>,
}

#[derive(Debug, Default)]
struct HandleTable {
    last: u64,
    open: HashMap<u64, OpenFile>,
}

/// An open file; shared, so that a long read does not hold the table's lock.
#[derive(Debug, Clone)]
struct OpenFile {
    file: Arc<File>,
    writable: bool,
}

impl Handles {
    /// How many files are open.
    pub fn len(&self) -> usize {
        self.lock().open.len()
    }

    /// Whether no file is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HandleTable> {
        // A panic elsewhere leaves the table itself consistent (each change is one insert or
        // remove).
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn insert(&self, file: File, writable: bool) -> Result<u64, OpError> {
        let mut table = self.lock();
        if table.open.len() >= MAX_HANDLES {
            return Err(OpError::new(
                FileErrorKind::Io,
                format!("{MAX_HANDLES} files are open on this stream already"),
            ));
        }
        table.last += 1;
        let handle = table.last;
        let file = Arc::new(file);
        table.open.insert(handle, OpenFile { file, writable });
        Ok(handle)
    }

    fn get(&self, handle: u64) -> Result<OpenFile, OpError> {
        self.lock()
            .open
            .get(&handle)
            .cloned()
            .ok_or_else(bad_handle)
    }

    pub(super) fn remove(&self, handle: u64) -> Result<(), OpError> {
        self.lock()
            .open
            .remove(&handle)
            .map(drop)
            .ok_or_else(bad_handle)
    }
}

fn bad_handle() -> OpError {
    OpError::new(FileErrorKind::BadHandle, "no such handle on this stream")
}

/// Reads up to `len` bytes (at most [`MAX_IO`]), fewer only at the end of the file.
pub(super) fn read(
    handles: &Handles,
    handle: u64,
    offset: u64,
    len: u32,
) -> Result<Vec<u8>, OpError> {
    let open = handles.get(handle)?;
    let mut buf = vec![0; len.min(MAX_IO) as usize];
    let mut filled = 0;
    while filled < buf.len() {
        let at = offset
            .checked_add(filled as u64)
            .ok_or_else(|| OpError::new(FileErrorKind::Invalid, "offset out of range"))?;
        match open.file.read_at(&mut buf[filled..], at) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

pub(super) fn write(
    handles: &Handles,
    handle: u64,
    offset: u64,
    data: &[u8],
) -> Result<u32, OpError> {
    let open = handles.get(handle)?;
    let len = u32::try_from(data.len())
        .ok()
        .filter(|len| *len <= MAX_IO)
        .ok_or_else(|| OpError::new(FileErrorKind::Invalid, "a write over MAX_IO bytes"))?;
    if !open.writable {
        return Err(OpError::new(
            FileErrorKind::BadHandle,
            "the file was opened read-only",
        ));
    }
    open.file.write_all_at(data, offset)?;
    Ok(len)
}

/// The attributes of an open file, whatever its path names now.
pub(super) fn fstat(handles: &Handles, handle: u64) -> Result<FileAttr, OpError> {
    let open = handles.get(handle)?;
    Ok(super::sys::attr(&nix::sys::stat::fstat(
        open.file.as_ref(),
    )?))
}

/// Flushes a file to its storage.
pub(super) fn fsync(handles: &Handles, handle: u64) -> Result<(), OpError> {
    Ok(handles.get(handle)?.file.sync_all()?)
}
