//! The reboot side against fakes: the slot, the reboot, the health checks and the profile
//! switch are fakes; the links (profile generations, booted system) and the record are
//! real files in a temp dir, read by the same code as on a machine.

use std::cell::RefCell;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use jiff::Timestamp;

use super::doors::{Effects, Rebooter, Slot};
use super::fleetlock::LockError;
use super::verify::{verify_boot, BootDoors, Verdict};
use super::{after_cycle_with, record, Acted};
use crate::config::Settings;
use crate::deploy::doors::{Fut, Health, Machine};
use crate::failure::Failure;
use crate::health::{CheckResult, Report, Verdict as Check};
use crate::state::{Deployed, Outcome, Phase, State, Store};
use crate::system::profile::{self, Generation};
use crate::system::switch::Action;

/// A temp machine: systems `a` (kernel k1) and `b` (kernel k2) and `c` (kernel k1, other
/// userspace); the profile's generations; the booted link.
struct TempMachine {
    dir: tempfile::TempDir,
    settings: Settings,
}

impl TempMachine {
    fn new(reboot_toml: &str) -> TempMachine {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (name, kernel) in [("a", "k1"), ("b", "k2"), ("c", "k1")] {
            let sys = d.join(format!("store/{name}"));
            std::fs::create_dir_all(&sys).unwrap();
            std::fs::write(sys.join("kernel"), kernel).unwrap();
            std::fs::write(sys.join("initrd"), "i1").unwrap();
            std::fs::write(sys.join("userspace"), name).unwrap();
        }
        std::fs::create_dir_all(d.join("profiles")).unwrap();
        let text = format!(
            "[source]\nurl = \"/r\"\n[host]\nname = \"pi1\"\n[paths]\nstate_dir = \"{d}/state\"\nruntime_dir = \"{d}/run\"\nprofile = \"{d}/profiles/system\"\ncurrent_system = \"{d}/current\"\nbooted_system = \"{d}/booted\"\n[reboot]\n{reboot_toml}\n",
            d = d.display()
        );
        let settings = crate::config::parse(Path::new("/t.toml"), &text).unwrap();
        let b = TempMachine { dir, settings };
        b.add_generation("a");
        b.boot("a");
        b
    }

    fn sys(&self, name: &str) -> PathBuf {
        self.dir.path().join("store").join(name)
    }

    fn add_generation(&self, name: &str) -> u32 {
        let profiles = self.dir.path().join("profiles");
        let n = profile::list(&profiles.join("system"))
            .last()
            .map_or(1, |g| g.number + 1);
        symlink(self.sys(name), profiles.join(format!("system-{n}-link"))).unwrap();
        let link = profiles.join("system");
        let _ = std::fs::remove_file(&link);
        symlink(format!("system-{n}-link"), &link).unwrap();
        n
    }

    /// A boot: the booted link points at `name`, the runtime dir is empty again.
    fn boot(&self, name: &str) {
        let booted = self.dir.path().join("booted");
        let _ = std::fs::remove_file(&booted);
        symlink(self.sys(name), &booted).unwrap();
        let _ = std::fs::remove_dir_all(self.dir.path().join("run"));
    }

    fn record(&self) -> record::Record {
        record::load(&self.settings.paths.state_dir).unwrap()
    }

    fn store(&self) -> Store {
        Store::new(&self.settings.paths.state_dir)
    }

    /// What `status` shows of reboots now.
    fn view(&self) -> super::View {
        let state = self.store().peek().unwrap();
        super::view::build(
            &self.settings,
            &super::view::read(&self.settings, &state),
            now(),
        )
    }

    fn deployed(&self, name: &str, commit: &str) {
        let store = self.store();
        let mut st: State = store.load().unwrap();
        st.deployed = Some(Deployed {
            commit: Some(commit.into()),
            subject: None,
            system: self.sys(name).display().to_string(),
            generation: None,
            at: crate::state::now(),
        });
        store.save(&st).unwrap();
    }

    fn default_system(&self) -> PathBuf {
        profile::current(&self.settings.paths.profile)
            .unwrap()
            .system
    }
}

#[derive(Default)]
struct Calls {
    log: RefCell<Vec<String>>,
    /// What the slot answers to `take`.
    refuse: RefCell<Option<LockError>>,
    /// What it answers to `release`.
    refuse_release: RefCell<Option<LockError>>,
    /// What `systemctl reboot` answers (`None`: queued).
    reboot_fails: RefCell<Option<String>>,
    healthy: RefCell<bool>,
}

type Shared = Rc<Calls>;

struct FakeSlot(Shared);
struct FakeRebooter(Shared);
struct FakeMachine {
    calls: Shared,
    profile: PathBuf,
}
struct FakeHealth(Shared);

impl Slot for FakeSlot {
    fn describe(&self) -> String {
        "http://lock (group default, id pi1)".into()
    }
    fn take(&self) -> Fut<'_, Result<(), LockError>> {
        self.0.log.borrow_mut().push("take".into());
        let r = self.0.refuse.borrow().clone().map_or(Ok(()), Err);
        Box::pin(async move { r })
    }
    fn release(&self) -> Fut<'_, Result<(), LockError>> {
        self.0.log.borrow_mut().push("release".into());
        let r = self.0.refuse_release.borrow().clone().map_or(Ok(()), Err);
        Box::pin(async move { r })
    }
}

impl Rebooter for FakeRebooter {
    fn reboot<'a>(&'a self, reason: &'a str) -> Fut<'a, Result<(), String>> {
        self.0.log.borrow_mut().push(format!("reboot: {reason}"));
        let r = self.0.reboot_fails.borrow().clone().map_or(Ok(()), Err);
        Box::pin(async move { r })
    }
}

impl Machine for FakeMachine {
    fn current_system(&self) -> Option<PathBuf> {
        None
    }
    fn profile(&self) -> Option<Generation> {
        profile::current(&self.profile)
    }
    fn previous_generation(&self) -> Option<Generation> {
        profile::previous(&self.profile)
    }
    fn set_profile<'a>(&'a self, system: &'a Path) -> Fut<'a, Result<u32, Failure>> {
        self.calls
            .log
            .borrow_mut()
            .push(format!("set {}", name(system)));
        let dir = self.profile.parent().unwrap();
        let n = profile::list(&self.profile)
            .last()
            .map_or(1, |g| g.number + 1);
        symlink(system, dir.join(format!("system-{n}-link"))).unwrap();
        std::fs::remove_file(&self.profile).unwrap();
        symlink(format!("system-{n}-link"), &self.profile).unwrap();
        Box::pin(async move { Ok(n) })
    }
    fn switch<'a>(
        &'a self,
        system: &'a Path,
        action: Action,
        _: &'a str,
    ) -> Fut<'a, Result<(), Failure>> {
        self.calls
            .log
            .borrow_mut()
            .push(format!("{} {}", action.as_str(), name(system)));
        Box::pin(async { Ok(()) })
    }
    fn settle_activation<'a>(&'a self, _: &'a str) -> Fut<'a, Result<(), Failure>> {
        Box::pin(async { Ok(()) })
    }
}

impl Health for FakeHealth {
    fn wait_until_healthy(&self) -> Fut<'_, Report> {
        self.0.log.borrow_mut().push("health".into());
        let healthy = *self.0.healthy.borrow();
        let verdict = if healthy {
            Check::Healthy("ok".into())
        } else {
            Check::Unhealthy("sshd.service is failed".into())
        };
        Box::pin(async move {
            Report {
                healthy,
                rounds: 1,
                results: vec![CheckResult {
                    name: "systemd sshd.service".into(),
                    verdict,
                }],
            }
        })
    }
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// The fakes of one test, and what they were asked to do.
struct Fakes {
    calls: Shared,
    effects: Effects,
    machine: FakeMachine,
    health: FakeHealth,
}

impl Fakes {
    fn new(b: &TempMachine, with_slot: bool) -> Fakes {
        let calls = Shared::default();
        *calls.healthy.borrow_mut() = true;
        Fakes {
            effects: Effects {
                slot: with_slot.then(|| Ok(Box::new(FakeSlot(calls.clone())) as Box<dyn Slot>)),
                rebooter: Box::new(FakeRebooter(calls.clone())),
            },
            machine: FakeMachine {
                calls: calls.clone(),
                profile: b.settings.paths.profile.clone(),
            },
            health: FakeHealth(calls.clone()),
            calls,
        }
    }

    /// The calls so far, and forget them.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.log.borrow_mut())
    }

    fn reboots(log: &[String]) -> usize {
        log.iter().filter(|c| c.starts_with("reboot")).count()
    }

    async fn verify(&self, b: &TempMachine) -> Verdict {
        let doors = BootDoors {
            machine: &self.machine,
            health: &self.health,
            effects: &self.effects,
        };
        verify_boot(&b.settings, &doors, now()).await
    }

    async fn cycle(&self, b: &TempMachine) -> Acted {
        after_cycle_with(&b.settings, &self.effects, now()).await
    }
}

const NOW: &str = "2026-11-25T12:00:00Z";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

const WHEN_REQUIRED: &str = "policy = \"when-required\"";

/// Booted `a`, deployed `b` (another kernel) as generation 2.
fn kernel_deploy(reboot_toml: &str) -> TempMachine {
    let b = TempMachine::new(reboot_toml);
    b.add_generation("b");
    b.deployed("b", "c0ffee");
    b
}

#[tokio::test(flavor = "current_thread")]
async fn policy_never_looks_at_nothing_and_writes_nothing() {
    let b = kernel_deploy("");
    let f = Fakes::new(&b, true);
    assert_eq!(f.cycle(&b).await, Acted::Off);
    assert!(f.take().is_empty());
    assert!(!record::path(&b.settings.paths.state_dir).exists());
    // status still says a reboot is pending, waiting for a person.
    let view = b.view();
    assert_eq!(view.pending.unwrap().waiting_for.as_deref(), Some("policy"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_kernel_change_reboots_once_and_never_twice_for_the_same_generation() {
    let b = kernel_deploy(WHEN_REQUIRED);
    let f = Fakes::new(&b, true);
    assert_eq!(f.cycle(&b).await, Acted::Rebooting);
    let log = f.take();
    assert_eq!(log[0], "take", "{log:?}");
    assert_eq!(Fakes::reboots(&log), 1, "{log:?}");
    assert!(log[1].contains("generation 2"), "{log:?}");
    let r = b.record();
    assert!(r.slot_held);
    assert_eq!(
        r.rebooted.as_ref().unwrap().system,
        b.sys("b").display().to_string()
    );
    // The reboot did not happen (or the machine came back in `a`): not again.
    let acted = f.cycle(&b).await;
    let Acted::Waiting(w) = acted else {
        panic!("{acted:?}")
    };
    assert_eq!(w.what, "attention");
    assert!(w.detail.contains("already rebooted once"), "{}", w.detail);
    assert_eq!(Fakes::reboots(&f.take()), 0);
}

/// `systemctl reboot` fails: no reboot is recorded for the system (the next run tries
/// again), status says it waits for the reboot and why, and the slot goes back.
#[tokio::test(flavor = "current_thread")]
async fn a_failed_reboot_is_not_recorded_and_gives_the_slot_back() {
    let b = kernel_deploy(WHEN_REQUIRED);
    let f = Fakes::new(&b, true);
    *f.calls.reboot_fails.borrow_mut() = Some("Access denied".into());
    let acted = f.cycle(&b).await;
    let Acted::Waiting(w) = acted else {
        panic!("{acted:?}")
    };
    assert_eq!(w.what, "reboot");
    assert!(w.detail.contains("Access denied"), "{}", w.detail);
    let log = f.take();
    assert_eq!(log.first().map(String::as_str), Some("take"), "{log:?}");
    assert_eq!(log.last().map(String::as_str), Some("release"), "{log:?}");
    let r = b.record();
    assert!(r.rebooted.is_none() && !r.slot_held, "{r:?}");
    assert_eq!(
        r.pending.unwrap().waiting.unwrap().what,
        "reboot",
        "status says what it waits for"
    );
    // The next run tries again.
    *f.calls.reboot_fails.borrow_mut() = None;
    assert_eq!(f.cycle(&b).await, Acted::Rebooting);
}

#[tokio::test(flavor = "current_thread")]
async fn a_userspace_only_change_needs_no_reboot_and_a_stale_slot_is_released() {
    let b = TempMachine::new(WHEN_REQUIRED);
    b.add_generation("c"); // same kernel and initrd as the booted `a`
    let r = record::Record {
        slot_held: true,
        ..Default::default()
    };
    record::save(&b.settings.paths.state_dir, &r).unwrap();
    let f = Fakes::new(&b, true);
    assert_eq!(f.cycle(&b).await, Acted::NotRequired);
    assert_eq!(f.take(), ["release"]);
    assert!(!b.record().slot_held);
}

#[tokio::test(flavor = "current_thread")]
async fn a_lock_server_that_says_no_or_is_down_means_wait() {
    let b = kernel_deploy(WHEN_REQUIRED);
    let f = Fakes::new(&b, true);
    for refusal in [
        LockError::Refused {
            endpoint: "pre-reboot",
            url: "http://lock/v1/pre-reboot".into(),
            status: 409,
            kind: "failed_lock_semaphore_full".into(),
            value: "held by pi2".into(),
        },
        LockError::Unreachable {
            endpoint: "pre-reboot",
            url: "http://lock/v1/pre-reboot".into(),
            message: "connection refused".into(),
        },
    ] {
        *f.calls.refuse.borrow_mut() = Some(refusal.clone());
        let acted = f.cycle(&b).await;
        let Acted::Waiting(w) = acted else {
            panic!("{acted:?}")
        };
        assert_eq!(w.what, "lock");
        assert!(
            w.detail.contains("http://lock (group default, id pi1)"),
            "{}",
            w.detail
        );
        assert_eq!(f.take(), ["take"]);
        assert!(b.record().rebooted.is_none() && !b.record().slot_held);
        let view = b.view();
        assert_eq!(view.pending.unwrap().waiting_for.as_deref(), Some("lock"));
    }
    // The server says yes: now it reboots.
    *f.calls.refuse.borrow_mut() = None;
    assert_eq!(f.cycle(&b).await, Acted::Rebooting);
}

#[tokio::test(flavor = "current_thread")]
async fn an_unresolved_run_or_a_damaged_record_never_reboots() {
    let b = kernel_deploy(WHEN_REQUIRED);
    let f = Fakes::new(&b, false);
    std::fs::write(record::path(&b.settings.paths.state_dir), "{ damaged").unwrap();
    let acted = f.cycle(&b).await;
    assert!(
        matches!(&acted, Acted::Waiting(w) if w.what == "attention"),
        "{acted:?}"
    );
    assert!(f.take().is_empty());
    // The damaged record is left for a person, not overwritten.
    assert_eq!(
        std::fs::read_to_string(record::path(&b.settings.paths.state_dir)).unwrap(),
        "{ damaged"
    );
    std::fs::remove_file(record::path(&b.settings.paths.state_dir)).unwrap();
    let store = b.store();
    let mut st = store.load().unwrap();
    st.rollback_pending = Some(crate::state::RollbackPending {
        system: "x".into(),
        reason: "y".into(),
        since: NOW.into(),
    });
    store.save(&st).unwrap();
    let acted = f.cycle(&b).await;
    assert!(
        matches!(&acted, Acted::Waiting(w) if w.what == "attention"),
        "{acted:?}"
    );
    assert!(f.take().is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_pause_holds_a_pending_reboot_until_resume() {
    let b = kernel_deploy(WHEN_REQUIRED);
    let f = Fakes::new(&b, false);
    let store = b.store();
    let mut st = store.load().unwrap();
    st.paused = Some(crate::pause::Paused {
        since: NOW.into(),
        until: None,
        reason: Some("moving the rack".into()),
    });
    store.save(&st).unwrap();
    let acted = f.cycle(&b).await;
    assert!(
        matches!(&acted, Acted::Waiting(w) if w.what == "attention" && w.detail.contains("moving the rack")),
        "{acted:?}"
    );
    assert!(f.take().is_empty());
    // Resumed: the reboot goes ahead.
    st.paused = None;
    store.save(&st).unwrap();
    assert_eq!(f.cycle(&b).await, Acted::Rebooting);
}

#[tokio::test(flavor = "current_thread")]
async fn outside_the_window_it_waits_and_status_says_until_when() {
    let b = kernel_deploy(&format!(
        "{WHEN_REQUIRED}\n[reboot.window]\nstart = \"02:00\"\nend = \"04:00\"\ntimezone = \"UTC\""
    ));
    let f = Fakes::new(&b, false);
    let acted = f.cycle(&b).await;
    let Acted::Waiting(w) = acted else {
        panic!("{acted:?}")
    };
    assert_eq!(
        (w.what.as_str(), w.until.as_deref()),
        ("window", Some("2026-11-26T02:00:00Z"))
    );
    assert!(f.take().is_empty());
    let view = b.view();
    let p = view.pending.unwrap();
    assert_eq!(p.until.as_deref(), Some("2026-11-26T02:00:00Z"));
    assert_eq!(p.generation, Some(2));
}

/// The agent rebooted into `b`; this is the boot.
async fn rebooted_into_b(b: &TempMachine, f: &Fakes) {
    assert_eq!(f.cycle(b).await, Acted::Rebooting);
    f.take();
    b.boot("b");
}

#[tokio::test(flavor = "current_thread")]
async fn a_boot_that_passes_its_checks_is_verified_and_releases_the_slot() {
    let b = kernel_deploy(WHEN_REQUIRED);
    let f = Fakes::new(&b, true);
    rebooted_into_b(&b, &f).await;
    assert_eq!(f.verify(&b).await, Verdict::Verified);
    assert_eq!(f.take(), ["health", "release"]);
    let r = b.record();
    assert_eq!(r.boot.as_ref().unwrap().verified, Some(true));
    assert_eq!(r.boot.as_ref().unwrap().generation, Some(2));
    assert_eq!(r.rebooted.as_ref().unwrap().verified, Some(true));
    assert!(!r.slot_held);
    // Once per boot.
    assert_eq!(f.verify(&b).await, Verdict::AlreadyDone);
    assert!(f.take().is_empty());
    // And the policy is content: the booted system is the default.
    assert_eq!(f.cycle(&b).await, Acted::NotRequired);
}

#[tokio::test(flavor = "current_thread")]
async fn a_boot_that_fails_its_checks_falls_back_and_reboots_once() {
    let b = kernel_deploy(WHEN_REQUIRED);
    let f = Fakes::new(&b, true);
    rebooted_into_b(&b, &f).await;
    *f.calls.healthy.borrow_mut() = false;
    assert_eq!(f.verify(&b).await, Verdict::FellBack { rebooting: true });
    let log = f.take();
    assert_eq!(&log[..3], ["health", "set a", "boot a"], "{log:?}");
    assert_eq!(Fakes::reboots(&log), 1, "{log:?}");
    assert!(
        !log.contains(&"release".to_string()),
        "the slot is kept across the fallback reboot: {log:?}"
    );
    assert_eq!(b.default_system(), b.sys("a"));
    // The commit is bad, history says why, deployed is what boots now.
    let st = b.store().load().unwrap();
    let bad = st.bad("c0ffee").expect("marked bad");
    assert_eq!(bad.phase, Phase::Health);
    assert_eq!(st.history[0].outcome, Outcome::Failed);
    assert!(st.history[0]
        .error
        .as_deref()
        .unwrap()
        .contains("sshd.service is failed"));
    assert_eq!(
        st.deployed.as_ref().unwrap().system,
        b.sys("a").display().to_string()
    );
    let fb = b.record().fallback.unwrap();
    assert!(fb.rebooted && fb.kind == "boot-verification-failed");

    // The next boot is the previous generation: nothing to verify, the slot released.
    b.boot("a");
    assert!(matches!(f.verify(&b).await, Verdict::Nothing(_)));
    assert_eq!(f.take(), ["release"]);
    assert_eq!(f.cycle(&b).await, Acted::NotRequired);
    let view = b.view();
    assert!(view
        .fell_back
        .unwrap()
        .reason
        .contains("failed its health checks"));
}

#[tokio::test(flavor = "current_thread")]
async fn the_loop_breaker_never_reboots_twice_for_the_same_failure() {
    let b = kernel_deploy(WHEN_REQUIRED);
    let f = Fakes::new(&b, false);
    rebooted_into_b(&b, &f).await;
    *f.calls.healthy.borrow_mut() = false;
    assert_eq!(f.verify(&b).await, Verdict::FellBack { rebooting: true });
    f.take();
    // The bootloader ignores the new default and boots `b` again.
    b.boot("b");
    assert_eq!(f.verify(&b).await, Verdict::LoopBroken);
    let log = f.take();
    assert_eq!(Fakes::reboots(&log), 0, "{log:?}");
    assert!(
        !log.iter()
            .any(|c| c.starts_with("set") || c.starts_with("boot")),
        "{log:?}"
    );
    // Even if `b` became the default again by hand and is booted: no second fallback.
    b.add_generation("b");
    b.boot("b");
    assert!(matches!(f.verify(&b).await, Verdict::Nothing(_)));
    let log = f.take();
    assert_eq!(Fakes::reboots(&log), 0, "{log:?}");
    assert!(!log.iter().any(|c| c.starts_with("set")), "{log:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_bootloader_fallback_is_a_failed_deployment() {
    let b = kernel_deploy(WHEN_REQUIRED);
    let f = Fakes::new(&b, true);
    assert_eq!(f.cycle(&b).await, Acted::Rebooting);
    f.take();
    // The reboot was meant for `b`; the bootloader fell back to `a`.
    b.boot("a");
    assert_eq!(f.verify(&b).await, Verdict::FallbackBoot);
    let log = f.take();
    assert_eq!(log, ["set a", "boot a", "release"], "{log:?}");
    assert_eq!(b.default_system(), b.sys("a"));
    let st = b.store().load().unwrap();
    assert_eq!(st.bad("c0ffee").unwrap().phase, Phase::Boot);
    assert_eq!(st.history[0].phase, Some(Phase::Boot));
    let r = b.record();
    assert_eq!(r.fallback.as_ref().unwrap().kind, "bootloader-fallback");
    assert_eq!(r.rebooted.as_ref().unwrap().verified, Some(false));
    // No reboot loop: the policy has nothing to do (a is the default and is booted).
    assert_eq!(f.cycle(&b).await, Acted::NotRequired);
}

#[tokio::test(flavor = "current_thread")]
async fn a_boot_into_another_generation_than_an_agent_deployment_is_only_recorded() {
    let b = TempMachine::new(WHEN_REQUIRED);
    b.add_generation("b"); // made default by someone else: not in `deployed`
    let f = Fakes::new(&b, false);
    assert_eq!(f.verify(&b).await, Verdict::FallbackBoot);
    assert!(f.take().is_empty());
    assert_eq!(b.default_system(), b.sys("b"));
    assert!(b.store().load().unwrap().bad_commits.is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_slot_from_before_the_boot_is_released_at_boot_and_retried_until_acknowledged() {
    // No record at all (lost, or a first boot): the slot is released anyway.
    let b = TempMachine::new(&format!("{WHEN_REQUIRED}\nfleetlock_url = \"http://lock\""));
    let f = Fakes::new(&b, true);
    *f.calls.refuse_release.borrow_mut() = Some(LockError::Unreachable {
        endpoint: "steady-state",
        url: "http://lock/v1/steady-state".into(),
        message: "connection refused".into(),
    });
    assert!(matches!(f.verify(&b).await, Verdict::Nothing(_)));
    assert_eq!(f.take(), ["release"]);
    assert!(
        b.record().slot_held,
        "not acknowledged: still counted as held"
    );
    // Every run tries again; once the server answers, it is done.
    assert_eq!(f.cycle(&b).await, Acted::NotRequired);
    assert_eq!(f.take(), ["release"]);
    *f.calls.refuse_release.borrow_mut() = None;
    assert_eq!(f.cycle(&b).await, Acted::NotRequired);
    assert_eq!(f.take(), ["release"]);
    assert!(!b.record().slot_held);
    assert_eq!(f.cycle(&b).await, Acted::NotRequired);
    assert!(f.take().is_empty());
}
