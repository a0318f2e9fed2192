use super::*;

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A stored time keeps the text old files hold: RFC 3339 in UTC to the second.
#[test]
fn stored_times_keep_their_text() {
    let t = Timestamp::parse("2026-11-24T12:00:00Z").unwrap();
    assert_eq!(t.to_string(), "2026-11-24T12:00:00Z");
    assert_eq!(
        serde_json::to_string(&t).unwrap(),
        "\"2026-11-24T12:00:00Z\""
    );
    let back: Timestamp = serde_json::from_str("\"2026-11-24T12:00:00Z\"").unwrap();
    assert_eq!(back, t);
    // Another offset, a fraction: the same instant, to the second, in UTC.
    assert_eq!(Timestamp::parse("2026-11-24T13:00:00.75+01:00").unwrap(), t);
    // Now is whole seconds, in UTC.
    let now = Timestamp::now().to_string();
    assert_eq!(now.len(), "2026-11-24T12:00:00Z".len(), "{now}");
    assert!(now.ends_with('Z') && !now.contains('.'), "{now}");
    assert_eq!(Timestamp::parse(&now).unwrap().to_string(), now);
}

#[test]
fn a_stored_time_that_is_not_one_is_refused_saying_so() {
    let e = serde_json::from_str::<Timestamp>("\"yesterday\"").unwrap_err();
    assert_eq!(
        e.to_string(),
        "\"yesterday\" is not a time (RFC 3339, e.g. 2026-11-24T12:00:00Z)"
    );
    assert!(Timestamp::parse("2026-11-24").is_err());
}

#[test]
fn arithmetic_saturates_and_never_goes_negative() {
    let t = Timestamp::parse("2026-11-24T12:00:00Z").unwrap();
    let later = t.plus(secs(90));
    assert_eq!(later.to_string(), "2026-11-24T12:01:30Z");
    assert_eq!(later.since(t), secs(90));
    assert_eq!(t.since(later), Duration::ZERO);
    assert!(t.plus(Duration::MAX) > later);
    let system = t.to_system();
    assert_eq!(Timestamp::from_system(system), t);
    assert_eq!(Timestamp::text_of(system), "2026-11-24T12:00:00Z");
    assert_eq!(Timestamp::system_of("2026-11-24T12:00:00Z"), Some(system));
    assert_eq!(Timestamp::system_of("noon"), None);
}
