//! `ccci janitor --watch`: reap an orphan the moment its run dies, not at the next sweep.
//!
//! **The kernel event: a pidfd on the lock's holder.** For every run-app lockfile, the holder's
//! pid is read from `/proc/locks` and a `pidfd_open(2)` of it is polled on a side thread; the
//! pidfd becomes readable when that process exits, which is exactly when the kernel drops its
//! flock (ccci's lock fds are close-on-exec and never shared with a child, so the holder's exit
//! *is* the release). Then the watch runs the sweep's own decision for that one domain: the
//! straggler kill of the dead run (from the run id its lockfile recorded), then
//! [`Sweeper::reap`] — the probe under the lock, the identity check, the reap, the unlink.
//!
//! Why not a blocking flock per lockfile: an exclusive one would be granted the instant the run
//! dies and so *hold the lock a new run of that domain needs* for as long as it blocks; a shared
//! one blocks a starting run's exclusive acquire the same way while it is granted, and both
//! queue behind every waiting run. A pidfd takes no lock at all: it never competes with a run,
//! and the only lock the watch ever holds is the sweep's probe. Why not inotify alone: the
//! release of a flock is no filesystem event.
//!
//! New lockfiles are noticed by inotify on the lock dir (`IN_CREATE`, `IN_MODIFY`, `IN_ATTRIB`:
//! a run writes its holder info right after it takes the lock, so a holder that was not there
//! at `IN_CREATE` is seen at the write). A holder that releases without exiting (a janitor's
//! probe) and a new run taking the lock are seen the same way. A full sweep runs at start and
//! every `--sweep-every` as the backstop (reboots, missed events, an inotify queue overflow);
//! a failed reap (dockerd restarting) is retried after [`RETRY`] and errors are logged, never
//! fatal. SIGTERM or SIGINT stops the watch between two decisions.
//!
//! A run that ends normally unlinks its lockfile (after its clean teardown) before it exits:
//! when its pidfd fires the lockfile is gone and the watch does nothing. A live run is never
//! touched: its lock is held, so there is no event, and a probe would see it held.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::mpsc::{Sender, channel};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use serde::Serialize;

use super::apply::Sweeper;
use super::plan::{self, Action, Candidate, Inventory, Stamp};
use super::sweep::{self, Settings};
use super::{inventory, stragglers};
use crate::adapters::{Abra, Docker};
use crate::app::App;
use crate::config::Host;
use crate::lock::proc_locks::HeldLocks;
use crate::lock::{self, HolderInfo};
use crate::names::{self, RunAppPattern};

/// A reap that failed (dockerd down, abra failing) is tried again after this.
pub const RETRY: Duration = Duration::from_secs(30);
/// A held lease of a dead holder is looked at again this long after its TTL: etcd revokes it
/// at the TTL, give or take its own tick.
const LAPSED_BY: Duration = Duration::from_secs(1);

/// How the watch behaves.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// Between backstop sweeps.
    pub sweep_every: Duration,
    /// The bound of one sweep (and of one reap).
    pub deadline: Duration,
    pub prune_after: Duration,
    pub kill_grace: Duration,
    /// One JSON line per decision and per sweep on stdout.
    pub json: bool,
}

enum Msg {
    /// Something changed in the lock dir (`None`: the inotify queue overflowed: look at all).
    Dir(Option<OsString>),
    /// A watched holder exited.
    Died(i32),
    Stop,
}

/// One JSON line of `--watch --json`.
#[derive(Debug, Serialize)]
struct Line<'a> {
    event: &'a str,
    at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    holder_pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<super::vocab::Act>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stragglers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ms: Option<u64>,
}

fn emit(json: bool, line: Line<'_>) {
    if json {
        use std::io::Write;
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{}", serde_json::to_string(&line).unwrap_or_default());
        let _ = o.flush();
    }
}

fn line(event: &str) -> Line<'_> {
    Line {
        event,
        at: crate::clock::rfc3339_millis(SystemTime::now()),
        domain: None,
        holder_pid: None,
        run_id: None,
        action: None,
        stragglers: None,
        summary: None,
        ms: None,
    }
}

/// Polls a pidfd of `pid` on a thread of its own and sends `Died(pid)` when it exits (at once
/// when it is already gone).
fn watch_pid(pid: i32, tx: Sender<Msg>) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let _ = tx.send(Msg::Died(pid));
        return;
    }
    // SAFETY: a fresh fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let spawned = std::thread::Builder::new().name(format!("pidfd-{pid}")).spawn(move || {
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        loop {
            // SAFETY: one valid pollfd, owned by this thread.
            let n = unsafe { libc::poll(&mut pfd, 1, -1) };
            if n > 0 || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted) {
                break;
            }
        }
        let _ = tx.send(Msg::Died(pid));
    });
    if spawned.is_err() {
        tracing::warn!("watch: cannot start a thread for pid {pid}; the next sweep covers it");
    }
}

/// Feeds lock-dir changes into the channel; returns an error when inotify cannot start.
fn watch_dir(lock_dir: &Path, tx: Sender<Msg>) -> Result<(), String> {
    let ino = Inotify::init(InitFlags::IN_CLOEXEC).map_err(|e| format!("inotify: {e}"))?;
    let mask = AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO;
    ino.add_watch(lock_dir, mask).map_err(|e| format!("inotify on {}: {e}", lock_dir.display()))?;
    std::thread::Builder::new()
        .name("inotify".into())
        .spawn(move || {
            loop {
                match ino.read_events() {
                    Ok(events) => {
                        for e in events {
                            let msg = if e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) { None } else { e.name };
                            if tx.send(Msg::Dir(msg)).is_err() {
                                return;
                            }
                        }
                    }
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        tracing::error!("watch: reading inotify events failed: {e}; relying on the backstop sweep");
                        return;
                    }
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

const STOP_BACKSTOP: Duration = Duration::from_secs(1);

/// The lifetime's stop (SIGTERM, SIGINT) as a message.
fn bridge_stop(tx: Sender<Msg>) {
    let _ = std::thread::Builder::new().name("watch-stop".into()).spawn(move || {
        let w = crate::lifetime::watch();
        loop {
            if w.stop().is_some() {
                let _ = tx.send(Msg::Stop);
                return;
            }
            // The stop arrives as an event; the timeout is only a backstop should one be missed.
            let _ = w.recv_timeout(STOP_BACKSTOP);
        }
    });
}

struct Watcher<'a> {
    host: &'a Host,
    abra: &'a Abra,
    docker: &'a Docker,
    s: &'a WatchSettings,
    pattern: RunAppPattern,
    tx: Sender<Msg>,
    /// Holder pids seen per domain, and the holder info they recorded.
    armed: BTreeMap<String, BTreeMap<i32, Option<HolderInfo>>>,
    /// Pids with a pidfd thread.
    watched: HashSet<i32>,
    /// Domains whose reap failed, with when to try again.
    retry: BTreeMap<String, Instant>,
    me: i32,
}

impl Watcher<'_> {
    fn lock_path(&self, domain: &str) -> std::path::PathBuf {
        self.host.lock_dir.join(names::lock_file_name(domain))
    }

    /// Looks at one lockfile: arms a pidfd on every holder not yet watched.
    fn arm(&mut self, domain: &str, held: &HeldLocks) {
        let path = self.lock_path(domain);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) if lock::file::unsafe_meta(&m).is_none() => m,
            _ => {
                self.armed.remove(domain);
                return;
            }
        };
        let holders: Vec<i32> = held.holders(&path, &meta).into_iter().filter(|p| *p != self.me).collect();
        if holders.is_empty() {
            return;
        }
        let info = std::fs::File::open(&path).ok().and_then(|f| HolderInfo::read_from(&f));
        let entry = self.armed.entry(domain.to_string()).or_default();
        for pid in holders {
            let recorded = info.clone().filter(|i| i.pid as i32 == pid);
            match entry.get_mut(&pid) {
                Some(slot) => {
                    if recorded.is_some() {
                        *slot = recorded;
                    }
                }
                None => {
                    tracing::debug!("watch: {domain}: held by pid {pid}; watching it");
                    let run_id = recorded.as_ref().map(|i| i.run_id.clone());
                    entry.insert(pid, recorded);
                    emit(
                        self.s.json,
                        Line {
                            domain: Some(domain),
                            holder_pid: Some(pid),
                            run_id: run_id.as_deref(),
                            ..line("watching")
                        },
                    );
                }
            }
            if self.watched.insert(pid) {
                watch_pid(pid, self.tx.clone());
            }
        }
    }

    /// Every run-app lockfile in the lock dir.
    fn arm_all(&mut self) {
        let held = HeldLocks::read();
        let names: Vec<String> = std::fs::read_dir(&self.host.lock_dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(names::domain_of_lock_file).map(str::to_string))
                    .filter(|d| self.pattern.is_run_domain(d))
                    .collect()
            })
            .unwrap_or_default();
        for d in names {
            self.arm(&d, &held);
        }
    }

    fn sweep(&mut self) {
        let settings = Settings {
            kind: super::vocab::Kind::Watch,
            dry_run: false,
            prune_after: self.s.prune_after,
            deadline: self.s.deadline,
            kill_grace: self.s.kill_grace,
        };
        let t = Instant::now();
        let report = sweep::sweep(self.host, self.abra, self.docker, &settings);
        for e in &report.errors {
            tracing::warn!("watch: sweep: {e}");
        }
        tracing::info!("{}", report.summary());
        emit(
            self.s.json,
            Line { summary: Some(report.summary()), ms: Some(t.elapsed().as_millis() as u64), ..line("sweep") },
        );
        self.arm_all();
    }

    /// The straggler kill of one dead run: the sweep's own plan, for that run id alone.
    fn stragglers(&self, run_id: &str) -> usize {
        let mut dirs: Vec<plan::RunDir> =
            inventory::run_dirs(&self.host.runs_dir, None).into_iter().filter(|d| d.run_id == run_id).collect();
        if dirs.is_empty() {
            return 0;
        }
        inventory::read_run_lock_states(&mut dirs, &HeldLocks::read());
        let (processes, live) = inventory::token_processes(&HashSet::from([run_id]));
        let inv = Inventory {
            run_dirs: dirs,
            processes,
            live,
            protected: inventory::protected_pids(),
            ..Inventory::default()
        };
        let kills: Vec<(i32, u64, String)> = plan::plan(&inv, Duration::MAX)
            .into_iter()
            .filter_map(|a| match a {
                Action::Kill { pid, start_time, run_id } => Some((pid, start_time, run_id)),
                _ => None,
            })
            .collect();
        if kills.is_empty() {
            return 0;
        }
        stragglers::stop(&kills, self.s.kill_grace).len()
    }

    /// A holder of `domain`'s lock is gone: the sweep's decision for that domain.
    fn released(&mut self, domain: &str, pid: Option<i32>, info: Option<HolderInfo>) {
        let t = Instant::now();
        let path = self.lock_path(domain);
        if std::fs::symlink_metadata(&path).is_err() {
            // The run unlinked it after its clean teardown (or a janitor reaped it): nothing to do.
            tracing::debug!("watch: {domain}: released and unlinked by its holder: a normal end");
            self.retry.remove(domain);
            return;
        }
        let held = HeldLocks::read();
        if let Ok(meta) = std::fs::symlink_metadata(&path)
            && held.holders(&path, &meta).iter().any(|p| *p != self.me)
        {
            // A new run (or another janitor's probe) holds it now: watch that one.
            self.arm(domain, &held);
            return;
        }
        let run_id = info.as_ref().map(|i| i.run_id.clone()).filter(|r| !r.is_empty() && r != "janitor");
        tracing::info!(
            "watch: {domain}: its holder{} died; the sweep's decision: stragglers, then probe and reap",
            match (pid, &run_id) {
                (Some(p), Some(r)) => format!(" (pid {p}, run {r})"),
                (Some(p), None) => format!(" (pid {p})"),
                _ => String::new(),
            }
        );
        emit(
            self.s.json,
            Line { domain: Some(domain), holder_pid: pid, run_id: run_id.as_deref(), ..line("released") },
        );
        let killed = run_id.as_deref().map_or(0, |r| self.stragglers(r));
        let lease = self.host.lease.as_ref().map(crate::lease::Lease::new);
        let sweeper = Sweeper {
            abra: self.abra,
            docker: self.docker,
            lock_dir: &self.host.lock_dir,
            deadline_at: crate::lifetime::instant_after(self.s.deadline),
            lease: lease.as_ref(),
            machine: &self.host.machine,
        };
        // The lockfile exists (its holder just died), and that is the proof of ownership; if
        // it is gone (the run ended cleanly and unlinked it), an unstamped candidate is left.
        let candidate = Candidate {
            app: App::new(domain, &self.host.server_dir()),
            stamp: Stamp::None,
            sources: BTreeSet::from([super::vocab::Source::Watch]),
            lease_token: None,
        };
        let entry = sweeper.reap(&candidate);
        if entry.action == super::vocab::Act::Failed {
            tracing::warn!("watch: {domain}: the reap failed; trying again in {}", crate::clock::human(RETRY));
            self.retry.insert(domain.to_string(), crate::lifetime::instant_after(RETRY));
        } else if let (Some(super::report::LeaseSeen::Held), Some(l)) = (entry.lease, &self.host.lease) {
            // A dead holder's app lease outlives it by up to its TTL: look again once it lapsed
            // (a new holder, if one took the domain meanwhile, is left alone then too).
            let again = l.ttl + LAPSED_BY;
            tracing::info!(
                "watch: {domain}: its app lease is still held; looking again in {}",
                crate::clock::human(again)
            );
            self.retry.insert(domain.to_string(), crate::lifetime::instant_after(again));
        } else {
            self.retry.remove(domain);
        }
        if entry.action == super::vocab::Act::Left {
            self.arm(domain, &HeldLocks::read());
        }
        emit(
            self.s.json,
            Line {
                domain: Some(domain),
                holder_pid: pid,
                run_id: run_id.as_deref(),
                action: Some(entry.action),
                stragglers: Some(killed),
                ms: Some(t.elapsed().as_millis() as u64),
                ..line("decided")
            },
        );
    }

    fn died(&mut self, pid: i32) {
        self.watched.remove(&pid);
        let domains: Vec<(String, Option<HolderInfo>)> = self
            .armed
            .iter_mut()
            .filter_map(|(d, holders)| holders.remove(&pid).map(|info| (d.clone(), info)))
            .collect();
        self.armed.retain(|_, h| !h.is_empty());
        for (domain, info) in domains {
            if crate::lifetime::cause().is_some() {
                return;
            }
            self.released(&domain, Some(pid), info);
        }
    }
}

/// Runs the watch until SIGTERM/SIGINT. Returns the exit code.
pub fn run(host: &Host, abra: &Abra, docker: &Docker, s: &WatchSettings) -> u8 {
    use std::os::unix::fs::DirBuilderExt;
    if let Err(e) = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&host.lock_dir) {
        tracing::error!("watch: cannot create the lock dir {}: {e}", host.lock_dir.display());
        return crate::exit::INTERNAL;
    }
    let (tx, rx) = channel();
    if let Err(e) = watch_dir(&host.lock_dir, tx.clone()) {
        tracing::error!("watch: {e}");
        return crate::exit::INTERNAL;
    }
    bridge_stop(tx.clone());
    let mut w = Watcher {
        host,
        abra,
        docker,
        s,
        pattern: RunAppPattern::new(&host.domain_suffix),
        tx,
        armed: BTreeMap::new(),
        watched: HashSet::new(),
        retry: BTreeMap::new(),
        me: std::process::id() as i32,
    };
    tracing::info!(
        "ccci janitor --watch: lock dir {}, backstop sweep every {}",
        host.lock_dir.display(),
        crate::clock::human(s.sweep_every)
    );
    emit(s.json, line("started"));
    w.sweep();
    let mut next_sweep = Instant::now() + s.sweep_every;
    let mut pending: HashMap<String, ()> = HashMap::new();
    while crate::lifetime::cause().is_none() {
        let next_retry = w.retry.values().min().copied();
        let until = next_retry.map_or(next_sweep, |r| r.min(next_sweep));
        let msg = rx.recv_timeout(until.saturating_duration_since(Instant::now()));
        match msg {
            Ok(Msg::Stop) => break,
            Ok(Msg::Died(pid)) => w.died(pid),
            Ok(Msg::Dir(Some(name))) => {
                if let Some(d) = name.to_str().and_then(names::domain_of_lock_file)
                    && w.pattern.is_run_domain(d)
                {
                    pending.insert(d.to_string(), ());
                }
                // Take what else is queued, then read /proc/locks once for all of it.
                while let Ok(more) = rx.try_recv() {
                    match more {
                        Msg::Dir(Some(n)) => {
                            if let Some(d) = n.to_str().and_then(names::domain_of_lock_file)
                                && w.pattern.is_run_domain(d)
                            {
                                pending.insert(d.to_string(), ());
                            }
                        }
                        Msg::Dir(None) => w.arm_all(),
                        Msg::Died(pid) => w.died(pid),
                        Msg::Stop => {
                            pending.clear();
                            break;
                        }
                    }
                }
                let held = HeldLocks::read();
                for (d, ()) in pending.drain() {
                    w.arm(&d, &held);
                }
            }
            Ok(Msg::Dir(None)) => w.arm_all(),
            Err(_) => {}
        }
        let now = Instant::now();
        let due: Vec<String> = w.retry.iter().filter(|(_, t)| **t <= now).map(|(d, _)| d.clone()).collect();
        for d in due {
            w.retry.remove(&d);
            w.released(&d, None, None);
        }
        if Instant::now() >= next_sweep && crate::lifetime::cause().is_none() {
            w.sweep();
            next_sweep = Instant::now() + s.sweep_every;
        }
    }
    tracing::info!(
        "ccci janitor --watch: stopping ({})",
        crate::lifetime::cause().map_or("stop".into(), |c| format!("{c:?}"))
    );
    emit(s.json, line("stopped"));
    crate::exit::OK
}
