//! What can go wrong talking to dockerd, sorted by what a caller does about it.
//!
//! Every variant but [`EngineError::Config`] and [`EngineError::Cancelled`] means "dockerd is
//! unreachable, erroring or too slow": the run cannot judge the recipe, so a later phase maps it
//! to the `infra` verdict ([`EngineError::is_infra`]). A 404 on an inspect-by-id is not an error
//! at all: those calls answer `Ok(None)`.

use std::time::Duration;

use thiserror::Error;

use crate::lifetime::Stop;

#[derive(Debug, Error)]
pub enum EngineError {
    /// `DOCKER_HOST` names something this client cannot use.
    #[error("DOCKER_HOST={host}: {why}")]
    Config { host: String, why: String },
    /// No connection could be made (no socket, refused, unknown host).
    #[error("cannot reach dockerd at {host} for {endpoint}: {why}")]
    Connect { host: String, endpoint: String, why: String },
    /// dockerd answered with an error status (its message is kept as it sent it).
    #[error("dockerd answered {endpoint} with {status}: {message}")]
    Daemon { endpoint: String, status: u16, message: String },
    /// No complete answer within the time the caller gave.
    #[error("dockerd at {host} did not answer {endpoint} within {}", crate::clock::human(*.after))]
    Timeout { host: String, endpoint: String, after: Duration },
    /// The run was cancelled (or the teardown step skipped) while the call was in flight.
    #[error("{endpoint} abandoned: {}", stop.map_or("the caller stopped waiting".to_string(), |s| format!("{s:?}")))]
    Cancelled { endpoint: String, stop: Option<Stop> },
    /// The connection broke after it was made (dockerd restarted, a proxy cut it, a stream ended).
    #[error("the connection to dockerd at {host} broke during {endpoint}: {why}")]
    Broken { host: String, endpoint: String, why: String },
    /// dockerd answered something this client cannot read (a model that drifted, bad JSON).
    #[error("cannot read dockerd's answer to {endpoint}: {why}")]
    Decode { endpoint: String, why: String },
}

impl EngineError {
    /// Whether the failure is dockerd's (unreachable, erroring, timed out, unreadable): the
    /// `infra` verdict. False for a bad `DOCKER_HOST` (the host's configuration) and for a
    /// cancellation (the run's own stop, reported as such).
    pub fn is_infra(&self) -> bool {
        !matches!(self, EngineError::Config { .. } | EngineError::Cancelled { .. })
    }

    /// The request this error is about (`GET /services?filters=…`), when there was one.
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            EngineError::Config { .. } => None,
            EngineError::Connect { endpoint, .. }
            | EngineError::Daemon { endpoint, .. }
            | EngineError::Timeout { endpoint, .. }
            | EngineError::Cancelled { endpoint, .. }
            | EngineError::Broken { endpoint, .. }
            | EngineError::Decode { endpoint, .. } => Some(endpoint),
        }
    }

    /// Sorts a bollard error of one request. Connection failures are told apart from a broken
    /// connection by hyper's `is_connect`; bollard's own socket check comes first.
    pub(crate) fn from_bollard(e: bollard::errors::Error, host: &str, endpoint: &str) -> EngineError {
        use bollard::errors::Error as B;
        let host = host.to_string();
        let endpoint = endpoint.to_string();
        match e {
            B::DockerResponseServerError { status_code, message } => {
                EngineError::Daemon { endpoint, status: status_code, message: message.trim().to_string() }
            }
            B::SocketNotFoundError(path) => {
                EngineError::Connect { host, endpoint, why: format!("no socket at {path}") }
            }
            B::HyperLegacyError { err } if err.is_connect() => {
                EngineError::Connect { host, endpoint, why: chain(&err) }
            }
            B::JsonDataError { message, column, .. } => {
                EngineError::Decode { endpoint, why: format!("{message} (at column {column})") }
            }
            e @ (B::JsonSerdeError { .. } | B::StrParseError { .. } | B::APIVersionParseError {}) => {
                EngineError::Decode { endpoint, why: chain(&e) }
            }
            // bollard's own whole-client timeout is set far beyond any caller's; should it fire
            // anyway, it is still a timeout.
            B::RequestTimeoutError => EngineError::Timeout { host, endpoint, after: Duration::ZERO },
            other => EngineError::Broken { host, endpoint, why: chain(&other) },
        }
    }
}

/// An error and its sources, `a: b: c` (hyper hides the OS error two levels down).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EP: &str = r#"GET /services?filters={"label":["com.docker.stack.namespace=x"]}"#;

    #[test]
    fn a_daemon_error_names_the_endpoint_and_dockerds_message() {
        let e = EngineError::from_bollard(
            bollard::errors::Error::DockerResponseServerError {
                status_code: 503,
                message: "This node is not a swarm manager.\n".into(),
            },
            "unix:///var/run/docker.sock",
            EP,
        );
        assert!(matches!(e, EngineError::Daemon { status: 503, .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            r#"dockerd answered GET /services?filters={"label":["com.docker.stack.namespace=x"]} with 503: This node is not a swarm manager."#
        );
        assert!(e.is_infra());
        assert_eq!(e.endpoint(), Some(EP));
    }

    #[test]
    fn a_missing_socket_is_a_connection_failure_and_a_timeout_is_not() {
        let e = EngineError::from_bollard(
            bollard::errors::Error::SocketNotFoundError("/nowhere.sock".into()),
            "unix:///nowhere.sock",
            "GET /version",
        );
        assert!(matches!(e, EngineError::Connect { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "cannot reach dockerd at unix:///nowhere.sock for GET /version: no socket at /nowhere.sock"
        );
        let t = EngineError::Timeout {
            host: "unix:///var/run/docker.sock".into(),
            endpoint: "GET /version".into(),
            after: Duration::from_millis(1500),
        };
        assert_eq!(t.to_string(), "dockerd at unix:///var/run/docker.sock did not answer GET /version within 1.5s");
        assert!(t.is_infra());
    }

    #[test]
    fn decode_errors_and_cancellations() {
        let json = serde_json::from_str::<u8>("\"x\"").unwrap_err();
        let e = EngineError::from_bollard(json.into(), "h", "GET /tasks");
        assert!(matches!(e, EngineError::Decode { .. }), "{e:?}");
        assert!(e.to_string().starts_with("cannot read dockerd's answer to GET /tasks: invalid type"), "{e}");
        assert!(e.is_infra());
        let c = EngineError::Cancelled {
            endpoint: "GET /tasks".into(),
            stop: Some(Stop::Cancelled(crate::exit::Cause::Term)),
        };
        assert_eq!(c.to_string(), "GET /tasks abandoned: Cancelled(Term)");
        assert!(!c.is_infra());
        let c = EngineError::Cancelled { endpoint: "GET /tasks".into(), stop: None };
        assert_eq!(c.to_string(), "GET /tasks abandoned: the caller stopped waiting");
    }

    #[test]
    fn chain_appends_hidden_sources_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e = bollard::errors::Error::IOError { err: io };
        let b = EngineError::from_bollard(e, "tcp://127.0.0.1:1", "GET /version");
        assert_eq!(
            b.to_string(),
            "the connection to dockerd at tcp://127.0.0.1:1 broke during GET /version: Connection refused"
        );
    }
}
