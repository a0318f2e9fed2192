//! `pause` and `resume` with the real binary, git and nix: a paused agent polls (status
//! shows the head) but deploys nothing; an expired pause ends by itself; `resume` ends a
//! pause and a pin, and says which.

use std::time::Duration;

use crate::support::{nix_available, Harness};

#[test]
fn a_paused_agent_polls_but_deploys_nothing_until_resume() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    let out = h.agent(&["pause", "--for", "2h", "moving the rack"]);
    out.expect(0);
    assert!(out.stdout().contains("paused since"), "{}", out.stdout());
    assert!(out.stdout().contains("moving the rack"), "{}", out.stdout());

    h.host("pi1").content = "v2".into();
    let c2 = h.commit("v2");
    let builds = h.nix_builds();
    let run = h.run_once();
    run.expect(0);
    assert!(run.stderr().contains("paused"), "{}", run.stderr());
    assert_eq!(h.nix_builds(), builds, "a paused agent built");
    assert_eq!(h.profile_generation(), Some(1));

    let s = h.status();
    assert_eq!(s["head"]["commit"], c2.as_str());
    assert_eq!(s["head"]["status"], "pending");
    assert_eq!(s["paused"]["reason"], "moving the rack");
    assert!(s["paused"]["since"].is_string(), "{s}");
    assert!(s["paused"]["until"].is_string(), "{s}");
    assert_eq!(s["last_run"]["outcome"], "paused");
    assert_eq!(s["state"], "idle");
    assert!(
        s["attention"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "paused"),
        "{s}"
    );
    let human = h.agent(&["status"]);
    assert!(human.stdout().contains("PAUSED:"), "{}", human.stdout());
    assert!(
        human.stdout().contains("moving the rack"),
        "{}",
        human.stdout()
    );

    // `retry` does not end a pause, and says so.
    let retry = h.agent(&["retry"]);
    retry.expect(0);
    assert!(
        retry.stdout().contains("note: the machine is paused"),
        "{}",
        retry.stdout()
    );

    // A second pause replaces the first, and says so.
    let again = h.agent(&["pause"]);
    again.expect(0);
    assert!(
        again.stdout().contains("replaced the pause"),
        "{}",
        again.stdout()
    );
    assert!(h.status()["paused"]["until"].is_null());

    let resumed = h.agent(&["resume"]);
    resumed.expect(0);
    assert!(
        resumed.stdout().contains("pause ended"),
        "{}",
        resumed.stdout()
    );
    assert!(h.status()["paused"].is_null());
    h.run_once().expect(0);
    assert_eq!(h.profile_generation(), Some(2));
    assert_eq!(h.status()["deployed"]["commit"], c2.as_str());
}

#[test]
fn an_expired_pause_ends_by_itself() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    h.agent(&["pause", "--for", "1s"]).expect(0);
    h.host("pi1").content = "v2".into();
    h.commit("v2");
    std::thread::sleep(Duration::from_millis(2100));
    assert!(
        h.status()["paused"].is_null(),
        "an expired pause is still shown"
    );
    h.run_once().expect(0);
    assert_eq!(h.profile_generation(), Some(2));
    let state = std::fs::read_to_string(h.path("state/state.json")).unwrap();
    assert!(
        !state.contains("\"paused\""),
        "the expired pause was kept:\n{state}"
    );
}

#[test]
fn resume_ends_both_a_pause_and_a_pin_and_says_so() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    h.host("pi1").content = "v2".into();
    h.commit("v2");
    h.run_once().expect(0);
    h.agent(&["rollback"]).expect(0);
    h.agent(&["pause", "maintenance"]).expect(0);
    let out = h.agent(&["resume"]);
    out.expect(0);
    assert!(out.stdout().contains("pause ended"), "{}", out.stdout());
    assert!(out.stdout().contains("unpinned"), "{}", out.stdout());
    let s = h.status();
    assert!(s["paused"].is_null() && s["pinned"].is_null(), "{s}");
    let nothing = h.agent(&["resume"]);
    nothing.expect(0);
    assert!(
        nothing.stdout().contains("not pinned or paused"),
        "{}",
        nothing.stdout()
    );
}

#[test]
fn bad_for_values_are_refused_with_what_to_give() {
    let h = Harness::new();
    for (value, expected) in [
        ("0s", "a pause of 0s ends at once"),
        ("soon", "not a duration"),
        ("-1h", "not a duration"),
        ("2", "not a duration"),
        ("400d", "longer than"),
    ] {
        // `--for=VALUE` and `--for VALUE` (README's `pause --for -1h`): a value
        // starting with `-` is the value, not a flag.
        for args in [
            vec!["pause".to_string(), format!("--for={value}")],
            vec!["pause".into(), "--for".into(), value.into()],
            vec!["pause".into(), "--for".into(), value.into(), "why".into()],
        ] {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = h.agent(&args);
            assert_eq!(out.code(), 2, "{args:?}: {}", out.stderr());
            assert!(
                out.stderr().contains(expected),
                "{args:?}: {}",
                out.stderr()
            );
            assert!(out.stderr().contains("--for"), "{args:?}: {}", out.stderr());
            assert!(
                !out.stderr().contains("unexpected argument"),
                "{args:?}: {}",
                out.stderr()
            );
        }
    }
    assert!(
        !h.path("state/state.json").exists(),
        "a refused pause wrote the state"
    );
}

/// Terminal escapes in a pause reason (issue 23, item 16) never reach the terminal raw:
/// `pause`, `status` and the run's log show them escaped; `status --json` keeps the text.
#[test]
fn a_pause_reason_with_terminal_escapes_is_shown_escaped() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    let reason = "rack \u{1b}]0;pwned\u{7}\u{1b}[2Jmove";
    let out = h.agent(&["pause", reason]);
    out.expect(0);
    let shown = "rack \\u{1b}]0;pwned\\u{7}\\u{1b}[2Jmove";
    for (what, text) in [
        ("pause", out.stdout()),
        ("status", h.agent(&["status"]).stdout()),
    ] {
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{what}: {text:?}"
        );
        assert!(text.contains(shown), "{what}: {text}");
    }
    let run = h.run_once();
    assert!(!run.stderr().contains('\u{1b}'), "{:?}", run.stderr());
    assert_eq!(h.status()["paused"]["reason"], reason);
}

/// `pause` during a build (issue 21): the run that holds the lock is asked to pause; its
/// build stops at once with everything it started, the run records the pause and ends
/// (exit 0), and `pause` returns without waiting for the build. Nothing is blamed.
#[test]
fn pause_stops_a_running_build() {
    use std::time::Instant;
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    // A build that takes 300 s, marked so that its processes can be found.
    let marker = format!("{}", 300 + (std::process::id() % 97));
    h.host("pi1").content = "slow".into();
    h.host("pi1").build = format!("build-sleep:{marker}");
    let slow = h.commit("a slow build");
    let mut run = h.command(&["run", "--once"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = h.status();
        if s["running"]["phase"]
            .as_str()
            .is_some_and(|p| p.starts_with("building"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "never building: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2)); // the builder is running
    let started = Instant::now();
    let out = h.agent(&["pause", "--for", "1h", "moving the rack"]);
    out.expect(0);
    assert!(
        out.stderr().contains("a run holds the lock (pid ")
            && out
                .stderr()
                .contains("asked it to stop its build and pause"),
        "{}",
        out.stderr()
    );
    assert!(out.stdout().contains("moving the rack"), "{}", out.stdout());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "pause waited {:?}",
        started.elapsed()
    );
    assert_eq!(
        run.wait().unwrap().code(),
        Some(0),
        "the run did not end as paused"
    );
    crate::support::assert_no_process(&format!("sleep {marker}"), "the stopped build's sleep");
    let s = h.status();
    assert_eq!(s["paused"]["reason"], "moving the rack", "{s}");
    assert_eq!(s["head"]["commit"], slow.as_str());
    assert!(s["bad_commit"].is_null(), "the commit was blamed: {s}");
    assert_eq!(s["attention"][0]["kind"], "paused", "{s}");
    assert_eq!(s["last_run"]["outcome"], "paused", "{s}");
    // One pause, recorded once; no request left behind.
    assert!(!h.path("runtime/pause-request.json").exists());
}
