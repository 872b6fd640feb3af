//! `tether-testapp get URL …`: requests over one connection, for tests that check that routing
//! is decided per request (HTTP/1.1 keep-alive) or per stream (HTTP/2), not per connection.
//!
//! The tests run it inside pods (`kubectl exec deploy/client -- tether-testapp get …`) and in
//! test network namespaces. It dials once and speaks over that connection with
//! `hyper::client::conn` (no pool), so every request shares it by construction; when the server
//! closes it before the last request, `get` fails rather than dial again.
//!
//! stdout: one `STATUS FIRST-BODY-LINE` line per request, or with `--json` one array of
//! `{"status":200,"body":"<the whole body>"}`. stderr: which connection was used.

use std::{fmt, io::Write, net::SocketAddr, time::Duration};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2},
    header::{HeaderName, HeaderValue, HOST},
    Request, Response, Uri, Version,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{net::TcpStream, time::timeout};

/// Where a URL points: the address to dial and what goes on the request line.
#[derive(Debug)]
pub(crate) struct Target {
    /// The host without IPv6 brackets: an IP address or a name.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `host[:port]` as in the URL: the `Host` header.
    pub(crate) authority: String,
    /// The path and query: what the HTTP/1.1 request line carries.
    pub(crate) path: String,
}

impl Target {
    pub(crate) fn parse(url: &Uri) -> anyhow::Result<Target> {
        if url.scheme_str() != Some("http") {
            bail!("{url}: only http:// URLs");
        }
        let authority = url.authority().context("URL without a host")?;
        Ok(Target {
            host: authority.host().trim_matches(['[', ']']).to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.to_string(),
            path: url
                .path_and_query()
                .map_or_else(|| "/".to_owned(), ToString::to_string),
        })
    }
}

/// How long connecting may take, and then each request (its whole body included).
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// `http://HOST[:PORT][/PATH]`; HOST is an IP address or a name.
    url: Uri,
    /// A header every request carries, as `NAME:VALUE` (repeatable).
    #[arg(long = "header", value_name = "NAME:VALUE", value_parser = parse_header)]
    headers: Vec<Header>,
    /// HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1 keep-alive.
    #[arg(long)]
    h2: bool,
    /// How many requests to send [default: 1, or one per --each-header entry].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: Option<u32>,
    /// A header of request i is entry i modulo the list of these, as `NAME:VALUE`; an empty
    /// entry adds none (repeatable).
    #[arg(long = "each-header", value_name = "NAME:VALUE", value_parser = parse_each_header)]
    each_header: Vec<EachHeader>,
    /// Print a JSON array of `{"status":…,"body":…}` (the whole body) instead of lines.
    #[arg(long)]
    json: bool,
}

/// One `NAME:VALUE` argument, checked.
#[derive(Debug, Clone)]
pub struct Header {
    pub(crate) name: HeaderName,
    pub(crate) value: HeaderValue,
}

/// An `--each-header` entry: an empty one adds no header.
#[derive(Debug, Clone)]
pub struct EachHeader(Option<Header>);

/// Parses `NAME:VALUE` (also for `bench --header`).
pub(crate) fn parse_header(s: &str) -> Result<Header, String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not NAME:VALUE"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|e| format!("header name {name:?}: {e}"))?;
    let value =
        HeaderValue::from_str(value.trim()).map_err(|e| format!("header value {value:?}: {e}"))?;
    Ok(Header { name, value })
}

fn parse_each_header(s: &str) -> Result<EachHeader, String> {
    if s.trim().is_empty() {
        return Ok(EachHeader(None));
    }
    parse_header(s).map(|h| EachHeader(Some(h)))
}

impl GetArgs {
    /// How many requests to send.
    fn count(&self) -> usize {
        match self.repeat {
            Some(n) => n as usize,
            None => self.each_header.len().max(1),
        }
    }

    /// The headers request `i` carries besides `Host`: every `--header`, then its
    /// `--each-header` entry.
    fn headers_for(&self, i: usize) -> impl Iterator<Item = &Header> {
        let each = match self.each_header.len() {
            0 => None,
            n => self.each_header[i % n].0.as_ref(),
        };
        self.headers.iter().chain(each)
    }

    /// Request `i` to `target`.
    fn request(&self, target: &Target, i: usize) -> anyhow::Result<Request<Empty<Bytes>>> {
        let mut req = Request::new(Empty::new());
        if self.h2 {
            // HTTP/2 takes the absolute URI apart into `:scheme`, `:authority` and `:path`.
            *req.uri_mut() = Uri::builder()
                .scheme("http")
                .authority(target.authority.as_str())
                .path_and_query(target.path.as_str())
                .build()?;
            *req.version_mut() = Version::HTTP_2;
        } else {
            *req.uri_mut() = target.path.parse()?;
            req.headers_mut()
                .insert(HOST, HeaderValue::from_str(&target.authority)?);
        }
        for h in self.headers_for(i) {
            // A `Host` given on the command line replaces the URL's; other names may repeat.
            if h.name == HOST {
                req.headers_mut().insert(HOST, h.value.clone());
            } else {
                req.headers_mut().append(h.name.clone(), h.value.clone());
            }
        }
        Ok(req)
    }
}

/// Runs `get` on a single-threaded runtime and prints the answers.
pub fn run(args: GetArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the runtime")?;
    let outcome = rt.block_on(fetch(&args))?;
    let mut out = std::io::stdout().lock();
    // A JSON array is all or nothing: a test parsing it should not see a partial one.
    if args.json && outcome.error.is_none() {
        writeln!(out, "{}", json_array(&outcome.answers))?;
    } else if !args.json {
        for answer in &outcome.answers {
            writeln!(out, "{}", answer.line())?;
        }
    }
    out.flush()?;
    eprintln!("{outcome}");
    match outcome.error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What one request got back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    /// The whole body; bytes that are not UTF-8 are replaced.
    body: String,
}

impl Answer {
    /// `STATUS FIRST-BODY-LINE`, the line trimmed.
    fn line(&self) -> String {
        match self.body.lines().next().map(str::trim).unwrap_or_default() {
            "" => self.status.to_string(),
            first => format!("{} {first}", self.status),
        }
    }
}

/// `[{"status":200,"body":"…"},…]`, status first as a reader expects.
fn json_array(answers: &[Answer]) -> String {
    let items: Vec<String> = answers
        .iter()
        .map(|a| {
            format!(
                r#"{{"status":{},"body":{}}}"#,
                a.status,
                serde_json::Value::from(a.body.as_str())
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// The one connection all requests went over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Connection {
    local: SocketAddr,
    peer: SocketAddr,
    version: Version,
}

/// The result of a run that connected.
#[derive(Debug)]
struct Outcome {
    connection: Connection,
    requested: usize,
    /// In request order; fewer than `requested` when `error` is set.
    answers: Vec<Answer>,
    /// Why the run stopped before its last request.
    error: Option<anyhow::Error>,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Connection {
            local,
            peer,
            version,
        } = self.connection;
        write!(
            f,
            "{} of {} requests answered, all on one {version:?} connection {local} -> {peer}",
            self.answers.len(),
            self.requested,
        )
    }
}

/// The request half of the one connection.
enum Sender {
    Http1(http1::SendRequest<Empty<Bytes>>),
    Http2(http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    /// Sets HTTP up on `stream`; the connection's driver runs as a task that ends with it.
    async fn handshake(stream: TcpStream, h2: bool) -> hyper::Result<Sender> {
        let io = TokioIo::new(stream);
        if h2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Ok(Sender::Http2(sender))
        } else {
            let (sender, conn) = http1::handshake(io).await?;
            tokio::spawn(conn);
            Ok(Sender::Http1(sender))
        }
    }

    async fn send(&mut self, req: Request<Empty<Bytes>>) -> hyper::Result<Response<Incoming>> {
        match self {
            Sender::Http1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Sender::Http2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
        }
    }
}

/// Connects once and sends every request over that connection, one after another. An error
/// here means no connection; a failed request ends the run with [`Outcome::error`] set.
async fn fetch(args: &GetArgs) -> anyhow::Result<Outcome> {
    let target = Target::parse(&args.url)?;
    let (connection, mut sender) = timeout(TIMEOUT, async {
        let stream = connect(&target).await?;
        let connection = Connection {
            local: stream.local_addr()?,
            peer: stream.peer_addr()?,
            version: if args.h2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            },
        };
        let sender = Sender::handshake(stream, args.h2)
            .await
            .context("starting HTTP on the connection")?;
        anyhow::Ok((connection, sender))
    })
    .await
    .map_err(|_| {
        anyhow!(
            "connecting to {} timed out after {TIMEOUT:?}",
            target.authority
        )
    })??;
    let requested = args.count();
    let mut answers = Vec::with_capacity(requested);
    let mut error = None;
    for i in 0..requested {
        let which = format!("request {} of {requested}", i + 1);
        let req = args.request(&target, i).context(which.clone())?;
        let e = match timeout(TIMEOUT, exchange(&mut sender, req)).await {
            Ok(Ok(answer)) => {
                answers.push(answer);
                continue;
            }
            Ok(Err(e)) if sender.is_closed() => e.context(format!(
                "{which}: the server closed the connection (not dialling again: all requests \
                 must share one connection)"
            )),
            Ok(Err(e)) => e.context(which),
            Err(_) => anyhow!("{which} timed out after {TIMEOUT:?}"),
        };
        error = Some(e);
        break;
    }
    Ok(Outcome {
        connection,
        requested,
        answers,
        error,
    })
}

/// Resolves the host and dials its addresses in turn until one answers.
async fn connect(target: &Target) -> anyhow::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .with_context(|| format!("resolving {}", target.host))?
        .collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last = Some((addr, e)),
        }
    }
    Err(match last {
        Some((addr, e)) => {
            anyhow!(e).context(format!("connecting to {} ({addr})", target.authority))
        }
        None => anyhow!("resolving {}: no addresses", target.host),
    })
}

/// Sends one request and reads the whole answer.
async fn exchange(sender: &mut Sender, req: Request<Empty<Bytes>>) -> anyhow::Result<Answer> {
    let resp = sender.send(req).await?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .context("reading the body")?
        .to_bytes();
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[cfg(test)]
mod tests;
