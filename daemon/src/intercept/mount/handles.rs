//! Open files that outlive the file stream they were opened on.
//!
//! A handle the agent gives out belongs to one file stream: when the session reconnects, the
//! stream is opened again ([`Files::reopen`](super::Files::reopen)) and every handle of the old
//! one is gone. A process that had a file open (a server that keeps its config open, `tail -f`
//! of a log) would then get `EIO` from its next read. So the kernel never sees the agent's
//! handles: it gets this table's numbers, each standing for a file (its path and whether it was
//! opened for writing) and for the agent's handle on the stream of its generation. The first use
//! on a newer stream opens the file again by its path, as the file system's own `open` would
//! have, and goes on there.
//!
//! The table is the logic only (no I/O); [`Files`](super::Files) carries out what it asks.
//! What it cannot bring back: a file removed or renamed in the pod meanwhile (its path no
//! longer names it), or one this machine removed (its path is forgotten then); those fail as
//! the pod's `open` fails.

use std::collections::HashMap;

/// A file stream's number: [`Files`](super::Files) counts them up from 1 as it opens them.
pub(super) type Generation = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
struct OpenFile {
    /// `None` once this machine removed it: it can no longer be opened again.
    path: Option<String>,
    write: bool,
    generation: Generation,
    /// The agent's handle, on the stream of `generation`.
    remote: u64,
}

/// What to do with a handle the kernel used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Use {
    /// Send the operation with the agent's handle `remote`: it is the current stream's.
    Current(u64),
    /// The handle is an older stream's: open `path` again (for writing if `write`), tell the
    /// table ([`Handles::reopened`]), and send the operation with the new handle.
    Reopen { path: String, write: bool },
    /// The file was removed from this machine before the stream changed: it is gone.
    Gone,
    /// The kernel never had this handle (or closed it).
    Unknown,
}

/// The open files, by the handle the kernel holds.
#[derive(Debug, Default)]
pub(super) struct Handles {
    next: u64,
    open: HashMap<u64, OpenFile>,
}

impl Handles {
    /// A file opened on the stream of `generation` as the agent's handle `remote`: the handle
    /// the kernel is given for it.
    pub(super) fn opened(
        &mut self,
        path: String,
        write: bool,
        generation: Generation,
        remote: u64,
    ) -> u64 {
        self.next += 1;
        let id = self.next;
        self.open.insert(
            id,
            OpenFile {
                path: Some(path),
                write,
                generation,
                remote,
            },
        );
        id
    }

    /// How to use handle `id` on the stream of `generation`.
    pub(super) fn use_on(&self, id: u64, generation: Generation) -> Use {
        match self.open.get(&id) {
            None => Use::Unknown,
            Some(file) if file.generation == generation => Use::Current(file.remote),
            Some(OpenFile { path: None, .. }) => Use::Gone,
            Some(OpenFile {
                path: Some(path),
                write,
                ..
            }) => Use::Reopen {
                path: path.clone(),
                write: *write,
            },
        }
    }

    /// Handle `id` was opened again on the stream of `generation` as `remote`. Returns the
    /// handle to close when another use got there first (both reopened it at once), or when the
    /// kernel closed `id` meanwhile.
    pub(super) fn reopened(&mut self, id: u64, generation: Generation, remote: u64) -> Option<u64> {
        match self.open.get_mut(&id) {
            Some(file) if file.generation != generation => {
                file.generation = generation;
                file.remote = remote;
                None
            }
            _ => Some(remote),
        }
    }

    /// The kernel closed handle `id`: the agent's handle to close, if it is on the stream of
    /// `generation` (an older stream's handles went with it).
    pub(super) fn closed(&mut self, id: u64, generation: Generation) -> Option<u64> {
        self.open
            .remove(&id)
            .filter(|file| file.generation == generation)
            .map(|file| file.remote)
    }

    /// `from` was renamed to `to` on this machine: open files under it are found there now.
    pub(super) fn renamed(&mut self, from: &str, to: &str) {
        for file in self.open.values_mut() {
            if let Some(path) = &mut file.path {
                if let Some(rest) = below(path, from) {
                    *path = format!("{to}{rest}");
                }
            }
        }
    }

    /// `path` was removed on this machine: files open under that name cannot be opened again.
    pub(super) fn removed(&mut self, path: &str) {
        for file in self.open.values_mut() {
            if file.path.as_deref() == Some(path) {
                file.path = None;
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.len()
    }
}

/// What follows `dir` in `path` ("" for `dir` itself, "/rest" below it), if `path` is it or lies
/// below it.
fn below<'p>(path: &'p str, dir: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(dir)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_of_the_current_stream_is_used_as_it_is() {
        let mut h = Handles::default();
        let id = h.opened("/etc/app/config".into(), false, 1, 40);
        assert_eq!(h.use_on(id, 1), Use::Current(40));
        assert_eq!(h.closed(id, 1), Some(40));
        assert_eq!(h.use_on(id, 1), Use::Unknown);
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn a_handle_of_an_older_stream_is_opened_again_by_its_path_once() {
        let mut h = Handles::default();
        let reader = h.opened("/data/log".into(), false, 1, 7);
        let writer = h.opened("/data/out".into(), true, 1, 8);
        assert_eq!(
            h.use_on(reader, 2),
            Use::Reopen {
                path: "/data/log".into(),
                write: false
            }
        );
        assert_eq!(
            h.use_on(writer, 2),
            Use::Reopen {
                path: "/data/out".into(),
                write: true
            }
        );
        assert_eq!(h.reopened(reader, 2, 3), None);
        assert_eq!(h.use_on(reader, 2), Use::Current(3));
        // A second read that reopened at the same time: its handle is surplus.
        assert_eq!(h.reopened(reader, 2, 4), Some(4));
        assert_eq!(h.use_on(reader, 2), Use::Current(3));
        // Closing on the new stream closes the new handle; the old stream's is gone with it.
        assert_eq!(h.closed(reader, 2), Some(3));
        assert_eq!(h.closed(writer, 2), None);
        // Reopened after the kernel closed it: close what was opened.
        assert_eq!(h.reopened(writer, 2, 9), Some(9));
    }

    #[test]
    fn renames_and_removals_on_this_machine_follow_open_files() {
        let mut h = Handles::default();
        let a = h.opened("/data/dir/a".into(), false, 1, 1);
        let b = h.opened("/data/dirb".into(), false, 1, 2);
        let c = h.opened("/data/c".into(), true, 1, 3);
        h.renamed("/data/dir", "/data/moved");
        h.removed("/data/c");
        let reopen = |path: &str, write| Use::Reopen {
            path: path.into(),
            write,
        };
        assert_eq!(h.use_on(a, 2), reopen("/data/moved/a", false));
        assert_eq!(h.use_on(b, 2), reopen("/data/dirb", false), "a sibling");
        assert_eq!(h.use_on(c, 2), Use::Gone);
        // On its own stream a removed file is still read through its handle.
        assert_eq!(h.use_on(c, 1), Use::Current(3));
        h.renamed("/data/moved/a", "/data/a");
        assert_eq!(h.use_on(a, 2), reopen("/data/a", false));
    }
}
