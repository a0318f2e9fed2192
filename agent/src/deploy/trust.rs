//! The trust gate of the cycle (agent/src/trust): after the fetch and before the build, a
//! head that is unsigned, signed by no allowed key, or older than what this machine runs
//! is refused. A refusal is recorded once (history, `status` `refused`); while the head
//! and the trust policy stay the same, later polls refuse it again without fetching,
//! running a tool, or writing to disk. It is not a bad commit: nothing was built, and a
//! new key file or an `allow_downgrade` lets the same head through.

use sha1::{Digest, Sha1};

use crate::config::trust::Verify;
use crate::failure::Kind;
use crate::logging::message_id;
use crate::source::Fetched;
use crate::state::{self, Outcome, Phase, Refused, Run, State};
use crate::trust::{self, Floor, Reason, Verdict};

use super::{short, Agent, Exit};

impl Agent {
    /// The commits the head must descend from: the deployed one (state file) and the one
    /// the running system is stamped with (survives the loss of the state file).
    fn floors(&self, state: &State) -> Vec<Floor> {
        let mut floors = Vec::new();
        if let Some(c) = state.deployed.as_ref().and_then(|d| d.commit.clone()) {
            floors.push(Floor {
                commit: c,
                from: "the deployed commit in the state file".into(),
            });
        }
        // The running system's stamp, unless a testing-branch test runs now: its stamp is
        // the testing commit, which main need not contain; main's system is the boot
        // default then. After the state file is lost nothing says a test is live, but a
        // live system that is not the boot default is never main's deployment (those
        // always become the boot default): the boot default's stamp is the floor then too.
        let running = self.doors.machine.current_system();
        let boot_default = self.doors.machine.profile().map(|g| g.system);
        let on_test = running
            .as_ref()
            .is_some_and(|c| super::testing::on_test(state, &c.display().to_string()));
        let not_boot_default = match (&running, &boot_default) {
            (Some(live), Some(boot)) => live != boot,
            _ => false,
        };
        let (system, which) = if on_test || not_boot_default {
            (boot_default, "the boot default's")
        } else {
            (
                Some(self.settings.paths.current_system.clone()),
                "the running system's",
            )
        };
        if let Some((c, file)) = system.and_then(|s| trust::stamp::read(&s)) {
            if !floors.iter().any(|f| f.commit == c) {
                floors.push(Floor {
                    commit: c,
                    from: format!("{which} configurationRevision, {}", file.display()),
                });
            }
        }
        floors
    }

    /// A digest of everything a refusal depends on: mode, key file contents, downgrade
    /// policy, floors. No key material is stored, only this hash.
    pub(super) fn trust_policy(&self, floors: &[Floor]) -> String {
        let t = &self.settings.source.trust;
        let mut h = Sha1::new();
        h.update(t.verify.as_str());
        let file = match &t.verify {
            Verify::None => None,
            Verify::Ssh {
                allowed_signers_file,
            } => Some(allowed_signers_file),
            Verify::Gpg { keyring } => Some(keyring),
        };
        if let Some(f) = file {
            h.update(f.display().to_string());
            h.update(trust::read_small(f, 16 << 20).unwrap_or_default());
        }
        h.update([t.allow_downgrade as u8]);
        for f in floors {
            h.update(&f.commit);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Before the fetch: the head was refused under the same policy; refused again at once.
    pub(super) fn still_refused(&self, state: &State, head: &str) -> Option<Exit> {
        let r = state.refused.as_ref().filter(|r| r.commit == head)?;
        if r.policy != self.trust_policy(&self.floors(state)) {
            return None;
        }
        log::info!(
            "head {} was refused at {} ({}): not fetched again until the branch or the trust policy changes",
            short(head),
            r.at,
            r.reason.as_str()
        );
        self.note_poll(
            Outcome::Failed,
            Some(head),
            Some(&r.error),
            Some(Phase::Verify),
        );
        Some(Exit::Failed(Kind::Commit))
    }

    /// After the fetch: the signature and ancestry checks. `None` lets the head through.
    pub(super) async fn refuse_untrusted(
        &self,
        state: &mut State,
        fetched: &Fetched,
    ) -> Option<Exit> {
        let floors = self.floors(state);
        let refusal = match self.doors.source.verify(&fetched.commit, &floors).await {
            Ok(checked) => {
                if let Some(signer) = checked.signer {
                    log::info!(commit = fetched.commit.as_str(); "{} is signed by {signer}", short(&fetched.commit));
                }
                // Saved with this run's record.
                state.refused = None;
                return None;
            }
            Err(Verdict::Failed(f)) => {
                return Some(self.not_tried(Some(&fetched.commit), Phase::Verify, f))
            }
            Err(Verdict::Refused(r)) => r,
        };
        let error = format!("{}\nexpected: {}", refusal.message, refusal.expected);
        let hint = hint(refusal.reason);
        log::error!(commit = fetched.commit.as_str(), message_id = message_id::FAILED, hint = hint; "{}", crate::failure::with_hint_line(&error, hint));
        let mut run = Run::new(Outcome::Failed);
        run.commit = Some(fetched.commit.clone());
        run.subject = Some(fetched.subject.clone());
        run.phase = Some(Phase::Verify);
        run.error = Some(error.clone());
        run.hint = Some(hint.to_string());
        state.refused = Some(Refused {
            commit: fetched.commit.clone(),
            at: state::now(),
            reason: refusal.reason,
            error,
            hint: Some(hint.to_string()),
            expected: refusal.expected,
            policy: self.trust_policy(&floors),
        });
        Some(match self.finish(state, run) {
            Ok(()) => Exit::Failed(Kind::Commit),
            Err(f) => self.stop_run(f),
        })
    }
}

fn hint(reason: Reason) -> &'static str {
    match reason {
        Reason::Downgrade => {
            "to go back, push a new commit on top (git revert); or set [source] allow_downgrade = true"
        }
        _ => {
            "push a commit signed by an allowed key, or add its key to the file above (the head is checked again when that file changes)"
        }
    }
}
