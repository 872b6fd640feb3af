//! Drawing a [`View`]: on the terminal with ratatui ([`draw`]), or as plain text ([`text`], for
//! `--once`). Both take their cells from the same functions, so they always agree.

use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};
use ratatui::Frame;

use super::view::{bytes, latency, FilesView, View};

const INTERCEPT_HEADER: [&str; 11] = [
    "INTERCEPT",
    "WORKLOAD",
    "PORT",
    "FILTER",
    "LAPTOP/s",
    "p50",
    "p99",
    "APP/s",
    "p50",
    "p99",
    "AGENTS",
];
const FLOW_HEADER: [&str; 6] = ["PROTO", "DESTINATION", "NAME", "OUT", "IN", "AGE"];

/// The lines above the tables.
fn summary(view: &View, error: Option<&str>) -> Vec<String> {
    let mut lines = Vec::new();
    if !view.connected {
        lines.push("not connected (the daemon is reconnecting, or gone)".to_owned());
    } else {
        lines.push(format!(
            "connected to {} (namespace {}) over {}",
            view.context, view.namespace, view.transport
        ));
    }
    lines.push(match &view.carrier {
        Some(c) => format!(
            "carrier  rtt {:.2} ms   loss {:.2} %   cwnd {}",
            c.rtt_ms,
            c.loss_percent,
            bytes(c.cwnd_bytes as f64)
        ),
        None => "carrier  -".to_owned(),
    });
    let t = &view.throughput;
    lines.push(format!(
        "traffic  out {}/s   in {}/s   flows {} open, {} started",
        bytes(t.to_cluster_bytes_per_s),
        bytes(t.to_workstation_bytes_per_s),
        view.flows_open,
        view.flows_started
    ));
    let hits = match view.dns.cache_hit_ratio {
        Some(r) => format!("{:.0} %", r * 100.0),
        None => "-".to_owned(),
    };
    lines.push(format!(
        "dns      {:.1} queries/s   cache hits {hits}   ({} in all)",
        view.dns.queries_per_s,
        view.dns.totals.total()
    ));
    for i in &view.intercepts {
        if let Some(f) = &i.files {
            lines.push(files_line(&i.name, f));
        }
    }
    if let Some(error) = error {
        lines.push(format!("error    {error}"));
    }
    lines
}

/// A mount's line: its operations on the pod, their latency, and the bytes they moved.
fn files_line(name: &str, f: &FilesView) -> String {
    format!(
        "files    {name}: {:.1} ops/s   p50 {}   p99 {}   read {}/s ({})   written {}/s ({})   {} errors",
        f.ops_per_s,
        latency(f.p50_ms),
        latency(f.p99_ms),
        bytes(f.read_bytes_per_s),
        bytes(f.read_bytes as f64),
        bytes(f.written_bytes_per_s),
        bytes(f.written_bytes as f64),
        f.errors
    )
}

fn intercept_rows(view: &View) -> Vec<Vec<String>> {
    view.intercepts
        .iter()
        .map(|i| {
            let linked = i.agents.len();
            let reporting = i.agents.iter().filter(|a| a.reporting).count();
            let agents = if linked == reporting {
                format!("{linked} linked")
            } else {
                format!("{linked} linked, {reporting} reporting")
            };
            let filter = if i.filter.is_empty() {
                "(all)".to_owned()
            } else {
                i.filter.clone()
            };
            // A mirror's laptop columns are its copies: per second, and how many were dropped.
            let (filter, laptop) = match &i.mirror {
                None => (
                    filter,
                    [
                        format!("{:.1}", i.laptop.requests_per_s),
                        latency(i.laptop.p50_ms),
                        latency(i.laptop.p99_ms),
                    ],
                ),
                Some(m) => (
                    format!("mirror {filter}"),
                    [
                        format!("{:.1}", m.sent_per_s),
                        format!("{} dropped", m.dropped),
                        "-".to_owned(),
                    ],
                ),
            };
            let [laptop_rate, laptop_p50, laptop_p99] = laptop;
            vec![
                i.name.clone(),
                i.workload.clone(),
                i.app_port.to_string(),
                filter,
                laptop_rate,
                laptop_p50,
                laptop_p99,
                format!("{:.1}", i.app.requests_per_s),
                latency(i.app.p50_ms),
                latency(i.app.p99_ms),
                agents,
            ]
        })
        .collect()
}

fn flow_rows(view: &View) -> Vec<Vec<String>> {
    view.flows
        .iter()
        .map(|f| {
            vec![
                format!("{:?}", f.protocol).to_lowercase(),
                f.destination.clone(),
                f.name.clone().unwrap_or_else(|| "-".to_owned()),
                bytes(f.bytes_out as f64),
                bytes(f.bytes_in as f64),
                format!("{:.0}s", f.age_s),
            ]
        })
        .collect()
}

/// One frame of the live view; it fits any terminal size (tables show the rows that fit).
pub fn draw(frame: &mut Frame, view: &View, error: Option<&str>) {
    let summary: Vec<Line> = summary(view, error).into_iter().map(Line::from).collect();
    let intercepts = intercept_rows(view);
    let [top, middle, bottom, footer] = Layout::vertical([
        Constraint::Length(summary.len() as u16),
        Constraint::Length(intercepts.len().max(1) as u16 + 3),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(summary), top);
    frame.render_widget(
        table(&INTERCEPT_HEADER, intercepts).block(Block::bordered().title(format!(
            " Intercepts (requests/s; latency over {:.0} s) ",
            view.latency_window_s
        ))),
        middle,
    );
    frame.render_widget(
        table(&FLOW_HEADER, flow_rows(view))
            .block(Block::bordered().title(" Flows (most bytes first) ")),
        bottom,
    );
    frame.render_widget(
        Line::from("q quits · refreshed every second").add_modifier(Modifier::DIM),
        footer,
    );
}

/// A table whose columns are as wide as their widest cell (the last takes what is left), so
/// that a narrow terminal cuts the last columns, not every one.
fn table<'a>(header: &'a [&'a str], rows: Vec<Vec<String>>) -> Table<'a> {
    let widths = column_widths(header, &rows);
    let mut constraints: Vec<Constraint> = widths
        .iter()
        .map(|w| Constraint::Length(u16::try_from(*w).unwrap_or(u16::MAX)))
        .collect();
    if let Some(last) = constraints.last_mut() {
        *last = Constraint::Fill(1);
    }
    let header = Row::new(header.iter().copied()).style(Style::new().add_modifier(Modifier::BOLD));
    Table::new(rows.into_iter().map(Row::new), constraints).header(header)
}

/// Each column's widest cell, header included, in characters.
fn column_widths(header: &[&str], rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    widths
}

/// The view as plain text (`tether top --once`).
pub fn text(view: &View) -> String {
    let mut out = summary(view, None).join("\n");
    out.push_str("\n\n");
    out.push_str(&columns(&INTERCEPT_HEADER, intercept_rows(view)));
    out.push('\n');
    out.push_str(&columns(&FLOW_HEADER, flow_rows(view)));
    out
}

/// Left-aligned columns, two spaces apart.
fn columns(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let widths = column_widths(header, &rows);
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use tether_daemon::flow_table::FlowProtocol;
    use tether_proto::AgentLink;

    use super::super::view::{FlowView, InterceptView, MirrorView, RouteView};
    use super::*;

    fn view() -> View {
        View {
            connected: true,
            context: "local".into(),
            namespace: "default".into(),
            transport: "udp".into(),
            interval_s: 1.0,
            latency_window_s: 10.0,
            flows_open: 1,
            flows_started: 4,
            flows: vec![FlowView {
                protocol: FlowProtocol::Tcp,
                destination: "10.96.0.20:80".into(),
                name: Some("hello.default.svc.cluster.local".into()),
                bytes_out: 100,
                bytes_in: 2048,
                age_s: 3.0,
            }],
            intercepts: vec![InterceptView {
                name: "orders".into(),
                namespace: "default".into(),
                workload: "Deployment/orders".into(),
                app_port: 8080,
                filter: "x-dev=ann".into(),
                laptop: RouteView {
                    requests: 12,
                    requests_per_s: 3.0,
                    p50_ms: Some(2.5),
                    p99_ms: Some(10.0),
                },
                app: RouteView::default(),
                agents: vec![AgentLink {
                    pod: "orders-1".into(),
                    reporting: true,
                }],
                mirror: None,
                files: None,
            }],
            ..View::default()
        }
    }

    #[test]
    fn the_screen_shows_every_number_and_fits_a_small_terminal() {
        for (width, height) in [(120, 30), (60, 12)] {
            let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
            terminal.draw(|f| draw(f, &view(), None)).unwrap();
            let screen: String = terminal
                .backend()
                .buffer()
                .content()
                .iter()
                .map(|c| c.symbol())
                .collect();
            assert!(screen.contains("connected to local"), "{screen}");
            assert!(screen.contains("orders"), "{screen}");
            if width == 120 {
                for want in ["3.0", "2.50 ms", "hello.default.svc", "2.0 KiB", "1 linked"] {
                    assert!(screen.contains(want), "{want} missing:\n{screen}");
                }
            }
        }
    }

    #[test]
    fn text_has_the_same_cells() {
        let text = text(&view());
        assert!(
            text.contains("dns      0.0 queries/s   cache hits -"),
            "{text}"
        );
        let row = text.lines().find(|l| l.starts_with("orders")).unwrap();
        let cells: Vec<&str> = row
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            cells[..5],
            ["orders", "Deployment/orders", "8080", "x-dev=ann", "3.0"]
        );
        assert!(text.contains("hello.default.svc.cluster.local"));
    }

    #[test]
    fn a_mirror_row_shows_copies_and_drops() {
        let mut view = view();
        view.intercepts[0].mirror = Some(MirrorView {
            sent: 40,
            sent_per_s: 4.0,
            dropped: 2,
        });
        let text = text(&view);
        let row = text.lines().find(|l| l.starts_with("orders")).unwrap();
        let cells: Vec<&str> = row
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(cells[3..7], ["mirror x-dev=ann", "4.0", "2 dropped", "-"]);
    }

    #[test]
    fn a_mount_has_a_line_of_its_operations() {
        let mut view = view();
        view.intercepts[0].files = Some(FilesView {
            ops: 220,
            ops_per_s: 20.0,
            p50_ms: Some(1.25),
            p99_ms: Some(12.0),
            read_bytes: 100 << 20,
            read_bytes_per_s: f64::from(10u32 << 20),
            written_bytes: 2048,
            written_bytes_per_s: 0.0,
            errors: 1,
        });
        let text = text(&view);
        let line = text
            .lines()
            .find(|l| l.starts_with("files"))
            .unwrap_or_else(|| panic!("no files line: {text}"));
        assert_eq!(
            line.trim_end(),
            "files    orders: 20.0 ops/s   p50 1.25 ms   p99 12 ms   read 10.0 MiB/s (100.0 MiB)   \
             written 0 B/s (2.0 KiB)   1 errors"
        );
    }
}
