//! [`FlowTable`]: the flows into the cluster that are open now, with their destinations and
//! bytes, for `tether top`. The Prometheus families count flows and bytes in total; this table
//! knows each flow, and forgets it when it closes (its [`FlowHandle`] is dropped).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tether_metrics::Counter;

/// TCP or UDP, as the table shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowProtocol {
    Tcp,
    Udp,
}

/// One open flow, as `tether top` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRow {
    pub protocol: FlowProtocol,
    /// Where the flow goes in the cluster.
    pub destination: SocketAddr,
    /// The destination's name in the cluster (`hello.default.svc.cluster.local`), when the
    /// cluster's DNS knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Bytes sent into the cluster.
    pub bytes_out: u64,
    /// Bytes received from it.
    pub bytes_in: u64,
    /// How long it has been open, in milliseconds.
    pub age_ms: u64,
}

#[derive(Debug)]
struct Entry {
    protocol: FlowProtocol,
    destination: SocketAddr,
    opened: Instant,
    out: Counter,
    into: Counter,
}

/// The open flows. Shared by `Arc`.
#[derive(Debug, Default)]
pub struct FlowTable {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Entry>>>,
}

/// A flow's place in the table: its byte counters, and its removal when dropped.
#[derive(Debug)]
pub struct FlowHandle {
    table: Arc<FlowTable>,
    id: u64,
    entry: Arc<Entry>,
}

impl FlowHandle {
    /// Counts the bytes the flow sends into the cluster.
    pub fn bytes_out(&self) -> Counter {
        self.entry.out.clone()
    }

    /// Counts the bytes it receives from the cluster.
    pub fn bytes_in(&self) -> Counter {
        self.entry.into.clone()
    }
}

impl Drop for FlowHandle {
    fn drop(&mut self) {
        self.table.lock().remove(&self.id);
    }
}

impl FlowTable {
    /// Adds a flow, open until the handle is dropped.
    pub fn open(self: &Arc<Self>, protocol: FlowProtocol, destination: SocketAddr) -> FlowHandle {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(Entry {
            protocol,
            destination,
            opened: Instant::now(),
            out: Counter::default(),
            into: Counter::default(),
        });
        self.lock().insert(id, entry.clone());
        FlowHandle {
            table: self.clone(),
            id,
            entry,
        }
    }

    /// How many flows are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `limit` flows that moved the most bytes, most first (ties: the oldest first). Names
    /// are left for the caller.
    pub fn top(&self, limit: usize) -> Vec<FlowRow> {
        let now = Instant::now();
        let mut rows: Vec<(Instant, FlowRow)> = self
            .lock()
            .values()
            .map(|e| {
                let row = FlowRow {
                    protocol: e.protocol,
                    destination: e.destination,
                    name: None,
                    bytes_out: e.out.get(),
                    bytes_in: e.into.get(),
                    age_ms: u64::try_from(now.duration_since(e.opened).as_millis())
                        .unwrap_or(u64::MAX),
                };
                (e.opened, row)
            })
            .collect();
        rows.sort_by(|(a_at, a), (b_at, b)| {
            let total = |r: &FlowRow| r.bytes_in.saturating_add(r.bytes_out);
            total(b).cmp(&total(a)).then(a_at.cmp(b_at))
        });
        rows.into_iter().take(limit).map(|(_, row)| row).collect()
    }

    // Nothing panics while holding the lock; a poisoned map is still a consistent one.
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Entry>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 96, 0, 10], port))
    }

    #[test]
    fn flows_are_listed_by_bytes_and_forgotten_when_closed() {
        let table = Arc::new(FlowTable::default());
        let small = table.open(FlowProtocol::Tcp, addr(80));
        let big = table.open(FlowProtocol::Udp, addr(53));
        let quiet = table.open(FlowProtocol::Tcp, addr(443));
        small.bytes_out().inc_by(10);
        big.bytes_in().inc_by(1_000);
        big.bytes_out().inc_by(1);
        let top = table.top(2);
        let ports: Vec<u16> = top.iter().map(|r| r.destination.port()).collect();
        assert_eq!(ports, [53, 80]);
        assert_eq!((top[0].bytes_in, top[0].bytes_out), (1_000, 1));
        assert_eq!(top[0].protocol, FlowProtocol::Udp);
        assert_eq!(table.len(), 3);
        drop(big);
        drop(quiet);
        let ports: Vec<u16> = table.top(10).iter().map(|r| r.destination.port()).collect();
        assert_eq!(ports, [80]);
        drop(small);
        assert!(table.is_empty());
    }
}
