//! The reboot decision, a pure function of the settings, the record, the machine's facts
//! and the time: [`decide`]. What it returns is acted on by `mod.rs` ([`super::after_cycle`]).
//!
//! A reboot is wanted when the *target* boots differently from the booted system
//! (kernel, initrd, modules, kernel parameters, device tree: `system::reboot_required`).
//! The target is the deployment that is live and waiting for its trial boot (never the
//! boot default before it verified: docs/reboots.md), else the profile's default
//! generation (one a person made the default). It is issued only when all of these hold,
//! in this order:
//!
//! 1. the policy is `when-required`, the reboot record is readable, no deployment or
//!    rollback is left unresolved, the booted system is not one given up after a failed
//!    verification (the loop breaker: that machine needs a person), and a live target has
//!    a trial mechanism (`[reboot] bootloader`);
//! 2. the agent has not rebooted for this system before (never twice for one system:
//!    a reboot that did not land in it is a fallback, not a reason to try again);
//! 3. `delay` has passed since the reboot became pending;
//! 4. the window is open, or the reboot has waited longer than `max_wait`;
//! 5. the FleetLock slot is taken, when a server is configured (checked by the caller:
//!    a server that is down or says no means wait).

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;

use crate::config::{Bootloader, RebootPolicy, RebootSettings};

use super::record::{Pending, Record, Waiting};
use super::window;

/// What the machine looks like now.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `/run/booted-system`, resolved.
    pub booted: Option<PathBuf>,
    /// What a reboot would be for.
    pub target: Option<Target>,
    /// What the target boots (kernel, initrd, modules, parameters, device tree) differs
    /// from `booted`'s.
    pub kernel_changed: Option<bool>,
    /// A deployment or rollback left unresolved (intent, failed rollback): why.
    pub unresolved: Option<String>,
    /// Why the reboot record cannot be read.
    pub record_problem: Option<String>,
}

/// The system a reboot would be for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub system: PathBuf,
    /// Its profile generation; `None` for a live deployment not yet the boot default.
    pub generation: Option<u32>,
    /// Live and not the boot default: only a one-shot trial boot may boot it.
    pub live: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// No reboot wanted: the booted system already runs the default's kernel.
    NotRequired,
    /// Wanted, not now: why, until when.
    Wait(Pending),
    /// Everything allows it: take the slot (if any), then reboot into this.
    Reboot(Pending),
}

/// The decision at `now`.
pub fn decide(
    settings: &RebootSettings,
    record: &Record,
    facts: &Facts,
    now: Timestamp,
) -> Decision {
    let (Some(booted), Some(target)) = (&facts.booted, &facts.target) else {
        return Decision::NotRequired;
    };
    if *booted == target.system || facts.kernel_changed != Some(true) {
        return Decision::NotRequired;
    }
    let system = target.system.display().to_string();
    // The same pending reboot keeps its start (delay and max_wait count from it).
    let since = record
        .pending
        .as_ref()
        .filter(|p| p.system == system)
        .map(|p| p.since.as_jiff())
        .unwrap_or(now);
    let pending =
        |what: &str, until: Option<Timestamp>, detail: String, hint: Option<&str>| Pending {
            system: system.clone(),
            generation: target.generation,
            since: since.into(),
            waiting: Some(Waiting {
                what: what.into(),
                until: until.map(Into::into),
                detail,
                hint: hint.map(str::to_string),
            }),
        };
    if settings.policy == RebootPolicy::Never {
        return Decision::Wait(pending(
            "policy",
            None,
            "[reboot] policy = \"never\": reboot by hand when convenient".into(),
            None,
        ));
    }
    if let Some(problem) = &facts.record_problem {
        return Decision::Wait(pending(
            "attention",
            None,
            format!("not rebooting: {problem}"),
            None,
        ));
    }
    if let Some(why) = &facts.unresolved {
        return Decision::Wait(pending(
            "attention",
            None,
            format!("not rebooting while {why}"),
            None,
        ));
    }
    if let Some(f) = record
        .fallback
        .as_ref()
        .filter(|f| Path::new(&f.from_system) == booted)
    {
        // Issue 23 item 15: the loop breaker held at boot; the runs hold it too.
        return Decision::Wait(pending(
            "attention",
            None,
            format!("the machine booted {}, which was given up at {} ({}): not rebooting", booted.display(), f.at, f.reason.lines().next().unwrap_or_default()),
            Some("the bootloader did not boot its default: look at the machine (journalctl -b); a reboot by hand boots the default"),
        ));
    }
    if target.live && settings.bootloader == Bootloader::None {
        return Decision::Wait(pending(
            "trial",
            None,
            format!("{system} is live but not the boot default: it needs a trial boot, and [reboot] bootloader = \"none\" has none; a reboot boots the last verified generation"),
            Some("on a U-Boot machine set [reboot] bootloader = \"uboot\" (docs/reboots.md); else make it the default by hand and reboot: verify-boot checks that boot"),
        ));
    }
    if let Some(r) = record.rebooted.as_ref().filter(|r| r.system == system) {
        return Decision::Wait(pending(
            "attention",
            None,
            format!("already rebooted once for {} (at {}), and the machine booted {} instead: not rebooting again for it", r.generation.map_or_else(|| r.system.clone(), |g| format!("generation {g}")), r.at, booted.display()),
            Some("look at the boot (journalctl -b -1); a new deployment or a reboot by hand clears this"),
        ));
    }
    let not_before = add(since, settings.delay);
    if now < not_before {
        return Decision::Wait(pending(
            "delay",
            Some(not_before),
            format!("[reboot] delay until {}", rfc3339(not_before)),
            None,
        ));
    }
    if let Some(w) = &settings.window {
        let overdue = settings.max_wait.is_some_and(|max| now >= add(since, max));
        if !overdue && !window::contains(w, now) {
            let opens = window::current_or_next(w, now).map(|o| o.open);
            let until = match settings.max_wait {
                Some(max) => opens
                    .map(|o| o.min(add(since, max)))
                    .or(Some(add(since, max))),
                None => opens,
            };
            return Decision::Wait(pending(
                "window",
                until,
                format!(
                    "the reboot window ({w}) opens at {}",
                    opens.map(rfc3339).unwrap_or_else(|| "(never)".into())
                ),
                None,
            ));
        }
    }
    let mut p = pending("lock", None, "taking the FleetLock slot".into(), None);
    p.waiting = None;
    Decision::Reboot(p)
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    let span = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
    t.checked_add(span).unwrap_or(Timestamp::MAX)
}

/// RFC 3339 in UTC, to the second (truncated: a time written and read back is never
/// later than it was).
pub fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Window;
    use crate::reboot::record::Rebooted;
    use jiff::civil::Time;
    use jiff::tz::TimeZone;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn facts() -> Facts {
        Facts {
            booted: Some("/nix/store/old-system".into()),
            target: Some(Target {
                generation: Some(5),
                system: "/nix/store/new-system".into(),
                live: false,
            }),
            kernel_changed: Some(true),
            ..Default::default()
        }
    }

    fn when_required() -> RebootSettings {
        RebootSettings {
            policy: RebootPolicy::WhenRequired,
            ..Default::default()
        }
    }

    fn waiting_for(d: &Decision) -> (&str, Option<String>) {
        match d {
            Decision::Wait(p) => {
                let w = p.waiting.as_ref().unwrap();
                (w.what.as_str(), w.until.map(|u| u.to_string()))
            }
            other => panic!("expected a wait: {other:?}"),
        }
    }

    const NOW: &str = "2026-11-25T12:00:00Z";

    #[test]
    fn no_reboot_without_a_kernel_change_or_when_already_booted() {
        let s = when_required();
        let mut f = facts();
        f.kernel_changed = Some(false);
        assert_eq!(
            decide(&s, &Record::default(), &f, ts(NOW)),
            Decision::NotRequired
        );
        let mut f = facts();
        f.booted = Some("/nix/store/new-system".into());
        assert_eq!(
            decide(&s, &Record::default(), &f, ts(NOW)),
            Decision::NotRequired
        );
        let mut f = facts();
        f.kernel_changed = None;
        assert_eq!(
            decide(&s, &Record::default(), &f, ts(NOW)),
            Decision::NotRequired
        );
    }

    #[test]
    fn policy_never_only_says_so() {
        let d = decide(
            &RebootSettings::default(),
            &Record::default(),
            &facts(),
            ts(NOW),
        );
        assert_eq!(waiting_for(&d), ("policy", None));
    }

    #[test]
    fn when_required_reboots_with_nothing_in_the_way() {
        match decide(&when_required(), &Record::default(), &facts(), ts(NOW)) {
            Decision::Reboot(p) => {
                assert_eq!(p.system, "/nix/store/new-system");
                assert_eq!(p.generation, Some(5));
                assert_eq!(p.since, NOW.into());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn never_twice_for_the_same_generation() {
        let record = Record {
            rebooted: Some(Rebooted {
                system: "/nix/store/new-system".into(),
                generation: Some(5),
                at: "2026-11-25T02:00:00Z".into(),
                reason: "kernel".into(),
                verified: None,
            }),
            ..Default::default()
        };
        let d = decide(&when_required(), &record, &facts(), ts(NOW));
        assert_eq!(waiting_for(&d).0, "attention");
        // Another system is a new reason.
        let mut f = facts();
        f.target.as_mut().unwrap().system = "/nix/store/newer-system".into();
        assert!(matches!(
            decide(&when_required(), &record, &f, ts(NOW)),
            Decision::Reboot(_)
        ));
    }

    #[test]
    fn unresolved_runs_and_an_unreadable_record_hold_it_back() {
        let mut f = facts();
        f.unresolved = Some("a rollback failed".into());
        assert_eq!(
            waiting_for(&decide(&when_required(), &Record::default(), &f, ts(NOW))).0,
            "attention"
        );
        let mut f = facts();
        f.record_problem = Some("reboot.json is damaged".into());
        assert_eq!(
            waiting_for(&decide(&when_required(), &Record::default(), &f, ts(NOW))).0,
            "attention"
        );
    }

    #[test]
    fn the_delay_counts_from_when_it_became_pending() {
        let s = RebootSettings {
            delay: Duration::from_secs(600),
            ..when_required()
        };
        let d = decide(&s, &Record::default(), &facts(), ts(NOW));
        assert_eq!(
            waiting_for(&d),
            ("delay", Some("2026-11-25T12:10:00Z".into()))
        );
        let Decision::Wait(p) = d else { unreachable!() };
        let record = Record {
            pending: Some(p),
            ..Default::default()
        };
        assert_eq!(
            waiting_for(&decide(&s, &record, &facts(), ts("2026-11-25T12:09:59Z"))).0,
            "delay"
        );
        assert!(matches!(
            decide(&s, &record, &facts(), ts("2026-11-25T12:10:00Z")),
            Decision::Reboot(_)
        ));
    }

    fn nightly(tz: &str) -> Window {
        Window {
            days: crate::config::reboot::ALL_DAYS.to_vec(),
            start: Time::constant(2, 0, 0, 0),
            end: Time::constant(4, 0, 0, 0),
            timezone_name: tz.into(),
            timezone: TimeZone::get(tz).unwrap(),
        }
    }

    #[test]
    fn outside_the_window_it_waits_until_the_window_opens() {
        let s = RebootSettings {
            window: Some(nightly("Europe/Berlin")),
            ..when_required()
        };
        // 12:00 UTC: the next 02:00 Berlin (CET, UTC+1) is 01:00 UTC tomorrow.
        let d = decide(&s, &Record::default(), &facts(), ts(NOW));
        assert_eq!(
            waiting_for(&d),
            ("window", Some("2026-11-26T01:00:00Z".into()))
        );
        assert!(matches!(
            decide(&s, &Record::default(), &facts(), ts("2026-11-26T01:30:00Z")),
            Decision::Reboot(_)
        ));
    }

    #[test]
    fn past_max_wait_the_window_no_longer_holds_it_back() {
        let s = RebootSettings {
            window: Some(nightly("UTC")),
            max_wait: Some(Duration::from_secs(3600)),
            ..when_required()
        };
        let d = decide(&s, &Record::default(), &facts(), ts(NOW));
        // Until the earlier of the window and the end of the wait.
        assert_eq!(
            waiting_for(&d),
            ("window", Some("2026-11-25T13:00:00Z".into()))
        );
        let Decision::Wait(p) = d else { unreachable!() };
        let record = Record {
            pending: Some(p),
            ..Default::default()
        };
        assert!(matches!(
            decide(&s, &record, &facts(), ts("2026-11-25T13:00:00Z")),
            Decision::Reboot(_)
        ));
    }
}
