//! The deploy cycle, top to bottom:
//!
//! ```text
//! lock → resolve what a killed run left → poll → (bad? handled?) → fetch → build
//!      → same system? unchanged
//!      → intent → switch test → health → profile --set + switch boot → record
//!                      └─ failure: previous system switch test (the profile never moved) → bad commit
//! ```
//!
//! Every step that touches the machine is preceded by a durable record of what is about
//! to happen ([`Intent`]), so a run killed anywhere is finished or undone by the next one
//! before it does anything else. Only a system that passed its health checks ever
//! becomes a profile generation, i.e. the boot default.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::health;
use crate::logging::message_id;
use crate::nix::{self, BuildRequest};
use crate::notify;
use crate::runtime::{self, LastPoll};
use crate::source::{self, Fetched};
use crate::state::{
    self, Deployed, Intent, IntentKind, Outcome, Phase, RollbackPending, Run, State, Step, Store,
};
use crate::system::{self, profile, switch::Action, switch::Switcher};

/// How a run ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// up-to-date, unchanged, deployed, skipped.
    Ok,
    /// Something failed (a rolled-back deployment included).
    Failed,
    /// The rollback itself failed: the machine needs attention.
    RollbackFailed,
    /// Remote unreachable and the like: nothing wrong with the commit, retried next run.
    Transient,
}

/// A build that timed out or hit a full disk this many times is given up on.
const MAX_TRANSIENT_BUILD_FAILURES: u32 = 3;
/// A commit whose deployment was interrupted this many times is marked bad.
const MAX_INTERRUPTIONS: u32 = 2;

pub struct Agent {
    pub settings: Settings,
    store: Store,
    switcher: Switcher,
}

impl Agent {
    pub fn new(settings: Settings) -> Agent {
        let p = &settings.paths;
        let switcher = Switcher::new(&settings.activation, &p.systemd_run, &p.systemctl);
        let store = Store::new(&p.state_dir);
        Agent {
            settings,
            store,
            switcher,
        }
    }

    fn cache_repo(&self) -> PathBuf {
        self.settings.paths.state_dir.join("cache.git")
    }

    fn candidate_root(&self) -> PathBuf {
        self.settings.paths.state_dir.join("gcroots/candidate")
    }

    fn git_deadline(&self) -> Duration {
        Duration::from_secs(300)
    }

    // ---- the cycle -----------------------------------------------------------------

    /// One poll-and-deploy cycle (what the timer runs). The caller holds the lock.
    pub async fn run_once(&self) -> anyhow::Result<Exit> {
        let mut state = self.store.load()?;
        if let Some(exit) = self.resolve_leftovers(&mut state).await? {
            return Ok(exit);
        }
        notify::status("polling");
        let head = match source::remote_head(&self.settings.source, self.git_deadline()).await {
            Ok(head) => head,
            Err(e) => {
                return Ok(self.poll_failed(None, Phase::Fetch, &e.to_string(), e.is_transient()))
            }
        };
        if let Some(exit) = self.nothing_to_do(&state, &head) {
            return Ok(exit);
        }

        notify::status(&format!("fetching {}", short(&head)));
        let fetched = match source::fetch(
            &self.settings.source,
            self.cache_repo(),
            self.git_deadline(),
        )
        .await
        {
            Ok(f) => f,
            Err(e) => {
                return Ok(self.poll_failed(
                    Some(&head),
                    Phase::Fetch,
                    &e.to_string(),
                    e.is_transient(),
                ))
            }
        };
        // The branch may have moved between poll and fetch: what was fetched is built.
        if fetched.commit != head {
            if let Some(exit) = self.nothing_to_do(&state, &fetched.commit) {
                return Ok(exit);
            }
        }

        let started = Instant::now();
        let Some(system) = self.build(&mut state, &fetched, started).await? else {
            return Ok(Exit::Failed);
        };
        let current = system::resolve(&self.settings.paths.current_system);
        if current.as_deref() == Some(system.as_path()) {
            return self.record_unchanged(&mut state, &fetched, &system, started);
        }
        self.deploy(&mut state, &fetched, &system, started).await
    }

    /// A head that is known bad or already handled needs no fetch, no nix, no disk write.
    fn nothing_to_do(&self, state: &State, head: &str) -> Option<Exit> {
        let rt = &self.settings.paths.runtime_dir;
        if let Some(bad) = state.bad(head) {
            let error = format!(
                "commit {} failed in {} at {}: not retried until the branch moves\nhint: push a fix, or run `homelab-agent retry`",
                short(head),
                bad.phase.as_str(),
                bad.at
            );
            log::info!("{}", error.lines().next().unwrap_or_default());
            runtime::write(rt, &poll(Outcome::Skipped, Some(head), Some(error), None));
            return Some(Exit::Ok);
        }
        if state.last_handled.as_deref() == Some(head) {
            log::info!("up to date at {}", short(head));
            runtime::write(rt, &poll(Outcome::UpToDate, Some(head), None, None));
            return Some(Exit::Ok);
        }
        None
    }

    /// A failed poll or fetch: nothing about the commit is learnt, so only the volatile
    /// record changes (no SD card write every five minutes while the network is down).
    fn poll_failed(&self, head: Option<&str>, phase: Phase, error: &str, transient: bool) -> Exit {
        log::error!(message_id = message_id::FAILED; "{error}");
        runtime::write(
            &self.settings.paths.runtime_dir,
            &poll(Outcome::Failed, head, Some(error.to_string()), Some(phase)),
        );
        if transient {
            Exit::Transient
        } else {
            Exit::Failed
        }
    }

    /// Builds the fetched commit. `None` when the build failed (already recorded).
    async fn build(
        &self,
        state: &mut State,
        fetched: &Fetched,
        started: Instant,
    ) -> anyhow::Result<Option<PathBuf>> {
        notify::status(&format!(
            "building {} for {}",
            short(&fetched.commit),
            self.settings.host
        ));
        log::info!(commit = fetched.commit.as_str(); "building {} ({}) for {}", short(&fetched.commit), fetched.subject, self.settings.host);
        let out_link = self.candidate_root();
        std::fs::create_dir_all(out_link.parent().unwrap_or(Path::new("/")))?;
        let cache = self.cache_repo();
        let request = BuildRequest {
            cache: &cache,
            commit: &fetched.commit,
            attribute: &self.settings.attribute,
            out_link: &out_link,
            settings: &self.settings.build,
        };
        crate::failpoint("before_build");
        let error = match nix::build(&request).await {
            Ok(system) => return Ok(Some(system)),
            Err(e) => e,
        };
        let message = format!(
            "building {} for {}: {error}",
            short(&fetched.commit),
            self.settings.host
        );
        let mut run = self.run_record(Outcome::Failed, Some(fetched), started);
        run.phase = Some(Phase::Build);
        run.error = Some(message.clone());
        if error.is_transient() {
            let count = match &state.retries {
                Some(r) if r.commit == fetched.commit => r.count + 1,
                _ => 1,
            };
            state.retries = Some(state::Retry {
                commit: fetched.commit.clone(),
                count,
            });
            if count >= MAX_TRANSIENT_BUILD_FAILURES {
                state.mark_bad(
                    &fetched.commit,
                    Phase::Build,
                    &format!("gave up after {count} attempts: {error}"),
                );
                state.last_handled = Some(fetched.commit.clone());
            }
        } else {
            state.mark_bad(&fetched.commit, Phase::Build, &message);
            state.last_handled = Some(fetched.commit.clone());
        }
        log::error!(commit = fetched.commit.as_str(), message_id = message_id::FAILED; "{message}");
        self.record(state, run);
        self.store.save(state)?;
        let _ = std::fs::remove_file(&out_link);
        Ok(None)
    }

    fn record_unchanged(
        &self,
        state: &mut State,
        fetched: &Fetched,
        system: &Path,
        started: Instant,
    ) -> anyhow::Result<Exit> {
        log::info!(
            "{} builds the running system {}: nothing to switch",
            short(&fetched.commit),
            system.display()
        );
        let mut run = self.run_record(Outcome::Unchanged, Some(fetched), started);
        run.system = Some(system.display().to_string());
        self.record(state, run);
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
        self.store.save(state)?;
        let _ = std::fs::remove_file(self.candidate_root());
        Ok(Exit::Ok)
    }

    /// The activation protocol (design.md): intent, test, health, commit; or roll back.
    async fn deploy(
        &self,
        state: &mut State,
        fetched: &Fetched,
        system: &Path,
        started: Instant,
    ) -> anyhow::Result<Exit> {
        let paths = &self.settings.paths;
        let previous = profile::current(&paths.profile);
        let previous_system = previous
            .as_ref()
            .map(|g| g.system.clone())
            .or_else(|| system::resolve(&paths.current_system));
        let mut intent = Intent {
            kind: IntentKind::Deploy,
            step: Step::Activating,
            commit: Some(fetched.commit.clone()),
            subject: Some(fetched.subject.clone()),
            system: system.display().to_string(),
            previous_system: previous_system
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            previous_generation: previous.as_ref().map(|g| g.number),
            started_at: state::now(),
        };
        // No intent on disk, no touching the system.
        state.intent = Some(intent.clone());
        self.store.save(state)?;
        crate::failpoint("after_intent");

        let (generation, checks) =
            match self.switch_check_commit(state, &mut intent, system).await? {
                Ok(done) => done,
                Err(failure) => {
                    let previous = previous_system.as_deref();
                    return self
                        .roll_back(state, fetched, system, previous, failure, started)
                        .await;
                }
            };

        let mut run = self.run_record(Outcome::Deployed, Some(fetched), started);
        run.system = Some(system.display().to_string());
        run.generation = Some(generation);
        run.checks = checks;
        self.record(state, run);
        state.deployed = Some(Deployed {
            commit: Some(fetched.commit.clone()),
            subject: Some(fetched.subject.clone()),
            system: system.display().to_string(),
            generation: Some(generation),
            at: state::now(),
        });
        state.last_handled = Some(fetched.commit.clone());
        state.intent = None;
        state.retries = None;
        self.store.save(state)?;
        let _ = std::fs::remove_file(self.candidate_root());
        log::info!(
            commit = fetched.commit.as_str(), system = system.display().to_string().as_str(),
            generation = generation, message_id = message_id::DEPLOYED;
            "deployed {} ({}) as generation {generation}", short(&fetched.commit), fetched.subject
        );
        Ok(Exit::Ok)
    }

    /// Steps 8-10: `switch-to-configuration test`, health checks, commit. The outer error
    /// is the agent's own (state not writable); the inner one is the system's failure,
    /// to be rolled back. Each step is recorded in the intent before it starts.
    async fn switch_check_commit(
        &self,
        state: &mut State,
        intent: &mut Intent,
        system: &Path,
    ) -> anyhow::Result<Result<(u32, Vec<health::CheckResult>), Failure>> {
        let commit = short(intent.commit.as_deref().unwrap_or_default()).to_string();
        notify::status(&format!("activating {commit}"));
        if let Err(e) = self.switcher.run(system, Action::Test).await {
            return Ok(Err(Failure {
                phase: Phase::Activate,
                error: e.to_string(),
                checks: Vec::new(),
            }));
        }
        crate::failpoint("after_activate");

        intent.step = Step::Checking;
        state.intent = Some(intent.clone());
        self.store.save(state)?;
        notify::status(&format!("checking health of {commit}"));
        let context = health::Context {
            settings: &self.settings,
        };
        let report = health::wait_until_healthy(&self.settings.health, &context).await;
        crate::failpoint("after_health");
        if !report.healthy {
            let error = format!(
                "health check failed: {}",
                report.failure().unwrap_or_default()
            );
            return Ok(Err(Failure {
                phase: Phase::Health,
                error,
                checks: report.results,
            }));
        }

        intent.step = Step::Committing;
        state.intent = Some(intent.clone());
        self.store.save(state)?;
        crate::failpoint("before_profile_set");
        match self.commit(system).await {
            Ok(generation) => Ok(Ok((generation, report.results))),
            Err(e) => Ok(Err(Failure {
                phase: Phase::Commit,
                error: format!("{e:#}"),
                checks: report.results,
            })),
        }
    }

    /// Healthy: the new system becomes a profile generation and the boot default.
    async fn commit(&self, system: &Path) -> anyhow::Result<u32> {
        let generation = profile::set(&self.settings.paths.profile, system).await?;
        crate::failpoint("after_profile_set");
        self.switcher.run(system, Action::Boot).await?;
        crate::failpoint("after_boot");
        Ok(generation.number)
    }

    /// Back to the previous system, then record the failure and remember the commit.
    async fn roll_back(
        &self,
        state: &mut State,
        fetched: &Fetched,
        system: &Path,
        previous: Option<&Path>,
        failure: Failure,
        started: Instant,
    ) -> anyhow::Result<Exit> {
        log::error!(commit = fetched.commit.as_str(), message_id = message_id::FAILED; "deploying {}: {}", short(&fetched.commit), failure.error);
        if let Some(intent) = state.intent.as_mut() {
            intent.step = Step::RollingBack;
        }
        self.store.save(state)?;
        let restored = match previous {
            Some(p) => Some(self.restore(p).await),
            None => None,
        };
        let mut run = self.run_record(Outcome::Failed, Some(fetched), started);
        run.phase = Some(failure.phase);
        run.system = Some(system.display().to_string());
        run.checks = failure.checks;
        let mut exit = Exit::Failed;
        let error = match restored {
            Some(Ok(())) => {
                run.rolled_back = Some(true);
                log::warn!(message_id = message_id::ROLLED_BACK; "rolled back to {}", previous.map(|p| p.display().to_string()).unwrap_or_default());
                failure.error.clone()
            }
            Some(Err(e)) => {
                run.rolled_back = Some(false);
                exit = Exit::RollbackFailed;
                let p = previous
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                log::error!(message_id = message_id::ROLLBACK_FAILED; "ROLLBACK FAILED: {e:#}");
                state.rollback_pending = Some(RollbackPending {
                    system: p,
                    reason: format!("{e:#}"),
                    since: state::now(),
                });
                format!("{}\nthen the rollback failed too: {e:#}\nhint: the boot default is still the previous generation; the next run retries the rollback", failure.error)
            }
            None => {
                run.rolled_back = Some(false);
                format!("{}\n(no previous system to roll back to)", failure.error)
            }
        };
        run.error = Some(error.clone());
        self.record(state, run);
        state.mark_bad(&fetched.commit, failure.phase, &error);
        state.last_handled = Some(fetched.commit.clone());
        state.intent = None;
        state.retries = None;
        self.store.save(state)?;
        let _ = std::fs::remove_file(self.candidate_root());
        Ok(exit)
    }

    /// Makes `target` the live system and the profile's current generation again.
    /// Idempotent: safe to repeat after a kill at any point.
    async fn restore(&self, target: &Path) -> anyhow::Result<()> {
        let profile_path = &self.settings.paths.profile;
        let profile_moved = profile::current(profile_path).is_some_and(|g| g.system != target);
        if profile_moved {
            profile::set(profile_path, target).await?;
        }
        crate::failpoint("mid_rollback");
        self.switcher.run(target, Action::Test).await?;
        if profile_moved {
            self.switcher.run(target, Action::Boot).await?;
        }
        Ok(())
    }

    // ---- recovery ------------------------------------------------------------------

    /// Finishes or undoes what a killed run left: a failed rollback, then an intent.
    /// Returns an exit when the run must stop here.
    async fn resolve_leftovers(&self, state: &mut State) -> anyhow::Result<Option<Exit>> {
        if let Some(pending) = state.rollback_pending.clone() {
            log::warn!(
                "retrying the rollback to {} that failed at {}",
                pending.system,
                pending.since
            );
            if let Err(e) = self.restore(Path::new(&pending.system)).await {
                log::error!(message_id = message_id::ROLLBACK_FAILED; "rollback to {} failed again: {e:#}", pending.system);
                return Ok(Some(Exit::RollbackFailed));
            }
            state.rollback_pending = None;
            let mut run = Run::new(Outcome::RolledBack);
            run.phase = Some(Phase::Rollback);
            run.system = Some(pending.system.clone());
            run.rolled_back = Some(true);
            self.record(state, run);
            self.store.save(state)?;
        }
        let Some(intent) = state.intent.clone() else {
            return Ok(None);
        };
        log::warn!(
            "a previous run was interrupted while {:?} {}; resolving it first",
            intent.step,
            intent.system
        );
        let paths = &self.settings.paths;
        let profile_now = profile::current(&paths.profile);
        let committed = intent.kind == IntentKind::Deploy
            && intent.step == Step::Committing
            && profile_now
                .as_ref()
                .is_some_and(|g| g.system == Path::new(&intent.system));
        let target = match (&profile_now, committed) {
            (Some(g), _) => g.system.clone(),
            (None, _) if !intent.previous_system.is_empty() => {
                PathBuf::from(&intent.previous_system)
            }
            (None, _) => PathBuf::from(&intent.system),
        };

        let mut run = Run::new(Outcome::Interrupted);
        run.commit = intent.commit.clone();
        run.subject = intent.subject.clone();
        run.system = Some(intent.system.clone());
        let result = if committed {
            // Health had passed and the profile moved: finish the commit instead of undoing it.
            self.finish_commit(&target).await
        } else {
            self.restore(&target).await
        };
        if let Err(e) = result {
            log::error!(message_id = message_id::ROLLBACK_FAILED; "recovering from the interrupted run failed: {e:#}");
            state.rollback_pending = Some(RollbackPending {
                system: target.display().to_string(),
                reason: format!("{e:#}"),
                since: state::now(),
            });
            state.intent = None;
            run.error = Some(format!("interrupted; recovery failed: {e:#}"));
            self.record(state, run);
            self.store.save(state)?;
            return Ok(Some(Exit::RollbackFailed));
        }
        if committed {
            run.error = Some(
                "interrupted after the health checks passed; the deployment was completed".into(),
            );
            run.generation = profile_now.as_ref().map(|g| g.number);
            state.deployed = Some(Deployed {
                commit: intent.commit.clone(),
                subject: intent.subject.clone(),
                system: intent.system.clone(),
                generation: profile_now.as_ref().map(|g| g.number),
                at: state::now(),
            });
            state.last_handled = intent.commit.clone();
        } else {
            let step = format!("{:?}", intent.step).to_lowercase();
            run.error = Some(format!(
                "the agent was stopped while {step}; the machine was brought back to {}",
                target.display()
            ));
            run.rolled_back = Some(true);
            if let Some(commit) = &intent.commit {
                if intent.kind == IntentKind::Deploy
                    && state.count_interruption(commit) >= MAX_INTERRUPTIONS
                {
                    state.mark_bad(commit, Phase::Activate, &format!("deployment interrupted {MAX_INTERRUPTIONS} times (does this configuration stop the agent?)"));
                    state.last_handled = Some(commit.clone());
                }
            }
        }
        state.intent = None;
        self.record(state, run);
        self.store.save(state)?;
        Ok(None)
    }

    async fn finish_commit(&self, system: &Path) -> anyhow::Result<()> {
        if system::resolve(&self.settings.paths.current_system).as_deref() != Some(system) {
            self.switcher.run(system, Action::Test).await?;
        }
        self.switcher.run(system, Action::Boot).await?;
        Ok(())
    }

    // ---- operator commands -----------------------------------------------------------

    /// `homelab-agent rollback`: the previous profile generation, through the same
    /// protocol (intent, test, health, commit), recorded in history.
    pub async fn rollback(&self) -> anyhow::Result<Exit> {
        let mut state = self.store.load()?;
        if let Some(exit) = self.resolve_leftovers(&mut state).await? {
            return Ok(exit);
        }
        let profile_path = &self.settings.paths.profile;
        let current = profile::current(profile_path).ok_or_else(|| {
            anyhow::anyhow!(
                "profile {} does not exist: nothing to roll back",
                profile_path.display()
            )
        })?;
        let target = profile::previous(profile_path).ok_or_else(|| {
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
        let commit = state
            .history
            .iter()
            .find(|r| {
                r.system.as_deref() == Some(&*target.system.display().to_string())
                    && r.outcome == Outcome::Deployed
            })
            .and_then(|r| r.commit.clone());
        state.intent = Some(Intent {
            kind: IntentKind::Rollback,
            step: Step::Activating,
            commit: None,
            subject: None,
            system: target.system.display().to_string(),
            previous_system: current.system.display().to_string(),
            previous_generation: Some(current.number),
            started_at: state::now(),
        });
        self.store.save(&state)?;

        let mut run = Run::new(Outcome::RolledBack);
        run.commit = commit.clone();
        run.system = Some(target.system.display().to_string());
        let failure = match self.switcher.run(&target.system, Action::Test).await {
            Err(e) => Some((Phase::Activate, e.to_string(), Vec::new())),
            Ok(()) => {
                let report = health::wait_until_healthy(
                    &self.settings.health,
                    &health::Context {
                        settings: &self.settings,
                    },
                )
                .await;
                if report.healthy {
                    run.checks = report.results;
                    None
                } else {
                    Some((
                        Phase::Health,
                        format!(
                            "health check failed: {}",
                            report.failure().unwrap_or_default()
                        ),
                        report.results,
                    ))
                }
            }
        };
        let mut exit = Exit::Ok;
        match failure {
            None => {
                let generation = self.commit(&target.system).await?;
                run.generation = Some(generation);
                state.deployed = Some(Deployed {
                    commit,
                    subject: None,
                    system: target.system.display().to_string(),
                    generation: Some(generation),
                    at: state::now(),
                });
                log::info!(message_id = message_id::ROLLED_BACK; "rolled back to {} as generation {generation}", target.system.display());
            }
            Some((phase, error, checks)) => {
                exit = Exit::Failed;
                run.outcome = Outcome::Failed;
                run.phase = Some(phase);
                run.checks = checks;
                run.error = Some(format!(
                    "rollback to generation {} failed: {error}; staying on generation {}",
                    target.number, current.number
                ));
                if let Err(e) = self.restore(&current.system).await {
                    exit = Exit::RollbackFailed;
                    state.rollback_pending = Some(RollbackPending {
                        system: current.system.display().to_string(),
                        reason: format!("{e:#}"),
                        since: state::now(),
                    });
                }
            }
        }
        run.duration_ms = started.elapsed().as_millis() as u64;
        self.record(&mut state, run);
        state.intent = None;
        self.store.save(&state)?;
        Ok(exit)
    }

    /// `homelab-agent retry`: forget that the current head failed, so the next run tries it.
    pub fn retry(&self) -> anyhow::Result<Vec<String>> {
        let mut state = self.store.load()?;
        let forgotten: Vec<String> = state.bad_commits.iter().map(|b| b.commit.clone()).collect();
        state.bad_commits.clear();
        state.interruptions.clear();
        state.retries = None;
        state.last_handled = None;
        self.store.save(&state)?;
        Ok(forgotten)
    }

    /// Adds a run to history and makes it the last poll too, so `status` shows it.
    fn record(&self, state: &mut State, run: Run) {
        let poll = LastPoll {
            at: run.at.clone(),
            outcome: run.outcome.as_str().into(),
            commit: run.commit.clone(),
            error: run.error.clone(),
            phase: run.phase.map(|p| p.as_str().to_string()),
            next_poll: None,
        };
        runtime::write(&self.settings.paths.runtime_dir, &poll);
        state.push_run(run);
    }

    fn run_record(&self, outcome: Outcome, fetched: Option<&Fetched>, started: Instant) -> Run {
        let mut run = Run::new(outcome);
        run.commit = fetched.map(|f| f.commit.clone());
        run.subject = fetched.map(|f| f.subject.clone());
        run.duration_ms = started.elapsed().as_millis() as u64;
        run
    }
}

struct Failure {
    phase: Phase,
    error: String,
    checks: Vec<health::CheckResult>,
}

fn poll(
    outcome: Outcome,
    commit: Option<&str>,
    error: Option<String>,
    phase: Option<Phase>,
) -> LastPoll {
    LastPoll {
        at: state::now(),
        outcome: outcome.as_str().into(),
        commit: commit.map(str::to_string),
        error,
        phase: phase.map(|p| p.as_str().to_string()),
        next_poll: None,
    }
}

/// The first 8 characters of a commit id, for messages.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(8)]
}
