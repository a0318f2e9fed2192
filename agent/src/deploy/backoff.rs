//! The build backoff: a build that failed without it being the commit's fault (nix
//! missing, a timeout, a full disk) waits longer after each such failure before the same
//! commit is built again; `retry` ends the wait, and a configuration failure waits only
//! while the configuration is the same. One slot, shared by main's and the testing track.

use std::time::{Duration, SystemTime};

use crate::failure::Kind;
use crate::state::{Outcome, Phase, Retry, State};

use super::{short, Agent, Exit};

/// A build of `head` still waiting out its backoff: the kind of the failure that started
/// the wait, and what to say (main's cycle and the testing branch say the same).
pub(super) fn backoff_left(state: &State, head: &str, config: &str) -> Option<(Kind, String)> {
    let r = state.retries.as_ref().filter(|r| r.commit == head)?;
    // A configuration failure waits only while the configuration is the same.
    if r.config.as_deref().is_some_and(|then| then != config) {
        return None;
    }
    let until = r.not_before?.to_system();
    let left = until.duration_since(SystemTime::now()).ok()?;
    // A clock that jumped back must not stretch the wait past its longest.
    if left > MAX_BACKOFF {
        return None;
    }
    let kind = r.kind.unwrap_or(Kind::Transient);
    let hint = match kind {
        Kind::Configuration => {
            "a changed configuration ends the wait; `sudo homelab-agent retry` tries now"
        }
        _ => "`sudo homelab-agent retry` tries now",
    };
    let message = crate::failure::with_hint_line(
        format!(
            "the build of {} failed {} time(s) ({}); next try in {}",
            short(head),
            r.count,
            kind.as_str(),
            crate::duration::format_duration(Duration::from_secs(left.as_secs()))
        ),
        hint,
    );
    Some((kind, message))
}

impl Agent {
    /// A build that failed without it being the commit's fault. A build is the costliest
    /// thing a Pi does: the same commit waits longer after each such failure (`retry`
    /// ends the wait). Saved at once; returns the count and the wait, or how the run ended.
    pub(super) fn back_off(
        &self,
        state: &mut State,
        commit: &str,
        kind: Kind,
    ) -> Result<(u32, std::time::Duration), Exit> {
        let count = match &state.retries {
            Some(r) if r.commit == commit => r.count + 1,
            _ => 1,
        };
        let wait = backoff(count);
        state.retries = Some(Retry {
            commit: commit.to_string(),
            count,
            kind: Some(kind),
            not_before: Some(crate::state::now().plus(wait)),
            config: (kind == Kind::Configuration).then(|| self.settings.digest.clone()),
        });
        match self.save(state) {
            Ok(()) => Ok((count, wait)),
            Err(e) => Err(self.stop_run(e)),
        }
    }

    /// A build of `head` is still waiting out its backoff: news only, and the same kind
    /// of failure as the one that started the wait (so systemd still shows it).
    pub(super) fn waiting(&self, state: &State, head: &str) -> Option<Exit> {
        let (kind, message) = backoff_left(state, head, &self.settings.digest)?;
        log::info!("{}", message.lines().next().unwrap_or_default());
        self.note_poll(
            Outcome::Failed,
            Some(head),
            Some(&message),
            Some(Phase::Build),
        );
        Some(Exit::Failed(kind))
    }
}

/// The longest a build waits after failures that blame nothing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

/// 10 minutes after the first failure, doubling, at most [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> Duration {
    let base = Duration::from_secs(600);
    base.saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(MAX_BACKOFF)
}
