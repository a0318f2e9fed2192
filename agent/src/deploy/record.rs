//! Recording what a run did: one [`Agent::finish`] for every outcome that is history
//! (one durable write), and [`Agent::note_poll`] for what is only news (the runtime
//! directory, a tmpfs: a poll that learns nothing never writes to the SD card).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::failure::{Failure, Kind};
use crate::logging::message_id;
use crate::runtime::{self, LastPoll};
use crate::source::Fetched;
use crate::state::{self, Deployed, Outcome, Phase, Retry, RollbackPending, Run, State};

use super::activate::{Back, Ending, StepFailure};
use super::{short, Agent, Exit};

/// A build of `head` still waiting out its backoff: the kind of the failure that started
/// the wait, and what to say (main's cycle and the testing branch say the same).
pub(super) fn backoff_left(state: &State, head: &str, config: &str) -> Option<(Kind, String)> {
    let r = state.retries.as_ref().filter(|r| r.commit == head)?;
    // A configuration failure waits only while the configuration is the same.
    if r.config.as_deref().is_some_and(|then| then != config) {
        return None;
    }
    let until = r.not_before?.to_system();
    let left = until.duration_since(SystemTime::now()).ok()?;
    // A clock that jumped back must not stretch the wait past its longest.
    if left > MAX_BACKOFF {
        return None;
    }
    let kind = r.kind.unwrap_or(Kind::Transient);
    let hint = match kind {
        Kind::Configuration => {
            "a changed configuration ends the wait; `sudo homelab-agent retry` tries now"
        }
        _ => "`sudo homelab-agent retry` tries now",
    };
    let message = format!(
        "the build of {} failed {} time(s) ({}); next try in {}\nhint: {hint}",
        short(head),
        r.count,
        kind.as_str(),
        crate::time::format_duration(Duration::from_secs(left.as_secs()))
    );
    Some((kind, message))
}

impl Agent {
    pub(super) fn save(&self, state: &State) -> Result<(), Failure> {
        self.store.save(state).map_err(|e| Failure::storage(&e))
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
        // Told only once it is saved: never a "deployed" the state file does not have.
        let told = run.clone();
        state.push_run(run);
        self.save(state)?;
        crate::announce::queue(&self.settings, &told, state);
        Ok(())
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
        let poll = LastPoll {
            at: state::now().to_string(),
            outcome: outcome.as_str().into(),
            commit: commit.map(str::to_string),
            error: error.map(str::to_string),
            phase: phase.map(|p| p.as_str().to_string()),
            next_poll: None,
        };
        runtime::write(&self.settings.paths.runtime_dir, &poll);
    }

    /// A failure before anything was built or touched that says nothing about the commit
    /// (network, this machine, the configuration): news, not history.
    pub(super) fn not_tried(&self, head: Option<&str>, phase: Phase, f: Failure) -> Exit {
        // The kind's general hint, unless the error already says what to do.
        match f.message.contains("\nhint:") {
            true => log::error!(message_id = message_id::FAILED; "{f}"),
            false => log::error!(message_id = message_id::FAILED; "{f}\nhint: {}", f.kind.hint()),
        }
        self.note_poll(Outcome::Failed, head, Some(&f.message), Some(phase));
        Exit::Failed(f.kind)
    }

    /// A build that failed without it being the commit's fault. A build is the costliest
    /// thing a Pi does: the same commit waits longer after each such failure (`retry`
    /// ends the wait). Saved at once; returns the count and the wait, or how the run ended.
    pub(super) fn back_off(
        &self,
        state: &mut State,
        commit: &str,
        kind: Kind,
    ) -> Result<(u32, std::time::Duration), Exit> {
        let count = match &state.retries {
            Some(r) if r.commit == commit => r.count + 1,
            _ => 1,
        };
        let wait = backoff(count);
        state.retries = Some(Retry {
            commit: commit.to_string(),
            count,
            kind: Some(kind),
            not_before: Some(state::now().plus(wait)),
            config: (kind == Kind::Configuration).then(|| self.settings.digest.clone()),
        });
        match self.save(state) {
            Ok(()) => Ok((count, wait)),
            Err(e) => Err(self.stop_run(e)),
        }
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
                crate::time::format_duration(wait),
                s = if count == 1 { "" } else { "s" }
            );
            // Not the commit's fault, but a failed run all the same (nix missing, a build
            // timeout, a full disk): history, `last_run`, the metrics and the notifications
            // say so. The commit is not marked bad and not handled: after the backoff
            // (`homelab_agent_next_build_timestamp_seconds`) the next run builds it again.
            // One record per backoff, never one per poll.
            match message.contains("\nhint:") {
                true => log::error!(message_id = message_id::FAILED; "{message}"),
                false => {
                    log::error!(message_id = message_id::FAILED; "{message}\nhint: {}", f.kind.hint())
                }
            }
            let mut run = self.run_record(Outcome::Failed, fetched, started);
            run.phase = Some(Phase::Build);
            run.error = Some(message);
            return self.close(state, run, Exit::Failed(f.kind));
        }
        log::error!(commit = fetched.commit.as_str(), message_id = message_id::FAILED; "{message}");
        let mut run = self.run_record(Outcome::Failed, fetched, started);
        run.phase = Some(Phase::Build);
        run.error = Some(message.clone());
        state.mark_bad(&fetched.commit, Phase::Build, &message);
        state.last_handled = Some(fetched.commit.clone());
        self.close(state, run, Exit::Failed(Kind::Commit))
    }

    /// A build of `head` is still waiting out its backoff: news only, and the same kind
    /// of failure as the one that started the wait (so systemd still shows it).
    pub(super) fn waiting(&self, state: &State, head: &str) -> Option<Exit> {
        let (kind, message) = backoff_left(state, head, &self.settings.digest)?;
        log::info!("{}", message.lines().next().unwrap_or_default());
        self.note_poll(
            Outcome::Failed,
            Some(head),
            Some(&message),
            Some(Phase::Build),
        );
        Some(Exit::Failed(kind))
    }

    pub(super) fn record_unchanged(
        &self,
        state: &mut State,
        fetched: &Fetched,
        system: &Path,
        started: Instant,
    ) -> Exit {
        log::info!(
            "{} builds the running system {}: nothing to switch",
            short(&fetched.commit),
            system.display()
        );
        self.doors.builder.release();
        let mut run = self.run_record(Outcome::Unchanged, fetched, started);
        run.system = Some(system.display().to_string());
        state.last_handled = Some(fetched.commit.clone());
        state.retries = None;
        if let Some(d) = state
            .deployed
            .as_mut()
            .filter(|d| Path::new(&d.system) == system)
        {
            // The running system is also what this newer commit describes.
            d.commit = Some(fetched.commit.clone());
            d.subject = Some(fetched.subject.clone());
        }
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
    ) -> Exit {
        self.doors.builder.release();
        let shown = system.display().to_string();
        let mut run = self.run_record(Outcome::Deployed, fetched, started);
        run.system = Some(shown.clone());
        state.intent = None;
        state.last_handled = Some(fetched.commit.clone());
        // The failure, if any, decides below whether the commit is blamed.
        let mut failure = None;
        let exit = match ending {
            Ending::Committed { generation, checks } => {
                run.generation = Some(generation);
                run.checks = checks;
                state.deployed = Some(Deployed {
                    commit: Some(fetched.commit.clone()),
                    subject: Some(fetched.subject.clone()),
                    system: shown.clone(),
                    generation: Some(generation),
                    at: state::now(),
                });
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
                state.deployed = Some(Deployed {
                    commit: Some(fetched.commit.clone()),
                    subject: Some(fetched.subject.clone()),
                    system: shown.clone(),
                    generation: None,
                    at: state::now(),
                });
                log::info!(
                    commit = fetched.commit.as_str(), system = shown.as_str(),
                    message_id = message_id::DEPLOYED;
                    "deployed {} ({}) live; it needs a reboot, and becomes the boot default only once a trial boot into it verified", short(&fetched.commit), fetched.subject
                );
                Exit::Ok
            }
            Ending::Failed { failed, back } => {
                let (f, exit) = record_failure(state, &mut run, failed, back, None);
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
            state.mark_bad_system(&fetched.commit, phase, error, Some(system));
        } else {
            state.last_handled = None;
        }
    }

    /// A run of `fetched`, with the build and health timings noted since the last build.
    pub(super) fn run_record(&self, outcome: Outcome, fetched: &Fetched, started: Instant) -> Run {
        let mut run = Run::new(outcome);
        run.commit = Some(fetched.commit.clone());
        run.subject = Some(fetched.subject.clone());
        run.duration_ms = started.elapsed().as_millis() as u64;
        (run.build_ms, run.health_ms) = crate::metrics::phases::take();
        run
    }
}

/// A failed activation, recorded the same way for a deployment and for a test (`test`
/// names it: "abc12345 (testing/pi1)"): the run's outcome, phase, checks, whether it was
/// rolled back, and its error; a failed way back is pending for the next run. Returns
/// the activation's failure (whether it blames the commit is the caller's) and the exit.
pub(super) fn record_failure(
    state: &mut State,
    run: &mut Run,
    failed: StepFailure,
    back: Back,
    test: Option<&str>,
) -> (Failure, Exit) {
    run.outcome = Outcome::Failed;
    run.phase = Some(failed.phase);
    run.checks = failed.checks;
    let mut error = failed.failure.message.clone();
    let exit = match back {
        Back::Restored(restored) => {
            run.rolled_back = Some(restored.is_some());
            match (&restored, test) {
                (Some(p), None) => {
                    log::warn!(message_id = message_id::ROLLED_BACK; "rolled back to {}", p.display())
                }
                (Some(p), Some(test)) => {
                    log::warn!(message_id = message_id::ROLLED_BACK; "test of {test} failed; rolled back to {}", p.display())
                }
                (None, _) => error.push_str("\n(no previous system to roll back to)"),
            }
            Exit::Failed(failed.failure.kind)
        }
        Back::RollbackFailed { rollback, target } => {
            run.rolled_back = Some(false);
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
            error = format!(
                "{}\nthen the rollback to {} failed too: {rollback}\nhint: {boot} (a reboot returns to it); the next run retries the rollback",
                failed.failure,
                target.display()
            );
            state.rollback_pending = Some(RollbackPending {
                system: target.display().to_string(),
                reason: rollback.message.clone(),
                since: state::now(),
            });
            Exit::RollbackFailed
        }
    };
    run.error = Some(error);
    (failed.failure, exit)
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

/// The longest a build waits after failures that blame nothing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

/// 10 minutes after the first failure, doubling, at most [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> Duration {
    let base = Duration::from_secs(600);
    base.saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(MAX_BACKOFF)
}
