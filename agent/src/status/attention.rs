//! What needs a person (attention items, most urgent first), where the branch head
//! stands, and the one-line summary: judgements over [`Facts`], kept apart from the
//! view model's shape.

use super::{
    Attention, AttentionKind, Facts, HeadStatus, HeadView, Label, LastRunView, RunningView,
};
use crate::runtime::LastPoll;
use crate::state::{self, State};

pub(super) fn step_words(step: state::Step) -> &'static str {
    match step {
        state::Step::Activating => "activating",
        state::Step::Checking => "checking",
        state::Step::Committing => "committing",
        state::Step::RollingBack => "rolling back to",
    }
}

/// The head last seen: from the last poll (since boot), else the last one handled.
pub(super) fn head(state: &State, poll: Option<&LastPoll>) -> Option<HeadView> {
    // A poll that ended on the testing branch's commit says nothing about main's head.
    let testing = state.testing.as_ref().map(|t| t.commit.as_str());
    let (commit, seen_at) = match poll
        .and_then(|p| p.commit.clone().map(|c| (c, &p.at)))
        .filter(|(c, _)| Some(c.as_str()) != testing)
    {
        Some((c, at)) => (c, at.map(|t| t.to_string())),
        None => (state.last_handled.clone()?, None),
    };
    let deployed = state.deployed.as_ref().and_then(|d| d.commit.as_deref());
    let status = if deployed == Some(commit.as_str()) {
        HeadStatus::Deployed
    } else if state.pinned.is_some() {
        HeadStatus::PinnedPast
    } else if state.bad(&commit).is_some() {
        HeadStatus::Bad
    } else if state.refused.as_ref().is_some_and(|r| r.commit == commit) {
        HeadStatus::Refused
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

pub(super) fn attention(f: &Facts, running: bool) -> Vec<Attention> {
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
            since: Some(r.since.to_string()),
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
            since: Some(i.started_at.to_string()),
        });
    }
    let drifted = match (&f.current_system, &f.profile) {
        (Some(c), Some(p)) => *c != p.system,
        _ => false,
    };
    // The testing branch's healthy system, live until a reboot or deployment: expected.
    let on_test = state
        .testing
        .as_ref()
        .is_some_and(|t| t.live(f.current_system.as_deref()));
    // A deployment that needs a reboot runs live, outside the profile, until its trial
    // boot verifies it (it has no generation yet): the agent's own doing, not drift.
    let live_pending_trial = state.deployed.as_ref().is_some_and(|d| {
        d.generation.is_none()
            && f.current_system.as_ref().map(|c| c.display().to_string()) == Some(d.system.clone())
    });
    if drifted
        && !on_test
        && !live_pending_trial
        && !running
        && state.intent.is_none()
        && state.rollback_pending.is_none()
    {
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
    // Changed by hand: the live system is the boot default (no drift above), but neither
    // is what the agent deployed (what a manual `nixos-rebuild switch` leaves).
    let deployed = state.deployed.as_ref();
    let by_hand = match (deployed, &f.profile, &f.current_system) {
        (Some(d), Some(p), Some(_live)) => {
            let shown = p.system.display().to_string();
            // A deployment that waits for its trial boot never became a generation: it
            // runs live outside the profile, or (after an unplanned reboot) not at all
            // until the next run activates it again. Both are the agent's own doing.
            let pending_trial = d.generation.is_none();
            !drifted && !pending_trial && shown != d.system
        }
        _ => false,
    };
    if by_hand
        && !on_test
        && !running
        && state.intent.is_none()
        && state.rollback_pending.is_none()
        && state.pinned.is_none()
    {
        let (d, p) = (deployed.unwrap(), f.profile.as_ref().unwrap());
        out.push(Attention {
            kind: AttentionKind::Drift,
            message: format!(
                "changed by hand: generation {} ({}) is live and the boot default, not what the agent deployed ({}{})",
                p.number,
                p.system.display(),
                d.commit
                    .as_deref()
                    .map(|c| format!("{} as ", crate::model::commit::short(c)))
                    .unwrap_or_default(),
                d.system
            ),
            hint: "not the agent's doing (a manual nixos-rebuild switch?): left alone until the next commit on the branch, which is deployed over it as usual; to return now, `sudo nixos-rebuild switch --rollback` or push a commit".into(),
            since: None,
        });
    }
    if let Some(problem) = &f.state_problem {
        out.push(Attention {
            kind: AttentionKind::StateLost,
            message: format!("state unknown: {}", first_line(&problem.message)),
            hint: problem.hint.clone().unwrap_or_else(|| {
                "what runs is read from the system links; history, bad commits and any pin are unknown until the next `run` starts over".into()
            }),
            since: None,
        });
    } else if let Some(d) = &state.damage {
        let message = if d.pending {
            format!("state damaged: {}", d.reason)
        } else {
            format!(
                "state was damaged ({}){}",
                d.reason,
                d.kept_as
                    .as_ref()
                    .map(|k| format!(" and moved to {k}"))
                    .unwrap_or_default()
            )
        };
        out.push(Attention {
            kind: AttentionKind::StateLost,
            message,
            hint: if d.pending {
                "the next run moves it aside; bad commits are kept (bad-commits.json), history starts over".into()
            } else {
                "bad commits were kept (bad-commits.json); history before that is gone; what runs is read from the system links".into()
            },
            since: Some(d.at.to_string()),
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
            (Some(c), Some(g)) => format!("{} (generation {g})", crate::model::commit::short(c)),
            (Some(c), None) => crate::model::commit::short(c).to_string(),
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
            since: Some(p.since.to_string()),
        });
    }
    if let Some(p) = crate::pause::active(state) {
        out.push(Attention {
            kind: AttentionKind::Paused,
            message: format!(
                "paused{}{}: new commits are not deployed",
                p.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                match &p.until {
                    Some(u) => format!(" until {u}"),
                    None => " until `resume`".into(),
                }
            ),
            hint: "`sudo homelab-agent resume` ends the pause".into(),
            since: Some(p.since.to_string()),
        });
    }
    out
}

pub(super) fn summary(
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
                    crate::model::commit::short(&h.commit)
                ),
                Some(crate::failure::Kind::Commit.hint().into()),
            ),
            Some(h) if h.status == HeadStatus::Refused => (
                format!(
                    "branch head {} was refused (not built): {}",
                    crate::model::commit::short(&h.commit),
                    last.error
                        .as_deref()
                        .map(first_line)
                        .unwrap_or("see refused")
                ),
                last.hint.clone(),
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
        Label::Idle => match head {
            Some(h)
                if h.status != HeadStatus::Deployed && crate::pause::active(&f.state).is_some() =>
            {
                (
                    format!(
                        "paused: branch head {} is not deployed until the pause ends",
                        crate::model::commit::short(&h.commit)
                    ),
                    Some("`sudo homelab-agent resume` ends the pause".into()),
                )
            }
            Some(h) if h.status == HeadStatus::Deployed => (
                format!("up to date at {}", crate::model::commit::short(&h.commit)),
                None,
            ),
            Some(h) => (
                format!(
                    "branch head {} not deployed yet: the next run tries it",
                    crate::model::commit::short(&h.commit)
                ),
                None,
            ),
            None if last.outcome.is_none() => {
                ("nothing deployed yet by homelab-agent".into(), None)
            }
            None => ("idle".into(), None),
        },
    }
}

pub(super) fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}
