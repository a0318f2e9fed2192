//! `[prebuilt] wait`: since when this machine knows a head whose manifest is not there
//! yet. Kept in the runtime directory (a tmpfs: news, not history; a reboot starts the
//! wait again, which only delays a native build by at most `wait`).

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::model::time::Timestamp;

pub const FILE: &str = "prebuilt-wait.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    commit: String,
    since: Timestamp,
}

/// When `commit` was first seen without its manifest (now, if it was not before; then
/// written down).
pub fn first_seen(runtime_dir: &Path, commit: &str, now: SystemTime) -> SystemTime {
    let path = runtime_dir.join(FILE);
    let known = match crate::state::read_bounded(&path, 4096) {
        Ok(crate::state::Found::File(bytes)) => serde_json::from_slice::<Seen>(&bytes).ok(),
        _ => None,
    };
    if let Some(seen) = known.filter(|s| s.commit == commit) {
        let t = seen.since.to_system();
        // A clock that jumped back must not stretch the wait.
        if t <= now {
            return t;
        }
    }
    let seen = Seen {
        commit: commit.to_string(),
        since: Timestamp::from_system(now),
    };
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(runtime_dir)?;
        crate::state::write_atomic(&path, &serde_json::to_vec(&seen)?)
    };
    if let Err(e) = write() {
        log::warn!("cannot write {}: {e}", path.display());
    }
    now
}

/// How much of `wait` is left for `commit` at `now`; `None` when it has run out.
pub fn left(runtime_dir: &Path, commit: &str, wait: Duration, now: SystemTime) -> Option<Duration> {
    let since = first_seen(runtime_dir, commit, now);
    let waited = now.duration_since(since).unwrap_or_default();
    wait.checked_sub(waited).filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_runs_from_when_the_head_was_first_seen() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Timestamp::system_of("2026-12-07T15:00:00Z").unwrap();
        let wait = Duration::from_secs(600);
        let a = "a".repeat(40);
        assert_eq!(left(dir.path(), &a, wait, t0), Some(wait));
        let later = t0 + Duration::from_secs(240);
        assert_eq!(
            left(dir.path(), &a, wait, later),
            Some(Duration::from_secs(360))
        );
        assert_eq!(left(dir.path(), &a, wait, t0 + wait), None);
        // A new head starts its own wait.
        let b = "b".repeat(40);
        assert_eq!(left(dir.path(), &b, wait, t0 + wait), Some(wait));
        // Zero never waits.
        assert_eq!(left(dir.path(), &b, Duration::ZERO, t0 + wait), None);
        // A clock set back restarts the wait rather than stretching it.
        assert_eq!(left(dir.path(), &b, wait, t0), Some(wait));
    }
}
