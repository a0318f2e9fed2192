//! The reboot side against fakes: the slot, the reboot, the health checks and the profile
//! switch are fakes; the links (profile generations, booted system) and the record are
//! real files in a temp dir, read by the same code as on a machine.

use std::cell::RefCell;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use jiff::Timestamp;

use super::verify::{verify_boot, BootDoors, Verdict};
use super::{after_cycle_with, record, Acted};
use crate::config::Settings;
use crate::doors::fleetlock::LockError;
use crate::doors::reboot::{Effects, Rebooter, Slot};
use crate::doors::trial::TrialBoot;
use crate::doors::{Fut, Health, Machine};
use crate::failure::{Failure, Kind};
use crate::health::{CheckResult, Report, Verdict as Check};
use crate::state::{Deployed, Outcome, Phase, State, Store};
use crate::system::profile::{self, Generation};
use crate::system::switch::Action;

/// A temp machine: systems `a` (kernel k1), `b` (kernel k2), `c` (kernel k1, other
/// userspace) and `b2` (kernel k2, other userspace); the profile's generations; the booted
/// and current links.
struct TempMachine {
    dir: tempfile::TempDir,
    settings: Settings,
}

impl TempMachine {
    fn new(reboot_toml: &str) -> TempMachine {
        TempMachine::named("pi1", reboot_toml)
    }

    fn named(host: &str, reboot_toml: &str) -> TempMachine {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (name, kernel) in [("a", "k1"), ("b", "k2"), ("c", "k1"), ("b2", "k2")] {
            let sys = d.join(format!("store/{name}"));
            std::fs::create_dir_all(&sys).unwrap();
            std::fs::write(sys.join("kernel"), kernel).unwrap();
            std::fs::write(sys.join("initrd"), "i1").unwrap();
            std::fs::write(sys.join("userspace"), name).unwrap();
        }
        std::fs::create_dir_all(d.join("profiles")).unwrap();
        let text = format!(
            "[source]\nurl = \"/r\"\n[host]\nname = \"{host}\"\n[paths]\nstate_dir = \"{d}/state\"\nruntime_dir = \"{d}/run\"\nprofile = \"{d}/profiles/system\"\ncurrent_system = \"{d}/current\"\nbooted_system = \"{d}/booted\"\n[[health.checks]]\ntype = \"tcp\"\naddress = \"127.0.0.1:22\"\n[reboot]\n{reboot_toml}\n",
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

    /// A boot: the booted and current links point at `name`, the runtime dir is empty
    /// again.
    fn boot(&self, name: &str) {
        let booted = self.dir.path().join("booted");
        let _ = std::fs::remove_file(&booted);
        symlink(self.sys(name), &booted).unwrap();
        self.live(name);
        let _ = std::fs::remove_dir_all(self.dir.path().join("run"));
    }

    /// `switch-to-configuration test` of `name`: live, the boot default unchanged.
    fn live(&self, name: &str) {
        let current = self.dir.path().join("current");
        let _ = std::fs::remove_file(&current);
        symlink(self.sys(name), &current).unwrap();
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
        let generation = profile::current(&self.settings.paths.profile)
            .filter(|g| g.system == self.sys(name))
            .map(|g| g.number);
        let store = self.store();
        let mut st: State = store.load().unwrap();
        st.deployed = Some(Deployed {
            commit: Some(commit.into()),
            subject: Some(format!("{name}: a kernel update")),
            system: self.sys(name).display().to_string(),
            generation,
            at: crate::state::now(),
        });
        st.push_run({
            let mut r = crate::state::Run::new(Outcome::Deployed);
            r.commit = Some(commit.into());
            r.subject = Some(format!("{name}: a kernel update"));
            r.system = Some(self.sys(name).display().to_string());
            r
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
    /// What the trial door's `ready` and `arm` answer (`None`: fine).
    not_ready: RefCell<Option<String>>,
    arm_fails: RefCell<Option<String>>,
    /// The trial door's flag.
    armed: RefCell<bool>,
}

type Shared = Rc<Calls>;

struct FakeSlot(Shared);
struct FakeRebooter(Shared);
struct FakeMachine {
    calls: Shared,
    profile: PathBuf,
}
struct FakeHealth(Shared);
struct FakeTrial(Shared);

impl TrialBoot for FakeTrial {
    fn describe(&self) -> String {
        "fake uboot.env".into()
    }
    fn ready(&self) -> Fut<'_, Result<(), Failure>> {
        self.0.log.borrow_mut().push("ready".into());
        let r = self.0.not_ready.borrow().clone();
        Box::pin(async move { r.map_or(Ok(()), |m| Err(Failure::new(Kind::Environment, m))) })
    }
    fn arm<'a>(&'a self, system: &'a Path) -> Fut<'a, Result<(), Failure>> {
        self.0
            .log
            .borrow_mut()
            .push(format!("arm {}", name(system)));
        let r = self.0.arm_fails.borrow().clone();
        if r.is_none() {
            *self.0.armed.borrow_mut() = true;
        }
        Box::pin(async move { r.map_or(Ok(()), |m| Err(Failure::new(Kind::Environment, m))) })
    }
    fn armed(&self) -> Fut<'_, Result<bool, Failure>> {
        let a = *self.0.armed.borrow();
        Box::pin(async move { Ok(a) })
    }
    fn disarm(&self) -> Fut<'_, Result<(), Failure>> {
        self.0.log.borrow_mut().push("disarm".into());
        *self.0.armed.borrow_mut() = false;
        Box::pin(async { Ok(()) })
    }
}

impl Slot for FakeSlot {
    fn describe(&self) -> String {
        "http://lock (group default, id pi1)".into()
    }
    fn id(&self) -> String {
        "pi1".into()
    }
    fn take(&self) -> Fut<'_, Result<(), LockError>> {
        self.0.log.borrow_mut().push("take".into());
        let r = self.0.refuse.borrow().clone().map_or(Ok(()), Err);
        Box::pin(async move { r })
    }
    fn release_as<'a>(&'a self, _: &'a str) -> Fut<'a, Result<(), LockError>> {
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
                legacy_slot_id: None,
                rebooter: Box::new(FakeRebooter(calls.clone())),
                trial: Some(Box::new(FakeTrial(calls.clone()))),
                links: Box::new(crate::doors::links::SystemLinks::new(&b.settings.paths)),
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

const WHEN_REQUIRED: &str = "policy = \"when-required\"\nbootloader = \"uboot\"";

/// Booted `a` (generation 1, verified); commit c0ffee with another kernel deployed: `b`
/// is live, and the boot default stays `a` until a trial boot into `b` verified.
fn kernel_deploy(reboot_toml: &str) -> TempMachine {
    kernel_deploy_on("pi1", reboot_toml)
}

fn kernel_deploy_on(host: &str, reboot_toml: &str) -> TempMachine {
    let b = TempMachine::named(host, reboot_toml);
    let r = record::Record {
        verified: Some(record::Verified {
            system: b.sys("a").display().to_string(),
            generation: Some(1),
            at: "2026-11-20T00:00:00Z".into(),
        }),
        ..Default::default()
    };
    record::save(&b.settings.paths.state_dir, &r).unwrap();
    b.live("b");
    b.deployed("b", "c0ffee");
    b
}

/// As an older agent (or a person) did it: `b` made the boot default unverified.
fn legacy_kernel_deploy(reboot_toml: &str) -> TempMachine {
    let b = TempMachine::new(reboot_toml);
    b.add_generation("b");
    b.live("b");
    b.deployed("b", "c0ffee");
    b
}

#[tokio::test(flavor = "current_thread")]
async fn policy_never_looks_at_nothing_and_writes_nothing() {
    let b = kernel_deploy("");
    let before = std::fs::read(record::path(&b.settings.paths.state_dir)).unwrap();
    let f = Fakes::new(&b, true);
    assert_eq!(f.cycle(&b).await, Acted::Off);
    assert!(f.take().is_empty());
    assert_eq!(
        std::fs::read(record::path(&b.settings.paths.state_dir)).unwrap(),
        before
    );
    // status still says a reboot is pending, waiting for a person.
    let view = b.view();
    assert_eq!(view.pending.unwrap().waiting_for.as_deref(), Some("policy"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_kernel_deploy_is_tried_once_as_a_trial_and_never_twice() {
    let b = kernel_deploy(WHEN_REQUIRED);
    let f = Fakes::new(&b, true);
    assert_eq!(f.cycle(&b).await, Acted::Rebooting);
    let log = f.take();
    assert_eq!(&log[..3], ["ready", "take", "arm b"], "{log:?}");
    assert_eq!(Fakes::reboots(&log), 1, "{log:?}");
    assert!(log[3].contains("as a trial"), "{log:?}");
    // The boot default never moved: no profile change, no switch-to-configuration boot.
    assert!(
        !log.iter()
            .any(|c| c.starts_with("set") || c.starts_with("boot")),
        "{log:?}"
    );
    assert_eq!(b.default_system(), b.sys("a"));
    let r = b.record();
    assert!(r.slot_held);
    assert_eq!(r.slot_id.as_deref(), Some("pi1"));
    let shown_b = b.sys("b").display().to_string();
    assert_eq!(r.trial.as_ref().unwrap().system, shown_b);
    assert_eq!(r.rebooted.as_ref().unwrap().system, shown_b);
    // The reboot did not happen (or the machine came back in `a`): not again.
    let acted = f.cycle(&b).await;
    let Acted::Waiting(w) = acted else {
        panic!("{acted:?}")
    };
    assert_eq!(w.what, "attention");
    assert!(w.detail.contains("already rebooted once"), "{}", w.detail);
    assert_eq!(Fakes::reboots(&f.take()), 0);
}

/// Issue 19 item 9: a trial that cannot be armed never reboots; the deployment stays
/// live and pending, and status says why.
#[tokio::test(flavor = "current_thread")]
async fn a_trial_that_cannot_be_armed_never_reboots_and_status_says_why() {
    let b = kernel_deploy(WHEN_REQUIRED);
    let f = Fakes::new(&b, true);
    *f.calls.not_ready.borrow_mut() =
        Some("/boot/firmware/uboot.env: bad CRC (damaged environment)".into());
    let acted = f.cycle(&b).await;
    let Acted::Waiting(w) = acted else {
        panic!("{acted:?}")
    };
    assert_eq!(w.what, "trial");
    assert!(
        w.detail.contains("bad CRC") && w.detail.contains("fake uboot.env"),
        "{}",
        w.detail
    );
    assert_eq!(f.take(), ["ready"], "no slot, no arming, no reboot");
    let r = b.record();
    assert!(
        r.trial.is_none() && r.rebooted.is_none() && !r.slot_held,
        "{r:?}"
    );
    assert_eq!(b.default_system(), b.sys("a"));
    let view = b.view();
    let p = view.pending.unwrap();
    assert_eq!(p.waiting_for.as_deref(), Some("trial"));
    assert!(p.detail.unwrap().contains("bad CRC"));
    // Arming itself fails (fw_setenv fails): undone, the slot given back, no reboot.
    *f.calls.not_ready.borrow_mut() = None;
    *f.calls.arm_fails.borrow_mut() = Some("fw_setenv exited with 1".into());
    let acted = f.cycle(&b).await;
    assert!(
        matches!(&acted, Acted::Waiting(w) if w.what == "trial" && w.detail.contains("fw_setenv exited")),
        "{acted:?}"
    );
    assert_eq!(f.take(), ["ready", "take", "arm b", "disarm", "release"]);
    let r = b.record();
    assert!(
        r.trial.is_none() && r.rebooted.is_none() && !r.slot_held,
        "{r:?}"
    );
    // Fixed: the next run reboots.
    *f.calls.arm_fails.borrow_mut() = None;
    assert_eq!(f.cycle(&b).await, Acted::Rebooting);
}

/// Without a trial mechanism a reboot deploy stays live and pending: never the default.
#[tokio::test(flavor = "current_thread")]
async fn without_a_trial_mechanism_it_stays_live_and_pending_and_says_what_to_do() {
    let b = kernel_deploy("policy = \"when-required\"");
    let f = Fakes::new(&b, true);
    let acted = f.cycle(&b).await;
    let Acted::Waiting(w) = acted else {
        panic!("{acted:?}")
    };
    assert_eq!(w.what, "trial");
    assert!(
        w.detail.contains("bootloader = \"none\"")
            && !w.detail.contains("hint:")
            && w.hint
                .as_deref()
                .is_some_and(|h| h.contains("bootloader = \"uboot\"")),
        "{w:?}"
    );
    assert!(f.take().is_empty());
    // bootloader = "uboot" in a build without the door: the same wait, another reason.
    let b = kernel_deploy(WHEN_REQUIRED);
    let mut f = Fakes::new(&b, false);
    f.effects.trial = None;
    let acted = f.cycle(&b).await;
    assert!(
        matches!(&acted, Acted::Waiting(w) if w.what == "trial" && w.detail.contains("no U-Boot trial door")),
        "{acted:?}"
    );
    assert_eq!(Fakes::reboots(&f.take()), 0);
}

/// `systemctl reboot` fails: no reboot is recorded for the system (the next run tries
/// again), the trial is disarmed, status says why, and the slot goes back.
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
    assert_eq!(&log[..3], ["ready", "take", "arm b"], "{log:?}");
    assert_eq!(&log[4..], ["disarm", "release"], "{log:?}");
    let r = b.record();
    assert!(
        r.rebooted.is_none() && r.trial.is_none() && !r.slot_held,
        "{r:?}"
    );
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
        assert_eq!(f.take(), ["ready", "take"]);
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
        hint: None,
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
        (w.what.as_str(), w.until),
        ("window", Some("2026-11-26T02:00:00Z".into()))
    );
    assert!(f.take().is_empty());
    let view = b.view();
    let p = view.pending.unwrap();
    assert_eq!(p.until.as_deref(), Some("2026-11-26T02:00:00Z"));
    // Live, not a generation yet.
    assert_eq!(p.generation, None);
    assert_eq!(p.system, b.sys("b").display().to_string());
}

/// The agent armed a trial of `b` and rebooted; this is the trial boot.
async fn trial_boot_of_b(b: &TempMachine, f: &Fakes) {
    assert_eq!(f.cycle(b).await, Acted::Rebooting);
    f.take();
    *f.calls.armed.borrow_mut() = false; // the bootloader consumed the flag
    b.boot("b");
}

#[tokio::test(flavor = "current_thread")]
async fn a_trial_that_passes_its_checks_becomes_the_boot_default() {
    let b = kernel_deploy(WHEN_REQUIRED);
    let f = Fakes::new(&b, true);
    trial_boot_of_b(&b, &f).await;
    assert_eq!(f.verify(&b).await, Verdict::Verified);
    assert_eq!(f.take(), ["disarm", "health", "set b", "boot b", "release"]);
    assert_eq!(b.default_system(), b.sys("b"));
    let r = b.record();
    let shown_b = b.sys("b").display().to_string();
    assert_eq!(r.verified.as_ref().unwrap().system, shown_b);
    assert_eq!(r.verified.as_ref().unwrap().generation, Some(2));
    assert_eq!(r.boot.as_ref().unwrap().verified, Some(true));
    assert_eq!(r.boot.as_ref().unwrap().generation, Some(2));
    assert_eq!(r.rebooted.as_ref().unwrap().verified, Some(true));
    assert!(r.trial.is_none() && !r.slot_held);
    assert_eq!(
        b.store().load().unwrap().deployed.unwrap().generation,
        Some(2)
    );
    // Once per boot.
    assert_eq!(f.verify(&b).await, Verdict::AlreadyDone);
    assert!(f.take().is_empty());
    // And the policy is content: the booted system is the default.
    assert_eq!(f.cycle(&b).await, Acted::NotRequired);
    // The next boot of it (a power cut): verified before, nothing to do.
    b.boot("b");
    assert!(matches!(f.verify(&b).await, Verdict::Nothing(_)));
    assert_eq!(f.take(), ["release"]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_trial_that_fails_its_checks_reboots_into_the_untouched_default() {
    let b = kernel_deploy(WHEN_REQUIRED);
    let f = Fakes::new(&b, true);
    trial_boot_of_b(&b, &f).await;
    *f.calls.healthy.borrow_mut() = false;
    assert_eq!(f.verify(&b).await, Verdict::FellBack { rebooting: true });
    let log = f.take();
    assert_eq!(&log[..2], ["disarm", "health"], "{log:?}");
    assert_eq!(Fakes::reboots(&log), 1, "{log:?}");
    assert!(
        !log.iter()
            .any(|c| c.starts_with("set") || c.starts_with("boot")),
        "the default never moved: nothing to undo: {log:?}"
    );
    assert!(
        !log.contains(&"release".to_string()),
        "the slot is kept across the reboot: {log:?}"
    );
    assert_eq!(b.default_system(), b.sys("a"));
    let st = b.store().load().unwrap();
    assert_eq!(st.bad("c0ffee").expect("marked bad").phase, Phase::Health);
    assert_eq!(st.history[0].outcome, Outcome::Failed);
    // The same fields as the deployment's own record (issue 22): its commit and subject.
    assert_eq!(st.history[0].commit.as_deref(), Some("c0ffee"));
    assert_eq!(
        st.history[0].subject.as_deref(),
        Some("b: a kernel update"),
        "{:?}",
        st.history[0]
    );
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
    assert!(fb.rebooted && fb.kind == "trial-failed", "{fb:?}");
    assert_eq!(
        fb.to_system.as_deref(),
        Some(&*b.sys("a").display().to_string())
    );

    // The next boot is the last verified generation: nothing to verify, the slot released.
    b.boot("a");
    assert!(matches!(f.verify(&b).await, Verdict::Nothing(_)));
    assert_eq!(f.take(), ["release"]);
    assert_eq!(f.cycle(&b).await, Acted::NotRequired);
    assert!(b
        .view()
        .fell_back
        .unwrap()
        .reason
        .contains("failed its health checks"));
}

/// A reset during the trial (a panic with panic=N, a hang and the watchdog, the deadline,
/// a power cut): the bootloader boots its default. Recorded, never tried twice.
#[tokio::test(flavor = "current_thread")]
async fn a_trial_reset_before_it_verified_lands_in_the_last_verified_and_is_not_retried() {
    let b = kernel_deploy(WHEN_REQUIRED);
    let f = Fakes::new(&b, false);
    trial_boot_of_b(&b, &f).await;
    b.boot("a"); // the trial kernel panicked; the board reset into the default
    assert!(matches!(f.verify(&b).await, Verdict::Nothing(_)));
    assert_eq!(f.take(), ["disarm"]);
    let r = b.record();
    let fb = r.fallback.unwrap();
    assert_eq!(fb.kind, "trial-reset");
    assert!(fb.reason.contains("reset before"), "{}", fb.reason);
    assert!(r.trial.is_none());
    assert_eq!(r.rebooted.unwrap().verified, Some(false));
    // Not blamed on the commit (a power cut is not its fault) ...
    assert!(b.store().load().unwrap().bad_commits.is_empty());
    // ... and never tried twice: once it is live again, the policy waits for a person.
    b.live("b");
    let acted = f.cycle(&b).await;
    assert!(
        matches!(&acted, Acted::Waiting(w) if w.what == "attention" && w.detail.contains("already rebooted once")),
        "{acted:?}"
    );
    assert_eq!(Fakes::reboots(&f.take()), 0);
}

/// Two queued generations share a bad kernel: the newer one's trial fails, and the
/// fallback is the last verified generation, never the older queued one.
#[tokio::test(flavor = "current_thread")]
async fn two_queued_generations_with_one_bad_kernel_fall_back_to_the_last_verified() {
    let b = kernel_deploy(WHEN_REQUIRED);
    // b2 (same kernel k2) deployed after b, before any reboot.
    b.live("b2");
    b.deployed("b2", "c0ffee2");
    let f = Fakes::new(&b, false);
    assert_eq!(f.cycle(&b).await, Acted::Rebooting);
    assert!(f.take().contains(&"arm b2".to_string()));
    *f.calls.armed.borrow_mut() = false;
    b.boot("b2");
    *f.calls.healthy.borrow_mut() = false;
    assert_eq!(f.verify(&b).await, Verdict::FellBack { rebooting: true });
    f.take();
    assert_eq!(b.default_system(), b.sys("a"));
    assert_eq!(
        profile::list(&b.settings.paths.profile).len(),
        1,
        "b never became a generation"
    );
    b.boot("a");
    assert!(matches!(f.verify(&b).await, Verdict::Nothing(_)));
    assert_eq!(f.cycle(&b).await, Acted::NotRequired);
}

/// Issue 20 item 2: `switch-to-configuration test` starts verify-boot in the deployment's
/// own boot; it does nothing (no checks, no fallback, no marker).
#[tokio::test(flavor = "current_thread")]
async fn verify_boot_started_by_an_activation_in_the_same_boot_does_nothing() {
    let b = legacy_kernel_deploy(WHEN_REQUIRED); // booted a, default b: a "fallback" before
    let f = Fakes::new(&b, false);
    let v = f.verify(&b).await;
    assert!(
        matches!(&v, Verdict::Nothing(why) if why.contains("started by an activation")),
        "{v:?}"
    );
    assert!(f.take().is_empty());
    assert!(!b
        .settings
        .paths
        .runtime_dir
        .join(super::verify::MARKER)
        .exists());
    assert!(b.store().load().unwrap().bad_commits.is_empty());
    assert_eq!(b.default_system(), b.sys("b"));
    assert!(
        super::verify::started_by_activation(&crate::doors::links::SystemLinks::new(
            &b.settings.paths
        ))
        .is_some()
    );
    b.live("a");
    assert!(
        super::verify::started_by_activation(&crate::doors::links::SystemLinks::new(
            &b.settings.paths
        ))
        .is_none()
    );
}

/// A person made `b` the default (or an older agent did) and rebooted: that boot is
/// verified too, and a failure falls back to the recorded last verified generation.
#[tokio::test(flavor = "current_thread")]
async fn an_unverified_default_is_verified_whoever_rebooted_and_falls_back_to_the_last_verified() {
    let b = kernel_deploy(WHEN_REQUIRED);
    b.add_generation("c"); // generation 2: never verified, not the agent's trial
    b.add_generation("b"); // generation 3
    b.boot("b"); // a power cut, a person
    let f = Fakes::new(&b, false);
    *f.calls.healthy.borrow_mut() = false;
    assert_eq!(f.verify(&b).await, Verdict::FellBack { rebooting: true });
    let log = f.take();
    assert_eq!(
        &log[..3],
        ["health", "set a", "boot a"],
        "never `c`, the previous one: {log:?}"
    );
    assert_eq!(b.default_system(), b.sys("a"));
    // It booted `b` again (the bootloader ignored the default): the loop breaker.
    b.boot("b");
    assert_eq!(f.verify(&b).await, Verdict::LoopBroken);
    let log = f.take();
    assert_eq!(Fakes::reboots(&log), 0, "{log:?}");
    assert!(
        !log.iter()
            .any(|c| c.starts_with("set") || c.starts_with("boot")),
        "{log:?}"
    );
    // Issue 23 item 15: the next run does not reboot either.
    let acted = f.cycle(&b).await;
    assert!(
        matches!(&acted, Acted::Waiting(w) if w.what == "attention" && w.detail.contains("given up")),
        "{acted:?}"
    );
    assert_eq!(Fakes::reboots(&f.take()), 0);
    // Even if `b` became the default again by hand and is booted: no second fallback.
    b.add_generation("b");
    b.boot("b");
    assert_eq!(f.verify(&b).await, Verdict::LoopBroken);
    let log = f.take();
    assert_eq!(Fakes::reboots(&log), 0, "{log:?}");
    assert!(!log.iter().any(|c| c.starts_with("set")), "{log:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_passing_unverified_default_becomes_the_last_verified() {
    let b = kernel_deploy(WHEN_REQUIRED);
    b.add_generation("c");
    b.boot("c");
    let f = Fakes::new(&b, false);
    assert_eq!(f.verify(&b).await, Verdict::Verified);
    assert_eq!(f.take(), ["health"]);
    assert_eq!(
        b.record().last_verified(),
        Some(&*b.sys("c").display().to_string())
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_bootloader_fallback_from_an_unverified_default_is_a_failed_deployment() {
    let b = legacy_kernel_deploy(WHEN_REQUIRED);
    let f = Fakes::new(&b, true);
    assert_eq!(f.cycle(&b).await, Acted::Rebooting);
    let log = f.take();
    assert!(
        !log.iter().any(|c| c.starts_with("arm")),
        "a default needs no trial: {log:?}"
    );
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

/// A trial armed for `b`, then a deployment that needs no reboot replaced it: the next
/// run disarms it; and a trial boot of a replaced deployment is never promoted.
#[tokio::test(flavor = "current_thread")]
async fn a_trial_of_a_replaced_deployment_is_disarmed_and_never_promoted() {
    let b = kernel_deploy(WHEN_REQUIRED);
    let f = Fakes::new(&b, false);
    assert_eq!(f.cycle(&b).await, Acted::Rebooting);
    f.take();
    // The reboot never came; the boot of the trial (a power cut) after `c` was committed.
    b.add_generation("c");
    b.deployed("c", "c1c1c1");
    b.boot("b");
    let v = f.verify(&b).await;
    assert_eq!(v, Verdict::FellBack { rebooting: true });
    let log = f.take();
    assert_eq!(log[0], "disarm");
    assert!(
        !log.iter().any(|c| c == "health" || c.starts_with("set")),
        "{log:?}"
    );
    assert_eq!(b.default_system(), b.sys("c"));
    // The same found by a run before any boot.
    let b = kernel_deploy(WHEN_REQUIRED);
    let f = Fakes::new(&b, false);
    assert_eq!(f.cycle(&b).await, Acted::Rebooting);
    f.take();
    b.add_generation("c");
    b.live("c");
    b.deployed("c", "c1c1c1");
    assert_eq!(f.cycle(&b).await, Acted::NotRequired);
    assert_eq!(f.take(), ["disarm"]);
    assert!(b.record().trial.is_none());
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
    // A first boot with this version: the default is verified once.
    assert_eq!(f.verify(&b).await, Verdict::Verified);
    assert_eq!(f.take(), ["health", "release"]);
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

/// Issue 19 item 8, against the project's FleetLock server: an SD card cloned from pi1
/// (its machine id and its record) running as pi2 is told, and never takes a slot with
/// pi1's id; pi1 itself goes on as before. The id sent is the app-specific one.
#[tokio::test(flavor = "current_thread")]
async fn a_cloned_machine_id_is_detected_and_takes_no_slot() {
    let lockdir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fleetlock/server.py");
    let (port_file, events) = (lockdir.path().join("port"), lockdir.path().join("events"));
    let mut child = std::process::Command::new("python3")
        .arg(&script)
        .arg("--port-file")
        .arg(&port_file)
        .arg("--events")
        .arg(&events)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("python3 runs the FleetLock test server");
    let port = (0..200)
        .find_map(|_| {
            let p = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.trim().parse::<u16>().ok());
            if p.is_none() {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            p
        })
        .expect("the server writes its port");
    let url = format!("http://127.0.0.1:{port}");
    let machine_id = lockdir.path().join("machine-id");
    std::fs::write(&machine_id, "3d1219c7c4c5404aaa1f6d2a48adfda4\n").unwrap();
    let toml = format!("{WHEN_REQUIRED}\nfleetlock_url = \"{url}\"");
    let effects = |b: &TempMachine, f: &mut Fakes| {
        let fl = b.settings.reboot.fleetlock.clone().unwrap();
        let id = crate::doors::fleetlock::lock_id(&fl, &machine_id).unwrap();
        let client = crate::doors::fleetlock::Client::new(&fl.url, &fl.group, &id).unwrap();
        f.effects.slot = Some(Ok(Box::new(client) as Box<dyn Slot>));
    };
    let pi1 = kernel_deploy_on("pi1", &toml);
    let mut f1 = Fakes::new(&pi1, false);
    effects(&pi1, &mut f1);
    assert_eq!(f1.cycle(&pi1).await, Acted::Rebooting);
    let identity = pi1.record().identity.unwrap();
    assert_eq!(
        (identity.id.as_str(), identity.host.as_str()),
        ("7d46091d5cfa4676b30b362f2bedd4d1", "pi1")
    );

    // The clone: pi1's card, its record included, configured as pi2.
    let pi2 = kernel_deploy_on("pi2", &toml);
    std::fs::copy(
        record::path(&pi1.settings.paths.state_dir),
        record::path(&pi2.settings.paths.state_dir),
    )
    .unwrap();
    let mut r2 = pi2.record();
    r2.trial = None;
    r2.rebooted = None;
    r2.slot_held = false;
    record::save(&pi2.settings.paths.state_dir, &r2).unwrap();
    let mut f2 = Fakes::new(&pi2, false);
    effects(&pi2, &mut f2);
    let acted = f2.cycle(&pi2).await;
    let Acted::Waiting(w) = acted else {
        panic!("{acted:?}")
    };
    assert_eq!(w.what, "attention");
    assert!(
        w.detail.contains("has the machine id of pi1")
            && !w.detail.contains("hint:")
            && w.hint
                .as_deref()
                .is_some_and(|h| h.contains("systemd-machine-id-setup")),
        "{w:?}"
    );
    assert_eq!(Fakes::reboots(&f2.take()), 0);
    assert_eq!(
        pi2.view().pending.unwrap().waiting_for.as_deref(),
        Some("attention")
    );

    child.kill().unwrap();
    let _ = child.wait();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let takes: Vec<_> = lines
        .iter()
        .filter(|e| e["endpoint"] == "v1/pre-reboot")
        .collect();
    assert_eq!(takes.len(), 1, "only pi1 took a slot: {lines:?}");
    assert_eq!(
        takes[0]["id"], "7d46091d5cfa4676b30b362f2bedd4d1",
        "never the raw machine id"
    );
}

/// A slot taken by an older agent with the raw machine id (no id recorded) is released
/// with that id, not stranded.
#[tokio::test(flavor = "current_thread")]
async fn a_slot_taken_with_an_older_id_is_released_with_it() {
    #[derive(Default)]
    struct Ids(RefCell<Vec<String>>);
    struct IdSlot(Rc<Ids>);
    impl Slot for IdSlot {
        fn describe(&self) -> String {
            "lock".into()
        }
        fn id(&self) -> String {
            "new-id".into()
        }
        fn take(&self) -> Fut<'_, Result<(), LockError>> {
            Box::pin(async { Ok(()) })
        }
        fn release_as<'a>(&'a self, id: &'a str) -> Fut<'a, Result<(), LockError>> {
            self.0 .0.borrow_mut().push(id.to_string());
            Box::pin(async { Ok(()) })
        }
    }
    let b = TempMachine::new(WHEN_REQUIRED);
    let ids = Rc::new(Ids::default());
    let mut f = Fakes::new(&b, false);
    f.effects.slot = Some(Ok(Box::new(IdSlot(ids.clone())) as Box<dyn Slot>));
    f.effects.legacy_slot_id = Some("raw-machine-id".into());
    for (recorded, expect) in [(None, "raw-machine-id"), (Some("taken-as"), "taken-as")] {
        let r = record::Record {
            slot_held: true,
            slot_id: recorded.map(str::to_string),
            ..Default::default()
        };
        record::save(&b.settings.paths.state_dir, &r).unwrap();
        assert_eq!(f.cycle(&b).await, Acted::NotRequired);
        assert_eq!(ids.0.borrow_mut().pop().as_deref(), Some(expect));
        let r = b.record();
        assert!(!r.slot_held && r.slot_id.is_none());
    }
}

/// A Links door that answers from memory: the reboot side reads the machine's links only
/// through it.
struct FakeLinks {
    booted: &'static str,
    current: &'static str,
    default: (u32, &'static str),
    kernel_changed: Option<bool>,
}

impl crate::doors::links::Links for FakeLinks {
    fn booted(&self) -> Option<PathBuf> {
        Some(PathBuf::from(self.booted))
    }
    fn current(&self) -> Option<PathBuf> {
        Some(PathBuf::from(self.current))
    }
    fn default_generation(&self) -> Option<Generation> {
        self.generations().pop()
    }
    fn generations(&self) -> Vec<Generation> {
        vec![Generation {
            number: self.default.0,
            system: PathBuf::from(self.default.1),
        }]
    }
    fn reboot_required(&self, system: &Path) -> Option<bool> {
        (system != Path::new(self.booted)).then_some(self.kernel_changed?)
    }
}

#[test]
fn the_reboot_facts_come_through_the_links_door() {
    let links = FakeLinks {
        booted: "/nix/store/a",
        current: "/nix/store/b",
        default: (4, "/nix/store/a"),
        kernel_changed: Some(true),
    };
    let state = State {
        deployed: Some(Deployed {
            commit: Some("c".repeat(40)),
            subject: None,
            system: "/nix/store/b".into(),
            generation: None,
            at: "2026-11-25T02:00:00Z".into(),
        }),
        ..Default::default()
    };
    let facts = super::facts(&links, &state, None);
    assert_eq!(facts.booted.as_deref(), Some(Path::new("/nix/store/a")));
    let target = facts.target.unwrap();
    assert_eq!(target.system, Path::new("/nix/store/b"));
    assert!(target.live, "the live deployment, not yet the boot default");
    assert_eq!(facts.kernel_changed, Some(true));
    // Not the agent's deployment: the profile's default is the target.
    let facts = super::facts(&links, &State::default(), None);
    let target = facts.target.unwrap();
    assert_eq!((target.generation, target.live), (Some(4), false));
    assert_eq!(
        super::verify::started_by_activation(&links).unwrap(),
        "/nix/store/b runs, not the booted /nix/store/a: started by an activation in this boot, not by a boot; a boot is verified at its start"
    );
}
