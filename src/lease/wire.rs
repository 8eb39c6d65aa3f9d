//! The JSON of etcd's gRPC gateway (`/v3/...`, etcd 3.4 and later), as far as the lease needs
//! it. The gateway is a translation of the gRPC API: keys and values are base64, 64-bit numbers
//! are JSON strings, and a field at its default value (a `false`, a `0`, an empty list, the
//! `PUT` event type) is left out — so every field here defaults.
//!
//! Errors come in two shapes: a unary call answers a non-200 status with
//! `{"error": "...", "message": "...", "code": 14}`; a streaming call (keepalive, watch) answers
//! `{"error": {"grpc_code": 14, "http_code": 503, "message": "...", "http_status": "..."}}`.
//! [`GrpcError::from_body`] reads both.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A base64 byte string, as the gateway writes keys and values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct B64(pub Vec<u8>);

impl B64 {
    pub fn of(s: &str) -> B64 {
        B64(s.as_bytes().to_vec())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl Serialize for B64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<B64, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s.as_bytes()).map(B64).map_err(serde::de::Error::custom)
    }
}

/// An int64 the gateway writes as a string (and accepts as one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct I64(pub i64);

impl Serialize for I64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for I64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<I64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum N {
            S(String),
            I(i64),
            U(u64),
        }
        match N::deserialize(d)? {
            N::S(s) => s.parse().map(I64).map_err(serde::de::Error::custom),
            N::I(i) => Ok(I64(i)),
            N::U(u) => i64::try_from(u).map(I64).map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Header {
    pub revision: I64,
    pub member_id: Option<String>,
    pub raft_term: I64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GrantReq {
    #[serde(rename = "TTL")]
    pub ttl: I64,
    #[serde(rename = "ID")]
    pub id: I64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GrantResp {
    pub header: Header,
    #[serde(rename = "ID")]
    pub id: I64,
    #[serde(rename = "TTL")]
    pub ttl: I64,
    /// Set when the server refused (e.g. too many leases).
    pub error: Option<String>,
}

/// The body of `/v3/lease/keepalive` and `/v3/lease/revoke`.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseIdReq {
    #[serde(rename = "ID")]
    pub id: I64,
}

/// One keepalive answer. `TTL` is left out (0) when the lease no longer exists.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct KeepAliveResp {
    pub header: Header,
    #[serde(rename = "ID")]
    pub id: I64,
    #[serde(rename = "TTL")]
    pub ttl: I64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Compare {
    pub key: B64,
    /// `CREATE`: compare the key's create revision (0 when it does not exist).
    pub target: &'static str,
    pub result: &'static str,
    pub create_revision: I64,
}

impl Compare {
    /// `create_revision(key) == rev` (`rev` 0: the key does not exist).
    pub fn created_at(key: &str, rev: i64) -> Compare {
        Compare { key: B64::of(key), target: "CREATE", result: "EQUAL", create_revision: I64(rev) }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PutReq {
    pub key: B64,
    pub value: B64,
    pub lease: I64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RangeReq {
    pub key: B64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range_end: Option<B64>,
}

impl RangeReq {
    pub fn key(key: &str) -> RangeReq {
        RangeReq { key: B64::of(key), range_end: None }
    }

    /// Every key that starts with `prefix` (the range end is the prefix with its last byte
    /// incremented, as etcd's `WithPrefix` makes it).
    pub fn prefix(prefix: &str) -> RangeReq {
        let mut end = prefix.as_bytes().to_vec();
        while let Some(last) = end.pop() {
            if last < 0xff {
                end.push(last + 1);
                break;
            }
        }
        RangeReq { key: B64::of(prefix), range_end: Some(B64(if end.is_empty() { vec![0] } else { end })) }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestOp {
    RequestPut(PutReq),
    RequestRange(RangeReq),
}

#[derive(Debug, Clone, Serialize)]
pub struct TxnReq {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Kv {
    pub key: B64,
    pub create_revision: I64,
    pub mod_revision: I64,
    pub version: I64,
    pub value: B64,
    pub lease: I64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RangeResp {
    pub header: Header,
    pub kvs: Vec<Kv>,
    pub count: I64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ResponseOp {
    pub response_range: Option<RangeResp>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TxnResp {
    pub header: Header,
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

impl TxnResp {
    /// The key-values of the `n`th answer when it is a range.
    pub fn range(&self, n: usize) -> &[Kv] {
        self.responses.get(n).and_then(|r| r.response_range.as_ref()).map_or(&[], |r| r.kvs.as_slice())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WatchCreate {
    pub key: B64,
    pub start_revision: I64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WatchReq {
    pub create_request: WatchCreate,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WatchEvent {
    /// `DELETE`, or absent for a `PUT` (the enum's default).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub kv: Kv,
}

impl WatchEvent {
    pub fn is_delete(&self) -> bool {
        self.kind.as_deref() == Some("DELETE")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WatchResult {
    pub header: Header,
    pub created: bool,
    pub canceled: bool,
    pub compact_revision: I64,
    pub cancel_reason: Option<String>,
    pub events: Vec<WatchEvent>,
}

/// One line of a streaming answer: a result, or the stream's error.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Streamed<T> {
    pub result: Option<T>,
    pub error: Option<serde_json::Value>,
}

/// An error etcd answered with: its gRPC code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcError {
    pub code: i64,
    pub message: String,
}

/// gRPC codes the lease tells apart.
pub mod code {
    /// A call the server gave up on (`context deadline exceeded`).
    pub const UNKNOWN: i64 = 2;
    pub const DEADLINE_EXCEEDED: i64 = 4;
    /// `requested lease not found`.
    pub const NOT_FOUND: i64 = 5;
    /// `no leader`, `request timed out`, a member shutting down.
    pub const UNAVAILABLE: i64 = 14;
}

impl GrpcError {
    /// Either error shape (unary or streaming), from a body or a `Streamed::error`.
    pub fn from_value(v: &serde_json::Value) -> Option<GrpcError> {
        let inner = v.get("error").unwrap_or(v);
        if let Some(code) = inner.get("grpc_code").and_then(serde_json::Value::as_i64) {
            let message = inner.get("message").and_then(serde_json::Value::as_str).unwrap_or("").to_string();
            return Some(GrpcError { code, message });
        }
        let code = v.get("code").and_then(serde_json::Value::as_i64)?;
        let message =
            v.get("message").or_else(|| v.get("error")).and_then(serde_json::Value::as_str).unwrap_or("").to_string();
        Some(GrpcError { code, message })
    }

    pub fn from_body(body: &[u8]) -> Option<GrpcError> {
        serde_json::from_slice::<serde_json::Value>(body).ok().as_ref().and_then(GrpcError::from_value)
    }

    /// Whether another member may answer where this one could not: no leader, a timeout on the
    /// server, a member going away. Everything else is the cluster's answer.
    pub fn elsewhere_maybe(&self) -> bool {
        match self.code {
            code::UNAVAILABLE | code::DEADLINE_EXCEEDED => true,
            code::UNKNOWN => self.message.contains("deadline exceeded") || self.message.contains("timed out"),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Bodies as etcd 3.4.23's gateway wrote them on this machine (`curl -X POST .../v3/...`).
    const GRANT: &str = r#"{"header":{"cluster_id":"12530975408400865131","member_id":"6865075341327271345","revision":"1","raft_term":"2"},"ID":"410287346710214149","TTL":"5"}"#;
    const TXN_WON: &str = r#"{"header":{"cluster_id":"12530975408400865131","member_id":"6865075341327271345","revision":"2","raft_term":"2"},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"2"}}}]}"#;
    const TXN_LOST: &str = r#"{"header":{"cluster_id":"12530975408400865131","member_id":"6865075341327271345","revision":"2","raft_term":"2"},"responses":[{"response_range":{"header":{"revision":"2"},"kvs":[{"key":"Y2NjaS9hcHBzL3g=","create_revision":"2","mod_revision":"2","version":"1","value":"eyJob3N0IjoiYSJ9","lease":"410287346710214151"}],"count":"1"}}]}"#;
    const KEEPALIVE: &str = r#"{"result":{"header":{"cluster_id":"12530975408400865131","member_id":"6865075341327271345","revision":"2","raft_term":"2"},"ID":"410287346710214151","TTL":"5"}}"#;
    const KEEPALIVE_GONE: &str = r#"{"result":{"header":{"cluster_id":"12530975408400865131","member_id":"6865075341327271345","revision":"3","raft_term":"2"},"ID":"410287346710214151"}}"#;
    const WATCH_DELETE: &str = r#"{"result":{"header":{"cluster_id":"12530975408400865131","member_id":"6865075341327271345","revision":"5","raft_term":"2"},"events":[{"type":"DELETE","kv":{"key":"Y2NjaS9hcHBzL3k=","mod_revision":"5"}}]}}"#;
    const UNARY_NO_LEADER: &str = r#"{"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14}"#;
    const STREAM_NO_LEADER: &str = r#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#;
    const NOT_FOUND: &str = r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#;
    const SERVER_TIMEOUT: &str =
        r#"{"error":"context deadline exceeded","message":"context deadline exceeded","code":2}"#;

    #[test]
    fn reads_what_the_gateway_writes() {
        let g: GrantResp = serde_json::from_str(GRANT).unwrap();
        assert_eq!((g.id, g.ttl, g.header.revision), (I64(410287346710214149), I64(5), I64(1)));
        let won: TxnResp = serde_json::from_str(TXN_WON).unwrap();
        assert!(won.succeeded && won.range(0).is_empty());
        let lost: TxnResp = serde_json::from_str(TXN_LOST).unwrap();
        assert!(!lost.succeeded, "a false `succeeded` is left out");
        let kv = &lost.range(0)[0];
        assert_eq!(
            (kv.key.text().as_str(), kv.create_revision, kv.value.text().as_str()),
            ("ccci/apps/x", I64(2), r#"{"host":"a"}"#)
        );
        let ka: Streamed<KeepAliveResp> = serde_json::from_str(KEEPALIVE).unwrap();
        assert_eq!(ka.result.unwrap().ttl, I64(5));
        let gone: Streamed<KeepAliveResp> = serde_json::from_str(KEEPALIVE_GONE).unwrap();
        assert_eq!(gone.result.unwrap().ttl, I64(0), "a lease that is gone answers without a TTL");
        let w: Streamed<WatchResult> = serde_json::from_str(WATCH_DELETE).unwrap();
        let w = w.result.unwrap();
        assert!(w.events[0].is_delete() && w.events[0].kv.key.text() == "ccci/apps/y");
        let put: WatchEvent = serde_json::from_str(r#"{"kv":{"key":"eA=="}}"#).unwrap();
        assert!(!put.is_delete(), "PUT is the enum's default and left out");
    }

    #[test]
    fn both_error_shapes_and_what_may_work_elsewhere() {
        for (body, code, elsewhere) in [
            (UNARY_NO_LEADER, code::UNAVAILABLE, true),
            (STREAM_NO_LEADER, code::UNAVAILABLE, true),
            (NOT_FOUND, code::NOT_FOUND, false),
            (SERVER_TIMEOUT, code::UNKNOWN, true),
        ] {
            let e = GrpcError::from_body(body.as_bytes()).unwrap_or_else(|| panic!("{body}"));
            assert_eq!((e.code, e.elsewhere_maybe()), (code, elsewhere), "{body}");
            assert!(e.message.starts_with("etcdserver") || e.message.contains("deadline"), "{e:?}");
        }
        assert_eq!(GrpcError::from_body(b"not json"), None);
        let s: Streamed<KeepAliveResp> = serde_json::from_str(STREAM_NO_LEADER).unwrap();
        assert!(s.result.is_none() && GrpcError::from_value(s.error.as_ref().unwrap()).is_some());
    }

    #[test]
    fn writes_what_the_gateway_reads() {
        let txn = TxnReq {
            compare: vec![Compare::created_at("/ccci/apps/a", 0)],
            success: vec![RequestOp::RequestPut(PutReq { key: B64::of("k"), value: B64::of("v"), lease: I64(7) })],
            failure: vec![RequestOp::RequestRange(RangeReq::key("k"))],
        };
        assert_eq!(
            serde_json::to_string(&txn).unwrap(),
            r#"{"compare":[{"key":"L2NjY2kvYXBwcy9h","target":"CREATE","result":"EQUAL","create_revision":"0"}],"success":[{"request_put":{"key":"aw==","value":"dg==","lease":"7"}}],"failure":[{"request_range":{"key":"aw=="}}]}"#
        );
        assert_eq!(RangeReq::prefix("/a/").range_end, Some(B64::of("/a0")));
        assert_eq!(RangeReq::prefix("a\u{7f}").range_end, Some(B64(vec![b'a', 0x80])));
        let i: I64 = serde_json::from_str("12").unwrap();
        assert_eq!(i, I64(12));
    }
}
