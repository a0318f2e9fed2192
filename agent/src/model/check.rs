//! A health check's answer: healthy, unhealthy (it ran and said no), or could not run.
//! Stored in the state file's history (`checks`), shown by `status`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", content = "detail", rename_all = "kebab-case")]
pub enum Verdict {
    Healthy(String),
    Unhealthy(String),
    CannotRun(String),
}

impl Verdict {
    pub fn is_healthy(&self) -> bool {
        matches!(self, Verdict::Healthy(_))
    }
    pub fn detail(&self) -> &str {
        match self {
            Verdict::Healthy(d) | Verdict::Unhealthy(d) | Verdict::CannotRun(d) => d,
        }
    }
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Healthy(_) => "healthy",
            Verdict::Unhealthy(_) => "UNHEALTHY",
            Verdict::CannotRun(_) => "COULD NOT RUN",
        }
    }
}

/// One check's result in a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    #[serde(flatten)]
    pub verdict: Verdict,
}
