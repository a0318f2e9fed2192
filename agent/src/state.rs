//! What the agent remembers, in one JSON file under the state directory.
//!
//! Written atomically (temp file, fsync, rename, fsync of the directory), so a power cut
//! leaves the old or the new file, never half of one. Readable by everyone (no secret is
//! ever stored), so `homelab-agent status` works for any user. A file that cannot be read
//! is moved aside and the agent starts over from what the machine itself says.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::health::CheckResult;

pub const FILE: &str = "state.json";
const VERSION: u32 = 1;
/// Runs kept in history.
pub const HISTORY_LIMIT: usize = 100;
/// Bad commits remembered.
const BAD_LIMIT: usize = 20;

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
    /// Set when the state file was unreadable and moved aside.
    pub recovered_from: Option<String>,
    /// Set by an operator's `rollback`: `run` polls but does not deploy until `resume`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<Pinned>,
}

/// The machine held on a system by the operator (`rollback`), until `resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pinned {
    /// When (RFC 3339).
    pub since: String,
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
    pub at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IntentKind {
    Deploy,
    Rollback,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    pub kind: IntentKind,
    pub step: Step,
    pub commit: Option<String>,
    pub subject: Option<String>,
    pub system: String,
    pub previous_system: String,
    pub previous_generation: Option<u32>,
    pub started_at: String,
    /// The tag every `switch-to-configuration` of this intent carries (its environment,
    /// its transient unit): how the next run finds an activation that outlived us.
    #[serde(default)]
    pub activation: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackPending {
    pub system: String,
    pub reason: String,
    pub since: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BadCommit {
    pub commit: String,
    pub at: String,
    pub phase: Phase,
    pub error: String,
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
        }
    }
}

/// One run, as history and `status` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub at: String,
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub checks: Vec<CheckResult>,
    pub duration_ms: u64,
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
            rolled_back: None,
            system: None,
            generation: None,
            checks: Vec::new(),
            duration_ms: 0,
        }
    }
}

/// Now, RFC 3339 in UTC, to the second.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl State {
    pub fn push_run(&mut self, run: Run) {
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
                system: system.map(str::to_string),
            },
        );
        self.bad_commits.truncate(BAD_LIMIT);
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

/// The state file of a state directory.
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// Reads the state without changing anything on disk (for `status`, `history`).
    pub fn peek(&self) -> anyhow::Result<State> {
        match std::fs::read(self.path()) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "{} is unreadable ({e}); the next `run` moves it aside and starts over",
                    self.path().display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
                version: VERSION,
                ..State::default()
            }),
            Err(e) => Err(anyhow::anyhow!(
                "cannot read {}: {e}",
                self.path().display()
            )),
        }
    }

    /// Reads the state for a run: an unreadable file is moved aside (never deleted) and a
    /// fresh state is returned with `recovered_from` naming where the old one went.
    pub fn load(&self) -> anyhow::Result<State> {
        self.ensure_dir()?;
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State {
                    version: VERSION,
                    ..State::default()
                })
            }
            Err(e) => anyhow::bail!(
                "cannot read {}: {e}\nhint: check permissions of the state directory",
                path.display()
            ),
        };
        match serde_json::from_slice::<State>(&bytes) {
            Ok(state) if state.version <= VERSION => Ok(state),
            result => {
                let why = match result {
                    Err(e) => e.to_string(),
                    Ok(s) => format!("written by a newer agent (state version {})", s.version),
                };
                let aside = self
                    .dir
                    .join(format!("{FILE}.corrupt-{}", std::process::id()));
                std::fs::rename(&path, &aside).map_err(|e| {
                    anyhow::anyhow!("moving unreadable {} aside: {e}", path.display())
                })?;
                log::warn!(
                    "state file {} unreadable ({why}); moved to {} and starting over",
                    path.display(),
                    aside.display()
                );
                Ok(State {
                    version: VERSION,
                    recovered_from: Some(aside.display().to_string()),
                    ..State::default()
                })
            }
        }
    }

    /// Replaces the state file atomically and durably.
    pub fn save(&self, state: &State) -> anyhow::Result<()> {
        self.ensure_dir()?;
        let mut state = state.clone();
        state.version = VERSION;
        let bytes = serde_json::to_vec_pretty(&state)?;
        write_atomic(&self.path(), &bytes).map_err(|e| {
            anyhow::anyhow!(
                "writing {}: {e}\nhint: is the disk full or read-only?",
                self.path().display()
            )
        })
    }

    fn ensure_dir(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| anyhow::anyhow!("creating state directory {}: {e}", self.dir.display()))
    }
}

/// temp file in the same directory → write → fsync → rename over → fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            // Never follow a planted symlink.
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // No temp file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from(FILE)]);
    }

    #[test]
    fn every_truncation_is_recovered_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let mut state = State::default();
        state.mark_bad("abc", Phase::Health, "boom");
        state.push_run(Run::new(Outcome::Failed));
        store.save(&state).unwrap();
        let full = std::fs::read(store.path()).unwrap();
        for cut in (0..full.len() - 1).step_by(7) {
            std::fs::write(store.path(), &full[..cut]).unwrap();
            let loaded = store.load().unwrap();
            assert!(loaded.recovered_from.is_some(), "cut at {cut} not detected");
            assert!(
                !store.path().exists(),
                "unreadable file was not moved aside"
            );
            assert!(Path::new(loaded.recovered_from.as_ref().unwrap()).exists());
        }
    }

    #[test]
    fn symlinked_temp_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let target = dir.path().join(FILE);
        let tmp = dir
            .path()
            .join(format!(".{FILE}.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        assert!(write_atomic(&target, b"{}").is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
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
