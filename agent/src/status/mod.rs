//! `homelab-agent status` and `history`: one typed view model ([`Status`]), built from
//! [`Facts`] (the state file, the volatile last poll and progress, the run lock, and the
//! live system links: ground truth over memory), rendered as JSON (stable keys,
//! design.md "Status contract") or as text for a terminal (`human.rs`).
//!
//! | file           | owns                                                      |
//! |----------------|-----------------------------------------------------------|
//! | `mod.rs`       | the facts, the view model and its JSON                    |
//! | `attention.rs` | what needs a person, where the head stands, the summary   |
//! | `human.rs`     | the terminal rendering: attention first, relative times   |
//! | `tests.rs`     | fixture states rendered and compared with `fixtures/*.txt` |

mod attention;
mod human;
mod pivot;
pub mod style;
#[cfg(test)]
mod tests;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Settings;
use crate::failure::{Failure, Kind};
use crate::lock::{self, Probe};
use crate::runtime::{self, LastPoll, Progress};
use crate::state::{self, BadCommit, Pinned, Run, State};
use crate::system;

pub use human::{relative, write_history_human};

use attention::{attention, head, step_words, summary};

/// Bumped when a key changes meaning; keys are only ever added (design.md).
pub const SCHEMA_VERSION: u32 = 2;

/// Everything `status` reads, gathered once; the view is a pure function of it.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub state: State,
    /// The state file could not be read or parsed: what it was.
    pub state_problem: Option<Failure>,
    pub poll: Option<LastPoll>,
    pub progress: Option<Progress>,
    pub lock: Option<Probe>,
    pub current_system: Option<PathBuf>,
    pub booted_system: Option<PathBuf>,
    pub reboot_required: Option<bool>,
    pub profile: Option<system::profile::Generation>,
    /// Map mode only: this machine's identity (or why it cannot be read).
    pub machine: Option<Result<crate::pivot::identity::Machine, Failure>>,
    /// The reboot record and what the policy needs (agent/src/reboot/view.rs).
    pub reboot: crate::reboot::view::Facts,
    /// The last build plan (`nix/plan.rs`): what was or would be compiled here.
    pub build_plan: Option<serde_json::Value>,
}

impl Facts {
    pub fn read(settings: &Settings) -> Facts {
        let p = &settings.paths;
        let (state, state_problem) = load_state(&p.state_dir);
        // The lock first: a run that just took it writes its progress a moment later.
        Facts {
            lock: Some(lock::probe(&p.runtime_dir)),
            progress: runtime::read_progress(&p.runtime_dir),
            ..Facts::settled(settings, state, state_problem)
        }
    }

    /// All but the run's lock and progress, around the state (from [`load_state`]) the
    /// caller already has: for the lock holder, its work done (the metrics).
    pub fn settled(settings: &Settings, state: State, state_problem: Option<Failure>) -> Facts {
        let p = &settings.paths;
        Facts {
            poll: runtime::read(&p.runtime_dir),
            progress: None,
            lock: None,
            current_system: system::resolve(&p.current_system),
            booted_system: system::resolve(&p.booted_system),
            reboot_required: system::reboot_required(&p.booted_system, &p.current_system),
            profile: system::profile::current(&p.profile),
            machine: pivot::read(settings),
            reboot: crate::reboot::view::read(settings, &state),
            build_plan: crate::nix::plan::read_record(&p.state_dir),
            state,
            state_problem,
        }
    }
}

/// The one word a monitor needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Label {
    Idle,
    Running,
    Pinned,
    Failed,
    NeedsAttention,
    Unknown,
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Idle => "idle",
            Label::Running => "running",
            Label::Pinned => "pinned",
            Label::Failed => "failed",
            Label::NeedsAttention => "needs-attention",
            Label::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub schema_version: u32,
    pub state: Label,
    /// One line: what the machine is doing or what is wrong.
    pub message: String,
    /// What to do about it, if anything.
    pub hint: Option<String>,
    /// What needs a person, most urgent first (human output leads with these).
    pub attention: Vec<Attention>,
    pub host: String,
    pub source: SourceView,
    /// The branch head last seen, and where it stands.
    pub head: Option<HeadView>,
    pub deployed: DeployedView,
    pub last_run: LastRunView,
    /// The run in progress (the lock is held), and its phase.
    pub running: Option<RunningView>,
    pub pinned: Option<Pinned>,
    /// An operator's `pause` in force (an expired one is none).
    pub paused: Option<PausedView>,
    pub current_system: Option<String>,
    pub booted_system: Option<String>,
    pub reboot_required: Option<bool>,
    pub profile_generation: Option<u32>,
    pub next_poll: Option<String>,
    /// The branch head's failure, when the head is a commit known bad (never a stale one).
    pub bad_commit: Option<BadCommit>,
    /// A rollback that failed: the machine needs a look (message; the hint is in
    /// `attention`).
    pub needs_attention: Option<String>,
    /// A run in progress, or killed (its intent is still on disk).
    pub in_progress: Option<String>,
    pub state_recovered_from: Option<String>,
    /// The state was found damaged or lost: when, why, where the damaged file went.
    pub state_damage: Option<state::Damage>,
    /// The branch head refused by the trust checks (unsigned, untrusted key, downgrade):
    /// when, why (`reason`, `error` without the hint) and what was `expected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<state::Refused>,
    /// Map mode (the generic image): the host found, or the map line to add.
    pub pivot: Option<pivot::PivotView>,
    /// Reboot policy, pending reboot, last boot and fallback (added; agent/src/reboot/).
    pub reboot: crate::reboot::View,
    /// The last build plan: derivations to build here, paths to fetch, unsigned ones,
    /// and whether `[build] max_local_builds` refused it (docs/contract-extensions.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_plan: Option<serde_json::Value>,
    /// The testing branch's last commit handled, and whether its system is live now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub testing: Option<TestingView>,
}

#[derive(Debug, Serialize)]
pub struct TestingView {
    pub branch: String,
    pub commit: String,
    pub subject: Option<String>,
    /// `tested`, `unchanged` or `failed`.
    pub outcome: String,
    pub system: Option<String>,
    pub at: String,
    /// The tested system is what runs now (until a reboot or the next deployment).
    pub live: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttentionKind {
    RollbackFailed,
    Interrupted,
    Drift,
    StateLost,
    Pinned,
    Paused,
}

#[derive(Debug, Clone, Serialize)]
pub struct Attention {
    pub kind: AttentionKind,
    pub message: String,
    pub hint: String,
    /// Since when (RFC 3339), if known.
    pub since: Option<String>,
}

/// `paused`: every key always present (null when not given).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PausedView {
    pub reason: Option<String>,
    /// RFC 3339.
    pub since: String,
    /// When it ends by itself (RFC 3339); null: until `resume`.
    pub until: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SourceView {
    pub url: String,
    pub branch: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadStatus {
    /// What runs.
    Deployed,
    /// Not deployed yet: the next run tries it.
    Pending,
    /// Failed for this host; not retried until the branch moves (or `retry`).
    Bad,
    /// The machine is pinned by `rollback`: the head is not deployed until `resume`.
    PinnedPast,
    /// Refused by the trust checks (status `refused` says why); never built.
    Refused,
}

#[derive(Debug, Serialize)]
pub struct HeadView {
    pub commit: String,
    /// When the agent last saw it (RFC 3339), if since boot.
    pub seen_at: Option<String>,
    pub status: HeadStatus,
}

#[derive(Debug, Default, Serialize)]
pub struct DeployedView {
    pub commit: Option<String>,
    pub subject: Option<String>,
    pub system: Option<String>,
    pub generation: Option<u32>,
    pub at: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct LastRunView {
    pub at: Option<String>,
    pub outcome: Option<String>,
    pub commit: Option<String>,
    pub phase: Option<String>,
    /// What went wrong (without the hint).
    pub error: Option<String>,
    pub hint: Option<String>,
    pub rolled_back: Option<bool>,
    pub failed_check: Option<String>,
    /// With `[prebuilt]` on: how the run's system was obtained (prebuilt, or built here
    /// and why), and how long fetching took.
    pub obtained: Option<crate::state::obtained::Obtained>,
}

/// `running.phase` of a run that holds the lock and has not reported a phase yet.
pub const STARTING: &str = "starting";

#[derive(Debug, Serialize)]
pub struct RunningView {
    pub pid: Option<u32>,
    /// What it is doing (the text it sent as `STATUS=`).
    pub phase: Option<String>,
    pub since: Option<String>,
    /// nix's progress while it builds (added; docs/status.md), else null.
    pub progress: Option<runtime::BuildProgress>,
}

impl Status {
    /// Reads everything from disk and the lock, then builds the view.
    pub fn gather(settings: &Settings, state: &State) -> Status {
        let mut facts = Facts::read(settings);
        facts.state = state.clone();
        Status::from_facts(settings, facts)
    }

    pub fn from_facts(settings: &Settings, f: Facts) -> Status {
        let state = &f.state;
        let current = f.current_system.as_ref().map(|c| c.display().to_string());
        let deployed = match &state.deployed {
            Some(d) => DeployedView {
                commit: d.commit.clone(),
                subject: d.subject.clone(),
                system: Some(d.system.clone()),
                generation: d.generation,
                at: Some(d.at.to_string()),
            },
            None => DeployedView {
                system: current.clone(),
                generation: f.profile.as_ref().map(|g| g.number),
                ..Default::default()
            },
        };
        let running = match &f.lock {
            Some(Probe::Held(pid)) => {
                // The progress file is the holder's only if the pids agree.
                let progress = f
                    .progress
                    .as_ref()
                    .filter(|p| pid.is_none_or(|pid| pid == p.pid));
                Some(RunningView {
                    pid: *pid,
                    // The run writes its first phase just after taking the lock: until
                    // then it is starting (never a running run without a phase).
                    phase: Some(progress.map_or_else(|| STARTING.into(), |p| p.phase.clone())),
                    since: progress.and_then(|p| p.since.map(|t| t.to_string())),
                    progress: progress.and_then(|p| p.build.clone()),
                })
            }
            _ => None,
        };
        let head = head(state, f.poll.as_ref());
        let bad_commit = head
            .as_ref()
            .filter(|h| h.status == HeadStatus::Bad)
            .and_then(|h| state.bad(&h.commit).cloned());
        let refused = head
            .as_ref()
            .and_then(|h| state.refused.as_ref().filter(|r| r.commit == h.commit))
            .cloned();
        let attention = attention(&f, running.is_some());
        let mut last_run = last_run(state.history.first(), f.poll.as_ref());
        // A recorded failure of a commit no longer remembered as bad (`retry` forgot it):
        // its "run retry" hint is stale. Not so for a failure that blamed nothing and is
        // waiting out its backoff (`retries` names the commit): its hint still holds.
        let recorded = state.history.first().map(|r| r.at.to_string()) == last_run.at;
        let backing_off = state.retries.as_ref().map(|r| &r.commit) == last_run.commit.as_ref();
        if recorded
            && !backing_off
            && last_run
                .commit
                .as_deref()
                .is_some_and(|c| state.bad(c).is_none())
            && last_run
                .hint
                .as_deref()
                .is_some_and(|h| h.contains("retry"))
        {
            last_run.hint = None;
        }

        let label = if f.state_problem.is_some() {
            Label::Unknown
        } else if running.is_some() {
            Label::Running
        } else if attention.iter().any(|a| {
            matches!(
                a.kind,
                AttentionKind::RollbackFailed | AttentionKind::Drift | AttentionKind::Interrupted
            )
        }) {
            Label::NeedsAttention
        } else if state.pinned.is_some() {
            Label::Pinned
        } else if last_run.outcome.as_deref() == Some("failed") || bad_commit.is_some() {
            // The last run failed, or the branch head is a commit that failed here.
            Label::Failed
        } else {
            Label::Idle
        };
        let (message, hint) = summary(label, &f, &attention, &running, &last_run, &head);
        let pivot = pivot::view(settings, &f);
        let message = pivot::summary(pivot.as_ref(), label, &last_run).unwrap_or(message);

        Status {
            schema_version: SCHEMA_VERSION,
            state: label,
            message,
            hint,
            host: pivot::host(settings, &f),
            pivot,
            source: SourceView {
                url: settings.source.url.redacted().into(),
                branch: settings.source.branch.clone(),
            },
            head,
            deployed,
            last_run,
            in_progress: match (&running, &state.intent) {
                (Some(r), _) => Some(r.phase.clone().unwrap_or_else(|| "running".into())),
                (None, Some(i)) => Some(format!(
                    "interrupted while {} {}",
                    step_words(i.step),
                    i.system
                )),
                (None, None) => None,
            },
            running,
            pinned: state.pinned.clone(),
            paused: crate::pause::active(state).map(|p| PausedView {
                reason: p.reason.clone(),
                since: p.since.to_string(),
                until: p.until.map(|u| u.to_string()),
            }),
            current_system: current,
            booted_system: f.booted_system.as_ref().map(|b| b.display().to_string()),
            reboot_required: f.reboot_required,
            profile_generation: f.profile.as_ref().map(|g| g.number),
            next_poll: f
                .poll
                .as_ref()
                .and_then(|p| p.next_poll.map(|t| t.to_string())),
            bad_commit,
            needs_attention: attention
                .iter()
                .find(|a| a.kind == AttentionKind::RollbackFailed)
                .map(|a| a.message.clone()),
            state_recovered_from: state.recovered_from.clone(),
            state_damage: state.damage.clone(),
            refused,
            reboot: crate::reboot::view::build(settings, &f.reboot, jiff::Timestamp::now()),
            attention,
            build_plan: f.build_plan.clone(),
            testing: state.testing.as_ref().map(|t| TestingView {
                branch: t.branch.clone(),
                commit: t.commit.clone(),
                subject: t.subject.clone(),
                outcome: t.outcome.as_str().into(),
                system: t.system.clone(),
                at: t.at.to_string(),
                live: t.live(f.current_system.as_deref()),
            }),
        }
    }

    /// `status` exits 0 unless the machine needs a person (3) or the state file cannot be
    /// read (71); README "Commands and exit codes".
    pub fn exit_code(&self) -> u8 {
        match self.state {
            Label::NeedsAttention => crate::exit::ROLLBACK_FAILED,
            Label::Unknown => crate::exit::ENVIRONMENT,
            _ => crate::exit::OK,
        }
    }

    pub fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self)?;
        writeln!(out)
    }
}

/// The newer of the last recorded run and the last (volatile) poll.
fn last_run(run: Option<&Run>, poll: Option<&LastPoll>) -> LastRunView {
    let from_run = |r: &Run| LastRunView {
        at: Some(r.at.to_string()),
        outcome: Some(r.outcome.as_str().into()),
        commit: r.commit.clone(),
        phase: r.phase.map(|p| p.as_str().to_string()),
        error: r.error.clone(),
        hint: r.hint.clone(),
        rolled_back: r.rolled_back,
        failed_check: r
            .checks
            .iter()
            .find(|c| !c.verdict.is_healthy())
            .map(|c| format!("{}: {}", c.name, c.verdict.detail())),
        obtained: r.obtained.clone(),
    };
    let from_poll = |p: &LastPoll| LastRunView {
        at: p.at.map(|t| t.to_string()),
        outcome: Some(p.outcome.clone()),
        commit: p.commit.clone(),
        phase: p.phase.clone(),
        error: p.error.clone(),
        hint: p.hint.clone(),
        ..Default::default()
    };
    match (run, poll) {
        // The poll is written at the end of every run, so it is never older; prefer the
        // recorded run (it has the checks and rollback) when both tell of the same thing.
        (Some(r), Some(p))
            if p.at.is_some_and(|at| at >= r.at)
                && (p.outcome != r.outcome.as_str() || p.commit != r.commit) =>
        {
            from_poll(p)
        }
        (Some(r), _) => from_run(r),
        (None, Some(p)) => from_poll(p),
        (None, None) => LastRunView::default(),
    }
}

/// `history`: newest first, at most `limit` runs.
pub fn history(state: &State, limit: usize) -> &[Run] {
    &state.history[..state.history.len().min(limit)]
}

/// The keys of a run that the state file leaves out when empty: `history --json` gives
/// them as null (an empty list for `checks`), as `status --json` does for `last_run`.
const RUN_KEYS_OMITTED_WHEN_EMPTY: [&str; 11] = [
    "commit",
    "subject",
    "phase",
    "error",
    "hint",
    "rolled_back",
    "system",
    "generation",
    "build_ms",
    "health_ms",
    "obtained",
];

/// `history --json`: every run with every key.
pub fn history_json(runs: &[Run]) -> Vec<serde_json::Value> {
    runs.iter()
        .map(|run| {
            let mut value = serde_json::to_value(run).unwrap_or_default();
            if let Some(object) = value.as_object_mut() {
                for key in RUN_KEYS_OMITTED_WHEN_EMPTY {
                    object.entry(key).or_insert(serde_json::Value::Null);
                }
                object
                    .entry("checks")
                    .or_insert_with(|| serde_json::Value::Array(Vec::new()));
            }
            value
        })
        .collect()
}

/// The state for `status` and `history`, read without changing anything; the problem, if
/// it cannot be read (a permission problem says to use sudo).
pub fn load_state(state_dir: &Path) -> (State, Option<Failure>) {
    let store = state::Store::new(state_dir);
    match store.peek() {
        // Damaged: what is still known (the bad commits, from their own record) is
        // shown, but the state is unknown until the next run moves the file aside.
        Ok(s) => {
            let problem = s.damage.as_ref().filter(|d| d.pending).map(|d| {
                Failure::new(
                    Kind::Environment,
                    format!("the state in {} is damaged: {}", state_dir.display(), d.reason),
                )
                .with_hint("the next `run` moves it aside and starts over; bad commits are kept (bad-commits.json)")
            });
            (s, problem)
        }
        Err(e) => {
            // Not damage: the file is there but this user may not read it.
            let denied = e
                .chain()
                .filter_map(|c| c.downcast_ref::<io::Error>())
                .any(|io| io.kind() == io::ErrorKind::PermissionDenied);
            let problem = if denied {
                Failure::new(
                    Kind::Environment,
                    format!("cannot read {}: permission denied", store.path().display()),
                )
                .with_hint("needs root: run with sudo")
            } else {
                Failure::storage(&e)
            };
            (State::default(), Some(problem))
        }
    }
}
