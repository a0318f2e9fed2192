//! The per-host testing branch (`[source] testing_branch`, e.g. `testing/pi1`): a commit
//! there is built, activated with `switch-to-configuration test` only, health-checked and
//! reported; it never becomes a profile generation or the boot default, so a reboot
//! returns to main's deployed system.
//!
//! ```text
//! main idle (up to date, or its head known bad) → testing head → (bad? handled?) → fetch
//!      → build → same system? unchanged → activation protocol, test plan → record
//! ```
//!
//! Main always comes first: a run that has a main commit to deploy does only that, and
//! the deployment replaces whatever was on test. A failed test is rolled back like any
//! deployment (to the boot default) and its commit remembered as bad. Promote a tested
//! commit by merging the testing branch into main (README "Per-host testing branches").

use std::path::Path;
use std::time::Instant;

use crate::failure::Failure;
use crate::logging::message_id;
use crate::notify;
use crate::source::Fetched;
use crate::state::{self, IntentKind, Outcome, Phase, RollbackPending, Run, State, Testing};

use super::activate::Ending;
use super::{short, Agent, Exit};

/// Whether `system` (what runs) is the testing branch's healthy, test-activated system.
pub(super) fn on_test(state: &State, system: &str) -> bool {
    state
        .testing
        .as_ref()
        .is_some_and(|t| live(t, Some(Path::new(system))))
}

impl Agent {
    /// After main was found idle (`exit` is how that ended): the testing branch's turn.
    /// Anything but [`Exit::Ok`] for main, or no testing branch: `exit` unchanged.
    pub(super) async fn after_main(&self, state: &mut State, exit: Exit) -> Exit {
        let Some(branch) = self.settings.source.testing_branch.clone() else {
            return exit;
        };
        if exit != Exit::Ok || state.pinned.is_some() {
            return exit;
        }
        let head = match self.doors.source.testing_head().await {
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
        // The same signature policy as the main branch (no downgrade floor: a testing
        // branch is expected to move back and forth).
        match self.doors.source.verify(&fetched.commit, &[]).await {
            Ok(_) => {}
            Err(crate::trust::Verdict::Failed(f)) => {
                return self.not_tried(Some(&fetched.commit), Phase::Verify, on_branch(&branch, f))
            }
            Err(crate::trust::Verdict::Refused(r)) => {
                let f = crate::failure::Failure::new(
                    crate::failure::Kind::Commit,
                    format!("{}\nexpected: {}\nhint: sign the commit with an allowed key; nothing was built or activated", r.message, r.expected),
                );
                return self.not_tried(Some(&fetched.commit), Phase::Verify, on_branch(&branch, f));
            }
        }
        self.test(state, &branch, &fetched).await
    }

    /// Builds and test-activates one commit of the testing branch.
    async fn test(&self, state: &mut State, branch: &str, fetched: &Fetched) -> Exit {
        let started = Instant::now();
        let commit = short(&fetched.commit);
        notify::status(&format!("building {commit} ({branch})"));
        log::info!(commit = fetched.commit.as_str(); "building {commit} ({}) from {branch} for a test activation", fetched.subject);
        // Resolved, never remembered: only main's commits decide which host this
        // machine follows (target.rs).
        let target =
            match crate::pivot::resolve(&self.settings, state.pivot.as_ref(), &fetched.commit) {
                Ok(target) => target,
                Err(f) => return self.not_tried(None, Phase::Verify, on_branch(branch, f)),
            };
        let system = match self
            .doors
            .builder
            .build(&fetched.commit, &target.attribute)
            .await
        {
            Ok(system) => system,
            Err(f) => {
                self.doors.builder.release();
                let f = on_branch(branch, f);
                if !f.kind.blames_commit() {
                    // Not the commit's fault: the same backoff as main's builds (one
                    // slot: main is never waiting when the testing branch gets a turn).
                    let wait = match self.back_off(state, &fetched.commit, f.kind) {
                        Ok((_, wait)) => wait,
                        Err(exit) => return exit,
                    };
                    let message = format!(
                        "{}\n(not built again for {})",
                        f.message,
                        humantime::format_duration(wait)
                    );
                    // No commit in the last poll: there, a commit is main's head.
                    return self.not_tried(None, Phase::Build, Failure::new(f.kind, message));
                }
                let mut run = self.test_run(Outcome::Failed, fetched, started);
                run.phase = Some(Phase::Build);
                run.error = Some(f.message.clone());
                state.mark_bad(&fetched.commit, Phase::Build, &f.message);
                self.set_testing(state, branch, fetched, Outcome::Failed, None);
                log::error!(commit = fetched.commit.as_str(), message_id = message_id::FAILED; "{f}");
                return self.close(state, run, Exit::Failed(f.kind));
            }
        };
        let shown = system.display().to_string();
        if self.doors.machine.current_system().as_deref() == Some(system.as_path()) {
            log::info!("{commit} ({branch}) builds the running system {shown}: nothing to test");
            self.doors.builder.release();
            let mut run = self.test_run(Outcome::Unchanged, fetched, started);
            run.system = Some(shown.clone());
            self.set_testing(state, branch, fetched, Outcome::Unchanged, Some(&shown));
            return self.close(state, run, Exit::Ok);
        }
        // A failed test goes back to the boot default, as any failed deployment.
        let plan = self.plan(IntentKind::Test, fetched, &system);
        let ending = match self.activate(state, plan).await {
            Ok(ending) => ending,
            Err(f) => return self.stop_run(f),
        };
        self.doors.builder.release();
        state.intent = None;
        let mut run = self.test_run(Outcome::Tested, fetched, started);
        run.system = Some(shown.clone());
        let exit = match ending {
            Ending::Committed { checks, .. } => {
                run.checks = checks;
                self.set_testing(state, branch, fetched, Outcome::Tested, Some(&shown));
                log::info!(
                    commit = fetched.commit.as_str(), system = shown.as_str();
                    "testing {commit} ({}) from {branch}: healthy, live until the next reboot or deployment (the boot default is unchanged)",
                    fetched.subject
                );
                Exit::Ok
            }
            Ending::RolledBack { failed, restored } => {
                run.outcome = Outcome::Failed;
                run.phase = Some(failed.phase);
                run.checks = failed.checks;
                run.rolled_back = Some(restored.is_some());
                run.error = Some(failed.failure.message.clone());
                if let Some(p) = &restored {
                    log::warn!(message_id = message_id::ROLLED_BACK; "test of {commit} ({branch}) failed; rolled back to {}", p.display());
                }
                self.blame_test(state, fetched, &failed.failure, failed.phase);
                self.set_testing(state, branch, fetched, Outcome::Failed, Some(&shown));
                Exit::Failed(failed.failure.kind)
            }
            Ending::RollbackFailed {
                failed,
                rollback,
                target,
            } => {
                run.outcome = Outcome::Failed;
                run.phase = Some(failed.phase);
                run.checks = failed.checks;
                run.rolled_back = Some(false);
                log::error!(message_id = message_id::ROLLBACK_FAILED; "ROLLBACK FAILED after the test of {commit}: {rollback}");
                run.error = Some(format!(
                    "{}\nthen the rollback to {} failed too: {rollback}\nhint: the boot default is unchanged (a reboot returns to it); the next run retries the rollback",
                    failed.failure,
                    target.display()
                ));
                state.rollback_pending = Some(RollbackPending {
                    system: target.display().to_string(),
                    reason: rollback.message.clone(),
                    since: state::now(),
                });
                self.blame_test(state, fetched, &failed.failure, failed.phase);
                self.set_testing(state, branch, fetched, Outcome::Failed, Some(&shown));
                Exit::RollbackFailed
            }
        };
        self.close(state, run, exit)
    }

    /// The testing head is waiting out a build backoff: said, and the same exit.
    fn testing_waits(&self, state: &State, branch: &str, head: &str) -> Option<Exit> {
        let (kind, message) = super::record::backoff_left(state, head)?;
        let message = format!("testing branch {branch}: {message}");
        log::info!("{}", message.lines().next().unwrap_or_default());
        self.note_poll(Outcome::Failed, None, Some(&message), Some(Phase::Build));
        Some(Exit::Failed(kind))
    }

    fn blame_test(&self, state: &mut State, fetched: &Fetched, f: &Failure, phase: Phase) {
        if f.kind.blames_commit() {
            state.mark_bad(&fetched.commit, phase, &f.message);
        }
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

    fn test_run(&self, outcome: Outcome, fetched: &Fetched, started: Instant) -> Run {
        let mut run = Run::new(outcome);
        run.commit = Some(fetched.commit.clone());
        run.subject = Some(fetched.subject.clone());
        run.duration_ms = started.elapsed().as_millis() as u64;
        run
    }

    fn close(&self, state: &mut State, run: Run, exit: Exit) -> Exit {
        match self.finish(state, run) {
            Ok(()) => exit,
            Err(f) => self.stop_run(f),
        }
    }
}

/// Names the testing branch in a failure's message (its kind is kept).
fn on_branch(branch: &str, f: Failure) -> Failure {
    Failure::new(f.kind, format!("testing branch {branch}: {}", f.message))
}

/// The tested system, if it is still what runs (a reboot or a deployment replaces it).
pub fn live(testing: &Testing, current: Option<&Path>) -> bool {
    testing.outcome == Outcome::Tested
        && testing.system.as_deref().map(Path::new) == current
        && current.is_some()
}
