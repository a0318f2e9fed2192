//! Maintenance pause: `homelab-agent pause [--for 2h] [REASON]` and the pause half of
//! `resume`.
//!
//! A paused agent still polls (so `status` shows the branch head) but never fetches,
//! builds or activates. A pause with an expiry ends by itself: from that instant it is
//! inactive for `status`, `run` and the shipped alert rules (which compare its end with
//! the time), and the next `run` drops it from the state file and rewrites the metrics (a
//! daemon wakes a second after the end for that; under the timer, the next tick). The pause lives in `state.json` (written atomically, like every state
//! write), independent of a `rollback` pin: `resume` clears both and says which.

use crate::failure::Invalid;
use std::time::{Duration, SystemTime};

use crate::config::bounds::{self, DurationError};
use crate::model::time::Timestamp;
use crate::state::{State, Store};

/// The longest `--for` accepted: beyond that, pause without `--for` (until `resume`).
pub const MAX_FOR: Duration = bounds::PAUSE_FOR.max;

pub use crate::model::pause::Paused;

/// The pause in force now, if any (an expired one is none).
pub fn active(state: &State) -> Option<&Paused> {
    state
        .paused
        .as_ref()
        .filter(|p| p.active_at(SystemTime::now()))
}

/// `pause --for`: a positive duration up to [`MAX_FOR`], as `30m`, `2h`, `1d 12h`.
pub fn parse_for(text: &str) -> Result<Duration, Invalid> {
    parse_for_words(text).map_err(Invalid)
}

/// [`parse_for`], its problem in words.
fn parse_for_words(text: &str) -> Result<Duration, String> {
    const HINT: &str = "give e.g. 30m, 2h or 1d; without --for the pause lasts until `resume`";
    bounds::parse(&bounds::PAUSE_FOR, text).map_err(|e| match e {
        DurationError::Invalid(e) => format!("not a duration ({e}): {HINT}"),
        DurationError::TooShort => format!("a pause of 0s ends at once: {HINT}"),
        DurationError::TooLong => format!(
            // "366 days", not format_duration's "1year 18h".
            "longer than {} days: pause without --for instead (until `resume`)",
            MAX_FOR.as_secs() / 86_400
        ),
    })
}

/// The reason as stored: one line, trimmed, at most 200 characters; empty is none.
fn clean_reason(reason: Option<&str>) -> Option<String> {
    let line: String = reason?
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect();
    (!line.is_empty()).then_some(line)
}

/// Pauses deploys (replacing a pause in force); returns the new pause and the one it
/// replaced, if any. The caller holds the run lock.
pub fn pause(
    store: &Store,
    duration: Option<Duration>,
    reason: Option<&str>,
) -> anyhow::Result<(Paused, Option<Paused>)> {
    apply(store, new_pause(duration, reason))
}

/// A pause starting now.
pub fn new_pause(duration: Option<Duration>, reason: Option<&str>) -> Paused {
    let now = SystemTime::now();
    Paused {
        since: Timestamp::from_system(now),
        until: duration.map(|d| Timestamp::from_system(now).plus(d)),
        reason: clean_reason(reason),
    }
}

/// Records `paused` in the state (replacing a pause in force). The caller holds the lock.
pub fn apply(store: &Store, paused: Paused) -> anyhow::Result<(Paused, Option<Paused>)> {
    let mut state = store.load()?;
    let now = SystemTime::now();
    let replaced = state.paused.take().filter(|p| p.active_at(now));
    state.paused = Some(paused.clone());
    store.save(&state)?;
    Ok((paused, replaced))
}

/// Ends a pause; returns it (expired or not), or none when there was none. The caller
/// holds the run lock.
pub fn resume(store: &Store) -> anyhow::Result<Option<Paused>> {
    let mut state = store.load()?;
    let Some(paused) = state.paused.take() else {
        return Ok(None);
    };
    store.save(&state)?;
    Ok(Some(paused))
}

/// For messages: "since T until U: reason".
pub fn describe(p: &Paused) -> String {
    let mut text = format!("since {}", p.since);
    match &p.until {
        Some(u) => text.push_str(&format!(" until {u}")),
        None => text.push_str(" until `sudo homelab-agent resume`"),
    }
    if let Some(r) = &p.reason {
        text.push_str(&format!(": {}", crate::text::escape_controls(r, false)));
    }
    text
}

#[cfg(test)]
mod tests;

/// A pause asked for while a run holds the lock (`pause` during a build): a file in the
/// runtime directory that the run watches. The build stops at once and the run records
/// the pause; a run that was activating (never interrupted) leaves it to the next run,
/// which records it before anything else.
pub const REQUEST_FILE: &str = "pause-request.json";

/// Asks the run that holds the lock to pause.
pub fn request(runtime_dir: &std::path::Path, paused: &Paused) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(paused).map_err(std::io::Error::other)?;
    crate::state::write_atomic(&runtime_dir.join(REQUEST_FILE), &bytes)
}

/// Whether a pause was asked for (one stat, no read).
pub fn requested(runtime_dir: &std::path::Path) -> bool {
    runtime_dir.join(REQUEST_FILE).exists()
}

/// The pause asked for, taken (the file removed); none when there is none or it is
/// unreadable (removed too: a damaged request never blocks the agent).
pub fn take_request(runtime_dir: &std::path::Path) -> Option<Paused> {
    let path = runtime_dir.join(REQUEST_FILE);
    // The common case, on every poll: nothing asked, one stat and nothing else.
    if !path.exists() {
        return None;
    }
    let read = crate::state::read_regular(
        &path,
        4096,
        crate::state::Links::Refuse,
        "a pause request has",
    );
    let paused = match read {
        Ok(crate::state::Found::File(bytes)) => serde_json::from_slice(&bytes).ok(),
        _ => None,
    };
    let _ = std::fs::remove_file(&path);
    paused
}
