//! The operator's maintenance pause as stored (`state.json` `paused`).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::time::Timestamp;

/// The operator's pause, as kept in `state.json` under `paused`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    /// When it began.
    pub since: Timestamp,
    /// When it ends by itself; none: until `resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
    /// Why, as the operator gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Paused {
    /// When it ends by itself, if it does.
    pub fn until_time(&self) -> Option<SystemTime> {
        self.until.map(Timestamp::to_system)
    }

    /// In force at `now`: no expiry, or an expiry still ahead.
    pub fn active_at(&self, now: SystemTime) -> bool {
        self.until_time().is_none_or(|until| now < until)
    }
}
