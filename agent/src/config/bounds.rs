//! The limits every duration and number in the config must fall within, in one table.
//!
//! A value outside its range is refused by `config check` (exit 78) and by every command,
//! with the file, the key and the line: a zero timeout turns every deployment into a
//! rollback, and an absurd one (`settle = "100000000y"`) leaves an unverified system
//! live with the lock held for ever. The ranges are generous for real machines; the
//! lower ends allow the test suite's fake system (a 2 s activation timeout), and the
//! README "Configuration" section lists them.

use crate::failure::Invalid;
use std::ops::RangeInclusive;
use std::time::Duration;

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
const fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// A duration key: its default and the range it must fall in.
#[derive(Debug, Clone, Copy)]
pub struct DurationKey {
    pub default: &'static str,
    pub min: Duration,
    pub max: Duration,
}

/// `[source] timeout`: one poll or fetch, connection included.
pub const SOURCE_TIMEOUT: DurationKey = DurationKey {
    default: "5m",
    min: secs(1),
    max: secs(HOUR),
};
/// `[build] timeout`: evaluation and build of one commit (a first build on a Pi can take
/// a day; a week is the cap).
pub const BUILD_TIMEOUT: DurationKey = DurationKey {
    default: "2h",
    min: secs(1),
    max: secs(7 * DAY),
};
/// `[activation] timeout`: one `switch-to-configuration` call (the rollback too).
pub const ACTIVATION_TIMEOUT: DurationKey = DurationKey {
    default: "15m",
    min: secs(1),
    max: secs(DAY),
};
/// `[health] settle`: the wait after activation; zero is fine.
pub const HEALTH_SETTLE: DurationKey = DurationKey {
    default: "10s",
    min: Duration::ZERO,
    max: secs(HOUR),
};
/// `[health] timeout`: all checks must pass within this.
pub const HEALTH_TIMEOUT: DurationKey = DurationKey {
    default: "5m",
    min: secs(1),
    max: secs(DAY),
};
/// `[health] interval`: between rounds of checks.
pub const HEALTH_INTERVAL: DurationKey = DurationKey {
    default: "5s",
    min: millis(100),
    max: secs(HOUR),
};
/// `[[health.checks]] timeout`: one check (its default depends on the type).
pub const CHECK_TIMEOUT: DurationKey = DurationKey {
    default: "10s",
    min: millis(100),
    max: secs(HOUR),
};
/// `[run] interval`: the daemon's poll period (`run` without `--once`).
pub const RUN_INTERVAL: DurationKey = DurationKey {
    default: "5m",
    min: secs(10),
    max: secs(7 * DAY),
};
/// `[run] jitter`: random delay added to each poll; zero is fine.
pub const RUN_JITTER: DurationKey = DurationKey {
    default: "30s",
    min: Duration::ZERO,
    max: secs(HOUR),
};

/// `pause --for` (not a config key: `default` is unused, a pause without `--for` lasts
/// until `resume`): any positive duration up to a year and a day.
pub const PAUSE_FOR: DurationKey = DurationKey {
    default: "2h",
    min: Duration::from_nanos(1),
    max: secs(366 * DAY),
};

/// `[health] consecutive`: rounds in a row that must all pass.
pub const CONSECUTIVE: RangeInclusive<u32> = 1..=100;
/// `[build] max_jobs`.
pub const MAX_JOBS: RangeInclusive<u32> = 1..=1024;
/// `[build] cores` (0: all cores, nix's own meaning).
pub const CORES: RangeInclusive<u32> = 0..=1024;
/// `expect_status` of an http check.
pub const HTTP_STATUS: RangeInclusive<u16> = 100..=599;
/// How many health checks a config may list.
pub const MAX_CHECKS: usize = 64;
/// Longest string accepted in an argument vector or check field (bytes).
pub const MAX_ARG_LEN: usize = 4096;

/// Why a duration was refused.
#[derive(Debug)]
pub enum DurationError {
    /// Not a duration at all (why, in words).
    Invalid(crate::duration::DurationTextError),
    /// Below the key's `min`.
    TooShort,
    /// Above the key's `max`.
    TooLong,
}

/// The one duration parser: `text` (`30s`, `5m`, `1d 12h`; surrounding blanks ignored)
/// read with jiff's friendly format ([`crate::duration::parse_duration`]), then held to the key's range. Callers with their own wording
/// (`pause --for`) branch on the [`DurationError`]; config keys use [`parse_duration`].
pub fn parse(key: &DurationKey, text: &str) -> Result<Duration, DurationError> {
    let d = crate::duration::parse_duration(text.trim()).map_err(|e| match e {
        // Past any range (`100000000y`): the key's "too long", with its limit.
        crate::duration::DurationTextError::TooLong => DurationError::TooLong,
        e => DurationError::Invalid(e),
    })?;
    if d < key.min {
        return Err(DurationError::TooShort);
    }
    if d > key.max {
        return Err(DurationError::TooLong);
    }
    Ok(d)
}

/// [`parse`] with the message a config key's error carries (the caller adds the key).
pub fn parse_duration(key: &DurationKey, text: &str) -> Result<Duration, Invalid> {
    parse_duration_words(key, text).map_err(Invalid)
}

/// [`parse_duration`], its problem in words.
fn parse_duration_words(key: &DurationKey, text: &str) -> Result<Duration, String> {
    let show = |d: Duration| crate::duration::format_duration(d).to_string();
    parse(key, text).map_err(|e| match e {
        DurationError::Invalid(e) => {
            format!(
                "invalid duration {}: {e} (examples: \"30s\", \"5m\", \"2h\")",
                crate::text::quote(text)
            )
        }
        DurationError::TooShort => {
            format!(
                "{} is too short: must be at least {}",
                crate::text::quote(text),
                show(key.min)
            )
        }
        DurationError::TooLong => {
            format!(
                "{} is too long: must be at most {}",
                crate::text::quote(text),
                show(key.max)
            )
        }
    })
}

/// Whether `value` is inside `range`.
pub fn check_number<T>(range: &RangeInclusive<T>, value: T) -> Result<(), Invalid>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if range.contains(&value) {
        Ok(())
    } else {
        Err(Invalid(format!(
            "{value} is out of range: must be {} to {}",
            range.start(),
            range.end()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_outside_their_range_are_refused() {
        assert_eq!(
            parse_duration(&ACTIVATION_TIMEOUT, "0s").unwrap_err().0,
            "\"0s\" is too short: must be at least 1s"
        );
        assert_eq!(
            parse_duration(&HEALTH_SETTLE, " 0s ").unwrap(),
            Duration::ZERO
        );
        assert_eq!(
            parse_duration(&HEALTH_SETTLE, "2h").unwrap_err().0,
            "\"2h\" is too long: must be at most 1h"
        );
        assert!(parse_duration(&RUN_INTERVAL, "9s").is_err());
        assert_eq!(parse_duration(&RUN_INTERVAL, "10s").unwrap(), secs(10));
    }

    #[test]
    fn a_bad_duration_says_what_a_good_one_looks_like() {
        let m = parse_duration(&RUN_INTERVAL, "soon").unwrap_err().0;
        assert_eq!(
            m,
            "invalid duration \"soon\": expected a number and a unit (examples: \"30s\", \"5m\", \"2h\")"
        );
        assert_eq!(
            parse_duration(&RUN_INTERVAL, "-1h").unwrap_err().0,
            "invalid duration \"-1h\": a duration cannot be negative (examples: \"30s\", \"5m\", \"2h\")"
        );
        // The old spellings, through the key's range.
        assert_eq!(parse_duration(&RUN_INTERVAL, "1h30m").unwrap(), secs(5400));
        assert_eq!(
            parse_duration(&RUN_INTERVAL, "2days").unwrap(),
            secs(2 * 86_400)
        );
        assert_eq!(parse_duration(&RUN_INTERVAL, " 5min ").unwrap(), secs(300));
        assert_eq!(
            parse_duration(&HEALTH_SETTLE, "100000000y").unwrap_err().0,
            "\"100000000y\" is too long: must be at most 1h"
        );
        assert!(matches!(
            parse(&RUN_INTERVAL, "-1h"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            parse(&RUN_INTERVAL, "9s"),
            Err(DurationError::TooShort)
        ));
        assert!(matches!(
            parse(&RUN_INTERVAL, "8d"),
            Err(DurationError::TooLong)
        ));
    }

    #[test]
    fn every_default_is_inside_its_own_range() {
        for key in [
            SOURCE_TIMEOUT,
            BUILD_TIMEOUT,
            ACTIVATION_TIMEOUT,
            HEALTH_SETTLE,
            HEALTH_TIMEOUT,
            HEALTH_INTERVAL,
            CHECK_TIMEOUT,
            RUN_INTERVAL,
            RUN_JITTER,
        ] {
            parse_duration(&key, key.default).unwrap();
        }
    }

    #[test]
    fn numbers_outside_their_range_are_refused() {
        assert!(check_number(&CONSECUTIVE, 0).is_err());
        assert!(check_number(&CONSECUTIVE, 1).is_ok());
        assert!(check_number(&HTTP_STATUS, 600)
            .unwrap_err()
            .0
            .contains("100 to 599"));
    }
}
