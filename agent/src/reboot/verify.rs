//! `homelab-agent verify-boot`, run once per boot by a unit ordered before
//! `boot-complete.target` (docs/reboots.md). The rule it keeps: the boot default only ever
//! points at a generation that booted and verified on this machine.
//!
//! - **the trial boot** the agent armed (`record.trial`): run the health checks. Pass: the
//!   generation becomes the boot default (profile + `switch-to-configuration boot`), is
//!   recorded as the last verified one, the trial is disarmed, the FleetLock slot
//!   released. Fail: its commit is marked bad and the machine reboots once; the boot
//!   default never moved, so the last verified generation boots.
//! - **a boot of the default that never verified here** (a person made it the default, a
//!   record from an older agent, a first boot): the checks too. Pass: recorded as
//!   verified. Fail: the last verified generation (recorded, never merely "the previous
//!   one") becomes the boot default again, the commit is marked bad, one reboot. The loop
//!   breaker: a fallback reboot is recorded *before* it is issued, never issued twice for
//!   the same system, and a boot that lands in a system given up changes nothing.
//! - **a fallback boot**: the booted system is not the profile's default, and the default
//!   never verified (the bootloader fell back): recorded as a failed deployment (phase
//!   `boot`) when it was the agent's, and the booted system made the default again.
//! - anything else (the verified default, or another generation a person chose while the
//!   default is verified): nothing to verify; a stale FleetLock slot is released.
//!
//! Started in the same boot as a deployment (`switch-to-configuration test` starts every
//! wanted unit that is not running; issue 20): the running system is then not the booted
//! one, and it does nothing, without waiting for the run lock ([`started_by_activation`]).
//!
//! A marker in the runtime directory (a tmpfs, empty at every boot) makes a second call
//! in the same boot a no-op.

use std::path::Path;

use jiff::Timestamp;

use crate::config::Settings;
use crate::doors::{Health, Machine};
use crate::ledger::Ledger;
use crate::logging::message_id;
use crate::state::{Outcome, Phase, Run};
use crate::system::{profile, switch::Action};

use super::record::{self, Boot, Fallback, Record};
use crate::doors::reboot::{Effects, Links};

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

/// `Some(why)` when this is not the start of a boot: an activation already ran in it
/// (the running system is not the booted one), so `switch-to-configuration` started the
/// unit, and there is nothing to verify (issue 20). Checked before the run lock: the run
/// that holds it is the one whose activation started us.
pub fn started_by_activation(links: &dyn Links) -> Option<String> {
    let (Some(booted), Some(current)) = (links.booted(), links.current()) else {
        return None;
    };
    (booted != current).then(|| {
        format!(
            "{} runs, not the booted {}: started by an activation in this boot, not by a boot; a boot is verified at its start",
            current.display(),
            booted.display()
        )
    })
}

pub async fn verify_boot(settings: &Settings, doors: &BootDoors<'_>, now: Timestamp) -> Verdict {
    let p = &settings.paths;
    let marker = p.runtime_dir.join(MARKER);
    if marker.exists() {
        return Verdict::AlreadyDone;
    }
    let links = &*doors.effects.links;
    if let Some(why) = started_by_activation(links) {
        // No marker: the boot's own verification (if it has not run yet) still runs.
        return Verdict::Nothing(why);
    }
    let mut record = match record::load(&p.state_dir) {
        Ok(r) => r,
        Err(problem) => {
            return Verdict::Failed(crate::failure::with_hint_line(
                problem.message,
                "move it aside; the next boot starts a fresh record",
            ))
        }
    };
    let Some(booted) = links.booted() else {
        mark(&marker);
        return Verdict::Nothing(format!("{} does not exist", p.booted_system.display()));
    };
    let shown = booted.display().to_string();
    let default = doors.machine.profile();
    let generation = generation_of(links, &booted);
    log::info!(
        message_id = message_id::BOOTED, system = shown.as_str();
        "booted {shown} (generation {})", generation.map_or("?".into(), |g| g.to_string())
    );
    let mut boot = Boot {
        system: shown.clone(),
        generation,
        at: now.into(),
        verified: None,
        detail: "not a boot the agent rebooted into: nothing to verify".into(),
        hint: None,
    };
    if let Some(t) = record.trial.clone().filter(|t| t.system != shown) {
        // The trial was armed and this is not it: the trial boot was reset before it
        // verified (a panic, a hang and the watchdog, the trial deadline, a power cut),
        // and the bootloader booted its default, the last verified generation. Not blamed
        // on the commit (a power cut is not its fault); never tried twice (policy.rs).
        disarm(doors).await;
        record.trial = None;
        if let Some(r) = record.rebooted.as_mut().filter(|r| r.system == t.system) {
            r.verified = Some(false);
        }
        let reason = format!(
            "the trial boot of {} (armed at {}) did not verify: it was reset before (a panic, a hang and the watchdog, the trial deadline or a power cut), and the boot default {shown} booted",
            t.system, t.at
        );
        log::error!(message_id = message_id::FELL_BACK, system = t.system.as_str(); "{reason}");
        record.fallback = Some(Fallback {
            at: now.into(),
            from_system: t.system.clone(),
            from_generation: t.generation,
            to_system: Some(shown.clone()),
            reason,
            kind: "trial-reset".into(),
            rebooted: false,
        });
    }
    let trial = record.trial.clone().filter(|t| t.system == shown);
    let last_verified = record.last_verified().map(str::to_string);
    // What this boot records in the state goes through it; its events are sent below.
    let ledger = Ledger::new(settings);
    let verdict = if trial.is_some() {
        trial_boot(settings, &ledger, doors, &mut record, &mut boot, now).await
    } else {
        match default.as_ref().filter(|d| d.system != booted) {
            Some(default)
                if last_verified.as_deref() == Some(&*default.system.to_string_lossy())
                    && record
                        .fallback
                        .as_ref()
                        .is_none_or(|f| f.from_system != shown) =>
            {
                boot.detail = format!(
                    "booted {shown}, not the boot default generation {} (verified): chosen by a person, left as it is",
                    default.number
                );
                Verdict::Nothing(boot.detail.clone())
            }
            Some(default) => {
                fallback_boot(
                    settings,
                    &ledger,
                    doors,
                    &mut record,
                    &mut boot,
                    default,
                    now,
                )
                .await
            }
            None if last_verified.as_deref() == Some(&shown) => {
                boot.verified = Some(true);
                boot.detail = "the last verified generation: nothing to verify".into();
                Verdict::Nothing(boot.detail.clone())
            }
            // The boot default never verified on this machine: whoever rebooted, verify.
            None => check(settings, &ledger, doors, &mut record, &mut boot, now).await,
        }
    };
    // A slot this machine may hold from before the boot is released (UnlockIfHeld is
    // harmless when it holds none, and the record may have been lost): as Zincati does at
    // start. Until the server acknowledges, every run tries again.
    if !matches!(verdict, Verdict::FellBack { rebooting: true }) && doors.effects.slot.is_some() {
        super::release_at_boot(&mut record, doors.effects).await;
    }
    let reason = format!(
        "homelab-agent: {}",
        boot.detail.lines().next().unwrap_or_default()
    );
    record.boot = Some(boot);
    if let Err(e) = record::save(&p.state_dir, &record) {
        log::error!("saving {}: {e}", record::path(&p.state_dir).display());
    }
    mark(&marker);
    // A failed or fallen-back boot is a recorded run like any other: told, before a
    // reboot stops this unit.
    crate::announce::send_all(&settings.notify, ledger.take_events()).await;
    if let Verdict::FellBack { rebooting: true } = verdict {
        if let Err(e) = doors.effects.rebooter.reboot(&reason).await {
            log::error!(
                hint = "it is the last verified generation: reboot by hand"; "{}",
                crate::failure::with_hint_line(
                    format!("rebooting into the boot default: {e}"),
                    "it is the last verified generation: reboot by hand"
                )
            );
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
fn generation_of(links: &dyn Links, system: &Path) -> Option<u32> {
    links
        .generations()
        .into_iter()
        .rev()
        .find(|g| g.system == system)
        .map(|g| g.number)
}

/// After the agent's reboot: the health checks decide.
async fn check(
    settings: &Settings,
    ledger: &Ledger,
    doors: &BootDoors<'_>,
    record: &mut Record,
    boot: &mut Boot,
    now: Timestamp,
) -> Verdict {
    let report = doors.health.wait_until_healthy().await;
    let booted = boot.system.clone();
    if report.healthy {
        boot.verified = Some(true);
        boot.detail = "a boot of a generation not yet verified here; health checks passed".into();
        if let Some(r) = record.rebooted.as_mut().filter(|r| r.system == booted) {
            r.verified = Some(true);
        }
        record.verified = Some(record::Verified {
            system: booted.clone(),
            generation: boot.generation,
            at: now.into(),
        });
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
        let hint = "the machine needs a look: `homelab-agent status`, `journalctl -b`";
        log::error!(
            message_id = message_id::FELL_BACK, system = booted.as_str(), hint = hint;
            "{}", crate::failure::with_hint_line(&boot.detail, hint)
        );
        return Verdict::LoopBroken;
    }
    // Only ever to the last generation that booted and verified here.
    let Some(previous) = last_verified_generation(&*doors.effects.links, record)
        .filter(|g| g.system.to_string_lossy() != booted)
    else {
        boot.detail = format!("health checks failed ({why}) and no other generation is recorded as booted and verified on this machine: not falling back");
        boot.hint = Some("look at the machine (journalctl -b); `sudo homelab-agent rollback` goes back to the previous generation".into());
        let failed =
            crate::failure::with_hint_line(&boot.detail, boot.hint.as_deref().unwrap_or_default());
        log::error!(message_id = message_id::FELL_BACK; "{failed}");
        return Verdict::Failed(failed);
    };
    let error = format!(
        "the boot of generation {} failed its health checks: {why}; generation {} ({}) is the boot default again",
        gen(boot.generation),
        previous.number,
        previous.system.display()
    );
    // Recorded before anything is touched: the loop breaker holds even if we are killed.
    record.fallback = Some(Fallback {
        at: now.into(),
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
    record_failure(settings, ledger, &booted, &previous.system, run, &error);
    boot.detail = error.clone();
    log::error!(
        message_id = message_id::FELL_BACK, system = booted.as_str();
        "{error}; rebooting into it"
    );
    Verdict::FellBack { rebooting: true }
}

/// The profile's newest generation of the last verified system, if it is still there.
fn last_verified_generation(links: &dyn Links, record: &Record) -> Option<profile::Generation> {
    let system = record.last_verified()?;
    links
        .generations()
        .into_iter()
        .rev()
        .find(|g| g.system == Path::new(system))
}

/// The trial boot the agent armed: the checks decide whether it becomes the default.
async fn trial_boot(
    settings: &Settings,
    ledger: &Ledger,
    doors: &BootDoors<'_>,
    record: &mut Record,
    boot: &mut Boot,
    now: Timestamp,
) -> Verdict {
    let booted = boot.system.clone();
    let deployed = ledger
        .peek()
        .ok()
        .and_then(|s| s.deployed)
        .map(|d| d.system);
    // The trial's files go; the flag was consumed by the bootloader at this boot.
    disarm(doors).await;
    record.trial = None;
    if deployed.as_deref() != Some(booted.as_str()) {
        // Armed for a deployment that a later one replaced: never promoted.
        boot.detail = format!(
            "a trial boot of {booted}, which is no longer the agent's deployment ({}): not verified; rebooting into the boot default",
            deployed.as_deref().unwrap_or("none")
        );
        log::warn!(message_id = message_id::FELL_BACK; "{}", boot.detail);
        return Verdict::FellBack { rebooting: true };
    }
    let report = doors.health.wait_until_healthy().await;
    if !report.healthy {
        let why = report
            .failure()
            .unwrap_or_else(|| "health checks did not pass".into());
        boot.verified = Some(false);
        if let Some(r) = record.rebooted.as_mut().filter(|r| r.system == booted) {
            r.verified = Some(false);
        }
        // The boot default never moved: it is the last verified generation, and the
        // reboot boots it. Made sure of when the record names another one.
        let default = doors.machine.profile();
        let back = last_verified_generation(&*doors.effects.links, record).or(default.clone());
        let Some(back) = back else {
            boot.detail = format!("the trial boot failed its health checks ({why}) and there is no boot default to go back to");
            return Verdict::Failed(boot.detail.clone());
        };
        let error = format!(
            "the trial boot of {booted} failed its health checks: {why}; generation {} ({}) stays the boot default",
            back.number,
            back.system.display()
        );
        record.fallback = Some(Fallback {
            at: now.into(),
            from_system: booted.clone(),
            from_generation: None,
            to_system: Some(back.system.display().to_string()),
            reason: error.clone(),
            kind: "trial-failed".into(),
            rebooted: true,
        });
        if let Err(e) = record::save(&settings.paths.state_dir, record) {
            boot.detail = format!("{error}; but saving the record failed ({e}): not rebooting");
            return Verdict::Failed(boot.detail.clone());
        }
        if default.as_ref().is_none_or(|d| d.system != back.system) {
            if let Err(e) = make_default(settings, doors.machine, &back.system, now).await {
                log::error!(
                    "making generation {} the boot default again: {e}",
                    back.number
                );
            }
        }
        let mut run = Run::new(Outcome::Failed);
        run.phase = Some(Phase::Health);
        run.checks = report.results.clone();
        run.rolled_back = Some(true);
        record_failure(settings, ledger, &booted, &back.system, run, &error);
        boot.detail = error.clone();
        log::error!(
            message_id = message_id::FELL_BACK, system = booted.as_str();
            "{error}; rebooting into it"
        );
        return Verdict::FellBack { rebooting: true };
    }
    // Verified: now it becomes the boot default.
    let number = match make_default(settings, doors.machine, Path::new(&booted), now).await {
        Ok(n) => n,
        Err(e) => {
            boot.verified = Some(true);
            boot.detail = format!("the trial boot passed its health checks, but making it the boot default failed: {e}");
            boot.hint = Some("the boot default is still the last verified generation; the next deployment tries again".into());
            let failed = crate::failure::with_hint_line(
                &boot.detail,
                boot.hint.as_deref().unwrap_or_default(),
            );
            log::error!("{failed}");
            return Verdict::Failed(failed);
        }
    };
    crate::failpoint("after_trial_promote");
    boot.generation = Some(number);
    boot.verified = Some(true);
    boot.detail = "the agent's trial boot; health checks passed: now the boot default".into();
    if let Some(r) = record.rebooted.as_mut().filter(|r| r.system == booted) {
        r.verified = Some(true);
        r.generation = Some(number);
    }
    record.verified = Some(record::Verified {
        system: booted.clone(),
        generation: Some(number),
        at: now.into(),
    });
    match ledger.load() {
        Ok(mut st) => {
            ledger.promoted(&mut st, &booted, number);
            if let Err(e) = ledger.save(&st) {
                log::error!("recording generation {number} in the state: {e:#}");
            }
        }
        Err(e) => log::error!("recording generation {number} in the state: {e:#}"),
    }
    log::info!(
        message_id = message_id::BOOT_VERIFIED, system = booted.as_str();
        "trial boot verified: health checks passed; generation {number} is the boot default"
    );
    Verdict::Verified
}

async fn disarm(doors: &BootDoors<'_>) {
    if let Some(door) = &doors.effects.trial {
        if let Err(f) = door.disarm().await {
            log::warn!("disarming the trial through {}: {f}", door.describe());
        }
    }
}

/// The booted system is not the profile's default.
async fn fallback_boot(
    settings: &Settings,
    ledger: &Ledger,
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
        log::error!(message_id = message_id::FELL_BACK, hint = "the bootloader did not boot the default: the machine needs a look"; "{}", crate::failure::with_hint_line(&boot.detail, "the bootloader did not boot the default: the machine needs a look"));
        return Verdict::LoopBroken;
    }
    if let Some(r) = record
        .rebooted
        .as_mut()
        .filter(|r| r.system == default_shown)
    {
        r.verified = Some(false);
    }
    let ours = ledger
        .peek()
        .ok()
        .and_then(|s| s.deployed)
        .is_some_and(|d| d.system == default_shown);
    let reason = format!(
        "the machine booted {booted} instead of the boot default, generation {} ({default_shown}): the bootloader fell back",
        default.number
    );
    record.fallback = Some(Fallback {
        at: now.into(),
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
    record_failure(
        settings,
        ledger,
        &default_shown,
        Path::new(&booted),
        run,
        &error,
    );
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

/// The failed boot through the ledger ([`Ledger::failed_boot`]); `now_default` is what
/// boots now, as the profile's generation when it is one.
fn record_failure(
    settings: &Settings,
    ledger: &Ledger,
    failed: &str,
    now_default: &Path,
    run: Run,
    error: &str,
) {
    let generation = profile::current(&settings.paths.profile)
        .filter(|g| g.system == now_default)
        .map(|g| g.number);
    if let Err(e) = ledger.failed_boot(failed, now_default, generation, run, error) {
        log::error!("recording the failed boot in the state: {e:#}");
    }
}

fn gen(g: Option<u32>) -> String {
    g.map_or("?".into(), |g| g.to_string())
}
