//! The user's flake repository: where it is ([`url`]), how we talk to it ([`git`]), whom
//! we trust over ssh ([`known_hosts`]) and https ([`tls`]), the agent's bounded copy of it ([`cache`]), and
//! whose fault a failure is ([`error`]).
//!
//! libgit2 blocks, and its socket timeouts do not cover every stall (a server that
//! accepts and never answers holds a read for libgit2's 60 s server timeout). So each
//! call runs on its own detached thread under a deadline: when the deadline passes the
//! caller gets [`SourceError::TimedOut`] at once and the thread is abandoned. Nothing
//! ever joins it (not tokio's runtime shutdown either, as it would a `spawn_blocking`
//! task), so the process exits, and releases the run lock, on time; the thread dies
//! with the process. In the daemon (`run` without `--once`) an abandoned thread ends by
//! itself at libgit2's socket timeouts (15 s connect, 60 s read), so with polls at least
//! 10 s apart only a handful can exist at once.

pub mod blob;
pub mod cache;
pub mod child;
pub mod error;
pub mod git;
pub mod known_hosts;
pub mod origin;
pub mod tls;
pub mod tls_stream;
pub use crate::model::url;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::SourceSettings;
pub use error::SourceError;
pub use git::{Fetched, Heads, TestingHead};

/// How long after its deadline a git call is abandoned: time for libgit2 to report the
/// timeout itself (it checks the deadline whenever data arrives).
pub const GRACE: Duration = Duration::from_secs(1);

/// Held by the thread that writes the cache: an abandoned fetch still stuck in a socket
/// read keeps it, and a later fetch in the same process (the daemon loop) waits for
/// nothing: it reports [`SourceError::CacheBusy`] and the next cycle retries.
static CACHE_WRITER: Mutex<()> = Mutex::new(());

/// The commit the watched branch points at on the remote (the cheap poll).
pub async fn remote_head(
    settings: &SourceSettings,
    deadline: Duration,
) -> Result<String, SourceError> {
    remote_heads(settings, deadline).await.map(|h| h.main)
}

/// The watched branch's head and, when `[source] testing_branch` is set, the testing
/// branch's, from one listing of the remote's refs (one round trip).
pub async fn remote_heads(
    settings: &SourceSettings,
    deadline: Duration,
) -> Result<Heads, SourceError> {
    let settings = settings.clone();
    detached(settings.url.redacted().to_string(), deadline, move || {
        let testing = settings.testing_branch.as_deref();
        git::Remote::new(&settings, deadline)?.heads(testing)
    })
    .await
}

/// Fetches the watched branch into the cache repository (and keeps it bounded).
pub async fn fetch(
    settings: &SourceSettings,
    cache: PathBuf,
    deadline: Duration,
) -> Result<Fetched, SourceError> {
    let settings = settings.clone();
    detached(settings.url.redacted().to_string(), deadline, move || {
        let _writer = match CACHE_WRITER.try_lock() {
            Ok(guard) => guard,
            // A panicked writer left nothing half-done that libgit2 does not recover from.
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(SourceError::CacheBusy { path: cache });
            }
        };
        git::Remote::new(&settings, deadline)?.fetch(&cache)
    })
    .await
}

/// Runs `f` on a new, detached thread and waits at most `deadline` + [`GRACE`] for it.
async fn detached<T: Send + 'static>(
    url: String,
    deadline: Duration,
    f: impl FnOnce() -> Result<T, SourceError> + Send + 'static,
) -> Result<T, SourceError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("git".into())
        .spawn(move || {
            // The receiver may be gone (deadline passed): the result is dropped.
            let _ = tx.send(f());
        });
    if let Err(e) = spawned {
        return Err(SourceError::Internal {
            url,
            message: format!("cannot start the git thread: {e}"),
        });
    }
    match tokio::time::timeout(deadline + GRACE, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(SourceError::Internal {
            url,
            message: "the git thread died (a bug: please report it)".into(),
        }),
        Err(_) => Err(SourceError::TimedOut {
            url,
            after: deadline,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test(flavor = "current_thread")]
    async fn a_stuck_call_is_abandoned_at_its_deadline() {
        let started = Instant::now();
        let result: Result<(), _> =
            detached("git://x/y".into(), Duration::from_millis(200), || {
                std::thread::sleep(Duration::from_secs(30));
                Ok(())
            })
            .await;
        assert!(matches!(result, Err(SourceError::TimedOut { .. })));
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn the_runtime_does_not_wait_for_an_abandoned_call() {
        let started = Instant::now();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let result: Result<(), _> = rt.block_on(detached(
            "git://x/y".into(),
            Duration::from_millis(100),
            || {
                std::thread::sleep(Duration::from_secs(30));
                Ok(())
            },
        ));
        drop(rt);
        assert!(result.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "shutdown waited {:?}",
            started.elapsed()
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_call_is_an_error_not_a_hang() {
        let result: Result<(), _> = detached("git://x/y".into(), Duration::from_secs(5), || {
            panic!("boom")
        })
        .await;
        assert!(matches!(result, Err(SourceError::Internal { .. })));
    }
}
