//! `tether top`: a live view of this machine's session, refreshed every second. The daemon
//! samples its counters ([`Request::Top`]); [`view`] turns samples into rates and percentiles;
//! [`ui`] draws them with ratatui. `--once` prints one view for scripts instead.

mod ui;
pub mod view;

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use tether_daemon::control::{Request, Response, TopSnapshot};

use crate::args::Output;
use crate::client::ask;
use crate::render;
use view::View;

/// How often the screen is refreshed, and how long `--once` measures rates over.
pub const REFRESH: Duration = Duration::from_secs(1);
/// The samples kept for latency percentiles: the last ten seconds.
const WINDOW: usize = 10;

/// Why there is nothing to show.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error("not connected: there is no daemon to ask (run `tether connect`)")]
    NoDaemon,
    #[error("{0}")]
    Daemon(String),
    #[error("the daemon answered something else: is it an older tether? run `tether quit` and connect again")]
    Unexpected,
}

async fn sample() -> Result<TopSnapshot, TopError> {
    match ask(Request::Top).await {
        Some(Response::Top(snapshot)) => Ok(*snapshot),
        Some(Response::Error { error }) => Err(TopError::Daemon(error)),
        Some(_) => Err(TopError::Unexpected),
        None => Err(TopError::NoDaemon),
    }
}

/// `tether top --once`: two samples [`REFRESH`] apart, printed as one view (latency
/// percentiles over all requests so far).
pub async fn once(output: Output) -> anyhow::Result<ExitCode> {
    let first = sample().await?;
    tokio::time::sleep(REFRESH).await;
    let now = sample().await?;
    let view = View::new(None, &first, &now);
    print!("{}", render::report(output, &view, ui::text)?);
    Ok(ExitCode::SUCCESS)
}

/// `tether top`: the live view until `q` (or Ctrl-C, or Esc).
pub async fn live() -> anyhow::Result<ExitCode> {
    // Fail before taking over the terminal.
    let first = sample().await?;
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || run(&runtime, first)).await??;
    Ok(ExitCode::SUCCESS)
}

fn run(runtime: &tokio::runtime::Handle, first: TopSnapshot) -> anyhow::Result<()> {
    let mut terminal = ratatui::init();
    let result = (|| {
        let mut history = VecDeque::from([first]);
        let mut error = None;
        loop {
            let view = match (history.front(), history.back()) {
                (Some(oldest), Some(now)) => {
                    let prev = history.get(history.len().saturating_sub(2)).unwrap_or(now);
                    View::new(Some(oldest), prev, now)
                }
                _ => View::default(),
            };
            terminal.draw(|frame| ui::draw(frame, &view, error.as_deref()))?;
            let next = Instant::now() + REFRESH;
            while let Some(left) = next.checked_duration_since(Instant::now()) {
                if event::poll(left)? {
                    if let Event::Key(key) = event::read()? {
                        let ctrl_c = key.modifiers.contains(KeyModifiers::CONTROL)
                            && key.code == KeyCode::Char('c');
                        let quit = matches!(key.code, KeyCode::Char('q') | KeyCode::Esc);
                        if key.kind == KeyEventKind::Press && (quit || ctrl_c) {
                            return Ok(());
                        }
                    }
                }
            }
            match runtime.block_on(sample()) {
                Ok(snapshot) => {
                    error = None;
                    // A new daemon counts from zero: start the history again.
                    if history.back().is_some_and(|b| snapshot.at_ms < b.at_ms) {
                        history.clear();
                    }
                    history.push_back(snapshot);
                    while history.len() > WINDOW + 1 {
                        history.pop_front();
                    }
                }
                Err(e) => error = Some(e.to_string()),
            }
        }
    })();
    ratatui::restore();
    result
}
