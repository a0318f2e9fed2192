//! One function per CLI command. Each prints what a person needs and returns the exit
//! code (see [`crate::exit`]); errors are printed once, with their whole chain.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::config::{self, Settings};
use crate::deploy::{Agent, Exit};
use crate::exit;
use crate::health;
use crate::lock::{self, LockError};
use crate::status::{self, Status};

fn settings(path: Option<&Path>) -> Result<Settings, u8> {
    let file = config::resolve_path(path);
    config::load(&file).map_err(|e| {
        eprintln!("error: invalid configuration: {e}");
        exit::CONFIG
    })
}

fn report(e: &anyhow::Error) -> u8 {
    eprintln!(
        "error: {}",
        crate::text::escape_controls(&format!("{e:#}"), true)
    );
    exit::FAILED
}

fn exit_code(exit: Exit) -> u8 {
    exit.code()
}

/// Runs `f` under the run lock; a held lock is its own exit code.
async fn locked<F, Fut>(settings: &Settings, f: F) -> u8
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Exit>>,
{
    let _lock = match take_lock(settings) {
        Ok(l) => l,
        Err(code) => return code,
    };
    // From here on the phase sent as STATUS= is also what `status` shows.
    crate::notify::progress_to(&settings.paths.runtime_dir);
    match f().await {
        Ok(exit) => exit_code(exit),
        Err(e) => report(&e),
    }
}

/// The run lock, or the exit code: 4 only when another run holds it (a permission
/// problem is this machine's, 71, and says to use sudo).
fn take_lock(settings: &Settings) -> Result<lock::RunLock, u8> {
    lock::acquire(&settings.paths.runtime_dir).map_err(|e: LockError| {
        match e.hint() {
            Some(hint) => eprintln!("error: {}", crate::failure::with_hint_line(&e, hint)),
            None => eprintln!("error: {e}"),
        }
        e.exit_code()
    })
}

/// The configuration, then the run lock: for the commands that change the state.
fn settings_and_lock(config: Option<&Path>) -> Result<(Settings, lock::RunLock), u8> {
    let settings = settings(config)?;
    let lock = take_lock(&settings)?;
    Ok((settings, lock))
}

/// A state file the agent cannot write because this is not root: say to use sudo.
fn report_state(e: &anyhow::Error) -> u8 {
    let denied = e
        .chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::PermissionDenied);
    if denied {
        eprintln!(
            "{}",
            crate::failure::with_hint_line(format!("error: {e:#}"), "needs root: run with sudo")
        );
        return exit::ENVIRONMENT;
    }
    report(e)
}

/// One cycle under the lock, with git calls in this process.
pub async fn cycle(settings: &Settings) -> u8 {
    cycle_with(settings, crate::deploy::Doors::real(settings)).await
}

/// One cycle under the lock, through `doors`.
async fn cycle_with(settings: &Settings, doors: crate::deploy::Doors) -> u8 {
    let agent = Agent::with_doors(settings.clone(), doors);
    locked(settings, || async {
        let exit = agent.run_once().await;
        // What the run recorded, told after it is saved and before a reboot can stop this
        // unit; bounded by the receivers' timeouts.
        crate::announce::send_all(&settings.notify, agent.take_events()).await;
        if exit.is_ok() {
            // Everything is recorded; under the same lock, the reboot policy (reboot/).
            crate::reboot::after_cycle(settings).await;
        }
        crate::metrics::refresh(settings, crate::metrics::After::Cycle);
        exit
    })
    .await
}

pub async fn run(config: Option<&Path>, once: bool) -> u8 {
    let settings = match settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if once {
        return cycle(&settings).await;
    }
    // Its git calls in child processes: libgit2 and OpenSSL are never resident between
    // polls (source/child.rs). They read the configuration the daemon started with.
    let file = config::resolve_path(config);
    let copy = match crate::source::child::snapshot(&file, &settings.paths.runtime_dir) {
        Ok(copy) => copy,
        Err(e) => {
            eprintln!(
                "{}",
                crate::failure::with_hint_line(
                    format!(
                        "error: copying {} into {} for the git child: {e}",
                        file.display(),
                        settings.paths.runtime_dir.display()
                    ),
                    "the runtime directory must be writable by root ([paths] runtime_dir)"
                )
            );
            return exit::ENVIRONMENT;
        }
    };
    daemon(&settings, &copy).await
}

/// `source-call` (hidden): one git call for the daemon (source/child.rs).
pub async fn source_call(
    config: Option<&Path>,
    what: &str,
    cache: Option<std::path::PathBuf>,
    verify: Option<(String, String)>,
    read: Option<(String, String, usize)>,
    branch: Option<String>,
    timeout_ms: u64,
) -> u8 {
    let settings = config::load(&config::resolve_path(config))
        .map_err(|e| format!("invalid configuration: {e}"))
        .and_then(|mut s| {
            // The testing branch's calls name their branch (deploy/testing.rs).
            if let Some(b) = branch {
                config::validate_branch(&b).map_err(|e| format!("source-call --branch: {e}"))?;
                s.source.branch = b;
            }
            Ok(s)
        });
    let deadline = Duration::from_millis(timeout_ms);
    crate::source::child::serve(settings, what, cache, verify, read, deadline).await
}

/// `run` without `--once`: cycles at `[run] interval` plus a random jitter, until
/// SIGTERM or SIGINT (never in the middle of a cycle's bookkeeping: between cycles).
/// SIGUSR1 polls at once (`homelab-agent trigger`'s signal for a daemon).
async fn daemon(settings: &Settings, child_config: &Path) -> u8 {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut now)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
    ) else {
        eprintln!("error: cannot install signal handlers");
        return exit::FAILED;
    };
    loop {
        let code = cycle_with(
            settings,
            crate::doors::Doors::daemon(settings, child_config),
        )
        .await;
        let wait = settings.run.interval + jitter(settings.run.jitter);
        crate::runtime::set_next_poll(&settings.paths.runtime_dir, SystemTime::now() + wait);
        crate::notify::status(&format!(
            "idle (last cycle exit {code}); next poll in {}",
            crate::duration::format_duration(Duration::from_secs(wait.as_secs()))
        ));
        // Until the next poll, but a pause that ends by itself (or a `resume`) meanwhile
        // starts a cycle a second after: the pause is dropped and the metrics stop saying
        // `paused` then, not one interval later (docs/monitoring.md).
        let next = tokio::time::Instant::now() + wait;
        let mut paused = pause_ends_in(settings);
        loop {
            let left = next.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(nap(left, paused)) => {}
                _ = term.recv() => return exit::OK,
                _ = int.recv() => return exit::OK,
                _ = now.recv() => {
                    log::info!("SIGUSR1: polling now");
                    break;
                }
            }
            let was = paused.is_some();
            paused = pause_ends_in(settings);
            if was && paused.is_none() {
                log::info!("the pause ended: polling now");
                break;
            }
        }
    }
}

/// How often a sleeping daemon looks whether a pause began or ended (a read of the state
/// file, nothing written).
const PAUSE_CHECK: Duration = Duration::from_secs(60);

/// For a pause in force: how long until it ends by itself (`Duration::MAX` when only
/// `resume` ends it); none when not paused.
fn pause_ends_in(settings: &Settings) -> Option<Duration> {
    let (state, _) = status::load_state(&settings.paths.state_dir);
    let p = crate::pause::active(&state)?;
    Some(
        p.until_time()
            .and_then(|until| until.duration_since(SystemTime::now()).ok())
            .unwrap_or(Duration::MAX),
    )
}

/// One sleep of the daemon: at most `left` (until the next poll) and [`PAUSE_CHECK`];
/// a second past the end of a pause that ends sooner.
fn nap(left: Duration, pause_ends_in: Option<Duration>) -> Duration {
    let nap = left.min(PAUSE_CHECK);
    match pause_ends_in {
        Some(end) => nap.min(end.saturating_add(Duration::from_secs(1))),
        None => nap,
    }
}

/// Up to `max`, from the clock's nanoseconds: spreading a fleet needs no better randomness.
fn jitter(max: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos() as u128;
    Duration::from_millis((max.as_millis() * nanos / 1_000_000_000) as u64)
}

/// `status`: the view model, as JSON or for a terminal; the exit code follows its state
/// (README "Commands and exit codes").
pub fn status(config: Option<&Path>, json: bool, color: status::style::ColorChoice) -> u8 {
    let settings = match settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let view = Status::from_facts(&settings, status::Facts::read(&settings));
    let mut out = std::io::stdout().lock();
    let result = if json {
        view.write_json(&mut out)
    } else {
        let mut text = Vec::new();
        view.write_human(&mut text, SystemTime::now())
            .and_then(|()| styled(&mut out, &text, color))
    };
    match result {
        Ok(()) => view.exit_code(),
        Err(e) => report(&e.into()),
    }
}

/// `history`: an unreadable state file is an error (71), never "no runs recorded yet".
/// Human output, as the terminal and `--color` allow (status/style.rs).
fn styled(
    out: &mut impl Write,
    text: &[u8],
    color: status::style::ColorChoice,
) -> std::io::Result<()> {
    let style = status::style::Style::for_stdout(color);
    out.write_all(style.apply(&String::from_utf8_lossy(text)).as_bytes())
}

pub fn history(
    config: Option<&Path>,
    json: bool,
    limit: usize,
    absolute: bool,
    color: status::style::ColorChoice,
) -> u8 {
    let settings = match settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let (state, problem) = status::load_state(&settings.paths.state_dir);
    if let Some(p) = problem {
        eprintln!("error: {p}");
        return exit::ENVIRONMENT;
    }
    let runs = status::history(&state, limit);
    let mut out = std::io::stdout().lock();
    let result = if json {
        write_json(&mut out, &status::history_json(runs))
    } else if runs.is_empty() {
        writeln!(out, "no runs recorded yet")
    } else {
        let mut text = Vec::new();
        status::write_history_human(runs, &mut text, SystemTime::now(), absolute)
            .and_then(|()| styled(&mut out, &text, color))
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => report(&e.into()),
    }
}

fn write_json(out: &mut impl Write, value: &impl serde::Serialize) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

pub async fn check(config: Option<&Path>, json: bool) -> u8 {
    let settings = match settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let results = if settings.health.checks.is_empty() {
        Vec::new()
    } else {
        health::run_round(
            &settings.health.checks,
            &health::Context {
                settings: &settings,
                remote: &health::InProcess(&settings.source),
            },
        )
        .await
    };
    let healthy = results.iter().all(|r| r.verdict.is_healthy());
    let mut out = std::io::stdout().lock();
    let printed = if json {
        // Each check as history shows it: {"name", "verdict", "detail"}.
        write_json(
            &mut out,
            &serde_json::json!({ "healthy": healthy, "checks": results }),
        )
    } else if results.is_empty() {
        writeln!(
            out,
            "no health checks configured ([[health.checks]] in {})",
            settings.file.display()
        )
    } else {
        results.iter().try_for_each(|r| {
            writeln!(
                out,
                "{:<14} {}: {}",
                r.verdict.label(),
                r.name,
                // What a check saw (a body, a command's output) is outside text.
                crate::text::escape_controls(r.verdict.detail(), false)
            )
        })
    };
    match (printed, healthy) {
        (Err(e), _) => report(&e.into()),
        (Ok(()), true) => exit::OK,
        (Ok(()), false) => exit::FAILED,
    }
}

pub async fn rollback(config: Option<&Path>) -> u8 {
    let settings = match settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let agent = Agent::new(settings.clone());
    locked(&settings, || async {
        let exit = agent.rollback().await;
        crate::metrics::refresh(&settings, crate::metrics::After::Command);
        crate::announce::send_all(&settings.notify, agent.take_events()).await;
        exit
    })
    .await
}

/// `resume`: end a `pause` and unpin after a `rollback`; says which it ended.
pub fn resume(config: Option<&Path>) -> u8 {
    let (settings, _lock) = match settings_and_lock(config) {
        Ok(both) => both,
        Err(code) => return code,
    };
    let store = crate::state::Store::new(&settings.paths.state_dir);
    let paused = match crate::pause::resume(&store) {
        Ok(p) => p,
        Err(e) => return report_state(&e),
    };
    let pinned = match Agent::new(settings.clone()).resume() {
        Ok(p) => p,
        Err(e) => return report_state(&e),
    };
    crate::metrics::refresh(&settings, crate::metrics::After::Command);
    if let Some(p) = &paused {
        let ended = p.active_at(SystemTime::now());
        println!(
            "{} ({})",
            if ended {
                "pause ended"
            } else {
                "the pause had already expired"
            },
            crate::pause::describe(p)
        );
    }
    match pinned {
        None if paused.is_none() => {
            println!("not pinned or paused; the next run follows the branch as usual");
        }
        None => println!("the next run follows the branch head again"),
        Some(pin) => {
            println!(
                "unpinned (pinned to {} since {}); the next run follows the branch head again",
                pin.generation
                    .map(|g| format!("generation {g}"))
                    .unwrap_or(pin.system),
                pin.since
            );
        }
    }
    exit::OK
}

/// `pause`: no deploys until `resume` or the end of `--for`; polls go on.
/// How long `pause` waits for a run that holds the lock to stop its build and end.
const PAUSE_WAIT: Duration = Duration::from_secs(60);

pub fn pause(config: Option<&Path>, duration: Option<Duration>, reason: Option<&str>) -> u8 {
    let settings = match settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let asked = crate::pause::new_pause(duration, reason);
    let _lock = match lock::acquire(&settings.paths.runtime_dir) {
        Ok(lock) => lock,
        // A run is under way: ask it to pause (a build stops at once; an activation is
        // never interrupted), then wait for it to end and record the pause here.
        Err(LockError::Held { holder, .. }) => {
            let runtime = &settings.paths.runtime_dir;
            if let Err(e) = crate::pause::request(runtime, &asked) {
                eprintln!(
                    "{}",
                    crate::failure::with_hint_line(
                        format!(
                            "error: asking the run under way to pause ({}): {e}",
                            runtime.display()
                        ),
                        "needs root: run with sudo"
                    )
                );
                return exit::ENVIRONMENT;
            }
            eprintln!(
                "a run holds the lock{}: asked it to stop its build and pause; waiting up to {}s for it to end",
                holder.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                PAUSE_WAIT.as_secs()
            );
            let deadline = std::time::Instant::now() + PAUSE_WAIT;
            loop {
                match lock::acquire(runtime) {
                    Ok(lock) => break lock,
                    Err(LockError::Held { .. }) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(250));
                    }
                    Err(LockError::Held { .. }) => {
                        println!(
                            "{}", crate::failure::with_hint_line(format!("the run still holds the lock after {}s (an activation is never interrupted): the pause is recorded when the next run starts", PAUSE_WAIT.as_secs()), "`homelab-agent status` shows what the run does"));
                        return exit::OK;
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        return e.exit_code();
                    }
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            return e.exit_code();
        }
    };
    // The run that stopped for it may have recorded it already: recorded once.
    let still_asked = crate::pause::take_request(&settings.paths.runtime_dir).is_some();
    let store = crate::state::Store::new(&settings.paths.state_dir);
    let recorded = match store.load() {
        Ok(state) => state.paused.filter(|p| *p == asked),
        Err(e) => return report_state(&e),
    };
    let applied = match recorded {
        Some(p) if !still_asked => Ok((p, None)),
        _ => crate::pause::apply(&store, asked),
    };
    let (paused, replaced) = match applied {
        Ok(p) => p,
        Err(e) => return report_state(&e),
    };
    crate::metrics::refresh(&settings, crate::metrics::After::Command);
    if let Some(old) = replaced {
        println!("replaced the pause {}", crate::pause::describe(&old));
    }
    println!(
        "{}",
        crate::failure::with_hint_line(
            format!(
                "paused {}; runs poll but deploy nothing",
                crate::pause::describe(&paused)
            ),
            "`sudo homelab-agent resume` ends it"
        )
    );
    exit::OK
}

pub fn retry(config: Option<&Path>) -> u8 {
    let (settings, _lock) = match settings_and_lock(config) {
        Ok(both) => both,
        Err(code) => return code,
    };
    let state_dir = settings.paths.state_dir.clone();
    let retried = Agent::new(settings.clone()).retry();
    crate::metrics::refresh(&settings, crate::metrics::After::Command);
    let code = match retried {
        Ok(forgotten) if forgotten.is_empty() => {
            println!("no failed commit remembered; the next run polls as usual");
            exit::OK
        }
        Ok(forgotten) => {
            let short: Vec<&str> = forgotten.iter().map(|c| crate::deploy::short(c)).collect();
            println!(
                "forgot failed commits {}; the next run tries the branch head again",
                short.join(", ")
            );
            exit::OK
        }
        Err(e) => report_state(&e),
    };
    if code == exit::OK {
        let state = status::load_state(&state_dir).0;
        if state.pinned.is_some() {
            println!("note: the machine is pinned by `rollback`: nothing is deployed until `sudo homelab-agent resume`");
        }
        if let Some(p) = crate::pause::active(&state) {
            println!(
                "note: the machine is paused ({}): nothing is deployed until it ends or `sudo homelab-agent resume`",
                crate::pause::describe(p)
            );
        }
    }
    code
}

pub fn config_check(config: Option<&Path>, json: bool, files: bool) -> u8 {
    let file = config::resolve_path(config);
    // Every problem, one line each: the first that stops parsing, or every file the
    // valid config names that is missing or unreadable.
    let (settings, errors) = match config::load(&file) {
        Ok(s) => {
            let errors = match (files, std::fs::read_to_string(&file)) {
                (true, Ok(text)) => config::files::check(&s, &text),
                _ => Vec::new(),
            };
            (Some(s), errors)
        }
        Err(e) => (None, vec![e]),
    };
    let ok = errors.is_empty();
    let code = if ok { exit::OK } else { exit::CONFIG };
    if json {
        let problems: Vec<serde_json::Value> = errors
            .iter()
            .map(|e| {
                serde_json::json!({
                    "file": e.file.display().to_string(),
                    "key": e.key,
                    "line": e.line,
                    "message": e.message,
                    "hint": e.hint,
                })
            })
            .collect();
        let value = serde_json::json!({
            "file": file.display().to_string(),
            "ok": ok,
            "error": errors.first().map(|e| e.to_string()),
            "errors": errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            "problems": problems,
            "summary": settings.as_ref().map(config::summary_json),
        });
        return match write_json(&mut std::io::stdout().lock(), &value) {
            Ok(()) => code,
            Err(e) => report(&e.into()),
        };
    }
    match settings.filter(|_| ok) {
        Some(s) => {
            println!("{}: OK", file.display());
            for (k, v) in config::summary(&s) {
                println!("  {k}: {v}");
            }
        }
        None => {
            for e in &errors {
                eprintln!("error: {e}");
            }
        }
    }
    code
}

/// `trigger`: start the agent's unit now (deploy on push).
pub async fn trigger(config: Option<&Path>, unit: &str) -> u8 {
    match settings(config) {
        Ok(s) => crate::trigger::run(&s, unit).await,
        Err(code) => code,
    }
}

/// `trial-deadline`: no run lock (verify-boot may hold it for long); it only reads.
pub async fn trial_deadline(config: Option<&Path>) -> u8 {
    let settings = match settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let rebooter = crate::doors::reboot::Systemctl {
        program: settings.paths.systemctl.clone(),
    };
    let links = crate::doors::links::SystemLinks::new(&settings.paths);
    let since = crate::reboot::deadline::since();
    let outcome = crate::reboot::deadline::watch(&settings, &links, &rebooter, &since).await;
    match &outcome {
        crate::reboot::deadline::Outcome::NotATrial(why) => println!("nothing to watch: {why}"),
        crate::reboot::deadline::Outcome::Decided => println!("the trial boot was decided in time"),
        crate::reboot::deadline::Outcome::Rebooting(why) => println!("{why}"),
        crate::reboot::deadline::Outcome::RebootFailed(why) => eprintln!("error: {why}"),
    }
    outcome.exit_code()
}

/// How long `verify-boot` waits for a run that holds the lock.
const VERIFY_LOCK_WAIT: Duration = Duration::from_secs(600);

/// `verify-boot`: under the run lock, once per boot (reboot/verify.rs).
pub async fn verify_boot(config: Option<&Path>) -> u8 {
    let settings = match settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let links = crate::doors::links::SystemLinks::new(&settings.paths);
    if let Some(why) = crate::reboot::verify::started_by_activation(&links) {
        // Started by `switch-to-configuration test` during a deployment (issue 20): the
        // deployment's run holds the lock and waits for this unit; nothing to verify.
        println!("nothing to verify: {why}");
        return crate::exit::OK;
    }
    crate::source::tls_stream::register();
    // A run someone started by hand may hold the lock: wait for it (bounded) rather than
    // fail the boot's verification for it.
    let waited = std::time::Instant::now();
    let _lock = loop {
        match lock::acquire(&settings.paths.runtime_dir) {
            Ok(l) => break l,
            Err(LockError::Held { .. }) if waited.elapsed() < VERIFY_LOCK_WAIT => {
                tokio::time::sleep(Duration::from_secs(2)).await
            }
            Err(e) => {
                eprintln!("error: {e}");
                return e.exit_code();
            }
        }
    };
    let doors = crate::deploy::Doors::real(&settings);
    let effects = crate::doors::reboot::Effects::real(&settings);
    let boot = crate::reboot::verify::BootDoors {
        machine: doors.machine.as_ref(),
        health: doors.health.as_ref(),
        effects: &effects,
    };
    let verdict =
        crate::reboot::verify::verify_boot(&settings, &boot, jiff::Timestamp::now()).await;
    // A failed or fallen-back boot is a recorded run like any other: metrics (its
    // notifications were sent by verify_boot).
    crate::metrics::refresh(&settings, crate::metrics::After::Command);
    match &verdict {
        crate::reboot::verify::Verdict::AlreadyDone => {
            println!("already ran in this boot; `homelab-agent status` shows what it found")
        }
        crate::reboot::verify::Verdict::Nothing(why) => println!("nothing to verify: {why}"),
        crate::reboot::verify::Verdict::Verified => println!("boot verified: health checks passed"),
        crate::reboot::verify::Verdict::FellBack { rebooting } => {
            eprintln!(
            "error: boot verification failed: the last verified generation is the boot default{}",
            if *rebooting { "; rebooting into it" } else { "; the reboot failed: reboot by hand" }
        )
        }
        crate::reboot::verify::Verdict::FallbackBoot => {
            println!("fallback boot recorded: `homelab-agent status` shows why")
        }
        crate::reboot::verify::Verdict::LoopBroken => eprintln!(
            "{}",
            crate::failure::with_hint_line(
                "error: boot verification failed again after a fallback: not rebooting again",
                "the machine needs a look: `homelab-agent status`, `journalctl -b`"
            )
        ),
        crate::reboot::verify::Verdict::Failed(why) => eprintln!("error: {why}"),
    }
    verdict.exit_code()
}

/// `plan [COMMIT]`: what the commit would do here (plan/), under the run lock so it never
/// races a deployment; nothing is switched or recorded.
pub async fn plan(
    config: Option<&Path>,
    commit: Option<String>,
    eval_only: bool,
    json: bool,
) -> u8 {
    let (settings, _lock) = match settings_and_lock(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    // While it runs, `status` shows what it is doing.
    crate::notify::progress_to(&settings.paths.runtime_dir);
    let options = crate::plan::Options { commit, eval_only };
    let plan = match crate::plan::plan(&settings, &options).await {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("error: {e}");
            return e.code;
        }
    };
    let mut out = std::io::stdout().lock();
    let written = if json {
        write_json(&mut out, &plan)
    } else {
        crate::plan::write_human(&plan, &mut out)
    };
    match written {
        Ok(()) => exit::OK,
        // A closed pipe (`plan | head`) is no failure of the plan.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("error: writing the plan: {e}");
            exit::FAILED
        }
    }
}

/// `publish`: build, copy, sign and publish one commit's systems (docs/prebuilt.md).
pub async fn publish(request: &crate::publish::Request, json: bool) -> u8 {
    match crate::publish::publish(request).await {
        Ok(published) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&published).unwrap_or_default()
                );
            } else {
                print!("{}", crate::publish::summary(&published));
            }
            exit::OK
        }
        Err(e) => {
            let error = crate::text::escape_controls(&e.to_string(), true).into_owned();
            eprintln!("error: {}", crate::failure::with_hint_line(error, e.hint()));
            e.kind().exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_naps_until_the_poll_a_pause_check_or_just_past_a_pause() {
        let s = Duration::from_secs;
        assert_eq!(nap(s(3600), None), PAUSE_CHECK);
        assert_eq!(nap(s(10), None), s(10));
        assert_eq!(nap(s(3600), Some(s(5))), s(6));
        assert_eq!(nap(s(3600), Some(Duration::MAX)), PAUSE_CHECK);
        assert_eq!(nap(s(2), Some(s(5))), s(2));
    }
}
