//! The Source door's two real implementations, chosen at composition: [`InProcess`]
//! makes each git call in this process (`run --once`, `plan`, `verify-boot`: libgit2 is
//! loaded for a few milliseconds), [`Child`] makes it in a short-lived `source-call`
//! child process (the daemon: libgit2 and OpenSSL never stay resident between polls;
//! source/child.rs). Both fetch into the agent's cache (`<state_dir>/cache.git`) and
//! answer with the same classified failures.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use crate::config::{Settings, SourceSettings};
use crate::failure::{Failure, Kind};
use crate::source::{self, child, Fetched, Heads, SourceError};
use crate::trust::{Checked, Floor, Verdict};

use super::{Fut, Source};

/// Git calls in this process.
pub type InProcess = Git<Here>;
/// Git calls in a child process reading `config` (the daemon's configuration, copied
/// when it started).
pub type Child = Git<InChild>;

impl InProcess {
    pub fn new(settings: &Settings) -> InProcess {
        Git::with(settings, Here)
    }
}

impl Child {
    pub fn new(settings: &Settings, config: PathBuf) -> Child {
        Git::with(settings, InChild { config })
    }
}

/// Where the calls are made: the one thing the two implementations differ in.
pub trait Calls {
    fn heads<'a>(
        &'a self,
        s: &'a SourceSettings,
        deadline: Duration,
    ) -> Fut<'a, Result<Heads, SourceError>>;
    fn fetch<'a>(
        &'a self,
        s: &'a SourceSettings,
        cache: PathBuf,
        deadline: Duration,
    ) -> Fut<'a, Result<Fetched, SourceError>>;
    fn verify<'a>(
        &'a self,
        s: &'a SourceSettings,
        cache: &'a Path,
        commit: &'a str,
        floors: &'a [Floor],
    ) -> Fut<'a, Result<Checked, Verdict>>;
    fn read_file<'a>(
        &'a self,
        s: &'a SourceSettings,
        cache: &'a Path,
        commit: &'a str,
        file: &'a str,
        max: usize,
    ) -> Fut<'a, Result<Option<String>, Failure>>;
}

/// In this process (source/mod.rs: each call on a detached thread under its deadline).
pub struct Here;

impl Calls for Here {
    fn heads<'a>(
        &'a self,
        s: &'a SourceSettings,
        deadline: Duration,
    ) -> Fut<'a, Result<Heads, SourceError>> {
        Box::pin(source::remote_heads(s, deadline))
    }
    fn fetch<'a>(
        &'a self,
        s: &'a SourceSettings,
        cache: PathBuf,
        deadline: Duration,
    ) -> Fut<'a, Result<Fetched, SourceError>> {
        Box::pin(source::fetch(s, cache, deadline))
    }
    fn verify<'a>(
        &'a self,
        s: &'a SourceSettings,
        cache: &'a Path,
        commit: &'a str,
        floors: &'a [Floor],
    ) -> Fut<'a, Result<Checked, Verdict>> {
        Box::pin(crate::trust::check(&s.trust, cache, commit, floors))
    }
    fn read_file<'a>(
        &'a self,
        _: &'a SourceSettings,
        cache: &'a Path,
        commit: &'a str,
        file: &'a str,
        max: usize,
    ) -> Fut<'a, Result<Option<String>, Failure>> {
        Box::pin(async move { source::blob::read(cache, commit, file, max) })
    }
}

/// In a `source-call` child process (source/child.rs).
pub struct InChild {
    config: PathBuf,
}

impl Calls for InChild {
    fn heads<'a>(
        &'a self,
        s: &'a SourceSettings,
        deadline: Duration,
    ) -> Fut<'a, Result<Heads, SourceError>> {
        Box::pin(child::remote_heads(&self.config, s, deadline))
    }
    fn fetch<'a>(
        &'a self,
        s: &'a SourceSettings,
        cache: PathBuf,
        deadline: Duration,
    ) -> Fut<'a, Result<Fetched, SourceError>> {
        Box::pin(async move { child::fetch(&self.config, s, &cache, deadline).await })
    }
    fn verify<'a>(
        &'a self,
        s: &'a SourceSettings,
        cache: &'a Path,
        commit: &'a str,
        floors: &'a [Floor],
    ) -> Fut<'a, Result<Checked, Verdict>> {
        Box::pin(child::verify(&self.config, s, cache, commit, floors))
    }
    fn read_file<'a>(
        &'a self,
        s: &'a SourceSettings,
        cache: &'a Path,
        commit: &'a str,
        file: &'a str,
        max: usize,
    ) -> Fut<'a, Result<Option<String>, Failure>> {
        Box::pin(child::read_file(&self.config, s, cache, commit, file, max))
    }
}

/// The user's repository through `C`'s git calls.
pub struct Git<C> {
    source: SourceSettings,
    cache: PathBuf,
    calls: C,
}

impl<C: Calls> Git<C> {
    fn with(settings: &Settings, calls: C) -> Git<C> {
        Git {
            source: settings.source.clone(),
            cache: settings.paths.state_dir.join("cache.git"),
            calls,
        }
    }

    /// The source settings with the testing branch in place of the main one.
    fn testing(&self) -> Option<SourceSettings> {
        let mut s = self.source.clone();
        s.branch = self.source.testing_branch.clone()?;
        Some(s)
    }

    async fn head_of(&self, s: &SourceSettings, deadline: Duration) -> Result<String, SourceError> {
        self.calls.heads(s, deadline).await.map(|h| h.main)
    }
}

fn failure(e: SourceError) -> Failure {
    Failure::new(e.kind(), e.to_string())
}

impl<C: Calls> Source for Git<C> {
    fn head(&self) -> Fut<'_, Result<String, Failure>> {
        Box::pin(async move {
            self.head_of(&self.source, self.source.timeout)
                .await
                .map_err(failure)
        })
    }

    fn heads(&self) -> Fut<'_, Result<Heads, Failure>> {
        Box::pin(async move {
            self.calls
                .heads(&self.source, self.source.timeout)
                .await
                .map_err(failure)
        })
    }

    fn fetch(&self) -> Fut<'_, Result<Fetched, Failure>> {
        Box::pin(async move {
            self.calls
                .fetch(&self.source, self.cache.clone(), self.source.timeout)
                .await
                .map_err(failure)
        })
    }

    fn verify<'a>(
        &'a self,
        commit: &'a str,
        floors: &'a [Floor],
    ) -> Fut<'a, Result<Checked, Verdict>> {
        self.calls.verify(&self.source, &self.cache, commit, floors)
    }

    fn read_file<'a>(
        &'a self,
        commit: &'a str,
        file: &'a str,
        max: usize,
    ) -> Fut<'a, Result<Option<String>, Failure>> {
        self.calls
            .read_file(&self.source, &self.cache, commit, file, max)
    }

    fn testing_head(&self) -> Fut<'_, Result<Option<String>, Failure>> {
        Box::pin(async move {
            let Some(settings) = self.testing() else {
                return Ok(None);
            };
            match self.head_of(&settings, self.source.timeout).await {
                Ok(head) => Ok(Some(head)),
                // No testing branch on the remote: nothing on test, which is normal.
                Err(SourceError::BranchNotFound { .. }) => Ok(None),
                Err(e) => Err(failure(e)),
            }
        })
    }

    fn fetch_testing(&self) -> Fut<'_, Result<Fetched, Failure>> {
        Box::pin(async move {
            let Some(settings) = self.testing() else {
                return Err(Failure::new(
                    Kind::Configuration,
                    "no [source] testing_branch is configured",
                ));
            };
            self.calls
                .fetch(&settings, self.cache.clone(), self.source.timeout)
                .await
                .map_err(failure)
        })
    }
}

/// The `remote` health check asks the same way the Source door does (in the daemon: in
/// its git child), within the check's own timeout.
impl<C: Calls> crate::health::RemoteHead for Git<C> {
    fn head(
        &self,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + '_>> {
        Box::pin(async move {
            self.head_of(&self.source, timeout)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The composition picks the implementation: the in-process one asks libgit2 here,
    /// the child one runs `/proc/self/exe … source-call` (in a test, the test binary,
    /// which gives no answer).
    #[tokio::test(flavor = "current_thread")]
    async fn the_child_source_asks_a_child_process_and_the_in_process_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let text = format!(
            "[source]\nurl = \"{d}/no-repository\"\n[host]\nname = \"pi1\"\n[paths]\nstate_dir = \"{d}/state\"\n"
        );
        let settings = crate::config::parse(Path::new("/t.toml"), &text).unwrap();
        let here = InProcess::new(&settings).head().await.unwrap_err();
        assert!(!here.message.contains("git child process"), "{here:?}");
        let config = dir.path().join("daemon-config.toml");
        let child = Child::new(&settings, config).head().await.unwrap_err();
        assert!(
            child.message.contains("the git child process ended")
                && child.message.contains("without an answer"),
            "{child:?}"
        );
        assert_eq!(child.kind, Kind::Environment, "{child:?}");
    }
}
