//! The operator's maintenance pause as stored (`state.json` `paused`).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The operator's pause, as kept in `state.json` under `paused`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    /// When it began (RFC 3339).
    pub since: String,
    /// When it ends by itself (RFC 3339); none: until `resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Why, as the operator gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Paused {
    /// When it ends by itself, if it does.
    pub fn until_time(&self) -> Option<SystemTime> {
        self.until
            .as_deref()
            .and_then(|u| humantime::parse_rfc3339(u).ok())
    }

    /// In force at `now`: no expiry, or an expiry still ahead.
    pub fn active_at(&self, now: SystemTime) -> bool {
        match (&self.until, self.until_time()) {
            (None, _) => true,
            (Some(_), Some(until)) => now < until,
            // An unreadable expiry: keep the pause (never deploy by accident); `resume` ends it.
            (Some(_), None) => true,
        }
    }
}
