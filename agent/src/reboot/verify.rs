//! `homelab-agent verify-boot`, run once per boot by a unit ordered before
//! `boot-complete.target` (README "Reboots"):
//!
//! - **a boot the agent rebooted into, not yet verified**: run the health checks. Pass:
//!   verified, the FleetLock slot released. Fail: the previous generation becomes the
//!   boot default again (`nix-env -p <profile> --set` + its `switch-to-configuration
//!   boot`), the commit is marked bad, and the machine reboots once. The loop breaker: a
//!   fallback reboot is recorded *before* it is issued, and never issued twice for the
//!   same system; a boot that lands in a system it already fell back from changes nothing.
//! - **a fallback boot**: the booted system is not the profile's default (the bootloader
//!   fell back, or the default never came up). When the default is the agent's latest
//!   deployment, that deployment failed: recorded as such (phase `boot`), its commit
//!   marked bad, and the booted system made the boot default again so the next boot is
//!   the one that works.
//! - anything else: nothing to verify; a stale FleetLock slot is released.
//!
//! A marker in the runtime directory (a tmpfs, empty at every boot) makes a second call
//! in the same boot a no-op.

use std::path::Path;

use jiff::Timestamp;

use crate::config::Settings;
use crate::deploy::doors::{Health, Machine};
use crate::logging::message_id;
use crate::state::{self, Deployed, Outcome, Phase, Run, State, Store};
use crate::system::{self, profile, switch::Action};

use super::doors::Effects;
use super::policy::rfc3339;
use super::record::{self, Boot, Fallback, Record};

/// The marker: verify-boot already ran in this boot.
pub const MARKER: &str = "boot-verified";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Already ran in this boot.
    AlreadyDone,
    /// Not a boot the agent rebooted into, nor a fallback.
    Nothing(String),
    /// The checks passed after the agent's reboot.
    Verified,
    /// The checks failed: the previous generation is the boot default again, and a reboot
    /// into it was issued (`rebooting`) or not (it failed).
    FellBack { rebooting: bool },
    /// The booted system is not the profile's default: recorded (and undone when it was
    /// the agent's deployment).
    FallbackBoot,
    /// The checks failed again in a system already fallen back from: no second reboot.
    LoopBroken,
    /// Could not do its job (record unreadable, no previous generation, ...).
    Failed(String),
}

impl Verdict {
    /// The unit's exit status: a failed verification fails the unit, so
    /// `boot-complete.target` is not reached and a counting bootloader is not told the
    /// boot was good.
    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::AlreadyDone
            | Verdict::Nothing(_)
            | Verdict::Verified
            | Verdict::FallbackBoot => crate::exit::OK,
            Verdict::FellBack { .. } | Verdict::LoopBroken => crate::exit::FAILED,
            Verdict::Failed(_) => crate::exit::ENVIRONMENT,
        }
    }
}

pub struct BootDoors<'a> {
    pub machine: &'a dyn Machine,
    pub health: &'a dyn Health,
    pub effects: &'a Effects,
}

pub async fn verify_boot(settings: &Settings, doors: &BootDoors<'_>, now: Timestamp) -> Verdict {
    let p = &settings.paths;
    let marker = p.runtime_dir.join(MARKER);
    if marker.exists() {
        return Verdict::AlreadyDone;
    }
    let mut record = match record::load(&p.state_dir) {
        Ok(r) => r,
        Err(problem) => {
            return Verdict::Failed(format!(
                "{problem}\nhint: move it aside; the next boot starts a fresh record"
            ))
        }
    };
    let Some(booted) = system::resolve(&p.booted_system) else {
        mark(&marker);
        return Verdict::Nothing(format!("{} does not exist", p.booted_system.display()));
    };
    let shown = booted.display().to_string();
    let default = doors.machine.profile();
    let generation = generation_of(&p.profile, &booted);
    log::info!(
        message_id = message_id::BOOTED, system = shown.as_str();
        "booted {shown} (generation {})", generation.map_or("?".into(), |g| g.to_string())
    );
    let mut boot = Boot {
        system: shown.clone(),
        generation,
        at: rfc3339(now),
        verified: None,
        detail: "not a boot the agent rebooted into: nothing to verify".into(),
    };
    let verdict = match default.as_ref().filter(|d| d.system != booted) {
        Some(default) => fallback_boot(settings, doors, &mut record, &mut boot, default, now).await,
        None => {
            let ours = record
                .rebooted
                .as_ref()
                .is_some_and(|r| r.system == shown && r.verified.is_none());
            if ours {
                check(settings, doors, &mut record, &mut boot, now).await
            } else {
                Verdict::Nothing(boot.detail.clone())
            }
        }
    };
    // A slot this machine may hold from before the boot is released (UnlockIfHeld is
    // harmless when it holds none, and the record may have been lost): as Zincati does at
    // start. Until the server acknowledges, every run tries again.
    if !matches!(verdict, Verdict::FellBack { rebooting: true }) && doors.effects.slot.is_some() {
        record.slot_held = true;
        super::release(&mut record, doors.effects).await;
    }
    record.boot = Some(boot);
    if let Err(e) = record::save(&p.state_dir, &record) {
        log::error!("saving {}: {e}", record::path(&p.state_dir).display());
    }
    mark(&marker);
    if let Verdict::FellBack { rebooting: true } = verdict {
        let reason = record
            .fallback
            .as_ref()
            .map(|f| format!("homelab-agent: boot verification of {} failed; rebooting into the previous generation", f.from_system))
            .unwrap_or_default();
        // Told before the reboot stops this unit (the queue is sent once).
        crate::announce::send_queued(settings).await;
        if let Err(e) = doors.effects.rebooter.reboot(&reason).await {
            log::error!("rebooting into the previous generation: {e}\nhint: it is the boot default: reboot by hand");
            return Verdict::FellBack { rebooting: false };
        }
    }
    verdict
}

fn mark(marker: &Path) {
    if let Some(dir) = marker.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(marker, b"") {
        log::warn!("writing {}: {e}", marker.display());
    }
}

/// The newest generation of the profile whose system is `system`.
fn generation_of(profile: &Path, system: &Path) -> Option<u32> {
    profile::list(profile)
        .into_iter()
        .rev()
        .find(|g| g.system == system)
        .map(|g| g.number)
}

/// After the agent's reboot: the health checks decide.
async fn check(
    settings: &Settings,
    doors: &BootDoors<'_>,
    record: &mut Record,
    boot: &mut Boot,
    now: Timestamp,
) -> Verdict {
    let report = doors.health.wait_until_healthy().await;
    let booted = boot.system.clone();
    if report.healthy {
        boot.verified = Some(true);
        boot.detail = "rebooted into by the agent; health checks passed".into();
        if let Some(r) = record.rebooted.as_mut() {
            r.verified = Some(true);
        }
        log::info!(
            message_id = message_id::BOOT_VERIFIED, system = booted.as_str();
            "boot of generation {} verified: health checks passed", gen(boot.generation)
        );
        return Verdict::Verified;
    }
    let why = report
        .failure()
        .unwrap_or_else(|| "health checks did not pass".into());
    boot.verified = Some(false);
    if let Some(r) = record.rebooted.as_mut() {
        r.verified = Some(false);
    }
    // The loop breaker: never a second fallback reboot for the same system.
    if record
        .fallback
        .as_ref()
        .is_some_and(|f| f.from_system == booted && f.rebooted)
    {
        boot.detail = format!(
            "health checks failed again after a fallback reboot ({why}): not rebooting again"
        );
        log::error!(
            message_id = message_id::FELL_BACK, system = booted.as_str();
            "{}\nhint: the machine needs a look: `homelab-agent status`, `journalctl -b`", boot.detail
        );
        return Verdict::LoopBroken;
    }
    let Some(previous) = doors.machine.previous_generation() else {
        boot.detail = format!(
            "health checks failed ({why}) and there is no previous generation to fall back to"
        );
        log::error!(message_id = message_id::FELL_BACK; "{}", boot.detail);
        return Verdict::Failed(boot.detail.clone());
    };
    let error = format!(
        "the boot of generation {} failed its health checks: {why}; generation {} ({}) is the boot default again",
        gen(boot.generation),
        previous.number,
        previous.system.display()
    );
    // Recorded before anything is touched: the loop breaker holds even if we are killed.
    record.fallback = Some(Fallback {
        at: rfc3339(now),
        from_system: booted.clone(),
        from_generation: boot.generation,
        to_system: Some(previous.system.display().to_string()),
        reason: error.clone(),
        kind: "boot-verification-failed".into(),
        rebooted: true,
    });
    if let Err(e) = record::save(&settings.paths.state_dir, record) {
        boot.detail = format!("{error}; but saving the record failed ({e}): not falling back");
        return Verdict::Failed(boot.detail.clone());
    }
    if let Err(e) = make_default(settings, doors.machine, &previous.system, now).await {
        if let Some(f) = record.fallback.as_mut() {
            f.rebooted = false;
        }
        boot.detail = format!(
            "health checks failed ({why}); making generation {} the boot default failed: {e}",
            previous.number
        );
        log::error!(message_id = message_id::FELL_BACK; "{}", boot.detail);
        return Verdict::Failed(boot.detail.clone());
    }
    let mut run = Run::new(Outcome::Failed);
    run.phase = Some(Phase::Health);
    // The failed system's generation: the boot's, else the one the reboot recorded.
    run.generation = boot.generation.or_else(|| {
        record
            .rebooted
            .as_ref()
            .filter(|r| r.system == booted)
            .and_then(|r| r.generation)
    });
    run.checks = report.results.clone();
    run.rolled_back = Some(true);
    record_failure(settings, &booted, &previous.system, run, &error);
    boot.detail = error.clone();
    log::error!(
        message_id = message_id::FELL_BACK, system = booted.as_str();
        "{error}; rebooting into it"
    );
    Verdict::FellBack { rebooting: true }
}

/// The booted system is not the profile's default.
async fn fallback_boot(
    settings: &Settings,
    doors: &BootDoors<'_>,
    record: &mut Record,
    boot: &mut Boot,
    default: &profile::Generation,
    now: Timestamp,
) -> Verdict {
    let booted = boot.system.clone();
    let default_shown = default.system.display().to_string();
    // A boot into a system given up after a failed verification: the loop breaker.
    if record
        .fallback
        .as_ref()
        .is_some_and(|f| f.from_system == booted)
    {
        boot.detail = format!(
            "booted {booted}, which failed its checks before and was given up; the boot default is generation {}: not touching anything",
            default.number
        );
        log::error!(message_id = message_id::FELL_BACK; "{}\nhint: the bootloader did not boot the default: the machine needs a look", boot.detail);
        return Verdict::LoopBroken;
    }
    if let Some(r) = record
        .rebooted
        .as_mut()
        .filter(|r| r.system == default_shown)
    {
        r.verified = Some(false);
    }
    let store = Store::new(&settings.paths.state_dir);
    let ours = store
        .peek()
        .ok()
        .and_then(|s| s.deployed)
        .is_some_and(|d| d.system == default_shown);
    let reason = format!(
        "the machine booted {booted} instead of the boot default, generation {} ({default_shown}): the bootloader fell back",
        default.number
    );
    record.fallback = Some(Fallback {
        at: rfc3339(now),
        from_system: default_shown.clone(),
        from_generation: Some(default.number),
        to_system: Some(booted.clone()),
        reason: reason.clone(),
        kind: "bootloader-fallback".into(),
        rebooted: false,
    });
    boot.detail = reason.clone();
    if !ours {
        log::warn!(message_id = message_id::FELL_BACK; "{reason} (not the agent's latest deployment: left as it is)");
        return Verdict::FallbackBoot;
    }
    let error = format!("{reason}; the deployment failed at boot");
    let mut run = Run::new(Outcome::Failed);
    run.phase = Some(Phase::Boot);
    run.generation = Some(default.number);
    run.rolled_back = Some(true);
    if let Err(e) = make_default(settings, doors.machine, Path::new(&booted), now).await {
        log::error!(message_id = message_id::FELL_BACK; "{error}; making the booted system the boot default failed: {e}");
        run.rolled_back = Some(false);
    }
    record_failure(settings, &default_shown, Path::new(&booted), run, &error);
    log::error!(message_id = message_id::FELL_BACK, system = default_shown.as_str(); "{error}");
    Verdict::FallbackBoot
}

/// `system` becomes the boot default: the profile (a new generation) and the bootloader.
async fn make_default(
    settings: &Settings,
    machine: &dyn Machine,
    system: &Path,
    now: Timestamp,
) -> Result<u32, String> {
    let _ = settings;
    let number = machine.set_profile(system).await.map_err(|f| f.message)?;
    let tag = format!("fallback-{}", now.as_second());
    machine
        .switch(system, Action::Boot, &tag)
        .await
        .map_err(|f| f.message)?;
    Ok(number)
}

/// History gets the failed deployment; its commit is marked bad; `deployed` is what now
/// boots.
fn record_failure(
    settings: &Settings,
    failed: &str,
    now_default: &Path,
    mut run: Run,
    error: &str,
) {
    let store = Store::new(&settings.paths.state_dir);
    let mut st: State = match store.load() {
        Ok(s) => s,
        Err(e) => {
            log::error!("recording the failed boot in the state: {e:#}");
            return;
        }
    };
    let commit_of = |st: &State, system: &str| -> Option<String> {
        st.deployed
            .as_ref()
            .filter(|d| d.system == system)
            .and_then(|d| d.commit.clone())
            .or_else(|| {
                st.history
                    .iter()
                    .find(|r| r.system.as_deref() == Some(system) && r.outcome == Outcome::Deployed)
                    .and_then(|r| r.commit.clone())
            })
    };
    let commit = commit_of(&st, failed);
    let back = now_default.display().to_string();
    run.commit = commit.clone();
    run.system = Some(failed.to_string());
    run.error = Some(error.to_string());
    if let Some(c) = &commit {
        st.mark_bad_system(c, run.phase.unwrap_or(Phase::Boot), error, Some(failed));
    }
    let back_commit = commit_of(&st, &back);
    st.deployed = Some(Deployed {
        commit: back_commit,
        subject: None,
        system: back.clone(),
        generation: profile::current(&settings.paths.profile)
            .filter(|g| g.system == now_default)
            .map(|g| g.number),
        at: state::now(),
    });
    crate::announce::queue(settings, &run, &st);
    st.push_run(run);
    if let Err(e) = store.save(&st) {
        log::error!("recording the failed boot in the state: {e:#}");
    }
}

fn gen(g: Option<u32>) -> String {
    g.map_or("?".into(), |g| g.to_string())
}
