//! The per-host testing branch (deploy/testing.rs) with the fake doors: test activations
//! that never commit, main first, one listing of refs per idle poll, and refusals that
//! are remembered.

use super::*;

/// Main's c1 deployed as /sys/s1 (generation 2); `testing/pi1` watched.
async fn testing_bench() -> Bench {
    let mut b = Bench::new();
    b.source_extra = "testing_branch = \"testing/{host}\"\n".into();
    b.push("c1", Ok(sys("s1")));
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.w().profile, Some(2));
    b.w().calls.clear();
    b.w().verified.clear();
    b
}

fn push_testing(b: &Bench, commit: &str, builds: Result<PathBuf, Failure>) {
    let mut w = b.w();
    w.testing_head = Some(commit.into());
    w.builds.push((commit.into(), builds));
}

#[tokio::test(flavor = "current_thread")]
async fn a_testing_commit_is_test_activated_and_never_the_boot_default() {
    let b = testing_bench().await;
    push_testing(&b, "t1", Ok(sys("t1")));
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.switches(), ["test /sys/t1"], "{:?}", b.w().calls);
    assert!(!b.w().calls.iter().any(|c| c.starts_with("set ")));
    assert_eq!(b.w().profile, Some(2), "the boot default moved");
    assert_eq!(b.w().current, Some(sys("t1")));
    let state = b.state();
    let testing = state.testing.clone().unwrap();
    assert_eq!(testing.branch, "testing/pi1");
    assert_eq!(testing.outcome, Outcome::Tested);
    assert_eq!(testing.system.as_deref(), Some("/sys/t1"));
    assert_eq!(state.history[0].outcome, Outcome::Tested);
    assert!(state.intent.is_none());
    // Main is still what is deployed; the live test is expected, not drift: the next
    // run switches nothing and builds nothing.
    assert_eq!(state.deployed.unwrap().commit.as_deref(), Some("c1"));
    assert_eq!(state.last_handled.as_deref(), Some("c1"));
    b.w().calls.clear();
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert!(b.switches().is_empty(), "{:?}", b.w().calls);
    assert!(!b.w().calls.iter().any(|c| c.starts_with("build")));
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_test_rolls_back_to_the_boot_default_and_is_not_retried() {
    let b = testing_bench().await;
    push_testing(&b, "t1", Ok(sys("t1")));
    b.w().unhealthy.insert(sys("t1"));
    assert_eq!(b.run().await, Some(Exit::Failed(Kind::Commit)));
    assert_eq!(b.switches(), ["test /sys/t1", "test /sys/s1"]);
    b.assert_consistent();
    let state = b.state();
    assert!(state.bad("t1").is_some());
    assert_eq!(state.testing.unwrap().outcome, Outcome::Failed);
    assert_eq!(state.history[0].outcome, Outcome::Failed);
    assert_eq!(state.history[0].rolled_back, Some(true));
    b.w().calls.clear();
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert!(!b.w().calls.iter().any(|c| c.starts_with("build")));
    // `retry` forgets the failure: the same commit is tested again.
    // (`retry` also forgets main's head: the first run finds it unchanged.)
    b.agent().retry().unwrap();
    b.w().unhealthy.clear();
    b.w().calls.clear();
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.switches(), ["test /sys/t1"]);
    assert_eq!(b.state().testing.unwrap().outcome, Outcome::Tested);
}

#[tokio::test(flavor = "current_thread")]
async fn a_new_main_commit_replaces_the_test_and_main_comes_first() {
    let b = testing_bench().await;
    push_testing(&b, "t1", Ok(sys("t1")));
    assert_eq!(b.run().await, Some(Exit::Ok));
    // Both branches move: only main is handled, and it replaces the test.
    b.push("c2", Ok(sys("s2")));
    push_testing(&b, "t2", Ok(sys("t2")));
    b.w().calls.clear();
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.switches(), ["test /sys/s2", "boot /sys/s2"]);
    assert!(!b.w().calls.iter().any(|c| c == "testing head"));
    b.assert_consistent();
    // The next run tests t2 on top of the new main.
    b.w().calls.clear();
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.switches(), ["test /sys/t2"]);
    assert_eq!(b.w().profile, Some(3));
}

#[tokio::test(flavor = "current_thread")]
async fn a_killed_test_is_undone_and_never_committed() {
    for die_at in ["test /sys/t1", "health"] {
        let b = testing_bench().await;
        push_testing(&b, "t1", Ok(sys("t1")));
        b.w().die_at = Some(die_at.into());
        assert_eq!(b.run().await, None, "{die_at}");
        let intent = b.state().intent.expect("intent on disk");
        assert_eq!(intent.kind, crate::state::IntentKind::Test);
        // Recovery: back to the boot default first, recorded interrupted; then the same
        // run tests t1 again (as a killed deployment is tried again), never committing it.
        b.w().calls.clear();
        assert_eq!(b.run().await, Some(Exit::Ok), "{die_at}");
        assert_eq!(
            b.switches(),
            ["test /sys/s1", "test /sys/t1"],
            "{die_at}: {:?}",
            b.w().calls
        );
        assert_eq!(b.w().profile, Some(2), "{die_at}");
        assert!(b.state().intent.is_none());
        assert!(!b
            .w()
            .calls
            .iter()
            .any(|c| c == "boot /sys/t1" || c == "set /sys/t1"));
        let state = b.state();
        assert!(state
            .history
            .iter()
            .any(|r| r.outcome == Outcome::Interrupted && r.commit.as_deref() == Some("t1")));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn without_a_testing_branch_it_is_never_asked_for() {
    let b = Bench::new();
    b.push("c1", Ok(sys("s1")));
    b.w().testing_head = Some("t1".into());
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert!(!b.w().calls.iter().any(|c| c.contains("testing")));
}

#[tokio::test(flavor = "current_thread")]
async fn a_testing_build_that_fails_without_blame_backs_off_and_blames_nothing() {
    let b = testing_bench().await;
    push_testing(
        &b,
        "t1",
        Err(Failure::new(Kind::Transient, "nix build timed out")),
    );
    assert_eq!(b.run().await, Some(Exit::Failed(Kind::Transient)));
    let state = b.state();
    assert!(state.bad("t1").is_none());
    assert!(state.testing.is_none());
    assert_eq!(state.retries.unwrap().commit, "t1");
    // Waiting: not built again, same kind of exit; main is unaffected.
    b.w().calls.clear();
    assert_eq!(b.run().await, Some(Exit::Failed(Kind::Transient)));
    assert!(
        !b.w().calls.iter().any(|c| c.starts_with("build")),
        "{:?}",
        b.w().calls
    );
    assert_eq!(b.w().current, Some(sys("s1")));
    // A new main commit is deployed at once.
    b.push("c2", Ok(sys("s2")));
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.w().profile, Some(3));
}

#[tokio::test(flavor = "current_thread")]
async fn an_idle_poll_with_a_testing_branch_lists_the_remote_once() {
    let b = testing_bench().await;
    // No testing branch on the remote yet, then one that is tested and so handled.
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.w().calls, ["head"], "one listing serves both branches");
    push_testing(&b, "t1", Ok(sys("t1")));
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.w().current, Some(sys("t1")));
    b.w().calls.clear();
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.w().calls, ["head"], "an idle poll asked again");
}

#[tokio::test(flavor = "current_thread")]
async fn a_testing_head_missing_from_the_listing_is_asked_for_apart() {
    let b = testing_bench().await;
    b.w().testing_unlisted = true;
    push_testing(&b, "t1", Ok(sys("t1")));
    assert_eq!(b.run().await, Some(Exit::Ok));
    let calls = b.w().calls.clone();
    assert_eq!(calls[..2], ["head", "testing head"], "{calls:?}");
    assert_eq!(b.state().testing.unwrap().outcome, Outcome::Tested);
}

#[tokio::test(flavor = "current_thread")]
async fn a_healthy_test_plan_ends_tested_without_a_generation() {
    let b = testing_bench().await;
    let agent = b.agent();
    let mut state = b.state();
    let fetched = Fetched {
        commit: "t1".into(),
        subject: "try".into(),
        time: 0,
    };
    let system = sys("t1");
    let plan = agent.plan(crate::state::IntentKind::Test, &fetched, &system);
    let activated = agent.activate(&mut state, plan).await.unwrap();
    assert!(
        activated.health_ms.is_some(),
        "the checks ran: {activated:?}"
    );
    match activated.ending {
        super::super::activate::Ending::Tested { checks } => assert_eq!(checks.len(), 1),
        other => panic!("a healthy test ended {other:?}"),
    }
    assert!(!b.w().calls.iter().any(|c| c.starts_with("set ")));
    assert_eq!(b.w().profile, Some(2));
    // Through the cycle: the run names no generation.
    push_testing(&b, "t2", Ok(sys("t2")));
    assert_eq!(b.run().await, Some(Exit::Ok));
    let run = b.state().history[0].clone();
    assert_eq!(run.outcome, Outcome::Tested);
    assert_eq!(run.generation, None, "a test invented a generation");
}

#[tokio::test(flavor = "current_thread")]
async fn a_refused_testing_head_is_fetched_once_and_a_new_one_is_tried() {
    let b = testing_bench().await;
    push_testing(&b, "t1", Ok(sys("t1")));
    b.w().refuse.insert("t1".into());
    assert_eq!(b.run().await, Some(Exit::Failed(Kind::Commit)));
    assert_eq!(b.w().calls, ["head", "fetch testing"]);
    assert_eq!(b.w().verified, ["t1"]);
    let state = b.state();
    let refused = state
        .testing_refused
        .clone()
        .expect("the refusal is remembered");
    assert_eq!(refused.commit, "t1");
    assert!(refused.error.contains("t1 is not signed"), "{refused:?}");
    assert!(state.refused.is_none(), "main's refusal record was used");
    assert!(state.bad("t1").is_none(), "a refusal is not a bad commit");
    assert_eq!(state.history[0].outcome, Outcome::Failed);
    assert_eq!(state.history[0].phase, Some(crate::state::Phase::Verify));
    let history = state.history.len();
    assert_eq!(b.w().current, Some(sys("s1")));

    // Polled again: refused at once, nothing fetched, checked or written.
    let bytes = b.state_bytes();
    b.w().calls.clear();
    assert_eq!(b.run().await, Some(Exit::Failed(Kind::Commit)));
    assert_eq!(b.w().calls, ["head"]);
    assert_eq!(b.w().verified, ["t1"]);
    assert_eq!(b.state_bytes(), bytes, "a second poll wrote the state");
    assert_eq!(b.state().history.len(), history);

    // The branch moves: the new head is fetched, checked and tested.
    push_testing(&b, "t2", Ok(sys("t2")));
    b.w().calls.clear();
    assert_eq!(b.run().await, Some(Exit::Ok));
    assert_eq!(b.w().verified, ["t1", "t2"]);
    assert_eq!(b.switches(), ["test /sys/t2"]);
    let state = b.state();
    assert!(state.testing_refused.is_none());
    assert_eq!(state.testing.unwrap().commit, "t2");
}

/// After the state file is lost while a test is live (issue 23, item 5), nothing in the
/// state says so, but the live system is not the boot default: main's floor is the boot
/// default's stamp, not the live test's.
#[tokio::test(flavor = "current_thread")]
async fn without_state_a_live_system_that_is_not_the_boot_default_is_no_floor() {
    let b = Bench::new();
    let stamped = |name: &str, rev: &str| {
        let system = b.dir.path().join(name);
        let stamp = system.join(crate::trust::stamp::STAMP);
        std::fs::create_dir_all(stamp.parent().unwrap()).unwrap();
        std::fs::write(stamp, format!("{rev}\n")).unwrap();
        system
    };
    let (main_rev, test_rev) = ("1".repeat(40), "2".repeat(40));
    let boot = stamped("boot", &main_rev);
    let live = stamped("live", &test_rev);
    std::os::unix::fs::symlink(&live, b.dir.path().join("current")).unwrap();
    {
        let mut w = b.w();
        w.generations = vec![boot.clone()];
        w.current = Some(live.clone());
    }
    b.push("c2", Ok(sys("s2")));
    b.run().await;
    let floors = b.w().floors[0].clone();
    assert!(
        floors
            .iter()
            .any(|f| f.commit == main_rev && f.from.starts_with("the boot default's")),
        "{floors:?}"
    );
    assert!(!floors.iter().any(|f| f.commit == test_rev), "{floors:?}");
    // The live system is the boot default: its own stamp is the floor.
    let b = Bench::new();
    let only = stamped("only", &main_rev);
    std::os::unix::fs::symlink(&only, b.dir.path().join("current")).unwrap();
    {
        let mut w = b.w();
        w.generations = vec![only.clone()];
        w.current = Some(only);
    }
    b.push("c2", Ok(sys("s2")));
    b.run().await;
    let floors = b.w().floors[0].clone();
    assert!(
        floors
            .iter()
            .any(|f| f.commit == main_rev && f.from.starts_with("the running system's")),
        "{floors:?}"
    );
}

/// The testing track records what main's does (issue 22): its build and health timings.
#[tokio::test(flavor = "current_thread")]
async fn a_test_records_its_build_and_health_timings_as_a_deployment_does() {
    let b = testing_bench().await;
    push_testing(&b, "t1", Ok(sys("t1")));
    assert_eq!(b.run().await, Some(Exit::Ok));
    let run = b.state().history[0].clone();
    assert_eq!(run.outcome, Outcome::Tested);
    assert!(run.build_ms.is_some(), "{run:?}");
    assert!(run.health_ms.is_some(), "{run:?}");
}
