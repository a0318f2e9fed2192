//! The `reboot` object of `status --json` (docs/contract-extensions.md) and its lines in
//! the human status. Built from the reboot record and the live links; the pending reboot
//! is recomputed from the facts, so `status` never shows a stale wait.

use std::io::{self, Write};

use jiff::Timestamp;
use serde::Serialize;

use crate::config::{RebootPolicy, Settings};
use crate::doors::links::SystemLinks;
use crate::state::State;

use super::policy::{self, Decision};
use super::record::{self, Boot, Fallback, Rebooted, Record};

/// What `status` reads for the view (gathered once, like the rest of its facts).
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub record: Record,
    pub problem: Option<String>,
    pub policy: policy::Facts,
}

/// `state`: the state the caller read (for the policy's "unresolved").
pub fn read(settings: &Settings, state: &State) -> Facts {
    let (record, problem) = match record::load(&settings.paths.state_dir) {
        Ok(r) => (r, None),
        Err(p) => (Record::default(), Some(p.to_string())),
    };
    Facts {
        policy: super::facts(&SystemLinks::new(&settings.paths), state, problem.clone()),
        record,
        problem,
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct View {
    /// `never` or `when-required`.
    pub policy: &'static str,
    /// A reboot wanted and not issued yet: into what, since when, waiting for what.
    pub pending: Option<PendingView>,
    /// A reboot issued and not yet booted into.
    pub rebooting: Option<Rebooted>,
    /// The last boot `verify-boot` looked at: system, generation, verified.
    pub booted: Option<Boot>,
    /// The last fallback to a previous generation, and why.
    pub fell_back: Option<Fallback>,
    pub fleetlock: Option<FleetLockView>,
    /// The reboot record cannot be read (then nothing reboots).
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PendingView {
    pub system: String,
    pub generation: Option<u32>,
    pub since: String,
    /// `policy`, `delay`, `window`, `trial`, `lock`, `reboot`, `attention`; `null`: the
    /// next run reboots.
    pub waiting_for: Option<String>,
    /// Until when (RFC 3339), when known.
    pub until: Option<String>,
    pub detail: Option<String>,
    /// What to do about it, when there is something (its own key, as everywhere in
    /// `status`).
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FleetLockView {
    pub url: String,
    pub group: String,
    pub slot_held: bool,
}

pub fn build(settings: &Settings, f: &Facts, now: Timestamp) -> View {
    let r = &f.record;
    let recorded_wait = r.pending.as_ref().and_then(|p| p.waiting.clone());
    let pending = match policy::decide(&settings.reboot, r, &f.policy, now) {
        Decision::NotRequired => None,
        Decision::Wait(p) | Decision::Reboot(p) => {
            // The lock and a failed reboot are only known by trying: the record says.
            let waiting = p.waiting.clone().or_else(|| {
                recorded_wait
                    .clone()
                    .filter(|_| r.pending.as_ref().is_some_and(|rp| rp.system == p.system))
            });
            Some(PendingView {
                system: p.system,
                generation: p.generation,
                since: p.since.to_string(),
                waiting_for: waiting.as_ref().map(|w| w.what.clone()),
                until: waiting
                    .as_ref()
                    .and_then(|w| w.until.map(|u| u.to_string())),
                hint: waiting.as_ref().and_then(|w| w.hint.clone()),
                detail: waiting.map(|w| w.detail),
            })
        }
    };
    let booted = f.policy.booted.as_ref().map(|b| b.display().to_string());
    let rebooting = r
        .rebooted
        .clone()
        .filter(|x| x.verified.is_none() && booted.as_deref() != Some(x.system.as_str()))
        // Once booted elsewhere, verify-boot has recorded that boot after the reboot.
        .filter(|x| r.boot.as_ref().is_none_or(|b| b.at < x.at));
    View {
        policy: settings.reboot.policy.as_str(),
        pending,
        rebooting,
        booted: r.boot.clone(),
        fell_back: r.fallback.clone(),
        fleetlock: settings.reboot.fleetlock.as_ref().map(|fl| FleetLockView {
            url: fl.url.clone(),
            group: fl.group.clone(),
            slot_held: r.slot_held,
        }),
        problem: f.problem.clone(),
    }
}

impl View {
    /// Whether there is anything to say beyond the `reboot:` line `status` always has.
    pub fn is_quiet(&self) -> bool {
        self.policy == RebootPolicy::Never.as_str()
            && self.rebooting.is_none()
            && self.booted.is_none()
            && self.fell_back.is_none()
            && self.problem.is_none()
    }

    /// The human lines (none when [`View::is_quiet`]).
    pub fn write_human(&self, out: &mut impl Write) -> io::Result<()> {
        if self.is_quiet() {
            return Ok(());
        }
        if let Some(p) = &self.pending {
            // Live and waiting for its trial boot: no generation yet.
            let into = p.generation.map_or_else(
                || format!("{} (live)", p.system),
                |g| format!("generation {g}"),
            );
            let why = match (p.waiting_for.as_deref(), p.detail.as_deref()) {
                (Some(_), Some(d)) => first_line(d).to_string(),
                _ => "the next run reboots".into(),
            };
            let until = p
                .until
                .as_deref()
                .map(|u| format!(" (until {u})"))
                .unwrap_or_default();
            writeln!(out, "reboot pending: into {into}: {why}{until}")?;
            if let (Some(_), Some(h)) = (&p.waiting_for, &p.hint) {
                writeln!(out, "  hint: {h}")?;
            }
        }
        if let Some(r) = &self.rebooting {
            writeln!(out, "rebooting:  into {} since {}", r.system, r.at)?;
        }
        if let Some(b) = &self.booted {
            let verified = match b.verified {
                Some(true) => "verified",
                Some(false) => "FAILED verification",
                None => "nothing to verify",
            };
            let gen = b.generation.map_or("?".into(), |g| g.to_string());
            writeln!(out, "booted:     generation {gen} at {} ({verified})", b.at)?;
            if let Some(h) = &b.hint {
                writeln!(out, "  hint: {h}")?;
            }
        }
        if let Some(f) = &self.fell_back {
            writeln!(out, "fell back:  {} ({})", first_line(&f.reason), f.at)?;
        }
        if let Some(l) = &self.fleetlock {
            let held = if l.slot_held {
                "slot held"
            } else {
                "no slot held"
            };
            writeln!(out, "fleetlock:  {} group {} ({held})", l.url, l.group)?;
        }
        if let Some(p) = &self.problem {
            writeln!(out, "reboot record: {}", first_line(p))?;
        }
        Ok(())
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

#[cfg(test)]
mod hint_tests {
    use super::*;

    /// A reboot's hint is its own key in `status --json` and its own line in `status`
    /// (issue 22), never inside the detail.
    #[test]
    fn a_pending_reboots_and_a_boots_hint_are_their_own_key_and_line() {
        let view = View {
            policy: "when-required",
            pending: Some(PendingView {
                system: "/nix/store/x-nixos-system-pi1".into(),
                generation: None,
                since: "2026-12-07T10:00:00Z".into(),
                waiting_for: Some("attention".into()),
                until: None,
                detail: Some("live, and no trial mechanism".into()),
                hint: Some("set [reboot] bootloader".into()),
            }),
            booted: Some(Boot {
                system: "/nix/store/y-nixos-system-pi1".into(),
                generation: Some(4),
                at: "2026-12-07T10:05:00Z".into(),
                verified: Some(false),
                detail: "its checks failed".into(),
                hint: Some("push a fix".into()),
            }),
            ..View::default()
        };
        let mut out = Vec::new();
        view.write_human(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("reboot pending: into /nix/store/x-nixos-system-pi1 (live): live, and no trial mechanism\n  hint: set [reboot] bootloader\n"),
            "{text}"
        );
        assert!(
            text.contains("(FAILED verification)\n  hint: push a fix\n"),
            "{text}"
        );
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["pending"]["hint"], "set [reboot] bootloader");
        assert_eq!(json["pending"]["detail"], "live, and no trial mechanism");
        assert_eq!(json["booted"]["hint"], "push a fix");
    }
}
