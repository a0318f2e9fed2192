//! Volatile facts kept in the runtime directory (a tmpfs under systemd): the last poll,
//! when the next one is due, and what a run is doing now (its phase). A poll that finds nothing new writes only here, never
//! to the SD card.

use std::path::Path;

use serde::{Deserialize, Serialize};

pub const FILE: &str = "last-poll.json";
pub const PROGRESS_FILE: &str = "progress.json";

/// What the run holding the lock is doing: the text it last sent as `STATUS=`. Only
/// meaningful while the lock is held (`status` probes it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    pub phase: String,
    /// When this phase began (RFC 3339).
    pub since: String,
    pub pid: u32,
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
        since: crate::state::now(),
        pid: std::process::id(),
    };
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        crate::state::write_atomic(&dir.join(PROGRESS_FILE), &serde_json::to_vec(&progress)?)
    };
    if let Err(e) = write() {
        log::debug!("cannot write {}: {e}", dir.join(PROGRESS_FILE).display());
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LastPoll {
    pub at: String,
    pub outcome: String,
    pub commit: Option<String>,
    pub error: Option<String>,
    pub phase: Option<String>,
    /// When the daemon loop polls next (RFC 3339), if running as a loop.
    pub next_poll: Option<String>,
}

/// Bounded, regular files only (a FIFO or a link to a device there must not hang or
/// flood `status`); anything unreadable is simply no last poll.
pub fn read(dir: &Path) -> Option<LastPoll> {
    match crate::state::read_bounded(&dir.join(FILE), 64 << 10) {
        Ok(crate::state::Found::File(bytes)) => serde_json::from_slice(&bytes).ok(),
        _ => None,
    }
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
    poll.next_poll = Some(humantime::format_rfc3339_seconds(at).to_string());
    write(dir, &poll);
}

#[cfg(test)]
mod tests {
    use super::*;

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
