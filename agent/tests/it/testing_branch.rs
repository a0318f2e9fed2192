//! The per-host testing branch with real git and nix: a commit on `testing/pi1` is
//! activated with `switch-to-configuration test` only (never `boot`, never a profile
//! generation), checked and reported; a failed test rolls back; a new main commit
//! replaces the test; promoting is a merge into main.

use crate::support::{git, git_out, nix_available, Harness};

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
    let mut h = Harness::new();
    h.source_extra = "testing_branch = \"testing/{host}\"\n".into();
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

#[test]
fn a_missing_testing_branch_is_not_an_error() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.source_extra = "testing_branch = \"testing/{host}\"\n".into();
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
        let mut h = Harness::new();
        h.source_extra = "testing_branch = \"testing/{host}\"\n".into();
        let (_, base) = h.bootstrap();
        let boot_default = h.boot_default();
        checkout(&h, "testing/pi1", true);
        h.host("pi1").content = "on test".into();
        h.commit("try something");
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
