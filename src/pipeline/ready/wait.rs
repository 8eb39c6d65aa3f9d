//! Waiting for ready: polls docker every second, runs the TCP probes and the HTTP floor, needs
//! two passes in a row, fails fast on crash loops, and stays cancellable.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::adapters::Docker;
use crate::config::ccci_yml::ReadyProbe;
use crate::lifetime::{self, Stop};
use crate::process::Cmd;

use super::judge::{Baseline, Judge, Poll, Verdict};

/// The HTTP floor: a URL (already expanded) and the statuses that count as up.
#[derive(Debug, Clone)]
pub struct HttpFloor {
    pub url: String,
    pub expect: Vec<u16>,
    pub timeout: Duration,
}

#[derive(Debug)]
pub enum NotReady {
    Failed(String),
    Stopped(Stop),
}

pub struct Readiness<'a> {
    pub docker: &'a Docker,
    pub stack: &'a str,
    pub probes: &'a [ReadyProbe],
    pub http: Option<&'a HttpFloor>,
    pub timeout: Duration,
}

/// Service versions right now (before a deploy).
pub fn baseline(docker: &Docker, stack: &str) -> Baseline {
    docker.services(stack).map(|s| Baseline::of(&s)).unwrap_or_default()
}

/// Polls the stack. Service ids are listed once and reused (a deploy does not add services
/// while we wait; a gone id makes the inspect fail and the list is refreshed), and containers
/// are inspected only when a running task has a healthcheck: fewer docker processes per poll.
struct Poller<'a> {
    docker: &'a Docker,
    stack: &'a str,
    nodes: usize,
    ids: Vec<String>,
}

impl Poller<'_> {
    fn poll(&mut self) -> Result<Poll, String> {
        let services = match self.docker.inspect_services(&self.ids) {
            Ok(s) if !s.is_empty() => s,
            _ => {
                self.ids = self.docker.service_ids(self.stack).map_err(|e| e.to_string())?;
                self.docker.inspect_services(&self.ids).map_err(|e| e.to_string())?
            }
        };
        let tasks = self.docker.tasks(&self.ids).map_err(|e| e.to_string())?;
        let checked = |t: &&serde_json::Value| {
            let test = &t["Spec"]["ContainerSpec"]["Healthcheck"]["Test"];
            test.is_array() && test[0].as_str() != Some("NONE")
        };
        let cids: Vec<String> = tasks
            .iter()
            .filter(|t| t["Status"]["State"].as_str() == Some("running"))
            .filter(checked)
            .filter_map(|t| t["Status"]["ContainerStatus"]["ContainerID"].as_str().map(str::to_string))
            .collect();
        let containers = self.docker.containers(&cids).map_err(|e| e.to_string())?;
        Ok(Poll { services, tasks, containers, nodes: self.nodes })
    }
}

fn tcp_ok(addr: &str) -> bool {
    let Ok(mut addrs) = addr.to_socket_addrs() else { return false };
    // Short, so the readiness wait stays cancellable within 100 ms; a slow connect counts as a
    // failed attempt and the next poll tries again.
    addrs.next().is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_millis(100)).is_ok())
}

/// GETs the floor URL with curl; `Ok(status)` or an explanation.
fn http_status(floor: &HttpFloor) -> Result<u16, String> {
    let mut cmd = Cmd::new("curl")
        .name("curl")
        .level(tracing::Level::DEBUG)
        .capture()
        .timeout(Duration::from_secs(15))
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"]);
    if let Some(rest) = floor.url.strip_prefix("https://") {
        // The app is not in DNS: send the request to the local proxy, with SNI and Host naming
        // the domain so the certificate is still verified against it.
        let host = rest.split(['/', ':']).next().unwrap_or("");
        cmd = cmd.arg("--resolve").arg(format!("{host}:443:127.0.0.1"));
    }
    let out = cmd.arg(floor.url.clone()).run().map_err(|e| e.to_string())?;
    let code: u16 = out.stdout.trim().parse().unwrap_or(0);
    if code == 0 {
        return Err(out.last_error_line().unwrap_or("no answer").to_string());
    }
    Ok(code)
}

impl Readiness<'_> {
    /// Waits until two polls in a row pass everything, or fails with the reason.
    pub fn wait(&self, baseline: Baseline, after_upgrade: bool) -> Result<Duration, NotReady> {
        let started = Instant::now();
        let nodes = self.docker.eligible_nodes().unwrap_or(1);
        let mut poller = Poller { docker: self.docker, stack: self.stack, nodes, ids: Vec::new() };
        let mut judge = Judge::new(baseline, after_upgrade);
        let mut passes = 0;
        let mut stable: Vec<u32> = vec![0; self.probes.len()];
        let mut swarm_ready_since: Option<Instant> = None;
        let mut last_problem = String::from("no poll finished yet");
        loop {
            if let Some(stop) = lifetime::sleep(Duration::ZERO) {
                return Err(NotReady::Stopped(stop));
            }
            let mut problems: Vec<String> = Vec::new();
            match poller.poll() {
                Err(e) => problems.push(format!("docker: {e}")),
                Ok(p) => match judge.judge(&p) {
                    Verdict::Failed(reason) => return Err(NotReady::Failed(reason)),
                    Verdict::NotReady(list) => problems.extend(list),
                    Verdict::Ready => {}
                },
            }
            if problems.is_empty() {
                swarm_ready_since.get_or_insert_with(Instant::now);
                for (i, probe) in self.probes.iter().enumerate() {
                    if tcp_ok(&probe.tcp) {
                        stable[i] += 1;
                    } else {
                        stable[i] = 0;
                        problems.push(format!("tcp {} does not accept connections", probe.tcp));
                    }
                    if stable[i] > 0 && stable[i] < probe.stable {
                        problems
                            .push(format!("tcp {} connected {}/{} times in a row", probe.tcp, stable[i], probe.stable));
                    }
                }
            } else {
                swarm_ready_since = None;
            }
            if problems.is_empty()
                && let Some(floor) = self.http
            {
                match http_status(floor) {
                    Ok(code) if floor.expect.contains(&code) => {}
                    Ok(code) => problems.push(format!(
                        "HTTP floor: GET {} answered {code} (expected {})",
                        floor.url,
                        floor.expect.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
                    )),
                    Err(e) => problems.push(format!("HTTP floor: GET {} failed: {e}", floor.url)),
                }
                if let (Some(since), false) = (swarm_ready_since, problems.is_empty())
                    && since.elapsed() >= floor.timeout
                {
                    return Err(NotReady::Failed(format!(
                        "{} (for {})",
                        problems.join("; "),
                        crate::clock::human(floor.timeout)
                    )));
                }
            }
            if problems.is_empty() {
                passes += 1;
                if passes >= 2 {
                    return Ok(started.elapsed());
                }
            } else {
                passes = 0;
                let now = problems.join("; ");
                if now != last_problem {
                    tracing::info!("not ready yet: {now}");
                }
                last_problem = now;
            }
            if started.elapsed() >= self.timeout {
                let mut reason = format!("not ready after {}: {last_problem}", crate::clock::human(self.timeout));
                if let Some(err) = &judge.last_task_error {
                    reason.push_str(&format!("; last task error: {err}"));
                }
                return Err(NotReady::Failed(reason));
            }
            if let Some(stop) = lifetime::sleep(Duration::from_secs(1)) {
                return Err(NotReady::Stopped(stop));
            }
        }
    }
}
