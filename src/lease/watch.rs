//! The waiter's ear: an etcd watch on one lease key, on a thread of its own, that wakes the
//! waiting main thread ([`Event::LeaseKey`]) when the key is deleted (released, or expired
//! with its lease) or when the stream ends (a member died, lost its leader, the watch was
//! cancelled) — after which the waiter looks at the key again and watches anew.
//!
//! The watch starts at the revision right after the waiter's own look at the key, so a release
//! that happens between that look and the stream coming up is replayed, not missed.

use std::sync::mpsc::Sender;
use std::thread::JoinHandle;

use super::gateway::Gateway;
use super::wire::{B64, I64, Streamed, WatchCreate, WatchReq, WatchResult};
use crate::lifetime::Event;

/// A live watch; dropping it ends the stream and joins the thread.
pub(super) struct KeyWatch {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl KeyWatch {
    pub(super) fn start(
        gw: Gateway,
        key: &str,
        from_revision: i64,
        notify: Sender<Event>,
    ) -> std::io::Result<KeyWatch> {
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel();
        let req = WatchReq { create_request: WatchCreate { key: B64::of(key), start_revision: I64(from_revision) } };
        let key = key.to_string();
        let thread = std::thread::Builder::new().name("lease-watch".into()).spawn(move || {
            let mut deleted = false;
            let why = gw.watch(&req, &mut stop_rx, |line| {
                let Ok(msg) = serde_json::from_slice::<Streamed<WatchResult>>(line) else { return false };
                let Some(result) = msg.result else { return false };
                if result.created {
                    tracing::debug!("app lease: watching {key} from revision {from_revision}");
                }
                if result.canceled {
                    return false;
                }
                if result.events.iter().any(|e| e.is_delete()) {
                    deleted = true;
                    return false;
                }
                true
            });
            if why != "stopped" {
                if !deleted {
                    tracing::debug!("app lease: the watch of {key} ended: {why}");
                }
                let _ = notify.send(Event::LeaseKey);
            }
        })?;
        Ok(KeyWatch { stop: Some(stop_tx), thread: Some(thread) })
    }

    /// Whether the stream is still being read.
    pub(super) fn is_live(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for KeyWatch {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
