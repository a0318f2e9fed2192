//! The textfile itself: Prometheus text exposition format 0.0.4, one `# HELP` and one
//! `# TYPE` per family, names prefixed `homelab_agent_` with their unit. A pure function
//! of what it is given, so that an unchanged machine renders the same bytes and nothing
//! is written. Nothing that changes on every poll is in it (no "last poll" time): see
//! README "Monitoring".

use std::fmt::Write;
use std::time::UNIX_EPOCH;

use crate::pause::Paused;
use crate::state::{Outcome, State};
use crate::status::{HeadStatus, Label, Status};

use super::record::Record;

/// Everything the file says, gathered by the caller.
pub struct Snapshot<'a> {
    pub version: &'a str,
    pub view: &'a Status,
    pub state: &'a State,
    pub paused: Option<&'a Paused>,
    pub record: &'a Record,
    /// The longest an activation can take ([`activation_budget`]): its deadline.
    pub activation_budget: std::time::Duration,
}

/// The longest an activation of these settings can last, every step at its limit: the
/// switch (test), settle and health checks, the commit's switch (boot) or a rollback's
/// switch, and five minutes of slack. An activation still unfinished past it was killed
/// (its intent is still on disk) or hangs: either way a person must look.
pub fn activation_budget(settings: &crate::config::Settings) -> std::time::Duration {
    settings.activation.timeout * 3
        + settings.health.settle
        + settings.health.timeout
        + std::time::Duration::from_secs(300)
}

const LABELS: [Label; 6] = [
    Label::Idle,
    Label::Running,
    Label::Pinned,
    Label::Failed,
    Label::NeedsAttention,
    Label::Unknown,
];
const HEADS: [(HeadStatus, &str); 5] = [
    (HeadStatus::Deployed, "deployed"),
    (HeadStatus::Pending, "pending"),
    (HeadStatus::Bad, "bad"),
    (HeadStatus::PinnedPast, "pinned-past"),
    (HeadStatus::Refused, "refused"),
];
/// The outcomes a recorded run can have.
const RECORDED: [Outcome; 6] = [
    Outcome::Deployed,
    Outcome::Unchanged,
    Outcome::Failed,
    Outcome::Interrupted,
    Outcome::RolledBack,
    Outcome::Tested,
];

type Labels<'a> = Vec<(&'a str, String)>;

#[derive(Default)]
struct Out(String);

impl Out {
    /// One family; nothing at all when it has no sample.
    fn family(&mut self, name: &str, kind: &str, help: &str, samples: &[(Labels, f64)]) {
        if samples.is_empty() {
            return;
        }
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            self.0.push_str(name);
            if !labels.is_empty() {
                let inner: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                let _ = write!(self.0, "{{{}}}", inner.join(","));
            }
            let _ = writeln!(self.0, " {}", number(*value));
        }
    }

    fn gauge(&mut self, name: &str, help: &str, value: Option<f64>) {
        let samples: Vec<(Labels, f64)> = value.map(|v| (Vec::new(), v)).into_iter().collect();
        self.family(name, "gauge", help, &samples);
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

/// A family with one sample per `(value, name)`, labelled `label="name"`: 1 where `on`
/// holds for the value (the current state, status or outcome), 0 elsewhere.
fn one_hot<T, const N: usize>(
    label: &'static str,
    values: [(T, &str); N],
    on: impl Fn(T) -> bool,
) -> Vec<(Labels<'static>, f64)> {
    values
        .into_iter()
        .map(|(v, name)| (vec![(label, name.to_string())], flag(on(v))))
        .collect()
}

fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}

/// Seconds since the epoch of an RFC 3339 time as the agent writes them.
fn seconds(at: Option<&str>) -> Option<f64> {
    let t = crate::model::time::Timestamp::system_of(at?)?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_secs() as f64)
}

/// Seconds since the epoch of a stored time.
fn stamp(at: Option<crate::model::time::Timestamp>) -> Option<f64> {
    Some(at?.as_jiff().as_second() as f64)
}

fn millis(ms: Option<u64>) -> Option<f64> {
    ms.map(|ms| ms as f64 / 1000.0)
}

pub fn render(s: &Snapshot) -> String {
    let (view, state) = (s.view, s.state);
    let mut out = Out::default();
    out.family(
        "homelab_agent_info",
        "gauge",
        "The agent: host, branch followed, version (always 1).",
        &[(
            vec![
                ("host", view.host.clone()),
                ("branch", view.source.branch.clone()),
                ("version", s.version.to_string()),
            ],
            1.0,
        )],
    );
    let states = one_hot("state", LABELS.map(|l| (l, l.as_str())), |l| {
        view.state == l
    });
    out.family(
        "homelab_agent_state",
        "gauge",
        "The status label (`homelab-agent status`): 1 for the current one.",
        &states,
    );

    let d = &view.deployed;
    if d.commit.is_some() || d.generation.is_some() {
        out.family(
            "homelab_agent_deployed_info",
            "gauge",
            "What runs: its commit and profile generation (always 1).",
            &[(
                vec![
                    ("commit", d.commit.clone().unwrap_or_default()),
                    (
                        "generation",
                        d.generation.map(|g| g.to_string()).unwrap_or_default(),
                    ),
                ],
                1.0,
            )],
        );
    }
    out.gauge(
        "homelab_agent_deployed_generation",
        "The profile generation of what runs.",
        d.generation.map(f64::from),
    );
    out.gauge(
        "homelab_agent_deployed_timestamp_seconds",
        "When what runs was deployed.",
        seconds(d.at.as_deref()),
    );

    let head = view.head.as_ref();
    let heads = one_hot("status", HEADS, |h| head.is_some_and(|x| x.status == h));
    out.family(
        "homelab_agent_head_status",
        "gauge",
        "Where the branch head last seen stands: 1 for its status (all 0 before the first poll).",
        &heads,
    );
    let since = head
        .filter(|h| s.record.head.as_deref() == Some(h.commit.as_str()))
        .and_then(|_| stamp(s.record.head_since));
    out.gauge(
        "homelab_agent_head_first_seen_timestamp_seconds",
        "When the agent first saw the current branch head (since boot).",
        since,
    );

    if let Some(run) = state.history.first() {
        let outcomes = one_hot("outcome", RECORDED.map(|o| (o, o.as_str())), |o| {
            run.outcome == o
        });
        out.family(
            "homelab_agent_last_run_outcome",
            "gauge",
            "How the last recorded run ended: 1 for its outcome.",
            &outcomes,
        );
        out.family(
            "homelab_agent_last_run_info",
            "gauge",
            "The last recorded run: outcome, commit, failed phase (always 1).",
            &[(
                vec![
                    ("outcome", run.outcome.as_str().to_string()),
                    ("commit", run.commit.clone().unwrap_or_default()),
                    (
                        "phase",
                        run.phase
                            .map(|p| p.as_str().to_string())
                            .unwrap_or_default(),
                    ),
                ],
                1.0,
            )],
        );
        out.gauge(
            "homelab_agent_last_run_timestamp_seconds",
            "When the last recorded run ended.",
            stamp(Some(run.at)),
        );
        out.gauge(
            "homelab_agent_last_run_duration_seconds",
            "How long the last recorded run took.",
            millis(Some(run.duration_ms)),
        );
        out.gauge(
            "homelab_agent_last_run_build_duration_seconds",
            "How long the last recorded run's build took.",
            millis(run.build_ms),
        );
        out.gauge(
            "homelab_agent_last_run_health_duration_seconds",
            "How long the last recorded run's health checks took, settle included.",
            millis(run.health_ms),
        );
        // Issue 24: how its system was obtained (every build, `[prebuilt]` on or off), and
        // why not prebuilt.
        if let Some(o) = &run.obtained {
            use crate::state::obtained::{Fallback, How};
            out.family(
                "homelab_agent_last_run_obtained",
                "gauge",
                "How the last recorded run's system was obtained: 1 for prebuilt (fetched from a cache) or built-here.",
                &one_hot("how", How::ALL.map(|h| (h, h.as_str())), |h| o.how == h),
            );
            out.family(
                "homelab_agent_last_run_prebuilt_fallback",
                "gauge",
                "Why the last recorded run built its system here with [prebuilt] on: 1 for the reason (all 0 when prebuilt, or [prebuilt] is off).",
                &one_hot("reason", Fallback::ALL.map(|f| (f, f.as_str())), |f| {
                    o.fallback == Some(f)
                }),
            );
            out.gauge(
                "homelab_agent_last_run_fetch_duration_seconds",
                "How long the last recorded run spent on the prebuilt path (manifest check and fetch from the cache).",
                millis(o.fetch_ms),
            );
        }
        out.gauge(
            "homelab_agent_last_run_rolled_back",
            "1 when the last recorded run failed and the previous system was restored.",
            Some(flag(run.rolled_back == Some(true))),
        );
    }

    // An activation in progress (the intent on disk): written when it starts, gone when
    // it is recorded. A run killed in the middle leaves exactly this in the file.
    let started = state
        .intent
        .as_ref()
        .and_then(|i| stamp(Some(i.started_at)));
    out.gauge(
        "homelab_agent_activation_started_timestamp_seconds",
        "When the activation in progress began (absent: none).",
        started,
    );
    out.gauge(
        "homelab_agent_activation_deadline_timestamp_seconds",
        "When the activation in progress must have ended, every step at its limit; past it, it was interrupted or hangs.",
        started.map(|t| t + s.activation_budget.as_secs() as f64),
    );
    // The newest interrupted run in history (resolved by the run after it, which may have
    // deployed since): the rules page for an hour after it.
    out.gauge(
        "homelab_agent_last_interrupted_timestamp_seconds",
        "When the newest interrupted run in history was recorded (absent: none).",
        state
            .history
            .iter()
            .find(|r| r.outcome == Outcome::Interrupted)
            .and_then(|r| stamp(Some(r.at))),
    );
    // A build of the head that failed without blaming it, waiting out its backoff.
    let retry = state.retries.as_ref();
    out.gauge(
        "homelab_agent_build_retries",
        "Builds of the head in a row that failed without blaming it (nix missing, a timeout, a full disk).",
        retry.map(|r| f64::from(r.count)),
    );
    out.gauge(
        "homelab_agent_next_build_timestamp_seconds",
        "When the backoff after such failures ends and the next run builds the head again.",
        retry.and_then(|r| stamp(r.not_before)),
    );

    out.gauge(
        "homelab_agent_bad_commit",
        "1 when the branch head is a commit known bad for this host (not retried).",
        Some(flag(view.bad_commit.is_some())),
    );
    out.gauge(
        "homelab_agent_bad_commits",
        "Commits remembered as bad for this host.",
        Some(state.bad_commits.len() as f64),
    );
    out.gauge(
        "homelab_agent_pinned",
        "1 when pinned by `homelab-agent rollback` (until `resume`).",
        Some(flag(state.pinned.is_some())),
    );
    out.gauge(
        "homelab_agent_paused",
        "1 when paused by `homelab-agent pause` (until `resume` or its expiry).",
        Some(flag(s.paused.is_some())),
    );
    out.gauge(
        "homelab_agent_paused_since_timestamp_seconds",
        "When the pause in force began.",
        s.paused.and_then(|p| stamp(Some(p.since))),
    );
    out.gauge(
        "homelab_agent_paused_until_timestamp_seconds",
        "When the pause in force ends by itself (absent: until `resume`).",
        s.paused.and_then(|p| stamp(p.until)),
    );
    out.gauge(
        "homelab_agent_needs_attention",
        "1 when the machine needs a person (a failed rollback, an interrupted run, drift).",
        Some(flag(view.state == Label::NeedsAttention)),
    );
    out.gauge(
        "homelab_agent_drift",
        "1 when the live system or the boot default is not what the agent deployed (a switch made by hand, or a live system that is not the boot default).",
        Some(flag(view.attention.iter().any(|a| {
            a.kind == crate::status::AttentionKind::Drift
        }))),
    );
    out.gauge(
        "homelab_agent_reboot_required",
        "1 when the booted kernel, initrd or modules differ from the running system's.",
        view.reboot_required.map(flag),
    );
    out.gauge(
        "homelab_agent_reboot_required_since_timestamp_seconds",
        "When the agent first saw that a reboot is required (since boot).",
        stamp(s.record.reboot_required_since).filter(|_| view.reboot_required == Some(true)),
    );
    // A reboot that is wanted and held back, and by what: `trial` when no one-shot trial
    // can be armed (docs/reboots.md), `attention` when a person must look.
    let waiting: Vec<(Labels, f64)> = view
        .reboot
        .pending
        .as_ref()
        .and_then(|p| p.waiting_for.clone())
        .map(|w| (vec![("for", w)], 1.0))
        .into_iter()
        .collect();
    out.family(
        "homelab_agent_reboot_waiting",
        "gauge",
        "1 while a reboot is pending and held back, labelled with what it waits for (policy, delay, window, trial, lock, reboot, attention).",
        &waiting,
    );
    out.family(
        "homelab_agent_poll_failures_total",
        "counter",
        "Polls that could not reach the remote (since boot).",
        &[(Vec::new(), s.record.poll_failures_total as f64)],
    );
    out.gauge(
        "homelab_agent_poll_consecutive_failures",
        "Polls in a row that could not reach the remote.",
        Some(s.record.poll_failures_consecutive as f64),
    );
    out.0
}

#[cfg(test)]
pub(super) fn escape_for_test(v: &str) -> String {
    escape(v)
}
