//! Where the audit lines go: the manager's stdout (its tracing log is on stderr, so stdout holds
//! audit lines only), a file (appended), or nowhere. [`AuditLog`] is the cheap handle every
//! part of the manager records with; one writer task (`audit_writer`) writes the lines in order.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::SystemTime;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::warn;

use super::{event, Event, Record};

/// Lines waiting for the writer; beyond it a line is dropped (and counted in a warning) rather
/// than holding up a session.
pub const QUEUE: usize = 4096;

/// Where the audit log is written (`--audit-log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// `-`: the manager's stdout.
    Stdout,
    /// A file, appended to (e.g. on an emptyDir a log shipper reads).
    File(PathBuf),
    /// `off`: not written.
    Off,
}

impl FromStr for AuditTarget {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "-" => AuditTarget::Stdout,
            "off" | "" => AuditTarget::Off,
            path => AuditTarget::File(PathBuf::from(path)),
        })
    }
}

/// Why the audit log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The file could not be opened for appending.
    #[error("cannot open the audit log {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Records audit events; cloned freely. A disabled log records nothing.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: Option<mpsc::Sender<Event>>,
}

impl AuditLog {
    /// Opens `target` and starts the writer task (in the current tokio runtime).
    pub async fn start(target: &AuditTarget) -> Result<AuditLog, SinkError> {
        let out: Box<dyn AsyncWrite + Send + Unpin> = match target {
            AuditTarget::Off => return Ok(AuditLog::off()),
            AuditTarget::Stdout => Box::new(tokio::io::stdout()),
            AuditTarget::File(path) => Box::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await
                    .map_err(|source| SinkError::Open {
                        path: path.clone(),
                        source,
                    })?,
            ),
        };
        let (log, events_rx) = AuditLog::channel();
        tokio::spawn(audit_writer(out, events_rx));
        Ok(log)
    }

    /// A log that records nothing.
    pub fn off() -> AuditLog {
        AuditLog { tx: None }
    }

    /// A log whose events come out of the receiver (for tests, or a writer of one's own).
    pub fn channel() -> (AuditLog, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (AuditLog { tx: Some(tx) }, rx)
    }

    /// Records `record` as completed now, with a new audit id.
    pub fn record(&self, record: Record) {
        let Some(tx) = &self.tx else { return };
        let event = event(record, &uuid::Uuid::new_v4().to_string(), SystemTime::now());
        if let Err(mpsc::error::TrySendError::Full(event)) = tx.try_send(event) {
            warn!(audit_id = %event.audit_id, action = ?event.annotations.get("tether.dev/action"), "Audit log full: a line was dropped");
        }
    }
}

/// Writes each event as one JSON line, flushed, until every [`AuditLog`] is gone.
async fn audit_writer(
    mut out: Box<dyn AsyncWrite + Send + Unpin>,
    mut events_rx: mpsc::Receiver<Event>,
) {
    while let Some(event) = events_rx.recv().await {
        // Plain structs of strings and maps: serializing cannot fail.
        let mut line = serde_json::to_vec(&event).expect("an audit event serializes");
        line.push(b'\n');
        let written = async {
            out.write_all(&line).await?;
            out.flush().await
        };
        if let Err(error) = written.await {
            warn!(%error, audit_id = %event.audit_id, "Cannot write the audit log");
        }
    }
}
