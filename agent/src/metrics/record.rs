//! What the metrics need that no other record keeps, kept in the runtime directory
//! (`metrics.json`, a tmpfs under systemd; gone after a reboot, and so are the facts):
//! poll failures, since when the branch head is the one it is, since when a reboot is
//! required. Written only when one of them changes: an idle poll writes nothing.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::time::{lenient, Timestamp};

pub const FILE: &str = "metrics.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Record {
    /// Polls that failed to reach the remote, since the runtime directory was created.
    pub poll_failures_total: u64,
    /// Polls that failed in a row (0 after one that reached the remote).
    pub poll_failures_consecutive: u64,
    /// The branch head last seen, and when it was first seen. Times are read leniently,
    /// as the runtime directory's other files: one that is not a time is none.
    pub head: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub head_since: Option<Timestamp>,
    /// When a reboot was first seen to be required; none while it is not.
    #[serde(deserialize_with = "lenient")]
    pub reboot_required_since: Option<Timestamp>,
}

impl Record {
    pub fn read(dir: &Path) -> Record {
        match crate::state::read_bounded(&dir.join(FILE), 64 << 10) {
            Ok(crate::state::Found::File(bytes)) => {
                serde_json::from_slice(&bytes).unwrap_or_default()
            }
            _ => Record::default(),
        }
    }

    pub fn write(&self, dir: &Path) {
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            crate::state::write_atomic(&dir.join(FILE), &serde_json::to_vec(self)?)
        };
        if let Err(e) = write() {
            log::warn!("cannot write {}: {e}", dir.join(FILE).display());
        }
    }

    /// A poll ended: `failed` when it could not reach the remote.
    pub fn poll(&mut self, failed: bool) {
        if failed {
            self.poll_failures_total += 1;
            self.poll_failures_consecutive += 1;
        } else {
            self.poll_failures_consecutive = 0;
        }
    }

    /// The head now known (none: not yet seen) and whether a reboot is required, at `now`.
    pub fn observe(&mut self, head: Option<&str>, reboot_required: bool, now: Timestamp) {
        if let Some(head) = head {
            if self.head.as_deref() != Some(head) {
                self.head = Some(head.to_string());
                self.head_since = Some(now);
            }
        }
        match (reboot_required, &self.reboot_required_since) {
            (true, None) => self.reboot_required_since = Some(now),
            (false, Some(_)) => self.reboot_required_since = None,
            _ => {}
        }
    }
}
