//! The ledger: the one writer of what the agent did. Every recorded run (history), the
//! deployment that runs (`deployed`), a rollback left for the next run (`rollback_pending`)
//! and the commits remembered as bad are written here and nowhere else: by the deploy
//! cycle, the operator's `rollback`, the recovery of a killed run, the testing branch
//! (`deploy/`) and verify-boot (`reboot/verify.rs`, [`Ledger::failed_boot`]).
//!
//! What a run produced travels as values: its timings ([`Took`]) go into the run it
//! records, and each recorded run becomes an event to announce, kept by the ledger that
//! saved it until the caller takes them ([`Ledger::take_events`]) and sends them
//! (`announce::send_all`). Nothing is told before it is saved.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use crate::announce::Event;
use crate::config::Settings;
use crate::failure::Failure;
use crate::state::{self, Deployed, Outcome, Phase, RollbackPending, Run, State, Store};

/// How long the build and the health checks of a run took (milliseconds), when it built
/// or checked, and how its system was obtained: measured where they happen, handed to the
/// run that records them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Took {
    pub build_ms: Option<u64>,
    pub health_ms: Option<u64>,
    pub obtained: Option<crate::state::obtained::Obtained>,
}

impl Took {
    /// A run that built (in `build`) and may have checked health (in `health`).
    pub fn new(build: Option<Duration>, health: Option<Duration>) -> Took {
        Took {
            build_ms: build.map(millis),
            health_ms: health.map(millis),
            obtained: None,
        }
    }

    /// Sets them on `run`.
    pub fn on(self, run: &mut Run) {
        (run.build_ms, run.health_ms, run.obtained) =
            (self.build_ms, self.health_ms, self.obtained);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The state file's one writer (see the module's documentation).
pub struct Ledger {
    store: Store,
    settings: Settings,
    /// The events of the runs this ledger recorded, not yet taken.
    told: Mutex<Vec<Event>>,
}

impl Ledger {
    pub fn new(settings: &Settings) -> Ledger {
        Ledger {
            store: Store::new(&settings.paths.state_dir),
            settings: settings.clone(),
            told: Mutex::new(Vec::new()),
        }
    }

    pub fn load(&self) -> anyhow::Result<State> {
        self.store.load()
    }

    /// A read that never waits for or takes a lock (`Store::peek`).
    pub fn peek(&self) -> anyhow::Result<State> {
        self.store.peek()
    }

    /// Saves `state` (atomically), a failure being this machine's.
    pub fn save(&self, state: &State) -> Result<(), Failure> {
        self.store.save(state).map_err(|e| Failure::storage(&e))
    }

    /// As [`Ledger::save`], the error with its causes, for a command that reports them
    /// (`resume`, `retry`: a denied write says to use sudo).
    pub fn write(&self, state: &State) -> anyhow::Result<()> {
        self.store.save(state)
    }

    /// Adds `run` to history and saves: the one write that ends every recorded run. Once
    /// saved, its event is kept for [`Ledger::take_events`] (never a "deployed" the state
    /// file does not have).
    pub fn record(&self, state: &mut State, run: Run) -> Result<(), Failure> {
        let told = run.clone();
        state.push_run(run);
        self.save(state)?;
        self.keep_event(&told, state);
        Ok(())
    }

    fn keep_event(&self, run: &Run, state: &State) {
        if self.settings.notify.is_empty() {
            return;
        }
        let event = Event::of(run, crate::pivot::host(&self.settings, state), state);
        if event.notifiable() {
            self.told
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(event);
        }
    }

    /// The events of the runs recorded since the last call, oldest first.
    pub fn take_events(&self) -> Vec<Event> {
        std::mem::take(&mut *self.told.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// `system` (built from `commit`) is what runs and what the agent answers for: the
    /// one place a [`Deployed`] is made. `generation` is none while it waits for its trial
    /// boot (the profile did not move).
    pub fn deployed(
        &self,
        state: &mut State,
        commit: Option<String>,
        subject: Option<String>,
        system: &str,
        generation: Option<u32>,
    ) {
        state.deployed = Some(Deployed {
            commit,
            subject,
            system: system.to_string(),
            generation,
            at: state::now(),
        });
    }

    /// The deployed system also describes `commit` (a newer commit that builds the same
    /// system): said only when `system` is the deployed one.
    pub fn same_system(&self, state: &mut State, system: &Path, commit: &str, subject: &str) {
        if let Some(d) = state
            .deployed
            .as_mut()
            .filter(|d| Path::new(&d.system) == system)
        {
            d.commit = Some(commit.to_string());
            d.subject = Some(subject.to_string());
        }
    }

    /// The deployed `system` verified its trial boot: now generation `number`.
    pub fn promoted(&self, state: &mut State, system: &str, number: u32) {
        if let Some(d) = state.deployed.as_mut().filter(|d| d.system == system) {
            d.generation = Some(number);
        }
    }

    /// The way back to `system` failed (`reason`): the next run retries it. The one place
    /// a [`RollbackPending`] is made.
    pub fn rollback_pending(&self, state: &mut State, system: &Path, why: &Failure) {
        state.rollback_pending = Some(RollbackPending {
            system: system.display().to_string(),
            reason: why.message.clone(),
            since: state::now(),
            hint: why.hint.clone(),
        });
    }

    /// verify-boot's record of a boot that failed: history gets the failed deployment
    /// (`run`, with the commit and subject its deployment recorded), its commit is marked
    /// bad, and `deployed` is what boots now (`now_default`, generation `generation`).
    pub fn failed_boot(
        &self,
        failed: &str,
        now_default: &Path,
        generation: Option<u32>,
        mut run: Run,
        error: &str,
    ) -> anyhow::Result<()> {
        let mut state = self.load()?;
        let (commit, subject) = deployed_as(&state, failed);
        run.commit = commit.clone();
        run.subject = subject;
        run.system = Some(failed.to_string());
        run.error = Some(error.to_string());
        if let Some(c) = &commit {
            let phase = run.phase.unwrap_or(Phase::Boot);
            self.mark_bad(&mut state, c, phase, error, Some(failed));
        }
        let back = now_default.display().to_string();
        let (back_commit, _) = deployed_as(&state, &back);
        self.deployed(&mut state, back_commit, None, &back, generation);
        self.record(&mut state, run)?;
        Ok(())
    }

    /// `commit` failed in `phase` by its own fault: not tried again until the branch
    /// moves (or `retry`). `system` is what it built, when it got that far.
    pub fn mark_bad(
        &self,
        state: &mut State,
        commit: &str,
        phase: Phase,
        error: &str,
        system: Option<&str>,
    ) {
        state.mark_bad_system(commit, phase, error, system);
    }
}

/// The commit (and subject) that `system` was deployed from: the deployment's record,
/// else the newest deployed run in history that built it.
fn deployed_as(state: &State, system: &str) -> (Option<String>, Option<String>) {
    if let Some(d) = state.deployed.as_ref().filter(|d| d.system == system) {
        if d.commit.is_some() {
            return (d.commit.clone(), d.subject.clone());
        }
    }
    state
        .history
        .iter()
        .find(|r| r.system.as_deref() == Some(system) && r.outcome == Outcome::Deployed)
        .map_or((None, None), |r| (r.commit.clone(), r.subject.clone()))
}

#[cfg(test)]
mod tests;
