//! The orphan guard (issue 20; system/reach.rs says what is looked at): a built system
//! that would no longer run the agent, or no longer let anyone in over ssh, is refused
//! before it is activated, as a failure of the commit. `[activation]
//! require_agent_and_ssh = false` lets such a commit deploy (a machine being retired).

use std::path::Path;
use std::time::Instant;

use crate::failure::Kind;
use crate::ledger::Took;
use crate::logging::message_id;
use crate::source::Fetched;
use crate::state::{Outcome, Phase, State};
use crate::system::reach::Lost;

use super::{short, Agent, Exit};

impl Agent {
    /// `Some(exit)` when `system` (built for `host`) was refused and recorded.
    pub(super) fn refuse_orphan(
        &self,
        state: &mut State,
        fetched: &Fetched,
        system: &Path,
        host: &str,
        started: Instant,
        took: Took,
    ) -> Option<Exit> {
        if !self.settings.activation.require_agent_and_ssh {
            return None;
        }
        let lost = self.doors.machine.lost(system);
        if lost.is_empty() {
            return None;
        }
        let message = refusal(&fetched.commit, host, &lost);
        log::error!(commit = fetched.commit.as_str(), message_id = message_id::FAILED; "{message}");
        self.doors.builder.release();
        let mut run = self.run_record(Outcome::Failed, fetched, started, took);
        run.phase = Some(Phase::Activate);
        run.rolled_back = Some(false);
        run.system = Some(system.display().to_string());
        run.error = Some(message.clone());
        self.ledger
            .mark_bad(state, &fetched.commit, Phase::Activate, &message, None);
        state.last_handled = Some(fetched.commit.clone());
        Some(self.close(state, run, Exit::Failed(Kind::Commit)))
    }
}

/// "commit abc12345 would remove homelab-agent from pi1: it would never update again;
/// ... not activated" with the key that overrides it.
fn refusal(commit: &str, host: &str, lost: &[Lost]) -> String {
    let what: Vec<String> = lost
        .iter()
        .map(|l| format!("{} {host}: {}", l.what(), l.consequence()))
        .collect();
    format!(
        "commit {} would {}; not activated\nhint: keep services.homelab-agent and services.openssh enabled in {host}'s configuration; to deploy it anyway (a machine being retired), set [activation] require_agent_and_ssh = false (NixOS: services.homelab-agent.settings.activation.require_agent_and_ssh = false)",
        short(commit),
        what.join(", and would ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_says_what_would_be_lost_where_and_how_to_override() {
        let m = refusal("0123456789abcdef", "pi1", &[Lost::Agent, Lost::Ssh]);
        assert!(
            m.starts_with("commit 01234567 would remove homelab-agent from pi1: it would never update again, and would disable sshd on pi1: nobody could log in to fix it; not activated\nhint: "),
            "{m}"
        );
        assert!(m.contains("require_agent_and_ssh = false"), "{m}");
    }
}
