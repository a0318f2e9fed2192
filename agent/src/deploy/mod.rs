//! The deploy cycle, top to bottom:
//!
//! ```text
//! recover what a killed run left, reconcile → poll → (bad? handled?) → fetch
//!      → the track's steps (track.rs): build → same system? unchanged
//!      → activation protocol (activate.rs): intent → switch test → health → commit | roll back
//!      → record (record.rs, through the ledger)
//! main idle → the testing branch's head → the same steps on the testing track (testing.rs)
//! ```
//!
//! | file          | owns                                                                |
//! |---------------|---------------------------------------------------------------------|
//! | `mod.rs`      | the cycle and the operator commands (`rollback`, `retry`)           |
//! | `activate.rs` | the one activation protocol: deploy, rollback and recovery use it   |
//! | `recover.rs`  | an interrupted run's leftovers; reconciling live system and profile |
//! | `track.rs`    | a fetched commit's steps, the same on main's and the testing track |
//! | `testing.rs`  | what differs on the testing branch: its head, its records         |
//! | `backoff.rs`  | the wait before building again a commit whose build failed blamelessly |
//! | `record.rs`   | history, last poll, bad commits: one `finish()` for every outcome   |
//! | `doors.rs`    | the side effects behind traits: source, builder, machine, health    |
//! | `target.rs`   | which host is built: the configured one, or the map's (pivot)       |
//! | `paused.rs`   | the stop for an operator's `pause` (polls, deploys nothing)         |
//! | `guard.rs`    | the orphan guard: never activate a system without the agent or sshd |
//!
//! Only a system that passed its health checks ever becomes a profile generation (the
//! boot default); only a failure of the commit itself marks it bad.

mod activate;
mod backoff;
mod guard;
mod paused;
mod record;
mod recover;
mod target;
mod testing;
#[cfg(test)]
mod tests;
mod track;
mod trust;

use std::time::Instant;

use crate::announce::Event;
use crate::config::Settings;
use crate::failure::Kind;
use crate::ledger::Ledger;
use crate::notify;
use crate::state::{IntentKind, Outcome, Phase, Pinned, State};

pub use crate::doors::Doors;
use activate::Plan;
pub use recover::MAX_INTERRUPTIONS;
use track::Track;

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
    /// Every record this agent writes goes through it (`crate::ledger`).
    ledger: Ledger,
    doors: Doors,
}

impl Agent {
    pub fn new(settings: Settings) -> Agent {
        let doors = Doors::real(&settings);
        Agent::with_doors(settings, doors)
    }

    pub fn with_doors(settings: Settings, doors: Doors) -> Agent {
        let ledger = Ledger::new(&settings);
        Agent {
            settings,
            ledger,
            doors,
        }
    }

    /// The events of the runs recorded since the last call, for `announce::send_all`.
    pub fn take_events(&self) -> Vec<Event> {
        self.ledger.take_events()
    }

    /// One poll-and-deploy cycle (what the timer runs). The caller holds the lock.
    pub async fn run_once(&self) -> anyhow::Result<Exit> {
        let mut state = self.ledger.load()?;
        if let Some(exit) = self.recover(&mut state).await {
            return Ok(exit);
        }
        notify::status("polling");
        // One listing of the remote's refs: main's head, and the testing branch's.
        let (head, testing, manifest_tip) = match self.doors.source.heads().await {
            Ok(heads) => (heads.main, heads.testing, heads.prebuilt),
            Err(f) => return Ok(self.not_tried(None, Phase::Fetch, f)),
        };
        if let Some(pin) = &state.pinned {
            // Pinned by the operator: the head is news, never deployed, never history.
            let hint = "`sudo homelab-agent resume` follows the branch again";
            log::info!(hint = hint; "{}", crate::failure::with_hint_line(
                format!(
                    "pinned to {} since {} (by `sudo homelab-agent rollback`); branch head {} not deployed",
                    pin.system,
                    pin.since,
                    short(&head)
                ),
                hint
            ));
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

        // `[prebuilt] wait`: a head already fetched and waiting, its manifest branch
        // where that fetch saw it: a fetch would bring nothing new (one round trip).
        if let Some(why) = self
            .doors
            .builder
            .hold_unfetched(&head, manifest_tip.as_deref())
        {
            log::info!("{why}");
            self.note_poll(Outcome::Waiting, Some(&head), Some(&why), None);
            return Ok(Exit::Ok);
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

        let target = match self.target(&mut state, &fetched).await {
            Ok(target) => target,
            Err(exit) => return Ok(exit),
        };
        // `[prebuilt] wait`: the head's manifest may still come (news, nothing built).
        if let Some(why) = self.doors.builder.hold(&fetched.commit) {
            log::info!("{why}");
            self.note_poll(Outcome::Waiting, Some(&fetched.commit), Some(&why), None);
            return Ok(Exit::Ok);
        }
        Ok(self
            .deliver(&mut state, Track::Main, &fetched, &target)
            .await)
    }

    /// A head that is known bad or already handled needs no fetch, no nix, no disk write.
    fn nothing_to_do(&self, state: &State, head: &str) -> Option<Exit> {
        if let Some(exit) = self.still_refused(state, head) {
            return Some(exit);
        }
        if let Some(bad) = state.bad(head) {
            let error = crate::failure::with_hint_line(
                format!(
                    "commit {} failed in {} at {}: not retried until the branch moves",
                    short(head),
                    bad.phase.as_str(),
                    bad.at
                ),
                "push a fix, or run `sudo homelab-agent retry`",
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
        let mut state = self.ledger.load()?;
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
        let plan = Plan {
            kind: IntentKind::Rollback,
            commit: None,
            subject: None,
            target: &target.system,
            previous: Some(current.system.clone()),
            previous_generation: Some(current.number),
        };
        // What the pin says it came from, read before the activation changes anything.
        let from_commit = state.deployed.as_ref().and_then(|d| d.commit.clone());
        let activated = match self.activate(&mut state, plan).await {
            Ok(activated) => activated,
            Err(f) => return Ok(self.stop_run(f)),
        };
        let back = record::Rollback {
            from: &current,
            from_commit,
            to: &target,
            started,
        };
        Ok(self.record_rollback(&mut state, back, activated))
    }

    /// `homelab-agent resume`: unpin after a `rollback`; the next run follows the branch
    /// head again (and may redeploy the commit that was rolled back from). `None` when the
    /// machine was not pinned.
    pub fn resume(&self) -> anyhow::Result<Option<Pinned>> {
        let mut state = self.ledger.load()?;
        let Some(pin) = state.pinned.take() else {
            return Ok(None);
        };
        // The head seen while pinned was never tried: the next run looks at it afresh.
        state.last_handled = None;
        self.ledger.write(&state)?;
        Ok(Some(pin))
    }

    /// `homelab-agent retry`: forget that the current head failed, so the next run tries it.
    pub fn retry(&self) -> anyhow::Result<Vec<String>> {
        let mut state = self.ledger.load()?;
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
        self.ledger.write(&state)?;
        Ok(forgotten)
    }
}

pub use crate::model::commit::short;
