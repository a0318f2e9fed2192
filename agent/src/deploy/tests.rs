//! The cycle against fakes: every outcome and every kill point, in milliseconds.
//!
//! A [`World`] is the fake machine and remote, shared by the doors and kept across
//! agents, so a test can "kill" an agent at a step (its future is dropped where the fake
//! blocks) and start a new one on the same machine and state directory. An activation
//! that a kill interrupts goes on as an orphan: it completes when recovery settles it, or
//! else *after* recovery's own switch (the race that leaves an unchecked system live).
//! The real-parts tests in `agent/tests/it` prove the same behaviour with git and nix.

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tokio::sync::Notify;

use super::{Agent, Exit};
use crate::doors::{Builder, Doors, Fut, Health, Machine, Source};
use crate::failure::{Failure, Kind};
use crate::health::{CheckResult, Report, Verdict};
use crate::source::Fetched;
use crate::state::{Outcome, Phase, Step, Store};
use crate::system::profile::Generation;
use crate::system::switch::Action;

mod pivot;
mod testing;

#[derive(Default)]
struct World {
    head: Option<String>,
    /// The testing branch's head (`testing/pi1`), when it exists.
    testing_head: Option<String>,
    /// The source lists no testing head with main's (as a git child whose configuration
    /// names another branch): the cycle must ask for it apart.
    testing_unlisted: bool,
    /// Commits the trust checks refuse (unsigned), and every commit checked, in order.
    refuse: HashSet<String>,
    verified: Vec<String>,
    head_failure: Option<Failure>,
    /// commit → what building it gives.
    builds: Vec<(String, Result<PathBuf, Failure>)>,
    current: Option<PathBuf>,
    /// Generation n is `generations[n - 1]`.
    generations: Vec<PathBuf>,
    profile: Option<u32>,
    /// "test /sys/a", "boot /sys/a", "set /sys/a", "build c1", "fetch", "head".
    calls: Vec<String>,
    failing_switches: HashSet<(PathBuf, &'static str)>,
    unhealthy: HashSet<PathBuf>,
    /// Kill the agent when this call is made ("test /sys/a", "health", ...); once
    /// unless `die_always`.
    die_at: Option<String>,
    die_always: bool,
    /// An activation that outlived its killed agent.
    orphan: Option<PathBuf>,
    settled: u32,
    /// The flake attribute of every build, in order.
    attributes: Vec<String>,
    /// Systems that would lose the agent or sshd (the orphan guard).
    losing: Vec<(PathBuf, Vec<crate::system::reach::Lost>)>,
    /// The downgrade floors each trust check was given, in order.
    floors: Vec<Vec<crate::trust::Floor>>,
    /// The agent's cache, where map mode's files are read from (a real bare repository).
    cache: PathBuf,
}

struct Fake {
    world: RefCell<World>,
    died: Notify,
}

type F = Rc<Fake>;

impl Fake {
    /// Records the call; `true` when the agent dies here.
    fn call(&self, what: String) -> bool {
        let mut w = self.world.borrow_mut();
        w.calls.push(what.clone());
        if w.die_at.as_deref() == Some(&what) {
            if !w.die_always {
                w.die_at = None;
            }
            drop(w);
            self.died.notify_one();
            return true;
        }
        false
    }
}

fn dead<'a, T: 'a>() -> Fut<'a, T> {
    Box::pin(std::future::pending())
}

impl Source for F {
    fn read_file<'a>(
        &'a self,
        commit: &'a str,
        file: &'a str,
        max: usize,
    ) -> Fut<'a, Result<Option<String>, Failure>> {
        self.call(format!("read {file}"));
        let cache = self.world.borrow().cache.clone();
        Box::pin(async move { crate::source::blob::read(&cache, commit, file, max) })
    }
    fn head(&self) -> Fut<'_, Result<String, Failure>> {
        self.call("head".into());
        let w = self.world.borrow();
        let r = match &w.head_failure {
            Some(f) => Err(f.clone()),
            None => Ok(w.head.clone().expect("test sets a head")),
        };
        Box::pin(async move { r })
    }
    fn heads(&self) -> Fut<'_, Result<crate::source::Heads, Failure>> {
        let head = self.head();
        Box::pin(async move {
            let main = head.await?;
            let w = self.world.borrow();
            let testing = (!w.testing_unlisted).then(|| crate::source::TestingHead {
                branch: "testing/pi1".into(),
                commit: w.testing_head.clone(),
            });
            Ok(crate::source::Heads {
                main,
                testing,
                prebuilt: None,
            })
        })
    }
    fn verify<'a>(
        &'a self,
        commit: &'a str,
        floors: &'a [crate::trust::Floor],
    ) -> Fut<'a, Result<crate::trust::Checked, crate::trust::Verdict>> {
        let mut w = self.world.borrow_mut();
        w.verified.push(commit.to_string());
        w.floors.push(floors.to_vec());
        let refused = w.refuse.contains(commit);
        drop(w);
        Box::pin(async move {
            if !refused {
                return Ok(crate::trust::Checked::default());
            }
            Err(crate::trust::Verdict::Refused(crate::trust::Refusal {
                reason: crate::trust::Reason::Unsigned,
                message: format!("{commit} is not signed"),
                expected: "a signature by alice".into(),
            }))
        })
    }
    fn fetch(&self) -> Fut<'_, Result<Fetched, Failure>> {
        self.call("fetch".into());
        fetched(self.world.borrow().head.clone().unwrap())
    }
    fn testing_head(&self) -> Fut<'_, Result<Option<String>, Failure>> {
        self.call("testing head".into());
        let head = self.world.borrow().testing_head.clone();
        Box::pin(async move { Ok(head) })
    }
    fn fetch_testing(&self) -> Fut<'_, Result<Fetched, Failure>> {
        self.call("fetch testing".into());
        fetched(self.world.borrow().testing_head.clone().unwrap())
    }
}

/// A fetch of `commit` that succeeds.
fn fetched<'a>(commit: String) -> Fut<'a, Result<Fetched, Failure>> {
    Box::pin(async move {
        Ok(Fetched {
            subject: format!("subject of {commit}"),
            time: 0,
            commit,
            prebuilt: None,
        })
    })
}

impl Builder for F {
    fn build<'a>(
        &'a self,
        commit: &'a str,
        attribute: &'a str,
    ) -> Fut<'a, Result<PathBuf, Failure>> {
        self.world
            .borrow_mut()
            .attributes
            .push(attribute.to_string());
        if self.call(format!("build {commit}")) {
            return dead();
        }
        let w = self.world.borrow();
        let r = w
            .builds
            .iter()
            .find(|(c, _)| c == commit)
            .map(|(_, r)| r.clone())
            .expect("test defines the build");
        Box::pin(async move { r })
    }
    fn release(&self) {}
}

impl Machine for F {
    fn current_system(&self) -> Option<PathBuf> {
        self.world.borrow().current.clone()
    }
    fn lost(&self, system: &Path) -> Vec<crate::system::reach::Lost> {
        let w = self.world.borrow();
        w.losing
            .iter()
            .find(|(s, _)| s == system)
            .map(|(_, lost)| lost.clone())
            .unwrap_or_default()
    }
    fn profile(&self) -> Option<Generation> {
        let w = self.world.borrow();
        let n = w.profile?;
        Some(Generation {
            number: n,
            system: w.generations[n as usize - 1].clone(),
        })
    }
    fn previous_generation(&self) -> Option<Generation> {
        let now = self.profile()?;
        let w = self.world.borrow();
        (1..now.number).rev().find_map(|n| {
            let system = w.generations[n as usize - 1].clone();
            (system != now.system).then_some(Generation { number: n, system })
        })
    }
    fn set_profile<'a>(&'a self, system: &'a Path) -> Fut<'a, Result<u32, Failure>> {
        if self.call(format!("set {}", system.display())) {
            return dead();
        }
        let mut w = self.world.borrow_mut();
        let same = w
            .profile
            .is_some_and(|n| w.generations[n as usize - 1] == system);
        if !same {
            w.generations.push(system.to_path_buf());
            w.profile = Some(w.generations.len() as u32);
        }
        let n = w.profile.unwrap();
        Box::pin(async move { Ok(n) })
    }
    fn switch<'a>(
        &'a self,
        system: &'a Path,
        action: Action,
        _tag: &'a str,
    ) -> Fut<'a, Result<(), Failure>> {
        let what = format!("{} {}", action.as_str(), system.display());
        if self.call(what) {
            if action == Action::Test {
                self.world.borrow_mut().orphan = Some(system.to_path_buf());
            }
            return dead();
        }
        let mut w = self.world.borrow_mut();
        let result = if w
            .failing_switches
            .contains(&(system.to_path_buf(), action.as_str()))
        {
            Err(Failure::new(
                Kind::Commit,
                format!("switch {what} failed", what = action.as_str()),
            ))
        } else {
            if action == Action::Test {
                w.current = Some(system.to_path_buf());
            }
            Ok(())
        };
        // An orphan nobody waited for finishes after us: the race recovery must prevent.
        if let Some(orphan) = w.orphan.take() {
            w.current = Some(orphan);
        }
        Box::pin(async move { result })
    }
    fn settle_activation<'a>(&'a self, _tag: &'a str) -> Fut<'a, Result<(), Failure>> {
        let mut w = self.world.borrow_mut();
        w.settled += 1;
        if let Some(orphan) = w.orphan.take() {
            w.current = Some(orphan); // waited for it to end
        }
        Box::pin(async { Ok(()) })
    }
}

impl Health for F {
    fn wait_until_healthy(&self) -> Fut<'_, Report> {
        if self.call("health".into()) {
            return dead();
        }
        let w = self.world.borrow();
        let healthy = w.current.as_ref().is_some_and(|c| !w.unhealthy.contains(c));
        let verdict = if healthy {
            Verdict::Healthy("ok".into())
        } else {
            Verdict::Unhealthy("web: status 500".into())
        };
        Box::pin(async move {
            Report {
                healthy,
                rounds: 1,
                results: vec![CheckResult {
                    name: "web".into(),
                    verdict,
                }],
            }
        })
    }
}

/// A machine running `/sys/s0` as generation 1, and a state directory.
struct Bench {
    fake: F,
    dir: tempfile::TempDir,
    /// Lines added to `[source]` (e.g. the testing branch).
    source_extra: String,
}

fn sys(name: &str) -> PathBuf {
    PathBuf::from(format!("/sys/{name}"))
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let world = World {
            cache: dir.path().join("state/cache.git"),
            current: Some(sys("s0")),
            generations: vec![sys("s0")],
            profile: Some(1),
            ..World::default()
        };
        Bench {
            fake: Rc::new(Fake {
                world: RefCell::new(world),
                died: Notify::new(),
            }),
            dir,
            source_extra: String::new(),
        }
    }

    fn agent(&self) -> Agent {
        self.agent_with("name = \"pi1\"", "")
    }

    /// An agent with this `[host]` table body and these extra `[paths]` lines.
    fn agent_with(&self, host: &str, paths: &str) -> Agent {
        let d = self.dir.path().display();
        let text = format!(
            "[source]\nurl = \"file:///srv/homelab\"\nbranch = \"main\"\n{}[host]\n{host}\n[paths]\n{paths}\nstate_dir = \"{d}/state\"\nruntime_dir = \"{d}/run\"\nprofile = \"{d}/profile\"\ncurrent_system = \"{d}/current\"\nbooted_system = \"{d}/booted\"\n",
            self.source_extra
        );
        let settings = crate::config::parse(Path::new("test.toml"), &text).unwrap();
        let doors = Doors {
            source: Box::new(self.fake.clone()),
            builder: Box::new(self.fake.clone()),
            machine: Box::new(self.fake.clone()),
            health: Box::new(self.fake.clone()),
        };
        Agent::with_doors(settings, doors)
    }

    fn push(&self, commit: &str, builds: Result<PathBuf, Failure>) {
        let mut w = self.fake.world.borrow_mut();
        w.head = Some(commit.into());
        w.builds.push((commit.into(), builds));
    }

    /// One `run --once`; `None` when the agent was killed on the way.
    async fn run(&self) -> Option<Exit> {
        let agent = self.agent();
        tokio::select! {
            exit = agent.run_once() => Some(exit.unwrap()),
            _ = self.fake.died.notified() => None,
        }
    }

    fn w(&self) -> std::cell::RefMut<'_, World> {
        self.fake.world.borrow_mut()
    }

    fn switches(&self) -> Vec<String> {
        let w = self.fake.world.borrow();
        w.calls
            .iter()
            .filter(|c| c.starts_with("test ") || c.starts_with("boot "))
            .cloned()
            .collect()
    }

    fn state(&self) -> crate::state::State {
        Store::new(&self.dir.path().join("state")).load().unwrap()
    }

    fn state_bytes(&self) -> Option<Vec<u8>> {
        std::fs::read(self.dir.path().join("state/state.json")).ok()
    }

    /// I1: what runs is what the profile says, and nothing is left half-done.
    fn assert_consistent(&self) {
        let w = self.fake.world.borrow();
        let profile = w.generations[w.profile.unwrap() as usize - 1].clone();
        assert_eq!(
            w.current.as_ref(),
            Some(&profile),
            "live system is not the profile's; calls: {:?}",
            w.calls
        );
        assert!(w.orphan.is_none(), "an activation is still running");
        drop(w);
        let state = self.state();
        assert!(state.intent.is_none(), "intent left: {:?}", state.intent);
        assert!(state.rollback_pending.is_none());
    }
}

fn commit_failure(what: &str) -> Failure {
    Failure::new(Kind::Commit, what)
}

#[tokio::test(flavor = "current_thread")]
async fn deploys_a_healthy_commit_and_makes_it_the_boot_default() {
    let b = Bench::new();
    b.push("c1", Ok(sys("s1")));
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.switches(), ["test /sys/s1", "boot /sys/s1"]);
    assert_eq!(b.w().profile, Some(2));
    b.assert_consistent();
    let state = b.state();
    assert_eq!(state.deployed.unwrap().generation, Some(2));
    assert_eq!(state.history[0].outcome, Outcome::Deployed);
    // Built here, `[prebuilt]` off: said all the same, with no fallback reason.
    assert_eq!(
        state.history[0].obtained,
        Some(crate::state::obtained::built_here())
    );
}

/// A build that failed was built here too; a run that built nothing says nothing.
#[tokio::test(flavor = "current_thread")]
async fn every_native_build_is_recorded_as_built_here() {
    let b = Bench::new();
    b.push("c1", Err(commit_failure("evaluation failed")));
    b.run().await;
    let state = b.state();
    assert_eq!(
        state.history[0].obtained,
        Some(crate::state::obtained::built_here())
    );
    // The same head again: skipped (known bad), nothing built, nothing obtained.
    b.run().await;
    let state = b.state();
    assert_eq!(state.history.len(), 1, "{:?}", state.history);
}

#[tokio::test(flavor = "current_thread")]
async fn a_poll_with_nothing_new_builds_nothing_and_writes_nothing() {
    let b = Bench::new();
    b.push("c1", Ok(sys("s1")));
    b.run().await;
    let before = b.state_bytes();
    b.w().calls.clear();
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.w().calls, ["head"]);
    assert_eq!(b.state_bytes(), before, "the state file was written");
}

#[tokio::test(flavor = "current_thread")]
async fn the_same_system_is_unchanged_and_switches_nothing() {
    let b = Bench::new();
    b.push("c1", Ok(sys("s0")));
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert!(b.switches().is_empty());
    assert_eq!(b.state().history[0].outcome, Outcome::Unchanged);
}

#[tokio::test(flavor = "current_thread")]
async fn an_unhealthy_commit_is_rolled_back_and_not_retried() {
    let b = Bench::new();
    b.w().unhealthy.insert(sys("s1"));
    b.push("c1", Ok(sys("s1")));
    assert_eq!(b.run().await, Some(Exit::Failed(Kind::Commit)));
    assert_eq!(b.switches(), ["test /sys/s1", "test /sys/s0"]);
    b.assert_consistent();
    assert_eq!(b.w().profile, Some(1), "the profile moved");
    let state = b.state();
    assert!(state.bad("c1").is_some());
    assert_eq!(state.history[0].rolled_back, Some(true));
    b.w().calls.clear();
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.w().calls, ["head"], "a bad commit was tried again");
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_activation_is_rolled_back() {
    let b = Bench::new();
    b.w().failing_switches.insert((sys("s1"), "test"));
    b.push("c1", Ok(sys("s1")));
    assert_eq!(b.run().await, Some(Exit::Failed(Kind::Commit)));
    assert_eq!(b.switches(), ["test /sys/s1", "test /sys/s0"]);
    b.assert_consistent();
    assert!(b.state().bad("c1").is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_boot_entry_restores_the_profile() {
    let b = Bench::new();
    b.w().failing_switches.insert((sys("s1"), "boot"));
    b.push("c1", Ok(sys("s1")));
    assert_eq!(b.run().await, Some(Exit::Failed(Kind::Commit)));
    assert_eq!(
        b.switches(),
        [
            "test /sys/s1",
            "boot /sys/s1",
            "test /sys/s0",
            "boot /sys/s0"
        ]
    );
    b.assert_consistent();
    let w = b.w();
    assert_eq!(w.generations[w.profile.unwrap() as usize - 1], sys("s0"));
}

#[tokio::test(flavor = "current_thread")]
async fn only_a_failure_of_the_commit_marks_it_bad() {
    for (kind, code) in [
        (Kind::Environment, crate::exit::ENVIRONMENT),
        (Kind::Transient, crate::exit::TRANSIENT),
        (Kind::Configuration, crate::exit::CONFIG),
    ] {
        let b = Bench::new();
        b.push("c1", Err(Failure::new(kind, "nix not found")));
        let exit = b.run().await.unwrap();
        assert_eq!(exit, Exit::Failed(kind));
        assert_eq!(exit.code(), code);
        let state = b.state();
        assert!(state.bad("c1").is_none(), "{kind:?} blamed the commit");
        // A failed run all the same (issue 23 item 9): recorded, so history, last_run,
        // the metrics and the notifications say so; nothing blamed, nothing handled.
        assert_eq!(state.history.len(), 1, "{kind:?}: not in history");
        let run = &state.history[0];
        assert_eq!(
            (run.outcome, run.phase, run.rolled_back),
            (Outcome::Failed, Some(crate::state::Phase::Build), None),
            "{kind:?}"
        );
        assert!(
            run.error.as_deref().unwrap_or_default().contains(
                "nix not found\n(failed 1 time without blaming the commit; not built again for 10m)"
            ),
            "{kind:?}: {:?}",
            run.error
        );
        assert!(state.last_handled.is_none(), "{kind:?}");
        assert_eq!(state.retries.as_ref().map(|r| r.count), Some(1));
        // Backing off: the next poll does not build again, says the same, records nothing.
        assert_eq!(b.run().await, Some(Exit::Failed(kind)));
        let builds = || b.w().calls.iter().filter(|c| *c == "build c1").count();
        assert_eq!(builds(), 1, "{kind:?}: rebuilt during the backoff");
        assert_eq!(
            b.state().history.len(),
            1,
            "{kind:?}: a waiting poll wrote history"
        );
        // `retry` ends the wait.
        b.agent().retry().unwrap();
        b.run().await;
        assert_eq!(builds(), 2, "{kind:?}: not retried after `retry`");
        assert_eq!(b.state().history.len(), 2, "{kind:?}");
    }
    let b = Bench::new();
    b.push("c1", Err(commit_failure("evaluation failed")));
    assert_eq!(b.run().await, Some(Exit::Failed(Kind::Commit)));
    assert!(b.state().bad("c1").is_some());
}

#[test]
fn the_backoff_doubles_up_to_six_hours() {
    use super::backoff::backoff;
    let minutes: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs() / 60).collect();
    assert_eq!(minutes, [10, 20, 40, 80, 160, 320, 360, 360]);
    assert_eq!(backoff(u32::MAX).as_secs(), 6 * 3600);
}

#[tokio::test(flavor = "current_thread")]
async fn a_new_commit_is_built_at_once_despite_an_older_ones_backoff() {
    let b = Bench::new();
    b.push("c1", Err(Failure::new(Kind::Transient, "build timed out")));
    b.run().await;
    b.push("c2", Ok(sys("s2")));
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert!(b.state().retries.is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn an_unreachable_remote_is_transient_and_touches_nothing() {
    let b = Bench::new();
    b.w().head_failure = Some(Failure::new(Kind::Transient, "cannot reach"));
    assert_eq!(b.run().await, Some(Exit::Failed(Kind::Transient)));
    assert!(b.state_bytes().is_none());
    assert_eq!(b.w().calls, ["head"]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_rollback_is_retried_first_by_the_next_run() {
    let b = Bench::new();
    b.w().unhealthy.insert(sys("s1"));
    b.w().failing_switches.insert((sys("s0"), "test"));
    b.push("c1", Ok(sys("s1")));
    assert_eq!(b.run().await, Some(Exit::RollbackFailed));
    assert!(b.state().rollback_pending.is_some());
    assert_eq!(b.run().await, Some(Exit::RollbackFailed));
    b.w().failing_switches.clear();
    assert_eq!(b.run().await, Some(Exit::Ok));
    b.assert_consistent();
}

/// Every step of a deployment at which the agent can die: (step, healthy?).
const KILL_POINTS: &[(&str, bool)] = &[
    ("build c1", true),
    ("test /sys/s1", true),
    ("health", true),
    ("set /sys/s1", true),
    ("boot /sys/s1", true),
    ("build c1", false),
    ("test /sys/s1", false),
    ("health", false),
    // Mid rollback: the way back is interrupted.
    ("test /sys/s0", false),
];

#[tokio::test(flavor = "current_thread")]
async fn a_kill_at_any_step_ends_on_the_profiles_system() {
    for &(point, healthy) in KILL_POINTS {
        {
            let b = Bench::new();
            if !healthy {
                b.w().unhealthy.insert(sys("s1"));
            }
            b.w().die_at = Some(point.to_string());
            b.push("c1", Ok(sys("s1")));
            assert_eq!(b.run().await, None, "{point}: did not die");
            let exit = b.run().await.expect("the second run finishes");
            b.assert_consistent();
            let state = b.state();
            let deployed = b.w().generations.last() == Some(&sys("s1"));
            // Committed only if the checks passed; a failed commit is remembered.
            if deployed {
                assert!(
                    healthy,
                    "{point}: an unhealthy system became the boot default"
                );
            }
            assert!(
                state
                    .history
                    .iter()
                    .any(|r| r.outcome == Outcome::Interrupted)
                    || point == "build c1",
                "{point}: interruption not recorded"
            );
            // Said in words (issue 22): "while rolling back", never an enum's Debug name.
            if point == "test /sys/s0" {
                let error = state
                    .history
                    .iter()
                    .find(|r| r.outcome == Outcome::Interrupted)
                    .and_then(|r| r.error.clone())
                    .unwrap_or_default();
                assert!(
                    error.contains("stopped while rolling back"),
                    "{point}: {error}"
                );
            }
            if !healthy {
                assert_eq!(exit, Exit::Failed(Kind::Commit), "{point}");
                assert!(state.bad("c1").is_some(), "{point}");
            }
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_orphaned_activation_is_settled_before_recovery() {
    let b = Bench::new();
    b.w().unhealthy.insert(sys("s1"));
    b.w().die_at = Some("test /sys/s1".into());
    b.push("c1", Ok(sys("s1")));
    assert_eq!(b.run().await, None);
    assert!(b.w().orphan.is_some());
    b.run().await.unwrap();
    assert!(b.w().settled >= 1, "recovery did not wait for the orphan");
    b.assert_consistent();
}

#[tokio::test(flavor = "current_thread")]
async fn a_configuration_that_kills_the_agent_is_activated_at_most_twice() {
    let b = Bench::new();
    {
        let mut w = b.w();
        w.die_at = Some("test /sys/s1".into());
        w.die_always = true;
    }
    b.push("c1", Ok(sys("s1")));
    let mut ends = Vec::new();
    for _ in 0..6 {
        ends.push(b.run().await);
    }
    let activations = b.switches().iter().filter(|s| *s == "test /sys/s1").count();
    assert_eq!(activations, 2, "switches: {:?}", b.switches());
    b.assert_consistent();
    let state = b.state();
    let bad = state.bad("c1").expect("marked bad");
    assert!(bad.error.contains("interrupted 2 times"), "{}", bad.error);
    assert!(!bad.error.contains("hint:"), "{}", bad.error);
    let hint = bad.hint.as_deref().unwrap_or_default();
    assert!(hint.contains("kill homelab-agent.service"), "{hint}");
    assert_eq!(ends.last(), Some(&Some(Exit::Ok)), "{ends:?}");
    // One history entry per interrupted activation (issue 22): two activations, two
    // entries, and the second says that it gave the commit up.
    let interrupted: Vec<_> = state
        .history
        .iter()
        .filter(|r| r.outcome == Outcome::Interrupted)
        .collect();
    assert_eq!(interrupted.len(), activations, "{:#?}", state.history);
    let (newest, first) = (
        interrupted[0].error.clone().unwrap_or_default(),
        interrupted[1].error.clone().unwrap_or_default(),
    );
    assert!(
        newest.contains("interrupted 2 times: remembered as bad"),
        "{newest}"
    );
    assert!(!first.contains("remembered as bad"), "{first}");
    assert_ne!(newest, first, "two entries that read as one event");
}

#[tokio::test(flavor = "current_thread")]
async fn the_interruption_is_counted_before_anything_can_fail() {
    let b = Bench::new();
    {
        let mut w = b.w();
        w.die_at = Some("test /sys/s1".into());
        w.die_always = true;
        // Recovery's own switch back fails: the count must still have moved.
        w.failing_switches.insert((sys("s0"), "test"));
    }
    b.push("c1", Ok(sys("s1")));
    assert_eq!(b.run().await, None);
    assert_eq!(b.run().await, Some(Exit::RollbackFailed));
    assert_eq!(b.state().interruptions[0].count, 1);
}

#[tokio::test(flavor = "current_thread")]
async fn an_unverified_system_found_live_is_replaced_by_the_profiles() {
    let b = Bench::new();
    b.w().unhealthy.insert(sys("s1"));
    b.push("c1", Ok(sys("s1")));
    b.run().await;
    // Something switched the bad system in after its run ended.
    b.w().current = Some(sys("s1"));
    b.w().calls.clear();
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.switches(), ["test /sys/s0"]);
    b.assert_consistent();
}

#[tokio::test(flavor = "current_thread")]
async fn a_manual_switch_is_drift_and_left_alone() {
    let b = Bench::new();
    b.push("c1", Ok(sys("s1")));
    b.run().await;
    b.w().current = Some(sys("by-hand"));
    b.w().calls.clear();
    let before = b.state_bytes();
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.w().calls, ["head"], "drift must not switch anything");
    assert_eq!(b.state_bytes(), before);
}

#[tokio::test(flavor = "current_thread")]
async fn operator_rollback_uses_the_same_protocol() {
    let b = Bench::new();
    b.push("c1", Ok(sys("s1")));
    b.run().await;
    b.w().calls.clear();
    let exit = b.agent().rollback().await.unwrap();
    assert_eq!(exit, Exit::Ok);
    assert_eq!(b.switches(), ["test /sys/s0", "boot /sys/s0"]);
    assert!(b.w().calls.contains(&"health".to_string()));
    b.assert_consistent();
    assert_eq!(b.state().history[0].outcome, Outcome::RolledBack);
}

#[tokio::test(flavor = "current_thread")]
async fn an_unhealthy_operator_rollback_returns_to_where_it_was() {
    let b = Bench::new();
    b.push("c1", Ok(sys("s1")));
    b.run().await;
    b.w().unhealthy.insert(sys("s0"));
    let exit = b.agent().rollback().await.unwrap();
    assert_eq!(exit, Exit::Failed(Kind::Commit));
    b.assert_consistent();
    assert_eq!(b.w().current, Some(sys("s1")));
}

/// What a run produced comes back as values (issue 22): its timings in its record, its
/// events from the agent that recorded it, once.
#[tokio::test(flavor = "current_thread")]
async fn a_run_hands_back_its_timings_and_events() {
    let b = Bench::new();
    b.push("c1", Ok(sys("s1")));
    let agent = b.agent_with(
        "name = \"pi1\"\n[[notify.commands]]\ncommand = [\"/bin/true\"]",
        "",
    );
    assert_eq!(agent.run_once().await.unwrap(), Exit::Ok);
    let run = b.state().history[0].clone();
    assert_eq!(run.outcome, Outcome::Deployed);
    assert!(run.build_ms.is_some() && run.health_ms.is_some(), "{run:?}");
    let events = agent.take_events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].outcome, events[0].commit.as_deref()),
        ("deployed", Some("c1"))
    );
    assert!(agent.take_events().is_empty());
    // A run that builds nothing new records no stale timings.
    b.push("c2", Ok(sys("s1")));
    assert_eq!(agent.run_once().await.unwrap(), Exit::Ok);
    let run = b.state().history[0].clone();
    assert_eq!(run.outcome, Outcome::Unchanged);
    assert!(run.build_ms.is_some() && run.health_ms.is_none(), "{run:?}");
    // An operator's rollback, too.
    assert_eq!(agent.rollback().await.unwrap(), Exit::Ok);
    let run = b.state().history[0].clone();
    assert!(run.build_ms.is_none() && run.health_ms.is_some(), "{run:?}");
    let outcomes: Vec<_> = agent.take_events().iter().map(|e| e.outcome).collect();
    assert_eq!(outcomes, ["unchanged", "rolled-back"]);
}

/// The same fields whichever path records a failed activation (issue 22): an operator
/// rollback whose way back fails too keeps its checks and says it did not get back.
#[tokio::test(flavor = "current_thread")]
async fn an_operator_rollback_whose_way_back_fails_records_its_checks_and_rolled_back() {
    let b = Bench::new();
    b.push("c1", Ok(sys("s1")));
    b.run().await;
    b.w().unhealthy.insert(sys("s0"));
    b.w().failing_switches.insert((sys("s1"), "test"));
    let exit = b.agent().rollback().await.unwrap();
    assert_eq!(exit, Exit::RollbackFailed);
    let state = b.state();
    let run = &state.history[0];
    assert_eq!(run.outcome, Outcome::Failed);
    assert_eq!(run.phase, Some(Phase::Health));
    assert_eq!(run.rolled_back, Some(false), "{run:?}");
    assert!(
        !run.checks.is_empty(),
        "the checks that failed are not recorded: {run:?}"
    );
    assert!(
        run.error
            .as_deref()
            .unwrap_or_default()
            .contains("returning to generation 2 failed too"),
        "{run:?}"
    );
    assert_eq!(
        state.rollback_pending.map(|p| p.system).as_deref(),
        Some("/sys/s1")
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_kill_after_the_profile_moved_finishes_the_commit() {
    let b = Bench::new();
    b.w().die_at = Some("boot /sys/s1".into());
    b.push("c1", Ok(sys("s1")));
    assert_eq!(b.run().await, None);
    let state = b.state();
    assert_eq!(
        state.intent.as_ref().map(|i| i.step),
        Some(Step::Committing)
    );
    assert_eq!(b.run().await, Some(Exit::Ok));
    b.assert_consistent();
    assert_eq!(b.w().current, Some(sys("s1")));
    assert_eq!(b.state().deployed.unwrap().system, "/sys/s1");
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_rollback_healed_by_a_reboot_is_forgotten() {
    let b = Bench::new();
    b.w().unhealthy.insert(sys("s1"));
    b.w().failing_switches.insert((sys("s0"), "test"));
    b.push("c1", Ok(sys("s1")));
    assert_eq!(b.run().await, Some(Exit::RollbackFailed));
    // A reboot boots the profile's generation, which never moved.
    b.w().current = Some(sys("s0"));
    b.w().calls.clear();
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert!(b.switches().is_empty(), "{:?}", b.switches());
    b.assert_consistent();
}

#[tokio::test(flavor = "current_thread")]
async fn an_operator_rollback_pins_until_resume() {
    let b = Bench::new();
    b.push("c1", Ok(sys("s1")));
    b.run().await;
    assert_eq!(b.agent().rollback().await.unwrap(), Exit::Ok);
    let pin = b.state().pinned.expect("rollback pins the machine");
    assert_eq!(pin.system, "/sys/s0");
    assert_eq!(pin.from_system, "/sys/s1");
    assert_eq!(pin.from_commit.as_deref(), Some("c1"));
    assert_eq!(pin.from_generation, Some(2));

    // A newer commit: polled, not deployed, not history, no state write.
    b.push("c2", Ok(sys("s2")));
    b.w().calls.clear();
    let before = b.state_bytes();
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.w().calls, ["head"], "a pinned machine fetched or built");
    assert_eq!(
        b.state_bytes(),
        before,
        "a pinned poll wrote the state file"
    );
    let poll = crate::runtime::read(&b.dir.path().join("run")).unwrap();
    assert_eq!(poll.outcome, "pinned");
    assert_eq!(poll.commit.as_deref(), Some("c2"));
    assert_eq!(b.w().current, Some(sys("s0")));

    // resume: the next run follows the branch.
    let was = b.agent().resume().unwrap().expect("it was pinned");
    assert_eq!(was, pin);
    assert!(b.state().pinned.is_none());
    assert_eq!(b.agent().resume().unwrap(), None, "resume twice");
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.w().current, Some(sys("s2")));
    b.assert_consistent();
}

#[tokio::test(flavor = "current_thread")]
async fn resume_redeploys_the_head_that_was_rolled_back_from() {
    let b = Bench::new();
    b.push("c1", Ok(sys("s1")));
    b.run().await;
    b.agent().rollback().await.unwrap();
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.w().current, Some(sys("s0")), "pinned, yet deployed");
    b.agent().resume().unwrap();
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.w().current, Some(sys("s1")));
    assert_eq!(b.state().deployed.unwrap().commit.as_deref(), Some("c1"));
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_operator_rollback_does_not_pin() {
    let b = Bench::new();
    b.push("c1", Ok(sys("s1")));
    b.run().await;
    b.w().unhealthy.insert(sys("s0"));
    b.agent().rollback().await.unwrap();
    assert!(b.state().pinned.is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn a_system_without_the_agent_or_sshd_is_refused_before_activation() {
    use crate::system::reach::Lost;
    let b = Bench::new();
    b.w().losing.push((sys("s1"), vec![Lost::Agent]));
    b.push("c1", Ok(sys("s1")));
    assert_eq!(b.run().await, Some(Exit::Failed(Kind::Commit)));
    assert!(b.switches().is_empty(), "activated: {:?}", b.switches());
    b.assert_consistent();
    let state = b.state();
    let run = &state.history[0];
    assert_eq!(run.outcome, Outcome::Failed);
    assert_eq!(run.phase, Some(crate::state::Phase::Activate));
    assert_eq!(run.rolled_back, Some(false));
    let error = run.error.as_deref().unwrap();
    assert!(
        error.starts_with("commit c1 would remove homelab-agent from pi1: it would never update again; not activated"),
        "{error}"
    );
    assert!(state.bad("c1").is_some(), "a commit failure marks it bad");
    // Not tried again until the branch moves.
    b.w().calls.clear();
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.w().calls, ["head"]);
}

#[tokio::test(flavor = "current_thread")]
async fn the_orphan_guard_can_be_turned_off_for_a_machine_being_retired() {
    use crate::system::reach::Lost;
    let b = Bench::new();
    b.w().losing.push((sys("s1"), vec![Lost::Agent, Lost::Ssh]));
    b.push("c1", Ok(sys("s1")));
    let agent = b.agent_with(
        "name = \"pi1\"\n[activation]\nrequire_agent_and_ssh = false",
        "",
    );
    assert_eq!(agent.run_once().await.unwrap(), Exit::Ok);
    assert_eq!(b.switches(), ["test /sys/s1", "boot /sys/s1"]);
    b.assert_consistent();
}

#[tokio::test(flavor = "current_thread")]
async fn retry_rebuilds_a_failed_head_but_not_a_deployed_one() {
    let b = Bench::new();
    b.push("c1", Ok(sys("s1")));
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert!(b.agent().retry().unwrap().is_empty());
    b.w().calls.clear();
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(
        b.w().calls,
        ["head"],
        "the deployed head was rebuilt after `retry`"
    );

    b.w().unhealthy.insert(sys("s2"));
    b.push("c2", Ok(sys("s2")));
    assert_eq!(b.run().await, Some(Exit::Failed(Kind::Commit)));
    assert_eq!(b.agent().retry().unwrap(), ["c2"]);
    b.w().calls.clear();
    b.run().await;
    assert!(
        b.w().calls.contains(&"build c2".to_string()),
        "{:?}",
        b.w().calls
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_changed_configuration_ends_a_configuration_failures_backoff() {
    let b = Bench::new();
    b.push(
        "c1",
        Err(Failure::new(
            Kind::Configuration,
            "no host pi1 in the flake",
        )),
    );
    let builds = || b.w().calls.iter().filter(|c| *c == "build c1").count();
    assert_eq!(b.run().await, Some(Exit::Failed(Kind::Configuration)));
    // The same configuration: the wait holds.
    assert_eq!(b.run().await, Some(Exit::Failed(Kind::Configuration)));
    assert_eq!(builds(), 1, "rebuilt during the backoff");
    // The operator fixed the configuration ([host] name): built at once.
    let fixed = b.agent_with("name = \"pi1\"\n# fixed", "");
    fixed.run_once().await.unwrap();
    assert_eq!(
        builds(),
        2,
        "the fixed configuration still waited out the backoff"
    );
    // A transient failure's backoff does not end with a configuration edit.
    let b = Bench::new();
    b.push("c1", Err(Failure::new(Kind::Transient, "timed out")));
    b.run().await;
    b.agent_with("name = \"pi1\"\n# edited", "")
        .run_once()
        .await
        .unwrap();
    assert_eq!(b.w().calls.iter().filter(|c| *c == "build c1").count(), 1);
}

/// A bench whose booted system `s0` and new system `k` are real directories: `k` has
/// another kernel, so it needs a reboot (issue 19: `system::reboot_required`).
fn kernel_bench() -> (Bench, PathBuf) {
    let b = Bench::new();
    let d = b.dir.path().to_path_buf();
    let (old, new) = (d.join("store/s0"), d.join("store/k"));
    for (dir, kernel) in [(&old, "k1"), (&new, "k2")] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("kernel"), kernel).unwrap();
    }
    std::os::unix::fs::symlink(&old, d.join("booted")).unwrap();
    {
        let mut w = b.w();
        w.current = Some(old.clone());
        w.generations = vec![old];
    }
    (b, new)
}

#[tokio::test(flavor = "current_thread")]
async fn a_deploy_that_needs_a_reboot_stays_live_and_never_moves_the_boot_default() {
    let (b, k) = kernel_bench();
    b.push("c1", Ok(k.clone()));
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.switches(), [format!("test {}", k.display())]);
    assert!(
        !b.w().calls.iter().any(|c| c.starts_with("set ")),
        "{:?}",
        b.w().calls
    );
    assert_eq!(b.w().profile, Some(1));
    let state = b.state();
    let deployed = state.deployed.unwrap();
    assert_eq!(
        (deployed.system, deployed.generation),
        (k.display().to_string(), None)
    );
    assert_eq!(state.history[0].outcome, Outcome::Deployed);
    assert!(state.intent.is_none());
    // The next poll: up to date, and live-but-not-default is expected, not drift to undo.
    b.w().calls.clear();
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert!(b.switches().is_empty(), "{:?}", b.w().calls);
    assert_eq!(b.w().current.as_ref(), Some(&k));
}

/// A power cut or a person reboots while it waits for its trial: the boot default (the
/// last verified generation) boots, and the next run activates the deployment again.
#[tokio::test(flavor = "current_thread")]
async fn a_reboot_deploy_lost_to_an_unplanned_reboot_is_activated_again() {
    let (b, k) = kernel_bench();
    b.push("c1", Ok(k.clone()));
    assert_eq!(b.run().await, Some(Exit::Ok));
    let s0 = b.w().generations[0].clone();
    b.w().current = Some(s0.clone()); // the reboot
    b.w().calls.clear();
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert!(
        b.w().calls.contains(&"build c1".to_string()),
        "{:?}",
        b.w().calls
    );
    assert_eq!(b.switches(), [format!("test {}", k.display())]);
    assert_eq!(b.w().profile, Some(1));
    assert_eq!(b.w().current.as_ref(), Some(&k));
}

/// The interruption recovery for the new ending: a kill at any step of a reboot deploy
/// ends on the profile's (last verified) system, which never moved.
#[tokio::test(flavor = "current_thread")]
async fn a_kill_during_a_reboot_deploy_ends_on_the_untouched_profile() {
    for point in ["build c1", "test", "health"] {
        let (b, k) = kernel_bench();
        let at = if point == "test" {
            format!("test {}", k.display())
        } else {
            point.to_string()
        };
        b.w().die_at = Some(at);
        b.push("c1", Ok(k.clone()));
        assert_eq!(b.run().await, None, "{point}: did not die");
        b.run().await.expect("the second run finishes");
        // Recovery went back to the profile; the deployment is retried by a later run.
        let w = b.w();
        assert_eq!(w.profile, Some(1), "{point}");
        assert_eq!(w.generations.len(), 1, "{point}: the profile moved");
        assert!(
            !w.calls.iter().any(|c| c.starts_with("boot ")),
            "{point}: {:?}",
            w.calls
        );
        drop(w);
        let state = b.state();
        assert!(
            state.intent.is_none() && state.rollback_pending.is_none(),
            "{point}"
        );
    }
}
