//! A small blocking client of etcd's JSON gateway (`POST /v3/...` on every member's client
//! port), behind the same sync facade as the Engine API client: one tokio *current-thread*
//! runtime per [`Gateway`], driven only inside a call's `block_on`, hyper's HTTP/1 client, and
//! every call bounded by a [`Deadline`] that may also watch the run's lifetime.
//!
//! **Members.** The endpoints are tried in turn, starting with the one that answered last: a
//! refused connection, an attempt that takes longer than [`ATTEMPT`], or an answer that another
//! member may not give (`no leader`, a server-side timeout) moves on to the next. Every request
//! carries the gRPC metadata `hasleader=true` (`Grpc-Metadata-hasleader` through the gateway),
//! so a member cut off from the leader fails at once instead of after etcd's own request
//! timeout (7 s measured), and a watch on it is cancelled when it loses its leader instead of
//! going silent. Any other answer is the cluster's: it is returned, never retried elsewhere.
//!
//! Reads are linearizable (the gateway's default; `serializable` is never set), so an answer
//! about a lease key is the cluster's state at some instant during the call.

use std::future::Future;
use std::pin::pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{Either, select};
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use super::wire::{GrpcError, Streamed};
use crate::lifetime::{Deadline, Stop};

/// The longest one member gets to answer one request before the next member is asked. etcd
/// commits in milliseconds; a new leader is elected within about 2 s of losing the old one
/// (election timeout 1 s, randomised), and a member without a leader fails fast (`hasleader`).
pub const ATTEMPT: Duration = Duration::from_secs(2);

/// One member's client URL (`http://host:port`). TLS is not spoken (see docs/operations.md).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// `http://host:port` or `host:port`; `https`, user info and paths are refused.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let t = text.trim();
        if t.starts_with("https://") {
            return Err("https is not supported: ccci speaks plain HTTP to etcd (keep its client port on a private network or loopback)".into());
        }
        let rest = t.strip_prefix("http://").unwrap_or(t);
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains("://") {
            return Err("must be http://host:port".into());
        }
        if rest.contains('@') || rest.contains('/') || rest.contains('?') {
            return Err("must be http://host:port, without user info or a path".into());
        }
        let (host, port) = rest.rsplit_once(':').ok_or("must name a port (http://host:port)")?;
        let port: u16 = port.parse().map_err(|_| format!("port {port:?} is not a number from 1 to 65535"))?;
        let host_ok = !host.is_empty()
            && (host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                || (host.starts_with('[') && host.ends_with(']')));
        if !host_ok || port == 0 {
            return Err("must be http://host:port with a host name or an IP address".into());
        }
        Ok(Endpoint { host: host.to_string(), port })
    }

    fn uri(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.port)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Clone, Error)]
pub enum GatewayError {
    /// No member gave the cluster's answer in time: every member's failure, in words.
    #[error("no etcd member answered {path} ({})", .tried.join("; "))]
    Unavailable { path: String, tried: Vec<String> },
    /// The cluster answered with an error.
    #[error("etcd refused {path}: {} (gRPC code {})", .error.message, .error.code)]
    Refused { path: String, error: GrpcError },
    /// An answer that could not be read (a gateway of another version, or not etcd at all).
    #[error("cannot read the answer of {endpoint} to {path}: {why}")]
    Decode { path: String, endpoint: String, why: String },
    /// A signal, the deadline or a skipped teardown step abandoned the call.
    #[error("the etcd call {path} was abandoned ({stop:?})")]
    Cancelled { path: String, stop: Option<Stop> },
}

impl GatewayError {
    /// The cluster said so (as opposed to: nobody could be asked).
    pub fn refused(&self) -> Option<&GrpcError> {
        match self {
            GatewayError::Refused { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// What one member's answer means.
enum Answer<T> {
    Ok(T),
    /// Ask another member.
    Elsewhere(String),
    Refused(GrpcError),
    Bad(String),
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The client. Cheap to create (no I/O until the first call); one per thread that calls it (a
/// current-thread runtime is driven by one caller at a time).
pub struct Gateway {
    endpoints: Vec<Endpoint>,
    preferred: AtomicUsize,
    runtime: OnceLock<tokio::runtime::Runtime>,
    client: OnceLock<HttpClient>,
}

impl Gateway {
    pub fn new(endpoints: &[Endpoint]) -> Gateway {
        Gateway {
            endpoints: endpoints.to_vec(),
            preferred: AtomicUsize::new(0),
            runtime: OnceLock::new(),
            client: OnceLock::new(),
        }
    }

    /// A client of the same members for another thread, starting with the member this one
    /// talks to.
    pub fn fork(&self) -> Gateway {
        let g = Gateway::new(&self.endpoints);
        g.preferred.store(self.preferred.load(Ordering::Relaxed), Ordering::Relaxed);
        g
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// `http://a:1,http://b:2` for messages.
    pub fn describe(&self) -> String {
        self.endpoints.iter().map(Endpoint::to_string).collect::<Vec<_>>().join(",")
    }

    /// A unary call: `POST path` with `req` as JSON, the answer read as `Resp`.
    pub fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
        until: Deadline<'_>,
    ) -> Result<Resp, GatewayError> {
        self.exchange(path, req, until, |status, body| {
            if status == StatusCode::OK {
                return match serde_json::from_slice(body) {
                    Ok(v) => Answer::Ok(v),
                    Err(e) => Answer::Bad(e.to_string()),
                };
            }
            error_answer(status, body)
        })
    }

    /// The first answer of a streaming call whose request is one message (a keepalive).
    pub fn call_stream<Req: Serialize, Resp: DeserializeOwned + Default>(
        &self,
        path: &str,
        req: &Req,
        until: Deadline<'_>,
    ) -> Result<Resp, GatewayError> {
        self.exchange(path, req, until, |status, body| {
            if status != StatusCode::OK {
                return error_answer(status, body);
            }
            let first = body.split(|b| *b == b'\n').find(|l| !l.iter().all(u8::is_ascii_whitespace));
            let Some(line) = first else { return Answer::Elsewhere("the stream ended without an answer".into()) };
            match serde_json::from_slice::<Streamed<Resp>>(line) {
                Ok(Streamed { result: Some(r), .. }) => Answer::Ok(r),
                Ok(Streamed { error: Some(e), .. }) => match GrpcError::from_value(&e) {
                    Some(g) if g.elsewhere_maybe() => Answer::Elsewhere(g.message),
                    Some(g) => Answer::Refused(g),
                    None => Answer::Bad(format!("an error without a code: {e}")),
                },
                Ok(_) => Answer::Bad("neither a result nor an error".into()),
                Err(e) => Answer::Bad(e.to_string()),
            }
        })
    }

    fn exchange<Req: Serialize, T>(
        &self,
        path: &str,
        req: &Req,
        until: Deadline<'_>,
        read: impl Fn(StatusCode, &[u8]) -> Answer<T>,
    ) -> Result<T, GatewayError> {
        let body = Bytes::from(serde_json::to_vec(req).unwrap_or_default());
        let n = self.endpoints.len().max(1);
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut tried = Vec::new();
        for i in (0..n).map(|k| (first + k) % n) {
            let Some(ep) = self.endpoints.get(i) else { break };
            if let Some(stop) = until.stopped() {
                return Err(GatewayError::Cancelled { path: path.to_string(), stop });
            }
            if until.expired() {
                tried.push("the call's time ran out".into());
                break;
            }
            let cap = until.instant().min(crate::lifetime::instant_after(ATTEMPT));
            match self.post(ep, path, body.clone(), until, cap) {
                Ok((status, bytes)) => match read(status, &bytes) {
                    Answer::Ok(v) => {
                        self.preferred.store(i, Ordering::Relaxed);
                        return Ok(v);
                    }
                    Answer::Elsewhere(why) => tried.push(format!("{ep}: {why}")),
                    Answer::Refused(error) => {
                        self.preferred.store(i, Ordering::Relaxed);
                        return Err(GatewayError::Refused { path: path.to_string(), error });
                    }
                    Answer::Bad(why) => {
                        return Err(GatewayError::Decode { path: path.to_string(), endpoint: ep.to_string(), why });
                    }
                },
                Err(Attempt::Stopped(stop)) => return Err(GatewayError::Cancelled { path: path.to_string(), stop }),
                Err(Attempt::Failed(why)) => tried.push(format!("{ep}: {why}")),
            }
        }
        Err(GatewayError::Unavailable { path: path.to_string(), tried })
    }

    /// One request to one member, bounded by `cap` (and abandoned when `until` says stop).
    fn post(
        &self,
        ep: &Endpoint,
        path: &str,
        body: Bytes,
        until: Deadline<'_>,
        cap: Instant,
    ) -> Result<(StatusCode, Bytes), Attempt> {
        let rt = self.runtime().map_err(|e| Attempt::Failed(format!("cannot start the client runtime: {e}")))?;
        let client = self.client();
        let req = request(ep, path, body).map_err(Attempt::Failed)?;
        let given = cap.saturating_duration_since(Instant::now());
        rt.block_on(async {
            let fut = async {
                let resp = client.request(req).await.map_err(|e| describe_hyper(&e))?;
                let status = resp.status();
                let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
                Ok::<_, String>((status, bytes))
            };
            match bounded(fut, until, cap).await {
                Bounded::Done(r) => r.map_err(Attempt::Failed),
                Bounded::Stopped(stop) => Err(Attempt::Stopped(stop)),
                Bounded::TimedOut => Err(Attempt::Failed(format!("no answer within {}", crate::clock::human(given)))),
            }
        })
    }

    /// Streams the answers of a watch request to `on_result` until it returns false, the
    /// stream ends, `stop` fires, or `until` passes. Returns why it ended, in words. Tries the
    /// members in turn until one accepts the stream.
    pub fn watch<Req: Serialize>(
        &self,
        req: &Req,
        stop: &mut tokio::sync::oneshot::Receiver<()>,
        mut on_line: impl FnMut(&[u8]) -> bool,
    ) -> String {
        let path = "/v3/watch";
        let Ok(rt) = self.runtime() else { return "cannot start the client runtime".into() };
        let client = self.client();
        let body = Bytes::from(serde_json::to_vec(req).unwrap_or_default());
        let n = self.endpoints.len().max(1);
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut tried = Vec::new();
        for i in (0..n).map(|k| (first + k) % n) {
            let Some(ep) = self.endpoints.get(i) else { break };
            let req = match request(ep, path, body.clone()) {
                Ok(r) => r,
                Err(e) => return e,
            };
            let ended = rt.block_on(async {
                let connect = pin!(tokio::time::timeout(ATTEMPT, client.request(req)));
                let resp = match select(connect, &mut *stop).await {
                    Either::Left((Ok(Ok(resp)), _)) => resp,
                    Either::Left((Ok(Err(e)), _)) => return Err(describe_hyper(&e)),
                    Either::Left((Err(_), _)) => return Err("no answer within 2s".to_string()),
                    Either::Right(_) => return Ok("stopped".to_string()),
                };
                if resp.status() != StatusCode::OK {
                    let status = resp.status();
                    let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    return Err(match GrpcError::from_body(&body) {
                        Some(g) => g.message,
                        None => format!("HTTP {status}"),
                    });
                }
                self.preferred.store(i, Ordering::Relaxed);
                let mut body = resp.into_body();
                let mut buf: Vec<u8> = Vec::new();
                loop {
                    let frame = pin!(body.frame());
                    let frame = match select(frame, &mut *stop).await {
                        Either::Left((Some(Ok(f)), _)) => f,
                        Either::Left((Some(Err(e)), _)) => return Ok(format!("the stream broke: {e}")),
                        Either::Left((None, _)) => return Ok("the stream ended".to_string()),
                        Either::Right(_) => return Ok("stopped".to_string()),
                    };
                    let Ok(data) = frame.into_data() else { continue };
                    buf.extend_from_slice(&data);
                    while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=nl).collect();
                        if line.iter().all(u8::is_ascii_whitespace) {
                            continue;
                        }
                        if !on_line(&line) {
                            return Ok("done".to_string());
                        }
                    }
                }
            });
            match ended {
                Ok(why) => return why,
                Err(why) => tried.push(format!("{ep}: {why}")),
            }
            if stop.try_recv().is_ok() {
                return "stopped".to_string();
            }
        }
        format!("no member accepted the watch ({})", tried.join("; "))
    }

    fn runtime(&self) -> std::io::Result<&tokio::runtime::Runtime> {
        if let Some(rt) = self.runtime.get() {
            return Ok(rt);
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(self.runtime.get_or_init(|| rt))
    }

    fn client(&self) -> &HttpClient {
        self.client.get_or_init(|| {
            let mut http = HttpConnector::new();
            http.set_nodelay(true);
            http.set_connect_timeout(Some(ATTEMPT));
            Client::builder(TokioExecutor::new()).build(http)
        })
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("endpoints", &self.describe()).finish()
    }
}

enum Attempt {
    Failed(String),
    Stopped(Option<Stop>),
}

fn request(ep: &Endpoint, path: &str, body: Bytes) -> Result<hyper::Request<Full<Bytes>>, String> {
    hyper::Request::post(ep.uri(path))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        // gRPC metadata through the gateway: fail at once on a member without a leader.
        .header("Grpc-Metadata-hasleader", "true")
        .body(Full::new(body))
        .map_err(|e| format!("cannot build the request: {e}"))
}

/// A non-200 answer: the cluster's error, or a member that may be alone in its trouble.
fn error_answer<T>(status: StatusCode, body: &[u8]) -> Answer<T> {
    match GrpcError::from_body(body) {
        Some(g) if g.elsewhere_maybe() => Answer::Elsewhere(g.message),
        Some(g) => Answer::Refused(g),
        None if status.is_server_error() => Answer::Elsewhere(format!("HTTP {status}")),
        None => Answer::Bad(format!("HTTP {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)]))),
    }
}

/// hyper's error with its cause (`connection refused`), which its own text leaves out.
fn describe_hyper(e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error as _;
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

enum Bounded<T> {
    Done(T),
    Stopped(Option<Stop>),
    TimedOut,
}

/// Awaits `fut` until `cap`, re-checking `until`'s cancel source every tick. Dropping the
/// future (on a timeout or a stop) closes its connection.
async fn bounded<T>(fut: impl Future<Output = T>, until: Deadline<'_>, cap: Instant) -> Bounded<T> {
    let mut fut = pin!(fut);
    loop {
        if let Some(stop) = until.stopped() {
            return Bounded::Stopped(stop);
        }
        if Instant::now() >= cap {
            return Bounded::TimedOut;
        }
        let next = until.next_check().min(cap);
        let tick = pin!(tokio::time::sleep_until(tokio::time::Instant::from_std(next)));
        if let Either::Left((v, _)) = select(fut.as_mut(), tick).await {
            return Bounded::Done(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_plain_http_host_and_port() {
        let ok = |t: &str| Endpoint::parse(t).unwrap().to_string();
        assert_eq!(ok("http://127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(ok("etcd-1.lan:2379/"), "http://etcd-1.lan:2379");
        assert_eq!(ok("[::1]:2379"), "http://[::1]:2379");
        for (bad, why) in [
            ("https://e:2379", "https"),
            ("http://u:p@e:2379", "user info"),
            ("http://e:2379/v3", "path"),
            ("http://e", "port"),
            ("e:0", "host name"),
            ("e:99999", "1 to 65535"),
            ("ftp://e:1", "http://host:port"),
            ("a b:1", "host name"),
        ] {
            let e = Endpoint::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_dead_member_is_skipped_and_nobody_answering_names_each() {
        // Two ports nobody listens on: both refuse, and the error says so for each.
        let dead: Vec<Endpoint> = (0..2)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                Endpoint { host: "127.0.0.1".into(), port: l.local_addr().unwrap().port() }
            })
            .collect();
        let g = Gateway::new(&dead);
        let r: Result<serde_json::Value, _> =
            g.call("/v3/kv/range", &serde_json::json!({}), Deadline::after(Duration::from_secs(5)));
        match r {
            Err(GatewayError::Unavailable { tried, .. }) => {
                assert_eq!(tried.len(), 2, "{tried:?}");
                assert!(tried.iter().all(|t| t.contains("refused")), "{tried:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_stop_abandons_the_call() {
        // A listener that accepts and never answers: only the stop can end the call early.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ep = Endpoint { host: "127.0.0.1".into(), port: l.local_addr().unwrap().port() };
        let g = Gateway::new(&[ep]);
        let flag = || true;
        let r: Result<serde_json::Value, _> =
            g.call("/v3/kv/range", &serde_json::json!({}), Deadline::after(Duration::from_secs(30)).or_when(&flag));
        assert!(matches!(r, Err(GatewayError::Cancelled { .. })), "{r:?}");
    }
}
