//! `homelab-agent trial-deadline`: the bound on a trial boot (docs/reboots.md). A unit
//! that does not depend on `multi-user.target` (`DefaultDependencies=no`,
//! `IgnoreOnIsolate=yes`, wanted by `sysinit.target`, `emergency.target` and
//! `rescue.target`) starts it early in every boot; in a trial boot that is not verified
//! within `[reboot] trial_deadline` of that start, it reboots, and the bootloader boots its
//! default, the last verified generation. Emergency and rescue mode included: they never
//! start `verify-boot`.
//!
//! The deadline counts from the watch's own start, not from the kernel's (`/proc/uptime`):
//! in a container the uptime is the host's, and on a Pi the kernel and initrd before
//! sysinit take seconds against a deadline of minutes.
//!
//! A trial boot: the reboot record names a trial for the booted system (`verify-boot`
//! removes it once it decided). A record that cannot be read counts as a trial when the
//! booted system is not the profile's default: an unreadable record never keeps an
//! unverified boot.

use std::time::Duration;

use crate::config::Settings;

use super::record;
use crate::doors::reboot::{Links, Rebooter};

/// How often the watch looks whether the boot verified meanwhile.
const LOOK_EVERY: Duration = Duration::from_secs(10);

/// The real clock of [`watch`]: time since this call.
pub fn since() -> impl Fn() -> Duration {
    let started = std::time::Instant::now();
    move || started.elapsed()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not a trial boot (or one already decided): nothing to watch.
    NotATrial(String),
    /// The trial boot was verified (or failed and fell back) before the deadline.
    Decided,
    /// The deadline passed: the reboot was queued.
    Rebooting(String),
    /// The deadline passed and the reboot failed.
    RebootFailed(String),
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::NotATrial(_) | Outcome::Decided | Outcome::Rebooting(_) => crate::exit::OK,
            Outcome::RebootFailed(_) => crate::exit::FAILED,
        }
    }
}

/// `Some(system)` while this boot is a trial not yet decided by `verify-boot`.
pub fn undecided_trial(settings: &Settings, links: &dyn Links) -> Option<String> {
    let p = &settings.paths;
    let booted = links.booted()?;
    let shown = booted.display().to_string();
    match record::load(&p.state_dir) {
        Ok(r) => r.trial.filter(|t| t.system == shown).map(|t| t.system),
        Err(problem) => {
            let default = links.default_generation().map(|g| g.system);
            (default.as_deref() != Some(booted.as_path())).then(|| {
                log::warn!("{problem}: the booted {shown} is not the boot default, so it is watched as a trial");
                shown
            })
        }
    }
}

/// Watches this boot until it is decided or the deadline passes. `elapsed` is the time
/// since the watch started ([`since`] for the real one).
pub async fn watch(
    settings: &Settings,
    links: &dyn Links,
    rebooter: &dyn Rebooter,
    elapsed: &dyn Fn() -> Duration,
) -> Outcome {
    let Some(system) = undecided_trial(settings, links) else {
        return Outcome::NotATrial("not a trial boot, or one verify-boot already decided".into());
    };
    let deadline = settings.reboot.trial_deadline;
    log::info!(
        "trial boot of {system}: rebooting into the boot default unless verified within {}",
        crate::duration::format_duration(deadline)
    );
    loop {
        if undecided_trial(settings, links).is_none() {
            return Outcome::Decided;
        }
        let now = elapsed();
        if now >= deadline {
            break;
        }
        tokio::time::sleep((deadline - now).min(LOOK_EVERY)).await;
    }
    // Short: systemctl's --message keeps 200 characters (doors.rs).
    let reason = format!(
        "homelab-agent: trial boot of {system} not verified within {} ([reboot] trial_deadline)",
        crate::duration::format_duration(deadline)
    );
    log::error!(message_id = crate::logging::message_id::FELL_BACK, system = system.as_str(); "{reason}");
    match rebooter.reboot(&reason).await {
        Ok(()) => Outcome::Rebooting(reason),
        Err(e) => Outcome::RebootFailed(crate::failure::with_hint_line(
            format!("{reason}: the reboot failed: {e}"),
            "reboot by hand: the boot default is the last verified generation",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::os::unix::fs::symlink;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::doors::Fut;
    use crate::reboot::record::{Record, Trial};

    struct Machine {
        dir: tempfile::TempDir,
        settings: Settings,
    }

    impl Machine {
        /// Profile default `a`, booted `booted`.
        fn new(booted: &str) -> Machine {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            for name in ["a", "b"] {
                std::fs::create_dir_all(d.join("store").join(name)).unwrap();
            }
            std::fs::create_dir_all(d.join("profiles")).unwrap();
            symlink(d.join("store/a"), d.join("profiles/system-1-link")).unwrap();
            symlink("system-1-link", d.join("profiles/system")).unwrap();
            symlink(d.join("store").join(booted), d.join("booted")).unwrap();
            let text = format!(
                "[source]\nurl = \"/r\"\n[host]\nname = \"pi1\"\n[paths]\nstate_dir = \"{d}/state\"\nprofile = \"{d}/profiles/system\"\nbooted_system = \"{d}/booted\"\n[reboot]\ntrial_deadline = \"15m\"\n",
                d = d.display()
            );
            let settings = crate::config::parse(Path::new("/t.toml"), &text).unwrap();
            Machine { dir, settings }
        }

        /// The real links door, over this temp dir's links.
        fn links(&self) -> crate::doors::links::SystemLinks {
            crate::doors::links::SystemLinks::new(&self.settings.paths)
        }

        fn sys(&self, name: &str) -> PathBuf {
            self.dir.path().join("store").join(name)
        }

        fn trial_of(&self, name: &str) {
            let r = Record {
                trial: Some(Trial {
                    system: self.sys(name).display().to_string(),
                    generation: None,
                    at: "2026-11-25T02:00:00Z".into(),
                    door: "fake".into(),
                }),
                ..Default::default()
            };
            record::save(&self.settings.paths.state_dir, &r).unwrap();
        }
    }

    #[derive(Default)]
    struct Reboots(RefCell<Vec<String>>);

    impl Rebooter for Reboots {
        fn reboot<'a>(&'a self, reason: &'a str) -> Fut<'a, Result<(), String>> {
            self.0.borrow_mut().push(reason.to_string());
            Box::pin(async { Ok(()) })
        }
    }

    const PAST: fn() -> Duration = || Duration::from_secs(16 * 60);

    #[tokio::test(flavor = "current_thread")]
    async fn a_trial_not_verified_by_the_deadline_is_rebooted() {
        let m = Machine::new("b");
        m.trial_of("b");
        let r = Reboots::default();
        let out = watch(&m.settings, &m.links(), &r, &PAST).await;
        assert!(
            matches!(&out, Outcome::Rebooting(why) if why.contains("not verified within 15m")),
            "{out:?}"
        );
        assert_eq!(r.0.borrow().len(), 1);
        assert_eq!(out.exit_code(), crate::exit::OK);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_decided_trial_or_another_boot_is_left_alone() {
        // Not a trial: the default booted, or a trial of another system recorded.
        for (booted, trial) in [("a", None), ("a", Some("b")), ("b", Some("a"))] {
            let m = Machine::new(booted);
            if let Some(t) = trial {
                m.trial_of(t);
            }
            let r = Reboots::default();
            let out = watch(&m.settings, &m.links(), &r, &PAST).await;
            assert!(
                matches!(out, Outcome::NotATrial(_)),
                "{booted} {trial:?}: {out:?}"
            );
            assert!(r.0.borrow().is_empty());
        }
        // Verified before the deadline (verify-boot removed the trial): no reboot.
        let m = Machine::new("b");
        m.trial_of("b");
        let r = Reboots::default();
        let calls = RefCell::new(0);
        let state_dir = m.settings.paths.state_dir.clone();
        let uptime = || {
            *calls.borrow_mut() += 1;
            if *calls.borrow() == 2 {
                record::save(&state_dir, &Record::default()).unwrap();
            }
            Duration::from_secs(15 * 60 - 1)
        };
        let out = watch(&m.settings, &m.links(), &r, &uptime).await;
        assert_eq!(out, Outcome::Decided);
        assert!(r.0.borrow().is_empty());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_unreadable_record_never_keeps_a_boot_that_is_not_the_default() {
        let m = Machine::new("b");
        std::fs::create_dir_all(&m.settings.paths.state_dir).unwrap();
        std::fs::write(record::path(&m.settings.paths.state_dir), "{ damaged").unwrap();
        let r = Reboots::default();
        assert!(matches!(
            watch(&m.settings, &m.links(), &r, &PAST).await,
            Outcome::Rebooting(_)
        ));
        // The default, with the same damage: left alone.
        let m = Machine::new("a");
        std::fs::create_dir_all(&m.settings.paths.state_dir).unwrap();
        std::fs::write(record::path(&m.settings.paths.state_dir), "{ damaged").unwrap();
        assert!(matches!(
            watch(&m.settings, &m.links(), &r, &PAST).await,
            Outcome::NotATrial(_)
        ));
        assert_eq!(r.0.borrow().len(), 1);
    }
}
