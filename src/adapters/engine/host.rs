//! Where dockerd listens: `DOCKER_HOST`, as the docker CLI reads it, for the two transports ccci
//! supports (a unix socket, plain tcp).

use std::fmt;
use std::path::PathBuf;

use super::error::EngineError;

/// The socket the docker CLI and dockerd use when `DOCKER_HOST` is unset.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// dockerd's conventional plain-tcp port, used when `tcp://host` names none.
const DEFAULT_TCP_PORT: u16 = 2375;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// `unix:///path/to/docker.sock` (the default).
    Unix(PathBuf),
    /// `tcp://host:port`, without TLS.
    Tcp(String),
}

impl Host {
    /// Reads `DOCKER_HOST` (and refuses `DOCKER_TLS_VERIFY`, which this client cannot honour).
    pub fn from_env() -> Result<Host, EngineError> {
        let host = std::env::var("DOCKER_HOST").ok();
        let tls = std::env::var("DOCKER_TLS_VERIFY").ok();
        Host::from_vars(host.as_deref(), tls.as_deref())
    }

    /// [`Host::from_env`] on given values of `DOCKER_HOST` and `DOCKER_TLS_VERIFY`.
    pub fn from_vars(docker_host: Option<&str>, tls_verify: Option<&str>) -> Result<Host, EngineError> {
        if tls_verify.is_some_and(|v| !v.is_empty()) {
            return Err(EngineError::Config {
                host: docker_host.unwrap_or("").to_string(),
                why: "DOCKER_TLS_VERIFY is set, but ccci reads dockerd over a unix socket or plain tcp only".into(),
            });
        }
        Host::parse(docker_host)
    }

    /// Parses a `DOCKER_HOST` value; unset or empty means the default unix socket.
    pub fn parse(value: Option<&str>) -> Result<Host, EngineError> {
        let value = value.map(str::trim).unwrap_or("");
        if value.is_empty() {
            return Ok(Host::Unix(PathBuf::from(DEFAULT_SOCKET)));
        }
        let bad = |why: &str| EngineError::Config { host: value.to_string(), why: why.to_string() };
        if let Some(path) = value.strip_prefix("unix://") {
            if path.is_empty() {
                return Ok(Host::Unix(PathBuf::from(DEFAULT_SOCKET)));
            }
            if !path.starts_with('/') {
                return Err(bad("a unix socket path must be absolute (unix:///path)"));
            }
            return Ok(Host::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = value.strip_prefix("tcp://") {
            // The CLI accepts a trailing slash and ignores a path; ccci does the same.
            let authority = rest.split('/').next().unwrap_or("");
            if authority.is_empty() {
                return Err(bad("tcp:// needs a host (tcp://host:port)"));
            }
            // `[::1]:2375` or `[::1]`: the port follows the bracket; otherwise the last colon.
            let port = match authority.rsplit_once(']') {
                Some((_, rest)) => rest.strip_prefix(':'),
                None => authority.rsplit_once(':').map(|(_, p)| p),
            };
            if let Some(port) = port {
                if port.parse::<u16>().is_err() {
                    return Err(bad("the tcp port is not a number"));
                }
                return Ok(Host::Tcp(authority.to_string()));
            }
            return Ok(Host::Tcp(format!("{authority}:{DEFAULT_TCP_PORT}")));
        }
        let scheme = value.split_once("://").map_or(value, |(s, _)| s);
        Err(bad(&format!(
            "unsupported scheme `{scheme}`: ccci reads dockerd over unix:// or tcp:// (no ssh, npipe, fd or TLS)"
        )))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Unix(p) => write!(f, "unix://{}", p.display()),
            Host::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(v: Option<&str>) -> Host {
        Host::parse(v).unwrap()
    }

    #[test]
    fn unset_and_empty_mean_the_default_socket() {
        let default = Host::Unix(PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(ok(None), default);
        assert_eq!(ok(Some("")), default);
        assert_eq!(ok(Some("  ")), default);
        assert_eq!(ok(Some("unix://")), default);
        assert_eq!(ok(None).to_string(), "unix:///var/run/docker.sock");
    }

    #[test]
    fn unix_and_tcp_are_honoured() {
        assert_eq!(ok(Some("unix:///run/user/0/docker.sock")), Host::Unix("/run/user/0/docker.sock".into()));
        assert_eq!(ok(Some("tcp://127.0.0.1:2375")), Host::Tcp("127.0.0.1:2375".into()));
        assert_eq!(ok(Some("tcp://dockerd.lan:12375/")), Host::Tcp("dockerd.lan:12375".into()));
        assert_eq!(ok(Some("tcp://localhost")), Host::Tcp("localhost:2375".into()));
        assert_eq!(ok(Some("tcp://[::1]:2375")), Host::Tcp("[::1]:2375".into()));
        assert_eq!(ok(Some("tcp://[::1]")), Host::Tcp("[::1]:2375".into()));
        assert_eq!(ok(Some("tcp://127.0.0.1:2375")).to_string(), "tcp://127.0.0.1:2375");
    }

    #[test]
    fn other_schemes_and_malformed_values_are_config_errors() {
        for v in [
            "ssh://me@host",
            "npipe:////./pipe/docker_engine",
            "fd://",
            "/var/run/docker.sock",
            "tcp://",
            "tcp://h:x",
            "unix://relative.sock",
        ] {
            match Host::parse(Some(v)) {
                Err(e @ EngineError::Config { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(v.trim()), "{msg}");
                    assert!(!e.is_infra(), "a bad DOCKER_HOST is the host's configuration, not a flake: {msg}");
                }
                other => panic!("{v}: {other:?}"),
            }
        }
        let e = Host::parse(Some("ssh://me@host")).unwrap_err().to_string();
        assert!(e.contains("unsupported scheme `ssh`"), "{e}");
    }
}
