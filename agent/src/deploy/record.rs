//! Recording what a run did: one [`Agent::finish`] for every outcome that is history
//! (one durable write, through the ledger: `crate::ledger`), and [`Agent::note_poll`] for
//! what is only news (the runtime directory, a tmpfs: a poll that learns nothing never
//! writes to the SD card).

use std::path::Path;
use std::time::Instant;

use crate::failure::{Failure, Kind};
use crate::ledger::Took;
use crate::logging::message_id;
use crate::runtime::{self, LastPoll};
use crate::source::Fetched;
use crate::state::{self, Outcome, Phase, Pinned, Run, State};
use crate::system::profile::Generation;

use super::activate::{Activated, Back, Ending, StepFailure};
use super::{short, Agent, Exit};

impl Agent {
    pub(super) fn save(&self, state: &State) -> Result<(), Failure> {
        self.ledger.save(state)
    }

    /// Adds `run` to history, makes it what `status` shows, and saves: the one write
    /// that ends every recorded run.
    pub(super) fn finish(&self, state: &mut State, run: Run) -> Result<(), Failure> {
        let commit = run.commit.clone();
        self.finish_noting(state, run, commit.as_deref())
    }

    /// As [`Agent::finish`], with `poll_commit` as the last poll's commit instead of the
    /// run's (there, a commit is main's head: a testing-branch run may name none).
    pub(super) fn finish_noting(
        &self,
        state: &mut State,
        run: Run,
        poll_commit: Option<&str>,
    ) -> Result<(), Failure> {
        self.note_poll(run.outcome, poll_commit, run.error.as_deref(), run.phase);
        self.ledger.record(state, run)
    }

    /// [`Agent::finish`], then `exit`; a failed write stops the run.
    pub(super) fn close(&self, state: &mut State, run: Run, exit: Exit) -> Exit {
        match self.finish(state, run) {
            Ok(()) => exit,
            Err(f) => self.stop_run(f),
        }
    }

    /// What `status` shows as the last run, without touching the state file.
    pub(super) fn note_poll(
        &self,
        outcome: Outcome,
        commit: Option<&str>,
        error: Option<&str>,
        phase: Option<Phase>,
    ) {
        // The hint apart, whoever joined it to the error.
        let (error, hint) = error.map(crate::failure::split_stored_hint).unzip();
        let poll = LastPoll {
            at: Some(state::now()),
            outcome: outcome.as_str().into(),
            commit: commit.map(str::to_string),
            error,
            hint: hint.flatten(),
            phase: phase.map(|p| p.as_str().to_string()),
            next_poll: None,
        };
        runtime::write(&self.settings.paths.runtime_dir, &poll);
    }

    /// A failure before anything was built or touched that says nothing about the commit
    /// (network, this machine, the configuration): news, not history.
    pub(super) fn not_tried(&self, head: Option<&str>, phase: Phase, f: Failure) -> Exit {
        // The failure's own hint, else its kind's: a journal field (HINT=) and its own line.
        let hint = f.hint_or_kind();
        log::error!(message_id = message_id::FAILED, hint = hint; "{}", crate::failure::with_hint_line(&f.message, hint));
        self.note_poll(Outcome::Failed, head, Some(&f.to_string()), Some(phase));
        Exit::Failed(f.kind)
    }

    /// The build of `host` failed (in map mode the mapped host, not this machine's
    /// name). Only a failure of the commit itself marks it bad; any other is retried by
    /// the next run.
    pub(super) fn build_failed(
        &self,
        state: &mut State,
        fetched: &Fetched,
        host: &str,
        f: Failure,
        started: Instant,
        took: Took,
    ) -> Exit {
        self.doors.builder.release();
        let message = format!("building {} for {host}: {f}", short(&fetched.commit));
        if !f.kind.blames_commit() {
            let (count, wait) = match self.back_off(state, &fetched.commit, f.kind) {
                Ok(counted) => counted,
                Err(exit) => return exit,
            };
            let message = format!(
                "{message}\n(failed {count} time{s} without blaming the commit; not built again for {})",
                crate::duration::format_duration(wait),
                s = if count == 1 { "" } else { "s" }
            );
            // Not the commit's fault, but a failed run all the same (nix missing, a build
            // timeout, a full disk): history, `last_run`, the metrics and the notifications
            // say so. The commit is not marked bad and not handled: after the backoff
            // (`homelab_agent_next_build_timestamp_seconds`) the next run builds it again.
            // One record per backoff, never one per poll.
            // The message has the failure's own hint (on its line); else the kind's is added.
            let hint = f.hint_or_kind();
            match f.hint.is_some() {
                true => log::error!(message_id = message_id::FAILED, hint = hint; "{message}"),
                false => {
                    log::error!(message_id = message_id::FAILED, hint = hint; "{}", crate::failure::with_hint_line(&message, hint))
                }
            }
            let mut run = self.run_record(Outcome::Failed, fetched, started, took);
            run.phase = Some(Phase::Build);
            run.error = Some(message);
            return self.close(state, run, Exit::Failed(f.kind));
        }
        log::error!(commit = fetched.commit.as_str(), message_id = message_id::FAILED, hint = f.hint_or_kind(); "{message}");
        let mut run = self.run_record(Outcome::Failed, fetched, started, took);
        run.phase = Some(Phase::Build);
        run.error = Some(message.clone());
        self.ledger
            .mark_bad(state, &fetched.commit, Phase::Build, &message, None);
        state.last_handled = Some(fetched.commit.clone());
        self.close(state, run, Exit::Failed(Kind::Commit))
    }

    pub(super) fn record_unchanged(
        &self,
        state: &mut State,
        fetched: &Fetched,
        system: &Path,
        started: Instant,
        took: Took,
    ) -> Exit {
        log::info!(
            "{} builds the running system {}: nothing to switch",
            short(&fetched.commit),
            system.display()
        );
        self.doors.builder.release();
        let mut run = self.run_record(Outcome::Unchanged, fetched, started, took);
        run.system = Some(system.display().to_string());
        state.last_handled = Some(fetched.commit.clone());
        state.retries = None;
        // The running system is also what this newer commit describes.
        self.ledger
            .same_system(state, system, &fetched.commit, &fetched.subject);
        self.close(state, run, Exit::Ok)
    }

    /// Records how a deployment's activation ended.
    pub(super) fn record_deploy(
        &self,
        state: &mut State,
        fetched: &Fetched,
        system: &Path,
        ending: Ending,
        started: Instant,
        took: Took,
    ) -> Exit {
        self.doors.builder.release();
        let shown = system.display().to_string();
        let mut run = self.run_record(Outcome::Deployed, fetched, started, took);
        run.system = Some(shown.clone());
        state.intent = None;
        state.last_handled = Some(fetched.commit.clone());
        // The failure, if any, decides below whether the commit is blamed.
        let mut failure = None;
        let exit = match ending {
            Ending::Committed { generation, checks } => {
                run.generation = Some(generation);
                run.checks = checks;
                self.ledger.deployed(
                    state,
                    Some(fetched.commit.clone()),
                    Some(fetched.subject.clone()),
                    &shown,
                    Some(generation),
                );
                log::info!(
                    commit = fetched.commit.as_str(), system = shown.as_str(),
                    generation = generation, message_id = message_id::DEPLOYED;
                    "deployed {} ({}) as generation {generation}", short(&fetched.commit), fetched.subject
                );
                Exit::Ok
            }
            Ending::Live { checks } => {
                run.checks = checks;
                // No generation: the profile and the boot default did not move.
                self.ledger.deployed(
                    state,
                    Some(fetched.commit.clone()),
                    Some(fetched.subject.clone()),
                    &shown,
                    None,
                );
                log::info!(
                    commit = fetched.commit.as_str(), system = shown.as_str(),
                    message_id = message_id::DEPLOYED;
                    "deployed {} ({}) live; it needs a reboot, and becomes the boot default only once a trial boot into it verified", short(&fetched.commit), fetched.subject
                );
                Exit::Ok
            }
            Ending::Failed { failed, back } => {
                let (f, exit) = self.record_failure(state, &mut run, failed, back, None);
                failure = Some(f);
                exit
            }
            Ending::Tested { checks } => {
                state.last_handled = None;
                let error = "the deployment was activated but not committed".to_string();
                wrong_ending(&mut run, checks, error)
            }
        };
        if let (Some(f), Some(phase)) = (&failure, run.phase) {
            let error = run.error.clone().unwrap_or_default();
            self.blame(state, fetched, f, phase, &error, &shown);
        }
        state.retries = None;
        self.close(state, run, exit)
    }

    /// Remembers the commit as bad when the failure is its own; otherwise the next run
    /// tries it again.
    fn blame(
        &self,
        state: &mut State,
        fetched: &Fetched,
        failure: &Failure,
        phase: Phase,
        error: &str,
        system: &str,
    ) {
        if failure.kind.blames_commit() {
            self.ledger
                .mark_bad(state, &fetched.commit, phase, error, Some(system));
        } else {
            state.last_handled = None;
        }
    }

    /// A run of `fetched`, with its build and health timings.
    pub(super) fn run_record(
        &self,
        outcome: Outcome,
        fetched: &Fetched,
        started: Instant,
        took: Took,
    ) -> Run {
        let mut run = Run::new(outcome);
        run.commit = Some(fetched.commit.clone());
        run.subject = Some(fetched.subject.clone());
        run.duration_ms = started.elapsed().as_millis() as u64;
        took.on(&mut run);
        run
    }

    /// What every failed activation records the same way (a deployment, a test, an
    /// operator's rollback): the outcome, the phase, the checks, whether the way back
    /// worked, and a way back that failed is pending for the next run. The error's words
    /// are the caller's. Returns the exit.
    pub(super) fn failed_activation(
        &self,
        state: &mut State,
        run: &mut Run,
        failed: &StepFailure,
        back: &Back,
    ) -> Exit {
        run.outcome = Outcome::Failed;
        run.phase = Some(failed.phase);
        run.checks = failed.checks.clone();
        match back {
            Back::Restored(restored) => {
                run.rolled_back = Some(restored.is_some());
                Exit::Failed(failed.failure.kind)
            }
            Back::RollbackFailed { rollback, target } => {
                run.rolled_back = Some(false);
                self.ledger.rollback_pending(state, target, rollback);
                Exit::RollbackFailed
            }
        }
    }

    /// A failed activation of a deployment or of a test (`test` names it: "abc12345
    /// (testing/pi1)"): [`Agent::failed_activation`], logged, and its error. Returns the
    /// activation's failure (whether it blames the commit is the caller's) and the exit.
    pub(super) fn record_failure(
        &self,
        state: &mut State,
        run: &mut Run,
        failed: StepFailure,
        back: Back,
        test: Option<&str>,
    ) -> (Failure, Exit) {
        let exit = self.failed_activation(state, run, &failed, &back);
        // The failure's words and its own hint (recorded apart by the state).
        let mut error = failed.failure.to_string();
        match back {
            Back::Restored(restored) => match (&restored, test) {
                (Some(p), None) => {
                    log::warn!(message_id = message_id::ROLLED_BACK; "rolled back to {}", p.display())
                }
                (Some(p), Some(test)) => {
                    log::warn!(message_id = message_id::ROLLED_BACK; "test of {test} failed; rolled back to {}", p.display())
                }
                (None, _) => error.push_str("\n(no previous system to roll back to)"),
            },
            Back::RollbackFailed { rollback, target } => {
                let boot = match test {
                    None => {
                        log::error!(message_id = message_id::ROLLBACK_FAILED; "ROLLBACK FAILED: {rollback}");
                        "the boot default is still the previous generation"
                    }
                    Some(test) => {
                        log::error!(message_id = message_id::ROLLBACK_FAILED; "ROLLBACK FAILED after the test of {test}: {rollback}");
                        "the boot default is unchanged"
                    }
                };
                error = crate::failure::with_hint_line(
                    format!(
                        "{}\nthen the rollback to {} failed too: {rollback}",
                        failed.failure,
                        target.display()
                    ),
                    format!("{boot} (a reboot returns to it); the next run retries the rollback"),
                );
            }
        }
        run.error = Some(error);
        (failed.failure, exit)
    }
}

/// An operator's rollback from one generation to an older one, for its record.
pub(super) struct Rollback<'a> {
    pub from: &'a Generation,
    pub from_commit: Option<String>,
    pub to: &'a Generation,
    pub started: Instant,
}

impl Agent {
    /// Records how an operator's rollback ended: committed (and pinned there), or failed
    /// like any activation, in the rollback's words.
    pub(super) fn record_rollback(
        &self,
        state: &mut State,
        rollback: Rollback<'_>,
        activated: Activated,
    ) -> Exit {
        let Rollback {
            from,
            from_commit,
            to,
            started,
        } = rollback;
        let shown = to.system.display().to_string();
        let commit = state
            .history
            .iter()
            .find(|r| r.system.as_deref() == Some(&shown) && r.outcome == Outcome::Deployed)
            .and_then(|r| r.commit.clone());
        let mut run = Run::new(Outcome::RolledBack);
        run.commit = commit.clone();
        run.system = Some(shown.clone());
        Took {
            health_ms: activated.health_ms,
            ..Took::default()
        }
        .on(&mut run);
        let exit = match activated.ending {
            Ending::Committed { generation, checks } => {
                run.generation = Some(generation);
                run.checks = checks;
                self.ledger
                    .deployed(state, commit, None, &shown, Some(generation));
                state.pinned = Some(Pinned {
                    since: state::now(),
                    system: shown.clone(),
                    generation: Some(generation),
                    from_system: from.system.display().to_string(),
                    from_commit,
                    from_generation: Some(from.number),
                });
                log::info!(message_id = message_id::ROLLED_BACK; "rolled back to {shown} as generation {generation}");
                Exit::Ok
            }
            Ending::Failed { failed, back } => {
                // The words in one sentence, the hint on its own line after it.
                let why = &failed.failure.message;
                let (error, hint) = match &back {
                    Back::Restored(_) => (
                        format!(
                            "rollback to generation {} failed: {why}; staying on generation {}",
                            to.number, from.number
                        ),
                        failed.failure.hint.clone(),
                    ),
                    Back::RollbackFailed { rollback, .. } => (
                        format!(
                            "rollback to generation {} failed: {why}; then returning to generation {} failed too: {}",
                            to.number, from.number, rollback.message
                        ),
                        rollback.hint.clone().or_else(|| failed.failure.hint.clone()),
                    ),
                };
                let error = match hint {
                    Some(hint) => crate::failure::with_hint_line(error, hint),
                    None => error,
                };
                let exit = self.failed_activation(state, &mut run, &failed, &back);
                run.error = Some(error);
                match exit {
                    // The target is an older generation: its failure blames no new commit.
                    Exit::Failed(_) => Exit::Failed(Kind::Commit),
                    other => other,
                }
            }
            Ending::Tested { checks } | Ending::Live { checks } => {
                let error = "the rollback was activated but not committed".to_string();
                wrong_ending(&mut run, checks, error)
            }
        };
        run.duration_ms = started.elapsed().as_millis() as u64;
        state.intent = None;
        self.close(state, run, exit)
    }
}

/// An ending its plan cannot have: a test plan never commits, any other always does
/// (activate.rs). Recorded as this agent's failure (`error` says what happened).
pub(super) fn wrong_ending(
    run: &mut Run,
    checks: Vec<crate::health::CheckResult>,
    error: String,
) -> Exit {
    run.outcome = Outcome::Failed;
    run.checks = checks;
    run.error = Some(format!("{error} (a bug: please report it)"));
    Exit::Failed(Kind::Environment)
}
