//! What the agent remembers, under the state directory.
//!
//! `state.json` holds everything; `bad-commits.json` (`memory.rs`) holds again what must
//! never be forgotten, the commits known bad for this host, so that losing or damaging
//! `state.json` never re-activates one. Both are written atomically (temp file, fsync,
//! rename, fsync of the directory) and sealed with a checksum (`format.rs`); they are read
//! only as bounded regular files, never through a symlink, never from a FIFO or device
//! (`file.rs`). Readable by everyone (no secret is ever stored), so `homelab-agent status`
//! works for any user. A damaged file is moved aside (the newest few copies are kept);
//! the run goes on from what is known and [`State::damage`] says what happened.

mod file;
pub mod format;
mod memory;
pub mod obtained;
mod store;

pub use file::{
    read_bounded, read_regular, remove_stale_temps, write_atomic, Found, Links, MAX_SIZE,
};
pub use memory::FILE as MEMORY_FILE;
pub use store::Store;

use serde::{Deserialize, Serialize};

use crate::model::check::CheckResult;
pub use crate::model::time::Timestamp;

pub const FILE: &str = "state.json";
/// 2: sealed with a checksum line (1 had none and is still read).
pub const VERSION: u32 = 2;
/// Runs kept in history.
pub const HISTORY_LIMIT: usize = 100;
/// Bad commits remembered.
pub(crate) const BAD_LIMIT: usize = 20;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    pub version: u32,
    /// The remote head last dealt with (deployed, unchanged, or failed for good): a poll
    /// that sees this head again has nothing to do.
    pub last_handled: Option<String>,
    pub deployed: Option<Deployed>,
    /// Written before the system is touched, cleared when the run is recorded.
    pub intent: Option<Intent>,
    /// A rollback that failed: retried first thing by the next run.
    pub rollback_pending: Option<RollbackPending>,
    /// Commits that failed deterministically for this host; not tried again.
    pub bad_commits: Vec<BadCommit>,
    /// Interrupted attempts per commit (a config that kills the agent must not loop).
    pub interruptions: Vec<Interruption>,
    /// Transient failures in a row for the current head (build timeout, disk full).
    pub retries: Option<Retry>,
    /// Newest first.
    pub history: Vec<Run>,
    /// Where the last damaged state file was moved (see `damage`).
    pub recovered_from: Option<String>,
    /// The last time a state record was found damaged or lost, and what was done: kept
    /// until the next damage, so `status` can say the state was recovered.
    pub damage: Option<Damage>,
    /// Set by an operator's `rollback`: `run` polls but does not deploy until `resume`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<Pinned>,
    /// The branch head refused by the trust checks (signature, downgrade): not fetched
    /// or checked again while the head and the trust policy stay the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refused>,
    /// Map mode (the generic image): the host this machine resolved to, and how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pivot: Option<crate::model::pivot::Resolved>,
    /// Set by an operator's `pause`: `run` polls but does not deploy until `resume` or
    /// the pause's expiry (`pause`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<crate::model::pause::Paused>,
    /// The testing branch's last commit handled (deploy/testing.rs): what is on test.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub testing: Option<Testing>,
    /// The testing branch's head refused by the trust checks (deploy/testing/refusal.rs):
    /// not fetched or checked again while that head and the trust policy stay the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub testing_refused: Option<Refused>,
}

/// A head refused before evaluation (agent/src/trust).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    pub commit: String,
    /// When.
    pub at: Timestamp,
    pub reason: crate::model::trust::Reason,
    /// What is wrong.
    pub error: String,
    /// What to do about it (absent in files written before hints were kept apart: see
    /// [`State::hints_apart`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// What would have been accepted (signers file or keyring and who is in it, or the
    /// floor commit).
    pub expected: String,
    /// A digest of the trust policy it was refused under (verify mode, key file contents,
    /// floors): when that changes, the head is checked again.
    pub policy: String,
}

/// The last commit of the testing branch the agent dealt with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Testing {
    pub branch: String,
    pub commit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `tested` (live until a reboot or a main deployment), `unchanged` (same system as
    /// what runs), or `failed` (rolled back; the commit is bad).
    pub outcome: Outcome,
    /// The system that was test-activated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub at: Timestamp,
}

impl Testing {
    /// The tested system, if it is still what runs (a reboot or a deployment replaces it).
    pub fn live(&self, current: Option<&std::path::Path>) -> bool {
        self.outcome == Outcome::Tested
            && self.system.as_deref().map(std::path::Path::new) == current
            && current.is_some()
    }
}

/// A damaged or lost state record, as a load found it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Damage {
    /// When it was found.
    pub at: Timestamp,
    /// What was wrong, per file (`state.json: checksum mismatch (...)`).
    pub reason: String,
    /// Where the damaged `state.json` was moved (not deleted; the newest few copies are
    /// kept); none when it was missing, or when a read-only command found it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_as: Option<String>,
    /// Found by a read-only command (`status`, `history`): still in place, the next `run`
    /// moves it aside.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

/// The machine held on a system by the operator (`rollback`), until `resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pinned {
    /// When.
    pub since: Timestamp,
    /// The system it is held on, and its generation.
    pub system: String,
    pub generation: Option<u32>,
    /// What it was rolled back from.
    pub from_system: String,
    pub from_commit: Option<String>,
    pub from_generation: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployed {
    pub commit: Option<String>,
    pub subject: Option<String>,
    pub system: String,
    pub generation: Option<u32>,
    pub at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IntentKind {
    Deploy,
    Rollback,
    /// A commit of the testing branch: `switch-to-configuration test` and the checks
    /// only; never the profile, never the boot default (deploy/testing.rs).
    Test,
}

/// Where a deployment stands: the kill-point recovery reads this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// `switch-to-configuration test` of the new system may be running.
    Activating,
    /// The new system is live, health checks running.
    Checking,
    /// Healthy: the profile is being set and the boot entry written.
    Committing,
    /// Going back to the previous system.
    RollingBack,
}

impl Step {
    /// In words, after "while": "the agent was stopped while rolling back".
    pub fn as_words(self) -> &'static str {
        match self {
            Step::Activating => "activating",
            Step::Checking => "checking",
            Step::Committing => "committing",
            Step::RollingBack => "rolling back",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    pub kind: IntentKind,
    pub step: Step,
    pub commit: Option<String>,
    pub subject: Option<String>,
    pub system: String,
    pub previous_system: String,
    pub previous_generation: Option<u32>,
    pub started_at: Timestamp,
    /// The tag every `switch-to-configuration` of this intent carries (its environment,
    /// its transient unit): how the next run finds an activation that outlived us.
    #[serde(default)]
    pub activation: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackPending {
    pub system: String,
    pub reason: String,
    pub since: Timestamp,
    /// What to do about it, apart from `reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BadCommit {
    pub commit: String,
    pub at: Timestamp,
    pub phase: Phase,
    pub error: String,
    /// What to do about it, apart from `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The system it built, if it got that far: a live system that is one of these was
    /// never verified, and reconciling restores the profile's generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interruption {
    pub commit: String,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retry {
    pub commit: String,
    pub count: u32,
    /// The kind of the last failure (not the commit's: those mark it bad instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<crate::failure::Kind>,
    /// Not built again before this time: a backoff that doubles per failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    /// For a configuration failure: the configuration's digest then. Another one now (the
    /// operator fixed it) ends the wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    UpToDate,
    Deployed,
    Unchanged,
    Failed,
    Skipped,
    Interrupted,
    /// An operator's `homelab-agent rollback` that succeeded.
    RolledBack,
    /// A poll while pinned: the head is seen, not deployed (news only, never history).
    Pinned,
    /// A poll while paused (`homelab-agent pause`): news only, never history.
    Paused,
    /// A poll that waits for the head's prebuilt manifest (`[prebuilt] wait`): news
    /// only, never history.
    Waiting,
    /// A testing-branch commit activated with `test` only and healthy: live until the
    /// next reboot or main deployment, never the boot default.
    Tested,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::UpToDate => "up-to-date",
            Outcome::Deployed => "deployed",
            Outcome::Unchanged => "unchanged",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Interrupted => "interrupted",
            Outcome::RolledBack => "rolled-back",
            Outcome::Pinned => "pinned",
            Outcome::Paused => "paused",
            Outcome::Waiting => "waiting",
            Outcome::Tested => "tested",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Fetch,
    Verify,
    Build,
    Activate,
    Health,
    Rollback,
    Commit,
    /// After a reboot into the system: its boot (verify-boot, agent/src/reboot/).
    Boot,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Fetch => "fetch",
            Phase::Verify => "verify",
            Phase::Build => "build",
            Phase::Activate => "activate",
            Phase::Health => "health",
            Phase::Rollback => "rollback",
            Phase::Commit => "commit",
            Phase::Boot => "boot",
        }
    }
}

/// One run, as history and `status` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub at: Timestamp,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What to do about `error` (the failure's own hint; absent: its kind's applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub checks: Vec<CheckResult>,
    pub duration_ms: u64,
    /// How long the build took, when this run built (`crate::ledger::Took`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_ms: Option<u64>,
    /// How long the health checks took (settle included), when they ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_ms: Option<u64>,
    /// How the system was obtained, for a run that built (prebuilt, or built here and,
    /// with `[prebuilt]` on, why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obtained: Option<obtained::Obtained>,
}

impl Run {
    pub fn new(outcome: Outcome) -> Run {
        Run {
            at: now(),
            outcome,
            commit: None,
            subject: None,
            phase: None,
            error: None,
            hint: None,
            rolled_back: None,
            system: None,
            generation: None,
            checks: Vec::new(),
            duration_ms: 0,
            build_ms: None,
            health_ms: None,
            obtained: None,
        }
    }
}

impl Run {
    /// The error and its hint apart (see [`State::hints_apart`]).
    pub fn hint_apart(&mut self) {
        if let Some(error) = &mut self.error {
            apart(error, &mut self.hint);
        }
    }
}

/// Moves the hint lines out of `text` into `hint` (joined after any hint already there).
fn apart(text: &mut String, hint: &mut Option<String>) {
    if let (message, Some(found)) = crate::failure::split_stored_hint(text) {
        *text = message;
        *hint = Some(match hint.take() {
            Some(h) => format!("{h}; {found}"),
            None => found,
        });
    }
}

/// Now, to the second (stored as RFC 3339 in UTC).
pub fn now() -> Timestamp {
    Timestamp::now()
}

impl State {
    pub fn push_run(&mut self, mut run: Run) {
        run.hint_apart();
        self.history.insert(0, run);
        self.history.truncate(HISTORY_LIMIT);
    }

    pub fn bad(&self, commit: &str) -> Option<&BadCommit> {
        self.bad_commits.iter().find(|b| b.commit == commit)
    }

    pub fn mark_bad(&mut self, commit: &str, phase: Phase, error: &str) {
        self.mark_bad_system(commit, phase, error, None);
    }

    /// [`State::mark_bad`], remembering the system the commit built.
    pub fn mark_bad_system(
        &mut self,
        commit: &str,
        phase: Phase,
        error: &str,
        system: Option<&str>,
    ) {
        self.bad_commits.retain(|b| b.commit != commit);
        self.bad_commits.insert(
            0,
            BadCommit {
                commit: commit.into(),
                at: now(),
                phase,
                error: error.chars().take(2000).collect(),
                hint: None,
                system: system.map(str::to_string),
            },
        );
        self.bad_commits.truncate(BAD_LIMIT);
        if let Some(b) = self.bad_commits.first_mut() {
            apart(&mut b.error, &mut b.hint);
        }
    }

    /// Every record's hint in its own field. A version before hints were kept apart
    /// stored them at the end of the error text (a last line `hint: ...`); this splits such a
    /// text when it is read, and any text a writer still joined when it is recorded.
    pub fn hints_apart(&mut self) {
        for run in &mut self.history {
            run.hint_apart();
        }
        for b in &mut self.bad_commits {
            apart(&mut b.error, &mut b.hint);
        }
        for r in [&mut self.refused, &mut self.testing_refused]
            .into_iter()
            .flatten()
        {
            apart(&mut r.error, &mut r.hint);
        }
        if let Some(p) = &mut self.rollback_pending {
            apart(&mut p.reason, &mut p.hint);
        }
    }

    /// Counts an interruption of `commit`'s deployment and returns how many there were.
    pub fn count_interruption(&mut self, commit: &str) -> u32 {
        let count = self
            .interruptions
            .iter()
            .find(|i| i.commit == commit)
            .map_or(0, |i| i.count)
            + 1;
        self.interruptions.retain(|i| i.commit != commit);
        self.interruptions.insert(
            0,
            Interruption {
                commit: commit.into(),
                count,
            },
        );
        self.interruptions.truncate(BAD_LIMIT);
        count
    }
}

#[cfg(test)]
mod damage_tests;
#[cfg(test)]
mod old_file_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// User words for every step (issue 22): never the Debug name ("rollingback").
    #[test]
    fn every_step_has_words() {
        let all = [
            Step::Activating,
            Step::Checking,
            Step::Committing,
            Step::RollingBack,
        ];
        let words: Vec<&str> = all.iter().map(|s| s.as_words()).collect();
        assert_eq!(
            words,
            ["activating", "checking", "committing", "rolling back"]
        );
    }

    #[test]
    fn round_trip_and_history_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let mut state = store.load().unwrap();
        for i in 0..(HISTORY_LIMIT + 5) {
            let mut run = Run::new(Outcome::Deployed);
            run.commit = Some(format!("c{i}"));
            state.push_run(run);
        }
        store.save(&state).unwrap();
        let back = store.load().unwrap();
        assert_eq!(back.history.len(), HISTORY_LIMIT);
        assert_eq!(
            back.history[0].commit.as_deref(),
            Some(&*format!("c{}", HISTORY_LIMIT + 4))
        );
        // No temp file left behind; the bad-commit record beside the state.
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [MEMORY_FILE, FILE]);
    }

    #[test]
    fn bad_commits_and_interruptions_are_counted() {
        let mut s = State::default();
        s.mark_bad("a", Phase::Build, "x");
        s.mark_bad("a", Phase::Health, "y");
        assert_eq!(s.bad_commits.len(), 1);
        assert_eq!(s.bad("a").unwrap().phase, Phase::Health);
        assert_eq!(s.count_interruption("c"), 1);
        assert_eq!(s.count_interruption("c"), 2);
    }
}
