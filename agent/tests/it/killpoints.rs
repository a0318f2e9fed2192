//! Crash recovery: the agent is SIGKILLed at each step of the activation protocol, then
//! started again. Afterwards the machine must be on a verified generation (the current
//! system is the profile's), the state file parses, no intent is left, history records
//! the interruption, and nothing the agent started is still running.

use crate::support::{base, nix_available, Harness};

/// Kills the agent at `point` during the deployment of a new commit, restarts it, and
/// checks the invariants. Returns the harness and the old and new systems.
#[cfg(feature = "failpoints")]
fn kill_at(point: &str, healthy: bool) -> (Harness, std::path::PathBuf) {
    let mut h = Harness::new();
    let (_, old) = h.bootstrap();
    h.host("pi1").content = "new".into();
    h.host("pi1").healthy = healthy;
    h.commit("new");
    let mut cmd = h.command(&["run", "--once"]);
    cmd.env("HOMELAB_AGENT_FAILPOINTS", point);
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        None,
        "{point}: the agent should have been killed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("failpoint {point}")));

    let run = h.run_once();
    assert!(
        run.stderr().contains("interrupted"),
        "{point}: {}",
        run.stderr()
    );
    assert_invariants(&h, point);
    (h, old)
}

fn assert_invariants(h: &Harness, point: &str) {
    assert_eq!(
        h.current_system(),
        h.profile_system(),
        "{point}: current system is not the profile's generation"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.path("state/state.json")).unwrap()).unwrap();
    assert!(
        state["intent"].is_null(),
        "{point}: an intent was left: {state}"
    );
    let history = h.history();
    assert!(
        history.iter().any(|r| r["outcome"] == "interrupted"),
        "{point}: no interrupted run in history: {history:?}"
    );
    assert!(h.status()["in_progress"].is_null());
}

#[cfg(feature = "failpoints")]
#[test]
fn killed_before_the_profile_moves_is_undone_then_redeployed() {
    if !nix_available() {
        return;
    }
    for point in [
        "after_intent",
        "before_switch",
        "after_activate",
        "mid_health",
        "after_health",
        "before_profile_set",
    ] {
        let (h, old) = kill_at(point, true);
        let new = h.current_system().unwrap();
        assert_ne!(
            new, old,
            "{point}: the retried deployment should have gone through"
        );
        assert_eq!(h.profile_generation(), Some(2), "{point}");
        let history = h.history();
        assert_eq!(history[0]["outcome"], "deployed", "{point}: {history:?}");
        assert_eq!(history[1]["outcome"], "interrupted", "{point}: {history:?}");
    }
}

#[cfg(feature = "failpoints")]
#[test]
fn killed_after_the_profile_moved_is_finished_not_undone() {
    if !nix_available() {
        return;
    }
    for point in ["after_profile_set", "after_boot"] {
        let (h, old) = kill_at(point, true);
        let new = h.current_system().unwrap();
        assert_ne!(new, old, "{point}");
        assert_eq!(
            h.profile_generation(),
            Some(2),
            "{point}: no duplicate generation"
        );
        assert_eq!(
            h.boot_default().as_deref(),
            Some(&*new.display().to_string()),
            "{point}: boot entry"
        );
        let s = h.status();
        assert_eq!(
            s["deployed"]["system"],
            new.display().to_string(),
            "{point}"
        );
        // The finished deployment is not activated a second time by a later run.
        h.clear_stc_log();
        h.run_once().expect(0);
        assert!(h.stc_log().is_empty(), "{point}: {:?}", h.stc_log());
    }
}

#[cfg(feature = "failpoints")]
#[test]
fn killed_mid_rollback_ends_on_the_old_system() {
    if !nix_available() {
        return;
    }
    let (h, old) = kill_at("mid_rollback", false);
    assert_eq!(h.current_system().as_deref(), Some(old.as_path()));
    assert_eq!(h.profile_generation(), Some(1));
    assert_eq!(
        h.boot_default().as_deref(),
        Some(&*old.display().to_string())
    );
}

#[test]
fn killed_by_its_own_activation_recovers_and_retries_once() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    let (_, old) = h.bootstrap();
    h.host("pi1").content = "new".into();
    h.host("pi1").mode = "kill-agent-once".into();
    h.commit("restarts the agent");
    let first = h.run_once();
    assert_eq!(
        first.code(),
        -1,
        "the fake switch should have killed the agent: {}",
        first.stderr()
    );
    // The agent died, the switch (now an orphan) finishes: the unverified system is live,
    // not booted.
    for _ in 0..50 {
        if h.current_system().as_deref() != Some(old.as_path()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_ne!(h.current_system().as_deref(), Some(old.as_path()));
    assert_eq!(h.profile_generation(), Some(1));

    h.run_once().expect(0);
    assert_invariants(&h, "kill-agent-once");
    let new = h.current_system().unwrap();
    assert_ne!(new, old);
    assert_eq!(h.profile_generation(), Some(2));
    let log = h.stc_log();
    assert_eq!(
        log[1],
        (base(&old), "test".into()),
        "recovery must re-activate the profile's system first: {log:?}"
    );
}

#[test]
fn a_config_that_always_kills_the_agent_is_marked_bad() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    let (_, old) = h.bootstrap();
    h.host("pi1").content = "new".into();
    h.host("pi1").mode = "kill-agent-always".into();
    let bad = h.commit("kills the agent every time");
    for _ in 0..2 {
        assert_eq!(h.run_once().code(), -1);
    }
    h.run_once().expect(0);
    assert_invariants(&h, "kill-agent-always");
    assert_eq!(h.current_system().as_deref(), Some(old.as_path()));
    let s = h.status();
    assert_eq!(s["bad_commit"]["commit"], bad.as_str());
    assert!(
        s["bad_commit"]["error"]
            .as_str()
            .unwrap()
            .contains("interrupted 2 times"),
        "{s}"
    );
    let activations = h.stc_log().len();
    for _ in 0..3 {
        h.run_once().expect(0);
    }
    assert_eq!(
        h.stc_log().len(),
        activations,
        "a commit marked bad was activated again"
    );
}
