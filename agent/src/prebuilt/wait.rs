//! `[prebuilt] wait`: since when this machine knows a head whose manifest is not there
//! yet. Kept in the runtime directory (a tmpfs: news, not history; a reboot starts the
//! wait again, which only delays a native build by at most `wait`). With it, the manifest
//! branch's tip the last fetch saw, so that a poll whose listing shows the same head and
//! tip keeps waiting without a fetch ([`unchanged`]).

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::model::time::Timestamp;

pub const FILE: &str = "prebuilt-wait.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    commit: String,
    since: Timestamp,
    /// The manifest branch's tip the last fetch for `commit` found without its manifest
    /// (`None` inside: the branch was not on the remote); absent until a fetch said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fetched_tip: Option<Tip>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Tip {
    oid: Option<String>,
}

fn read(path: &Path) -> Option<Seen> {
    match crate::state::read_bounded(path, 4096) {
        Ok(crate::state::Found::File(bytes)) => serde_json::from_slice::<Seen>(&bytes).ok(),
        _ => None,
    }
}

fn write(runtime_dir: &Path, seen: &Seen) {
    let path = runtime_dir.join(FILE);
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(runtime_dir)?;
        crate::state::write_atomic(&path, &serde_json::to_vec(seen)?)
    };
    if let Err(e) = write() {
        log::warn!("cannot write {}: {e}", path.display());
    }
}

/// When `commit` was first seen without its manifest (now, if it was not before; then
/// written down).
pub fn first_seen(runtime_dir: &Path, commit: &str, now: SystemTime) -> SystemTime {
    let known = read(&runtime_dir.join(FILE));
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
        fetched_tip: None,
    };
    write(runtime_dir, &seen);
    now
}

/// Notes that a fetch found `commit` still without its manifest, the manifest branch at
/// `tip` (`None`: not on the remote). Written only when it changed.
pub fn fetched(runtime_dir: &Path, commit: &str, tip: Option<&str>) {
    let Some(mut seen) = read(&runtime_dir.join(FILE)).filter(|s| s.commit == commit) else {
        return;
    };
    let tip = Tip {
        oid: tip.map(str::to_string),
    };
    if seen.fetched_tip.as_ref() != Some(&tip) {
        seen.fetched_tip = Some(tip);
        write(runtime_dir, &seen);
    }
}

/// Whether a fetch would find what the last one found for `commit`: a fetch found it
/// without its manifest, and the listing shows the manifest branch at that same `tip`
/// (`None`: still not on the remote). Reads only.
pub fn unchanged(runtime_dir: &Path, commit: &str, tip: Option<&str>) -> bool {
    read(&runtime_dir.join(FILE))
        .filter(|s| s.commit == commit)
        .and_then(|s| s.fetched_tip)
        .is_some_and(|t| t.oid.as_deref() == tip)
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

    #[test]
    fn a_fetch_without_the_manifest_is_remembered_with_the_branch_tip() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Timestamp::system_of("2026-12-07T15:00:00Z").unwrap();
        let (a, b) = ("a".repeat(40), "b".repeat(40));
        let (t1, t2) = ("1".repeat(40), "2".repeat(40));
        // Nothing fetched yet: a fetch is due.
        assert!(!unchanged(dir.path(), &a, Some(&t1)));
        // Not seen yet: nothing is noted (the wait starts with `left`).
        fetched(dir.path(), &a, Some(&t1));
        assert!(!unchanged(dir.path(), &a, Some(&t1)));
        left(dir.path(), &a, Duration::from_secs(600), t0);
        fetched(dir.path(), &a, Some(&t1));
        assert!(unchanged(dir.path(), &a, Some(&t1)));
        // The branch moved, or went away: fetch.
        assert!(!unchanged(dir.path(), &a, Some(&t2)));
        assert!(!unchanged(dir.path(), &a, None));
        // Another head: fetch.
        assert!(!unchanged(dir.path(), &b, Some(&t1)));
        // A branch that is not there, twice: no news.
        fetched(dir.path(), &a, None);
        assert!(unchanged(dir.path(), &a, None));
        assert!(!unchanged(dir.path(), &a, Some(&t1)));
        // The wait keeps its start.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            left(dir.path(), &a, Duration::from_secs(600), later),
            Some(Duration::from_secs(540))
        );
    }
}
