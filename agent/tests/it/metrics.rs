//! Textfile metrics with Debian's real tools: `promtool check metrics` on the file the
//! agent writes in each state, and `prometheus-node-exporter` serving it on loopback
//! (`node_textfile_scrape_error 0`). An idle poll writes nothing.

use std::io::{Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{nix_available, require, Harness};

const PROM: &str = "homelab_agent.prom";

/// A harness whose config turns metrics on, into `<tmp>/textfile`.
fn harness() -> (Harness, PathBuf) {
    let mut h = Harness::new();
    let dir = h.path("textfile");
    std::fs::create_dir_all(&dir).unwrap();
    h.extra = format!("[metrics]\ntextfile_dir = \"{}\"\n", dir.display());
    (h, dir)
}

fn tools() -> bool {
    nix_available() && require("promtool") && require("prometheus-node-exporter")
}

/// `promtool check metrics` accepts the file with no lint problem at all.
pub(crate) fn promtool_check(file: &Path, what: &str) -> String {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{what}: no metrics file {}: {e}", file.display()));
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "{what}: promtool check metrics refused the file ({}):\n{said}\n--- file:\n{text}",
        out.status
    );
    text
}

/// node_exporter with only the textfile collector, on a free loopback port.
struct NodeExporter {
    child: Child,
    port: u16,
}

impl NodeExporter {
    fn start(dir: &Path) -> NodeExporter {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .arg(format!("--collector.textfile.directory={}", dir.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus-node-exporter");
        let n = NodeExporter { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "node_exporter did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        n
    }

    /// The scraped metrics body.
    fn scrape(&self) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(
            body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
            "{body}"
        );
        body.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the one sample `series` (name with labels, exactly as written).
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn assert_values(body: &str, what: &str, expected: &[(&str, f64)]) {
    assert_eq!(
        value(body, "node_textfile_scrape_error"),
        Some(0.0),
        "{what}: node_exporter could not read the textfile:\n{body}"
    );
    for (series, v) in expected {
        assert_eq!(value(body, series), Some(*v), "{what}: {series} in\n{body}");
    }
}

#[test]
fn every_state_passes_promtool_and_node_exporter_serves_it() {
    if !tools() {
        return;
    }
    let (mut h, dir) = harness();
    let file = dir.join(PROM);
    let exporter = NodeExporter::start(&dir);

    // Fresh: an operator command before any run writes the file with no run in it.
    h.agent(&["retry"]).expect(0);
    let text = promtool_check(&file, "fresh");
    assert!(!text.contains("homelab_agent_last_run_"), "{text}");
    assert_values(
        &exporter.scrape(),
        "fresh",
        &[("homelab_agent_pinned", 0.0), ("homelab_agent_paused", 0.0)],
    );

    // Deployed.
    let (c1, _) = h.bootstrap();
    promtool_check(&file, "deployed");
    let body = exporter.scrape();
    assert_values(
        &body,
        "deployed",
        &[
            ("homelab_agent_deployed_generation", 1.0),
            (
                &format!("homelab_agent_deployed_info{{commit=\"{c1}\",generation=\"1\"}}"),
                1.0,
            ),
            ("homelab_agent_last_run_outcome{outcome=\"deployed\"}", 1.0),
            ("homelab_agent_head_status{status=\"deployed\"}", 1.0),
            ("homelab_agent_needs_attention", 0.0),
            ("homelab_agent_poll_failures_total", 0.0),
        ],
    );
    assert!(
        value(&body, "homelab_agent_last_run_build_duration_seconds").is_some(),
        "{body}"
    );
    assert!(
        value(&body, "homelab_agent_last_run_health_duration_seconds").is_some(),
        "{body}"
    );

    // A commit whose system is unhealthy: rolled back, remembered bad.
    h.host("pi1").content = "v2".into();
    h.host("pi1").healthy = false;
    h.commit("unhealthy");
    h.run_once().expect(1);
    promtool_check(&file, "bad commit");
    assert_values(
        &exporter.scrape(),
        "bad commit",
        &[
            ("homelab_agent_last_run_outcome{outcome=\"failed\"}", 1.0),
            ("homelab_agent_last_run_rolled_back", 1.0),
            ("homelab_agent_bad_commit", 1.0),
            ("homelab_agent_head_status{status=\"bad\"}", 1.0),
            ("homelab_agent_state{state=\"failed\"}", 1.0),
        ],
    );

    // A healthy v3 (generation 2), then the operator's rollback to generation 1: pinned.
    h.host("pi1").content = "v3".into();
    h.host("pi1").healthy = true;
    h.commit("v3");
    h.run_once().expect(0);
    h.agent(&["rollback"]).expect(0);
    promtool_check(&file, "rolled back");
    assert_values(
        &exporter.scrape(),
        "rolled back",
        &[
            (
                "homelab_agent_last_run_outcome{outcome=\"rolled-back\"}",
                1.0,
            ),
            ("homelab_agent_pinned", 1.0),
            ("homelab_agent_state{state=\"pinned\"}", 1.0),
        ],
    );
    h.agent(&["resume"]).expect(0);

    // Paused, with an expiry.
    h.agent(&["pause", "--for", "2h", "moving the rack"])
        .expect(0);
    promtool_check(&file, "paused");
    let body = exporter.scrape();
    assert_values(
        &body,
        "paused",
        &[("homelab_agent_paused", 1.0), ("homelab_agent_pinned", 0.0)],
    );
    let until = value(&body, "homelab_agent_paused_until_timestamp_seconds").expect("until");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (until - now - 7200.0).abs() < 120.0,
        "until {until}, now {now}"
    );
    h.agent(&["resume"]).expect(0);

    // Needs attention: the live system is not the boot default (drift), seen by a command.
    h.run_once().expect(0); // back on the head (generation 3)
    let profile_gen1 = h.path("profiles/system-1-link");
    let live = h.current_system_link();
    std::fs::remove_file(&live).unwrap();
    std::os::unix::fs::symlink(std::fs::read_link(&profile_gen1).unwrap(), &live).unwrap();
    h.agent(&["retry"]).expect(0);
    promtool_check(&file, "needs attention");
    assert_values(
        &exporter.scrape(),
        "needs attention",
        &[
            ("homelab_agent_needs_attention", 1.0),
            ("homelab_agent_state{state=\"needs-attention\"}", 1.0),
        ],
    );
}

#[test]
fn an_idle_poll_writes_no_metrics_and_a_failed_poll_does() {
    if !tools() {
        return;
    }
    let (mut h, dir) = harness();
    h.bootstrap();
    let file = dir.join(PROM);
    let record = h.path("runtime/metrics.json");
    let stamp = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec())
    };
    let before = stamp(&file);
    std::thread::sleep(Duration::from_millis(1100));
    for _ in 0..3 {
        h.run_once().expect(0);
    }
    assert_eq!(
        stamp(&file),
        before,
        "an idle poll rewrote the metrics file"
    );
    let record_before = std::fs::read(&record).unwrap();

    // The remote is gone: each failed poll is a change (the counters move).
    h.url = h.path("nowhere").display().to_string();
    assert_ne!(h.run_once().code(), 0);
    assert_ne!(h.run_once().code(), 0);
    let text = promtool_check(&file, "poll failures");
    assert!(
        text.contains("homelab_agent_poll_failures_total 2\n"),
        "{text}"
    );
    assert!(
        text.contains("homelab_agent_poll_consecutive_failures 2\n"),
        "{text}"
    );
    assert_ne!(std::fs::read(&record).unwrap(), record_before);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        [PROM],
        "a temp file was left in the textfile directory"
    );
}

#[test]
fn a_relative_textfile_dir_is_refused_with_key_and_hint() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        "[source]\nurl = \"/r\"\n[host]\nname = \"pi1\"\n[metrics]\ntextfile_dir = \"textfile\"\n",
    )
    .unwrap();
    let out = Command::new(crate::support::BIN)
        .args(["config", "check", "--no-file-checks", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("metrics.textfile_dir"), "{err}");
    assert!(err.contains("not an absolute path"), "{err}");
    assert!(err.contains("line 6"), "{err}");
}

#[test]
fn a_metrics_directory_that_cannot_be_written_never_fails_a_run() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    // A regular file where the directory should be.
    let not_a_dir = h.path("textfile");
    std::fs::write(&not_a_dir, "").unwrap();
    h.extra = format!("[metrics]\ntextfile_dir = \"{}\"\n", not_a_dir.display());
    h.host("pi1").content = "v1".into();
    h.commit("first");
    let run = h.run_once();
    run.expect(0);
    assert!(
        run.stderr().contains("cannot write the metrics file"),
        "{}",
        run.stderr()
    );
    assert!(run.stderr().contains("hint: "), "{}", run.stderr());
    assert_eq!(h.profile_generation(), Some(1));
    assert_eq!(std::fs::read(&not_a_dir).unwrap(), b"");
}

// ---- the shipped alert rules, fed by the agent's own textfile (issue 23 items 8-11) ----

/// The shipped rules (modules/homelab-agent/alerts.yml).
fn shipped_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../modules/homelab-agent/alerts.yml")
}

/// The `homelab_agent_*` samples of a node_exporter scrape as promtool input series for
/// machine pi1 (the labels a scrape adds: instance, job), each held for 10 hours. Real
/// time "now" is promtool's time 0: timestamps are shifted by it, so ages are kept.
fn as_input_series(body: &str, now: f64) -> String {
    let mut out = String::new();
    for line in body.lines() {
        if line.starts_with('#') || !line.starts_with("homelab_agent_") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let mut value: f64 = value.parse().unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, format!("{},", rest.trim_end_matches('}'))),
            None => (series, String::new()),
        };
        if name.ends_with("_timestamp_seconds") {
            value -= now;
        }
        out.push_str(&format!(
            "      - series: '{name}{{{labels}instance=\"pi1\",job=\"node\"}}'\n        values: \"{value}+0x60\"\n"
        ));
    }
    out
}

/// `promtool test rules` with the shipped rules over `body` (a scrape made at `now`):
/// exactly the alerts `expected` fire at each evaluation time (from the scrape on).
fn assert_alerts(what: &str, body: &str, now: f64, expected: &[(&str, &[&str])]) {
    let dir = tempfile::tempdir().unwrap();
    let mut test = format!(
        "rule_files:\n  - {}\nevaluation_interval: 1m\ntests:\n  - interval: 10m\n    input_series:\n{}    promql_expr_test:\n",
        shipped_rules().display(),
        as_input_series(body, now)
    );
    for (at, alerts) in expected {
        test.push_str(&format!(
            "      - expr: count by (alertname) (ALERTS{{alertstate=\"firing\"}})\n        eval_time: {at}\n        exp_samples:\n"
        ));
        for a in alerts.iter() {
            test.push_str(&format!(
                "          - labels: '{{alertname=\"{a}\"}}'\n            value: 1\n"
            ));
        }
        if alerts.is_empty() {
            test.truncate(test.len() - "        exp_samples:\n".len());
            test.push_str("        exp_samples: []\n");
        }
    }
    let file = dir.path().join("test.yml");
    std::fs::write(&file, &test).unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "{what}: the shipped rules did not fire as expected on the agent's textfile:\n{}{}\n--- test:\n{test}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Issue 23 item 8: a run killed in the middle of its activation. `status` says
/// needs-attention; the textfile it left says running, with the activation's deadline;
/// the shipped rules raise NeedsAttention once the deadline is past (and nothing else).
/// The next run resolves it and the alert ends.
#[cfg(feature = "failpoints")]
#[test]
fn an_interrupted_run_reaches_prometheus_as_needs_attention() {
    if !tools() {
        return;
    }
    let (mut h, dir) = harness();
    let exporter = NodeExporter::start(&dir);
    h.bootstrap();
    h.host("pi1").content = "v2".into();
    h.commit("v2");
    let mut cmd = h.command(&["run", "--once"]);
    cmd.env("HOMELAB_AGENT_FAILPOINTS", "after_activate");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), None, "not killed");
    let status = h.agent(&["status", "--json"]);
    assert_eq!(status.code(), 3, "{}", status.stdout());
    promtool_check(&dir.join(PROM), "interrupted");
    let body = exporter.scrape();
    assert_values(
        &body,
        "interrupted",
        &[("homelab_agent_state{state=\"running\"}", 1.0)],
    );
    let deadline = value(&body, "homelab_agent_activation_deadline_timestamp_seconds")
        .expect("no activation deadline in the file a killed run left");
    let (t, left) = (now(), deadline - now());
    assert!(left > 0.0 && left < 3600.0, "deadline in {left}s");
    assert_alerts(
        "interrupted",
        &body,
        t,
        &[("1m", &[]), ("2h", &["HomelabAgentNeedsAttention"])],
    );

    // The next run resolves it (and deploys the commit again): NeedsAttention for the
    // hour after the interruption, then nothing.
    h.run_once().expect(0);
    let body = exporter.scrape();
    assert!(
        value(&body, "homelab_agent_activation_started_timestamp_seconds").is_none(),
        "{body}"
    );
    assert!(
        value(&body, "homelab_agent_last_interrupted_timestamp_seconds").is_some(),
        "{body}"
    );
    assert_alerts(
        "resolved",
        &body,
        now(),
        &[("1m", &["HomelabAgentNeedsAttention"]), ("2h", &[])],
    );
}

/// Issue 23 items 9-11 with the agent's real textfile: a build that times out (no blame)
/// is a failed run (DeployFailed, never Stuck beside it); an expired pause no longer holds
/// Stuck back though the file still says paused; a known-bad head that was rolled back is
/// RolledBack only (no Stuck beside it).
#[test]
fn the_shipped_rules_fire_once_per_event_on_the_agents_textfile() {
    if !tools() {
        return;
    }
    // A build that times out: recorded, with its backoff.
    let (mut h, dir) = harness();
    let exporter = NodeExporter::start(&dir);
    h.bootstrap();
    h.host("pi1").build = "build-sleep:617".into();
    h.build_timeout = "2s".into();
    h.host("pi1").content = "v2".into();
    h.commit("slow build");
    h.run_once().expect(75);
    assert_eq!(h.history()[0]["outcome"], "failed", "{:?}", h.history());
    promtool_check(&dir.join(PROM), "build timeout");
    let body = exporter.scrape();
    assert_values(
        &body,
        "build timeout",
        &[
            ("homelab_agent_last_run_outcome{outcome=\"failed\"}", 1.0),
            ("homelab_agent_last_run_rolled_back", 0.0),
            ("homelab_agent_build_retries", 1.0),
            ("homelab_agent_head_status{status=\"pending\"}", 1.0),
        ],
    );
    let next = value(&body, "homelab_agent_next_build_timestamp_seconds").expect("next build");
    assert!((next - now() - 600.0).abs() < 60.0, "next build at {next}");
    assert_alerts(
        "build timeout",
        &body,
        now(),
        &[
            ("1m", &["HomelabAgentDeployFailed"]),
            ("7h", &["HomelabAgentDeployFailed"]),
        ],
    );
    drop(exporter);

    // A pause that ended, with no run since: the file still says paused 1.
    let (mut h, dir) = harness();
    let exporter = NodeExporter::start(&dir);
    h.bootstrap();
    h.agent(&["pause", "--for", "2s"]).expect(0);
    h.host("pi1").content = "v2".into();
    h.commit("v2");
    h.run_once().expect(0); // paused: polls, the head is pending
    std::thread::sleep(Duration::from_millis(2500));
    let body = exporter.scrape();
    assert_values(
        &body,
        "expired pause",
        &[
            ("homelab_agent_paused", 1.0),
            ("homelab_agent_head_status{status=\"pending\"}", 1.0),
        ],
    );
    assert_alerts(
        "expired pause",
        &body,
        now(),
        &[("1m", &[]), ("7h", &["HomelabAgentStuck"])],
    );
    drop(exporter);

    // A known-bad head, rolled back.
    let (mut h, dir) = harness();
    let exporter = NodeExporter::start(&dir);
    h.bootstrap();
    h.host("pi1").content = "v2".into();
    h.host("pi1").healthy = false;
    h.commit("unhealthy");
    h.run_once().expect(1);
    let body = exporter.scrape();
    assert_values(
        &body,
        "bad head",
        &[("homelab_agent_head_status{status=\"bad\"}", 1.0)],
    );
    assert_alerts(
        "bad head",
        &body,
        now(),
        &[
            ("1m", &["HomelabAgentRolledBack"]),
            ("7h", &["HomelabAgentRolledBack"]),
        ],
    );
}

/// Issue 23 item 10: a daemon polling every hour wakes when a pause ends by itself, so the
/// textfile says `homelab_agent_paused 0` seconds after the end, not an hour later.
#[test]
fn a_daemon_rewrites_the_textfile_when_a_pause_ends() {
    if !tools() {
        return;
    }
    let (mut h, dir) = harness();
    h.bootstrap();
    h.extra
        .push_str("[run]\ninterval = \"1h\"\njitter = \"0s\"\n");
    h.agent(&["pause", "--for", "3s"]).expect(0);
    let file = dir.join(PROM);
    let daemon = h
        .command(&["run"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut text = String::new();
    while started.elapsed() < Duration::from_secs(20) {
        text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.contains("homelab_agent_paused 0\n") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let out = daemon.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("homelab_agent_paused 0\n"),
        "after {:?} the textfile still says paused:\n{text}\n--- daemon:\n{err}",
        started.elapsed()
    );
    assert!(err.contains("the pause ended"), "{err}");
}
