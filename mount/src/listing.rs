//! Directory listings, one per open directory.
//!
//! `opendir` fetches the whole listing (one `ReadDir`), and the kernel's `readdir`s read it by
//! offset: entry `i` (`.` and `..` first) has offset `i + 1`, the offset the kernel asks for
//! next after it. Keeping the listing per open directory makes a directory read in several
//! parts consistent, whatever changes in the pod meanwhile, as a directory stream must be.
//!
//! Plain code, no I/O.

use std::collections::HashMap;

use tether_proto::files::DirEntry;

/// One slot of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot<'l> {
    /// `.`
    Dot,
    /// `..`
    DotDot,
    /// A name in the directory.
    Entry(&'l DirEntry),
}

impl Slot<'_> {
    /// The name listed.
    pub(crate) fn name(&self) -> &str {
        match self {
            Slot::Dot => ".",
            Slot::DotDot => "..",
            Slot::Entry(entry) => &entry.name,
        }
    }
}

/// A directory's entries as read at `opendir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listing {
    entries: Vec<DirEntry>,
}

impl Listing {
    /// The listing of `entries` (without `.` and `..`, as the agent sends them).
    pub(crate) fn new(entries: Vec<DirEntry>) -> Self {
        Self { entries }
    }

    /// The slots from `offset` on (0: from the start), each with its own offset: the one the
    /// kernel asks for to continue after it.
    pub(crate) fn starting_at(&self, offset: u64) -> impl Iterator<Item = (u64, Slot<'_>)> {
        let dots = [Slot::Dot, Slot::DotDot].into_iter();
        let slots = dots.chain(self.entries.iter().map(Slot::Entry));
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        (1u64..).zip(slots).skip(skip)
    }
}

/// The listings of the open directories, by handle.
#[derive(Debug, Default)]
pub(crate) struct Listings {
    open: HashMap<u64, Listing>,
    next: u64,
}

impl Listings {
    /// Keeps `listing` for a directory being opened; the handle for the kernel.
    pub(crate) fn insert(&mut self, listing: Listing) -> u64 {
        self.next += 1;
        self.open.insert(self.next, listing);
        self.next
    }

    /// The listing of handle `fh`.
    pub(crate) fn get(&self, fh: u64) -> Option<&Listing> {
        self.open.get(&fh)
    }

    /// The directory was closed.
    pub(crate) fn remove(&mut self, fh: u64) {
        self.open.remove(&fh);
    }

    /// How many directories are open.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_proto::files::{FileAttr, FileKind, Timestamp};

    fn entry(name: &str) -> DirEntry {
        DirEntry {
            name: name.to_owned(),
            attr: FileAttr {
                kind: FileKind::File,
                size: 0,
                perm: 0o644,
                nlink: 1,
                uid: 0,
                gid: 0,
                atime: Timestamp::default(),
                mtime: Timestamp::default(),
                ctime: Timestamp::default(),
                blocks: 0,
            },
        }
    }

    fn names(listing: &Listing, offset: u64) -> Vec<(u64, String)> {
        listing
            .starting_at(offset)
            .map(|(next, slot)| (next, slot.name().to_owned()))
            .collect()
    }

    #[test]
    fn a_listing_starts_with_the_dots_and_counts_offsets_from_one() {
        let listing = Listing::new(vec![entry("a"), entry("b")]);
        let all = [
            (1, ".".to_owned()),
            (2, "..".to_owned()),
            (3, "a".to_owned()),
            (4, "b".to_owned()),
        ];
        assert_eq!(names(&listing, 0), all);
        assert_eq!(names(&listing, 2), all[2..]);
        assert_eq!(names(&listing, 3), all[3..]);
        assert!(names(&listing, 4).is_empty());
        assert!(names(&listing, u64::MAX).is_empty());
    }

    #[test]
    fn a_read_in_parts_continues_where_it_stopped() {
        let listing = Listing::new((0..10).map(|i| entry(&format!("f{i}"))).collect());
        // The kernel reads three at a time, each time from the offset of the last one it got.
        let mut offset = 0;
        let mut got = Vec::new();
        loop {
            let part: Vec<_> = listing.starting_at(offset).take(3).collect();
            let Some((last, _)) = part.last() else { break };
            offset = *last;
            got.extend(part.iter().map(|(_, slot)| slot.name().to_owned()));
        }
        assert_eq!(got.len(), 12);
        assert_eq!(got[..3], [".", "..", "f0"]);
        assert_eq!(got[11], "f9");
    }

    #[test]
    fn an_empty_directory_has_the_dots() {
        let listing = Listing::new(Vec::new());
        assert_eq!(
            names(&listing, 0),
            [(1, ".".to_owned()), (2, "..".to_owned())]
        );
    }

    #[test]
    fn listings_are_kept_by_handle_until_released() {
        let mut listings = Listings::default();
        let a = listings.insert(Listing::new(vec![entry("a")]));
        let b = listings.insert(Listing::new(Vec::new()));
        assert_ne!(a, b);
        assert_eq!(listings.get(a).map(|l| l.starting_at(0).count()), Some(3));
        listings.remove(a);
        assert!(listings.get(a).is_none());
        assert_eq!(listings.len(), 1);
    }
}
