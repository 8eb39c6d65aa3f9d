//! Who holds a domain's lease: the JSON value of its key, and what a reader makes of the key.

use serde::{Deserialize, Serialize};

use super::wire::Kv;

/// The value of a lease key: who holds the domain, in words a waiter and an operator can act
/// on. Informational only — the key's `create_revision` is the token, never anything here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// `DRONE_STAGE_MACHINE` (the runner's name), else the host name.
    pub host: String,
    /// The run id, or `janitor`.
    pub run_id: String,
    pub pid: u32,
    #[serde(default)]
    pub started: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_link: Option<String>,
    /// The last step the holder fenced (`deploy`, `undeploy`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

impl Holder {
    /// `host h, run r, pid p` (and the step it was at).
    pub fn describe(&self) -> String {
        let mut out = format!("host {}, run {}, pid {}", self.host, self.run_id, self.pid);
        if let Some(step) = &self.step {
            out.push_str(&format!(", at {step}"));
        }
        out
    }

    pub fn with_step(&self, step: &str) -> Holder {
        Holder { step: Some(step.to_string()), ..self.clone() }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A lease key that exists: the domain is held, by whom, under which token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    /// The key's `create_revision`: the holder's fencing token.
    pub token: u64,
    /// `None` when the value is not a [`Holder`] (written by something else).
    pub holder: Option<Holder>,
    /// The etcd lease the key is attached to.
    pub lease: i64,
}

impl KeyState {
    pub fn of(kv: &Kv) -> KeyState {
        KeyState {
            token: u64::try_from(kv.create_revision.0).unwrap_or(0),
            holder: serde_json::from_slice(&kv.value.0).ok(),
            lease: kv.lease.0,
        }
    }

    /// `host h, run r, pid p; token N` — what a waiter is told.
    pub fn describe(&self) -> String {
        match &self.holder {
            Some(h) => format!("{}; token {}", h.describe(), self.token),
            None => format!("holder not recorded; token {}", self.token),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::wire::{B64, I64};

    #[test]
    fn a_key_reads_as_its_holder_and_token() {
        let h = Holder { host: "ci-2".into(), run_id: "o-r-7".into(), pid: 42, ..Holder::default() };
        let kv = Kv {
            create_revision: I64(17),
            value: B64(h.with_step("deploy").to_json()),
            lease: I64(9),
            ..Kv::default()
        };
        let k = KeyState::of(&kv);
        assert_eq!(k.token, 17);
        assert_eq!(k.describe(), "host ci-2, run o-r-7, pid 42, at deploy; token 17");
        let foreign = KeyState::of(&Kv { create_revision: I64(3), value: B64::of("not json"), ..Kv::default() });
        assert_eq!(foreign.describe(), "holder not recorded; token 3");
        let json = String::from_utf8(h.to_json()).unwrap();
        assert!(!json.contains("step") && !json.contains("build_link"), "{json}");
    }
}
