//! The view model from fixture states, and the human output compared with
//! `fixtures/<name>.txt` (times fixed). `HOMELAB_UPDATE_FIXTURES=1 cargo test --lib
//! status::` rewrites the files; review the diff.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::*;
use crate::health::{CheckResult, Verdict};
use crate::state::{Deployed, Intent, IntentKind, Outcome, Phase, RollbackPending, Step};
use crate::system::profile::Generation;

const C1: &str = "1111111111111111111111111111111111111111";
const C2: &str = "2222222222222222222222222222222222222222";
const S1: &str = "/nix/store/aaa-nixos-system-pi1";
const S2: &str = "/nix/store/bbb-nixos-system-pi1";

fn now() -> SystemTime {
    crate::model::time::Timestamp::parse("2026-11-24T12:00:00Z")
        .unwrap()
        .to_system()
}

fn settings() -> Settings {
    crate::config::parse(
        Path::new("/t.toml"),
        "[source]\nurl = \"https://tok@git.example.org/h.git\"\n[host]\nname = \"pi1\"\n[paths]\ncurrent_system = \"/nonexistent/c\"\nbooted_system = \"/nonexistent/b\"\nruntime_dir = \"/nonexistent/r\"\nprofile = \"/nonexistent/p\"\n",
    )
    .unwrap()
}

fn gen(n: u32, system: &str) -> Option<Generation> {
    Some(Generation {
        number: n,
        system: PathBuf::from(system),
    })
}

fn poll(at: &str, outcome: &str, commit: &str) -> Option<LastPoll> {
    Some(LastPoll {
        at: Some(at.into()),
        outcome: outcome.into(),
        commit: Some(commit.into()),
        next_poll: Some("2026-11-24T12:04:00Z".into()),
        ..Default::default()
    })
}

/// Deployed C1 as generation 7 two hours ago; polled a minute ago.
fn deployed() -> Facts {
    let mut state = State {
        deployed: Some(Deployed {
            commit: Some(C1.into()),
            subject: Some("add grafana".into()),
            system: S1.into(),
            generation: Some(7),
            at: "2026-11-24T10:00:00Z".into(),
        }),
        last_handled: Some(C1.into()),
        ..State::default()
    };
    let mut run = Run::new(Outcome::Deployed);
    run.at = "2026-11-24T10:00:00Z".into();
    run.commit = Some(C1.into());
    run.generation = Some(7);
    // Every native build says so, `[prebuilt]` on or off.
    run.obtained = Some(crate::state::obtained::built_here());
    state.push_run(run);
    Facts {
        state,
        poll: poll("2026-11-24T11:59:00Z", "up-to-date", C1),
        lock: Some(Probe::Free),
        current_system: Some(S1.into()),
        booted_system: Some(S1.into()),
        reboot_required: Some(false),
        profile: gen(7, S1),
        ..Facts::default()
    }
}

/// C2 failed its health check an hour ago and was rolled back; it is the head.
fn bad_commit() -> Facts {
    let mut f = deployed();
    let mut run = Run::new(Outcome::Failed);
    run.at = "2026-11-24T11:00:00Z".into();
    run.commit = Some(C2.into());
    run.phase = Some(Phase::Health);
    run.rolled_back = Some(true);
    run.error = Some(
        "health check failed: http http://127.0.0.1:8080/health: got HTTP 500, expected 2xx".into(),
    );
    run.hint =
        Some("push a fix, or run `sudo homelab-agent retry` to try this commit again".into());
    run.checks = vec![CheckResult {
        name: "http http://127.0.0.1:8080/health".into(),
        verdict: Verdict::Unhealthy("got HTTP 500, expected 2xx".into()),
    }];
    f.state.push_run(run);
    f.state
        .mark_bad_system(C2, Phase::Health, "health check failed", Some(S2));
    f.state.bad_commits[0].at = "2026-11-24T11:00:00Z".into();
    f.state.bad_commits[0].hint =
        Some("push a fix, or run `sudo homelab-agent retry` to try this commit again".into());
    f.state.last_handled = Some(C2.into());
    f.poll = poll("2026-11-24T11:59:00Z", "skipped", C2);
    f
}

/// Deployed C1 from a prebuilt manifest (issue 24), or built here after a fallback.
fn obtained(o: crate::state::obtained::Obtained) -> Facts {
    let mut f = deployed();
    f.state.history[0].obtained = Some(o);
    f.state.history[0].duration_ms = 14_000;
    f.state.history[0].build_ms = Some(9_000);
    f.state.history[0].health_ms = Some(5_000);
    f.poll = poll("2026-11-24T10:00:00Z", "deployed", C1);
    f
}

fn named() -> Vec<(&'static str, Facts)> {
    use crate::state::obtained::{Fallback, How, Obtained};
    let never = Facts {
        lock: Some(Probe::Free),
        current_system: Some("/nix/store/zzz-nixos-system-installer".into()),
        booted_system: Some("/nix/store/zzz-nixos-system-installer".into()),
        reboot_required: Some(false),
        profile: gen(1, "/nix/store/zzz-nixos-system-installer"),
        ..Facts::default()
    };

    let mut running = deployed();
    running.lock = Some(Probe::Held(Some(4242)));
    running.poll = poll("2026-11-24T11:50:00Z", "up-to-date", C1);
    running.progress = Some(Progress {
        phase: "building 22222222 for pi1".into(),
        since: Some("2026-11-24T11:58:00Z".into()),
        pid: 4242,
        build: None,
    });

    // A transient failure: not the commit's fault, retried.
    let mut failed = deployed();
    failed.poll = Some(LastPoll {
        at: Some("2026-11-24T11:59:30Z".into()),
        outcome: "failed".into(),
        commit: Some(C2.into()),
        phase: Some("fetch".into()),
        error: Some("fetching from https://***@git.example.org/h.git: connection refused".into()),
        hint: Some("nothing to do if it passes: the next run tries again".into()),
        next_poll: None,
    });

    let mut pinned = deployed();
    pinned.state.deployed = Some(Deployed {
        commit: Some(C1.into()),
        subject: None,
        system: S1.into(),
        generation: Some(9),
        at: "2026-11-24T11:30:00Z".into(),
    });
    pinned.profile = gen(9, S1);
    pinned.state.pinned = Some(Pinned {
        since: "2026-11-24T11:30:00Z".into(),
        system: S1.into(),
        generation: Some(9),
        from_system: S2.into(),
        from_commit: Some(C2.into()),
        from_generation: Some(8),
    });
    let mut run = Run::new(Outcome::RolledBack);
    run.at = "2026-11-24T11:30:00Z".into();
    run.commit = Some(C1.into());
    run.generation = Some(9);
    pinned.state.push_run(run);
    pinned.poll = poll("2026-11-24T11:59:00Z", "pinned", C2);

    let mut rollback_failed = bad_commit();
    rollback_failed.current_system = Some(S2.into());
    rollback_failed.state.rollback_pending = Some(RollbackPending {
        system: S1.into(),
        reason: "switch-to-configuration test exited with 1".into(),
        since: "2026-11-24T11:00:00Z".into(),
        hint: None,
    });
    rollback_failed.state.history[0].rolled_back = Some(false);
    rollback_failed.state.history[0].error = Some(format!("health check failed: http http://127.0.0.1:8080/health: got HTTP 500, expected 2xx\nthen the rollback to {S1} failed too: switch-to-configuration test exited with 1"));
    rollback_failed.state.history[0].hint = Some("the boot default is still the previous generation (a reboot returns to it); the next run retries the rollback".into());
    rollback_failed.poll = None;

    let lost = Facts {
        state_problem: Some(crate::failure::Failure::new(crate::failure::Kind::Environment, "/var/lib/homelab-agent/state.json is unreadable (EOF while parsing an object at line 3 column 0); the next `run` moves it aside and starts over")),
        ..Facts {
            state: State::default(),
            poll: None,
            ..deployed()
        }
    };

    let mut drift = deployed();
    drift.current_system = Some("/nix/store/ccc-nixos-system-by-hand".into());

    let mut recovered = deployed();
    recovered.state = State {
        recovered_from: Some("/var/lib/homelab-agent/state.json.corrupt-812".into()),
        last_handled: Some(C1.into()),
        ..State::default()
    };

    // Paused for maintenance, the branch moved on: polled, not deployed.
    let mut paused = deployed();
    paused.state.paused = Some(crate::pause::Paused {
        since: "2026-11-24T11:00:00Z".into(),
        until: None,
        reason: Some("moving the rack".into()),
    });
    paused.poll = poll("2026-11-24T11:59:00Z", "paused", C2);

    vec![
        ("never-deployed", never),
        ("deployed", deployed()),
        ("running", running),
        ("failed", failed),
        ("bad-commit", bad_commit()),
        ("pinned", pinned),
        ("rollback-failed", rollback_failed),
        ("state-lost", lost),
        ("drift", drift),
        ("state-recovered", recovered),
        ("paused", paused),
        (
            "prebuilt",
            obtained(Obtained {
                how: How::Prebuilt,
                fetch_ms: Some(8_200),
                signer: Some("ci@example.org".into()),
                fallback: None,
                why: None,
            }),
        ),
        (
            "built-here",
            obtained(Obtained {
                how: How::BuiltHere,
                fetch_ms: Some(0),
                signer: None,
                fallback: Some(Fallback::Late),
                why: Some("branch \"homelab-prebuilt\" has no prebuilt/1111.json, and [prebuilt] wait (30m) has run out".into()),
            }),
        ),
        // `[prebuilt]` off: built here all the same, no reason.
        ("built-here-no-prebuilt", obtained(crate::state::obtained::built_here())),
    ]
}

fn human(f: Facts) -> String {
    let mut out = Vec::new();
    Status::from_facts(&settings(), f)
        .write_human(&mut out, now())
        .unwrap();
    String::from_utf8(out).unwrap()
}

fn json(f: Facts) -> serde_json::Value {
    let mut out = Vec::new();
    Status::from_facts(&settings(), f)
        .write_json(&mut out)
        .unwrap();
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn human_output_matches_the_fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/status/fixtures");
    let update = std::env::var_os("HOMELAB_UPDATE_FIXTURES").is_some();
    let mut wrong = Vec::new();
    for (name, facts) in named() {
        let text = human(facts);
        let path = dir.join(format!("{name}.txt"));
        if update {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let want =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if text != want {
            wrong.push(format!("--- {name}: want\n{want}--- got\n{text}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The human output on a terminal (issue 21): at 80 and 120 columns, with and without
/// colour, against `fixtures/wide/<name>.<columns>[.color].txt`.
#[test]
fn human_output_on_terminals_matches_the_fixtures() {
    use super::style::Style;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/status/fixtures/wide");
    let update = std::env::var_os("HOMELAB_UPDATE_FIXTURES").is_some();
    if update {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let mut wrong = Vec::new();
    for (name, facts) in named() {
        if !["bad-commit", "drift", "rollback-failed", "paused"].contains(&name) {
            continue;
        }
        let text = human(facts);
        for width in [80, 120] {
            for color in [false, true] {
                let shown = Style {
                    color,
                    width: Some(width),
                }
                .apply(&text);
                for line in shown.lines() {
                    let visible: String = strip_colour(line);
                    let long_word = visible.split(' ').any(|w| w.chars().count() > width / 2);
                    assert!(
                        visible.chars().count() <= width || long_word,
                        "{name} at {width}: a line of {}: {visible}",
                        visible.chars().count()
                    );
                }
                let path = dir.join(format!(
                    "{name}.{width}{}.txt",
                    if color { ".color" } else { "" }
                ));
                if update {
                    std::fs::write(&path, &shown).unwrap();
                    continue;
                }
                let want = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                if shown != want {
                    wrong.push(format!(
                        "--- {}: want\n{want}--- got\n{shown}",
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A line without its colour codes (ESC [ ... m).
fn strip_colour(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn each_situation_has_its_state() {
    let want = [
        ("never-deployed", "idle"),
        ("deployed", "idle"),
        ("running", "running"),
        ("failed", "failed"),
        ("bad-commit", "failed"),
        ("pinned", "pinned"),
        ("rollback-failed", "needs-attention"),
        ("state-lost", "unknown"),
        ("drift", "needs-attention"),
        ("state-recovered", "idle"),
        ("paused", "idle"),
    ];
    for ((name, facts), (wname, state)) in named().into_iter().zip(want) {
        assert_eq!(name, wname);
        let v = json(facts);
        assert_eq!(v["state"], state, "{name}");
        assert_eq!(v["schema_version"], SCHEMA_VERSION, "{name}");
    }
}

#[test]
fn json_has_the_contract_keys_and_no_secret() {
    let mut out = Vec::new();
    Status::from_facts(&settings(), bad_commit())
        .write_json(&mut out)
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    for key in [
        "schema_version",
        "state",
        "message",
        "hint",
        "head",
        "host",
        "booted_system",
        "reboot_required",
        "current_system",
        "profile_generation",
        "next_poll",
        "bad_commit",
        "needs_attention",
        "in_progress",
        "state_recovered_from",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    for key in ["commit", "subject", "system", "generation", "at"] {
        assert!(v["deployed"].get(key).is_some(), "missing deployed.{key}");
    }
    for key in [
        "at",
        "outcome",
        "commit",
        "phase",
        "error",
        "rolled_back",
        "failed_check",
    ] {
        assert!(v["last_run"].get(key).is_some(), "missing last_run.{key}");
    }
    assert_eq!(v["source"]["url"], "https://***@git.example.org/h.git");
    assert_eq!(v["last_run"]["outcome"], "skipped");
    assert_eq!(v["head"]["commit"], C2);
    assert_eq!(v["head"]["status"], "bad");
    assert_eq!(v["bad_commit"]["commit"], C2);
    assert!(!String::from_utf8(out).unwrap().contains("tok@"));
}

#[test]
fn json_fields_carry_no_hints_and_rfc3339_times() {
    for (name, facts) in named() {
        let v = json(facts);
        let text = v.to_string();
        assert!(
            !text.contains("hint:"),
            "{name}: a hint inside a field: {text}"
        );
        for t in [
            &v["deployed"]["at"],
            &v["last_run"]["at"],
            &v["head"]["seen_at"],
        ] {
            if let Some(t) = t.as_str() {
                assert!(
                    crate::model::time::Timestamp::parse(t).is_ok(),
                    "{name}: {t}"
                );
            }
        }
    }
}

/// Issue 10, item 1: after `rollback`, status says pinned, from what, and how to leave.
#[test]
fn a_pinned_machine_says_so_and_how_to_resume() {
    let (_, pinned) = named().into_iter().find(|(n, _)| *n == "pinned").unwrap();
    let v = json(pinned.clone());
    assert_eq!(v["state"], "pinned");
    assert_eq!(v["head"]["status"], "pinned-past");
    assert_eq!(v["pinned"]["from_commit"], C2);
    assert!(v["hint"].as_str().unwrap().contains("homelab-agent resume"));
    let text = human(pinned);
    assert!(text.starts_with("PINNED:"), "{text}");
}

/// Item 2: a running agent shows its phase; an intent with a free lock is interrupted,
/// and no time is lowercased.
#[test]
fn running_and_interrupted_are_told_apart() {
    let mut f = deployed();
    f.state.intent = Some(Intent {
        kind: IntentKind::Deploy,
        step: Step::Checking,
        commit: Some(C2.into()),
        subject: None,
        system: S2.into(),
        previous_system: S1.into(),
        previous_generation: Some(7),
        started_at: "2026-11-24T11:58:00Z".into(),
        activation: "t".into(),
    });
    let dead = json(f.clone());
    assert_eq!(dead["state"], "needs-attention");
    assert_eq!(dead["attention"][0]["kind"], "interrupted");
    assert!(!dead.to_string().contains("t11:58:00z"), "{dead}");
    f.lock = Some(Probe::Held(Some(7)));
    f.progress = Some(Progress {
        phase: "checking health of 22222222".into(),
        since: Some("2026-11-24T11:58:30Z".into()),
        pid: 7,
        build: None,
    });
    let live = json(f.clone());
    assert_eq!(live["state"], "running");
    assert_eq!(live["running"]["phase"], "checking health of 22222222");
    assert!(human(f).contains("running:    pid 7: checking health of 22222222 (since 1m ago)"));
}

/// A run that holds the lock and has not written its first phase yet (or whose progress
/// file is another run's) is starting: never running without a phase.
#[test]
fn a_run_before_its_first_phase_is_starting() {
    let mut f = deployed();
    f.lock = Some(Probe::Held(Some(9)));
    f.progress = None;
    let v = json(f.clone());
    assert_eq!(v["state"], "running");
    assert_eq!(v["running"]["phase"], "starting");
    assert_eq!(v["in_progress"], "starting");
    f.progress = Some(Progress {
        phase: "building 22222222".into(),
        since: Some("2026-11-24T11:58:30Z".into()),
        pid: 8,
        build: None,
    });
    assert_eq!(json(f)["running"]["phase"], "starting");
}

/// Item 5: no bad-commit line once a newer commit is deployed, or after `retry`.
#[test]
fn no_stale_bad_commit_line() {
    let mut newer = bad_commit();
    newer.state.deployed.as_mut().unwrap().commit =
        Some("3333333333333333333333333333333333333333".into());
    newer.poll = poll(
        "2026-11-24T11:59:00Z",
        "up-to-date",
        "3333333333333333333333333333333333333333",
    );
    let text = human(newer);
    assert!(!text.contains("bad commit"), "{text}");

    let mut retried = bad_commit();
    retried.state.bad_commits.clear();
    retried.state.last_handled = None;
    retried.poll = None;
    let text = human(retried);
    assert!(!text.contains("bad commit"), "{text}");
    assert!(!text.contains("retry"), "a retry hint after retry:\n{text}");
}

/// Item 4: rollback failed leads, with the reboot hint, never "run retry".
#[test]
fn rollback_failed_leads_with_the_reboot_hint() {
    let (_, f) = named()
        .into_iter()
        .find(|(n, _)| *n == "rollback-failed")
        .unwrap();
    let text = human(f);
    assert!(
        text.starts_with("ATTENTION:  rollback to generation 7 failed"),
        "{text}"
    );
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .contains("a reboot returns to it"),
        "{text}"
    );
    assert!(!text.contains("homelab-agent retry"), "{text}");
    assert!(
        text.contains(&format!("system:     {S2}  <- live, NOT the boot default")),
        "{text}"
    );
}

#[test]
fn each_hint_is_printed_once() {
    for (name, facts) in named() {
        let text = human(facts);
        let hints: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("hint:"))
            .collect();
        let mut unique = hints.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(hints.len(), unique.len(), "{name}:\n{text}");
    }
}

#[test]
fn newer_poll_wins_over_recorded_run() {
    let mut run = Run::new(Outcome::Deployed);
    run.at = "2026-11-24T10:00:00Z".into();
    let newer = LastPoll {
        at: Some("2026-11-24T10:05:00Z".into()),
        outcome: "up-to-date".into(),
        ..Default::default()
    };
    assert_eq!(
        last_run(Some(&run), Some(&newer)).outcome.as_deref(),
        Some("up-to-date")
    );
    let old = LastPoll {
        at: Some("2026-11-24T09:00:00Z".into()),
        outcome: "up-to-date".into(),
        ..Default::default()
    };
    assert_eq!(
        last_run(Some(&run), Some(&old)).outcome.as_deref(),
        Some("deployed")
    );
}

#[test]
fn relative_times() {
    let at = |s: &str| relative(s, now()).unwrap();
    assert_eq!(at("2026-11-24T11:59:57Z"), "3s ago");
    assert_eq!(at("2026-11-24T11:57:00Z"), "3m ago");
    assert_eq!(at("2026-11-24T10:00:00Z"), "2h ago");
    assert_eq!(at("2026-11-24T09:55:00Z"), "2h 5m ago");
    assert_eq!(at("2026-11-22T12:00:00Z"), "2d ago");
    assert_eq!(at("2026-11-24T12:04:00Z"), "in 4m");
    assert!(relative("yesterday", now()).is_none());
}

/// Drift leads: the live system is not the boot default, and the agent leaves it alone.
#[test]
fn drift_leads_and_marks_the_system() {
    let (_, f) = named().into_iter().find(|(n, _)| *n == "drift").unwrap();
    let text = human(f.clone());
    assert!(text.starts_with("ATTENTION:  drift:"), "{text}");
    assert!(
        text.contains("by-hand  <- live, NOT the boot default"),
        "{text}"
    );
    assert_eq!(
        Status::from_facts(&settings(), f).exit_code(),
        crate::exit::ROLLBACK_FAILED
    );
}

/// A state file moved aside by a run is said, first, with where it went.
#[test]
fn lost_state_is_said_first() {
    let (_, f) = named()
        .into_iter()
        .find(|(n, _)| *n == "state-recovered")
        .unwrap();
    let v = json(f.clone());
    assert_eq!(v["attention"][0]["kind"], "state-lost");
    assert!(human(f).starts_with("ATTENTION:  state was lost"));
}

#[test]
fn paused_has_every_key_and_an_expired_pause_is_none() {
    let mut f = deployed();
    f.state.paused = Some(crate::pause::Paused {
        since: "2026-11-24T11:00:00Z".into(),
        until: None,
        reason: None,
    });
    let v = json(f.clone());
    let paused = v["paused"].as_object().expect("paused is an object");
    let mut keys: Vec<&str> = paused.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["reason", "since", "until"]);
    assert!(paused["reason"].is_null() && paused["until"].is_null());
    assert!(v["attention"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["kind"] == "paused"));

    f.state.paused.as_mut().unwrap().until = Some("2000-01-01T00:00:00Z".into());
    let v = json(f);
    assert!(v.as_object().unwrap().contains_key("paused"));
    assert!(v["paused"].is_null(), "an expired pause is shown: {v}");
    assert!(!v["attention"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["kind"] == "paused"));
}

#[test]
fn history_json_gives_every_key_of_a_run_even_when_empty() {
    use crate::state::{Outcome, Phase, Run};
    let full = Run {
        at: "2026-12-07T00:00:00Z".into(),
        outcome: Outcome::Failed,
        commit: Some("c".into()),
        subject: Some("s".into()),
        phase: Some(Phase::Build),
        error: Some("e".into()),
        hint: Some("h".into()),
        rolled_back: Some(false),
        system: Some("/nix/store/x".into()),
        generation: Some(1),
        checks: Vec::new(),
        duration_ms: 1,
        build_ms: Some(1),
        health_ms: Some(1),
        obtained: Some(crate::state::obtained::Obtained {
            how: crate::state::obtained::How::BuiltHere,
            fetch_ms: None,
            signer: None,
            fallback: Some(crate::state::obtained::Fallback::Missing),
            why: None,
        }),
    };
    let every: Vec<String> = {
        let v = serde_json::to_value(&full).unwrap();
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.push("checks".into());
        keys
    };
    let empty = super::history_json(&[Run::new(Outcome::UpToDate)]);
    let object = empty[0].as_object().unwrap();
    for key in &every {
        assert!(
            object.contains_key(key),
            "history --json leaves out {key}: {object:?}"
        );
    }
    assert!(object["commit"].is_null() && object["phase"].is_null());
    assert_eq!(object["checks"], serde_json::json!([]));
}

/// Terminal escapes in a pause reason and commit subjects (issue 23, item 16): the human
/// output shows them escaped, the JSON keeps the text (JSON-escaped).
#[test]
fn control_characters_from_outside_are_shown_escaped() {
    let retitle = "\u{1b}]0;pwned\u{7}";
    let clear = "\u{1b}[2J\u{1b}[H";
    let mut f = deployed();
    f.state.deployed.as_mut().unwrap().subject = Some(format!("fix {clear}dns"));
    f.state.paused = Some(crate::pause::Paused {
        since: "2026-11-24T11:00:00Z".into(),
        until: None,
        reason: Some(format!("rack {retitle}move")),
    });
    let mut run = Run::new(Outcome::Deployed);
    run.subject = Some(format!("history {clear}subject"));
    let text = human(f.clone());
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    assert!(text.contains("rack \\u{1b}]0;pwned\\u{7}move"), "{text}");
    assert!(text.contains("fix \\u{1b}[2J\\u{1b}[Hdns"), "{text}");
    let v = json(f);
    assert_eq!(v["paused"]["reason"], format!("rack {retitle}move"));
    assert_eq!(v["deployed"]["subject"], format!("fix {clear}dns"));
    let mut out = Vec::new();
    crate::status::human::write_history_human(&[run], &mut out, now(), false).unwrap();
    let history = String::from_utf8(out).unwrap();
    assert!(!history.contains('\u{1b}'), "{history:?}");
    assert!(
        history.contains("history \\u{1b}[2J\\u{1b}[Hsubject"),
        "{history}"
    );
}

/// nix's progress of the run holding the lock: `running.progress` in JSON (null when
/// there is none) and a line under `running:`; another run's progress is not shown.
#[test]
fn a_build_in_progress_shows_nix_progress() {
    let mut f = deployed();
    f.lock = Some(Probe::Held(Some(7)));
    f.progress = Some(Progress {
        phase: "building 22222222 for pi1".into(),
        since: Some("2026-11-24T11:58:30Z".into()),
        pid: 7,
        build: None,
    });
    assert_eq!(
        json(f.clone())["running"]["progress"],
        serde_json::Value::Null
    );
    f.progress.as_mut().unwrap().build = Some(crate::runtime::BuildProgress {
        derivations_built: 3,
        derivations_total: 17,
        paths_fetched: 120,
        paths_total: 300,
        bytes_fetched: 45 << 20,
        bytes_total: 100 << 20,
        current: Some("linux-6.6".into()),
        at: Some("2026-11-24T11:59:59Z".into()),
    });
    let v = json(f.clone());
    let p = &v["running"]["progress"];
    assert_eq!(
        (
            p["derivations_built"].as_u64(),
            p["derivations_total"].as_u64()
        ),
        (Some(3), Some(17))
    );
    assert_eq!(p["paths_fetched"], 120);
    assert_eq!(p["bytes_fetched"], 45 << 20);
    assert_eq!(p["current"], "linux-6.6");
    let text = human(f.clone());
    assert!(
        text.contains(
            "progress:   building 3/17 derivations, fetched 120/300 paths (45.0 MiB), now: linux-6.6\n"
        ),
        "{text}"
    );
    // The progress file of another process is not this run's.
    f.progress.as_mut().unwrap().pid = 8;
    assert_eq!(
        json(f.clone())["running"]["progress"],
        serde_json::Value::Null
    );
    assert!(!human(f).contains("progress:"));
}

/// Changed by hand (issue 21): what a manual `nixos-rebuild switch` leaves (a new profile
/// generation, live) is told, with what the next deployment does; a deployment waiting
/// for its trial boot (no generation) is not.
#[test]
fn a_switch_made_by_hand_is_told() {
    let mut f = deployed();
    let by_hand = "/nix/store/hhh-nixos-system-pi1-by-hand";
    f.current_system = Some(by_hand.into());
    f.profile = gen(8, by_hand);
    let v = json(f.clone());
    assert_eq!(v["state"], "needs-attention", "{v}");
    assert_eq!(v["attention"][0]["kind"], "drift", "{v}");
    let message = v["attention"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "changed by hand: generation 8 ({by_hand}) is live and the boot default, not what the agent deployed ({} as {S1})",
            &C1[..8]
        )),
        "{message}"
    );
    assert!(
        v["attention"][0]["hint"]
            .as_str()
            .unwrap()
            .contains("left alone until the next commit on the branch"),
        "{v}"
    );
    assert_eq!(
        Status::from_facts(&settings(), f).exit_code(),
        crate::exit::ROLLBACK_FAILED
    );

    // The agent's own: a reboot deployment live, waiting for its trial (no generation).
    let mut f = deployed();
    let pending = "/nix/store/kkk-nixos-system-pi1-new-kernel";
    f.state.deployed.as_mut().unwrap().system = pending.into();
    f.state.deployed.as_mut().unwrap().generation = None;
    f.current_system = Some(pending.into());
    let v = json(f);
    assert!(
        v["attention"].as_array().unwrap().is_empty(),
        "a pending trial told as a change by hand: {v}"
    );
}

/// History (issue 21): the error's key lines (an evaluation error's `error:` line, not only
/// "evaluation failed:"), its hint, how long the run took, and `--absolute` times.
#[test]
fn history_shows_the_error_that_matters_durations_and_absolute_times() {
    let mut run = Run::new(Outcome::Failed);
    run.at = "2026-11-24T11:00:00Z".into();
    run.commit = Some(C2.into());
    run.subject = Some("break the flake".into());
    run.phase = Some(Phase::Build);
    run.duration_ms = 192_400;
    run.build_ms = Some(190_100);
    run.error = Some(
        "building 22222222 for pi1: evaluation failed:\n\n       … while evaluating the attribute 'config'\n\n       error: undefined variable 'grafna'\n\n       at /nix/store/x/hosts/pi1.nix:12:5:".into(),
    );
    run.hint = Some("fix the Nix error in your flake and push".into());
    let mut out = Vec::new();
    crate::status::human::write_history_human(&[run.clone()], &mut out, now(), false).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("failed      22222222 break the flake (build) in 3m 13s (build 3m 11s)"),
        "{text}"
    );
    assert!(
        text.contains("    building 22222222 for pi1: evaluation failed:\n"),
        "{text}"
    );
    assert!(
        text.contains("    error: undefined variable 'grafna'\n"),
        "{text}"
    );
    assert!(!text.contains("while evaluating"), "not a key line: {text}");
    assert!(
        text.contains("    hint: fix the Nix error in your flake and push\n"),
        "{text}"
    );
    assert!(text.contains("1h ago"), "{text}");

    let mut out = Vec::new();
    crate::status::human::write_history_human(&[run], &mut out, now(), true).unwrap();
    let text = String::from_utf8(out).unwrap();
    // The machine's own zone: the date and the offset, never "ago".
    assert!(!text.contains("ago"), "{text}");
    let first = text.lines().next().unwrap();
    assert!(
        first.trim_start().starts_with("2026-11-2") && first.contains(':'),
        "{first}"
    );
}

/// Issue 24: a prebuilt run says it was fetched (and how long that took) where a build
/// says "build"; a fallback says why on its own line; `status --json` gives `obtained`.
#[test]
fn history_and_status_say_how_each_system_was_obtained() {
    use crate::state::obtained::{Fallback, How, Obtained};
    let mut prebuilt = Run::new(Outcome::Deployed);
    prebuilt.at = "2026-11-24T11:00:00Z".into();
    prebuilt.commit = Some(C2.into());
    prebuilt.subject = Some("bump".into());
    prebuilt.duration_ms = 14_000;
    prebuilt.build_ms = Some(9_000);
    prebuilt.health_ms = Some(5_000);
    prebuilt.obtained = Some(Obtained {
        how: How::Prebuilt,
        fetch_ms: Some(8_200),
        signer: Some("ci@example.org".into()),
        fallback: None,
        why: None,
    });
    let mut native = prebuilt.clone();
    native.obtained = Some(Obtained {
        how: How::BuiltHere,
        fetch_ms: Some(0),
        signer: None,
        fallback: Some(Fallback::Unsigned),
        why: Some("the prebuilt manifest of 22222222 is not signed".into()),
    });
    let mut out = Vec::new();
    crate::status::human::write_history_human(&[prebuilt.clone(), native], &mut out, now(), false)
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("deployed    22222222 bump in 14s (prebuilt, fetched 9s, checks 5s)\n"),
        "{text}"
    );
    assert!(
        text.contains("deployed    22222222 bump in 14s (build 9s, checks 5s)\n    built here (prebuilt: unsigned: the prebuilt manifest of 22222222 is not signed)\n"),
        "{text}"
    );
    let mut f = deployed();
    f.state.push_run(prebuilt);
    f.poll = None;
    let v = json(f);
    assert_eq!(v["last_run"]["obtained"]["how"], "prebuilt", "{v:#}");
    assert_eq!(v["last_run"]["obtained"]["fetch_ms"], 8200, "{v:#}");
    // Without [prebuilt], null.
    assert!(json(deployed())["last_run"]["obtained"].is_null());
}
