//! A running `ccci janitor --watch --json` for tests: its JSON lines collected, its stderr kept.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::{LineWatch, World, signal, wait_until, wait_within};

/// A running `ccci janitor --watch --json`, its JSON lines collected; SIGTERMed and reaped on
/// drop.
pub struct Watcher {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    pub err: LineWatch,
}

impl Watcher {
    pub fn start(w: &World) -> Watcher {
        let mut c = w.ccci();
        c.args(["janitor", "--watch", "--json"]).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let err = LineWatch::stderr_of(&mut child);
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    l2.lock().unwrap().push(v);
                }
            }
        });
        let w = Watcher { child, lines, err };
        w.wait_event("sweep", None, Duration::from_secs(60));
        w
    }

    pub fn events(&self, event: &str, domain: Option<&str>) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["event"] == event && domain.is_none_or(|d| v["domain"] == d))
            .cloned()
            .collect()
    }

    pub fn wait_event(&self, event: &str, domain: Option<&str>, within: Duration) -> Value {
        wait_until(&format!("a {event} event"), within, || !self.events(event, domain).is_empty());
        self.events(event, domain).remove(0)
    }

    pub fn stop(mut self) -> i32 {
        signal(self.child.id(), libc::SIGTERM);
        let st = wait_within(&mut self.child, Duration::from_secs(30));
        st.code().unwrap_or(-1)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
