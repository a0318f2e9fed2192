//! The model: the small shared vocabulary every layer above speaks (what the state file
//! stores, what the configuration names), with no side effects and no imports from the
//! modules above it.
//!
//! | file          | owns                                                                |
//! |---------------|---------------------------------------------------------------------|
//! | `check.rs`    | a health check's [`check::Verdict`] and [`check::CheckResult`]      |
//! | `commit.rs`   | commit ids as shown ([`commit::short`]), the cache's candidate ref   |
//! | `pause.rs`    | the operator's pause as stored ([`pause::Paused`])                  |
//! | `pivot.rs`    | the host a generic machine resolved to ([`pivot::Resolved`])        |
//! | `time.rs`     | stored times ([`time::Timestamp`]), RFC 3339 to the second          |
//! | `trust.rs`    | why a head was refused ([`trust::Reason`])                          |
//! | `url.rs`      | the remote's URL, parsed and checked ([`url::RemoteUrl`])           |

pub mod check;
pub mod commit;
pub mod pause;
pub mod pivot;
pub mod time;
pub mod trust;
pub mod url;
