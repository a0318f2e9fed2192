use std::path::Path;
use std::time::Duration;

use super::{Ledger, Took};
use crate::state::{Outcome, Phase, Run, State};

/// A ledger over a fresh state directory; `notify` is extra TOML (receivers).
fn ledger(dir: &Path, notify: &str) -> Ledger {
    let d = dir.display();
    let text = format!(
        "[source]\nurl = \"file:///srv/homelab\"\nbranch = \"main\"\n[host]\nname = \"pi1\"\n[paths]\nstate_dir = \"{d}/state\"\nruntime_dir = \"{d}/run\"\n{notify}"
    );
    let settings = crate::config::parse(Path::new("test.toml"), &text).unwrap();
    Ledger::new(&settings)
}

const HOOK: &str = "[[notify.commands]]\ncommand = [\"/bin/true\"]\n";

fn failed(commit: &str) -> Run {
    let mut run = Run::new(Outcome::Failed);
    run.commit = Some(commit.into());
    run.phase = Some(Phase::Health);
    run
}

#[test]
fn a_recorded_run_is_saved_then_its_event_kept_once() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger(dir.path(), HOOK);
    let mut state = State::default();
    ledger.record(&mut state, failed("c1")).unwrap();
    ledger
        .record(&mut state, Run::new(Outcome::Unchanged))
        .unwrap();
    let saved = ledger.load().unwrap();
    assert_eq!(saved.history.len(), 2);
    assert_eq!(saved.history[0].outcome, Outcome::Unchanged);
    let events = ledger.take_events();
    let outcomes: Vec<_> = events.iter().map(|e| e.outcome).collect();
    assert_eq!(outcomes, ["failed", "unchanged"], "oldest first");
    assert_eq!(events[0].commit.as_deref(), Some("c1"));
    assert_eq!(events[0].host, "pi1");
    assert!(ledger.take_events().is_empty(), "taken twice");
}

#[test]
fn a_run_that_could_not_be_saved_is_not_told() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger(dir.path(), HOOK);
    // The state directory is a file: the write fails.
    std::fs::write(dir.path().join("state"), b"").unwrap();
    let mut state = State::default();
    let f = ledger.record(&mut state, failed("c1")).unwrap_err();
    assert!(f.message.contains("state"), "{f}");
    assert!(
        ledger.take_events().is_empty(),
        "told a run the state has not"
    );
}

#[test]
fn no_receiver_keeps_no_event_and_a_tested_run_is_never_told() {
    let dir = tempfile::tempdir().unwrap();
    let quiet = ledger(dir.path(), "");
    let mut state = State::default();
    quiet.record(&mut state, failed("c1")).unwrap();
    assert!(quiet.take_events().is_empty());
    let told = ledger(dir.path(), HOOK);
    told.record(&mut state, Run::new(Outcome::Tested)).unwrap();
    assert!(told.take_events().is_empty(), "`tested` is no event");
}

#[test]
fn deployments_pending_rollbacks_and_bad_commits_are_made_here() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger(dir.path(), "");
    let mut state = State::default();
    ledger.deployed(
        &mut state,
        Some("c1".into()),
        Some("s".into()),
        "/sys/a",
        None,
    );
    ledger.promoted(&mut state, "/sys/other", 7);
    assert_eq!(state.deployed.as_ref().unwrap().generation, None);
    ledger.promoted(&mut state, "/sys/a", 7);
    ledger.same_system(&mut state, Path::new("/sys/a"), "c2", "newer");
    let d = state.deployed.clone().unwrap();
    assert_eq!(
        (
            d.commit.as_deref(),
            d.subject.as_deref(),
            d.system.as_str(),
            d.generation
        ),
        (Some("c2"), Some("newer"), "/sys/a", Some(7))
    );
    assert!(crate::state::now().since(d.at) < std::time::Duration::from_secs(60));
    let why = crate::failure::Failure::new(crate::failure::Kind::Environment, "switch test failed")
        .with_hint("reboot into it");
    ledger.rollback_pending(&mut state, Path::new("/sys/b"), &why);
    let p = state.rollback_pending.clone().unwrap();
    assert_eq!(
        (p.system.as_str(), p.reason.as_str(), p.hint.as_deref()),
        ("/sys/b", "switch test failed", Some("reboot into it"))
    );
    ledger.mark_bad(&mut state, "c3", Phase::Boot, "no", Some("/sys/c"));
    let bad = state.bad("c3").unwrap();
    assert_eq!(
        (bad.phase, bad.system.as_deref()),
        (Phase::Boot, Some("/sys/c"))
    );
}

#[test]
fn timings_are_whole_milliseconds_set_on_the_run() {
    let mut run = Run::new(Outcome::Deployed);
    Took::new(Some(Duration::from_micros(1_500)), None).on(&mut run);
    assert_eq!((run.build_ms, run.health_ms), (Some(1), None));
    Took::new(None, Some(Duration::from_secs(2))).on(&mut run);
    assert_eq!((run.build_ms, run.health_ms), (None, Some(2000)));
}

#[test]
fn a_failed_boot_is_blamed_on_the_commit_its_deployment_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger(dir.path(), HOOK);
    let mut state = State::default();
    // /sys/a deployed from c1 (history only); /sys/b from c2 (`deployed`).
    let mut a = Run::new(Outcome::Deployed);
    (a.commit, a.subject, a.system) =
        (Some("c1".into()), Some("one".into()), Some("/sys/a".into()));
    ledger.record(&mut state, a).unwrap();
    ledger.deployed(
        &mut state,
        Some("c2".into()),
        Some("two".into()),
        "/sys/b",
        None,
    );
    ledger.save(&state).unwrap();
    ledger.take_events();
    let mut run = Run::new(Outcome::Failed);
    run.phase = Some(Phase::Health);
    ledger
        .failed_boot(
            "/sys/b",
            Path::new("/sys/a"),
            Some(1),
            run,
            "the trial failed",
        )
        .unwrap();
    let st = ledger.load().unwrap();
    let r = &st.history[0];
    assert_eq!(
        (
            r.commit.as_deref(),
            r.subject.as_deref(),
            r.system.as_deref()
        ),
        (Some("c2"), Some("two"), Some("/sys/b"))
    );
    assert_eq!(st.bad("c2").unwrap().phase, Phase::Health);
    let d = st.deployed.unwrap();
    assert_eq!(
        (d.commit.as_deref(), d.system.as_str(), d.generation),
        (Some("c1"), "/sys/a", Some(1))
    );
    assert_eq!(ledger.take_events()[0].outcome, "failed");
}
