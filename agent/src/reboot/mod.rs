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
//! | `verify.rs`    | `verify-boot`: verification, promotion, fallback, loop breaker    |
//! | `deadline.rs`  | `trial-deadline`: a trial boot not verified in time is rebooted   |
//! | `record.rs`    | `reboot.json`: pending, rebooted-for, last boot, last fallback    |
//! | `view.rs`      | the `reboot` object of `status --json` and its human line         |

pub mod deadline;
pub mod policy;
pub mod record;
pub mod verify;
pub mod view;
pub mod window;

use jiff::Timestamp;

use crate::config::{RebootPolicy, Settings};
use crate::logging::message_id;
use crate::state::State;

use crate::doors::reboot::{Effects, Links};
use policy::Decision;
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

/// The facts [`policy::decide`] needs, read from the machine's `links`, and from `state`
/// (the caller's: read once).
pub fn facts(links: &dyn Links, state: &State, record_problem: Option<String>) -> policy::Facts {
    let booted = links.booted();
    let target = target(links, state);
    let kernel_changed = target
        .as_ref()
        .and_then(|t| links.reboot_required(&t.system));
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
        target,
        kernel_changed,
        unresolved,
        record_problem,
    }
}

/// What a reboot would be for: the agent's deployment that is live and not the boot
/// default (it waits for its trial boot), else the profile's default generation.
pub fn target(links: &dyn Links, state: &State) -> Option<policy::Target> {
    let default = links.default_generation();
    let current = links.current();
    let live = current.filter(|c| {
        default.as_ref().is_none_or(|d| d.system != *c)
            && state
                .deployed
                .as_ref()
                .is_some_and(|d| std::path::Path::new(&d.system) == c)
    });
    match (live, default) {
        (Some(system), _) => Some(policy::Target {
            system,
            generation: None,
            live: true,
        }),
        (None, Some(d)) => Some(policy::Target {
            system: d.system,
            generation: Some(d.number),
            live: false,
        }),
        (None, None) => None,
    }
}

pub async fn after_cycle_with(settings: &Settings, effects: &Effects, now: Timestamp) -> Acted {
    if settings.reboot.policy == RebootPolicy::Never {
        return Acted::Off;
    }
    let dir = &settings.paths.state_dir;
    let (mut record, problem) = match record::load(dir) {
        Ok(r) => (r, None),
        Err(p) => (Record::default(), Some(p.to_string())),
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
    let facts = facts(&*effects.links, &state, problem);
    let before = record.clone();
    if readable {
        tend_trial(&mut record, &facts, effects).await;
    }
    let decision = policy::decide(&settings.reboot, &record, &facts, now);
    // Bad input never boots an unverified default: a trial that cannot be armed means wait.
    let trial_blocked = match &decision {
        Decision::Reboot(_) if needs_trial(&facts) => trial_problem(effects).await,
        _ => None,
    };
    let acted = match decision {
        Decision::NotRequired => {
            record.pending = None;
            release_if_done(&mut record, &facts, effects).await;
            Acted::NotRequired
        }
        Decision::Wait(p) => {
            let waiting = p
                .waiting
                .clone()
                .unwrap_or_else(|| Waiting::new("unknown", String::new(), None));
            note_pending(&before, &p);
            record.pending = Some(p);
            Acted::Waiting(waiting)
        }
        Decision::Reboot(p) if trial_blocked.is_some() => {
            let waiting = trial_blocked.unwrap_or_else(|| Waiting::new("trial", "", None));
            log::warn!(hint = waiting.hint.as_deref().unwrap_or_default(); "not rebooting: {}", waiting.detail);
            let mut p = p;
            p.waiting = Some(waiting.clone());
            note_pending(&before, &p);
            record.pending = Some(p);
            Acted::Waiting(waiting)
        }
        Decision::Reboot(p) => {
            // The slot first: a server that is down or says no means wait.
            let lock: Result<(), Waiting> = match &effects.slot {
                None => Ok(()),
                Some(Err(e)) => Err(Waiting::failed("lock", "FleetLock slot", e)),
                Some(Ok(slot)) => match shared_id(settings, &mut record, &slot.id()) {
                    Some(clone) => Err(clone),
                    None => match slot.take().await {
                        Ok(()) => {
                            record.slot_held = true;
                            record.slot_id = Some(slot.id());
                            Ok(())
                        }
                        Err(e) => Err(Waiting::new(
                            "lock",
                            format!("waiting for the FleetLock slot of {}: {e}", slot.describe()),
                            None,
                        )),
                    },
                },
            };
            match lock {
                Err(waiting) => {
                    let mut p = p;
                    p.waiting = Some(waiting.clone());
                    note_pending(&before, &p);
                    record.pending = Some(p);
                    Acted::Waiting(waiting)
                }
                Ok(()) => {
                    let trial = needs_trial(&facts);
                    return reboot(settings, effects, record, p, trial, now).await;
                }
            }
        }
    };
    if readable && record != before {
        if let Err(e) = record::save(dir, &record) {
            log::error!(
                hint = format!(
                        "check free space and permissions of {}; the next run tries again",
                        dir.display()
                    ); "{}",
                crate::failure::with_hint_line(
                    format!("saving {}: {e}", record::path(dir).display()),
                    format!(
                        "check free space and permissions of {}; the next run tries again",
                        dir.display()
                    )
                )
            );
        }
    }
    acted
}

/// A trial armed and not booted: still wanted, or for a deployment replaced since
/// (disarmed: a later reboot must not boot it).
async fn tend_trial(record: &mut Record, facts: &policy::Facts, effects: &Effects) {
    let Some(t) = record.trial.clone() else {
        return;
    };
    if facts.booted.as_deref() == Some(std::path::Path::new(&t.system)) {
        return; // the trial boot itself: verify-boot's
    }
    let wanted = facts
        .target
        .as_ref()
        .is_some_and(|x| x.live && x.system == std::path::Path::new(&t.system));
    let Some(door) = &effects.trial else {
        return;
    };
    // Armed and wanted: left as it is. A trial armed by a run killed before its reboot
    // is not tried again by the policy (never twice for one system: a bootloader that
    // ignored the flag must not cause a reboot loop); a boot by anyone tries it.
    if !wanted {
        match door.disarm().await {
            Ok(()) => {
                log::info!(
                    "disarmed the trial of {}: no longer the deployment waiting for a reboot",
                    t.system
                );
                record.trial = None;
            }
            Err(f) => log::error!(
                hint = "the next run tries again"; "{}",
                crate::failure::with_hint_line(
                    format!(
                        "disarming the trial of {} through {}: {f}",
                        t.system,
                        door.describe()
                    ),
                    "the next run tries again"
                )
            ),
        }
    }
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
            "reboot pending into {}: {detail}",
            now.generation
                .map_or_else(|| now.system.clone(), |g| format!("generation {g}"))
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
    trial: bool,
    now: Timestamp,
) -> Acted {
    let dir = &settings.paths.state_dir;
    let generation = pending
        .generation
        .map_or_else(|| pending.system.clone(), |g| format!("generation {g}"));
    // Short: systemctl's --message keeps 200 characters (doors.rs).
    let reason = if trial {
        format!("homelab-agent: rebooting once into {generation} as a trial (kernel, initrd, modules, parameters or device tree changed)")
    } else {
        format!("homelab-agent: rebooting into {generation} (kernel, initrd, modules, parameters or device tree changed)")
    };
    let door = effects.trial.as_ref().filter(|_| trial);
    if let Some(door) = door {
        // Intent before touching the bootloader: a trial boot finds what it is for.
        record.trial = Some(record::Trial {
            system: pending.system.clone(),
            generation: pending.generation,
            at: now.into(),
            door: door.describe(),
        });
    }
    record.pending = None;
    record.rebooted = Some(Rebooted {
        system: pending.system.clone(),
        generation: pending.generation,
        at: now.into(),
        reason: reason.clone(),
        verified: None,
    });
    if let Err(e) = record::save(dir, &record) {
        // Without the record the next boot could not be verified, nor a second reboot
        // for this system refused: no reboot, and the slot taken for it is given back.
        release(&mut record, effects).await;
        log::error!(
            hint = format!(
                    "check free space and permissions of {}; the next run tries again",
                    dir.display()
                ); "{}",
            crate::failure::with_hint_line(
                format!("not rebooting: saving {}: {e}", record::path(dir).display()),
                format!(
                    "check free space and permissions of {}; the next run tries again",
                    dir.display()
                )
            )
        );
        return Acted::Waiting(Waiting::new(
            "attention",
            format!("cannot save {}: {e}", record::path(dir).display()),
            None,
        ));
    }
    if let Some(door) = door {
        crate::failpoint("before_trial_arm");
        if let Err(f) = door.arm(std::path::Path::new(&pending.system)).await {
            // Whatever half of it happened is undone: no unverified boot is left armed.
            if let Err(d) = door.disarm().await {
                log::error!("disarming the trial after a failed arm: {d}");
            }
            log::error!(
                "not rebooting: arming the trial boot of {generation} through {}: {f}",
                door.describe()
            );
            let waiting = Waiting::failed(
                "trial",
                format!("arming the trial boot through {} failed", door.describe()),
                &f,
            );
            return not_rebooted(settings, effects, record, pending, waiting).await;
        }
        crate::failpoint("after_trial_arm");
    }
    crate::notify::status(&format!("rebooting into {generation}"));
    log::warn!(
        message_id = message_id::REBOOTING, system = pending.system.as_str();
        "rebooting into {generation} ({})", pending.system
    );
    match effects.rebooter.reboot(&reason).await {
        Ok(()) => Acted::Rebooting,
        Err(e) => {
            // Not queued: no reboot happened, so it is not one for this system yet.
            log::error!(
                hint = "the next run tries again; or reboot by hand (`systemctl reboot`)"; "{}",
                crate::failure::with_hint_line(
                    format!("rebooting into {generation}: {e}"),
                    "the next run tries again; or reboot by hand (`systemctl reboot`)"
                )
            );
            if let Some(door) = door {
                if let Err(d) = door.disarm().await {
                    log::error!("disarming the trial after a failed reboot: {d}");
                }
            }
            let waiting = Waiting::new("reboot", format!("systemctl reboot failed: {e}"), None);
            return not_rebooted(settings, effects, record, pending, waiting).await;
        }
    }
}

/// The reboot did not happen: not recorded as one, waiting for `waiting`, the slot given
/// back.
async fn not_rebooted(
    settings: &Settings,
    effects: &Effects,
    mut record: Record,
    pending: record::Pending,
    waiting: Waiting,
) -> Acted {
    let dir = &settings.paths.state_dir;
    let generation = pending
        .generation
        .map_or_else(|| pending.system.clone(), |g| format!("generation {g}"));
    record.rebooted = None;
    record.trial = None;
    let mut p = pending;
    p.waiting = Some(waiting.clone());
    record.pending = Some(p);
    // No reboot is under way: the slot goes back to the group until the next try.
    release(&mut record, effects).await;
    if let Err(se) = record::save(dir, &record) {
        // The record on disk still says this system was rebooted for: the policy would
        // never reboot for it again (and the record is sealed: no hand edit).
        log::error!(
            hint = format!("it claims a reboot into {generation} that never happened: reboot by hand (`systemctl reboot`); the boot is then verified as usual"); "{}", crate::failure::with_hint_line(format!("saving {}: {se}", record::path(dir).display()), format!("it claims a reboot into {generation} that never happened: reboot by hand (`systemctl reboot`); the boot is then verified as usual")));
    }
    Acted::Waiting(waiting)
}

/// Two machines with one machine id (an SD card cloned from a running Pi) would share one
/// FleetLock id, so one slot: both could reboot at once. The record keeps which host first
/// used the id derived from the machine id; another host with the same id (the record
/// came along with the clone) is told, and takes no slot. `None`: fine (and recorded).
fn shared_id(settings: &Settings, record: &mut Record, id: &str) -> Option<Waiting> {
    if settings
        .reboot
        .fleetlock
        .as_ref()
        .is_none_or(|f| f.id.is_some())
    {
        return None; // an id set by the operator is the operator's
    }
    let host = &settings.host;
    match &record.identity {
        Some(i) if i.id == id && i.host != *host => Some(Waiting::new("attention", format!("this machine ({host}) has the machine id of {} (FleetLock id {id}): an SD card cloned from it? The two would share one reboot slot and could reboot at once: not taking it", i.host), Some("give this machine its own id: `rm /etc/machine-id && systemd-machine-id-setup`, then reboot (or set [reboot] id)"))),
        Some(i) if i.id == id => None,
        _ => {
            record.identity = Some(record::Identity {
                id: id.to_string(),
                host: host.clone(),
            });
            None
        }
    }
}

/// Whether the reboot is into a live deployment that is not the boot default: only a
/// one-shot trial may boot it.
fn needs_trial(facts: &policy::Facts) -> bool {
    facts.target.as_ref().is_some_and(|t| t.live)
}

/// Why no trial can be armed now (`None`: it can).
async fn trial_problem(effects: &Effects) -> Option<Waiting> {
    let Some(door) = &effects.trial else {
        return Some(
            Waiting::new("trial", "[reboot] bootloader = \"uboot\" but this build has no U-Boot trial door: not rebooting", Some("upgrade the agent, or set bootloader = \"none\" (a deployment that needs a reboot then stays live and pending)")),
        );
    };
    match door.ready().await {
        Ok(()) => None,
        Err(f) => Some(Waiting::failed(
            "trial",
            format!("the trial boot through {} cannot be armed", door.describe()),
            &f,
        )),
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

/// At boot: a slot this machine may hold is released even when the record does not say
/// so (it may have been lost): with the id recorded, else this machine's id.
pub(crate) async fn release_at_boot(record: &mut Record, effects: &Effects) {
    if let (false, Some(Ok(slot))) = (record.slot_held, &effects.slot) {
        record.slot_id = Some(slot.id());
    }
    record.slot_held = true;
    release(record, effects).await;
}

pub(crate) async fn release(record: &mut Record, effects: &Effects) {
    match &effects.slot {
        Some(Ok(slot)) => {
            // The id it was taken with: an upgrade that changed the id never strands it.
            let id = record
                .slot_id
                .clone()
                .or_else(|| effects.legacy_slot_id.clone())
                .unwrap_or_else(|| slot.id());
            match slot.release_as(&id).await {
                Ok(()) => {
                    log::info!(
                        "released the FleetLock slot of {} (taken as {id})",
                        slot.describe()
                    );
                    record.slot_held = false;
                    record.slot_id = None;
                }
                Err(e) => log::warn!("{e} (the next run tries again)"),
            }
        }
        Some(Err(e)) => log::warn!("cannot release the FleetLock slot: {e}"),
        // No server configured any more: nothing to release.
        None => record.slot_held = false,
    }
}

#[cfg(test)]
mod tests;
