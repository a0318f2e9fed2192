//! The limits every duration and number in the config must fall within, in one table.
//!
//! A value outside its range is refused by `config check` (exit 78) and by every command,
//! with the file, the key and the line: a zero timeout turns every deployment into a
//! rollback, and an absurd one (`settle = "100000000y"`) leaves an unverified system
//! live with the lock held for ever. The ranges are generous for real machines; the
//! lower ends allow the test suite's fake system (a 2 s activation timeout), and the
//! README "Configuration" section lists them.

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

/// Whether `value` is inside the key's range; the message says which end it crosses.
pub fn check_duration(key: &DurationKey, text: &str, value: Duration) -> Result<(), String> {
    let show = |d: Duration| humantime::format_duration(d).to_string();
    if value < key.min {
        return Err(format!(
            "{text:?} is too short: must be at least {}",
            show(key.min)
        ));
    }
    if value > key.max {
        return Err(format!(
            "{text:?} is too long: must be at most {}",
            show(key.max)
        ));
    }
    Ok(())
}

/// Whether `value` is inside `range`.
pub fn check_number<T>(range: &RangeInclusive<T>, value: T) -> Result<(), String>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if range.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{value} is out of range: must be {} to {}",
            range.start(),
            range.end()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_outside_their_range_are_refused() {
        assert!(check_duration(&ACTIVATION_TIMEOUT, "0s", Duration::ZERO)
            .unwrap_err()
            .contains("at least 1s"));
        assert!(check_duration(&HEALTH_SETTLE, "0s", Duration::ZERO).is_ok());
        assert!(check_duration(&HEALTH_SETTLE, "2h", secs(2 * HOUR))
            .unwrap_err()
            .contains("at most 1h"));
        assert!(check_duration(&RUN_INTERVAL, "9s", secs(9)).is_err());
        assert!(check_duration(&RUN_INTERVAL, "10s", secs(10)).is_ok());
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
            let d = humantime::parse_duration(key.default).unwrap();
            check_duration(&key, key.default, d).unwrap();
        }
    }

    #[test]
    fn numbers_outside_their_range_are_refused() {
        assert!(check_number(&CONSECUTIVE, 0).is_err());
        assert!(check_number(&CONSECUTIVE, 1).is_ok());
        assert!(check_number(&HTTP_STATUS, 600)
            .unwrap_err()
            .contains("100 to 599"));
    }
}
