//! Talking to the running daemon over its unix socket: one request, one answer (after any
//! progress).

use tether_daemon::{
    control::{self, Request, Response},
    privileged::runtime_dir,
};
use tokio::net::UnixStream;

use crate::progress::Progress;

/// Sends one request to the running daemon; `None` if there is none.
pub async fn ask(req: Request) -> Option<Response> {
    ask_with(req, &|_| {}).await
}

/// Like [`ask`], printing the daemon's progress on stderr while it works.
pub async fn ask_showing_progress(req: Request) -> Option<Response> {
    let progress = Progress::stderr();
    let response = ask_with(req, &|stage| progress.step(stage)).await;
    progress.finish();
    response
}

async fn ask_with(req: Request, progress: &dyn Fn(&str)) -> Option<Response> {
    use std::os::unix::fs::MetadataExt;
    let dir = control::runtime_dir();
    let mut stream = UnixStream::connect(control::socket_path(&dir)).await.ok()?;
    // The socket is in the daemon's user's directory, so its name could be a link to another
    // service's socket: nothing is sent unless the listener is that directory's owner (the
    // daemon's user; never root).
    let owner = std::fs::symlink_metadata(runtime_dir::user_dir(&dir))
        .ok()?
        .uid();
    if stream.peer_cred().ok()?.uid() != owner {
        return None;
    }
    tether_daemon::server::roundtrip_with_progress(&mut stream, &req, progress).await
}

/// The error for a command that needs a daemon when there is none.
pub fn not_connected() -> anyhow::Error {
    anyhow::anyhow!("not connected: run `sudo tether connect` first")
}
