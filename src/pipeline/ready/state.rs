//! The rules of a readiness wait between looks, kept pure: two passes in a row, the TCP probes'
//! `stable` counts, the HTTP floor's timeout, the wait's timeout, and when dockerd's silence is
//! the infra verdict rather than the recipe's fault. The effectful loop ([`super::wait`]) feeds it
//! one round at a time — a look at the swarm (or why there was none) and probes it may call —
//! and does what the returned [`Step`] says.

use std::time::{Duration, Instant};

use super::judge::{Judge, Poll, Verdict};
use crate::config::ccci_yml::ReadyProbe;

/// The HTTP floor: a URL (already expanded) and the statuses that count as up.
#[derive(Debug, Clone)]
pub struct HttpFloor {
    pub url: String,
    pub expect: Vec<u16>,
    pub timeout: Duration,
}

/// What a round may probe (effectful in the wait, scripted in tests). Called only once the swarm
/// passes: TCP probes first, the HTTP floor when they pass too.
pub trait Probes {
    fn tcp(&mut self, addr: &str) -> bool;
    fn http(&mut self, floor: &HttpFloor) -> Result<u16, String>;
}

/// Why a round has no look at the swarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    pub message: String,
    /// dockerd's fault (unreachable, erroring, too slow), as opposed to a cancelled call.
    pub infra: bool,
}

/// What the wait does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Two rounds in a row passed everything.
    Ready,
    /// Waiting longer will not help: the recipe's fault.
    Failed(String),
    /// dockerd could not be read: CI could not judge the recipe.
    Infra(String),
    /// Look again after `after` (or at the next event of the stack, whichever comes first).
    /// `news` is the list of problems when it changed since the last round, for the log.
    Again { after: Duration, news: Option<String> },
}

/// How long dockerd may stay unreadable before the wait gives up with the infra verdict (the
/// wait's own timeout ends it sooner).
pub const INFRA_AFTER: Duration = Duration::from_secs(60);
/// The next look after a failed read: dockerd hiccups are retried soon.
pub const READ_RETRY: Duration = Duration::from_secs(1);
/// The next probe round while the swarm passes but a probe or the HTTP floor does not (nothing in
/// the swarm changes then, so no event would come).
pub const PROBE_RETRY: Duration = Duration::from_secs(1);
/// A TCP probe's successes count towards `stable` at most this often, so `stable: N` still means
/// N connects about a second apart, however often events make the wait look.
pub const STABLE_SPACING: Duration = Duration::from_secs(1);
/// The next look while a container is unhealthy: its streak needs looks, and no event comes
/// while it stays unhealthy.
pub const UNHEALTHY_RETRY: Duration = Duration::from_secs(1);
/// While the swarm is short of running tasks only because swarm has not yet recorded a starting
/// task whose container is healthy (or has no healthcheck) as running, looks follow at these
/// gaps (20 ms apart for the first 80 ms, then wider; 320 ms in all, counted from the last
/// event of the stack) before the wait falls back to its idle backstop: a task's
/// state trails its container's events (swarm records a task `running` a few milliseconds after
/// the `health_status: healthy` event, and emits no event of its own), so the look that event
/// triggers often comes a moment too early. Other reasons to wait (an update in progress, a
/// container still starting its healthcheck) end with an event, so they get no follow-ups.
pub const FOLLOW_UPS: [Duration; 8] = [
    Duration::from_millis(20),
    Duration::from_millis(20),
    Duration::from_millis(20),
    Duration::from_millis(20),
    Duration::from_millis(40),
    Duration::from_millis(40),
    Duration::from_millis(80),
    Duration::from_millis(80),
];

/// One TCP probe's streak.
#[derive(Debug, Clone, Copy, Default)]
struct Streak {
    count: u32,
    last: Option<Instant>,
}

/// The state of one readiness wait.
#[derive(Debug)]
pub struct ReadyState {
    judge: Judge,
    probes: Vec<ReadyProbe>,
    http: Option<HttpFloor>,
    started: Instant,
    timeout: Duration,
    /// How long to wait with the swarm not ready and nothing else pending: the event stream's
    /// backstop, or the CLI path's poll interval.
    idle: Duration,
    passes: u32,
    stable: Vec<Streak>,
    swarm_ready_since: Option<Instant>,
    /// Follow-up looks done since the last event (see [`FOLLOW_UPS`]).
    follow_ups: u32,
    /// Since when every read of dockerd failed (`None`: the last one worked).
    failing_since: Option<Instant>,
    last_read_error: Option<String>,
    last_problem: String,
}

impl ReadyState {
    pub fn new(
        judge: Judge,
        probes: &[ReadyProbe],
        http: Option<&HttpFloor>,
        started: Instant,
        timeout: Duration,
        idle: Duration,
    ) -> ReadyState {
        ReadyState {
            judge,
            probes: probes.to_vec(),
            http: http.cloned(),
            started,
            timeout,
            idle,
            passes: 0,
            stable: vec![Streak::default(); probes.len()],
            swarm_ready_since: None,
            follow_ups: 0,
            failing_since: None,
            last_read_error: None,
            last_problem: String::from("no look at the swarm finished yet"),
        }
    }

    /// An event of the stack woke the wait: follow-up looks (while a task is about to run) are
    /// spaced closely again.
    /// What the last look found missing (the heartbeat's detail).
    pub fn last_problem(&self) -> &str {
        &self.last_problem
    }

    pub fn woke_by_event(&mut self) {
        self.follow_ups = 0;
    }

    /// When the wait ends if nothing passes.
    pub fn end(&self) -> Instant {
        self.started.checked_add(self.timeout).unwrap_or_else(|| crate::lifetime::instant_after(self.timeout))
    }

    /// How far into the wait `now` is (the judge's clock).
    pub fn at(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// One round: the look (or why there is none), then the probes it allows.
    pub fn round(&mut self, now: Instant, look: Result<&Poll, ReadError>, probes: &mut dyn Probes) -> Step {
        let mut problems: Vec<String> = Vec::new();
        let mut swarm_ok = false;
        match look {
            Err(e) => {
                let since = *self.failing_since.get_or_insert(now);
                problems.push(format!("dockerd: {}", e.message));
                if e.infra {
                    self.last_read_error = Some(e.message.clone());
                    if now.saturating_duration_since(since) >= INFRA_AFTER {
                        return Step::Infra(format!(
                            "dockerd could not be read for {}: {}",
                            crate::clock::human(now.saturating_duration_since(since)),
                            e.message
                        ));
                    }
                }
            }
            Ok(poll) => {
                self.failing_since = None;
                self.last_read_error = None;
                match self.judge.judge(poll) {
                    Verdict::Failed(reason) => return Step::Failed(reason),
                    Verdict::NotReady(list) => problems.extend(list),
                    Verdict::Ready => swarm_ok = true,
                }
            }
        }
        let mut after = self.idle;
        if swarm_ok {
            self.swarm_ready_since.get_or_insert(now);
            for (i, probe) in self.probes.iter().enumerate() {
                let s = &mut self.stable[i];
                if probes.tcp(&probe.tcp) {
                    // A success counts once per spacing: looks that follow each other closely
                    // (an event burst, the confirming look) are one connect in a row, not many.
                    if s.last.is_none_or(|t| now.saturating_duration_since(t) >= STABLE_SPACING) {
                        s.count += 1;
                        s.last = Some(now);
                    }
                    if s.count < probe.stable {
                        problems
                            .push(format!("tcp {} connected {}/{} times in a row", probe.tcp, s.count, probe.stable));
                        let due =
                            s.last.map_or(STABLE_SPACING, |t| (t + STABLE_SPACING).saturating_duration_since(now));
                        after = after.min(due);
                    }
                } else {
                    *s = Streak::default();
                    problems.push(format!("tcp {} does not accept connections", probe.tcp));
                    after = after.min(PROBE_RETRY);
                }
            }
        } else {
            self.swarm_ready_since = None;
        }
        if problems.is_empty()
            && let Some(floor) = &self.http
        {
            match probes.http(floor) {
                Ok(code) if floor.expect.contains(&code) => {}
                Ok(code) => problems.push(format!(
                    "HTTP floor: GET {} answered {code} (expected {})",
                    floor.url,
                    floor.expect.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
                )),
                Err(e) => problems.push(format!("HTTP floor: GET {} failed: {e}", floor.url)),
            }
            if !problems.is_empty() {
                if let Some(since) = self.swarm_ready_since
                    && now.saturating_duration_since(since) >= floor.timeout
                {
                    return Step::Failed(format!(
                        "{} (for {})",
                        problems.join("; "),
                        crate::clock::human(floor.timeout)
                    ));
                }
                after = after.min(PROBE_RETRY);
            }
        }
        if problems.is_empty() {
            self.passes += 1;
            if self.passes >= 2 {
                return Step::Ready;
            }
            // The confirming look: at once (a second read of dockerd and a second probe round).
            return Step::Again { after: Duration::ZERO, news: None };
        }
        self.passes = 0;
        let now_text = problems.join("; ");
        let news = (now_text != self.last_problem).then(|| now_text.clone());
        self.last_problem = now_text;
        if now >= self.end() {
            return self.expired();
        }
        if self.failing_since.is_some() {
            after = after.min(READ_RETRY);
        } else if !swarm_ok
            && self.judge.tasks_trailing()
            && let Some(gap) = FOLLOW_UPS.get(self.follow_ups as usize)
        {
            after = after.min(*gap);
            self.follow_ups += 1;
        }
        if self.judge.watching_unhealthy() {
            after = after.min(UNHEALTHY_RETRY);
        }
        Step::Again { after, news }
    }

    /// The wait's timeout passed without two passes: the recipe's fault, unless dockerd could
    /// not be read at the end (then CI could not judge it).
    pub fn expired(&self) -> Step {
        let human = crate::clock::human(self.timeout);
        if let (Some(_), Some(err)) = (self.failing_since, &self.last_read_error) {
            return Step::Infra(format!("dockerd could not be read at the end of the {human} readiness wait: {err}"));
        }
        let mut reason = format!("not ready after {human}: {}", self.last_problem);
        if let Some(err) = &self.judge.last_task_error {
            reason.push_str(&format!("; last task error: {err}"));
        }
        Step::Failed(reason)
    }
}

#[cfg(test)]
mod tests {
    //! Table tests of the rules between looks: scripted looks and probe answers in, steps out.
    use serde_json::json;

    use super::*;

    const SVC: &str = include_str!("../../../tests/data/ready/svc-v1.json");
    const TASKS: &str = include_str!("../../../tests/data/ready/tasks-v1.json");
    const CTR: &str = include_str!("../../../tests/data/ready/ctr-v1.json");

    fn ready_poll() -> Poll {
        Poll {
            services: serde_json::from_str(SVC).unwrap(),
            tasks: serde_json::from_str(TASKS).unwrap(),
            containers: serde_json::from_str(CTR).unwrap(),
            nodes: 1,
            at: Duration::ZERO,
        }
    }

    fn not_ready_poll() -> Poll {
        let mut p = ready_poll();
        p.tasks.clear();
        p
    }

    /// The task still `starting` while its container is already healthy.
    fn trailing_poll() -> Poll {
        let mut p = ready_poll();
        p.tasks[0].status.as_mut().unwrap().state = Some(crate::adapters::engine::models::TaskState::STARTING);
        p
    }

    fn unhealthy_poll(at: Duration) -> Poll {
        let mut c: Vec<serde_json::Value> = serde_json::from_str(CTR).unwrap();
        c[0]["State"]["Health"]["Status"] = json!("unhealthy");
        Poll { containers: c.into_iter().map(|x| serde_json::from_value(x).unwrap()).collect(), at, ..ready_poll() }
    }

    /// Scripted probes: TCP answers in order (then the last one forever), HTTP likewise.
    #[derive(Default)]
    struct Script {
        tcp: Vec<bool>,
        http: Vec<Result<u16, String>>,
        tcp_calls: usize,
        http_calls: usize,
    }

    impl Probes for Script {
        fn tcp(&mut self, _: &str) -> bool {
            self.tcp_calls += 1;
            let i = (self.tcp_calls - 1).min(self.tcp.len().saturating_sub(1));
            self.tcp.get(i).copied().unwrap_or(true)
        }
        fn http(&mut self, _: &HttpFloor) -> Result<u16, String> {
            self.http_calls += 1;
            let i = (self.http_calls - 1).min(self.http.len().saturating_sub(1));
            self.http.get(i).cloned().unwrap_or(Ok(200))
        }
    }

    fn probe(stable: u32) -> ReadyProbe {
        ReadyProbe { tcp: "127.0.0.1:9".into(), stable }
    }

    fn floor(timeout: u64) -> HttpFloor {
        HttpFloor { url: "http://x/".into(), expect: vec![200], timeout: Duration::from_secs(timeout) }
    }

    const IDLE: Duration = Duration::from_secs(5);

    fn state(probes: &[ReadyProbe], http: Option<&HttpFloor>, t0: Instant, timeout: u64) -> ReadyState {
        ReadyState::new(Judge::default(), probes, http, t0, Duration::from_secs(timeout), IDLE)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn err(infra: bool) -> ReadError {
        ReadError { message: "GET /services: timed out".into(), infra }
    }

    #[test]
    fn two_passes_in_a_row_the_second_at_once() {
        let t0 = Instant::now();
        let mut s = state(&[], None, t0, 60);
        let mut p = Script::default();
        assert_eq!(s.round(t0, Ok(&ready_poll()), &mut p), Step::Again { after: Duration::ZERO, news: None });
        assert_eq!(s.round(t0 + ms(3), Ok(&ready_poll()), &mut p), Step::Ready);
        // A failing round in between starts the count again.
        let mut s = state(&[], None, t0, 60);
        s.round(t0, Ok(&ready_poll()), &mut p);
        match s.round(t0 + ms(3), Ok(&not_ready_poll()), &mut p) {
            Step::Again { after, news: Some(n) } => {
                assert_eq!(after, IDLE, "no task about to run: the backstop");
                assert!(n.contains("0/1 tasks running"), "{n}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(s.round(t0 + ms(9), Ok(&ready_poll()), &mut p), Step::Again { .. }));
        assert_eq!(s.round(t0 + ms(12), Ok(&ready_poll()), &mut p), Step::Ready);
    }

    #[test]
    fn a_task_about_to_run_is_looked_at_closely_then_on_the_backstop() {
        let t0 = Instant::now();
        let mut s = state(&[], None, t0, 600);
        let mut p = Script::default();
        let mut afters = |s: &mut ReadyState, poll: &Poll, n: usize| -> Vec<u128> {
            (0..n)
                .map(|i| match s.round(t0 + ms(i as u64), Ok(poll), &mut p) {
                    Step::Again { after, .. } => after.as_millis(),
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(afters(&mut s, &trailing_poll(), 10), [20, 20, 20, 20, 40, 40, 80, 80, 5000, 5000]);
        s.woke_by_event();
        assert_eq!(afters(&mut s, &trailing_poll(), 3), [20, 20, 20]);
        // Waiting for anything else that ends with an event (no task yet, an update rolling): the
        // backstop only.
        s.woke_by_event();
        assert_eq!(afters(&mut s, &not_ready_poll(), 2), [5000, 5000]);
        // A ready swarm waiting on a probe keeps the probe's own pace.
        let mut s = state(&[probe(1)], None, t0, 600);
        let mut refusing = Script { tcp: vec![false], ..Script::default() };
        assert!(
            matches!(s.round(t0, Ok(&ready_poll()), &mut refusing), Step::Again { after, .. } if after == PROBE_RETRY)
        );
    }

    #[test]
    fn the_problem_list_is_news_only_when_it_changed() {
        let t0 = Instant::now();
        let mut s = state(&[], None, t0, 60);
        let mut p = Script::default();
        assert!(matches!(s.round(t0, Ok(&not_ready_poll()), &mut p), Step::Again { news: Some(_), .. }));
        assert!(matches!(s.round(t0 + ms(5), Ok(&not_ready_poll()), &mut p), Step::Again { news: None, .. }));
    }

    /// (stable, TCP answers per round, round times in ms) → the steps.
    #[test]
    fn tcp_stable_counts_connects_a_spacing_apart() {
        let t0 = Instant::now();
        type Row<'a> = (u32, &'a [bool], &'a [u64], &'a [&'a str]);
        let table: &[Row] = &[
            // stable 1: the first connect counts, the confirming look makes it ready.
            (1, &[true], &[0, 2], &["again 0", "ready"]),
            // stable 2: a connect, then the second must wait a spacing.
            (2, &[true], &[0, 5, 1000, 1002], &["again 1000", "again 995", "again 0", "ready"]),
            // A refusal resets the streak.
            (
                2,
                &[true, false, true, true],
                &[0, 1000, 1500, 2500, 2501],
                &["again 1000", "again 1000", "again 1000", "again 0", "ready"],
            ),
        ];
        for (stable, answers, times, want) in table {
            let mut s = state(&[probe(*stable)], None, t0, 60);
            let mut p = Script { tcp: answers.to_vec(), ..Script::default() };
            let got: Vec<String> = times
                .iter()
                .map(|t| match s.round(t0 + ms(*t), Ok(&ready_poll()), &mut p) {
                    Step::Ready => "ready".to_string(),
                    Step::Again { after, .. } => format!("again {}", after.as_millis()),
                    other => format!("{other:?}"),
                })
                .collect();
            assert_eq!(got, *want, "stable {stable}, answers {answers:?}, times {times:?}");
        }
    }

    #[test]
    fn probes_run_only_once_the_swarm_passes_and_the_floor_only_after_them() {
        let t0 = Instant::now();
        let f = floor(30);
        let mut s = state(&[probe(1)], Some(&f), t0, 60);
        let mut p = Script { tcp: vec![false, true], ..Script::default() };
        s.round(t0, Ok(&not_ready_poll()), &mut p);
        assert_eq!((p.tcp_calls, p.http_calls), (0, 0));
        assert!(
            matches!(s.round(t0 + ms(1), Ok(&ready_poll()), &mut p), Step::Again { after, .. } if after == PROBE_RETRY)
        );
        assert_eq!((p.tcp_calls, p.http_calls), (1, 0), "a refused probe keeps the floor unasked");
        s.round(t0 + ms(1001), Ok(&ready_poll()), &mut p);
        assert_eq!((p.tcp_calls, p.http_calls), (2, 1));
    }

    /// (HTTP answers per round, round times in s, timeout of the floor) → the last step.
    #[test]
    fn the_http_floor_fails_after_its_timeout_of_a_ready_swarm() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let f = floor(10);
        // The floor answers 502 for 11 s after the swarm became ready: failed, naming the floor.
        let mut s = state(&[], Some(&f), t0, 600);
        let mut p = Script { http: vec![Ok(502)], ..Script::default() };
        for t in 0..10 {
            assert!(
                matches!(s.round(t0 + secs(t), Ok(&ready_poll()), &mut p), Step::Again { after, .. } if after == PROBE_RETRY)
            );
        }
        match s.round(t0 + secs(10), Ok(&ready_poll()), &mut p) {
            Step::Failed(r) => assert!(r.contains("answered 502 (expected 200) (for 10.0s)"), "{r}"),
            other => panic!("{other:?}"),
        }
        // The swarm going unready restarts the floor's clock.
        let mut s = state(&[], Some(&f), t0, 600);
        let mut p = Script { http: vec![Err("refused".into())], ..Script::default() };
        s.round(t0, Ok(&ready_poll()), &mut p);
        s.round(t0 + secs(9), Ok(&not_ready_poll()), &mut p);
        assert!(matches!(s.round(t0 + secs(12), Ok(&ready_poll()), &mut p), Step::Again { .. }));
        assert!(
            matches!(s.round(t0 + secs(22), Ok(&ready_poll()), &mut p), Step::Failed(r) if r.contains("failed: refused"))
        );
        // An answer in `expect` passes.
        let mut s = state(&[], Some(&f), t0, 600);
        let mut p = Script { http: vec![Ok(502), Ok(200)], ..Script::default() };
        s.round(t0, Ok(&ready_poll()), &mut p);
        s.round(t0 + secs(1), Ok(&ready_poll()), &mut p);
        assert_eq!(s.round(t0 + secs(1), Ok(&ready_poll()), &mut p), Step::Ready);
    }

    #[test]
    fn the_timeout_is_the_recipes_fault_and_names_the_last_problem() {
        let t0 = Instant::now();
        let mut s = state(&[], None, t0, 30);
        let mut p = Script::default();
        s.round(t0, Ok(&not_ready_poll()), &mut p);
        match s.round(t0 + Duration::from_secs(30), Ok(&not_ready_poll()), &mut p) {
            Step::Failed(r) => {
                assert!(r.starts_with("not ready after 30.0s: ") && r.contains("0/1 tasks running"), "{r}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(s.expired(), Step::Failed(_)));
    }

    #[test]
    fn dockerd_unreadable_is_infra_at_the_timeout_or_after_a_minute() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let mut p = Script::default();
        // Failing reads are retried soon.
        let mut s = state(&[], None, t0, 30);
        s.round(t0, Ok(&not_ready_poll()), &mut p);
        assert!(
            matches!(s.round(t0 + secs(1), Err(err(true)), &mut p), Step::Again { after, .. } if after == READ_RETRY)
        );
        // Still failing at the wait's end: infra, naming dockerd's error.
        match s.round(t0 + secs(30), Err(err(true)), &mut p) {
            Step::Infra(r) => assert!(r.contains("end of the 30.0s readiness wait: GET /services: timed out"), "{r}"),
            other => panic!("{other:?}"),
        }
        // A read that works again clears it: the timeout is then the recipe's.
        let mut s = state(&[], None, t0, 30);
        s.round(t0, Err(err(true)), &mut p);
        s.round(t0 + secs(29), Ok(&not_ready_poll()), &mut p);
        assert!(matches!(s.expired(), Step::Failed(_)));
        // In a long wait, a minute of failures is enough.
        let mut s = state(&[], None, t0, 900);
        for t in 0..60 {
            assert!(matches!(s.round(t0 + secs(t), Err(err(true)), &mut p), Step::Again { .. }), "{t}");
        }
        match s.round(t0 + secs(60), Err(err(true)), &mut p) {
            Step::Infra(r) => assert!(r.starts_with("dockerd could not be read for 1m0s"), "{r}"),
            other => panic!("{other:?}"),
        }
        // A cancelled read is not dockerd's fault.
        let mut s = state(&[], None, t0, 30);
        s.round(t0, Err(err(false)), &mut p);
        assert!(matches!(s.round(t0 + secs(30), Err(err(false)), &mut p), Step::Failed(_)));
    }

    #[test]
    fn a_crash_loop_fails_and_an_unhealthy_container_is_looked_at_every_second() {
        // Past the follow-ups of an event, an unhealthy container is still looked at every second.
        let t0 = Instant::now();
        let mut s = state(&[], None, t0, 600);
        let mut p = Script::default();
        for i in 0..FOLLOW_UPS.len() as u64 {
            s.round(t0 + ms(i), Ok(&trailing_poll()), &mut p);
        }
        let at = t0 + ms(100);
        assert!(
            matches!(s.round(at, Ok(&unhealthy_poll(s.at(at))), &mut p), Step::Again { after, .. } if after == UNHEALTHY_RETRY)
        );

        let t0 = Instant::now();
        let mut s = state(&[], None, t0, 600);
        let mut p = Script::default();
        let mut step = Step::Ready;
        for t in 0..3u64 {
            let now = t0 + Duration::from_secs(t);
            step = s.round(now, Ok(&unhealthy_poll(s.at(now))), &mut p);
            if t < 2 {
                assert!(matches!(step, Step::Again { after, .. } if after <= UNHEALTHY_RETRY), "{step:?}");
            }
        }
        assert!(matches!(step, Step::Failed(r) if r.contains("crash loop")));
    }
}
