//! `status` and `history` for a terminal: what needs a person first, each with one hint,
//! then the facts; times relative to `now` ("3m ago"), never a stale line.

use std::collections::HashSet;
use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use super::{AttentionKind, HeadStatus, Label, Status};
use crate::model::commit::short;
use crate::state::Run;
use crate::text::Escaping;

impl Status {
    pub fn write_human(&self, out: &mut impl Write, now: SystemTime) -> io::Result<()> {
        // Subjects, a pause reason, errors quoting servers and tools: shown escaped.
        let out = &mut Escaping(out);
        let mut hints = Hints::default();
        for a in &self.attention {
            let label = match a.kind {
                AttentionKind::Pinned => "PINNED:",
                AttentionKind::Paused => "PAUSED:",
                _ => "ATTENTION:",
            };
            let since = aside("since", a.since.as_deref(), now);
            writeln!(out, "{label:<12}{}{since}", a.message)?;
            hints.write(out, &a.hint)?;
        }
        match self.state {
            Label::Idle | Label::Running | Label::Failed => {
                writeln!(out, "state:      {}: {}", self.state.as_str(), self.message)?
            }
            _ => writeln!(out, "state:      {}", self.state.as_str())?,
        }
        writeln!(out, "host:       {}", self.host)?;
        if let Some(p) = &self.pivot {
            p.write_human(out)?;
        }
        writeln!(
            out,
            "source:     {} (branch {})",
            self.source.url, self.source.branch
        )?;
        if let Some(h) = &self.head {
            let status = match h.status {
                HeadStatus::Deployed => "deployed",
                HeadStatus::Pending if self.paused.is_some() => "not deployed (paused)",
                HeadStatus::Pending => "not deployed yet",
                HeadStatus::Bad => "failed, not retried",
                HeadStatus::PinnedPast => "not deployed (pinned)",
                HeadStatus::Refused => "refused, not built",
            };
            let seen = aside("seen", h.seen_at.as_deref(), now);
            writeln!(out, "head:       {} {status}{seen}", short(&h.commit))?;
        }
        let d = &self.deployed;
        let lost = self
            .attention
            .iter()
            .any(|a| a.kind == AttentionKind::StateLost);
        match &d.commit {
            Some(c) => writeln!(
                out,
                "deployed:   {}{}{}",
                short(c),
                d.subject
                    .as_deref()
                    .map(|s| format!(" {s}"))
                    .unwrap_or_default(),
                d.at.as_deref()
                    .and_then(|a| relative(a, now))
                    .map(|a| format!(" ({a})"))
                    .unwrap_or_default()
            )?,
            None if lost => writeln!(out, "deployed:   unknown (the state was lost)")?,
            None => writeln!(out, "deployed:   nothing yet by homelab-agent")?,
        }
        if let Some(g) = self.profile_generation.or(d.generation) {
            writeln!(out, "generation: {g} (boot default)")?;
        }
        if let Some(s) = self.current_system.as_ref().or(d.system.as_ref()) {
            let mark = if self
                .attention
                .iter()
                .any(|a| matches!(a.kind, AttentionKind::RollbackFailed | AttentionKind::Drift))
            {
                "  <- live, NOT the boot default"
            } else {
                ""
            };
            writeln!(out, "system:     {s}{mark}")?;
        }
        if let Some(t) = &self.testing {
            let live = if t.live {
                "live now, not the boot default (a reboot or the next deployment replaces it)"
            } else {
                "not live"
            };
            writeln!(
                out,
                "testing:    {} {} on {}: {live}",
                short(&t.commit),
                t.outcome,
                t.branch
            )?;
        }
        if let Some(r) = &self.running {
            let pid = r.pid.map(|p| format!("pid {p}: ")).unwrap_or_default();
            let since = aside("since", r.since.as_deref(), now);
            writeln!(
                out,
                "running:    {pid}{}{since}",
                r.phase.as_deref().unwrap_or("a run is in progress")
            )?;
            if let Some(p) = &r.progress {
                writeln!(out, "progress:   {}", p.summary())?;
            }
        }
        self.write_last_run(out, now, &mut hints)?;
        if let Some(b) = &self.bad_commit {
            let when = relative(&b.at.to_string(), now)
                .map(|a| format!(" ({a})"))
                .unwrap_or_default();
            writeln!(
                out,
                "bad commit: {} failed in {}{when}",
                short(&b.commit),
                b.phase.as_str(),
            )?;
            if self.state != Label::NeedsAttention {
                hints.write(out, crate::failure::Kind::Commit.hint())?;
            }
        }
        if let Some(r) = &self.refused {
            writeln!(
                out,
                "refused:    {} ({}): not fetched again until the branch or the trust policy changes",
                short(&r.commit),
                r.reason.as_str(),
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
        self.reboot.write_human(out)?;
        if let Some(n) = self.next_poll.as_deref().and_then(|n| relative(n, now)) {
            writeln!(out, "next poll:  {n}")?;
        }
        Ok(())
    }

    fn write_last_run(
        &self,
        out: &mut impl Write,
        now: SystemTime,
        hints: &mut Hints,
    ) -> io::Result<()> {
        let r = &self.last_run;
        let Some(outcome) = &r.outcome else {
            return match self.state {
                Label::Unknown => writeln!(out, "last run:   unknown"),
                _ => writeln!(out, "last run:   none yet"),
            };
        };
        let commit = r
            .commit
            .as_deref()
            .map(|c| format!(" {}", short(c)))
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
        let when =
            r.at.as_deref()
                .and_then(|a| relative(a, now))
                .map(|a| format!(" ({a})"))
                .unwrap_or_default();
        writeln!(out, "last run:   {outcome}{commit}{phase}{back}{when}")?;
        if let Some(o) = &r.obtained {
            writeln!(out, "  obtained: {}", obtained(o))?;
        }
        if let Some(check) = &r.failed_check {
            writeln!(out, "  failing check: {check}")?;
        }
        if let Some(e) = &r.error {
            for line in e.lines().take(6) {
                writeln!(out, "  {line}")?;
            }
        }
        // A bad head's hint is on its own line below; a rollback's is in ATTENTION.
        let bad_last = self.bad_commit.is_some()
            && self.bad_commit.as_ref().map(|b| &b.commit) == r.commit.as_ref();
        if let (Some(h), false) = (&r.hint, bad_last || self.state == Label::NeedsAttention) {
            hints.write(out, h)?;
        }
        Ok(())
    }
}

/// Each hint once.
#[derive(Default)]
struct Hints(HashSet<String>);

impl Hints {
    fn write(&mut self, out: &mut impl Write, hint: &str) -> io::Result<()> {
        if self.0.insert(hint.to_string()) {
            writeln!(out, "  hint: {hint}")?;
        }
        Ok(())
    }
}

/// ` (since 3m ago)`: `word` and `at` relative to `now`; empty when `at` is unknown.
fn aside(word: &str, at: Option<&str>, now: SystemTime) -> String {
    at.and_then(|s| relative(s, now))
        .map(|s| format!(" ({word} {s})"))
        .unwrap_or_default()
}

/// "3m ago" or "in 4m", from an RFC 3339 time; `None` if it does not parse.
pub fn relative(at: &str, now: SystemTime) -> Option<String> {
    let t = crate::model::time::Timestamp::system_of(at)?;
    Some(match now.duration_since(t) {
        Ok(ago) => format!("{} ago", span(ago)),
        Err(e) => format!("in {}", span(e.duration())),
    })
}

/// One unit, two for hours and days: "45s", "3m", "2h 5m", "3d 4h".
fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 if s % 3600 / 60 == 0 => format!("{}h", s / 3600),
        3600..=86399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ if s % 86400 / 3600 == 0 => format!("{}d", s / 86400),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// `history`: newest first, times relative to `now`.
/// One run a paragraph: when, how it ended, how long it took, and for a failure the error's
/// key lines (its first line, the lines nix marks `error:`) and its hint.
pub fn write_history_human(
    runs: &[Run],
    out: &mut impl Write,
    now: SystemTime,
    absolute: bool,
) -> io::Result<()> {
    let out = &mut Escaping(out);
    for r in runs {
        let commit = r.commit.as_deref().map(short).unwrap_or("-");
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
        let when = match absolute {
            true => local_time(&r.at.to_string()).unwrap_or_else(|| r.at.to_string()),
            false => relative(&r.at.to_string(), now).unwrap_or_else(|| r.at.to_string()),
        };
        let width = if absolute { 25 } else { 12 };
        writeln!(
            out,
            "{when:>width$}  {:<11} {commit:<8} {}{phase}{gen}{back}{}",
            r.outcome.as_str(),
            r.subject.as_deref().unwrap_or(""),
            took(r)
        )?;
        if let Some(o) = r.obtained.as_ref().filter(|o| o.fallback.is_some()) {
            writeln!(out, "    {}", obtained(o))?;
        }
        if let Some(e) = &r.error {
            for line in key_lines(e) {
                writeln!(out, "    {line}")?;
            }
        }
        if let Some(hint) = &r.hint {
            writeln!(out, "    hint: {hint}")?;
        }
    }
    Ok(())
}

/// How a run's system was obtained: "prebuilt (fetched in 3s, manifest signed by ci@x)",
/// "built here (prebuilt: missing: branch … has no …)".
pub(super) fn obtained(o: &crate::state::obtained::Obtained) -> String {
    use crate::state::obtained::How;
    let fetch = o.fetch_ms.map(span_ms);
    match o.how {
        How::Prebuilt => {
            let mut parts = Vec::new();
            if let Some(f) = fetch {
                parts.push(format!("fetched in {f}"));
            }
            if let Some(s) = &o.signer {
                parts.push(format!("manifest signed by {s}"));
            }
            format!("{} ({})", o.how.words(), parts.join(", "))
        }
        How::BuiltHere => match (o.fallback, &o.why) {
            (Some(f), Some(why)) => format!(
                "{} (prebuilt: {}: {})",
                o.how.words(),
                f.as_str(),
                why.lines().next().unwrap_or_default()
            ),
            (Some(f), None) => format!("{} (prebuilt: {})", o.how.words(), f.as_str()),
            _ => o.how.words().to_string(),
        },
    }
}

fn span_ms(ms: u64) -> String {
    let secs = ms.div_ceil(1000);
    crate::duration::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

/// How long a run took, with its build and checks: " in 3m 12s (build 2m 50s, checks 12s)".
fn took(r: &Run) -> String {
    if r.duration_ms == 0 {
        return String::new();
    }
    // A prebuilt system was fetched, not built.
    let prebuilt = r
        .obtained
        .as_ref()
        .is_some_and(|o| o.how == crate::state::obtained::How::Prebuilt);
    let build = match prebuilt {
        true => (
            "prebuilt, fetched",
            r.obtained.as_ref().and_then(|o| o.fetch_ms),
        ),
        false => ("build", r.build_ms),
    };
    let parts: Vec<String> = [build, ("checks", r.health_ms)]
        .into_iter()
        .filter_map(|(what, ms)| ms.map(|ms| format!("{what} {}", span_ms(ms))))
        .collect();
    match parts.is_empty() {
        true => format!(" in {}", span_ms(r.duration_ms)),
        false => format!(" in {} ({})", span_ms(r.duration_ms), parts.join(", ")),
    }
}

/// At most this many lines of an error in `history`; each at most this long.
const KEY_LINES: usize = 4;
const KEY_LINE_CHARS: usize = 200;

/// The lines of an error that say what went wrong: the first, then the lines nix marks
/// `error:` (where the real cause is, under "evaluation failed:"), else the next ones.
/// (The hint is a field of the run: [`Run::hint`].)
fn key_lines(error: &str) -> Vec<String> {
    let lines: Vec<&str> = error
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let mut key: Vec<&str> = lines.first().copied().into_iter().collect();
    let marked: Vec<&str> = lines
        .iter()
        .skip(1)
        .copied()
        .filter(|l| l.trim_start().starts_with("error:"))
        .collect();
    let rest: Vec<&str> = match marked.is_empty() {
        true => lines.iter().skip(1).copied().collect(),
        false => marked,
    };
    key.extend(rest.into_iter().take(KEY_LINES - 1));
    let cap = |l: &str| match l.chars().count() > KEY_LINE_CHARS {
        true => format!("{}…", l.chars().take(KEY_LINE_CHARS).collect::<String>()),
        false => l.trim().to_string(),
    };
    key.into_iter().map(cap).collect()
}

/// An RFC 3339 time as a local date and time with its offset, e.g. "2026-12-07 13:02:11 +01:00".
fn local_time(at: &str) -> Option<String> {
    let t: jiff::Timestamp = at.parse().ok()?;
    let zoned = t.to_zoned(jiff::tz::TimeZone::system());
    Some(zoned.strftime("%Y-%m-%d %H:%M:%S %:z").to_string())
}
