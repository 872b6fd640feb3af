//! The requests waiting for an answer, by id and by deadline.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// Pending requests. Ids count up from 1, skip 0 and skip ids still pending after a wrap.
#[derive(Debug)]
pub(super) struct Pending {
    by_id: HashMap<u32, (Instant, u16)>,
    by_deadline: BTreeSet<(Instant, u32)>,
    next_id: u32,
}

impl Pending {
    pub(super) fn new() -> Self {
        Self {
            by_id: HashMap::new(),
            by_deadline: BTreeSet::new(),
            next_id: 1,
        }
    }

    /// Records a request whose answer is of kind `reply_kind`; returns its id.
    pub(super) fn insert(&mut self, deadline: Instant, reply_kind: u16) -> u32 {
        let id = loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.by_id.contains_key(&id) {
                break id;
            }
        };
        self.by_id.insert(id, (deadline, reply_kind));
        self.by_deadline.insert((deadline, id));
        id
    }

    /// Forgets request `id` if it waits for an answer of kind `kind`; whether it did.
    pub(super) fn answer(&mut self, id: u32, kind: u16) -> bool {
        match self.by_id.get(&id) {
            Some(&(_, expected)) if expected == kind => self.remove(id),
            _ => false,
        }
    }

    /// Forgets request `id`; whether it was pending.
    pub(super) fn remove(&mut self, id: u32) -> bool {
        match self.by_id.remove(&id) {
            Some((deadline, _)) => {
                self.by_deadline.remove(&(deadline, id));
                true
            }
            None => false,
        }
    }

    /// The earliest deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|&(deadline, _)| deadline)
    }

    /// Forgets and returns one request whose deadline is at or before `now`.
    pub(super) fn pop_expired(&mut self, now: Instant) -> Option<u32> {
        let &(deadline, id) = self.by_deadline.first()?;
        if deadline > now {
            return None;
        }
        self.remove(id);
        Some(id)
    }

    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(super) fn clear(&mut self) {
        self.by_id.clear();
        self.by_deadline.clear();
    }
}
