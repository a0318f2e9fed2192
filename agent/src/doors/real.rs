//! The real doors of the deploy cycle: `nix build`, `nix-env -p`,
//! `switch-to-configuration`, the health checks; the Source door's two (git in this
//! process or in a child) are in git.rs, chosen here.
//!
//! Every door answers with a classified [`Failure`]: the cycle decides what to do from
//! its [`Kind`](crate::failure::Kind), never from its words.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::config::Settings;
use crate::failure::{Failure, Kind};
use crate::health::{self, RemoteHead};
use crate::nix::{self, BuildRequest};
use crate::system::{self, profile, profile::Generation, switch::Action, switch::Switcher};

use super::git::{Child, InProcess};
use super::{Builder, Fut, Health, Machine, Source};

/// All four, as the cycle holds them.
pub struct Doors {
    pub source: Box<dyn Source>,
    pub builder: Box<dyn Builder>,
    pub machine: Box<dyn Machine>,
    pub health: Box<dyn Health>,
}

impl Doors {
    /// The real doors, with git calls in this process (`run --once`, `verify-boot`).
    pub fn real(settings: &Settings) -> Doors {
        Doors::with_git(settings, InProcess::new(settings), InProcess::new(settings))
    }

    /// The real doors of the daemon: its git calls in child processes reading `config`
    /// (the configuration it started with, copied: source/child.rs).
    pub fn daemon(settings: &Settings, config: &Path) -> Doors {
        let child = || Child::new(settings, config.to_path_buf());
        Doors::with_git(settings, child(), child())
    }

    fn with_git(
        settings: &Settings,
        source: impl Source + 'static,
        remote: impl RemoteHead + 'static,
    ) -> Doors {
        let real = Rc::new(Real::new(settings.clone(), Rc::new(remote)));
        Doors {
            source: Box::new(source),
            builder: Box::new(real.clone()),
            machine: Box::new(real.clone()),
            health: Box::new(real),
        }
    }
}

/// The real doors: git2, `nix build`, `nix-env -p`, `switch-to-configuration`.
pub struct Real {
    settings: Settings,
    switcher: Switcher,
    /// How the `remote` health check reaches the remote: as the Source door does.
    remote: Rc<dyn RemoteHead>,
}

impl Real {
    pub fn new(settings: Settings, remote: Rc<dyn RemoteHead>) -> Real {
        let p = &settings.paths;
        let switcher = Switcher::new(&settings.activation, &p.systemd_run, &p.systemctl);
        Real {
            settings,
            switcher,
            remote,
        }
    }

    fn cache_repo(&self) -> PathBuf {
        self.settings.paths.state_dir.join("cache.git")
    }

    fn candidate_root(&self) -> PathBuf {
        self.settings.paths.state_dir.join("gcroots/candidate")
    }
}

impl Builder for Rc<Real> {
    fn build<'a>(
        &'a self,
        commit: &'a str,
        attribute: &'a str,
    ) -> Fut<'a, Result<PathBuf, Failure>> {
        Box::pin(async move {
            let out_link = self.candidate_root();
            if let Some(dir) = out_link.parent() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Failure::new(
                        crate::failure::io_kind(&e),
                        format!("creating {}: {e}", dir.display()),
                    )
                })?;
            }
            let cache = self.cache_repo();
            // A `pause` asked for during the evaluation or the build stops it, with all
            // it started (the cycle then records the pause: deploy/paused.rs).
            let (cancel, cancelled) = tokio::sync::watch::channel(false);
            let runtime_dir = self.settings.paths.runtime_dir.clone();
            let watcher = tokio::spawn(async move {
                loop {
                    if crate::pause::requested(&runtime_dir) {
                        let _ = cancel.send(true);
                        // Keep the sender: a dropped one reads as a stop too.
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            });
            let request = BuildRequest {
                cache: &cache,
                commit,
                attribute,
                out_link: &out_link,
                settings: &self.settings.build,
                cancel: Some(cancelled),
            };
            crate::failpoint("before_build");
            // What would be compiled here, before anything is (and a refusal over
            // [build] max_local_builds).
            let built = async {
                nix::plan::gate(&request, &self.settings.paths.state_dir).await?;
                nix::build(&request)
                    .await
                    .map_err(|e| Failure::new(e.kind(), e.to_string()))
            }
            .await;
            watcher.abort();
            let system = built?;
            // A toplevel that cannot be activated is the commit's fault, found before
            // anything is touched.
            if !system.join("bin/switch-to-configuration").exists() {
                return Err(Failure::new(
                    Kind::Commit,
                    format!(
                        "{} has no bin/switch-to-configuration: not a NixOS system\nhint: check [host] attribute; it must name a system.build.toplevel",
                        system.display()
                    ),
                ));
            }
            Ok(system)
        })
    }

    fn release(&self) {
        let _ = std::fs::remove_file(self.candidate_root());
    }
}

impl Machine for Rc<Real> {
    fn current_system(&self) -> Option<PathBuf> {
        system::resolve(&self.settings.paths.current_system)
    }

    fn profile(&self) -> Option<Generation> {
        profile::current(&self.settings.paths.profile)
    }

    fn previous_generation(&self) -> Option<Generation> {
        profile::previous(&self.settings.paths.profile)
    }

    fn set_profile<'a>(&'a self, system: &'a Path) -> Fut<'a, Result<u32, Failure>> {
        Box::pin(async move {
            let p = &self.settings.paths;
            let number = profile::set(&p.profile, system)
                .await
                .map(|g| g.number)
                .map_err(|e| Failure::new(Kind::Environment, format!("{e:#}")))?;
            // `[retention] keep`, before the caller's `switch-to-configuration boot`, which
            // then drops the deleted generations' entries and kernels from /boot. Never the
            // new default or the booted system. A failure here fails nothing.
            if let Some(keep) = self.settings.retention_keep {
                let mut protect = vec![system.to_path_buf()];
                protect.extend(crate::system::resolve(&p.booted_system));
                let old = profile::beyond_retention(&profile::list(&p.profile), keep, &protect);
                match profile::delete(&p.profile, &old).await {
                    Ok(()) if !old.is_empty() => {
                        log::info!("[retention] keep = {keep}: deleted generations {old:?}")
                    }
                    Ok(()) => {}
                    Err(e) => log::warn!("[retention] keep = {keep}: {e:#}"),
                }
            }
            Ok(number)
        })
    }

    fn switch<'a>(
        &'a self,
        system: &'a Path,
        action: Action,
        activation: &'a str,
    ) -> Fut<'a, Result<(), Failure>> {
        Box::pin(async move {
            self.switcher
                .run(system, action, activation)
                .await
                .map_err(|e| Failure::new(e.kind(), e.to_string()))
        })
    }

    fn settle_activation<'a>(&'a self, activation: &'a str) -> Fut<'a, Result<(), Failure>> {
        Box::pin(async move {
            self.switcher
                .settle_leftover(activation)
                .await
                .map_err(|e| Failure::new(e.kind(), e.to_string()))
        })
    }
}

impl Health for Rc<Real> {
    fn wait_until_healthy(&self) -> Fut<'_, health::Report> {
        Box::pin(async move {
            let context = health::Context {
                settings: &self.settings,
                remote: self.remote.as_ref(),
            };
            health::wait_until_healthy(&self.settings.health, &context).await
        })
    }
}
