//! A testing-branch head the trust checks refused (agent/src/trust): recorded once
//! (history, the state's `testing_refused`), then neither fetched nor checked again while
//! that head and the trust policy stay the same, as main's refusal (deploy/trust.rs). A
//! new commit on the branch, or a new key file, is checked afresh. There is no downgrade
//! floor here: a testing branch is expected to move back and forth.

use crate::failure::Kind;
use crate::logging::message_id;
use crate::source::Fetched;
use crate::state::{self, Outcome, Phase, Refused, Run, State};
use crate::trust::Verdict;

use super::on_branch;
use crate::deploy::{short, Agent, Exit};

impl Agent {
    /// Before the fetch: `head` was refused under the same policy; refused again at once
    /// (the same exit as the first time), and nothing is fetched, checked or written.
    pub(super) fn testing_still_refused(
        &self,
        state: &State,
        branch: &str,
        head: &str,
    ) -> Option<Exit> {
        let r = state
            .testing_refused
            .as_ref()
            .filter(|r| r.commit == head)?;
        if r.policy != self.trust_policy(&[]) {
            return None;
        }
        log::info!(
            "{branch} at {} was refused at {} ({}): not fetched again until the branch or the trust policy changes",
            short(head),
            r.at,
            r.reason.as_str()
        );
        let error = format!("testing branch {branch}: {}", r.error);
        // No commit in the last poll: there, a commit is main's head.
        self.note_poll(Outcome::Failed, None, Some(&error), Some(Phase::Verify));
        Some(Exit::Failed(Kind::Commit))
    }

    /// After the fetch: the signature checks. `None` lets the commit through; a refusal
    /// is logged, recorded in history and remembered.
    pub(super) async fn testing_untrusted(
        &self,
        state: &mut State,
        branch: &str,
        fetched: &Fetched,
    ) -> Option<Exit> {
        let refusal = match self.doors.source.verify(&fetched.commit, &[]).await {
            Ok(_) => {
                // Saved with this run's record.
                state.testing_refused = None;
                return None;
            }
            Err(Verdict::Failed(f)) => {
                return Some(self.not_tried(None, Phase::Verify, on_branch(branch, f)))
            }
            Err(Verdict::Refused(r)) => r,
        };
        let error = format!("{}\nexpected: {}", refusal.message, refusal.expected);
        let hint = "sign the commit with an allowed key; nothing was built or activated";
        log::error!(commit = fetched.commit.as_str(), message_id = message_id::FAILED, hint = hint; "testing branch {}", crate::failure::with_hint_line(format!("{branch}: {error}"), hint));
        let mut run = Run::new(Outcome::Failed);
        run.commit = Some(fetched.commit.clone());
        run.subject = Some(fetched.subject.clone());
        run.phase = Some(Phase::Verify);
        run.error = Some(format!("testing branch {branch}: {error}"));
        run.hint = Some(hint.to_string());
        state.testing_refused = Some(Refused {
            commit: fetched.commit.clone(),
            at: state::now(),
            reason: refusal.reason,
            error,
            hint: Some(hint.to_string()),
            expected: refusal.expected,
            policy: self.trust_policy(&[]),
        });
        Some(match self.finish_noting(state, run, None) {
            Ok(()) => Exit::Failed(Kind::Commit),
            Err(f) => self.stop_run(f),
        })
    }
}
