//! The cycle's stop for an operator's `pause` (`crate::pause`): the head was polled (so
//! `status` shows it), nothing is fetched, built or activated.

use std::time::SystemTime;

use crate::state::{Outcome, State};

use super::{short, Agent, Exit};

impl Agent {
    /// `Some` when a pause is in force: news only, exit 0. An expired pause is dropped
    /// from the state (one write, when it is first seen expired) and the cycle goes on.
    pub(super) fn paused(&self, state: &mut State, head: &str) -> Option<Exit> {
        let paused = state.paused.as_ref()?;
        if !paused.active_at(SystemTime::now()) {
            log::info!(
                "the pause ({}) ended; following the branch again",
                crate::pause::describe(paused)
            );
            state.paused = None;
            if let Err(f) = self.save(state) {
                return Some(self.stop_run(f));
            }
            return None;
        }
        let hint = "`sudo homelab-agent resume` ends the pause";
        log::info!(hint = hint; "{}", crate::failure::with_hint_line(
            format!("paused {}; branch head {} not deployed", crate::pause::describe(paused), short(head)),
            hint
        ));
        self.note_poll(Outcome::Paused, Some(head), None, None);
        Some(Exit::Ok)
    }

    /// A pause asked for while a run held the lock (`pause` during a build, which stopped
    /// it): recorded in the state now, and this run ends as paused. `None` when none was
    /// asked for.
    pub(super) fn pause_requested(&self, state: &mut State, head: &str) -> Option<Exit> {
        let asked = crate::pause::take_request(&self.settings.paths.runtime_dir)?;
        let hint = "`sudo homelab-agent resume` ends the pause";
        log::info!(hint = hint; "{}", crate::failure::with_hint_line(
            format!(
                "paused {} (asked for while this run held the lock); branch head {} not deployed",
                crate::pause::describe(&asked),
                short(head)
            ),
            hint
        ));
        state.paused = Some(asked);
        if let Err(f) = self.save(state) {
            return Some(self.stop_run(f));
        }
        self.note_poll(Outcome::Paused, Some(head), None, None);
        Some(Exit::Ok)
    }
}
