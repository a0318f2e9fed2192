//! Times and durations, one way (jiff).
//!
//! - [`Timestamp`]: a stored time (state, history, the runtime dir, pauses, reboots):
//!   RFC 3339 in UTC to the second, `2026-11-24T12:00:00Z`, as the files have always held
//!   it, so old files load unchanged and new ones read the same.
//! - [`parse_duration`]: a duration as written in the config or on the command line
//!   (`30s`, `5m`, `1h30m`, `1h 30min`, `2days`, `1d 12h`, `1 week`), read with jiff's
//!   friendly format; a lone `0` is zero.
//! - [`format_duration`]: a duration as shown to people (`5m`, `1h 30m`, `2days 3h`), the
//!   wording the agent has always used.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A stored time: an instant, kept to the second, shown and stored as RFC 3339 in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(jiff::Timestamp);

impl Timestamp {
    /// Now, to the second.
    pub fn now() -> Timestamp {
        Timestamp::from_jiff(jiff::Timestamp::now())
    }

    /// `t`, to the second (earlier fractions dropped, as a stored time never had them).
    pub fn from_jiff(t: jiff::Timestamp) -> Timestamp {
        // A whole number of seconds within jiff's range is always valid.
        Timestamp(jiff::Timestamp::from_second(t.as_second()).unwrap_or(t))
    }

    /// `t`, to the second; held to the years jiff handles (-9999 to 9999).
    pub fn from_system(t: SystemTime) -> Timestamp {
        let t = jiff::Timestamp::try_from(t).unwrap_or(if t < SystemTime::UNIX_EPOCH {
            jiff::Timestamp::MIN
        } else {
            jiff::Timestamp::MAX
        });
        Timestamp::from_jiff(t)
    }

    pub fn as_jiff(self) -> jiff::Timestamp {
        self.0
    }

    pub fn to_system(self) -> SystemTime {
        SystemTime::from(self.0)
    }

    /// The text of `t` as a stored time (`2026-11-24T12:00:00Z`).
    pub fn text_of(t: SystemTime) -> String {
        Timestamp::from_system(t).to_string()
    }

    /// A stored time's text as a [`SystemTime`]; `None` when it is not one.
    pub fn system_of(text: &str) -> Option<SystemTime> {
        Timestamp::parse(text).ok().map(Timestamp::to_system)
    }

    /// A stored time read back: RFC 3339 (`2026-11-24T12:00:00Z`, any offset, fractions
    /// dropped).
    pub fn parse(text: &str) -> Result<Timestamp, TimestampError> {
        text.parse::<jiff::Timestamp>()
            .map(Timestamp::from_jiff)
            .map_err(|_| TimestampError(crate::text::quote(text)))
    }

    /// `d` after this, saturating at the end of jiff's range.
    pub fn plus(self, d: Duration) -> Timestamp {
        let d = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
        Timestamp::from_jiff(self.0.checked_add(d).unwrap_or(jiff::Timestamp::MAX))
    }

    /// How long after `earlier` this is; zero when it is not after it.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::try_from(self.0.duration_since(earlier.0)).unwrap_or(Duration::ZERO)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // jiff prints no fraction for a whole second: `2026-11-24T12:00:00Z`.
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<jiff::Timestamp> for Timestamp {
    fn from(t: jiff::Timestamp) -> Timestamp {
        Timestamp::from_jiff(t)
    }
}

/// Tests write times as text: `"2026-11-24T12:00:00Z".into()`.
#[cfg(test)]
impl From<&str> for Timestamp {
    fn from(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl std::str::FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(text: &str) -> Result<Timestamp, TimestampError> {
        Timestamp::parse(text)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A stored time that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a time (RFC 3339, e.g. 2026-11-24T12:00:00Z)")]
pub struct TimestampError(String);

/// Why a duration's text was refused (before any range check).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationTextError {
    #[error("expected a number and a unit")]
    NotADuration,
    #[error("a duration cannot be negative")]
    Negative,
    #[error("longer than any duration the agent takes")]
    TooLong,
}

/// A duration as written by a person: numbers with units, the units of jiff's friendly
/// format (`30s`, `5m`, `1h30m`, `1h 30min`, `2days`, `1 week`, `90 seconds`, `100ms`), days
/// and weeks of 24 hours, months and years of 30.44 and 365.25 days as
/// [`format_duration`] shows them; a lone `0` is zero. As before jiff, the parts add up in
/// any order (`30m 1h`), as systemd reads them too. Blanks around it are the caller's to
/// trim.
pub fn parse_duration(text: &str) -> Result<Duration, DurationTextError> {
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.starts_with('-') {
        return Err(DurationTextError::Negative);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    loop {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(DurationTextError::NotADuration);
        }
        let after = rest[digits..].trim_start();
        let unit = after.len() - after.trim_start_matches(char::is_alphabetic).len();
        if unit == 0 {
            return Err(DurationTextError::NotADuration);
        }
        total = total
            .checked_add(part(&rest[..digits], &after[..unit])?)
            .ok_or(DurationTextError::TooLong)?;
        rest = after[unit..].trim_start();
        if rest.is_empty() {
            return Ok(total);
        }
    }
}

/// One number and its unit, read by jiff's friendly parser.
fn part(number: &str, unit: &str) -> Result<Duration, DurationTextError> {
    let parser = jiff::fmt::friendly::SpanParser::new();
    let span: jiff::Span = parser.parse_span(format!("{number}{unit}")).map_err(|_| {
        // A unit jiff knows with a number beyond its range (`100000000y`) is too long.
        match parser.parse_span(format!("1{unit}")) {
            Ok(_) => DurationTextError::TooLong,
            Err(_) => DurationTextError::NotADuration,
        }
    })?;
    let calendar = u64::try_from(span.get_years()).unwrap_or(0) * YEAR
        + u64::try_from(span.get_months()).unwrap_or(0) * MONTH;
    let rest = span
        .years(0)
        .months(0)
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .ok()
        .and_then(|d| Duration::try_from(d).ok())
        .ok_or(DurationTextError::TooLong)?;
    rest.checked_add(Duration::from_secs(calendar))
        .ok_or(DurationTextError::TooLong)
}

/// A year and a month as durations (humantime's lengths, kept): 365.25 and 30.44 days.
const YEAR: u64 = 31_557_600;
const MONTH: u64 = 2_630_016;

/// `d` as people read it, the agent's wording since its first release: units from the
/// largest, blank-separated, zero units left out: `0s`, `90ms`, `5m`, `1h 30m`,
/// `2days 3h`, `1month 3days` (a month is 30.44 days, a year 365.25).
pub fn format_duration(d: Duration) -> FormattedDuration {
    FormattedDuration(d)
}

/// See [`format_duration`].
#[derive(Debug, Clone, Copy)]
pub struct FormattedDuration(Duration);

impl fmt::Display for FormattedDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let nanos = u64::from(self.0.subsec_nanos());
        if secs == 0 && nanos == 0 {
            return f.write_str("0s");
        }
        let in_year = secs % YEAR;
        let in_month = in_year % MONTH;
        let in_day = in_month % 86_400;
        let parts: [(u64, &str, bool); 9] = [
            (secs / YEAR, "year", true),
            (in_year / MONTH, "month", true),
            (in_month / 86_400, "day", true),
            (in_day / 3600, "h", false),
            (in_day % 3600 / 60, "m", false),
            (in_day % 60, "s", false),
            (nanos / 1_000_000, "ms", false),
            (nanos / 1000 % 1000, "us", false),
            (nanos % 1000, "ns", false),
        ];
        let mut started = false;
        for (value, unit, plural) in parts {
            if value == 0 {
                continue;
            }
            if started {
                f.write_str(" ")?;
            }
            write!(f, "{value}{unit}")?;
            if plural && value > 1 {
                f.write_str("s")?;
            }
            started = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
