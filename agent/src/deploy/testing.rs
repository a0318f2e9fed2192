//! The per-host testing branch (`[source] testing_branch`, e.g. `testing/pi1`): a commit
//! there is built, activated with `switch-to-configuration test` only, health-checked and
//! reported; it never becomes a profile generation or the boot default, so a reboot
//! returns to main's deployed system.
//!
//! ```text
//! main idle (up to date, or its head known bad) → testing head → (bad? handled?) → fetch
//!      → the cycle's steps on the testing track (track.rs): build → same system?
//!        unchanged → activation protocol, test plan → record (here)
//! ```
//!
//! Main always comes first: a run that has a main commit to deploy does only that, and
//! the deployment replaces whatever was on test. A failed test is rolled back like any
//! deployment (to the boot default) and its commit remembered as bad. Promote a tested
//! commit by merging the testing branch into main (README "Per-host testing branches").

mod refusal;

use std::path::Path;
use std::time::Instant;

use crate::failure::Failure;
use crate::ledger::Took;
use crate::logging::message_id;
use crate::notify;
use crate::source::{Fetched, TestingHead};
use crate::state::{self, Outcome, Phase, State, Testing};

use super::activate::Ending;
use super::record::wrong_ending;
use super::track::Track;
use super::{short, Agent, Exit};

/// Whether `system` (what runs) is the testing branch's healthy, test-activated system.
pub(super) fn on_test(state: &State, system: &str) -> bool {
    state
        .testing
        .as_ref()
        .is_some_and(|t| t.live(Some(Path::new(system))))
}

impl Agent {
    /// After main was found idle (`exit` is how that ended): the testing branch's turn,
    /// with its head from the poll's listing of refs (`listed`). Anything but
    /// [`Exit::Ok`] for main, or no testing branch: `exit` unchanged.
    pub(super) async fn after_main(
        &self,
        state: &mut State,
        exit: Exit,
        listed: Option<TestingHead>,
    ) -> Exit {
        let Some(branch) = self.settings.source.testing_branch.clone() else {
            return exit;
        };
        if exit != Exit::Ok {
            return exit;
        }
        let head = match self.testing_head(&branch, listed).await {
            Ok(Some(head)) => head,
            Ok(None) => return exit,
            Err(f) => return self.not_tried(None, Phase::Fetch, on_branch(&branch, f)),
        };
        if state.bad(&head).is_some() {
            log::info!(
                "{branch} at {} failed here before: not tested again until the branch moves",
                short(&head)
            );
            return exit;
        }
        if let Some(refused) = self.testing_still_refused(state, &branch, &head) {
            return refused;
        }
        // Handled, unless it failed and `retry` has since forgotten that (not bad any more).
        if state
            .testing
            .as_ref()
            .is_some_and(|t| t.commit == head && t.outcome != Outcome::Failed)
        {
            return exit;
        }
        if let Some(waiting) = self.testing_waits(state, &branch, &head) {
            return waiting;
        }
        notify::status(&format!("fetching {} ({branch})", short(&head)));
        let fetched = match self.doors.source.fetch_testing().await {
            Ok(f) => f,
            Err(f) => return self.not_tried(None, Phase::Fetch, on_branch(&branch, f)),
        };
        if let Some(refused) = self.testing_untrusted(state, &branch, &fetched).await {
            return refused;
        }
        self.test(state, &branch, &fetched).await
    }

    /// The testing branch's head: from the poll's listing when it covered this branch
    /// (the one round trip of an idle poll), else asked for on its own.
    async fn testing_head(
        &self,
        branch: &str,
        listed: Option<TestingHead>,
    ) -> Result<Option<String>, Failure> {
        match listed {
            Some(t) if t.branch == branch => Ok(t.commit),
            // A source that does not list it with main's head (a git child process
            // whose configuration names another branch, a test door).
            _ => self.doors.source.testing_head().await,
        }
    }

    /// Builds and test-activates one commit of the testing branch: the cycle's steps on
    /// its testing track (track.rs).
    async fn test(&self, state: &mut State, branch: &str, fetched: &Fetched) -> Exit {
        // Resolved, never remembered: only main's commits decide which host this
        // machine follows (target.rs).
        let source = self.doors.source.as_ref();
        let target = match crate::pivot::resolve(
            &self.settings,
            state.pivot.as_ref(),
            &fetched.commit,
            source,
        )
        .await
        {
            Ok(target) => target,
            Err(f) => return self.not_tried(None, Phase::Verify, on_branch(branch, f)),
        };
        self.deliver(state, Track::Testing { branch }, fetched, &target)
            .await
    }

    /// The build failed: the commit's fault marks it bad (recorded); any other waits out
    /// the same backoff as main's builds, as news.
    pub(super) fn test_build_failed(
        &self,
        state: &mut State,
        branch: &str,
        fetched: &Fetched,
        f: Failure,
        started: Instant,
        took: Took,
    ) -> Exit {
        self.doors.builder.release();
        let f = on_branch(branch, f);
        if !f.kind.blames_commit() {
            // One backoff slot: main is never waiting when the testing branch gets a turn.
            let wait = match self.back_off(state, &fetched.commit, f.kind) {
                Ok((_, wait)) => wait,
                Err(exit) => return exit,
            };
            let f = f.map_message(|m| {
                format!(
                    "{m}\n(not built again for {})",
                    crate::duration::format_duration(wait)
                )
            });
            // No commit in the last poll: there, a commit is main's head.
            return self.not_tried(None, Phase::Build, f);
        }
        let mut run = self.run_record(Outcome::Failed, fetched, started, took);
        run.phase = Some(Phase::Build);
        run.error = Some(f.message.clone());
        run.hint = f.hint.clone();
        self.ledger
            .mark_bad(state, &fetched.commit, Phase::Build, &f.to_string(), None);
        self.set_testing(state, branch, fetched, Outcome::Failed, None);
        log::error!(commit = fetched.commit.as_str(), message_id = message_id::FAILED, hint = f.hint_or_kind(); "{f}");
        self.close(state, run, Exit::Failed(f.kind))
    }

    /// The testing commit builds what already runs: nothing to test.
    pub(super) fn record_test_unchanged(
        &self,
        state: &mut State,
        branch: &str,
        fetched: &Fetched,
        system: &Path,
        started: Instant,
        took: Took,
    ) -> Exit {
        let shown = system.display().to_string();
        let commit = short(&fetched.commit);
        log::info!("{commit} ({branch}) builds the running system {shown}: nothing to test");
        self.doors.builder.release();
        let mut run = self.run_record(Outcome::Unchanged, fetched, started, took);
        run.system = Some(shown.clone());
        self.set_testing(state, branch, fetched, Outcome::Unchanged, Some(&shown));
        self.close(state, run, Exit::Ok)
    }

    /// Records how a test activation ended.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_test(
        &self,
        state: &mut State,
        branch: &str,
        fetched: &Fetched,
        system: &Path,
        ending: Ending,
        started: Instant,
        took: Took,
    ) -> Exit {
        let (shown, commit) = (system.display().to_string(), short(&fetched.commit));
        self.doors.builder.release();
        state.intent = None;
        let mut run = self.run_record(Outcome::Tested, fetched, started, took);
        run.system = Some(shown.clone());
        let exit = match ending {
            Ending::Tested { checks } => {
                run.checks = checks;
                self.set_testing(state, branch, fetched, Outcome::Tested, Some(&shown));
                log::info!(
                    commit = fetched.commit.as_str(), system = shown.as_str();
                    "testing {commit} ({}) from {branch}: healthy, live until the next reboot or deployment (the boot default is unchanged)",
                    fetched.subject
                );
                Exit::Ok
            }
            Ending::Failed { failed, back } => {
                let (test, phase) = (format!("{commit} ({branch})"), failed.phase);
                let (f, exit) = self.record_failure(state, &mut run, failed, back, Some(&test));
                if f.kind.blames_commit() {
                    self.ledger.mark_bad(
                        state,
                        &fetched.commit,
                        phase,
                        &f.to_string(),
                        Some(&shown),
                    );
                }
                self.set_testing(state, branch, fetched, Outcome::Failed, Some(&shown));
                exit
            }
            Ending::Committed { generation, checks } => {
                let error =
                    format!("the test of {commit} was committed as generation {generation}");
                wrong_ending(&mut run, checks, error)
            }
            Ending::Live { checks } => {
                let error = format!("the test of {commit} ended as a deployment");
                wrong_ending(&mut run, checks, error)
            }
        };
        self.close(state, run, exit)
    }

    /// The testing head is waiting out a build backoff: said, and the same exit.
    fn testing_waits(&self, state: &State, branch: &str, head: &str) -> Option<Exit> {
        let (kind, message) = super::backoff::backoff_left(state, head, &self.settings.digest)?;
        let message = format!("testing branch {branch}: {message}");
        log::info!("{}", message.lines().next().unwrap_or_default());
        self.note_poll(Outcome::Failed, None, Some(&message), Some(Phase::Build));
        Some(Exit::Failed(kind))
    }

    fn set_testing(
        &self,
        state: &mut State,
        branch: &str,
        fetched: &Fetched,
        outcome: Outcome,
        system: Option<&str>,
    ) {
        if state
            .retries
            .as_ref()
            .is_some_and(|r| r.commit == fetched.commit)
        {
            state.retries = None;
        }
        state.testing = Some(Testing {
            branch: branch.to_string(),
            commit: fetched.commit.clone(),
            subject: Some(fetched.subject.clone()),
            outcome,
            system: system.map(str::to_string),
            at: state::now(),
        });
    }
}

/// Names the testing branch in a failure's message (its kind is kept).
fn on_branch(branch: &str, f: Failure) -> Failure {
    f.map_message(|m| format!("testing branch {branch}: {m}"))
}
