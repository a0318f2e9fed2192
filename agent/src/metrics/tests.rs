use std::path::Path;

use super::*;
use crate::state::{Deployed, Outcome, Phase, Run, State};
use crate::status::Facts;

fn settings() -> Settings {
    crate::config::parse(
        Path::new("/etc/test.toml"),
        "[source]\nurl = \"/r\"\n[host]\nname = \"pi1\"\n[metrics]\ntextfile_dir = \"/tmp/x\"\n",
    )
    .unwrap()
}

fn text_of(state: State, record: &Record) -> String {
    let s = settings();
    let facts = Facts {
        state: state.clone(),
        reboot_required: Some(false),
        ..Facts::default()
    };
    let view = Status::from_facts(&s, facts);
    render(&Snapshot {
        version: "1.2.3",
        view: &view,
        state: &state,
        paused: crate::pause::active(&state),
        record,
        activation_budget: std::time::Duration::from_secs(1800),
    })
}

fn deployed_state() -> State {
    let mut state = State::default();
    let mut run = Run::new(Outcome::Deployed);
    run.at = "2026-11-25T10:00:00Z".into();
    run.commit = Some("a".repeat(40));
    run.duration_ms = 61_500;
    run.build_ms = Some(60_000);
    run.health_ms = Some(1_250);
    state.push_run(run);
    state.deployed = Some(Deployed {
        commit: Some("a".repeat(40)),
        subject: Some("x".into()),
        system: "/nix/store/x".into(),
        generation: Some(7),
        at: "2026-11-25T10:00:00Z".into(),
    });
    state.last_handled = Some("a".repeat(40));
    state
}

#[test]
fn a_fresh_machine_has_zeros_and_no_run_families() {
    let text = text_of(State::default(), &Record::default());
    assert!(
        text.contains("homelab_agent_info{host=\"pi1\",branch=\"main\",version=\"1.2.3\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("homelab_agent_poll_failures_total 0\n"),
        "{text}"
    );
    assert!(text.contains("homelab_agent_paused 0\n"), "{text}");
    assert!(!text.contains("homelab_agent_last_run_"), "{text}");
    assert!(!text.contains("homelab_agent_deployed_info"), "{text}");
    // Every family has its HELP and TYPE, once.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert_eq!(
            text.matches(&format!("# TYPE {name} ")).count(),
            1,
            "{name}"
        );
        assert_eq!(
            text.matches(&format!("# HELP {name} ")).count(),
            1,
            "{name}"
        );
    }
}

#[test]
fn a_deployment_is_shown_with_units_in_seconds() {
    let text = text_of(deployed_state(), &Record::default());
    for expected in [
        format!(
            "homelab_agent_deployed_info{{commit=\"{}\",generation=\"7\"}} 1\n",
            "a".repeat(40)
        ),
        "homelab_agent_deployed_generation 7\n".into(),
        "homelab_agent_deployed_timestamp_seconds 1795600800\n".into(),
        "homelab_agent_last_run_outcome{outcome=\"deployed\"} 1\n".into(),
        "homelab_agent_last_run_outcome{outcome=\"failed\"} 0\n".into(),
        "homelab_agent_last_run_duration_seconds 61.500\n".into(),
        "homelab_agent_last_run_build_duration_seconds 60\n".into(),
        "homelab_agent_last_run_health_duration_seconds 1.250\n".into(),
        "homelab_agent_head_status{status=\"deployed\"} 1\n".into(),
        // Every value has its series, so an alert can match it.
        "homelab_agent_head_status{status=\"refused\"} 0\n".into(),
        "homelab_agent_last_run_outcome{outcome=\"tested\"} 0\n".into(),
        "homelab_agent_state{state=\"idle\"} 1\n".into(),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in\n{text}");
    }
}

/// Issue 24: how the last run's system was obtained, why it was built here, and how long
/// the prebuilt path took; a run that obtained nothing (a poll, an old record), none of
/// these families; a build with `[prebuilt]` off is built here, with no reason.
#[test]
fn how_the_system_was_obtained_is_exported() {
    use crate::state::obtained::{Fallback, How, Obtained};
    let text = text_of(deployed_state(), &Record::default());
    assert!(!text.contains("homelab_agent_last_run_obtained"), "{text}");
    let mut state = deployed_state();
    state.history[0].obtained = Some(crate::state::obtained::built_here());
    let text = text_of(state.clone(), &Record::default());
    assert!(
        text.contains("homelab_agent_last_run_obtained{how=\"built-here\"} 1\n"),
        "{text}"
    );
    assert!(
        text.lines()
            .filter(|l| l.starts_with("homelab_agent_last_run_prebuilt_fallback{"))
            .all(|l| l.ends_with(" 0")),
        "no reason: {text}"
    );
    assert!(
        !text.contains("homelab_agent_last_run_fetch_duration_seconds "),
        "no prebuilt path: {text}"
    );
    state.history[0].obtained = Some(Obtained {
        how: How::BuiltHere,
        fetch_ms: Some(2_500),
        signer: None,
        fallback: Some(Fallback::NotFetched),
        why: Some("lost".into()),
    });
    let text = text_of(state.clone(), &Record::default());
    for expected in [
        "homelab_agent_last_run_obtained{how=\"built-here\"} 1\n",
        "homelab_agent_last_run_obtained{how=\"prebuilt\"} 0\n",
        "homelab_agent_last_run_prebuilt_fallback{reason=\"not-fetched\"} 1\n",
        "homelab_agent_last_run_prebuilt_fallback{reason=\"missing\"} 0\n",
        "homelab_agent_last_run_fetch_duration_seconds 2.500\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    state.history[0].obtained = Some(Obtained {
        how: How::Prebuilt,
        fetch_ms: Some(800),
        signer: Some("ci".into()),
        fallback: None,
        why: None,
    });
    let text = text_of(state, &Record::default());
    assert!(
        text.contains("homelab_agent_last_run_obtained{how=\"prebuilt\"} 1\n"),
        "{text}"
    );
    assert!(
        !text.contains("homelab_agent_last_run_prebuilt_fallback{reason=\"not-fetched\"} 1"),
        "{text}"
    );
}

#[test]
fn the_same_facts_render_the_same_bytes() {
    let record = Record {
        poll_failures_total: 3,
        ..Record::default()
    };
    assert_eq!(
        text_of(deployed_state(), &record),
        text_of(deployed_state(), &record)
    );
}

#[test]
fn a_failed_rolled_back_bad_head_and_a_pause_are_shown() {
    let mut state = deployed_state();
    let bad = "b".repeat(40);
    let mut run = Run::new(Outcome::Failed);
    run.commit = Some(bad.clone());
    run.phase = Some(Phase::Health);
    run.rolled_back = Some(true);
    run.error = Some("health check failed".into());
    run.hint = Some("push a fix, a distinct hint".into());
    state.push_run(run);
    state.mark_bad(&bad, Phase::Health, "unhealthy");
    state.last_handled = Some(bad.clone());
    state.paused = Some(crate::pause::Paused {
        since: "2026-11-25T10:00:00Z".into(),
        until: None,
        reason: Some("a \"quoted\" \\ reason".into()),
    });
    let text = text_of(state, &Record::default());
    for expected in [
        "homelab_agent_last_run_outcome{outcome=\"failed\"} 1\n",
        "homelab_agent_last_run_rolled_back 1\n",
        "homelab_agent_bad_commit 1\n",
        "homelab_agent_bad_commits 1\n",
        "homelab_agent_paused 1\n",
        "homelab_agent_head_status{status=\"bad\"} 1\n",
        "homelab_agent_state{state=\"failed\"} 1\n",
        "phase=\"health\"",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    // The reason and the hint are for people (status), never a label: free text is no
    // series; labels stay kinds (issue 22).
    assert!(!text.contains("quoted"), "{text}");
    assert!(!text.contains("distinct hint"), "{text}");
    assert!(!text.contains("homelab_agent_paused_until"), "{text}");
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(render::escape_for_test("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

#[test]
fn the_record_counts_polls_and_keeps_since_times() {
    let mut r = Record::default();
    r.poll(true);
    r.poll(true);
    assert_eq!((r.poll_failures_total, r.poll_failures_consecutive), (2, 2));
    r.poll(false);
    assert_eq!((r.poll_failures_total, r.poll_failures_consecutive), (2, 0));
    let t = |s: &str| crate::model::time::Timestamp::from(s);
    let (t1, t2, t3, t4) = (
        t("2026-12-07T10:00:01Z"),
        t("2026-12-07T10:00:02Z"),
        t("2026-12-07T10:00:03Z"),
        t("2026-12-07T10:00:04Z"),
    );
    r.observe(Some("c1"), false, t1);
    r.observe(Some("c1"), true, t2);
    assert_eq!(r.head_since, Some(t1));
    assert_eq!(r.reboot_required_since, Some(t2));
    r.observe(Some("c2"), true, t3);
    assert_eq!(r.head_since, Some(t3));
    assert_eq!(r.reboot_required_since, Some(t2));
    r.observe(None, false, t4);
    assert_eq!(r.head.as_deref(), Some("c2"));
    assert!(r.reboot_required_since.is_none());
}

/// metrics.json as the string-timed agent wrote it loads with its times, is written back
/// in the same text, and a time that is not one is none (the rest still loads).
#[test]
fn an_old_metrics_record_loads_and_is_written_back_in_the_same_text() {
    let old = r#"{"poll_failures_total":3,"poll_failures_consecutive":1,"head":"c1","head_since":"2026-12-07T10:00:01Z","reboot_required_since":null}"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(super::record::FILE), old).unwrap();
    let r = Record::read(dir.path());
    assert_eq!(r.poll_failures_total, 3);
    assert_eq!(
        r.head_since,
        Some(crate::model::time::Timestamp::from("2026-12-07T10:00:01Z"))
    );
    assert_eq!(serde_json::to_string(&r).unwrap(), old);
    let bad = r#"{"poll_failures_total":2,"head":"c1","head_since":"yesterday"}"#;
    std::fs::write(dir.path().join(super::record::FILE), bad).unwrap();
    let r = Record::read(dir.path());
    assert_eq!((r.poll_failures_total, r.head_since), (2, None));
}

#[test]
fn an_unchanged_file_is_not_rewritten_and_no_temp_file_is_left() {
    let dir = tempfile::tempdir().unwrap();
    // Left by a writer that was killed mid-write.
    std::fs::write(dir.path().join(format!(".{FILE}.tmp-999999-0")), "half").unwrap();
    assert!(write_if_changed(dir.path(), b"a 1\n").unwrap());
    let first = std::fs::metadata(dir.path().join(FILE)).unwrap();
    assert!(!write_if_changed(dir.path(), b"a 1\n").unwrap());
    let again = std::fs::metadata(dir.path().join(FILE)).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&first),
        std::os::unix::fs::MetadataExt::ino(&again)
    );
    assert!(write_if_changed(dir.path(), b"a 2\n").unwrap());
    assert_eq!(std::fs::read(dir.path().join(FILE)).unwrap(), b"a 2\n");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [FILE]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644 & !umask()
    );
}

fn umask() -> u32 {
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    nix::sys::stat::umask(old);
    old.bits()
}

#[test]
fn a_missing_directory_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let err = write_if_changed(&dir.path().join("missing"), b"a 1\n").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

/// Issue 19 item 9: a reboot held back because no trial can be armed says so in a metric.
#[test]
fn a_reboot_held_back_says_what_it_waits_for() {
    let s = crate::config::parse(
        Path::new("/etc/test.toml"),
        "[source]\nurl = \"/r\"\n[host]\nname = \"pi1\"\n[metrics]\ntextfile_dir = \"/tmp/x\"\n[[health.checks]]\ntype = \"tcp\"\naddress = \"127.0.0.1:22\"\n[reboot]\npolicy = \"when-required\"\n",
    )
    .unwrap();
    let state = deployed_state();
    let mut facts = Facts {
        state: state.clone(),
        reboot_required: Some(true),
        ..Facts::default()
    };
    facts.reboot.policy = crate::reboot::policy::Facts {
        booted: Some("/nix/store/old".into()),
        target: Some(crate::reboot::policy::Target {
            system: "/nix/store/x".into(),
            generation: None,
            live: true,
        }),
        kernel_changed: Some(true),
        ..Default::default()
    };
    let view = Status::from_facts(&s, facts);
    let text = render(&Snapshot {
        version: "1.2.3",
        view: &view,
        state: &state,
        paused: None,
        record: &Record::default(),
        activation_budget: std::time::Duration::from_secs(1800),
    });
    assert!(
        text.contains("homelab_agent_reboot_waiting{for=\"trial\"} 1"),
        "{text}"
    );
    // Nothing pending: no sample at all.
    assert!(!text_of(deployed_state(), &Record::default()).contains("homelab_agent_reboot_waiting"));
}

/// Issue 23 items 8-9: an activation in progress has its start and deadline; a build
/// waiting out its backoff has its count and next try; neither otherwise.
#[test]
fn an_activation_and_a_build_backoff_have_their_series() {
    let text = text_of(deployed_state(), &Record::default());
    assert!(!text.contains("homelab_agent_activation_"), "{text}");
    assert!(!text.contains("homelab_agent_build_retries"), "{text}");

    let mut state = deployed_state();
    state.intent = Some(crate::state::Intent {
        kind: crate::state::IntentKind::Deploy,
        step: crate::state::Step::Checking,
        commit: Some("b".repeat(40)),
        subject: None,
        system: "/nix/store/y".into(),
        previous_system: "/nix/store/x".into(),
        previous_generation: Some(7),
        started_at: "2026-11-25T11:00:00Z".into(),
        activation: "t".into(),
    });
    state.retries = Some(crate::state::Retry {
        commit: "c".repeat(40),
        count: 2,
        kind: Some(crate::failure::Kind::Transient),
        not_before: Some("2026-11-25T11:20:00Z".into()),
        config: None,
    });
    let text = text_of(state, &Record::default());
    for line in [
        "homelab_agent_activation_started_timestamp_seconds 1795604400\n",
        "homelab_agent_activation_deadline_timestamp_seconds 1795606200\n",
        "homelab_agent_build_retries 2\n",
        "homelab_agent_next_build_timestamp_seconds 1795605600\n",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}
