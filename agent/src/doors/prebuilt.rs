//! The prebuilt door (issue 24): a [`Source`] and [`Builder`] in front of the real ones.
//! Its fetch keeps the manifest files the fetch brought; its build tries the manifest
//! ([`crate::prebuilt::check`]) and realises the system from the substituters, and
//! builds natively when it cannot, saying why ([`Fallback`]). The cycle is unchanged but
//! for [`Builder::hold`] (`[prebuilt] wait`): the trust checks of the head run before
//! this door is asked for anything, so a manifest never makes the agent deploy a commit
//! it would refuse.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::Settings;
use crate::failure::Failure;
use crate::prebuilt::check::{self, Decision};
use crate::prebuilt::manifest::StorePath;
use crate::source::{self, prebuilt::PrebuiltFiles, Fetched};
use crate::state::obtained::{Fallback, How, Obtained};

use super::{Builder, Fut, Source};

/// Realises a store path from the substituters, rooted at the given path, within the
/// given time ([`crate::prebuilt::realise::realise`]; a fake in tests).
pub type Realise =
    Box<dyn Fn(StorePath, PathBuf, Duration, PathBuf) -> Fut<'static, Result<PathBuf, String>>>;

pub struct Prebuilt {
    settings: Settings,
    source: Box<dyn Source>,
    builder: Box<dyn Builder>,
    realise: Realise,
    /// The manifest files the last fetch brought.
    found: RefCell<Option<PrebuiltFiles>>,
    /// How the last build's system was obtained ([`Builder::obtained`]).
    obtained: RefCell<Option<Obtained>>,
    /// Whether the last fetch was the testing branch's (which never waits for a manifest,
    /// so a missing one there is missing, never late).
    testing: Cell<bool>,
}

impl Prebuilt {
    /// In front of the real doors (`source`: git in this process or in a child).
    pub fn new(settings: Settings, source: Box<dyn Source>, builder: Box<dyn Builder>) -> Prebuilt {
        let realise: Realise = Box::new(|system, root, timeout, runtime| {
            Box::pin(async move {
                crate::prebuilt::realise::realise(&system, &root, timeout, &runtime).await
            })
        });
        Prebuilt::with(settings, source, builder, realise)
    }

    pub fn with(
        settings: Settings,
        source: Box<dyn Source>,
        builder: Box<dyn Builder>,
        realise: Realise,
    ) -> Prebuilt {
        Prebuilt {
            settings,
            source,
            builder,
            realise,
            found: RefCell::new(None),
            obtained: RefCell::new(None),
            testing: Cell::new(false),
        }
    }

    fn keep(&self, fetched: Result<Fetched, Failure>, testing: bool) -> Result<Fetched, Failure> {
        if let Ok(f) = &fetched {
            *self.found.borrow_mut() = f.prebuilt.clone();
            self.testing.set(testing);
        }
        fetched
    }

    fn root(&self) -> PathBuf {
        self.settings.paths.state_dir.join("gcroots/candidate")
    }

    /// The host the attribute builds (`nixosConfigurations."<host>"…`, the only form
    /// `[prebuilt]` accepts: config/prebuilt.rs, and what map mode resolves to).
    fn host_of(attribute: &str) -> Option<&str> {
        let rest = attribute.strip_prefix("nixosConfigurations.\"")?;
        let (host, rest) = rest.split_once('"')?;
        (rest == ".config.system.build.toplevel").then_some(host)
    }

    /// The system for `commit`, from the manifest and the cache; or why not.
    async fn try_prebuilt(
        &self,
        commit: &str,
        attribute: &str,
    ) -> Result<(PathBuf, String), (Fallback, String)> {
        let Some(host) = Prebuilt::host_of(attribute) else {
            return Err((
                Fallback::NoHost,
                format!("the attribute {attribute} is not a host's toplevel: no manifest names it"),
            ));
        };
        let files = self.found.borrow().clone();
        let p = &self.settings.prebuilt;
        // Only main's builds wait (`hold`): a testing build's missing manifest is missing.
        let late = !p.wait.is_zero() && !self.testing.get();
        let decision = check::decide(p, files.as_ref(), commit, host, late).await;
        let (system, signer) = match decision {
            Decision::Use { system, signer } => (system, signer),
            Decision::Fallback { reason, why } => return Err((reason, why)),
        };
        crate::notify::status(&format!(
            "fetching the prebuilt system of {} for {host}",
            crate::trust::short(commit)
        ));
        log::info!(commit = commit; "fetching {system} for {host} (prebuilt, manifest signed by {signer})");
        let runtime = self.settings.paths.runtime_dir.clone();
        let realised =
            (self.realise)(system, self.root(), self.settings.build.timeout, runtime).await;
        realised
            .map(|path| (path, signer))
            .map_err(|why| (Fallback::NotFetched, why))
    }
}

fn millis(d: Duration) -> Option<u64> {
    Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Source for Rc<Prebuilt> {
    fn head(&self) -> Fut<'_, Result<String, Failure>> {
        self.source.head()
    }

    fn heads(&self) -> Fut<'_, Result<source::Heads, Failure>> {
        self.source.heads()
    }

    fn fetch(&self) -> Fut<'_, Result<Fetched, Failure>> {
        Box::pin(async move { self.keep(self.source.fetch().await, false) })
    }

    fn verify<'a>(
        &'a self,
        commit: &'a str,
        floors: &'a [crate::trust::Floor],
    ) -> Fut<'a, Result<crate::trust::Checked, crate::trust::Verdict>> {
        self.source.verify(commit, floors)
    }

    fn testing_head(&self) -> Fut<'_, Result<Option<String>, Failure>> {
        self.source.testing_head()
    }

    fn read_file<'a>(
        &'a self,
        commit: &'a str,
        file: &'a str,
        max: usize,
    ) -> Fut<'a, Result<Option<String>, Failure>> {
        self.source.read_file(commit, file, max)
    }

    fn fetch_testing(&self) -> Fut<'_, Result<Fetched, Failure>> {
        Box::pin(async move { self.keep(self.source.fetch_testing().await, true) })
    }
}

impl Builder for Rc<Prebuilt> {
    fn build<'a>(
        &'a self,
        commit: &'a str,
        attribute: &'a str,
    ) -> Fut<'a, Result<PathBuf, Failure>> {
        Box::pin(async move {
            *self.obtained.borrow_mut() = None;
            let started = Instant::now();
            let tried = self.try_prebuilt(commit, attribute).await;
            let fetch_ms = millis(started.elapsed());
            let (fallback, why) = match tried {
                Ok((system, signer)) => {
                    *self.obtained.borrow_mut() = Some(Obtained {
                        how: How::Prebuilt,
                        fetch_ms,
                        signer: Some(signer),
                        fallback: None,
                        why: None,
                    });
                    return Ok(system);
                }
                Err(not) => not,
            };
            // A `pause` stopped the fetch: the pause, not a reason to build here (the
            // cycle records it: deploy/paused.rs).
            if crate::pause::requested(&self.settings.paths.runtime_dir) {
                return Err(Failure::new(
                    crate::failure::Kind::Transient,
                    format!(
                        "fetching the prebuilt system of {} was stopped by a pause",
                        crate::trust::short(commit)
                    ),
                ));
            }
            log::warn!(
                commit = commit;
                "building {} here: {why} (prebuilt: {})",
                crate::trust::short(commit),
                fallback.as_str()
            );
            let built = self.builder.build(commit, attribute).await;
            *self.obtained.borrow_mut() = Some(Obtained {
                how: How::BuiltHere,
                fetch_ms,
                signer: None,
                fallback: Some(fallback),
                why: Some(why),
            });
            built
        })
    }

    fn obtained(&self) -> Option<Obtained> {
        self.obtained.borrow().clone()
    }

    fn release(&self) {
        self.builder.release()
    }

    fn hold(&self, commit: &str) -> Option<String> {
        let wait = self.settings.prebuilt.wait;
        let found = self.found.borrow();
        if wait.is_zero() || check::present(found.as_ref(), commit) {
            return None;
        }
        let runtime = &self.settings.paths.runtime_dir;
        let left = crate::prebuilt::wait::left(runtime, commit, wait, SystemTime::now())?;
        // What this fetch saw of the branch: the next poll fetches only if it moves.
        let tip = found
            .as_ref()
            .filter(|f| f.commit == commit)
            .and_then(|f| f.branch_tip.as_deref());
        crate::prebuilt::wait::fetched(runtime, commit, tip);
        Some(self.waiting(commit, left))
    }

    fn hold_unfetched(&self, head: &str, manifest_tip: Option<&str>) -> Option<String> {
        let wait = self.settings.prebuilt.wait;
        let runtime = &self.settings.paths.runtime_dir;
        if wait.is_zero() || !crate::prebuilt::wait::unchanged(runtime, head, manifest_tip) {
            return None;
        }
        let left = crate::prebuilt::wait::left(runtime, head, wait, SystemTime::now())?;
        Some(self.waiting(head, left))
    }
}

impl Prebuilt {
    fn waiting(&self, commit: &str, left: Duration) -> String {
        let wait = self.settings.prebuilt.wait;
        format!(
            "waiting for the prebuilt manifest of {} on branch {:?}: built here in {} if it does not come ([prebuilt] wait = {})",
            crate::trust::short(commit),
            self.settings.prebuilt.branch,
            crate::duration::format_duration(Duration::from_secs(left.as_secs().max(1))),
            crate::duration::format_duration(wait)
        )
    }
}

#[cfg(test)]
#[path = "prebuilt_tests.rs"]
mod tests;
