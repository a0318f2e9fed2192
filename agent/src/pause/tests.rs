use super::*;

#[test]
fn for_accepts_durations_and_explains_bad_ones() {
    assert_eq!(parse_for("2h").unwrap(), Duration::from_secs(7200));
    assert_eq!(parse_for("1d 12h").unwrap(), Duration::from_secs(36 * 3600));
    let cases = [
        ("0s", "a pause of 0s ends at once"),
        ("0", "a pause of 0s ends at once"),
        ("soon", "not a duration"),
        ("-2h", "not a duration"),
        ("2", "not a duration"),
        ("400d", "longer than"),
    ];
    for (text, expected) in cases {
        let err = parse_for(text).expect_err(text).0;
        assert!(err.contains(expected), "{text}: {err}");
    }
    assert_eq!(
        parse_for("0s").unwrap_err().0,
        "a pause of 0s ends at once: give e.g. 30m, 2h or 1d; without --for the pause lasts until `resume`"
    );
    assert_eq!(
        parse_for("soon").unwrap_err().0,
        "not a duration (expected a number and a unit): give e.g. 30m, 2h or 1d; without --for the pause lasts until `resume`"
    );
    assert_eq!(
        parse_for("367d").unwrap_err().0,
        "longer than 366 days: pause without --for instead (until `resume`)"
    );
    assert_eq!(parse_for(" 366d ").unwrap(), MAX_FOR);
}

#[test]
fn expiry_ends_a_pause_and_none_lasts() {
    let now = SystemTime::now();
    let at = |t: SystemTime| Some(crate::model::time::Timestamp::from_system(t));
    let mut p = Paused {
        since: "2026-01-01T00:00:00Z".into(),
        until: None,
        reason: None,
    };
    assert!(p.active_at(now));
    p.until = at(now + Duration::from_secs(60));
    assert!(p.active_at(now));
    p.until = at(now - Duration::from_secs(1));
    assert!(!p.active_at(now));
    // An unreadable expiry is no longer something a pause can hold: the state file's time
    // fields are typed, so such a file does not load as a state at all.
    assert!(serde_json::from_str::<Paused>(
        r#"{"since": "2026-01-01T00:00:00Z", "until": "garbage"}"#
    )
    .is_err());
}

#[test]
fn pause_and_resume_round_trip_through_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let (p, replaced) = pause(
        &store,
        Some(Duration::from_secs(3600)),
        Some("  moving\n the rack "),
    )
    .unwrap();
    assert!(replaced.is_none());
    assert_eq!(p.reason.as_deref(), Some("moving the rack"));
    let state = store.load().unwrap();
    assert_eq!(active(&state), Some(&p));
    let (_, replaced) = pause(&store, None, None).unwrap();
    assert_eq!(replaced, Some(p));
    let state = store.load().unwrap();
    assert!(state.paused.as_ref().unwrap().until.is_none());
    assert!(resume(&store).unwrap().is_some());
    assert!(store.load().unwrap().paused.is_none());
    assert!(resume(&store).unwrap().is_none());
}
