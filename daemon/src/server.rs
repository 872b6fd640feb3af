//! The control socket: a unix socket in the runtime directory that only root and the user who
//! connected (`SUDO_UID`) may open. One JSON request per line, one JSON response per line.

use std::{os::unix::fs::PermissionsExt, path::Path, sync::Arc};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::watch,
};
use tracing::debug;

use crate::{
    control::{self, Request, Response},
    daemon::{DaemonError, Shared},
    intercept::Progress,
};

/// Binds the socket, refusing if a live daemon already owns it.
pub async fn bind(dir: &Path) -> Result<UnixListener, DaemonError> {
    let path = control::socket_path(dir);
    if path.exists() {
        if let Ok(mut stream) = UnixStream::connect(&path).await {
            let pid = match roundtrip(&mut stream, &Request::Status).await {
                Some(Response::Status(s)) => s.daemon_pid,
                _ => 0,
            };
            return Err(DaemonError::AlreadyRunning(pid));
        }
        // Left by a daemon that died: nobody listens.
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path).map_err(DaemonError::Socket)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(DaemonError::Socket)?;
    if let Some(uid) = std::env::var("SUDO_UID")
        .ok()
        .and_then(|u| u.parse::<u32>().ok())
    {
        let gid = std::env::var("SUDO_GID")
            .ok()
            .and_then(|g| g.parse::<u32>().ok());
        std::os::unix::fs::chown(&path, Some(uid), gid).map_err(DaemonError::Socket)?;
    }
    Ok(listener)
}

pub fn remove(dir: &Path) {
    let _ = std::fs::remove_file(control::socket_path(dir));
}

/// Serves requests until the task is aborted.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>, quit_tx: watch::Sender<bool>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        let quit_tx = quit_tx.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let request = serde_json::from_str::<Request>(&line);
                let shared = &shared;
                let quit_tx = &quit_tx;
                let answer = with_progress(&mut write, |progress| {
                    answer(shared, quit_tx, request, progress)
                })
                .await;
                let Some(response) = answer else { break };
                if send(&mut write, &response).await.is_err() {
                    break;
                }
            }
            debug!("Control client left");
        });
    }
}

/// Runs `f`, writing each stage it reports as a [`Response::Progress`] line meanwhile. `None`
/// if the client went away.
async fn with_progress<F>(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    f: impl FnOnce(Progress) -> F,
) -> Option<Response>
where
    F: std::future::Future<Output = Response>,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let work = f(Progress::new(tx));
    tokio::pin!(work);
    loop {
        tokio::select! {
            response = &mut work => {
                while let Ok(stage) = rx.try_recv() {
                    send(write, &Response::Progress { stage }).await.ok()?;
                }
                return Some(response);
            }
            Some(stage) = rx.recv() => {
                send(write, &Response::Progress { stage }).await.ok()?;
            }
        }
    }
}

async fn send(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    response: &Response,
) -> std::io::Result<()> {
    let mut out = serde_json::to_string(response).unwrap_or_default();
    out.push('\n');
    write.write_all(out.as_bytes()).await
}

async fn answer(
    shared: &Shared,
    quit_tx: &watch::Sender<bool>,
    request: Result<Request, serde_json::Error>,
    progress: Progress,
) -> Response {
    match request {
        Ok(Request::Status) | Ok(Request::Watch) => {
            let mut s = shared
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(intercepts) = shared.intercepts.get() {
                s.intercepts = intercepts.list_active();
            }
            Response::Status(Box::new(s))
        }
        Ok(Request::Intercept(req)) => match shared.intercepts.get() {
            None => not_ready(),
            Some(i) => match i.create(*req, &progress).await {
                Ok(report) => Response::Intercepted(Box::new(report)),
                Err(error) => Response::Error { error },
            },
        },
        Ok(Request::Leave { name }) => match shared.intercepts.get() {
            None => not_ready(),
            Some(i) => match i.leave(&name, &progress).await {
                Ok(left) => Response::Left(Box::new(left)),
                Err(error) => Response::Error { error },
            },
        },
        Ok(Request::AwaitApp {
            namespace,
            workload,
        }) => match shared.intercepts.get() {
            None => not_ready(),
            Some(i) => match i.await_app(&namespace, &workload, &progress).await {
                Ok(()) => Response::Ok,
                Err(error) => Response::Error { error },
            },
        },
        Ok(Request::List) => match shared.intercepts.get() {
            None => not_ready(),
            Some(i) => match i.list().await {
                Ok(list) => Response::List(Box::new(list)),
                Err(error) => Response::Error { error },
            },
        },
        Ok(Request::Quit) => {
            let _ = quit_tx.send(true);
            Response::Ok
        }
        Err(e) => Response::Error {
            error: format!("bad request: {e}"),
        },
    }
}

fn not_ready() -> Response {
    Response::Error {
        error: "the daemon is still connecting; try again in a moment".to_owned(),
    }
}

/// Sends one request and reads one response.
pub async fn roundtrip(stream: &mut UnixStream, req: &Request) -> Option<Response> {
    roundtrip_with_progress(stream, req, &|_| {}).await
}

/// Sends one request and reads its response, passing the progress lines before it to
/// `progress`.
pub async fn roundtrip_with_progress(
    stream: &mut UnixStream,
    req: &Request,
    progress: &dyn Fn(&str),
) -> Option<Response> {
    let mut line = serde_json::to_string(req).ok()?;
    line.push('\n');
    stream.write_all(line.as_bytes()).await.ok()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut answer = String::new();
        if reader.read_line(&mut answer).await.ok()? == 0 {
            return None;
        }
        match serde_json::from_str(&answer).ok()? {
            Response::Progress { stage } => progress(&stage),
            response => return Some(response),
        }
    }
}
