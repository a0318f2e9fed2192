//! Volatile facts kept in the runtime directory (a tmpfs under systemd): the last poll,
//! when the next one is due, and what a run is doing now (its phase). A poll that finds nothing new writes only here, never
//! to the SD card.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::time::{lenient, Timestamp};

pub const FILE: &str = "last-poll.json";
pub const PROGRESS_FILE: &str = "progress.json";

/// What the run holding the lock is doing: the text it last sent as `STATUS=`. Only
/// meaningful while the lock is held (`status` probes it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    pub phase: String,
    /// When this phase began (RFC 3339); none if unreadable.
    #[serde(deserialize_with = "lenient")]
    pub since: Option<Timestamp>,
    pub pid: u32,
    /// What nix reports while building (added; `running.progress` in `status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildProgress>,
}

/// nix's progress while it builds, counted from `--log-format internal-json`
/// (`nix::progress`): written here at most once a second, never to the SD card.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildProgress {
    pub derivations_built: u64,
    pub derivations_total: u64,
    pub paths_fetched: u64,
    pub paths_total: u64,
    pub bytes_fetched: u64,
    pub bytes_total: u64,
    /// The derivation being built now (its name, without hash), else the path being
    /// fetched.
    pub current: Option<String>,
    /// When nix last reported (RFC 3339); none if unreadable.
    #[serde(deserialize_with = "lenient")]
    pub at: Option<Timestamp>,
}

impl BuildProgress {
    /// "building 3/17 derivations, fetched 120/300 paths (45.0 MiB), now: linux-6.6".
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.derivations_total > 0 {
            parts.push(format!(
                "building {}/{} derivations",
                self.derivations_built, self.derivations_total
            ));
        }
        if self.paths_total > 0 {
            parts.push(format!(
                "fetched {}/{} paths ({})",
                self.paths_fetched,
                self.paths_total,
                mib(self.bytes_fetched)
            ));
        }
        if parts.is_empty() {
            parts.push("evaluating".into());
        }
        let mut text = parts.join(", ");
        if let Some(now) = &self.current {
            text.push_str(&format!(", now: {now}"));
        }
        text
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

pub fn read_progress(dir: &Path) -> Option<Progress> {
    // Bounded and non-blocking, like every file read (`status` reads it too).
    match crate::state::read_bounded(&dir.join(PROGRESS_FILE), 64 << 10) {
        Ok(crate::state::Found::File(bytes)) => serde_json::from_slice(&bytes).ok(),
        _ => None,
    }
}

pub fn write_progress(dir: &Path, phase: &str) {
    let progress = Progress {
        phase: phase.to_string(),
        since: Some(Timestamp::now()),
        pid: std::process::id(),
        build: None,
    };
    put_progress(dir, &progress);
}

/// Adds nix's progress to this run's phase in the progress file (the phase and its
/// start stay).
pub fn write_build_progress(dir: &Path, build: &BuildProgress) {
    let me = std::process::id();
    let mut progress = read_progress(dir)
        .filter(|p| p.pid == me)
        .unwrap_or_else(|| Progress {
            phase: "building".into(),
            since: Some(Timestamp::now()),
            pid: me,
            build: None,
        });
    progress.build = Some(build.clone());
    put_progress(dir, &progress);
}

fn put_progress(dir: &Path, progress: &Progress) {
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        crate::state::write_atomic(&dir.join(PROGRESS_FILE), &serde_json::to_vec(progress)?)
    };
    if let Err(e) = write() {
        log::debug!("cannot write {}: {e}", dir.join(PROGRESS_FILE).display());
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LastPoll {
    /// When the poll ended (RFC 3339); none if unreadable.
    #[serde(deserialize_with = "lenient")]
    pub at: Option<Timestamp>,
    pub outcome: String,
    pub commit: Option<String>,
    pub error: Option<String>,
    /// What to do about `error` (absent: its kind's hint applies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub phase: Option<String>,
    /// When the daemon loop polls next (RFC 3339), if running as a loop.
    #[serde(deserialize_with = "lenient")]
    pub next_poll: Option<Timestamp>,
}

/// Bounded, regular files only (a FIFO or a link to a device there must not hang or
/// flood `status`); anything unreadable is simply no last poll.
/// A poll written by a version that joined the hint to the error is read with the two
/// apart.
pub fn read(dir: &Path) -> Option<LastPoll> {
    let mut poll: LastPoll = match crate::state::read_bounded(&dir.join(FILE), 64 << 10) {
        Ok(crate::state::Found::File(bytes)) => serde_json::from_slice(&bytes).ok()?,
        _ => return None,
    };
    if let (Some(error), None) = (&poll.error, &poll.hint) {
        let (message, hint) = crate::failure::split_stored_hint(error);
        (poll.error, poll.hint) = (Some(message), hint);
    }
    Some(poll)
}

pub fn write(dir: &Path, poll: &LastPoll) {
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        crate::state::write_atomic(&dir.join(FILE), &serde_json::to_vec(poll)?)
    };
    if let Err(e) = write() {
        // Only the freshness of `status` suffers; never fail a run for it.
        log::warn!("cannot write {}: {e}", dir.join(FILE).display());
    }
}

pub fn set_next_poll(dir: &Path, at: std::time::SystemTime) {
    let mut poll = read(dir).unwrap_or_default();
    poll.next_poll = Some(Timestamp::from_system(at));
    write(dir, &poll);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A last poll from before hints were kept apart (issue 22) is read with its hint
    /// apart; one written now keeps them apart.
    #[test]
    fn an_old_last_poll_is_read_with_its_hint_apart() {
        let dir = tempfile::tempdir().unwrap();
        let joined = ["cannot reach h: refused", "\n", "hint: check the network"].concat();
        let old = serde_json::json!({"at": "t", "outcome": "failed", "error": joined});
        std::fs::write(dir.path().join(FILE), old.to_string()).unwrap();
        let poll = read(dir.path()).unwrap();
        assert_eq!(poll.error.as_deref(), Some("cannot reach h: refused"));
        assert_eq!(poll.hint.as_deref(), Some("check the network"));
        write(dir.path(), &poll);
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.contains("\"hint\":\"check the network\""), "{text}");
    }

    /// Files the string-timed version wrote (issue 22: times are [`Timestamp`] now) load
    /// unchanged and are written back byte for byte.
    #[test]
    fn old_runtime_files_load_and_are_rewritten_identically() {
        let dir = tempfile::tempdir().unwrap();
        let poll = concat!(
            r#"{"at":"2026-11-24T12:00:00Z","outcome":"failed","commit":"c1","#,
            r#""error":"cannot reach h","hint":"check the network","phase":"fetch","#,
            r#""next_poll":"2026-11-24T12:05:00Z"}"#
        );
        std::fs::write(dir.path().join(FILE), poll).unwrap();
        let read_back = read(dir.path()).unwrap();
        assert_eq!(read_back.at, Some("2026-11-24T12:00:00Z".into()));
        assert_eq!(read_back.next_poll, Some("2026-11-24T12:05:00Z".into()));
        write(dir.path(), &read_back);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(FILE)).unwrap(),
            poll
        );

        let progress = concat!(
            r#"{"phase":"building","since":"2026-11-24T11:58:00Z","pid":7,"build":"#,
            r#"{"derivations_built":3,"derivations_total":17,"paths_fetched":1,"#,
            r#""paths_total":2,"bytes_fetched":3,"bytes_total":4,"current":"linux","#,
            r#""at":"2026-11-24T11:59:59Z"}}"#
        );
        std::fs::write(dir.path().join(PROGRESS_FILE), progress).unwrap();
        let read_back = read_progress(dir.path()).unwrap();
        assert_eq!(read_back.since, Some("2026-11-24T11:58:00Z".into()));
        put_progress(dir.path(), &read_back);
        let text = std::fs::read_to_string(dir.path().join(PROGRESS_FILE)).unwrap();
        assert_eq!(text, progress);
    }

    /// A time that cannot be read (empty, as a poll with no time was written, or not a
    /// time) is no time; the rest of the file still reads.
    #[test]
    fn an_unreadable_time_is_none_and_the_rest_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let old = r#"{"at":"","outcome":"up-to-date","next_poll":"soon"}"#;
        std::fs::write(dir.path().join(FILE), old).unwrap();
        let poll = read(dir.path()).unwrap();
        assert_eq!((poll.at, poll.next_poll), (None, None));
        assert_eq!(poll.outcome, "up-to-date");
        std::fs::write(dir.path().join(FILE), r#"{"at":7,"outcome":"x"}"#).unwrap();
        assert_eq!(read(dir.path()).unwrap().outcome, "x");
    }

    #[test]
    fn a_fifo_or_device_link_is_no_last_poll_and_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        assert!(read(dir.path()).is_none());
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        assert!(read(dir.path()).is_none());
        std::fs::remove_file(&path).unwrap();
        write(
            dir.path(),
            &LastPoll {
                outcome: "up-to-date".into(),
                ..LastPoll::default()
            },
        );
        assert_eq!(read(dir.path()).unwrap().outcome, "up-to-date");
    }
}
