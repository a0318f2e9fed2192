//! What a killed run left, resolved before anything else, and the reconciliation every
//! run does (the no-change poll included: two readlinks, no process, no write).
//!
//! Order matters: an interruption is counted (and saved) before anything that can fail,
//! so a configuration that kills the agent cannot loop; then an activation that outlived
//! the killed run is waited for or stopped, so two `switch-to-configuration` never run at
//! once; only then is the machine brought back to the profile's generation.

use std::path::{Path, PathBuf};

use crate::failure::{Failure, Kind};
use crate::logging::message_id;
use crate::state::{Intent, IntentKind, Outcome, Phase, Run, State, Step};

use super::{Agent, Exit};

/// A commit whose deployment was interrupted this many times is marked bad.
pub const MAX_INTERRUPTIONS: u32 = 2;

impl Agent {
    /// Finishes or undoes what a killed run left, then checks that what runs is what the
    /// profile says. `Some(exit)` when the run must stop here.
    pub(super) async fn recover(&self, state: &mut State) -> Option<Exit> {
        if let Some(exit) = self.retry_pending_rollback(state).await {
            return Some(exit);
        }
        if state.intent.is_some() {
            return self.resolve_intent(state).await;
        }
        self.reconcile(state).await
    }

    async fn retry_pending_rollback(&self, state: &mut State) -> Option<Exit> {
        let pending = state.rollback_pending.clone()?;
        // Healed meanwhile (a reboot into the boot default, an operator's switch): done.
        let target = Path::new(&pending.system);
        let machine = &self.doors.machine;
        if machine.current_system().as_deref() == Some(target)
            && machine.profile().is_none_or(|g| g.system == target)
        {
            log::info!(
                "{} is live again: the pending rollback is no longer needed",
                pending.system
            );
            state.rollback_pending = None;
            return self.save(state).err().map(|f| self.stop_run(f));
        }
        log::warn!(
            "retrying the rollback to {} that failed at {}",
            pending.system,
            pending.since
        );
        let tag = state
            .intent
            .as_ref()
            .map(|i| i.activation.clone())
            .unwrap_or_default();
        if !tag.is_empty() {
            if let Err(f) = self.doors.machine.settle_activation(&tag).await {
                return Some(self.stop_run(f));
            }
        }
        if let Err(f) = self.restore(Path::new(&pending.system), &tag).await {
            log::error!(message_id = message_id::ROLLBACK_FAILED; "rollback to {} failed again: {f}", pending.system);
            return Some(Exit::RollbackFailed);
        }
        state.rollback_pending = None;
        let mut run = Run::new(Outcome::RolledBack);
        run.phase = Some(Phase::Rollback);
        run.system = Some(pending.system.clone());
        run.rolled_back = Some(true);
        if let Err(f) = self.finish(state, run) {
            return Some(self.stop_run(f));
        }
        None
    }

    async fn resolve_intent(&self, state: &mut State) -> Option<Exit> {
        let intent = state.intent.clone()?;
        log::warn!(
            "a previous run was interrupted while {:?} {}; resolving it first",
            intent.step,
            intent.system
        );
        // 1. Count first: whatever fails below, the loop breaker has moved.
        let given_up = match self.count_interruption(state, &intent) {
            Ok(given_up) => given_up,
            Err(exit) => return Some(exit),
        };
        // 2. Never two activations at once.
        if !intent.activation.is_empty() {
            if let Err(f) = self
                .doors
                .machine
                .settle_activation(&intent.activation)
                .await
            {
                return Some(self.stop_run(f));
            }
        }
        // 3. Finish a commit that had passed its checks, or go back to the profile.
        let machine = &self.doors.machine;
        let profile = machine.profile();
        // A test activation never commits: whatever its step, it is undone.
        let committed = intent.kind != IntentKind::Test
            && intent.step == Step::Committing
            && profile
                .as_ref()
                .is_some_and(|g| g.system == Path::new(&intent.system));
        let target: PathBuf = match &profile {
            Some(g) => g.system.clone(),
            None if !intent.previous_system.is_empty() => intent.previous_system.clone().into(),
            None => intent.system.clone().into(),
        };
        let result = if committed {
            self.finish_commit(&target, &intent.activation).await
        } else {
            self.restore(&target, &intent.activation).await
        };

        let mut run = Run::new(Outcome::Interrupted);
        run.commit = intent.commit.clone();
        run.subject = intent.subject.clone();
        run.system = Some(intent.system.clone());
        let step = format!("{:?}", intent.step).to_lowercase();
        let exit = match result {
            Err(f) => {
                log::error!(message_id = message_id::ROLLBACK_FAILED; "recovering from the interrupted run failed: {f}");
                self.ledger.rollback_pending(state, &target, &f.message);
                run.rolled_back = Some(false);
                run.error = Some(format!(
                    "the agent was stopped while {step}; bringing the machine back to {} failed: {f}",
                    target.display()
                ));
                Some(Exit::RollbackFailed)
            }
            Ok(()) if committed => {
                run.generation = profile.as_ref().map(|g| g.number);
                run.error = Some(
                    "interrupted after the health checks passed; the deployment was completed"
                        .into(),
                );
                if intent.kind == IntentKind::Deploy {
                    self.ledger.deployed(
                        state,
                        intent.commit.clone(),
                        intent.subject.clone(),
                        &intent.system,
                        run.generation,
                    );
                    state.last_handled = intent.commit.clone();
                }
                None
            }
            Ok(()) => {
                run.rolled_back = Some(true);
                run.error = Some(format!(
                    "the agent was stopped while {step}; the machine was brought back to {}",
                    target.display()
                ));
                None
            }
        };
        if let (Some(count), Some(error)) = (given_up, run.error.as_mut()) {
            // One entry per interrupted activation: the one that gave the commit up says
            // so, and is not mistaken for a repeat of the one before.
            error.push_str(&format!(
                "; its activation was interrupted {count} times: remembered as bad, not activated again until the branch moves"
            ));
        }
        state.intent = None;
        if let Err(f) = self.finish(state, run) {
            return Some(self.stop_run(f));
        }
        exit
    }

    /// Counts the interruption of a new system's activation (and saves it); the count
    /// when it made the commit bad (the loop breaker), `Err` when the save failed. A test
    /// activation is undone like a deployment that had not committed (it never reaches
    /// Committing).
    fn count_interruption(&self, state: &mut State, intent: &Intent) -> Result<Option<u32>, Exit> {
        let undoing_new = matches!(intent.kind, IntentKind::Deploy | IntentKind::Test)
            && matches!(intent.step, Step::Activating | Step::Checking);
        let (true, Some(commit)) = (undoing_new, &intent.commit) else {
            return Ok(None);
        };
        let count = state.count_interruption(commit);
        let given_up = count >= MAX_INTERRUPTIONS;
        if given_up {
            self.ledger.mark_bad(
                state,
                commit,
                Phase::Activate,
                &format!("its activation was interrupted {count} times: the agent was stopped or killed while {} was being activated or checked\nhint: does this configuration stop, restart or kill homelab-agent.service? then fix it and push; `sudo homelab-agent retry` tries this commit again", intent.system),
                Some(&intent.system),
            );
            state.last_handled = Some(commit.clone());
        }
        match self.save(state) {
            Ok(()) => Ok(given_up.then_some(count)),
            Err(f) => Err(self.stop_run(f)),
        }
    }

    /// Health had passed and the profile moved: the boot entry may still be missing.
    async fn finish_commit(&self, system: &Path, tag: &str) -> Result<(), Failure> {
        use crate::system::switch::Action;
        let machine = &self.doors.machine;
        if machine.current_system().as_deref() != Some(system) {
            machine.switch(system, Action::Test, tag).await?;
        }
        machine.switch(system, Action::Boot, tag).await
    }

    /// No intent: what runs must be the profile's generation. A system the agent knows
    /// as unverified (a bad commit's) is replaced by the profile's; anything else is an
    /// operator's doing (drift), reported and left alone.
    async fn reconcile(&self, state: &mut State) -> Option<Exit> {
        let machine = &self.doors.machine;
        let (Some(current), Some(profile)) = (machine.current_system(), machine.profile()) else {
            return None;
        };
        let shown = current.display().to_string();
        let live_deploy = state
            .deployed
            .as_ref()
            .filter(|d| d.generation.is_none() && d.system != profile.system.display().to_string());
        if current == profile.system {
            if let Some(lost) = live_deploy.filter(|d| d.system != shown) {
                // A deployment live and waiting for its trial boot is gone: a reboot (a
                // power cut, a person) booted the boot default, the last verified
                // generation. The next poll activates it again.
                log::warn!(
                    "{} was live and waiting for its trial boot, and a reboot booted generation {} instead; activating it again",
                    lost.system,
                    profile.number
                );
                state.last_handled = None;
                let back = profile.system.display().to_string();
                let commit = state
                    .history
                    .iter()
                    .find(|r| r.system.as_deref() == Some(&back) && r.outcome == Outcome::Deployed)
                    .and_then(|r| r.commit.clone());
                self.ledger
                    .deployed(state, commit, None, &back, Some(profile.number));
                return self.save(state).err().map(|f| self.stop_run(f));
            }
            return None;
        }
        if live_deploy.is_some_and(|d| d.system == shown) {
            // A deployment that needs a reboot: healthy, live, and the boot default stays
            // the last verified generation until its trial boot verified (docs/reboots.md).
            return None;
        }
        if super::testing::on_test(state, &shown) {
            // The testing branch's commit, healthy, live until a reboot or the next
            // deployment: expected, not drift.
            return None;
        }
        let unverified = state
            .bad_commits
            .iter()
            .any(|b| b.system.as_deref() == Some(&shown))
            || state
                .history
                .iter()
                .any(|r| r.outcome == Outcome::Failed && r.system.as_deref() == Some(&shown));
        if !unverified {
            log::warn!(
                "drift: {shown} is live but the profile's generation {} is {}; not the agent's doing (a manual switch?), left alone",
                profile.number,
                profile.system.display()
            );
            return None;
        }
        log::error!(message_id = message_id::FAILED; "{shown} is live but never passed its checks; restoring generation {}", profile.number);
        let result = self.restore(&profile.system, "").await;
        let mut run = Run::new(Outcome::Interrupted);
        run.system = Some(shown.clone());
        run.phase = Some(Phase::Rollback);
        run.rolled_back = Some(result.is_ok());
        run.error = Some(match &result {
            Ok(()) => format!(
                "found {shown} live without having passed its checks; restored generation {}",
                profile.number
            ),
            Err(f) => format!("found {shown} live without having passed its checks; restoring generation {} failed: {f}", profile.number),
        });
        if let Err(f) = &result {
            self.ledger
                .rollback_pending(state, &profile.system, &f.message);
        }
        if let Err(f) = self.finish(state, run) {
            return Some(self.stop_run(f));
        }
        result.err().map(|_| Exit::RollbackFailed)
    }

    /// A failure that ends the run before the deploy cycle (state unwritable, a leftover
    /// activation that will not stop): logged, never blamed on a commit.
    pub(super) fn stop_run(&self, f: Failure) -> Exit {
        log::error!(message_id = message_id::FAILED; "{f}");
        let kind = if f.kind == Kind::Commit {
            Kind::Environment
        } else {
            f.kind
        };
        self.note_poll(Outcome::Failed, None, Some(&f.message), None);
        Exit::Failed(kind)
    }
}
