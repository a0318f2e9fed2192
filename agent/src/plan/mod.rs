//! `homelab-agent plan [COMMIT]`: what a commit would do on this machine, without touching
//! it. Fetches the watched branch, checks the commit's signature as a run would, asks nix
//! what it would compile here ([`crate::nix::plan`], the build plan), builds the system
//! (unless `--eval-only`), and compares its closure with the live system's
//! ([`closure`]) and its kernel with the booted one ([`crate::system::reboot_required`]).
//!
//! Never activates, never writes the state file, never marks a commit bad: the only
//! writes are the git cache's fetch, the build's store paths, and a GC root in the runtime
//! directory that is removed before it returns. The caller holds the run lock, so it
//! never races a deployment.

pub mod closure;
mod render;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Settings;
use crate::nix::{self, BuildRequest};
use crate::notify;

pub use closure::ClosureDiff;

/// The most names of derivations to build listed.
const MAX_NAMES: usize = 50;

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A commit id (4 to 40 hex digits) on the watched branch; `None`: the branch head.
    pub commit: Option<String>,
    /// Only evaluate (the build plan's dry run): no build, no closure difference.
    pub eval_only: bool,
}

/// What the commit would do (`plan --json`; docs/plan.md).
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub commit: String,
    pub subject: String,
    pub branch: String,
    /// Whether the commit is the branch head (what the next run would deploy).
    pub head: bool,
    pub host: String,
    pub eval_only: bool,
    pub build_plan: BuildPlanView,
    /// The system it builds (null with --eval-only).
    pub system: Option<String>,
    /// The live system now.
    pub current_system: Option<String>,
    /// The commit builds the live system: a run would record `unchanged`.
    pub unchanged: Option<bool>,
    /// Null with --eval-only, or when there is no live system to compare with.
    pub closure: Option<ClosureDiff>,
    /// Whether booting it needs a reboot (kernel, initrd, modules differ from the
    /// booted system's); null with --eval-only or when unknown.
    pub reboot_required: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildPlanView {
    /// Derivations nix would build here, and paths it would fetch.
    pub build: usize,
    pub fetch: usize,
    /// Compiled here in all (paths no substituter offers acceptably included).
    pub local_builds: usize,
    /// The first names of the derivations to build.
    pub build_names: Vec<String>,
    pub summary: String,
}

/// Why there is no plan, and the exit code that says so.
#[derive(Debug)]
pub struct PlanError {
    pub message: String,
    pub code: u8,
}

impl PlanError {
    fn new(code: u8, message: impl Into<String>) -> PlanError {
        PlanError {
            message: message.into(),
            code,
        }
    }
    fn failure(f: crate::failure::Failure) -> PlanError {
        PlanError::new(f.kind.exit_code(), f.message)
    }
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A commit id as given on the command line: 4 to 40 hex digits.
pub fn check_commit_id(text: &str) -> Result<(), String> {
    let ok = (4..=40).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a commit id\nhint: give 4 to 40 hex digits of a commit on the watched branch (`git log` shows them), or nothing for the branch head",
            text.escape_default().to_string()
        ))
    }
}

/// Works out the plan (see the module doc). The caller holds the run lock.
pub async fn plan(settings: &Settings, opts: &Options) -> Result<Plan, PlanError> {
    if let Some(c) = &opts.commit {
        check_commit_id(c).map_err(|m| PlanError::new(crate::exit::USAGE, m))?;
    }
    let cache = settings.paths.state_dir.join("cache.git");
    let branch = settings.source.branch.clone();
    notify::status(&format!("planning: fetching {branch}"));
    let fetched = crate::source::fetch(&settings.source, cache.clone(), settings.source.timeout)
        .await
        .map_err(|e| PlanError::new(e.kind().exit_code(), e.to_string()))?;
    let (commit, subject) = match &opts.commit {
        None => (fetched.commit.clone(), shown(&fetched.subject)),
        Some(c) => on_branch(&cache, c, &fetched.commit).map_err(|why| {
            PlanError::new(
                crate::exit::FAILED,
                format!(
                    "commit {c} is not on branch {branch} of {}: {why}\nhint: `plan` looks only at the watched branch ([source] branch); `git log {branch}` lists its commits",
                    settings.source.url.redacted()
                ),
            )
        })?,
    };
    let short = &commit[..commit.len().min(8)];
    // What a run would refuse, plan refuses too: an unsigned commit is never built here.
    match crate::trust::check(&settings.source.trust, &cache, &commit, &[]).await {
        Ok(_) => {}
        Err(crate::trust::Verdict::Refused(r)) => {
            return Err(PlanError::new(
                crate::exit::FAILED,
                format!(
                    "a run would refuse {short}, so it is not built: {}",
                    r.message
                ),
            ))
        }
        Err(crate::trust::Verdict::Failed(f)) => return Err(PlanError::failure(f)),
    }
    let (state, _) = crate::status::load_state(&settings.paths.state_dir);
    // The map through the Source door, in this process (plan runs no daemon).
    let source = crate::doors::git::InProcess::new(settings);
    let target = crate::pivot::resolve(settings, state.pivot.as_ref(), &commit, &source)
        .await
        .map_err(PlanError::failure)?;
    let out_link = out_link(settings);
    std::fs::create_dir_all(&settings.paths.runtime_dir).map_err(|e| {
        PlanError::new(
            crate::exit::ENVIRONMENT,
            format!("creating {}: {e}", settings.paths.runtime_dir.display()),
        )
    })?;
    let req = BuildRequest {
        cache: &cache,
        commit: &commit,
        attribute: &target.attribute,
        out_link: &out_link,
        settings: &settings.build,
        cancel: None,
    };
    let build_error = |e: nix::BuildError| {
        PlanError::new(
            e.kind().exit_code(),
            format!("planning {short} for {}: {e}", target.host),
        )
    };
    notify::status(&format!("planning: evaluating {short} for {}", target.host));
    let build_plan = nix::plan::preview(&req).await.map_err(build_error)?;
    let current = crate::system::resolve(&settings.paths.current_system);
    let mut plan = Plan {
        commit: commit.clone(),
        subject,
        branch,
        head: commit == fetched.commit,
        host: target.host.clone(),
        eval_only: opts.eval_only,
        build_plan: BuildPlanView {
            build: build_plan.build.len(),
            fetch: build_plan.fetch.len(),
            local_builds: build_plan.local_builds(),
            build_names: build_plan
                .build
                .iter()
                .take(MAX_NAMES)
                .map(|p| nix::plan::names(std::slice::from_ref(p), 1))
                .collect(),
            summary: build_plan.summary(),
        },
        system: None,
        current_system: current.as_ref().map(|c| c.display().to_string()),
        unchanged: None,
        closure: None,
        reboot_required: None,
    };
    if opts.eval_only {
        return Ok(plan);
    }
    notify::status(&format!("planning: building {short} for {}", target.host));
    let built = nix::build(&req).await.map_err(build_error);
    let result = match built {
        Ok(system) => compare(settings, &mut plan, &system, current.as_deref()).await,
        Err(e) => Err(e),
    };
    // The build's GC root goes: a plan leaves nothing rooted.
    let _ = std::fs::remove_file(&out_link);
    result.map(|()| plan)
}

/// The closure difference and the reboot question, for a built `system`.
async fn compare(
    settings: &Settings,
    plan: &mut Plan,
    system: &Path,
    current: Option<&Path>,
) -> Result<(), PlanError> {
    plan.system = Some(system.display().to_string());
    plan.unchanged = current.map(|c| c == system);
    plan.reboot_required = crate::system::reboot_required(&settings.paths.booted_system, system);
    if let Some(current) = current {
        notify::status("planning: comparing closures");
        let env = |e: String| PlanError::new(crate::exit::ENVIRONMENT, e);
        let before = closure::closure(current).await.map_err(env)?;
        let after = closure::closure(system).await.map_err(env)?;
        plan.closure = Some(closure::diff(&before, &after));
    }
    Ok(())
}

/// The full id and subject of `commit` (an id or a prefix of one) in the bare `cache`, if
/// it is `head` or one of its ancestors; else why not.
fn on_branch(cache: &Path, commit: &str, head: &str) -> Result<(String, String), String> {
    let repo = git2::Repository::open_bare(cache).map_err(|e| e.message().to_string())?;
    let found = repo
        .revparse_single(commit)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| match e.code() {
            git2::ErrorCode::NotFound => "no such commit".to_string(),
            git2::ErrorCode::Ambiguous => {
                "more than one commit starts so: give more digits".to_string()
            }
            _ => e.message().to_string(),
        })?;
    let head = git2::Oid::from_str(head).map_err(|e| e.message().to_string())?;
    let oid = found.id();
    let reachable = oid == head
        || repo
            .graph_descendant_of(head, oid)
            .map_err(|e| e.message().to_string())?;
    if !reachable {
        return Err("it is not the branch head nor one of its ancestors".into());
    }
    Ok((oid.to_string(), shown(found.summary().unwrap_or(""))))
}

/// A commit subject to show: at most 200 characters, control characters escaped.
fn shown(subject: &str) -> String {
    subject
        .chars()
        .take(200)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Writes the plan for a person (see [`render`]).
pub fn write_human(plan: &Plan, out: &mut impl std::io::Write) -> std::io::Result<()> {
    render::human(plan, out)
}

/// The path of the GC root a plan's build holds while it runs.
pub fn out_link(settings: &Settings) -> PathBuf {
    settings.paths.runtime_dir.join("plan-result")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_ids_are_checked_and_subjects_escaped() {
        assert!(check_commit_id("3f2a9c1e").is_ok());
        assert!(check_commit_id(&"a".repeat(40)).is_ok());
        for bad in ["abc", "xyz123", &"a".repeat(41), "--upload-pack=x", ""] {
            let e = check_commit_id(bad).unwrap_err();
            assert!(e.contains("is not a commit id\nhint: "), "{bad}: {e}");
        }
        assert_eq!(shown("fix\x1b[31m red"), "fix\\u{1b}[31m red");
    }
}
