//! Map mode's answer as stored: the host a generic-image machine resolved to.

use serde::{Deserialize, Serialize};

/// The host a generic machine resolved to, kept in the state (`state.pivot`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    pub host: String,
    pub by: String,
    /// The commit whose map (or host file) named it.
    pub commit: String,
    pub at: super::time::Timestamp,
}
