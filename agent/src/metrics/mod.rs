//! Prometheus textfile metrics (the node_exporter textfile-collector convention): with
//! `[metrics] textfile_dir` set, the agent keeps `<dir>/homelab_agent.prom` up to date
//! after every cycle and every operator command, and when an activation starts (so that a
//! run killed in it leaves "activating since T, deadline D" behind: docs/monitoring.md).
//!
//! The file is a pure function of what `status` shows plus a small runtime record
//! (`record.rs`), rendered (`render.rs`) and compared with the file that is there: only a
//! change is written (a temp file in the same directory, then a rename: a scrape never
//! sees half a file). An idle poll writes nothing.
//!
//! | file         | owns                                                          |
//! |--------------|---------------------------------------------------------------|
//! | `mod.rs`     | when to refresh, and the atomic compare-and-write             |
//! | `render.rs`  | the exposition text                                           |
//! | `record.rs`  | poll failures, head and reboot-required "since" times         |

mod record;
mod render;
#[cfg(test)]
mod tests;

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use crate::config::Settings;
use crate::status::{self, Status};

pub use record::Record;
pub use render::{render, Snapshot};

/// The file written in `[metrics] textfile_dir` (node_exporter reads `*.prom`).
pub const FILE: &str = "homelab_agent.prom";

/// What to refresh after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// A poll-and-deploy cycle that held the lock: counts a poll, failed or not.
    Cycle,
    /// An operator command (`pause`, `resume`, `rollback`, `retry`): no poll.
    Command,
    /// An activation begins (its intent is on disk): the file says `running` with the
    /// activation's start and deadline, so a run killed in the middle leaves that behind
    /// (the alert rules turn a deadline in the past into `HomelabAgentNeedsAttention`).
    Activating,
}

/// Brings the metrics file up to date, if `[metrics] textfile_dir` is set. Called by the
/// holder of the run lock, its work done (so the view is not "running"; and no two
/// agents write at once). Never fails a run: a problem is logged.
pub fn refresh(settings: &Settings, after: After) {
    let Some(dir) = &settings.metrics.textfile_dir else {
        return;
    };
    let runtime_dir = &settings.paths.runtime_dir;
    let (state, problem) = status::load_state(&settings.paths.state_dir);
    let mut facts = status::Facts::settled(settings, state, problem);
    if after == After::Activating {
        // This process holds the run lock and is activating: `running`, not interrupted.
        facts.lock = Some(crate::lock::Probe::Held(Some(std::process::id())));
    }
    let state = facts.state.clone();
    let poll_failed = facts
        .poll
        .as_ref()
        .is_some_and(|p| p.outcome == "failed" && p.phase.as_deref() == Some("fetch"));
    let view = Status::from_facts(settings, facts);

    let mut record = Record::read(runtime_dir);
    let before = record.clone();
    if after == After::Cycle {
        record.poll(poll_failed);
    }
    record.observe(
        view.head.as_ref().map(|h| h.commit.as_str()),
        view.reboot_required == Some(true),
        crate::state::now(),
    );
    if record != before {
        record.write(runtime_dir);
    }

    let text = render(&Snapshot {
        version: env!("CARGO_PKG_VERSION"),
        view: &view,
        state: &state,
        paused: crate::pause::active(&state),
        record: &record,
        activation_budget: render::activation_budget(settings),
    });
    let written = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .and_then(|()| write_if_changed(dir, text.as_bytes()));
    if let Err(e) = written {
        let hint =
            "check [metrics] textfile_dir: the agent (root) must be able to create and write it";
        log::warn!(hint = hint; "{}", crate::failure::with_hint_line(
            format!("cannot write the metrics file {}: {e}", dir.join(FILE).display()),
            hint
        ));
    }
}

/// Writes `<dir>/homelab_agent.prom` unless it already holds exactly `text`; returns
/// whether it wrote. Written like the state ([`crate::state::write_atomic`]: a temp file
/// never through a link, fsync, rename): readers see the old file or the new one, and the
/// temp name does not end in `.prom`, so node_exporter ignores it while it is written.
pub fn write_if_changed(dir: &Path, text: &[u8]) -> std::io::Result<bool> {
    let path = dir.join(FILE);
    if let Ok(crate::state::Found::File(old)) = crate::state::read_bounded(&path, 1 << 20) {
        if old == text {
            return Ok(false);
        }
    }
    // One left by a writer that was killed (writers hold the run lock: none is in progress).
    crate::state::remove_stale_temps(dir, FILE);
    crate::state::write_atomic(&path, text).map(|()| true)
}
