//! Health checks: is the system we just activated fit to become the boot default?
//!
//! A check answers with a [`Verdict`]: healthy, unhealthy (it ran and said no), or could
//! not run (missing binary, unusable URL): the outer/inner distinction an operator needs.
//! [`wait_until_healthy`] applies the policy: settle, then rounds until every check passes
//! `consecutive` rounds in a row, or the deadline ends. "Could not run" fails at once: it
//! will not fix itself, and it never counts as a pass.

mod checks;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Check, HealthSettings, Settings, SourceSettings};

pub use crate::model::check::{CheckResult, Verdict};

/// The outcome of [`wait_until_healthy`].
#[derive(Debug, Clone)]
pub struct Report {
    pub healthy: bool,
    pub rounds: u32,
    /// The last round's results.
    pub results: Vec<CheckResult>,
}

impl Report {
    /// The first failing check, as "name: what it saw", for status and history.
    pub fn failure(&self) -> Option<String> {
        self.results
            .iter()
            .find(|r| !r.verdict.is_healthy())
            .map(|r| {
                format!(
                    "{}: {} ({})",
                    r.name,
                    r.verdict.detail(),
                    r.verdict.label().to_lowercase()
                )
            })
    }
}

/// Everything a check needs from outside itself.
pub struct Context<'a> {
    pub settings: &'a Settings,
    /// How the `remote` check asks for the branch head: the way the Source door does
    /// (doors/git.rs: in the daemon, in its git child), or [`InProcess`].
    pub remote: &'a dyn RemoteHead,
}

/// The watched branch's head on the remote, within `timeout`; `Err`: what went wrong.
pub trait RemoteHead {
    fn head(&self, timeout: Duration)
        -> Pin<Box<dyn Future<Output = Result<String, String>> + '_>>;
}

/// The head asked in this process (the `check` command).
pub struct InProcess<'a>(pub &'a SourceSettings);

impl RemoteHead for InProcess<'_> {
    fn head(
        &self,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + '_>> {
        Box::pin(async move {
            crate::source::remote_head(self.0, timeout)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Runs every check once, one after the other (each bounded by its own timeout).
pub async fn run_round(checks: &[Check], ctx: &Context<'_>) -> Vec<CheckResult> {
    let mut results = Vec::with_capacity(checks.len());
    for check in checks {
        let verdict = checks::run(check, ctx).await;
        log::debug!(
            "health check {}: {} {}",
            check.name,
            verdict.label(),
            verdict.detail()
        );
        results.push(CheckResult {
            name: check.name.clone(),
            verdict,
        });
    }
    results
}

/// Settle, then check in rounds until healthy or out of time.
pub async fn wait_until_healthy(policy: &HealthSettings, ctx: &Context<'_>) -> Report {
    if policy.checks.is_empty() {
        return Report {
            healthy: true,
            rounds: 0,
            results: Vec::new(),
        };
    }
    tokio::time::sleep(policy.settle).await;
    // Monotonic: a clock jump (NTP on an RTC-less Pi) cannot shorten or stretch this.
    let deadline = Instant::now() + policy.timeout;
    let mut passes = 0;
    let mut rounds = 0;
    loop {
        rounds += 1;
        let results = run_round(&policy.checks, ctx).await;
        crate::failpoint("mid_health");
        let cannot_run = results
            .iter()
            .any(|r| matches!(r.verdict, Verdict::CannotRun(_)));
        if results.iter().all(|r| r.verdict.is_healthy()) {
            passes += 1;
            if passes >= policy.consecutive {
                return Report {
                    healthy: true,
                    rounds,
                    results,
                };
            }
        } else {
            passes = 0;
        }
        let next = Instant::now() + policy.interval;
        if cannot_run || next >= deadline {
            return Report {
                healthy: false,
                rounds,
                results,
            };
        }
        crate::notify::status(&format!("health: round {rounds} not yet healthy, retrying"));
        tokio::time::sleep_until(next).await;
    }
}
