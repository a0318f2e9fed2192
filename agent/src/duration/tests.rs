use super::*;

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Every spelling the docs, the NixOS module's `duration` type and the tests use (and
/// humantime's other unit names), read as before.
#[test]
fn durations_read_every_old_spelling() {
    let cases: &[(&str, Duration)] = &[
        ("0", Duration::ZERO),
        ("0s", Duration::ZERO),
        ("1s", secs(1)),
        ("30s", secs(30)),
        ("90 seconds", secs(90)),
        ("1second", secs(1)),
        ("10secs", secs(10)),
        ("1sec", secs(1)),
        ("5m", secs(300)),
        ("5min", secs(300)),
        ("2mins", secs(120)),
        ("1minute", secs(60)),
        ("2 minutes", secs(120)),
        ("1h", secs(3600)),
        ("1hr", secs(3600)),
        ("2hrs", secs(7200)),
        ("1 hour", secs(3600)),
        ("3hours", secs(3 * 3600)),
        ("1h30m", secs(5400)),
        ("1h 30m", secs(5400)),
        ("2h 30min", secs(9000)),
        ("1d", secs(86_400)),
        ("1day", secs(86_400)),
        ("2days", secs(2 * 86_400)),
        ("1d 12h", secs(36 * 3600)),
        ("366d", secs(366 * 86_400)),
        ("1w", secs(7 * 86_400)),
        ("1wk", secs(7 * 86_400)),
        ("1 week", secs(7 * 86_400)),
        ("2weeks", secs(14 * 86_400)),
        ("100ms", Duration::from_millis(100)),
        ("5msec", Duration::from_millis(5)),
        ("3us", Duration::from_micros(3)),
        ("7usec", Duration::from_micros(7)),
        ("4ns", Duration::from_nanos(4)),
        ("9nsec", Duration::from_nanos(9)),
        ("1month", secs(MONTH)),
        ("2months", secs(2 * MONTH)),
        ("1y", secs(YEAR)),
        ("1year 18h", secs(YEAR + 18 * 3600)),
        // Parts in any order and repeated add up (the NixOS module's `duration` type allows
        // them, and systemd reads them so).
        ("30m 1h", secs(5400)),
        ("5m 5m", secs(600)),
        ("1h 15min 15min 10s 5min 30min", secs(3600 + 65 * 60 + 10)),
    ];
    for (text, want) in cases {
        assert_eq!(parse_duration(text), Ok(*want), "{text}");
    }
}

/// A bad duration says what a good one looks like, and a negative one says so.
#[test]
fn bad_durations_say_why() {
    for text in [
        "soon",
        "2",
        "",
        "5 parsecs",
        "h",
        "1h soon",
        "1M",
        "2h ago",
        "1.5h",
        "1h,30m",
    ] {
        assert_eq!(
            parse_duration(text),
            Err(DurationTextError::NotADuration),
            "{text:?}"
        );
    }
    for text in ["-2h", "-1s", "- 5m"] {
        assert_eq!(
            parse_duration(text),
            Err(DurationTextError::Negative),
            "{text}"
        );
    }
    assert_eq!(
        DurationTextError::NotADuration.to_string(),
        "expected a number and a unit"
    );
    assert_eq!(
        DurationTextError::Negative.to_string(),
        "a duration cannot be negative"
    );
    // A known unit with a number past jiff's range (19998 years) is too long, not garbage.
    assert_eq!(
        parse_duration("100000000y"),
        Err(DurationTextError::TooLong)
    );
}

/// Shown as the agent always showed them (humantime's wording, checked against
/// humantime 2.4 before it was dropped).
#[test]
fn durations_are_shown_as_before() {
    let cases: &[(Duration, &str)] = &[
        (Duration::ZERO, "0s"),
        (secs(1), "1s"),
        (secs(59), "59s"),
        (secs(90), "1m 30s"),
        (secs(300), "5m"),
        (secs(3600), "1h"),
        (secs(5400), "1h 30m"),
        (secs(86_400), "1day"),
        (secs(2 * 86_400 + 3 * 3600), "2days 3h"),
        (secs(7 * 86_400), "7days"),
        (secs(366 * 86_400), "1year 18h"),
        (secs(2 * YEAR + 3 * MONTH + 61), "2years 3months 1m 1s"),
        (secs(MONTH + 86_400), "1month 1day"),
        (Duration::from_millis(150), "150ms"),
        (Duration::from_millis(1500), "1s 500ms"),
        (Duration::from_nanos(1_001_001), "1ms 1us 1ns"),
    ];
    for (d, want) in cases {
        assert_eq!(format_duration(*d).to_string(), *want, "{d:?}");
    }
}

/// What is shown reads back as the same duration.
#[test]
fn a_shown_duration_reads_back() {
    for n in [
        1,
        59,
        61,
        3599,
        3601,
        86_399,
        86_401,
        700_000,
        YEAR + 1,
        10 * YEAR + 12_345,
    ] {
        let shown = format_duration(secs(n)).to_string();
        assert_eq!(parse_duration(&shown), Ok(secs(n)), "{shown}");
    }
}
