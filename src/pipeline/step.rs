//! A step's error, and the one place a step's trouble becomes it.
//!
//! While the run is stopping (a signal, `--deadline`, a lost lease), whatever goes wrong in a
//! step is the stop's doing: the child ccci killed exits non-zero, the lock wait is cancelled,
//! the render is cut short. None of that is the recipe's failure, and reporting it as one would
//! turn a cancelled build red for a reason nobody can act on. So every fallible call of a step
//! goes through [`Step::step`] (or [`StepError::of`]), which asks the lifetime once.

use std::fmt::Display;

use crate::lifetime;

/// A step that did not work out: a failure to report, or a stop to obey.
#[derive(Debug)]
pub(crate) enum StepError {
    Failed(String),
    Stopped,
}

impl StepError {
    /// `err`, met while doing `what`: the step failed for that reason, unless the run is
    /// stopping, when it is stopped.
    pub(crate) fn of(what: impl Display, err: impl Display) -> StepError {
        StepError::judged(stopping(), what, err)
    }

    fn judged(stopping: bool, what: impl Display, err: impl Display) -> StepError {
        if stopping { StepError::Stopped } else { StepError::Failed(format!("{what}: {err}")) }
    }
}

/// Whether the run is stopping: from here on, nothing new is started.
pub(crate) fn stopping() -> bool {
    lifetime::cause().is_some()
}

/// Between two steps: go on, or obey the stop.
pub(crate) fn checkpoint() -> Result<(), StepError> {
    if stopping() { Err(StepError::Stopped) } else { Ok(()) }
}

impl From<String> for StepError {
    fn from(s: String) -> Self {
        StepError::Failed(s)
    }
}

/// `result.step("abra app new failed")?`: [`StepError::of`] on the error of any fallible call.
pub(crate) trait Step<T> {
    fn step(self, what: impl Display) -> Result<T, StepError>;
}

impl<T, E: Display> Step<T> for Result<T, E> {
    fn step(self, what: impl Display) -> Result<T, StepError> {
        self.map_err(|e| StepError::of(what, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_what_was_done_and_why_a_stop_is_only_a_stop() {
        let err = "`abra app new` exited 1: FATA boom";
        match StepError::judged(false, "abra app new failed", err) {
            StepError::Failed(m) => assert_eq!(m, "abra app new failed: `abra app new` exited 1: FATA boom"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(StepError::judged(true, "abra app new failed", err), StepError::Stopped));
    }
}
