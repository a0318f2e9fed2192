//! The deploy cycle, top to bottom:
//!
//! ```text
//! recover what a killed run left, reconcile → poll → (bad? handled?) → fetch → build
//!      → same system? unchanged
//!      → activation protocol (activate.rs): intent → switch test → health → commit | roll back
//!      → record (record.rs)
//! ```
//!
//! | file          | owns                                                                |
//! |---------------|---------------------------------------------------------------------|
//! | `mod.rs`      | the cycle and the operator commands (`rollback`, `retry`)           |
//! | `activate.rs` | the one activation protocol: deploy, rollback and recovery use it   |
//! | `recover.rs`  | an interrupted run's leftovers; reconciling live system and profile |
//! | `testing.rs`  | the per-host testing branch: test activations that never commit    |
//! | `record.rs`   | history, last poll, bad commits: one `finish()` for every outcome   |
//! | `doors.rs`    | the side effects behind traits: source, builder, machine, health    |
//! | `target.rs`   | which host is built: the configured one, or the map's (pivot)       |
//! | `paused.rs`   | the stop for an operator's `pause` (polls, deploys nothing)         |
//! | `guard.rs`    | the orphan guard: never activate a system without the agent or sshd |
//!
//! Only a system that passed its health checks ever becomes a profile generation (the
//! boot default); only a failure of the commit itself marks it bad.

mod activate;
mod guard;
mod paused;
mod record;
mod recover;
mod target;
mod testing;
#[cfg(test)]
mod tests;
mod trust;

use std::time::Instant;

use crate::config::Settings;
use crate::failure::Kind;
use crate::notify;
use crate::state::{IntentKind, Outcome, Phase, Pinned, Run, State, Store};

pub use crate::doors::Doors;
use activate::{Back, Ending, Plan};
pub use recover::MAX_INTERRUPTIONS;
pub use testing::live as testing_live;

/// How a run ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// up-to-date, unchanged, deployed, skipped.
    Ok,
    /// Something failed; the kind says whose fault it was (and so the exit code).
    Failed(Kind),
    /// The way back failed: the machine needs attention.
    RollbackFailed,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => crate::exit::OK,
            Exit::Failed(kind) => kind.exit_code(),
            Exit::RollbackFailed => crate::exit::ROLLBACK_FAILED,
        }
    }
}

pub struct Agent {
    pub settings: Settings,
    store: Store,
    doors: Doors,
}

impl Agent {
    pub fn new(settings: Settings) -> Agent {
        let doors = Doors::real(&settings);
        Agent::with_doors(settings, doors)
    }

    pub fn with_doors(settings: Settings, doors: Doors) -> Agent {
        let store = Store::new(&settings.paths.state_dir);
        Agent {
            settings,
            store,
            doors,
        }
    }

    /// One poll-and-deploy cycle (what the timer runs). The caller holds the lock.
    pub async fn run_once(&self) -> anyhow::Result<Exit> {
        let mut state = self.store.load()?;
        if let Some(exit) = self.recover(&mut state).await {
            return Ok(exit);
        }
        notify::status("polling");
        // One listing of the remote's refs: main's head, and the testing branch's.
        let (head, testing) = match self.doors.source.heads().await {
            Ok(heads) => (heads.main, heads.testing),
            Err(f) => return Ok(self.not_tried(None, Phase::Fetch, f)),
        };
        if let Some(pin) = &state.pinned {
            // Pinned by the operator: the head is news, never deployed, never history.
            log::info!(
                "pinned to {} since {} (by `sudo homelab-agent rollback`); branch head {} not deployed\nhint: `sudo homelab-agent resume` follows the branch again",
                pin.system,
                pin.since,
                short(&head)
            );
            self.note_poll(Outcome::Pinned, Some(&head), None, None);
            return Ok(Exit::Ok);
        }
        if let Some(exit) = self
            .pause_requested(&mut state, &head)
            .or_else(|| self.paused(&mut state, &head))
        {
            return Ok(exit);
        }
        if let Some(exit) = self.nothing_to_do(&state, &head) {
            // Main is idle: the testing branch's turn (testing.rs).
            return Ok(self.after_main(&mut state, exit, testing).await);
        }

        notify::status(&format!("fetching {}", short(&head)));
        let fetched = match self.doors.source.fetch().await {
            Ok(f) => f,
            Err(f) => return Ok(self.not_tried(Some(&head), Phase::Fetch, f)),
        };
        // The branch may have moved between poll and fetch: what was fetched is built.
        if fetched.commit != head {
            if let Some(exit) = self.nothing_to_do(&state, &fetched.commit) {
                return Ok(exit);
            }
        }
        if let Some(exit) = self.refuse_untrusted(&mut state, &fetched).await {
            return Ok(exit);
        }

        let target = match self.target(&mut state, &fetched) {
            Ok(target) => target,
            Err(exit) => return Ok(exit),
        };
        // `[prebuilt] wait`: the head's manifest may still come (news, nothing built).
        if let Some(why) = self.doors.builder.hold(&fetched.commit) {
            log::info!("{why}");
            self.note_poll(Outcome::Waiting, Some(&fetched.commit), Some(&why), None);
            return Ok(Exit::Ok);
        }
        let started = Instant::now();
        let (commit, host) = (short(&fetched.commit), &target.host);
        notify::status(&format!("building {commit} for {host}"));
        log::info!(commit = fetched.commit.as_str(); "building {commit} ({}) for {host}", fetched.subject);
        let built = self
            .doors
            .builder
            .build(&fetched.commit, &target.attribute)
            .await;
        crate::metrics::phases::build_took(started.elapsed());
        let system = match built {
            Ok(system) => system,
            // A `pause` asked for during the build stopped it: the pause, not a failure.
            Err(_) if crate::pause::requested(&self.settings.paths.runtime_dir) => {
                self.doors.builder.release();
                let exit = self.pause_requested(&mut state, &fetched.commit);
                return Ok(exit.unwrap_or(Exit::Ok));
            }
            Err(f) => return Ok(self.build_failed(&mut state, &fetched, host, f, started)),
        };
        if self.doors.machine.current_system().as_deref() == Some(system.as_path()) {
            return Ok(self.record_unchanged(&mut state, &fetched, &system, started));
        }
        if let Some(exit) = self.refuse_orphan(&mut state, &fetched, &system, host, started) {
            return Ok(exit);
        }

        let plan = self.plan(IntentKind::Deploy, &fetched, &system);
        let ending = match self.activate(&mut state, plan).await {
            Ok(ending) => ending,
            Err(f) => return Ok(self.stop_run(f)),
        };
        Ok(self.record_deploy(&mut state, &fetched, &system, ending, started))
    }

    /// A head that is known bad or already handled needs no fetch, no nix, no disk write.
    fn nothing_to_do(&self, state: &State, head: &str) -> Option<Exit> {
        if let Some(exit) = self.still_refused(state, head) {
            return Some(exit);
        }
        if let Some(bad) = state.bad(head) {
            let error = format!(
                "commit {} failed in {} at {}: not retried until the branch moves\nhint: push a fix, or run `sudo homelab-agent retry`",
                short(head),
                bad.phase.as_str(),
                bad.at
            );
            log::info!("{}", error.lines().next().unwrap_or_default());
            self.note_poll(Outcome::Skipped, Some(head), Some(&error), None);
            return Some(Exit::Ok);
        }
        if state.last_handled.as_deref() == Some(head) {
            log::info!("up to date at {}", short(head));
            self.note_poll(Outcome::UpToDate, Some(head), None, None);
            return Some(Exit::Ok);
        }
        self.waiting(state, head)
    }

    // ---- operator commands -----------------------------------------------------------

    /// `homelab-agent rollback`: the previous profile generation, through the same
    /// protocol (intent, test, health, commit), recorded in history.
    pub async fn rollback(&self) -> anyhow::Result<Exit> {
        let mut state = self.store.load()?;
        if let Some(exit) = self.recover(&mut state).await {
            return Ok(exit);
        }
        let machine = &self.doors.machine;
        let profile_path = &self.settings.paths.profile;
        let current = machine.profile().ok_or_else(|| {
            anyhow::anyhow!(
                "profile {} does not exist: nothing to roll back",
                profile_path.display()
            )
        })?;
        let target = machine.previous_generation().ok_or_else(|| {
            anyhow::anyhow!(
                "profile {} has no generation before {}: nothing to roll back to",
                profile_path.display(),
                current.number
            )
        })?;
        let started = Instant::now();
        log::info!(
            "rolling back from generation {} to generation {} ({})",
            current.number,
            target.number,
            target.system.display()
        );
        let shown = target.system.display().to_string();
        let from_commit = state.deployed.as_ref().and_then(|d| d.commit.clone());
        let commit = state
            .history
            .iter()
            .find(|r| r.system.as_deref() == Some(&shown) && r.outcome == Outcome::Deployed)
            .and_then(|r| r.commit.clone());
        let plan = Plan {
            kind: IntentKind::Rollback,
            commit: None,
            subject: None,
            target: &target.system,
            previous: Some(current.system.clone()),
            previous_generation: Some(current.number),
        };
        let ending = match self.activate(&mut state, plan).await {
            Ok(ending) => ending,
            Err(f) => return Ok(self.stop_run(f)),
        };

        let mut run = Run::new(Outcome::RolledBack);
        run.commit = commit.clone();
        run.system = Some(shown.clone());
        let exit = match ending {
            Ending::Committed { generation, checks } => {
                run.generation = Some(generation);
                run.checks = checks;
                state.deployed = Some(crate::state::Deployed {
                    commit,
                    subject: None,
                    system: shown.clone(),
                    generation: Some(generation),
                    at: crate::state::now(),
                });
                state.pinned = Some(Pinned {
                    since: crate::state::now(),
                    system: shown.clone(),
                    generation: Some(generation),
                    from_system: current.system.display().to_string(),
                    from_commit,
                    from_generation: Some(current.number),
                });
                log::info!(message_id = crate::logging::message_id::ROLLED_BACK; "rolled back to {shown} as generation {generation}");
                Exit::Ok
            }
            Ending::Failed {
                failed,
                back: Back::Restored(_),
            } => {
                run.outcome = Outcome::Failed;
                run.phase = Some(failed.phase);
                run.checks = failed.checks;
                run.error = Some(format!(
                    "rollback to generation {} failed: {}; staying on generation {}",
                    target.number, failed.failure, current.number
                ));
                // The target is an older generation: its failure blames no new commit.
                Exit::Failed(Kind::Commit)
            }
            Ending::Failed {
                failed,
                back:
                    Back::RollbackFailed {
                        rollback,
                        target: back,
                    },
            } => {
                run.outcome = Outcome::Failed;
                run.phase = Some(failed.phase);
                run.error = Some(format!(
                    "rollback to generation {} failed: {}; then returning to generation {} failed too: {rollback}",
                    target.number, failed.failure, current.number
                ));
                state.rollback_pending = Some(crate::state::RollbackPending {
                    system: back.display().to_string(),
                    reason: rollback.message.clone(),
                    since: crate::state::now(),
                });
                Exit::RollbackFailed
            }
            Ending::Tested { checks } | Ending::Live { checks } => {
                let error = "the rollback was activated but not committed".to_string();
                record::wrong_ending(&mut run, checks, error)
            }
        };
        run.duration_ms = started.elapsed().as_millis() as u64;
        state.intent = None;
        Ok(match self.finish(&mut state, run) {
            Ok(()) => exit,
            Err(f) => self.stop_run(f),
        })
    }

    /// `homelab-agent resume`: unpin after a `rollback`; the next run follows the branch
    /// head again (and may redeploy the commit that was rolled back from). `None` when the
    /// machine was not pinned.
    pub fn resume(&self) -> anyhow::Result<Option<Pinned>> {
        let mut state = self.store.load()?;
        let Some(pin) = state.pinned.take() else {
            return Ok(None);
        };
        // The head seen while pinned was never tried: the next run looks at it afresh.
        state.last_handled = None;
        self.store.save(&state)?;
        Ok(Some(pin))
    }

    /// `homelab-agent retry`: forget that the current head failed, so the next run tries it.
    pub fn retry(&self) -> anyhow::Result<Vec<String>> {
        let mut state = self.store.load()?;
        let forgotten: Vec<String> = state.bad_commits.iter().map(|b| b.commit.clone()).collect();
        state.bad_commits.clear();
        state.interruptions.clear();
        state.retries = None;
        // The head is built again only if it failed: a deployed (or unchanged) head stays
        // handled, and is not rebuilt for nothing.
        if state
            .last_handled
            .as_ref()
            .is_some_and(|h| forgotten.contains(h))
        {
            state.last_handled = None;
        }
        self.store.save(&state)?;
        Ok(forgotten)
    }
}

/// The first 8 characters of a commit id, for messages.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(8)]
}
