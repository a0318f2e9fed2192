//! Stored times, one way (jiff): [`Timestamp`], every time state.json and bad-commits.json
//! hold (runs, deployments, intents, bad commits, pins, pauses, the retry backoff ...),
//! RFC 3339 in UTC to the second, `2026-11-24T12:00:00Z`, as the files have always held
//! it, so old files load unchanged and new ones read the same.
//!
//! Durations (read and shown) are crate::duration's, below every layer.

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

/// For volatile files (the runtime directory): an optional stored time where one that
/// cannot be read (absent, `null`, empty, or not a time) is simply none, as such a file
/// has always been read (`#[serde(default, deserialize_with = "lenient")]`).
pub fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(value.as_str().and_then(|t| Timestamp::parse(t).ok()))
}

/// A stored time that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a time (RFC 3339, e.g. 2026-11-24T12:00:00Z)")]
pub struct TimestampError(String);

#[cfg(test)]
mod tests;
