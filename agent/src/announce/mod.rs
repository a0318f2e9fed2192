//! Telling people about a recorded run: `[[notify.webhooks]]` (ntfy or JSON posts) and
//! `[[notify.commands]]` (hook commands with the outcome in their environment).
//!
//! The run is saved first: the ledger (`crate::ledger`) keeps the event of each run it
//! recorded, and the caller hands them to [`send_all`] after the cycle, every receiver at once,
//! each under its own short timeout. A receiver that is down, slow or failing is logged
//! as a warning and changes nothing else: not the exit code, not the state. A poll that
//! records nothing (up to date, skipped, a network failure) notifies nobody.
//!
//! (Not [`crate::notify`], which is systemd's sd_notify `STATUS=`.)

mod hook;
mod webhook;

use std::time::Duration;

use serde::Serialize;

use crate::config::announce::{NotifySettings, EVENTS};
use crate::state::{Outcome, Run, State};

/// The version of the JSON document (docs/contract-extensions.md); only keys are added.
pub const SCHEMA_VERSION: u32 = 1;

/// What happened, as receivers see it: the JSON body of a `json` webhook, the text of
/// an `ntfy` one, and the variables of a hook command.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub schema: &'static str,
    pub version: u32,
    /// One of the recorded outcomes: deployed, unchanged, failed, rolled-back, interrupted.
    pub outcome: &'static str,
    /// A rollback failed or a run was interrupted: a person must look.
    pub needs_attention: bool,
    pub host: String,
    pub at: String,
    pub commit: Option<String>,
    pub subject: Option<String>,
    pub generation: Option<u32>,
    pub system: Option<String>,
    pub phase: Option<&'static str>,
    /// Whether a failed deployment was rolled back (absent when nothing was activated).
    pub rolled_back: Option<bool>,
    pub error: Option<String>,
    /// What to do about `error` (added, issue 22): the failure's own hint, or null (then
    /// its kind's general hint applies). Never part of `error`.
    pub hint: Option<String>,
    pub duration_ms: u64,
    /// An operator's rollback: the commit and generation it rolled back from (added; null
    /// otherwise, or when unknown). `commit` and `generation` are what runs now.
    pub from_commit: Option<String>,
    pub from_generation: Option<u32>,
    /// One line for people: what the other fields say.
    pub message: String,
}

impl Event {
    pub fn of(run: &Run, host: &str, state: &State) -> Event {
        // The hint apart from the error, whoever wrote the run.
        let mut apart = run.clone();
        apart.hint_apart();
        let run = &apart;
        let needs_attention =
            state.rollback_pending.is_some() || run.outcome == Outcome::Interrupted;
        let mut event = Event {
            schema: "homelab-agent.notification",
            version: SCHEMA_VERSION,
            outcome: run.outcome.as_str(),
            needs_attention,
            host: host.to_string(),
            at: run.at.to_string(),
            commit: run.commit.clone(),
            subject: run.subject.clone(),
            generation: run.generation,
            system: run.system.clone(),
            phase: run.phase.map(|p| p.as_str()),
            rolled_back: run.rolled_back,
            error: run.error.clone(),
            hint: run.hint.clone(),
            duration_ms: run.duration_ms,
            from_commit: None,
            from_generation: None,
            message: String::new(),
        };
        if run.outcome == Outcome::RolledBack {
            // The pin `rollback` just made says where it came from.
            if let Some(pin) = &state.pinned {
                event.from_commit = pin.from_commit.clone();
                event.from_generation = pin.from_generation;
            }
        }
        event.message = event.summary();
        event
    }

    /// Whether any receiver can listen for it: not a testing branch's `tested` run (a
    /// failed test is `failed`, and is).
    pub fn notifiable(&self) -> bool {
        EVENTS.contains(&self.outcome)
    }

    /// Whether a receiver listening for `on` hears this event.
    pub fn matches(&self, on: &[String]) -> bool {
        on.iter()
            .any(|e| e == self.outcome || (self.needs_attention && e == "needs-attention"))
    }

    fn summary(&self) -> String {
        let commit = self
            .commit
            .as_deref()
            .map(|c| format!(" {}", &c[..c.len().min(12)]))
            .unwrap_or_default();
        let subject = self
            .subject
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        let mut text = match self.outcome {
            "deployed" => format!("{}: deployed{commit}{subject}", self.host),
            "unchanged" => format!("{}: built{commit}{subject}, same system", self.host),
            "rolled-back" => {
                let from = match (&self.from_commit, self.from_generation) {
                    (Some(c), Some(g)) => format!(" from {} (generation {g})", short12(c)),
                    (Some(c), None) => format!(" from {}", short12(c)),
                    (None, Some(g)) => format!(" from generation {g}"),
                    (None, None) => String::new(),
                };
                let to = match (self.generation, &self.commit) {
                    (Some(g), Some(c)) => format!(" to generation {g} ({})", short12(c)),
                    (Some(g), None) => format!(" to generation {g}"),
                    (None, Some(c)) => format!(" to {}", short12(c)),
                    (None, None) => String::new(),
                };
                format!("{}: rolled back{from}{to}", self.host)
            }
            "interrupted" if self.commit.is_some() => format!(
                "{}: a run was interrupted while deploying{commit}{subject}",
                self.host
            ),
            "interrupted" => format!("{}: a run was interrupted", self.host),
            _ => format!(
                "{}: failed{commit}{subject}{}",
                self.host,
                self.phase.map(|p| format!(" in {p}")).unwrap_or_default()
            ),
        };
        match self.generation {
            // A rollback's message already says which generation it went to.
            Some(g) if self.outcome != "rolled-back" => {
                text.push_str(&format!(" as generation {g}"))
            }
            _ => {}
        }
        match self.rolled_back {
            Some(true) => text.push_str("; rolled back"),
            Some(false) if self.needs_attention => text.push_str("; ROLLBACK FAILED"),
            _ => {}
        }
        if let Some(first) = self.error.as_deref().and_then(|e| e.lines().next()) {
            text.push_str(": ");
            text.push_str(first);
        }
        text
    }
}

/// The first 12 characters of a commit id, as messages show it.
fn short12(c: &str) -> &str {
    &c[..c.len().min(12)]
}

/// Delivers the events a run recorded (`Ledger::take_events`), one after the other.
/// Returns when every receiver answered or timed out: never later than the longest
/// configured timeout (plus a moment to stop a command) per event.
pub async fn send_all(notify: &NotifySettings, events: Vec<Event>) {
    for event in events {
        send(notify, &event).await;
    }
}

/// Every receiver that listens for `event`, at once.
pub async fn send(notify: &NotifySettings, event: &Event) {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, w) in notify.webhooks.iter().enumerate() {
        if event.matches(&w.on) {
            let (w, event) = (w.clone(), event.clone());
            tasks.spawn(async move { webhook::deliver(i, &w, &event).await });
        }
    }
    for (i, h) in notify.commands.iter().enumerate() {
        if event.matches(&h.on) {
            let (h, event) = (h.clone(), event.clone());
            tasks.spawn(async move { hook::run(i, &h, &event).await });
        }
    }
    let longest = notify
        .webhooks
        .iter()
        .map(|w| w.timeout)
        .chain(notify.commands.iter().map(|h| h.timeout))
        .max()
        .unwrap_or_default();
    // Each receiver has its own timeout; this one only guards against a bug there.
    let all = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(longest + Duration::from_secs(5), all)
        .await
        .is_err()
    {
        log::warn!("notifications: gave up waiting for the receivers");
    }
}

#[cfg(test)]
mod tests;
