//! Building a machine's system with `nix build`: argument vectors built by a pure
//! function, `--json` parsed for the result, errors told apart (evaluation, missing host,
//! build failure, timeout, disk full) so the operator knows what to fix.
//!
//! Only flags that both Nix 2.8 and 2.18+ accept. The output is rooted with `--out-link`
//! from the moment it exists, so a garbage collection cannot delete it before activation.

pub mod caches;
pub mod failure;
pub mod metadata;
pub mod plan;
pub mod progress;
pub mod sigs;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::errno::Errno;

use crate::config::BuildSettings;
use crate::model::commit::CANDIDATE_REF;
use crate::process::{Cmd, CmdError, LineFilter};
pub use failure::BuildError;

/// Where the store is (its filesystem is checked after a failed build).
const STORE_DIR: &str = "/nix/store";
/// How long the follow-up "which hosts are there" evaluation may take.
const HOST_NAMES_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct BuildRequest<'a> {
    /// The agent's bare cache repository.
    pub cache: &'a Path,
    pub commit: &'a str,
    pub attribute: &'a str,
    /// GC root for the result.
    pub out_link: &'a Path,
    pub settings: &'a BuildSettings,
    /// Stops the evaluation or the build (and everything it started) when it turns true:
    /// a `pause` asked for during the build.
    pub cancel: Option<tokio::sync::watch::Receiver<bool>>,
}

/// `git+file://<cache>?ref=<agent ref>&rev=<sha>#<attribute>`: always a pinned revision of
/// the agent's own mirror, never a work tree and never a user-supplied ref.
pub fn flake_ref(cache: &Path, commit: &str, attribute: &str) -> String {
    format!(
        "git+file://{}?ref={CANDIDATE_REF}&rev={commit}#{attribute}",
        cache.display()
    )
}

/// The full `nix build` argument vector (without the program).
pub fn build_args(req: &BuildRequest) -> Vec<String> {
    let mut args: Vec<String> = vec![
        // Flakes on the command line, so a stock nix.conf works.
        "--extra-experimental-features".into(),
        "nix-command flakes".into(),
        "build".into(),
        "--json".into(),
        // The mirror is read-only input; never write or update a lock file.
        "--no-write-lock-file".into(),
        "--print-build-logs".into(),
        // After -L: Nix 2.8's -L sets the log format too, and the last one wins. Progress
        // and messages as JSON lines (progress.rs), errors turned back into text there.
        "--log-format".into(),
        "internal-json".into(),
        "--out-link".into(),
        req.out_link.display().to_string(),
    ];
    if let Some(jobs) = req.settings.max_jobs {
        args.extend(["--max-jobs".into(), jobs.to_string()]);
    }
    if let Some(cores) = req.settings.cores {
        args.extend(["--cores".into(), cores.to_string()]);
    }
    args.extend(req.settings.extra_args.iter().cloned());
    args.push(flake_ref(req.cache, req.commit, req.attribute));
    args
}

/// Builds and returns the system's store path.
pub async fn build(req: &BuildRequest<'_>) -> Result<PathBuf, BuildError> {
    let path = req.cache.display().to_string();
    if path.contains(['?', '#', '%', ' ']) {
        return Err(BuildError::BadPath(format!(
            "the state directory {path:?} contains a character that cannot go into a flake URL"
        )));
    }
    let reporter = Arc::new(Mutex::new(Reporter::default()));
    let mut cmd = Cmd::new("nix")
        .args(build_args(req))
        .timeout(req.settings.timeout)
        .capture_stdout()
        .stderr_filter(reporter_filter(reporter.clone()));
    if let Some(cancel) = &req.cancel {
        cmd = cmd.cancel_on(cancel.clone());
    }
    let ticker = tokio::spawn(report_every(
        reporter,
        PROGRESS_EVERY,
        crate::notify::build_progress,
    ));
    let oom_before = crate::oom_kills::count();
    let result = run_build(req, &cmd).await;
    ticker.abort();
    crate::notify::build_finished();
    or_out_of_memory(result, oom_before)
}

/// How often nix's progress is reported at most (STATUS=, the runtime file, the terminal).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// nix's progress so far, and whether it changed since it was last reported.
#[derive(Default)]
struct Reporter {
    tracker: progress::Tracker,
    changed: bool,
}

/// Reads nix's internal-json stderr ([`progress`]) and gives back each line's text for
/// the error tail.
fn reporter_filter(reporter: Arc<Mutex<Reporter>>) -> LineFilter {
    LineFilter(Arc::new(move |line: &str| {
        let Ok(mut r) = reporter.lock() else {
            return Some(line.to_string());
        };
        r.changed |= line.starts_with("@nix ");
        r.tracker.line(line)
    }))
}

/// Reports the progress when it changed, at most once per `every`, until aborted.
async fn report_every(
    reporter: Arc<Mutex<Reporter>>,
    every: Duration,
    report: impl Fn(&crate::runtime::BuildProgress),
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let snapshot = match reporter.lock() {
            Ok(mut r) if r.changed => {
                r.changed = false;
                r.tracker.snapshot()
            }
            _ => continue,
        };
        report(&snapshot);
    }
}

/// `result`, unless the kernel killed processes of this service for memory since the
/// count `before` ([`crate::oom_kills`]): then that is the cause, whatever nix made of it,
/// and never the commit's fault. (A deadline still says it timed out: that kill was ours.)
pub fn or_out_of_memory<T>(
    result: Result<T, BuildError>,
    before: Option<u64>,
) -> Result<T, BuildError> {
    match result {
        Err(e) if !matches!(e, BuildError::TimedOut { .. }) => {
            match crate::oom_kills::since(before) {
                Some(kills) if kills > 0 => Err(BuildError::OutOfMemory {
                    kills,
                    excerpt: nix_words(&e),
                }),
                _ => Err(e),
            }
        }
        result => result,
    }
}

/// What nix said, from a classified failure, without the hint the classification added
/// (the OOM's own hint replaces it); at most 20 lines.
fn nix_words(e: &BuildError) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("hint:"))
        .take(20)
        .collect();
    lines.join("\n")
}

async fn run_build(req: &BuildRequest<'_>, cmd: &Cmd) -> Result<PathBuf, BuildError> {
    match cmd.run().await {
        Ok(done) if done.status.success() => parse_build_json(&done.stdout)
            .map_err(|m| BuildError::Machine(format!("unexpected output from nix: {m}"), None)),
        Ok(done) => Err(classify(req, &done.status, &done.stderr_tail).await),
        Err(CmdError::TimedOut { after, .. }) => Err(BuildError::TimedOut { after }),
        Err(e @ CmdError::NotFound { .. }) => Err(BuildError::NixMissing(e.to_string())),
        Err(CmdError::Spawn { program, source }) => Err(BuildError::Machine(
            format!("could not start {program}: {source}"),
            Some(source),
        )),
        Err(e) => Err(BuildError::Machine(e.to_string(), None)),
    }
}

/// Why `nix build` failed: by type first, text last (see [`failure`]).
async fn classify(req: &BuildRequest<'_>, status: &ExitStatus, stderr: &str) -> BuildError {
    let excerpt = error_excerpt(stderr);
    if let Some(signal) = status.signal() {
        return BuildError::Machine(
            format!("nix was killed by signal {signal} (out of memory?):\n{excerpt}"),
            None,
        );
    }
    let gcroots = req.out_link.parent().unwrap_or(Path::new("/"));
    if let Some(io) = failure::filesystem_problem(&[Path::new(STORE_DIR), gcroots]) {
        return match io.raw_os_error().map(Errno::from_raw) {
            Some(Errno::ENOSPC) => BuildError::DiskFull(excerpt),
            _ => BuildError::Machine(
                format!("the nix store or {}: {io}", gcroots.display()),
                Some(io),
            ),
        };
    }
    if failure::is_build_failure_code(status.code()) {
        return BuildError::Failed(excerpt);
    }
    match failure::reported_errno(stderr) {
        Some(Errno::ENOSPC | Errno::EDQUOT) => return BuildError::DiskFull(excerpt),
        Some(e) => return BuildError::Machine(excerpt, Some(e.into())),
        None => {}
    }
    // Whether the host exists, by asking nix for the names (JSON). Only when that answer
    // is not available (an overridden attribute, a flake that does not evaluate) are nix's
    // own words used.
    let host = host_of(req.attribute);
    let names = match host {
        Some(_) => host_names(req).await.ok(),
        None => None,
    };
    let missing = match (host, &names) {
        (Some(h), Some(names)) => !names.iter().any(|n| n == h),
        _ => stderr.contains("does not provide attribute"),
    };
    if missing {
        return BuildError::HostMissing {
            attribute: req.attribute.to_string(),
            host: host.unwrap_or_default().to_string(),
            message: match names {
                Some(names) => format!("  the flake's nixosConfigurations: {}", names.join(", ")),
                None => excerpt,
            },
        };
    }
    failure::from_text(stderr, excerpt)
}

/// The host of the default attribute `nixosConfigurations."<host>".…`.
fn host_of(attribute: &str) -> Option<&str> {
    let rest = attribute.strip_prefix("nixosConfigurations.\"")?;
    let (host, _) = rest.split_once('"')?;
    Some(host)
}

/// The names in the flake's `nixosConfigurations`, as JSON from `nix eval` (cheap: only
/// the attribute set's names are evaluated). Only asked after a failed build.
async fn host_names(req: &BuildRequest<'_>) -> Result<Vec<String>, String> {
    let flake = format!(
        "git+file://{}?ref={CANDIDATE_REF}&rev={}#nixosConfigurations",
        req.cache.display(),
        req.commit
    );
    let done = Cmd::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "eval",
            "--json",
            "--no-write-lock-file",
            &flake,
            "--apply",
            "builtins.attrNames",
        ])
        .timeout(req.settings.timeout.min(HOST_NAMES_TIMEOUT))
        .capture_stdout()
        .run()
        .await
        .map_err(|e| e.to_string())?;
    if !done.status.success() {
        return Err(done.stderr_tail);
    }
    serde_json::from_str(done.stdout.trim()).map_err(|e| e.to_string())
}

/// The `out` path from `nix build --json`: `[{"drvPath": …, "outputs": {"out": …}}]`.
pub fn parse_build_json(stdout: &str) -> Result<PathBuf, String> {
    let value: serde_json::Value = serde_json::from_str(stdout.trim())
        .map_err(|e| format!("cannot parse `nix build --json` output: {e}"))?;
    value
        .get(0)
        .and_then(|v| v.get("outputs"))
        .and_then(|o| o.get("out"))
        .and_then(|p| p.as_str())
        .map(PathBuf::from)
        .ok_or_else(|| {
            format!(
                "`nix build --json` output has no outputs.out: {}",
                truncate(stdout, 300)
            )
        })
}

/// The last 15 lines of nix's stderr without warnings: the builder's last log lines
/// (printed before the error with `--print-build-logs`) and the error itself.
fn error_excerpt(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("warning:"))
        .collect();
    let kept = &lines[lines.len().saturating_sub(15)..];
    kept.iter()
        .map(|l| format!("  {}", l.trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BuildSettings {
        BuildSettings {
            timeout: Duration::from_secs(60),
            max_jobs: Some(1),
            cores: None,
            extra_args: vec!["--option".into(), "substituters".into(), "".into()],
            max_local_builds: None,
        }
    }

    #[test]
    fn argument_vector_is_pinned_and_quoted() {
        let s = settings();
        let req = BuildRequest {
            cache: Path::new("/var/lib/homelab-agent/cache.git"),
            commit: "0123456789abcdef0123456789abcdef01234567",
            attribute: "nixosConfigurations.\"pi1\".config.system.build.toplevel",
            out_link: Path::new("/var/lib/homelab-agent/gcroots/candidate"),
            settings: &s,
            cancel: None,
        };
        let args = build_args(&req);
        assert_eq!(
            &args[..4],
            [
                "--extra-experimental-features",
                "nix-command flakes",
                "build",
                "--json"
            ]
        );
        assert!(!args
            .iter()
            .any(|a| a == "--print-out-paths" || a == "--accept-flake-config" || a == "--no-link"));
        let out_link = args.iter().position(|a| a == "--out-link").unwrap();
        assert_eq!(
            args[out_link + 1],
            "/var/lib/homelab-agent/gcroots/candidate"
        );
        assert_eq!(
            &args[args.len() - 4..args.len() - 1],
            ["--option", "substituters", ""]
        );
        assert_eq!(
            args.last().unwrap(),
            "git+file:///var/lib/homelab-agent/cache.git?ref=refs/heads/homelab-agent/candidate&rev=0123456789abcdef0123456789abcdef01234567#nixosConfigurations.\"pi1\".config.system.build.toplevel"
        );
        assert!(args.windows(2).any(|w| w == ["--max-jobs", "1"]));
        // internal-json after -L, which in Nix 2.8 sets the log format as well.
        let json = args
            .windows(2)
            .position(|w| w == ["--log-format", "internal-json"]);
        let logs = args.iter().position(|a| a == "--print-build-logs");
        assert!(json.unwrap() > logs.unwrap(), "{args:?}");
    }

    /// nix's lines as fast as they come; a report at most once a second, and none
    /// while nothing changes.
    #[tokio::test(flavor = "current_thread")]
    async fn progress_is_reported_at_most_once_a_second() {
        let reporter = Arc::new(Mutex::new(Reporter::default()));
        let filter = reporter_filter(reporter.clone());
        let reports = Arc::new(Mutex::new(Vec::<std::time::Duration>::new()));
        let seen = reports.clone();
        let start = tokio::time::Instant::now();
        let ticker = tokio::spawn(report_every(reporter, PROGRESS_EVERY, move |_| {
            seen.lock().unwrap().push(start.elapsed());
        }));
        let line = r#"@nix {"action":"start","id":1,"type":104,"text":""}"#;
        // 2.5 s of a line every 10 ms, then 1.5 s of silence (real time).
        for _ in 0..250 {
            assert_eq!((filter.0)(line), None);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let fed_until = start.elapsed();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        ticker.abort();
        let reports = reports.lock().unwrap().clone();
        // One at the start, then one per tick while lines came.
        assert!(
            reports.len() >= 2 && reports.len() as u64 <= fed_until.as_secs() + 2,
            "{fed_until:?}: {reports:?}"
        );
        for pair in reports.windows(2) {
            // The interval's ticks, give or take the scheduler.
            assert!(
                pair[1] - pair[0] >= PROGRESS_EVERY - Duration::from_millis(50),
                "{reports:?}"
            );
        }
        assert!(
            *reports.last().unwrap() <= fed_until + Duration::from_millis(1100),
            "reported while nothing changed ({fed_until:?}): {reports:?}"
        );
        // Plain text goes through as it is.
        assert_eq!((filter.0)("error: x").as_deref(), Some("error: x"));
    }

    #[test]
    fn parses_build_json() {
        let out = r#"[{"drvPath":"/nix/store/x.drv","outputs":{"out":"/nix/store/abc-nixos-system-pi1"}}]"#;
        assert_eq!(
            parse_build_json(out).unwrap(),
            PathBuf::from("/nix/store/abc-nixos-system-pi1")
        );
        assert!(parse_build_json("[]")
            .unwrap_err()
            .contains("no outputs.out"));
        assert!(parse_build_json("building…")
            .unwrap_err()
            .contains("cannot parse"));
    }

    #[test]
    fn host_of_the_default_attribute() {
        assert_eq!(
            host_of("nixosConfigurations.\"pi1\".config.system.build.toplevel"),
            Some("pi1")
        );
        assert_eq!(host_of("packages.x86_64-linux.default"), None);
    }
}
