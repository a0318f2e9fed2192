//! `homelab-agent status` and `history`: one typed view model ([`Status`]), built from
//! [`Facts`] (the state file, the volatile last poll and progress, the run lock, and the
//! live system links: ground truth over memory), rendered as JSON (stable keys,
//! design.md "Status contract") or as text for a terminal (`human.rs`).
//!
//! | file       | owns                                                        |
//! |------------|-------------------------------------------------------------|
//! | `mod.rs`   | the facts, the view model and its JSON                      |
//! | `human.rs` | the terminal rendering: attention first, relative times     |
//! | `tests.rs` | fixture states rendered and compared with `fixtures/*.txt`  |

mod human;
#[cfg(test)]
mod tests;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Settings;
use crate::lock::{self, Probe};
use crate::runtime::{self, LastPoll, Progress};
use crate::state::{self, BadCommit, Pinned, Run, State};
use crate::system;

pub use human::{relative, write_history_human};

/// Bumped when a key changes meaning; keys are only ever added (design.md).
pub const SCHEMA_VERSION: u32 = 2;

/// Everything `status` reads, gathered once; the view is a pure function of it.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub state: State,
    /// The state file could not be read or parsed: what it was.
    pub state_problem: Option<String>,
    pub poll: Option<LastPoll>,
    pub progress: Option<Progress>,
    pub lock: Option<Probe>,
    pub current_system: Option<PathBuf>,
    pub booted_system: Option<PathBuf>,
    pub reboot_required: Option<bool>,
    pub profile: Option<system::profile::Generation>,
}

impl Facts {
    pub fn read(settings: &Settings) -> Facts {
        let p = &settings.paths;
        let (state, state_problem) = load_state(&p.state_dir);
        Facts {
            state,
            state_problem,
            poll: runtime::read(&p.runtime_dir),
            progress: runtime::read_progress(&p.runtime_dir),
            lock: Some(lock::probe(&p.runtime_dir)),
            current_system: system::resolve(&p.current_system),
            booted_system: system::resolve(&p.booted_system),
            reboot_required: system::reboot_required(&p.booted_system, &p.current_system),
            profile: system::profile::current(&p.profile),
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttentionKind {
    RollbackFailed,
    Interrupted,
    Drift,
    StateLost,
    Pinned,
}

#[derive(Debug, Clone, Serialize)]
pub struct Attention {
    pub kind: AttentionKind,
    pub message: String,
    pub hint: String,
    /// Since when (RFC 3339), if known.
    pub since: Option<String>,
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
}

#[derive(Debug, Serialize)]
pub struct RunningView {
    pub pid: Option<u32>,
    /// What it is doing (the text it sent as `STATUS=`).
    pub phase: Option<String>,
    pub since: Option<String>,
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
                at: Some(d.at.clone()),
            },
            None => DeployedView {
                system: current.clone(),
                generation: f.profile.as_ref().map(|g| g.number),
                ..Default::default()
            },
        };
        let running = match &f.lock {
            Some(Probe::Held(pid)) => Some(RunningView {
                pid: *pid,
                // The progress file is the holder's only if the pids agree.
                phase: f
                    .progress
                    .as_ref()
                    .filter(|p| pid.is_none_or(|pid| pid == p.pid))
                    .map(|p| p.phase.clone()),
                since: f
                    .progress
                    .as_ref()
                    .filter(|p| pid.is_none_or(|pid| pid == p.pid))
                    .map(|p| p.since.clone()),
            }),
            _ => None,
        };
        let head = head(state, f.poll.as_ref());
        let bad_commit = head
            .as_ref()
            .filter(|h| h.status == HeadStatus::Bad)
            .and_then(|h| state.bad(&h.commit).cloned())
            .map(|mut b| {
                b.error = without_hint(&b.error);
                b
            });
        let attention = attention(&f, running.is_some());
        let mut last_run = last_run(state.history.first(), f.poll.as_ref());
        // A recorded failure of a commit no longer remembered as bad (`retry` forgot it):
        // its "run retry" hint is stale.
        let recorded = state.history.first().map(|r| &r.at) == last_run.at.as_ref();
        if recorded
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

        Status {
            schema_version: SCHEMA_VERSION,
            state: label,
            message,
            hint,
            host: settings.host.clone(),
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
            current_system: current,
            booted_system: f.booted_system.as_ref().map(|b| b.display().to_string()),
            reboot_required: f.reboot_required,
            profile_generation: f.profile.as_ref().map(|g| g.number),
            next_poll: f.poll.as_ref().and_then(|p| p.next_poll.clone()),
            bad_commit,
            needs_attention: attention
                .iter()
                .find(|a| a.kind == AttentionKind::RollbackFailed)
                .map(|a| a.message.clone()),
            state_recovered_from: state.recovered_from.clone(),
            attention,
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

fn step_words(step: state::Step) -> &'static str {
    match step {
        state::Step::Activating => "activating",
        state::Step::Checking => "checking",
        state::Step::Committing => "committing",
        state::Step::RollingBack => "rolling back to",
    }
}

/// The head last seen: from the last poll (since boot), else the last one handled.
fn head(state: &State, poll: Option<&LastPoll>) -> Option<HeadView> {
    let (commit, seen_at) = match poll.and_then(|p| p.commit.clone().map(|c| (c, &p.at))) {
        Some((c, at)) => (c, Some(at.clone())),
        None => (state.last_handled.clone()?, None),
    };
    let deployed = state.deployed.as_ref().and_then(|d| d.commit.as_deref());
    let status = if deployed == Some(commit.as_str()) {
        HeadStatus::Deployed
    } else if state.pinned.is_some() {
        HeadStatus::PinnedPast
    } else if state.bad(&commit).is_some() {
        HeadStatus::Bad
    } else if state.last_handled.as_deref() == Some(commit.as_str()) {
        // Handled and not bad: deployed, or it builds the running system (unchanged).
        HeadStatus::Deployed
    } else {
        HeadStatus::Pending
    };
    Some(HeadView {
        commit,
        seen_at,
        status,
    })
}

fn attention(f: &Facts, running: bool) -> Vec<Attention> {
    let state = &f.state;
    let mut out = Vec::new();
    if let Some(r) = &state.rollback_pending {
        let live = f
            .current_system
            .as_ref()
            .map(|c| c.display().to_string())
            .unwrap_or_else(|| "unknown".into());
        out.push(Attention {
            kind: AttentionKind::RollbackFailed,
            message: format!(
                "rollback to {} failed ({}); {live} is still live",
                f.profile
                    .as_ref()
                    .filter(|g| g.system.display().to_string() == r.system)
                    .map_or_else(|| r.system.clone(), |g| format!("generation {}", g.number)),
                first_line(&r.reason)
            ),
            hint: "the boot default is still the last good generation: a reboot returns to it; the next run retries the rollback".into(),
            since: Some(r.since.clone()),
        });
    }
    if let (Some(i), false) = (&state.intent, running) {
        out.push(Attention {
            kind: AttentionKind::Interrupted,
            message: format!(
                "a run was stopped while {} {}",
                step_words(i.step),
                i.system
            ),
            hint: "the next run resolves it first (`sudo homelab-agent run --once` to do it now)"
                .into(),
            since: Some(i.started_at.clone()),
        });
    }
    let drifted = match (&f.current_system, &f.profile) {
        (Some(c), Some(p)) => *c != p.system,
        _ => false,
    };
    if drifted && !running && state.intent.is_none() && state.rollback_pending.is_none() {
        let (c, p) = (
            f.current_system.as_ref().unwrap(),
            f.profile.as_ref().unwrap(),
        );
        let unverified = state
            .bad_commits
            .iter()
            .any(|b| b.system.as_deref() == Some(&*c.display().to_string()));
        out.push(Attention {
            kind: AttentionKind::Drift,
            message: format!(
                "drift: {} is live, but the boot default (generation {}) is {}",
                c.display(),
                p.number,
                p.system.display()
            ),
            hint: if unverified {
                format!("it never passed its checks: the next run restores generation {}", p.number)
            } else {
                "not the agent's doing (a manual switch?): left alone; a reboot or the next deployment replaces it".into()
            },
            since: None,
        });
    }
    if let Some(problem) = &f.state_problem {
        out.push(Attention {
            kind: AttentionKind::StateLost,
            message: format!("state unknown: {}", first_line(problem)),
            hint: hint_of(problem).unwrap_or_else(|| {
                "what runs is read from the system links; history, bad commits and any pin are unknown until the next `run` starts over".into()
            }),
            since: None,
        });
    } else if let Some(aside) = &state.recovered_from {
        out.push(Attention {
            kind: AttentionKind::StateLost,
            message: format!(
                "state was lost: the state file was unreadable and moved to {aside}"
            ),
            hint: "history, bad commits and any pin before that are gone; what runs is read from the system links".into(),
            since: None,
        });
    }
    if let Some(p) = &state.pinned {
        let from = match (&p.from_commit, p.from_generation) {
            (Some(c), Some(g)) => format!("{} (generation {g})", crate::deploy::short(c)),
            (Some(c), None) => crate::deploy::short(c).to_string(),
            (None, Some(g)) => format!("generation {g}"),
            (None, None) => p.from_system.clone(),
        };
        let on = p
            .generation
            .map(|g| format!("generation {g}"))
            .unwrap_or_else(|| p.system.clone());
        out.push(Attention {
            kind: AttentionKind::Pinned,
            message: format!(
                "pinned to {on} by `rollback` from {from}: new commits are not deployed"
            ),
            hint: "`sudo homelab-agent resume` follows the branch again".into(),
            since: Some(p.since.clone()),
        });
    }
    out
}

fn summary(
    label: Label,
    f: &Facts,
    attention: &[Attention],
    running: &Option<RunningView>,
    last: &LastRunView,
    head: &Option<HeadView>,
) -> (String, Option<String>) {
    let first = |kinds: &[AttentionKind]| attention.iter().find(|a| kinds.contains(&a.kind));
    match label {
        Label::Unknown | Label::NeedsAttention | Label::Pinned => {
            let a = first(&[
                AttentionKind::RollbackFailed,
                AttentionKind::StateLost,
                AttentionKind::Interrupted,
                AttentionKind::Drift,
                AttentionKind::Pinned,
            ]);
            match a {
                Some(a) => (a.message.clone(), Some(a.hint.clone())),
                None => ("state unknown".into(), None),
            }
        }
        Label::Running => (
            running
                .as_ref()
                .and_then(|r| r.phase.clone())
                .unwrap_or_else(|| "a run is in progress".into()),
            None,
        ),
        Label::Failed => match head {
            Some(h) if h.status == HeadStatus::Bad => (
                format!(
                    "branch head {} failed here and is not retried until the branch moves",
                    crate::deploy::short(&h.commit)
                ),
                Some(crate::failure::Kind::Commit.hint().into()),
            ),
            _ => (
                format!(
                    "the last run failed{}",
                    last.phase
                        .as_deref()
                        .map(|p| format!(" in {p}"))
                        .unwrap_or_default()
                ),
                last.hint.clone(),
            ),
        },
        Label::Idle => {
            let _ = f;
            match head {
                Some(h) if h.status == HeadStatus::Deployed => (
                    format!("up to date at {}", crate::deploy::short(&h.commit)),
                    None,
                ),
                Some(h) => (
                    format!(
                        "branch head {} not deployed yet: the next run tries it",
                        crate::deploy::short(&h.commit)
                    ),
                    None,
                ),
                None if last.outcome.is_none() => {
                    ("nothing deployed yet by homelab-agent".into(), None)
                }
                None => ("idle".into(), None),
            }
        }
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// The `hint:` line(s) of an error text, joined.
fn hint_of(text: &str) -> Option<String> {
    let hints: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("hint:"))
        .map(str::trim)
        .collect();
    (!hints.is_empty()).then(|| hints.join("; "))
}

/// An error text without its `hint:` lines.
fn without_hint(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("hint:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The newer of the last recorded run and the last (volatile) poll.
fn last_run(run: Option<&Run>, poll: Option<&LastPoll>) -> LastRunView {
    let from_run = |r: &Run| LastRunView {
        at: Some(r.at.clone()),
        outcome: Some(r.outcome.as_str().into()),
        commit: r.commit.clone(),
        phase: r.phase.map(|p| p.as_str().to_string()),
        error: r.error.as_deref().map(without_hint),
        hint: r.error.as_deref().and_then(hint_of),
        rolled_back: r.rolled_back,
        failed_check: r
            .checks
            .iter()
            .find(|c| !c.verdict.is_healthy())
            .map(|c| format!("{}: {}", c.name, c.verdict.detail())),
    };
    let from_poll = |p: &LastPoll| LastRunView {
        at: Some(p.at.clone()),
        outcome: Some(p.outcome.clone()),
        commit: p.commit.clone(),
        phase: p.phase.clone(),
        error: p.error.as_deref().map(without_hint),
        hint: p.error.as_deref().and_then(hint_of),
        ..Default::default()
    };
    match (run, poll) {
        // The poll is written at the end of every run, so it is never older; prefer the
        // recorded run (it has the checks and rollback) when both tell of the same thing.
        // RFC 3339 UTC strings of one format compare in time order.
        (Some(r), Some(p))
            if p.at >= r.at && (p.outcome != r.outcome.as_str() || p.commit != r.commit) =>
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

/// The state for `status` and `history`, read without changing anything; the problem, if
/// it cannot be read (a permission problem says to use sudo).
pub fn load_state(state_dir: &Path) -> (State, Option<String>) {
    let store = state::Store::new(state_dir);
    if let Err(e) = std::fs::File::open(store.path()) {
        if e.kind() == io::ErrorKind::PermissionDenied {
            return (
                State::default(),
                Some(format!(
                    "cannot read {}: permission denied\nhint: needs root: run with sudo",
                    store.path().display()
                )),
            );
        }
    }
    match store.peek() {
        Ok(s) => (s, None),
        Err(e) => (State::default(), Some(e.to_string())),
    }
}
