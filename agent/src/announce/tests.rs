use super::*;
use crate::state::{Phase, RollbackPending};

fn run(outcome: Outcome) -> Run {
    let mut run = Run::new(outcome);
    run.commit = Some("0123456789abcdef0123456789abcdef01234567".into());
    run.subject = Some("bump nixpkgs".into());
    run
}

#[test]
fn a_deployment_says_what_where_and_which_generation() {
    let mut r = run(Outcome::Deployed);
    r.generation = Some(7);
    let e = Event::of(&r, "pi1", &State::default());
    assert_eq!(
        e.message,
        "pi1: deployed 0123456789ab (bump nixpkgs) as generation 7"
    );
    assert!(!e.needs_attention);
    assert!(e.matches(&["deployed".into()]));
    assert!(!e.matches(&["failed".into(), "needs-attention".into()]));
}

#[test]
fn a_failed_rollback_needs_attention() {
    let mut r = run(Outcome::Failed);
    r.phase = Some(Phase::Health);
    r.rolled_back = Some(false);
    r.error = Some("unit nginx failed\nmore".into());
    let state = State {
        rollback_pending: Some(RollbackPending {
            system: "/nix/store/x".into(),
            reason: "r".into(),
            since: "2026-11-24T12:00:00Z".into(),
            hint: None,
        }),
        ..State::default()
    };
    let e = Event::of(&r, "pi1", &state);
    assert!(e.needs_attention);
    assert!(e.matches(&["needs-attention".into()]));
    assert!(e.matches(&["failed".into()]));
    assert_eq!(
        e.message,
        "pi1: failed 0123456789ab (bump nixpkgs) in health; ROLLBACK FAILED: unit nginx failed"
    );
}

#[test]
fn the_json_document_is_versioned_and_complete() {
    let e = Event::of(&run(Outcome::Deployed), "pi1", &State::default());
    let v: serde_json::Value = serde_json::to_value(&e).unwrap();
    assert_eq!(v["schema"], "homelab-agent.notification");
    assert_eq!(v["version"], 1);
    assert_eq!(v["outcome"], "deployed");
    for key in [
        "needs_attention",
        "host",
        "at",
        "commit",
        "subject",
        "generation",
        "system",
        "phase",
        "rolled_back",
        "error",
        "hint",
        "duration_ms",
        "from_commit",
        "from_generation",
        "message",
    ] {
        assert!(v.get(key).is_some(), "{key} missing");
    }
}

#[test]
fn a_headers_file_is_name_value_lines_and_a_bad_line_is_named() {
    let ok = webhook::parse_headers("# comment\n\nX-Token: s3cret\nCache: no\n").unwrap();
    assert_eq!(ok.len(), 2);
    assert_eq!(ok[0].0.as_str(), "x-token");
    assert!(ok[0].1.is_sensitive());
    assert_eq!(webhook::parse_headers("X-A: 1\nno colon here\n"), Err(2));
    assert_eq!(webhook::parse_headers("bad name: 1\n"), Err(1));
}

#[test]
fn only_the_host_of_a_webhook_is_ever_logged() {
    assert_eq!(
        webhook::host_of("https://ntfy.sh/secret-topic?x=1"),
        "ntfy.sh"
    );
    assert_eq!(webhook::host_of("http://127.0.0.1:9/x"), "127.0.0.1:9");
}

#[test]
fn a_hook_gets_the_outcome_in_its_environment() {
    let mut r = run(Outcome::Deployed);
    r.generation = Some(3);
    let env = hook::environment(&Event::of(&r, "pi1", &State::default()));
    let get = |k: &str| env.iter().find(|(n, _)| *n == k).unwrap().1.clone();
    assert_eq!(get("HOMELAB_AGENT_OUTCOME"), "deployed");
    assert_eq!(get("HOMELAB_AGENT_HOST"), "pi1");
    assert_eq!(get("HOMELAB_AGENT_GENERATION"), "3");
    assert_eq!(
        get("HOMELAB_AGENT_COMMIT"),
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert!(get("HOMELAB_AGENT_MESSAGE").starts_with("pi1: deployed"));
}

#[test]
fn a_healthy_test_is_no_event_and_a_failed_one_is() {
    let tested = Event::of(&run(Outcome::Tested), "pi1", &State::default());
    assert!(!tested.notifiable());
    assert!(Event::of(&run(Outcome::Failed), "pi1", &State::default()).notifiable());
    assert!(Event::of(&run(Outcome::Deployed), "pi1", &State::default()).notifiable());
}

/// Issue 23 item 11: an operator's rollback names what it rolled back from (the pin it
/// made) and to; the hook gets HOMELAB_AGENT_ROLLED_BACK and the "from" facts.
#[test]
fn an_operator_rollback_says_from_what_to_what() {
    let mut r = run(Outcome::RolledBack);
    r.commit = Some("aaaaaaaaaaaabbbbbbbbbbbbbbbbbbbbbbbbbbbb".into());
    r.subject = None;
    r.generation = Some(4);
    let state = State {
        pinned: Some(crate::state::Pinned {
            since: "2026-11-24T12:00:00Z".into(),
            system: "/nix/store/old".into(),
            generation: Some(4),
            from_system: "/nix/store/new".into(),
            from_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            from_generation: Some(3),
        }),
        ..State::default()
    };
    let e = Event::of(&r, "pi1", &state);
    assert_eq!(
        e.message,
        "pi1: rolled back from 0123456789ab (generation 3) to generation 4 (aaaaaaaaaaaa)"
    );
    let v: serde_json::Value = serde_json::to_value(&e).unwrap();
    assert_eq!(v["from_commit"], "0123456789abcdef0123456789abcdef01234567");
    assert_eq!(v["from_generation"], 3);
    let env = hook::environment(&e);
    let get = |k: &str| env.iter().find(|(n, _)| *n == k).unwrap().1.clone();
    assert_eq!(get("HOMELAB_AGENT_FROM_GENERATION"), "3");
    assert_eq!(get("HOMELAB_AGENT_ROLLED_BACK"), "");

    // A failed deployment that was restored: 1; one that could not be: 0.
    let mut f = run(Outcome::Failed);
    f.rolled_back = Some(true);
    let env = hook::environment(&Event::of(&f, "pi1", &State::default()));
    assert!(env.contains(&("HOMELAB_AGENT_ROLLED_BACK", "1".into())));
    f.rolled_back = Some(false);
    let env = hook::environment(&Event::of(&f, "pi1", &State::default()));
    assert!(env.contains(&("HOMELAB_AGENT_ROLLED_BACK", "0".into())));
}

#[test]
fn an_interruption_names_the_commit_it_was_deploying() {
    let mut r = run(Outcome::Interrupted);
    r.rolled_back = Some(true);
    let e = Event::of(&r, "pi1", &State::default());
    assert!(e.needs_attention);
    assert_eq!(
        e.message,
        "pi1: a run was interrupted while deploying 0123456789ab (bump nixpkgs); rolled back"
    );
}

/// The hint is its own key and variable (issue 22), never part of `error`, whichever way
/// the run carried it (a field, or joined to the error by a writer).
#[test]
fn a_failures_hint_is_its_own_key_and_variable() {
    let joined = ["build failed: x", "\n", "hint: fix the flake and push"].concat();
    for (error, hint) in [
        (joined.as_str(), None),
        ("build failed: x", Some("fix the flake and push")),
    ] {
        let mut r = run(Outcome::Failed);
        r.phase = Some(Phase::Build);
        r.error = Some(error.into());
        r.hint = hint.map(str::to_string);
        let e = Event::of(&r, "pi1", &State::default());
        assert_eq!(e.error.as_deref(), Some("build failed: x"));
        assert_eq!(e.hint.as_deref(), Some("fix the flake and push"));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["hint"], "fix the flake and push");
        let env = super::hook::environment(&e);
        let var = env
            .iter()
            .find(|(k, _)| *k == "HOMELAB_AGENT_HINT")
            .unwrap();
        assert_eq!(var.1, "fix the flake and push");
    }
    let e = Event::of(&run(Outcome::Deployed), "pi1", &State::default());
    assert!(serde_json::to_value(&e).unwrap()["hint"].is_null());
}
