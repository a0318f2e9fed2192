//! The activation protocol (design.md), the one way the agent changes the running system.
//! Deploy, operator rollback and crash recovery all go through it:
//!
//! ```text
//! intent (durable) → switch test → settle + health → profile --set + switch boot
//!                        └──────── any failure ─────────→ restore the previous system
//! ```
//!
//! A deployment that boots differently from the booted system (kernel, initrd, modules,
//! kernel parameters, device tree: `system::reboot_required`) also stops after the health
//! checks ([`Ending::Live`]): it is live, and it becomes the profile's generation and the
//! boot default only once a trial boot into it verified (`reboot/verify.rs`; the rule of
//! docs/reboots.md). Until then the profile stays at the last verified generation, so a
//! power cut, a kill or any recovery goes back to a generation that booted here.
//!
//! A test plan (the testing branch, `testing.rs`) stops after the health checks: the
//! profile and the boot default never move, and recovery (`recover.rs`) treats a killed
//! test like a killed deployment that had not committed: back to the profile's generation.
//!
//! Only the first write (the intent) must succeed before anything is touched; after
//! that, a failing state write never stops the way back: the intent already on disk
//! tells the next run to bring the machine back to the profile's generation.

use std::path::{Path, PathBuf};

use crate::failure::{Failure, Kind};
use crate::health::CheckResult;
use crate::notify;
use crate::state::{self, Intent, IntentKind, Phase, State, Step};
use crate::system::switch::Action;

use super::{short, Agent};

/// What to activate, and what to come back to.
pub struct Plan<'a> {
    pub kind: IntentKind,
    pub commit: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub target: &'a Path,
    /// The system to restore on failure (the profile's generation, or what runs now).
    pub previous: Option<PathBuf>,
    pub previous_generation: Option<u32>,
}

/// Why an activation did not end healthy.
#[derive(Debug, Clone)]
pub struct StepFailure {
    pub phase: Phase,
    pub failure: Failure,
    pub checks: Vec<CheckResult>,
}

/// How the protocol ended. The caller records it (`record.rs`, `testing.rs`).
#[derive(Debug)]
pub enum Ending {
    /// Healthy; now the profile's generation `generation` and the boot default.
    Committed {
        generation: u32,
        checks: Vec<CheckResult>,
    },
    /// A test plan ([`IntentKind::Test`]) ended healthy: live now, and nothing more. No
    /// generation was made; the profile and the boot default did not move.
    Tested { checks: Vec<CheckResult> },
    /// A deployment that needs a reboot ended healthy: live now, not the boot default; the
    /// profile did not move. The reboot side (`reboot/`) boots it once as a trial.
    Live { checks: Vec<CheckResult> },
    /// Failed; `back` says what became of the way back.
    Failed { failed: StepFailure, back: Back },
}

/// How the protocol ended, and how long its health checks took (none when they did not
/// run): what the run that records it needs.
#[derive(Debug)]
pub struct Activated {
    pub ending: Ending,
    pub health_ms: Option<u64>,
}

/// The way back after a failed activation.
#[derive(Debug)]
pub enum Back {
    /// The previous system is live again (`None`: there was none to go back to).
    Restored(Option<PathBuf>),
    /// The way back to `target` failed too: the machine needs attention.
    RollbackFailed { rollback: Failure, target: PathBuf },
}

/// A fresh tag for one intent's activations.
fn new_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{}-{nanos:x}", std::process::id())
}

impl Agent {
    /// The plan to activate `target`, built from `fetched`: on failure the boot default
    /// (the profile's generation, or what runs when there is none) is restored.
    pub(super) fn plan<'a>(
        &self,
        kind: IntentKind,
        fetched: &'a crate::source::Fetched,
        target: &'a Path,
    ) -> Plan<'a> {
        let profile = self.doors.machine.profile();
        Plan {
            kind,
            commit: Some(&fetched.commit),
            subject: Some(&fetched.subject),
            target,
            previous: profile
                .as_ref()
                .map(|g| g.system.clone())
                .or_else(|| self.doors.machine.current_system()),
            previous_generation: profile.as_ref().map(|g| g.number),
        }
    }

    /// Runs the protocol for `plan`. `Err` only when the intent could not be written:
    /// then nothing was touched.
    pub(super) async fn activate(
        &self,
        state: &mut State,
        plan: Plan<'_>,
    ) -> Result<Activated, Failure> {
        let mut intent = Intent {
            kind: plan.kind,
            step: Step::Activating,
            commit: plan.commit.map(str::to_string),
            subject: plan.subject.map(str::to_string),
            system: plan.target.display().to_string(),
            previous_system: plan
                .previous
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            previous_generation: plan.previous_generation,
            started_at: state::now(),
            activation: new_tag(),
        };
        state.intent = Some(intent.clone());
        self.save(state)?;
        crate::metrics::refresh(&self.settings, crate::metrics::After::Activating);
        crate::failpoint("after_intent");

        let mut health_ms = None;
        let failed = match self
            .test_check_commit(state, &mut intent, plan.target, &mut health_ms)
            .await
        {
            Ok(ending) => return Ok(Activated { ending, health_ms }),
            Err(failed) => failed,
        };
        log::error!(
            commit = plan.commit.unwrap_or_default(), message_id = crate::logging::message_id::FAILED;
            "activating {}: {}", plan.target.display(), failed.failure
        );
        let Some(previous) = plan.previous else {
            return Ok(Activated {
                ending: Ending::Failed {
                    failed,
                    back: Back::Restored(None),
                },
                health_ms,
            });
        };
        intent.step = Step::RollingBack;
        state.intent = Some(intent.clone());
        let _ = self.save(state); // the intent on disk already says "bring it back"
        notify::status(&format!("rolling back to {}", previous.display()));
        let back = match self.restore(&previous, &intent.activation).await {
            Ok(()) => Back::Restored(Some(previous)),
            Err(rollback) => Back::RollbackFailed {
                rollback,
                target: previous,
            },
        };
        Ok(Activated {
            ending: Ending::Failed { failed, back },
            health_ms,
        })
    }

    /// `switch-to-configuration test`, health checks, commit (not for a test plan); each
    /// step noted in the intent before it starts. How long the checks took goes into
    /// `health_ms`, whichever way it ends.
    async fn test_check_commit(
        &self,
        state: &mut State,
        intent: &mut Intent,
        target: &Path,
        health_ms: &mut Option<u64>,
    ) -> Result<Ending, StepFailure> {
        let what = intent
            .commit
            .as_deref()
            .map_or_else(|| target.display().to_string(), |c| short(c).to_string());
        let fail = |phase, failure, checks| StepFailure {
            phase,
            failure,
            checks,
        };
        let machine = &self.doors.machine;

        notify::status(&format!("activating {what}"));
        machine
            .switch(target, Action::Test, &intent.activation)
            .await
            .map_err(|f| fail(Phase::Activate, f, Vec::new()))?;
        crate::failpoint("after_activate");

        intent.step = Step::Checking;
        state.intent = Some(intent.clone());
        self.save(state)
            .map_err(|f| fail(Phase::Activate, f, Vec::new()))?;
        notify::status(&format!("checking health of {what}"));
        let checking = std::time::Instant::now();
        let report = self.doors.health.wait_until_healthy().await;
        *health_ms = crate::ledger::Took::new(None, Some(checking.elapsed())).health_ms;
        crate::failpoint("after_health");
        if !report.healthy {
            let message = format!(
                "health check failed: {}",
                report.failure().unwrap_or_default()
            );
            return Err(fail(
                Phase::Health,
                Failure::new(Kind::Commit, message),
                report.results,
            ));
        }
        if intent.kind == IntentKind::Deploy && self.needs_reboot(target) {
            // Only a boot that verified makes it the default (reboot/verify.rs).
            log::info!(
                "{} boots differently from the booted system (kernel, initrd, modules, parameters or device tree): live now, the boot default stays the last verified generation until a trial boot into it verified",
                target.display()
            );
            return Ok(Ending::Live {
                checks: report.results,
            });
        }
        if intent.kind == IntentKind::Test {
            // A test activation never commits: the profile and the boot default stay
            // where they are, and a reboot or the next deployment replaces the tested
            // system.
            return Ok(Ending::Tested {
                checks: report.results,
            });
        }

        intent.step = Step::Committing;
        state.intent = Some(intent.clone());
        self.save(state)
            .map_err(|f| fail(Phase::Commit, f, report.results.clone()))?;
        notify::status(&format!("making {what} the boot default"));
        crate::failpoint("before_profile_set");
        let generation = machine
            .set_profile(target)
            .await
            .map_err(|f| fail(Phase::Commit, f, report.results.clone()))?;
        crate::failpoint("after_profile_set");
        machine
            .switch(target, Action::Boot, &intent.activation)
            .await
            .map_err(|f| fail(Phase::Commit, f, report.results.clone()))?;
        crate::failpoint("after_boot");
        Ok(Ending::Committed {
            generation,
            checks: report.results,
        })
    }

    /// Whether `target` needs a reboot: it boots differently from the booted system.
    fn needs_reboot(&self, target: &Path) -> bool {
        crate::system::reboot_required(&self.settings.paths.booted_system, target) == Some(true)
    }

    /// Makes `target` the live system and the profile's current generation again.
    /// Idempotent: safe to repeat after a kill at any point.
    pub(super) async fn restore(&self, target: &Path, tag: &str) -> Result<(), Failure> {
        let machine = &self.doors.machine;
        let profile_moved = machine.profile().is_some_and(|g| g.system != target);
        if profile_moved {
            machine.set_profile(target).await?;
        }
        crate::failpoint("mid_rollback");
        machine.switch(target, Action::Test, tag).await?;
        if profile_moved {
            machine.switch(target, Action::Boot, tag).await?;
        }
        Ok(())
    }
}
