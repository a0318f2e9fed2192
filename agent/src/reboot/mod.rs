//! Reboots that cannot brick the machine (README "Reboots"; issue 12).
//!
//! A deployment whose system has another kernel, initrd or kernel modules than the booted
//! one is a *reboot deploy*. It is activated live first, exactly like any other deployment
//! (`switch-to-configuration test`, then the health checks: they catch every userspace
//! failure with the old kernel still running), and only a healthy system becomes the boot
//! default. Then the reboot policy applies ([`after_cycle`], called by the run that holds
//! the lock, after everything is recorded): with `policy = "when-required"` the machine
//! reboots into it inside the window, holding a FleetLock slot if a server is configured;
//! meanwhile `status` says `reboot pending` and what it waits for.
//!
//! After the reboot a boot-time unit runs `homelab-agent verify-boot` ([`verify`]) before
//! `boot-complete.target`: the health checks again, on the new kernel. Pass: the boot is
//! verified and the slot released. Fail: the previous generation becomes the boot default
//! again, the commit is marked bad, and the machine reboots once (never a second time for
//! the same failure). A boot that landed in another system than the profile's default
//! (the bootloader fell back) is recorded as a failed deployment.
//!
//! | file           | owns                                                              |
//! |----------------|-------------------------------------------------------------------|
//! | `mod.rs`       | [`after_cycle`]: the policy acted on (slot, record, reboot)        |
//! | `policy.rs`    | the decision, a pure function of settings, record, facts and time |
//! | `window.rs`    | window math in the window's time zone                             |
//! | `verify.rs`    | `verify-boot`: verification, fallback, loop breaker               |
//! | `record.rs`    | `reboot.json`: pending, rebooted-for, last boot, last fallback    |
//! | `fleetlock.rs` | the FleetLock client (pre-reboot / steady-state)                  |
//! | `doors.rs`     | the side effects behind traits (slot, reboot) and the real ones   |
//! | `view.rs`      | the `reboot` object of `status --json` and its human line         |

pub mod doors;
pub mod fleetlock;
pub mod policy;
pub mod record;
pub mod trial;
pub mod uboot;
pub mod verify;
pub mod view;
pub mod window;

use jiff::Timestamp;

use crate::config::{RebootPolicy, Settings};
use crate::logging::message_id;
use crate::state::State;
use crate::system;

use doors::Effects;
use policy::{rfc3339, Decision};
use record::{Rebooted, Record, Waiting};

pub use view::View;

/// What [`after_cycle`] did (for tests and the caller's log).
#[derive(Debug, Clone, PartialEq)]
pub enum Acted {
    /// `policy = "never"`: nothing looked at, nothing written.
    Off,
    NotRequired,
    Waiting(Waiting),
    /// The reboot was queued with systemd.
    Rebooting,
}

/// After a run, under its lock: apply the reboot policy (README "Reboots").
pub async fn after_cycle(settings: &Settings) -> Acted {
    if settings.reboot.policy == RebootPolicy::Never {
        return Acted::Off;
    }
    let effects = Effects::real(settings);
    after_cycle_with(settings, &effects, Timestamp::now()).await
}

/// The facts [`policy::decide`] needs, read from the machine, and from `state` (the
/// caller's: read once).
pub fn facts(settings: &Settings, state: &State, record_problem: Option<String>) -> policy::Facts {
    let p = &settings.paths;
    let booted = system::resolve(&p.booted_system);
    let default = system::profile::current(&p.profile);
    let kernel_changed = default
        .as_ref()
        .and_then(|d| system::reboot_required(&p.booted_system, &d.system));
    let unresolved = if state.rollback_pending.is_some() {
        Some("a rollback failed (status needs attention)".to_string())
    } else if let Some(p) = crate::pause::active(state) {
        // An operator's pause holds reboots too: maintenance, moving the rack.
        Some(format!("paused ({})", crate::pause::describe(p)))
    } else {
        state
            .intent
            .as_ref()
            .map(|i| format!("a run's deployment of {} is unresolved", i.system))
    };
    policy::Facts {
        booted,
        default,
        kernel_changed,
        unresolved,
        record_problem,
    }
}

pub async fn after_cycle_with(settings: &Settings, effects: &Effects, now: Timestamp) -> Acted {
    if settings.reboot.policy == RebootPolicy::Never {
        return Acted::Off;
    }
    let dir = &settings.paths.state_dir;
    let (mut record, problem) = match record::load(dir) {
        Ok(r) => (r, None),
        Err(p) => (Record::default(), Some(p)),
    };
    let readable = problem.is_none();
    // An unreadable state never leads to a reboot: it is a problem like an unreadable record.
    let (state, problem) = match crate::state::Store::new(dir).peek() {
        Ok(state) => (state, problem),
        Err(e) => (
            Default::default(),
            problem.or_else(|| {
                Some(format!(
                    "the state in {} cannot be read: {e}",
                    dir.display()
                ))
            }),
        ),
    };
    let facts = facts(settings, &state, problem);
    let before = record.clone();
    let acted = match policy::decide(&settings.reboot, &record, &facts, now) {
        Decision::NotRequired => {
            record.pending = None;
            release_if_done(&mut record, &facts, effects).await;
            Acted::NotRequired
        }
        Decision::Wait(p) => {
            let waiting = p.waiting.clone().unwrap_or_else(|| Waiting {
                what: "unknown".into(),
                until: None,
                detail: String::new(),
            });
            note_pending(&before, &p);
            record.pending = Some(p);
            Acted::Waiting(waiting)
        }
        Decision::Reboot(p) => {
            // The slot first: a server that is down or says no means wait.
            let lock = match &effects.slot {
                None => Ok(()),
                Some(Err(e)) => Err(format!("FleetLock slot: {e}")),
                Some(Ok(slot)) => match slot.take().await {
                    Ok(()) => {
                        record.slot_held = true;
                        Ok(())
                    }
                    Err(e) => Err(format!(
                        "waiting for the FleetLock slot of {}: {e}",
                        slot.describe()
                    )),
                },
            };
            match lock {
                Err(detail) => {
                    let mut p = p;
                    let waiting = Waiting {
                        what: "lock".into(),
                        until: None,
                        detail,
                    };
                    p.waiting = Some(waiting.clone());
                    note_pending(&before, &p);
                    record.pending = Some(p);
                    Acted::Waiting(waiting)
                }
                Ok(()) => return reboot(settings, effects, record, p, now).await,
            }
        }
    };
    if readable && record != before {
        if let Err(e) = record::save(dir, &record) {
            log::error!(
                "saving {}: {e}\nhint: check free space and permissions of {}; the next run tries again",
                record::path(dir).display(),
                dir.display()
            );
        }
    }
    acted
}

/// Journal a pending reboot when it is new or waits for something else now.
fn note_pending(before: &Record, now: &record::Pending) {
    let old = before.pending.as_ref();
    let changed = old.map(|o| (&o.system, o.waiting.as_ref().map(|w| (&w.what, &w.until))))
        != Some((
            &now.system,
            now.waiting.as_ref().map(|w| (&w.what, &w.until)),
        ));
    let detail = now
        .waiting
        .as_ref()
        .map(|w| w.detail.as_str())
        .unwrap_or("");
    crate::notify::status(&format!(
        "reboot pending: {}",
        detail.lines().next().unwrap_or_default()
    ));
    if changed {
        log::info!(
            message_id = message_id::REBOOT_PENDING, system = now.system.as_str();
            "reboot pending into generation {}: {detail}",
            now.generation.map_or("?".into(), |g| g.to_string())
        );
    } else {
        log::debug!("reboot still pending: {detail}");
    }
}

/// Records what the reboot is for (durably, before anything else), then reboots.
async fn reboot(
    settings: &Settings,
    effects: &Effects,
    mut record: Record,
    pending: record::Pending,
    now: Timestamp,
) -> Acted {
    let dir = &settings.paths.state_dir;
    let generation = pending.generation.map_or("?".into(), |g| g.to_string());
    let reason = format!(
        "homelab-agent: generation {generation} changes the kernel, initrd or kernel modules; rebooting into it"
    );
    record.pending = None;
    record.rebooted = Some(Rebooted {
        system: pending.system.clone(),
        generation: pending.generation,
        at: rfc3339(now),
        reason: reason.clone(),
        verified: None,
    });
    if let Err(e) = record::save(dir, &record) {
        // Without the record the next boot could not be verified, nor a second reboot
        // for this system refused: no reboot, and the slot taken for it is given back.
        release(&mut record, effects).await;
        log::error!(
            "not rebooting: saving {}: {e}\nhint: check free space and permissions of {}; the next run tries again",
            record::path(dir).display(),
            dir.display()
        );
        return Acted::Waiting(Waiting {
            what: "attention".into(),
            until: None,
            detail: format!("cannot save {}: {e}", record::path(dir).display()),
        });
    }
    crate::notify::status(&format!("rebooting into generation {generation}"));
    log::warn!(
        message_id = message_id::REBOOTING, system = pending.system.as_str();
        "rebooting into generation {generation} ({})", pending.system
    );
    match effects.rebooter.reboot(&reason).await {
        Ok(()) => Acted::Rebooting,
        Err(e) => {
            // Not queued: no reboot happened, so it is not one for this system yet.
            log::error!("rebooting into generation {generation}: {e}\nhint: the next run tries again; or reboot by hand (`systemctl reboot`)");
            record.rebooted = None;
            let waiting = Waiting {
                what: "reboot".into(),
                until: None,
                detail: format!("systemctl reboot failed: {e}"),
            };
            let mut p = pending;
            p.waiting = Some(waiting.clone());
            record.pending = Some(p);
            // No reboot is under way: the slot goes back to the group until the next try.
            release(&mut record, effects).await;
            if let Err(se) = record::save(dir, &record) {
                // The record on disk still says this system was rebooted for: the policy
                // would never reboot for it again (and the record is sealed: no hand edit).
                log::error!(
                    "saving {}: {se}\nhint: it claims a reboot into generation {generation} that never happened: reboot by hand (`systemctl reboot`); the boot is then verified as usual",
                    record::path(dir).display()
                );
            }
            Acted::Waiting(waiting)
        }
    }
}

/// A slot still held when no reboot is under way or awaiting verification: release it
/// (a stale slot from an earlier boot, or one whose release failed before).
pub(crate) async fn release_if_done(record: &mut Record, facts: &policy::Facts, effects: &Effects) {
    if !record.slot_held {
        return;
    }
    let awaiting = record.rebooted.as_ref().is_some_and(|r| {
        r.verified.is_none()
            && facts
                .booted
                .as_ref()
                .is_some_and(|b| b.display().to_string() == r.system)
    });
    if awaiting {
        return;
    }
    release(record, effects).await;
}

pub(crate) async fn release(record: &mut Record, effects: &Effects) {
    match &effects.slot {
        Some(Ok(slot)) => match slot.release().await {
            Ok(()) => {
                log::info!("released the FleetLock slot of {}", slot.describe());
                record.slot_held = false;
            }
            Err(e) => log::warn!("{e} (the next run tries again)"),
        },
        Some(Err(e)) => log::warn!("cannot release the FleetLock slot: {e}"),
        // No server configured any more: nothing to release.
        None => record.slot_held = false,
    }
}

#[cfg(test)]
mod tests;
