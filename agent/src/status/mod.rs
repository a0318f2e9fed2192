//! `homelab-agent status` and `history`: one view model, built from the state file, the
//! volatile last-poll record and the live system links (ground truth over memory), and
//! rendered as JSON (stable keys, design.md) or as text for a terminal.

use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::Settings;
use crate::runtime::{self, LastPoll};
use crate::state::{self, BadCommit, Run, State};
use crate::system;

#[derive(Debug, Serialize)]
pub struct Status {
    pub host: String,
    pub source: SourceView,
    pub deployed: DeployedView,
    pub last_run: LastRunView,
    pub current_system: Option<String>,
    pub booted_system: Option<String>,
    pub reboot_required: Option<bool>,
    pub profile_generation: Option<u32>,
    pub next_poll: Option<String>,
    /// The newest commit known bad and not retried.
    pub bad_commit: Option<BadCommit>,
    /// A rollback that failed and is retried by the next run: the machine needs a look.
    pub needs_attention: Option<String>,
    /// A run is in progress, or was killed (its intent is still on disk).
    pub in_progress: Option<String>,
    pub state_recovered_from: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SourceView {
    pub url: String,
    pub branch: String,
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
    pub error: Option<String>,
    pub rolled_back: Option<bool>,
    pub failed_check: Option<String>,
}

impl Status {
    pub fn gather(settings: &Settings, state: &State) -> Status {
        let p = &settings.paths;
        let current = system::resolve(&p.current_system);
        let deployed = match &state.deployed {
            Some(d) => DeployedView {
                commit: d.commit.clone(),
                subject: d.subject.clone(),
                system: Some(d.system.clone()),
                generation: d.generation,
                at: Some(d.at.clone()),
            },
            None => DeployedView {
                system: current.as_ref().map(|c| c.display().to_string()),
                ..Default::default()
            },
        };
        let poll = runtime::read(&p.runtime_dir);
        Status {
            host: settings.host.clone(),
            source: SourceView {
                url: settings.source.url.redacted().into(),
                branch: settings.source.branch.clone(),
            },
            deployed,
            last_run: last_run(state.history.first(), poll.as_ref()),
            current_system: current.as_ref().map(|c| c.display().to_string()),
            booted_system: system::resolve(&p.booted_system).map(|b| b.display().to_string()),
            reboot_required: system::reboot_required(&p.booted_system, &p.current_system),
            profile_generation: system::profile::current(&p.profile).map(|g| g.number),
            next_poll: poll.and_then(|p| p.next_poll),
            bad_commit: state.bad_commits.first().cloned(),
            needs_attention: state.rollback_pending.as_ref().map(|r| {
                format!(
                    "rollback to {} failed ({}) since {}; retried on the next run",
                    r.system, r.reason, r.since
                )
            }),
            in_progress: state.intent.as_ref().map(|i| {
                format!(
                    "{:?} {} since {} (a killed run is resolved by the next one)",
                    i.step, i.system, i.started_at
                )
                .to_lowercase()
            }),
            state_recovered_from: state.recovered_from.clone(),
        }
    }

    pub fn write_json(&self, out: &mut impl Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, self)?;
        writeln!(out)
    }

    pub fn write_human(&self, out: &mut impl Write) -> io::Result<()> {
        let now = SystemTime::now();
        writeln!(out, "host:       {}", self.host)?;
        writeln!(
            out,
            "source:     {} (branch {})",
            self.source.url, self.source.branch
        )?;
        let d = &self.deployed;
        match &d.commit {
            Some(c) => writeln!(
                out,
                "deployed:   {} {}{}",
                crate::deploy::short(c),
                d.subject.as_deref().unwrap_or(""),
                age(d.at.as_deref(), now)
                    .map(|a| format!(" ({a})"))
                    .unwrap_or_default()
            )?,
            None => writeln!(out, "deployed:   nothing yet by homelab-agent")?,
        }
        if let Some(g) = d.generation.or(self.profile_generation) {
            writeln!(out, "generation: {g}")?;
        }
        if let Some(s) = self.current_system.as_ref().or(d.system.as_ref()) {
            writeln!(out, "system:     {s}")?;
        }
        let r = &self.last_run;
        if let Some(outcome) = &r.outcome {
            let commit = r
                .commit
                .as_deref()
                .map(|c| format!(" {}", crate::deploy::short(c)))
                .unwrap_or_default();
            let phase = r
                .phase
                .as_deref()
                .map(|p| format!(" in {p}"))
                .unwrap_or_default();
            let back = match r.rolled_back {
                Some(true) => ", rolled back to the previous system",
                Some(false) if outcome == "failed" => ", NOT rolled back",
                _ => "",
            };
            let when = age(r.at.as_deref(), now)
                .map(|a| format!(" ({a})"))
                .unwrap_or_default();
            writeln!(out, "last run:   {outcome}{commit}{phase}{back}{when}")?;
            if let Some(check) = &r.failed_check {
                writeln!(out, "  failing check: {check}")?;
            }
            if let Some(e) = &r.error {
                for line in e.lines().take(12) {
                    writeln!(out, "  {line}")?;
                }
            }
        } else {
            writeln!(out, "last run:   none yet")?;
        }
        if let Some(b) = &self.bad_commit {
            writeln!(
                out,
                "bad commit: {} failed in {} at {}: not retried until the branch moves",
                crate::deploy::short(&b.commit),
                b.phase.as_str(),
                b.at
            )?;
            writeln!(
                out,
                "  hint: push a fix, or run `homelab-agent retry` to try it again"
            )?;
        }
        match self.reboot_required {
            Some(true) => writeln!(
                out,
                "reboot:     REQUIRED (kernel, initrd or modules differ from the booted system)"
            )?,
            Some(false) => writeln!(out, "reboot:     not required")?,
            None => writeln!(out, "reboot:     unknown (no booted system link)")?,
        }
        if let Some(n) = &self.next_poll {
            writeln!(out, "next poll:  {n}")?;
        }
        if let Some(a) = &self.needs_attention {
            writeln!(out, "ATTENTION:  {a}")?;
        }
        if let Some(i) = &self.in_progress {
            writeln!(out, "in progress: {i}")?;
        }
        if let Some(r) = &self.state_recovered_from {
            writeln!(
                out,
                "note:       the state file was unreadable and moved to {r}; history restarted"
            )?;
        }
        Ok(())
    }
}

/// The newer of the last recorded run and the last (volatile) poll.
fn last_run(run: Option<&Run>, poll: Option<&LastPoll>) -> LastRunView {
    let from_run = |r: &Run| LastRunView {
        at: Some(r.at.clone()),
        outcome: Some(r.outcome.as_str().into()),
        commit: r.commit.clone(),
        phase: r.phase.map(|p| p.as_str().to_string()),
        error: r.error.clone(),
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
        error: p.error.clone(),
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

/// "5m ago" from an RFC 3339 time.
fn age(at: Option<&str>, now: SystemTime) -> Option<String> {
    let t = humantime::parse_rfc3339(at?).ok()?;
    let secs = now.duration_since(t).unwrap_or_default().as_secs();
    let rounded = if secs >= 3600 { secs / 60 * 60 } else { secs };
    Some(format!(
        "{} ago",
        humantime::format_duration(Duration::from_secs(rounded))
    ))
}

/// `history`: newest first, at most `limit` runs.
pub fn write_history_human(runs: &[Run], out: &mut impl Write) -> io::Result<()> {
    if runs.is_empty() {
        return writeln!(out, "no runs recorded yet");
    }
    for r in runs {
        let commit = r.commit.as_deref().map(crate::deploy::short).unwrap_or("-");
        let phase = r
            .phase
            .map(|p| format!(" ({})", p.as_str()))
            .unwrap_or_default();
        let gen = r
            .generation
            .map(|g| format!(" gen {g}"))
            .unwrap_or_default();
        let back = if r.rolled_back == Some(true) {
            " rolled back"
        } else {
            ""
        };
        writeln!(
            out,
            "{}  {:<11} {commit:<8} {}{phase}{gen}{back}",
            r.at,
            r.outcome.as_str(),
            r.subject.as_deref().unwrap_or("")
        )?;
        if let Some(e) = &r.error {
            writeln!(out, "    {}", e.lines().next().unwrap_or(""))?;
        }
    }
    Ok(())
}

pub fn history(state: &State, limit: usize) -> &[Run] {
    &state.history[..state.history.len().min(limit)]
}

/// For `status` without a readable state file.
pub fn load_state(state_dir: &Path) -> (State, Option<String>) {
    match state::Store::new(state_dir).peek() {
        Ok(s) => (s, None),
        Err(e) => (State::default(), Some(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{CheckResult, Verdict};
    use crate::state::{Deployed, Outcome, Phase};

    fn settings() -> Settings {
        crate::config::parse(
            Path::new("/t.toml"),
            "[source]\nurl = \"https://tok@git.example.org/h.git\"\n[host]\nname = \"pi1\"\n[paths]\ncurrent_system = \"/nonexistent/c\"\nbooted_system = \"/nonexistent/b\"\nruntime_dir = \"/nonexistent/r\"\nprofile = \"/nonexistent/p\"\n",
        )
        .unwrap()
    }

    fn fixture_state() -> State {
        let mut s = State {
            deployed: Some(Deployed {
                commit: Some("1111111111111111111111111111111111111111".into()),
                subject: Some("add grafana".into()),
                system: "/nix/store/aaa-nixos-system-pi1".into(),
                generation: Some(7),
                at: "2026-11-24T10:00:00Z".into(),
            }),
            ..State::default()
        };
        let mut run = Run::new(Outcome::Failed);
        run.at = "2026-11-24T11:00:00Z".into();
        run.commit = Some("2222222222222222222222222222222222222222".into());
        run.phase = Some(Phase::Health);
        run.rolled_back = Some(true);
        run.error = Some(
            "health check failed: http http://127.0.0.1:8080/health: got HTTP 500, expected 2xx"
                .into(),
        );
        run.checks = vec![CheckResult {
            name: "http http://127.0.0.1:8080/health".into(),
            verdict: Verdict::Unhealthy("got HTTP 500, expected 2xx".into()),
        }];
        s.push_run(run);
        s.mark_bad(
            "2222222222222222222222222222222222222222",
            Phase::Health,
            "x",
        );
        s
    }

    #[test]
    fn json_has_the_contract_keys_and_no_secret() {
        let status = Status::gather(&settings(), &fixture_state());
        let mut out = Vec::new();
        status.write_json(&mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for key in ["host", "booted_system", "reboot_required"] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        for key in ["commit", "system", "generation", "at"] {
            assert!(v["deployed"].get(key).is_some(), "missing deployed.{key}");
        }
        for key in ["at", "outcome", "commit", "phase", "error", "rolled_back"] {
            assert!(v["last_run"].get(key).is_some(), "missing last_run.{key}");
        }
        assert_eq!(v["source"]["url"], "https://***@git.example.org/h.git");
        assert_eq!(v["last_run"]["outcome"], "failed");
        assert_eq!(v["last_run"]["phase"], "health");
        assert_eq!(v["deployed"]["generation"], 7);
        assert!(!String::from_utf8(out).unwrap().contains("tok@"));
    }

    #[test]
    fn human_output_after_a_rollback_tells_the_story() {
        let status = Status::gather(&settings(), &fixture_state());
        let mut out = Vec::new();
        status.write_human(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for needle in [
            "host:       pi1",
            "deployed:   11111111 add grafana",
            "generation: 7",
            "last run:   failed 22222222 in health, rolled back to the previous system",
            "failing check: http http://127.0.0.1:8080/health: got HTTP 500, expected 2xx",
            "bad commit: 22222222",
            "homelab-agent retry",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn newer_poll_wins_over_recorded_run() {
        let mut run = Run::new(Outcome::Deployed);
        run.at = "2026-11-24T10:00:00Z".into();
        let poll = LastPoll {
            at: "2026-11-24T10:05:00Z".into(),
            outcome: "up-to-date".into(),
            ..Default::default()
        };
        assert_eq!(
            last_run(Some(&run), Some(&poll)).outcome.as_deref(),
            Some("up-to-date")
        );
        let old = LastPoll {
            at: "2026-11-24T09:00:00Z".into(),
            outcome: "up-to-date".into(),
            ..Default::default()
        };
        assert_eq!(
            last_run(Some(&run), Some(&old)).outcome.as_deref(),
            Some("deployed")
        );
    }
}
