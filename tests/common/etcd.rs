//! A real 3-member etcd cluster on loopback for one test (Debian's `etcd-server`): ephemeral
//! ports and a data dir of its own (on /dev/shm when there is one: no fsync stalls on a busy
//! disk), so tests run in parallel. Every member is a child of the test, killed by pid and
//! reaped when the cluster is dropped (and by its parent-death signal if the test process dies).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, unique, wait_until};

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

pub struct Cluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    token: String,
    extra: Vec<String>,
}

/// Whether the etcd server binary is installed (ci/test.sh installs `etcd-server`).
pub fn etcd_available() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Cluster {
    /// Starts three members and waits until the cluster commits a write.
    pub fn start() -> Cluster {
        Cluster::start_on(&[])
    }

    /// The same, the members also listening on `extra` addresses (a veth of a network
    /// namespace, for the partition test).
    pub fn start_on(extra: &[&str]) -> Cluster {
        assert!(etcd_available(), "etcd is not installed: `apt-get install etcd-server etcd-client` (ci/test.sh does)");
        let base =
            if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let dir = tempfile::Builder::new().prefix("ccci-etcd-").tempdir_in(base).unwrap();
        let members = (1..=3)
            .map(|i| Member { name: format!("m{i}"), client: free_port(), peer: free_port(), child: None })
            .collect();
        let extra = extra.iter().map(|a| a.to_string()).collect();
        let mut c = Cluster { dir, members, token: format!("ccci-test-{}", unique()), extra };
        for i in 0..3 {
            c.spawn(i, "new");
        }
        c.wait_writable(Duration::from_secs(60));
        c
    }

    fn initial_cluster(&self) -> String {
        self.members.iter().map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer)).collect::<Vec<_>>().join(",")
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let cluster = self.initial_cluster();
        let m = &self.members[i];
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name))).unwrap();
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.path().join(&m.name))
            .args(["--listen-client-urls", &self.listen(m.client)])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{}", m.client)])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{}", m.peer)])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{}", m.peer)])
            .args(["--initial-cluster", &cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: prctl in the forked child before exec, touching no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn etcd");
        self.members[i].child = Some(child);
    }

    fn listen(&self, port: u16) -> String {
        let mut urls = vec![format!("http://127.0.0.1:{port}")];
        urls.extend(self.extra.iter().map(|a| format!("http://{a}:{port}")));
        urls.join(",")
    }

    /// `http://127.0.0.1:p1,…` for `CCCI_LEASE_ENDPOINTS`.
    pub fn endpoints(&self) -> String {
        self.endpoints_at("127.0.0.1")
    }

    /// The members' client URLs on another of their addresses.
    pub fn endpoints_at(&self, addr: &str) -> String {
        self.members.iter().map(|m| format!("http://{addr}:{}", m.client)).collect::<Vec<_>>().join(",")
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// SIGKILL one member and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a killed member again on its data dir.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].child.is_none(), "member {i} is running");
        self.spawn(i, "existing");
    }

    /// Which member leads, asked of every live member (`/v3/maintenance/status`).
    pub fn leader(&self) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() {
                continue;
            }
            let Some(v) = post(m.client, "/v3/maintenance/status", "{}") else { continue };
            let leader = v["leader"].as_str().unwrap_or("");
            let me = v["header"]["member_id"].as_str().unwrap_or("");
            if !leader.is_empty() && leader == me {
                return Some(i);
            }
        }
        None
    }

    /// A write the cluster committed: it has a leader and a quorum.
    pub fn writable(&self) -> bool {
        self.members.iter().filter(|m| m.child.is_some()).any(|m| {
            post(m.client, "/v3/kv/put", r#"{"key":"cHJvYmU=","value":"eA=="}"#)
                .is_some_and(|v| v.get("header").is_some())
        })
    }

    pub fn wait_writable(&self, within: Duration) {
        wait_until("the etcd cluster to commit a write", within, || self.writable());
    }

    /// The key `key` as the cluster has it: `(create_revision, value, lease)`, or `None`.
    pub fn get(&self, key: &str) -> Option<(u64, String, i64)> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = format!(r#"{{"key":"{}"}}"#, b64.encode(key));
        for m in self.members.iter().filter(|m| m.child.is_some()) {
            let Some(v) = post(m.client, "/v3/kv/range", &body) else { continue };
            if v.get("header").is_none() {
                continue;
            }
            let kv = v["kvs"].get(0)?;
            let rev = kv["create_revision"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
            let value = String::from_utf8(b64.decode(kv["value"].as_str().unwrap_or("")).unwrap_or_default())
                .unwrap_or_default();
            let lease = kv["lease"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
            return Some((rev, value, lease));
        }
        None
    }

    /// Whether the key exists, when the cluster can say (`None`: no member answered).
    pub fn exists(&self, key: &str) -> Option<bool> {
        use base64::Engine as _;
        let body = format!(r#"{{"key":"{}"}}"#, base64::engine::general_purpose::STANDARD.encode(key));
        for m in self.members.iter().filter(|m| m.child.is_some()) {
            if let Some(v) = post(m.client, "/v3/kv/range", &body)
                && v.get("header").is_some()
            {
                return Some(v.get("kvs").is_some_and(|k| k.as_array().is_some_and(|a| !a.is_empty())));
            }
        }
        None
    }

    /// The remaining TTL of a lease (`/v3/lease/timetolive`), when the cluster answers.
    pub fn ttl_left(&self, lease: i64) -> Option<i64> {
        let body = format!(r#"{{"ID":"{lease}"}}"#);
        self.members.iter().filter(|m| m.child.is_some()).find_map(|m| {
            let v = post(m.client, "/v3/lease/timetolive", &body)?;
            v.get("header")?;
            Some(v["TTL"].as_str().and_then(|s| s.parse().ok()).unwrap_or(-1))
        })
    }

    pub fn log_of(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.members[i].name))).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A one-shot HTTP/1.0 POST to a member's gateway (no chunking with 1.0), bounded at 3 s.
fn post(port: u16, path: &str, body: &str) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(3))).ok()?;
    let req = format!(
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let end = Instant::now() + Duration::from_secs(3);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < end {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return None,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let (_, body) = text.split_once("\r\n\r\n")?;
    serde_json::from_str(body.trim()).ok()
}
