//! How long the build and the health checks of the run being recorded took: noted where
//! they happen (the cycle, the activation protocol), taken by the run record. Per thread:
//! the agent runs one cycle at a time on one thread, and parallel unit tests never mix.

use std::cell::Cell;
use std::time::Duration;

thread_local! {
    static TOOK: Cell<(Option<u64>, Option<u64>)> = const { Cell::new((None, None)) };
}

fn millis(d: Duration) -> Option<u64> {
    Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A build ended (either way): a new deployment's timings start here.
pub fn build_took(d: Duration) {
    TOOK.with(|t| t.set((millis(d), None)));
}

/// The health checks ended (settle included), healthy or not.
pub fn health_took(d: Duration) {
    TOOK.with(|t| t.set((t.get().0, millis(d))));
}

/// The timings noted since the last build, in milliseconds: (build, health). Clears them.
pub fn take() -> (Option<u64>, Option<u64>) {
    TOOK.with(|t| t.replace((None, None)))
}
