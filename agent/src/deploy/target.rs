//! Which host a run builds: the configured one, or in map mode (the generic image) the
//! one [`crate::pivot`] finds for this machine in the fetched commit. One call from the
//! cycle; the resolved host is remembered in the state (saved with the run's record).

use crate::pivot::{self, Resolved, Target};
use crate::source::Fetched;
use crate::state::{self, Phase, State};

use super::{short, Agent, Exit};

impl Agent {
    /// The target of this run, or how the run ended: a machine the map does not know is
    /// a configuration matter (news only, nothing marked bad, the next run looks again).
    pub(super) async fn target(
        &self,
        state: &mut State,
        fetched: &Fetched,
    ) -> Result<Target, Exit> {
        let remembered = state.pivot.as_ref();
        let source = self.doors.source.as_ref();
        let target = pivot::resolve(&self.settings, remembered, &fetched.commit, source)
            .await
            .map_err(|f| self.not_tried(Some(&fetched.commit), Phase::Verify, f))?;
        if let Some(by) = &target.by {
            let known = state
                .pivot
                .as_ref()
                .map(|r| (r.host.as_str(), r.by.as_str()));
            if known != Some((target.host.as_str(), by.as_str())) {
                log::info!(
                    "this machine is {} ({by}, per {}): deploying it",
                    target.host,
                    short(&fetched.commit)
                );
                state.pivot = Some(Resolved {
                    host: target.host.clone(),
                    by: by.clone(),
                    commit: fetched.commit.clone(),
                    at: state::now(),
                });
            }
        }
        Ok(target)
    }
}
