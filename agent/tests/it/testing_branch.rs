//! The per-host testing branch with real git and nix: a commit on `testing/pi1` is
//! activated with `switch-to-configuration test` only (never `boot`, never a profile
//! generation), checked and reported; a failed test rolls back; a new main commit
//! replaces the test; promoting is a merge into main.

use std::path::PathBuf;

use crate::support::servers::{ssh_keygen, GitDaemon};
use crate::support::{git, git_out, nix_available, require_that, Harness};

const WATCH: &str = "testing_branch = \"testing/{host}\"\n";

/// A harness whose agent watches `testing/pi1`.
fn watching() -> Harness {
    let mut h = Harness::new();
    h.source_extra = WATCH.into();
    h
}

fn checkout(h: &Harness, branch: &str, create: bool) {
    if create {
        git(&h.repo, &["checkout", "-q", "-b", branch]);
    } else {
        git(&h.repo, &["checkout", "-q", branch]);
    }
}

#[test]
fn a_testing_branch_is_test_activated_reported_and_replaced_by_main() {
    if !nix_available() {
        return;
    }
    let mut h = watching();
    let (_, base) = h.bootstrap();
    let boot_default = h.boot_default();

    // 1. A healthy commit on testing/pi1: `test` only.
    checkout(&h, "testing/pi1", true);
    let t1 = h.deploy("on test", "try something");
    let log = h.stc_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].1, "test");
    let tested = h.current_system().unwrap();
    assert_ne!(tested, base);
    assert_eq!(
        h.profile_generation(),
        Some(1),
        "a test became a generation"
    );
    assert_eq!(h.profile_system(), Some(base.clone()));
    assert_eq!(
        h.boot_default(),
        boot_default,
        "a test became the boot default"
    );
    let s = h.status();
    assert_eq!(s["testing"]["branch"], "testing/pi1");
    assert_eq!(s["testing"]["commit"], t1.as_str());
    assert_eq!(s["testing"]["outcome"], "tested");
    assert_eq!(s["testing"]["live"], true, "{s}");
    assert_eq!(s["last_run"]["outcome"], "tested");
    assert_eq!(s["head"]["status"], "deployed", "main's head: {s}");
    assert!(s["attention"].as_array().unwrap().is_empty(), "{s}");
    let human = h.agent(&["status"]).stdout();
    assert!(
        human.contains("testing:") && human.contains("tested on testing/pi1: live now"),
        "{human}"
    );
    // Nothing new: nothing built, nothing switched, the test stays live.
    let builds = h.nix_builds();
    h.clear_stc_log();
    h.run_once().expect(0);
    assert_eq!(h.nix_builds(), builds);
    assert!(h.stc_log().is_empty());
    assert_eq!(h.current_system(), Some(tested.clone()));

    // 2. An unhealthy commit on testing/pi1: rolled back to the boot default, not retried.
    h.host("pi1").healthy = false;
    h.host("pi1").content = "broken test".into();
    let t2 = h.commit("break it");
    h.run_once().expect(1);
    assert_eq!(h.current_system(), Some(base.clone()));
    assert_eq!(h.profile_generation(), Some(1));
    let s = h.status();
    assert_eq!(s["testing"]["commit"], t2.as_str());
    assert_eq!(s["testing"]["outcome"], "failed");
    assert_eq!(s["last_run"]["rolled_back"], true);
    let builds = h.nix_builds();
    h.run_once().expect(0);
    assert_eq!(h.nix_builds(), builds, "a failed test was built again");

    // 3. A healthy test again, then a new main commit: main is deployed (boot default),
    //    the test is gone.
    h.host("pi1").healthy = true;
    h.host("pi1").content = "fixed test".into();
    h.commit("fix it");
    h.run_once().expect(0);
    assert_eq!(h.status()["testing"]["outcome"], "tested");
    checkout(&h, "main", false);
    h.host("pi1").content = "main v2".into();
    let c2 = h.commit("main moves");
    h.clear_stc_log();
    h.run_once().expect(0);
    let actions: Vec<String> = h.stc_log().into_iter().map(|(_, a)| a).collect();
    assert_eq!(actions, ["test", "boot"]);
    assert_eq!(h.profile_generation(), Some(2));
    let s = h.status();
    assert_eq!(s["deployed"]["commit"], c2.as_str());
    assert_eq!(s["testing"]["live"], false, "{s}");

    // 4. Promote: merge testing/pi1 into main; the agent deploys main as usual.
    git(
        &h.repo,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.org",
            "merge",
            "-q",
            "-X",
            "theirs",
            "-m",
            "promote testing/pi1",
            "testing/pi1",
        ],
    );
    let merged = git_out(&h.repo, &["rev-parse", "HEAD"]);
    h.run_once().expect(0);
    let s = h.status();
    assert_eq!(s["deployed"]["commit"], merged.as_str());
    assert_eq!(h.profile_generation(), Some(3));
}

/// With the version stamp on (modules/version.nix always stamps a real system), a live
/// test runs a system stamped with the testing commit; main's next commit, which does not
/// contain it, is deployed: the downgrade floor is main's (the boot default's stamp and
/// the deployed commit), never the test's.
#[test]
fn a_live_stamped_test_is_no_downgrade_floor_for_main() {
    if !nix_available() {
        return;
    }
    let mut h = watching();
    h.host("pi1").stamp = true;
    h.bootstrap();
    checkout(&h, "testing/pi1", true);
    let t1 = h.deploy("on test", "try something");
    assert_eq!(h.status()["testing"]["live"], true);
    let stamp = h
        .current_system()
        .unwrap()
        .join("etc/homelab-agent/configuration-revision");
    assert_eq!(std::fs::read_to_string(&stamp).unwrap().trim(), t1);
    checkout(&h, "main", false);
    h.host("pi1").content = "main v2".into();
    let c2 = h.commit("main moves");
    let run = h.run_once();
    run.expect(0);
    let s = h.status();
    assert_eq!(s["deployed"]["commit"], c2.as_str(), "{s}");
    assert!(s["refused"].is_null(), "{s}");
}

/// The same after the state file is lost while the test is live (issue 23, item 5):
/// nothing says the live system is a test any more, but it is not the boot default, so
/// the floor is the boot default's stamp, not the live test's.
#[test]
fn after_state_loss_a_live_test_is_still_no_downgrade_floor_for_main() {
    if !nix_available() {
        return;
    }
    let mut h = watching();
    h.host("pi1").stamp = true;
    let (c1, _) = h.bootstrap();
    checkout(&h, "testing/pi1", true);
    let t1 = h.deploy("on test", "try something");
    assert_eq!(h.status()["testing"]["live"], true);
    std::fs::remove_file(h.path("state/state.json")).unwrap();
    checkout(&h, "main", false);
    h.host("pi1").content = "main v2".into();
    let c2 = h.commit("main moves");
    let run = h.run_once();
    run.expect(0);
    let s = h.status();
    assert_eq!(s["deployed"]["commit"], c2.as_str(), "{s}");
    assert!(s["refused"].is_null(), "{s}");
    assert_ne!(t1, c1);
    // A real downgrade is still refused: main reset below the boot default's stamp.
    crate::support::git(&h.repo, &["reset", "-q", "--hard", &c1]);
    h.host("pi1").content = "old".into();
    let c3 = h.commit("below the floor");
    let run = h.run_once();
    run.expect(1);
    let s = h.status();
    assert_eq!(s["refused"]["commit"], c3.as_str(), "{s}");
    assert_eq!(s["refused"]["reason"], "downgrade", "{s}");
}

#[test]
fn a_missing_testing_branch_is_not_an_error() {
    if !nix_available() {
        return;
    }
    let mut h = watching();
    h.bootstrap();
    h.run_once().expect(0);
    let s = h.status();
    assert!(s["testing"].is_null(), "{s}");
    assert_eq!(s["last_run"]["outcome"], "up-to-date");
}

/// Killed (SIGKILL) in the middle of a test activation: the next run brings the machine
/// back to the boot default first (recorded as interrupted), then tests the commit again;
/// the profile and boot default never move.
#[cfg(feature = "failpoints")]
#[test]
fn a_killed_test_activation_is_undone_and_never_committed() {
    if !nix_available() {
        return;
    }
    for point in ["after_activate", "after_health"] {
        let mut h = watching();
        let (_, base) = h.bootstrap();
        let boot_default = h.boot_default();
        h.host("pi1").content = "on test".into();
        commit_on_testing(&h, "try something");
        let mut cmd = h.command(&["run", "--once"]);
        cmd.env("HOMELAB_AGENT_FAILPOINTS", point);
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), None, "{point}: not killed");
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(h.path("state/state.json")).unwrap()).unwrap();
        assert_eq!(state["intent"]["kind"], "test", "{point}: {state}");

        h.clear_stc_log();
        let run = h.run_once();
        run.expect(0);
        assert!(
            run.stderr().contains("interrupted"),
            "{point}: {}",
            run.stderr()
        );
        let log = h.stc_log();
        assert_eq!(
            log[0],
            (crate::support::base(&base), "test".to_string()),
            "{point}: {log:?}"
        );
        assert!(log.iter().all(|(_, a)| a == "test"), "{point}: {log:?}");
        assert_eq!(h.profile_generation(), Some(1), "{point}");
        assert_eq!(h.boot_default(), boot_default, "{point}");
        assert!(h.history().iter().any(|r| r["outcome"] == "interrupted"));
        assert_eq!(h.status()["testing"]["live"], true, "{point}");
    }
}

/// `git daemon --verbose` serving the harness's repository (its work tree): its log has
/// one "Request upload-pack" line per connection that lists refs or fetches.
struct Served {
    _daemon: GitDaemon,
    log: PathBuf,
}

impl Served {
    fn start(h: &mut Harness) -> Served {
        let log = h.path("git-daemon.log");
        let daemon = GitDaemon::start_logged(h.repo.parent().unwrap(), &log);
        h.url = daemon.url("homelab");
        Served {
            _daemon: daemon,
            log,
        }
    }

    fn requests(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("Request upload-pack")
            .count()
    }

    /// `run --once` expecting `code`: its stderr and how many git requests it made.
    fn run_once(&self, h: &Harness, code: i32) -> (String, usize) {
        let before = self.requests();
        let run = h.run_once();
        run.expect(code);
        (run.stderr(), self.requests() - before)
    }
}

/// A commit on `testing/pi1` (created from main when missing), then back to main.
fn commit_on_testing(h: &Harness, message: &str) -> String {
    let exists = git_out(&h.repo, &["branch", "--list", "testing/pi1"]);
    checkout(h, "testing/pi1", exists.is_empty());
    let commit = h.commit(message);
    checkout(h, "main", false);
    commit
}

/// A poll that finds nothing new on main and nothing new on the testing branch costs
/// one round trip to the remote: main's head and the testing branch's come from the
/// same listing of refs (by `run --once` and by the daemon's git child alike).
#[test]
fn an_idle_poll_with_a_testing_branch_is_one_round_trip() {
    if !nix_available() {
        return;
    }
    let mut h = watching();
    let served = Served::start(&mut h);
    h.bootstrap();
    // No testing branch on the remote yet.
    let (err, requests) = served.run_once(&h, 0);
    assert_eq!(
        requests, 1,
        "an idle poll without the testing branch: {err}"
    );

    h.host("pi1").content = "on test".into();
    let t1 = commit_on_testing(&h, "try something");
    let (err, requests) = served.run_once(&h, 0);
    assert_eq!(requests, 2, "poll and fetch of the testing branch: {err}");
    assert_eq!(h.status()["testing"]["commit"], t1.as_str(), "{err}");
    for _ in 0..2 {
        let (err, requests) = served.run_once(&h, 0);
        assert_eq!(requests, 1, "an idle poll listed the remote again: {err}");
    }

    // The daemon's git child answers both heads from its one listing.
    h.host("pi1").content = "on test 2".into();
    let t2 = commit_on_testing(&h, "try again");
    let before = served.requests();
    let daemon = crate::daemon_git::start_daemon(&mut h);
    let file = h.path("runtime/last-poll.json");
    let first = crate::daemon_git::cycle_after(&file, None);
    let tested = served.requests();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    crate::daemon_git::cycle_after(&file, Some(first));
    let err = crate::daemon_git::stop(daemon);
    assert_eq!(h.status()["testing"]["commit"], t2.as_str(), "{err}");
    assert_eq!(tested - before, 2, "the daemon's test of t2: {err}");
    assert_eq!(
        served.requests() - tested,
        1,
        "the daemon's idle poll: {err}"
    );
}

/// A testing-branch head the trust checks refuse is fetched and checked once: later
/// polls neither fetch it nor log the refusal again, and write nothing. A new commit on
/// the branch is tried; so is the same head once its key is allowed.
#[test]
fn a_refused_testing_head_is_fetched_once() {
    let ssh = std::process::Command::new("ssh-keygen").arg("-?").output();
    if !nix_available() || !require_that("ssh-keygen", ssh.is_ok()) {
        return;
    }
    let mut h = Harness::new();
    std::fs::create_dir_all(h.path("keys")).unwrap();
    let alice = h.path("keys/alice");
    let alice_pub = ssh_keygen(&alice);
    let mallory = h.path("keys/mallory");
    let mallory_pub = ssh_keygen(&mallory);
    let signer = |public: &str| {
        let key: Vec<&str> = public.split_whitespace().take(2).collect();
        format!("t@example.org {}\n", key.join(" "))
    };
    let allowed = h.path("keys/allowed_signers");
    std::fs::write(&allowed, signer(&alice_pub)).unwrap();
    h.source_extra = format!(
        "{WATCH}verify = \"ssh\"\nallowed_signers_file = \"{}\"\n",
        allowed.display()
    );
    let repo = h.repo.clone();
    let sign_with = |key: &std::path::Path| {
        git(&repo, &["config", "gpg.format", "ssh"]);
        git(&repo, &["config", "commit.gpgsign", "true"]);
        git(
            &repo,
            &["config", "user.signingkey", &key.display().to_string()],
        );
    };
    sign_with(&alice);
    let served = Served::start(&mut h);
    h.bootstrap();
    let builds = h.nix_builds();

    // Signed by a key that is not allowed: fetched, checked, refused, recorded once.
    sign_with(&mallory);
    h.host("pi1").content = "on test".into();
    let t1 = commit_on_testing(&h, "signed by mallory");
    let (err, requests) = served.run_once(&h, 1);
    assert_eq!(requests, 2, "poll and fetch: {err}");
    assert_eq!(
        err.matches("is signed by a key that no entry of").count(),
        1,
        "{err}"
    );
    assert_eq!(h.nix_builds(), builds, "a refused head reached nix");
    let history = h.history();
    assert_eq!(history[0]["outcome"], "failed");
    assert_eq!(history[0]["phase"], "verify");
    assert_eq!(history[0]["commit"], t1.as_str());
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.path("state/state.json")).unwrap()).unwrap();
    assert_eq!(state["testing_refused"]["commit"], t1.as_str(), "{state:#}");
    assert!(
        state["refused"].is_null(),
        "main's refusal record: {state:#}"
    );

    // Polled again: one request (the listing), no fetch, no check, nothing written.
    let snapshot = h.state_snapshot();
    std::thread::sleep(std::time::Duration::from_millis(1100)); // mtime granularity
    let (err, requests) = served.run_once(&h, 1);
    assert_eq!(requests, 1, "the refused head was fetched again: {err}");
    assert!(!err.contains("is signed by a key"), "refused again: {err}");
    assert!(err.contains("was refused at"), "{err}");
    assert_eq!(h.state_snapshot(), snapshot, "a second poll wrote state");
    assert_eq!(
        h.history().len(),
        history.len(),
        "a refusal is recorded once"
    );
    assert_eq!(h.status()["head"]["status"], "deployed", "main's head");

    // A new commit on the branch, signed by alice: fetched, checked and tested.
    sign_with(&alice);
    h.host("pi1").content = "on test, signed".into();
    let t2 = commit_on_testing(&h, "signed by alice");
    let (err, requests) = served.run_once(&h, 0);
    assert_eq!(requests, 2, "{err}");
    let s = h.status();
    assert_eq!(s["testing"]["commit"], t2.as_str(), "{s:#}\n{err}");
    assert_eq!(s["testing"]["outcome"], "tested");

    // Mallory again, then allowed: the same head is checked again and tested.
    sign_with(&mallory);
    h.host("pi1").content = "on test, mallory".into();
    let t3 = commit_on_testing(&h, "mallory again");
    served.run_once(&h, 1);
    std::fs::write(&allowed, signer(&alice_pub) + &signer(&mallory_pub)).unwrap();
    let (err, requests) = served.run_once(&h, 0);
    assert_eq!(requests, 2, "{err}");
    assert_eq!(h.status()["testing"]["commit"], t3.as_str(), "{err}");
}
