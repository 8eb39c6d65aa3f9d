//! The HTTP floor for a plain `http://` URL without curl: one GET over a TCP socket, the status
//! line read, the connection closed. What curl did for these URLs (`curl -sS -o /dev/null -w
//! '%{http_code}' --max-time 10`, no redirects followed), without a process per look.
//!
//! Only the simple case: `http://host[:port][/path]`, no user info, and no proxy variable in
//! ccci's environment (curl would honour one). Anything else — `https://` (TLS with SNI and a
//! verified certificate), a proxy — still goes to curl.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// An `http://` URL split for a request line and a Host header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PlainUrl {
    /// `host` or `host:port` as written (the Host header).
    pub authority: String,
    /// What to connect to (`host:80` when no port is written).
    pub connect: String,
    /// `/path?query` (`/` when empty).
    pub path: String,
}

/// The URL, when it is a plain one this module can GET itself.
pub(super) fn plain(url: &str) -> Option<PlainUrl> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') || authority.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return None;
    }
    let path = path.split('#').next().unwrap_or("");
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let path = if path.is_empty() || path.starts_with('?') { format!("/{path}") } else { path.to_string() };
    // `[::1]:8080`, `[::1]`, `host:8080`, `host`.
    let has_port = match authority.rsplit_once(']') {
        Some((_, after)) => after.starts_with(':'),
        None => authority.contains(':'),
    };
    let connect = if has_port { authority.to_string() } else { format!("{authority}:80") };
    Some(PlainUrl { authority: authority.to_string(), connect, path })
}

/// Whether ccci's environment names a proxy (curl would send the request through it).
pub(super) fn proxy_configured() -> bool {
    let vars = std::iter::once(crate::env_vars::HTTP_PROXY).chain(crate::env_vars::PROXY_VARS.iter().copied());
    vars.filter(|v| !v.eq_ignore_ascii_case("no_proxy")).any(|v| std::env::var(v).is_ok_and(|x| !x.trim().is_empty()))
}

/// One address's connect: the next address (IPv4 after IPv6) gets its turn within the GET's time.
const CONNECT: Duration = Duration::from_secs(5);
/// `set_*_timeout` refuses zero (it would mean "block"): the least a spent budget becomes.
const MIN_SOCKET_TIMEOUT: Duration = Duration::from_millis(1);
/// Reads are sliced this finely so a stop is seen within it.
const READ_SLICE: Duration = Duration::from_millis(100);

/// GETs the URL and returns the status code, or why there is none. Bounded by `max` in all;
/// `stop` is checked every 100 ms (a cancel abandons the request).
pub(super) fn get_status(url: &PlainUrl, max: Duration, stop: &dyn Fn() -> bool) -> Result<u16, String> {
    let end = Instant::now() + max;
    let addrs: Vec<_> =
        url.connect.to_socket_addrs().map_err(|e| format!("could not resolve {}: {e}", url.authority))?.collect();
    let mut last = format!("could not resolve {}", url.authority);
    let mut stream = None;
    for a in addrs {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&a, left.min(CONNECT)) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("failed to connect to {}: {e}", url.authority),
        }
    }
    let mut s = stream.ok_or(last)?;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ccci\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path, url.authority
    );
    s.set_write_timeout(Some(end.saturating_duration_since(Instant::now()).max(MIN_SOCKET_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    s.write_all(req.as_bytes()).map_err(|e| format!("sending the request: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        if let Some(code) = status_of(&head)? {
            return Ok(code);
        }
        if stop() {
            return Err("stopped".into());
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no answer within {}", crate::clock::human(max)));
        }
        s.set_read_timeout(Some(left.min(READ_SLICE))).map_err(|e| e.to_string())?;
        match s.read(&mut buf) {
            Ok(0) => return Err("the connection closed before a status line".into()),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            // A signal delivered to this thread (SIGCHLD of a child ccci reaps elsewhere) interrupts
            // the read without meaning anything about the server: look again.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
        if head.len() > 8192 {
            return Err("no status line in the first 8 KiB".into());
        }
    }
}

/// The status code of a complete status line (`HTTP/1.1 200 OK\r\n`), `None` while incomplete.
fn status_of(head: &[u8]) -> Result<Option<u16>, String> {
    let Some(end) = head.windows(2).position(|w| w == b"\r\n").or_else(|| head.iter().position(|b| *b == b'\n')) else {
        return Ok(None);
    };
    let line = String::from_utf8_lossy(&head[..end]);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().and_then(|c| c.parse::<u16>().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") && (100..600).contains(&code) => Ok(Some(code)),
        _ => Err(format!("not an HTTP status line: {:?}", line.chars().take(80).collect::<String>())),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn plain_urls_and_what_is_left_to_curl() {
        let p = plain("http://127.0.0.1:8080/health?x=1").unwrap();
        assert_eq!(
            (p.authority.as_str(), p.connect.as_str(), p.path.as_str()),
            ("127.0.0.1:8080", "127.0.0.1:8080", "/health?x=1")
        );
        let p = plain("http://app.example.org").unwrap();
        assert_eq!((p.connect.as_str(), p.path.as_str()), ("app.example.org:80", "/"));
        assert_eq!(plain("http://h?q").unwrap().path, "/?q");
        assert_eq!(plain("http://h/p#frag").unwrap().path, "/p");
        assert_eq!(plain("http://[::1]:81/").unwrap().connect, "[::1]:81");
        assert_eq!(plain("http://[::1]/").unwrap().connect, "[::1]:80");
        for curl in ["https://h/", "http://user:pw@h/", "http://", "http://h/a b", "ftp://h/"] {
            assert_eq!(plain(curl), None, "{curl}");
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 302 Found\r\nLocation: /x\r\n"), Ok(Some(302)));
        assert_eq!(status_of(b"HTTP/1.0 200 OK\n"), Ok(Some(200)));
        assert_eq!(status_of(b"HTTP/1.1 20"), Ok(None));
        assert!(status_of(b"SSH-2.0-OpenSSH\r\n").is_err());
    }

    /// A one-shot server: answers `reply` to the first connection, and hands back the request.
    fn serve(reply: &'static [u8]) -> (String, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/ready?probe=1", l.local_addr().unwrap());
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            let _ = s.write_all(reply);
            String::from_utf8_lossy(&req).into_owned()
        });
        (url, t)
    }

    #[test]
    fn gets_the_status_of_a_real_server() {
        let (url, t) = serve(b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\n\r\n");
        let p = plain(&url).unwrap();
        assert_eq!(get_status(&p, Duration::from_secs(5), &|| false), Ok(418));
        let req = t.join().unwrap();
        assert!(req.starts_with("GET /ready?probe=1 HTTP/1.1\r\n"), "{req}");
        assert!(req.contains(&format!("\r\nHost: {}\r\n", p.authority)), "{req}");
    }

    #[test]
    fn refused_silent_and_stopped() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let refused = plain(&format!("http://127.0.0.1:{port}/")).unwrap();
        let e = get_status(&refused, Duration::from_secs(2), &|| false).unwrap_err();
        assert!(e.starts_with("failed to connect to 127.0.0.1:"), "{e}");
        // Accepts and never answers: bounded by `max`, or by the stop.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let silent = plain(&format!("http://{}/", l.local_addr().unwrap())).unwrap();
        let e = get_status(&silent, Duration::from_millis(300), &|| false).unwrap_err();
        assert!(e.starts_with("no answer within"), "{e}");
        let t = Instant::now();
        assert_eq!(
            get_status(&silent, Duration::from_secs(30), &|| t.elapsed() > Duration::from_millis(150)),
            Err("stopped".into())
        );
        drop(l);
    }
}
