//! Logs (§1.4): stderr through a bounded non-blocking queue, and `run.log` as the durable copy.
//!
//! After a Drone cancel nobody drains the step's pipe: a blocking write to stderr would stall
//! teardown forever. So stderr lines go through a bounded queue to a writer thread; when the
//! queue is full the line is dropped and counted. `run.log` is written directly (a local file),
//! gets every line at debug level, and is capped at 64 MiB.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::clock;

const QUEUE_LINES: usize = 4096;
pub const RUN_LOG_CAP: u64 = 64 * 1024 * 1024;

static STDERR: OnceLock<SyncSender<String>> = OnceLock::new();
static PENDING: AtomicUsize = AtomicUsize::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static STDERR_BROKEN: AtomicBool = AtomicBool::new(false);
static RUN_LOG: Mutex<RunLog> = Mutex::new(RunLog::Buffer(Vec::new()));

enum RunLog {
    /// Lines logged before the run dir exists; written out when `run.log` is attached.
    Buffer(Vec<String>),
    File {
        file: File,
        written: u64,
        capped: bool,
    },
    /// Not a run (janitor, locks), or the file could not be written.
    Off,
}

/// How chatty stderr is: `CCCI_LOG` wins over `-v`/`-q`.
pub fn stderr_filter(ccci_log: Option<&str>, verbose: u8, quiet: u8) -> EnvFilter {
    if let Some(spec) = ccci_log.filter(|s| !s.is_empty())
        && let Ok(filter) = EnvFilter::try_new(spec)
    {
        return filter;
    }
    let level = match i16::from(verbose) - i16::from(quiet) {
        i16::MIN..=-2 => LevelFilter::ERROR,
        -1 => LevelFilter::WARN,
        0 => LevelFilter::INFO,
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    EnvFilter::default().add_directive(level.into())
}

/// Starts the stderr writer thread and installs the subscriber. Call after the signal thread
/// exists (signal-hook wants its handlers registered before any other thread starts).
pub fn init(filter: EnvFilter, keep_run_log: bool) {
    let (tx, rx) = std::sync::mpsc::sync_channel::<String>(QUEUE_LINES);
    if STDERR.set(tx).is_err() {
        return;
    }
    if !keep_run_log {
        *RUN_LOG.lock().unwrap_or_else(|e| e.into_inner()) = RunLog::Off;
    }
    std::thread::Builder::new()
        .name("stderr".into())
        .spawn(move || {
            for line in rx {
                // Lock stderr per line, never for the thread's life: an eprintln! elsewhere
                // would otherwise wait forever.
                if !STDERR_BROKEN.load(Ordering::Relaxed) && std::io::stderr().write_all(line.as_bytes()).is_err() {
                    // EPIPE/EIO: the reader is gone. Keep draining so senders never see a full
                    // queue for this reason; run.log still has every line.
                    STDERR_BROKEN.store(true, Ordering::Relaxed);
                }
                if STDERR_BROKEN.load(Ordering::Relaxed) {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
                PENDING.fetch_sub(1, Ordering::Release);
            }
        })
        .expect("spawn the stderr writer thread");
    let subscriber = tracing_subscriber::registry()
        .with(LineLayer { sink: Sink::Stderr }.with_filter(filter))
        .with(LineLayer { sink: Sink::RunLog }.with_filter(LevelFilter::DEBUG));
    let _ = subscriber.try_init();
}

/// Starts writing `run.log` at `path`, including every line logged so far.
pub fn attach_run_log(path: &Path) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let mut guard = RUN_LOG.lock().unwrap_or_else(|e| e.into_inner());
    let buffered = match std::mem::replace(&mut *guard, RunLog::Off) {
        RunLog::Buffer(lines) => lines,
        _ => Vec::new(),
    };
    let mut written = file.metadata().map(|m| m.len()).unwrap_or(0);
    for line in buffered {
        file.write_all(line.as_bytes())?;
        written += line.len() as u64;
    }
    *guard = RunLog::File { file, written, capped: false };
    Ok(())
}

/// Stops writing `run.log` (its directory may be about to be pruned, or the run is over).
pub fn detach_run_log() {
    *RUN_LOG.lock().unwrap_or_else(|e| e.into_inner()) = RunLog::Off;
}

/// Lines dropped from stderr because its reader stalled or went away.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// How long a command's end waits for stderr to drain: a live reader takes microseconds; a
/// stalled one (a paused terminal, a full pipe) must not hold the exit code back.
pub const EXIT_FLUSH: Duration = Duration::from_millis(300);

/// How often a flush looks whether the writer drained: short, as it runs at exit and a
/// terminal drains in microseconds.
const FLUSH_POLL: Duration = Duration::from_millis(2);

/// Gives the stderr writer up to `within` to drain; never blocks longer.
pub fn flush(within: Duration) {
    let start = Instant::now();
    while PENDING.load(Ordering::Acquire) > 0 && start.elapsed() < within {
        std::thread::sleep(FLUSH_POLL);
    }
}

fn to_stderr(line: String) {
    let Some(tx) = STDERR.get() else {
        let _ = std::io::stderr().write_all(line.as_bytes());
        return;
    };
    PENDING.fetch_add(1, Ordering::Acquire);
    match tx.try_send(line) {
        Ok(()) => {}
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            PENDING.fetch_sub(1, Ordering::Release);
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn to_run_log(line: String) {
    let mut guard = RUN_LOG.lock().unwrap_or_else(|e| e.into_inner());
    match &mut *guard {
        RunLog::Buffer(lines) => {
            if lines.len() < 10_000 {
                lines.push(line);
            }
        }
        RunLog::File { file, written, capped } => {
            if *capped {
                return;
            }
            if *written + line.len() as u64 > RUN_LOG_CAP {
                let note = format!(
                    "{} WARN  run.log reached its 64 MiB cap; later lines went to stderr only\n",
                    clock::rfc3339_millis(SystemTime::now())
                );
                let _ = file.write_all(note.as_bytes());
                *capped = true;
                return;
            }
            if file.write_all(line.as_bytes()).is_ok() {
                *written += line.len() as u64;
            }
        }
        RunLog::Off => {}
    }
}

#[derive(Clone, Copy)]
enum Sink {
    Stderr,
    RunLog,
}

struct LineLayer {
    sink: Sink,
}

#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.rest.push_str(&format!(" {}={value:?}", field.name()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message.push_str(&format!("{value:?}"));
        } else {
            self.rest.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

fn level_tag(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN ",
        Level::INFO => "INFO ",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

impl<S: Subscriber> Layer<S> for LineLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let now = SystemTime::now();
        let level = level_tag(event.metadata().level());
        let body = crate::mask::mask(&format!("{}{}", fields.message, fields.rest));
        match self.sink {
            Sink::Stderr => to_stderr(format!("{} {level} {body}\n", clock::hms(now))),
            Sink::RunLog => to_run_log(format!("{} {level} {body}\n", clock::rfc3339_millis(now))),
        }
    }
}
