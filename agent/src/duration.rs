//! Durations as people write and read them: numbers with units, read with jiff's friendly
//! format (`30s`, `5m`, `1h30m`, `1h 30min`, `2days`, `1 week`; a lone `0` is zero) and shown
//! with the words the agent has always used (`5m`, `1h 30m`, `2days 3h`). Plumbing: it
//! imports no other module, so every layer (process.rs included) can use it.

use std::fmt;
use std::time::Duration;

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
