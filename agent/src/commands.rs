//! One function per CLI command. Each prints what a person needs and returns the exit
//! code (see [`crate::exit`]); errors are printed once, with their whole chain.

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
    eprintln!("error: {e:#}");
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
    let _lock = match lock::acquire(&settings.paths.runtime_dir) {
        Ok(l) => l,
        Err(e @ LockError::Held { .. }) => {
            eprintln!("error: {e}");
            return exit::LOCKED;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    match f().await {
        Ok(exit) => exit_code(exit),
        Err(e) => report(&e),
    }
}

/// One cycle under the lock.
pub async fn cycle(settings: &Settings) -> u8 {
    crate::source::git::init_timeouts();
    let agent = Agent::new(settings.clone());
    locked(settings, || agent.run_once()).await
}

pub async fn run(config: Option<&Path>, once: bool) -> u8 {
    let settings = match settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if once {
        return cycle(&settings).await;
    }
    daemon(&settings).await
}

/// `run` without `--once`: cycles at `[run] interval` plus a random jitter, until
/// SIGTERM or SIGINT (never in the middle of a cycle's bookkeeping: between cycles).
async fn daemon(settings: &Settings) -> u8 {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("error: cannot install signal handlers");
        return exit::FAILED;
    };
    loop {
        let code = cycle(settings).await;
        let wait = settings.run.interval + jitter(settings.run.jitter);
        crate::runtime::set_next_poll(&settings.paths.runtime_dir, SystemTime::now() + wait);
        crate::notify::status(&format!(
            "idle (last cycle exit {code}); next poll in {}",
            humantime::format_duration(Duration::from_secs(wait.as_secs()))
        ));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = term.recv() => return exit::OK,
            _ = int.recv() => return exit::OK,
        }
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

/// For the read-only commands: an unreadable state file is a warning, not an error.
fn settings_and_state(config: Option<&Path>) -> Result<(Settings, crate::state::State), u8> {
    let settings = settings(config)?;
    let (state, problem) = status::load_state(&settings.paths.state_dir);
    if let Some(p) = &problem {
        eprintln!("warning: {p}");
    }
    Ok((settings, state))
}

pub fn status(config: Option<&Path>, json: bool) -> u8 {
    let (settings, state) = match settings_and_state(config) {
        Ok(both) => both,
        Err(code) => return code,
    };
    let view = Status::gather(&settings, &state);
    let mut out = std::io::stdout().lock();
    let result = if json {
        view.write_json(&mut out)
    } else {
        view.write_human(&mut out)
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => report(&e.into()),
    }
}

pub fn history(config: Option<&Path>, json: bool, limit: usize) -> u8 {
    let (_, state) = match settings_and_state(config) {
        Ok(both) => both,
        Err(code) => return code,
    };
    let runs = status::history(&state, limit);
    let mut out = std::io::stdout().lock();
    let result = if json {
        serde_json::to_writer_pretty(&mut out, runs)
            .map_err(std::io::Error::from)
            .and_then(|_| {
                use std::io::Write;
                writeln!(out)
            })
    } else {
        status::write_history_human(runs, &mut out)
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => report(&e.into()),
    }
}

pub async fn check(config: Option<&Path>) -> u8 {
    let settings = match settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    crate::source::git::init_timeouts();
    if settings.health.checks.is_empty() {
        println!(
            "no health checks configured ([[health.checks]] in {})",
            settings.file.display()
        );
        return exit::OK;
    }
    let results = health::run_round(
        &settings.health.checks,
        &health::Context {
            settings: &settings,
        },
    )
    .await;
    for r in &results {
        println!(
            "{:<14} {}: {}",
            r.verdict.label(),
            r.name,
            r.verdict.detail()
        );
    }
    if results.iter().all(|r| r.verdict.is_healthy()) {
        exit::OK
    } else {
        exit::FAILED
    }
}

pub async fn rollback(config: Option<&Path>) -> u8 {
    let settings = match settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    crate::source::git::init_timeouts();
    let agent = Agent::new(settings.clone());
    locked(&settings, || agent.rollback()).await
}

pub fn retry(config: Option<&Path>) -> u8 {
    let settings = match settings(config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let _lock = match lock::acquire(&settings.paths.runtime_dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::LOCKED;
        }
    };
    match Agent::new(settings).retry() {
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
        Err(e) => report(&e),
    }
}

pub fn config_check(config: Option<&Path>) -> u8 {
    let file = config::resolve_path(config);
    match config::load(&file) {
        Ok(s) => {
            println!("{}: OK", file.display());
            for (k, v) in config::summary(&s) {
                println!("  {k}: {v}");
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::CONFIG
        }
    }
}
