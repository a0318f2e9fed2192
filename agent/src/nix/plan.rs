//! What a build would do before it does it: which derivations this machine would compile
//! and which store paths it would fetch from a substituter (binary cache), and whether
//! nix would accept those. Over `[build] max_local_builds` the build is refused before it
//! starts (a Pi must not compile for hours without saying so).
//!
//! How, with what both Nix 2.8 and 2.18+ offer:
//!
//! - `nix build --dry-run --json <flake>`: nix's own answer (the same `queryMissing` the
//!   real build uses, substituters and all). Neither version prints that answer as JSON
//!   (`--json` prints only the installable's `drvPath` and outputs), so the lists come
//!   from stderr: only lines that are exactly one store path are read, and a path is
//!   "built" when it is a derivation (`.drv`), "fetched" otherwise; nix's headings are
//!   never read. At most [`MAX_PLAN_LINES`] lines are kept (the last ones); when nix
//!   printed more, the plan is incomplete (the list of derivations to build comes first,
//!   so it is the one lost) and, with a limit set, counts as over it ([`BuildPlan::over_limit`]).
//! - Each substituter is reached ([`super::caches::reach`]): one that cannot be is its
//!   own cause in the plan and the refusal ([`BuildPlan::unreachable`]), not left for the
//!   reader to guess from "N to build here" (nix's dry run only warns, and then plans to
//!   build what it would have fetched).
//! - nix checks signatures only when it fetches, and a path it will not accept is then
//!   built here instead (silently). So each path to fetch is looked up in the reachable
//!   substituters (`nix path-info --json --store URL`) and nix's decision predicted from
//!   all its inputs ([`super::sigs`]: `require-sigs`, a substituter's `?trusted=1`, and
//!   a signature that *verifies* with a trusted key): a path no substituter offers
//!   acceptably counts as a local build, and says why. The paths are asked about a
//!   bounded batch per command ([`MAX_QUERY_ARGS_BYTES`]), never all on one command line
//!   (the OS limits its size); when a substituter cannot be asked, the count is unknown
//!   and, with a limit set, over it ([`BuildPlan::unchecked`]).

use std::collections::BTreeSet;

use serde::Serialize;

use super::{caches, flake_ref, sigs, BuildError, BuildRequest};
use crate::failure::{Failure, Kind};
use crate::process::{Cmd, CmdError, Finished};

/// The most lines of a dry run read (a whole NixOS closure is a few thousand paths).
const MAX_PLAN_LINES: usize = 50_000;
/// The most bytes of store paths given to one `nix path-info` (Linux allows about 2 MiB
/// for a whole command line and its environment).
const MAX_QUERY_ARGS_BYTES: usize = 64 * 1024;
/// How long asking a substituter may take (per batch of paths).
const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// What a build of one commit would do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BuildPlan {
    /// The derivations nix would build here (store paths of `.drv` files).
    pub build: Vec<String>,
    /// The store paths nix would fetch from a substituter.
    pub fetch: Vec<String>,
    /// Paths to fetch that no substituter has signed with a trusted key: nix would refuse
    /// them and build them here.
    pub untrusted: Vec<String>,
    /// Lines of the dry run that were not kept (more than [`MAX_PLAN_LINES`]): when not
    /// 0 the lists are incomplete, and how much would be compiled here is unknown.
    pub unread_lines: usize,
    /// Why the signatures of the paths to fetch could not be checked (a substituter or
    /// nix could not be asked): how much would be compiled here is then unknown.
    pub unchecked: Option<String>,
    /// The substituters that could not be reached: nix builds here what it would have
    /// fetched from them.
    pub unreachable: Vec<Unreachable>,
}

/// A substituter that could not be reached, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreachable {
    /// Without its `?settings` and any user or password.
    pub url: String,
    pub why: String,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.url, self.why)
    }
}

impl BuildPlan {
    /// How many derivations would be compiled on this machine.
    pub fn local_builds(&self) -> usize {
        self.build.len() + self.untrusted.len()
    }

    /// One line for the journal and status: counts and the first names.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} to build here, {} to fetch",
            self.build.len(),
            self.fetch.len()
        );
        if !self.build.is_empty() {
            text.push_str(&format!(" (build: {})", names(&self.build, 8)));
        }
        if !self.unreachable.is_empty() {
            text.push_str(&format!(
                "; binary cache not reached: {}",
                self.unreachable_list()
            ));
        }
        if !self.untrusted.is_empty() {
            text.push_str(&format!(
                "; {} not signed by a trusted key, so built here too: {}",
                self.untrusted.len(),
                names(&self.untrusted, 8)
            ));
        }
        if self.unread_lines > 0 {
            text.push_str(&format!(
                "; incomplete: the dry run printed {} lines more than the {MAX_PLAN_LINES} read, \
                 so more may be built here",
                self.unread_lines
            ));
        }
        if let Some(why) = &self.unchecked {
            text.push_str(&format!("; signatures not checked: {why}"));
        }
        text
    }

    /// The unreachable substituters, one after the other.
    fn unreachable_list(&self) -> String {
        let list: Vec<String> = self.unreachable.iter().map(|u| u.to_string()).collect();
        list.join("; ")
    }

    /// The refusal when more would be compiled here than `limit` allows.
    /// An incomplete plan (see [`BuildPlan::unread_lines`]) is over any limit: the
    /// derivations to build are listed first, so they are what went unread, and a limit
    /// that could not be checked must not let a large build through as a small one.
    pub fn over_limit(&self, limit: u32) -> Option<Failure> {
        // An unreachable cache is the network's (transient); any other refusal is this
        // machine's setup. Neither is the commit's.
        let kind = match self.unreachable.is_empty() {
            true => Kind::Environment,
            false => Kind::Transient,
        };
        let refuse =
            |message: String, hint: String| Some(Failure::new(kind, message).with_hint(hint));
        if self.unread_lines > 0 {
            return refuse(
                format!(
                    "refusing to build: cannot tell how many derivations would be compiled on this machine \
                     ([build] max_local_builds = {limit}): `nix build --dry-run` printed {} lines, more than \
                     the {MAX_PLAN_LINES} read, and the first {} (where nix lists what it would build) were \
                     not read; an unknown count is treated as over the limit",
                    self.unread_lines + MAX_PLAN_LINES,
                    self.unread_lines,
                ),
                "run `nix build --dry-run` on the commit's toplevel here to see why it says so much \
                 (a very large build, or a flood of evaluation warnings); push the outputs to a binary \
                 cache this machine uses, or remove [build] max_local_builds to build without the check; \
                 then `sudo homelab-agent retry` (else the next try is after the build backoff)"
                    .into(),
            );
        }
        if self.local_builds() <= limit as usize {
            let why = self.unchecked.as_ref()?;
            return refuse(
                format!(
                    "refusing to build: cannot tell how many derivations would be compiled on this machine \
                     ([build] max_local_builds = {limit}): {} to build here, and whether the {} paths to fetch \
                     are signed by a trusted key (nix builds those that are not here) could not be checked: \
                     {why}; an unknown count is treated as over the limit",
                    self.build.len(),
                    self.fetch.len(),
                ),
                "check that each substituter answers (`nix path-info --store URL PATH`) and that \
                 nix runs here; or remove [build] max_local_builds to build without the check; \
                 `sudo homelab-agent retry` checks again at once (else the next try is after the build backoff)"
                    .into(),
            );
        }
        let what = format!(
            "{} derivation{}",
            self.local_builds(),
            if self.local_builds() == 1 { "" } else { "s" }
        );
        if !self.unreachable.is_empty() {
            let [one] = &self.unreachable[..] else {
                return refuse(
                    format!(
                        "refusing to compile {what} on this machine ([build] max_local_builds = {limit}): \
                         {} binary caches could not be reached: {}; without them, nix would build here: \
                         {}",
                        self.unreachable.len(),
                        self.unreachable_list(),
                        names(&self.all_local(), 8),
                    ),
                    "check that the caches are up and reachable from this machine \
                     (`curl URL/nix-cache-info`), then `sudo homelab-agent retry` (else the next try is \
                     after the build backoff); the commit is not blamed"
                        .into(),
                );
            };
            return refuse(
                format!(
                    "refusing to compile {what} on this machine ([build] max_local_builds = {limit}): \
                     the binary cache {} could not be reached ({}); without it, nix would build here: \
                     {}",
                    one.url,
                    one.why,
                    names(&self.all_local(), 8),
                ),
                format!(
                    "check that {} is up and reachable from this machine (`curl {}/nix-cache-info`), \
                     then `sudo homelab-agent retry` (else the next try is after the build backoff); the commit \
                     is not blamed",
                    one.url, one.url,
                ),
            );
        }
        let cause = if self.untrusted.is_empty() {
            String::new()
        } else {
            format!(
                "\n{} of them {} in a binary cache but not signed by a trusted key (none of their \
                 signatures verifies with a key in trusted-public-keys): {}",
                self.untrusted.len(),
                if self.untrusted.len() == 1 {
                    "is"
                } else {
                    "are"
                },
                names(&self.untrusted, 8)
            )
        };
        refuse(
            format!(
                "refusing to compile {what} on this machine ([build] max_local_builds = {limit}): {}{cause}",
                names(&self.build, 8),
            ),
            "push the outputs to a binary cache this machine uses (signed with a key in trusted-public-keys), \
             or raise [build] max_local_builds; then `sudo homelab-agent retry` checks again at once (else the \
             next try is after the build backoff)"
                .into(),
        )
    }

    /// Everything that would be compiled here: the derivations, then the paths to fetch
    /// that nix would not accept.
    fn all_local(&self) -> Vec<String> {
        self.build.iter().chain(&self.untrusted).cloned().collect()
    }
}

/// `name` of `/nix/store/<hash>-name`, the first `n` of them, then "and N more".
pub fn names(paths: &[String], n: usize) -> String {
    let mut shown: Vec<&str> = paths
        .iter()
        .take(n)
        .map(|p| {
            let base = p.rsplit('/').next().unwrap_or(p);
            base.split_once('-').map_or(base, |(_, name)| name)
        })
        .collect();
    let more = paths.len().saturating_sub(n);
    let extra;
    if more > 0 {
        extra = format!("and {more} more");
        shown.push(&extra);
    }
    shown.join(", ")
}

/// The `nix build --dry-run` argument vector: the real build's, minus what writes.
pub fn dry_run_args(req: &BuildRequest) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--extra-experimental-features".into(),
        "nix-command flakes".into(),
        "build".into(),
        "--dry-run".into(),
        "--json".into(),
        "--no-write-lock-file".into(),
        "--no-link".into(),
    ];
    args.extend(req.settings.extra_args.iter().cloned());
    args.push(flake_ref(req.cache, req.commit, req.attribute));
    args
}

/// The store paths nix lists in a dry run: derivations to build, other paths to fetch.
/// Only lines that are exactly one store path count.
pub fn parse_dry_run(stderr: &str) -> (Vec<String>, Vec<String>) {
    let mut build = BTreeSet::new();
    let mut fetch = BTreeSet::new();
    for line in stderr.lines() {
        let p = line.trim();
        if !is_store_path(p) {
            continue;
        }
        if p.ends_with(".drv") {
            build.insert(p.to_string());
        } else {
            fetch.insert(p.to_string());
        }
    }
    (build.into_iter().collect(), fetch.into_iter().collect())
}

fn is_store_path(p: &str) -> bool {
    let Some(base) = p.strip_prefix("/nix/store/") else {
        return false;
    };
    let Some((hash, name)) = base.split_once('-') else {
        return false;
    };
    hash.len() == 32
        && hash.bytes().all(|b| b.is_ascii_alphanumeric())
        && !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b))
}

/// The settings a cache's use depends on, given as their own flags (`--NAME VALUE`).
const SETTING_FLAGS: &[&str] = &[
    "--substituters",
    "--extra-substituters",
    "--trusted-public-keys",
    "--extra-trusted-public-keys",
    "--secret-key-files",
    "--extra-secret-key-files",
    "--ssl-cert-file",
];

/// The settings among the build's extra arguments (so that the settings asked about are
/// the build's): `--option NAME VALUE` triples, the cache settings' own flags with their
/// value, and `--require-sigs` / `--no-require-sigs`.
fn options(extra: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < extra.len() {
        let arg = extra[i].as_str();
        if arg == "--option" && i + 2 < extra.len() {
            out.extend_from_slice(&extra[i..i + 3]);
            i += 3;
        } else if SETTING_FLAGS.contains(&arg) && i + 1 < extra.len() {
            out.extend_from_slice(&extra[i..i + 2]);
            i += 2;
        } else {
            if matches!(arg, "--require-sigs" | "--no-require-sigs") {
                out.push(arg.to_string());
            }
            i += 1;
        }
    }
    out
}

/// Asks nix what building `req` would do (evaluating the commit, as the build would).
pub async fn preview(req: &BuildRequest<'_>) -> Result<BuildPlan, BuildError> {
    let oom_before = crate::oom_kills::count();
    super::or_out_of_memory(dry_run(req).await, oom_before)
}

async fn dry_run(req: &BuildRequest<'_>) -> Result<BuildPlan, BuildError> {
    let mut cmd = reading(Cmd::new("nix").args(dry_run_args(req))).timeout(req.settings.timeout);
    if let Some(cancel) = &req.cancel {
        cmd = cmd.cancel_on(cancel.clone());
    }
    let done = cmd.run().await;
    let done = match done {
        Ok(done) if done.status.success() => done,
        Ok(done) => return Err(super::classify(req, &done.status, &done.stderr_tail).await),
        Err(CmdError::TimedOut { after, .. }) => return Err(BuildError::TimedOut { after }),
        Err(e @ CmdError::NotFound { .. }) => return Err(BuildError::NixMissing(e.to_string())),
        Err(e) => return Err(BuildError::Machine(e.to_string(), None)),
    };
    let mut plan = lists(&done);
    // An incomplete plan is over any limit already: its caches are not worth asking.
    // A check that cannot be made leaves the count unknown, which a limit refuses.
    if (!plan.build.is_empty() || !plan.fetch.is_empty()) && plan.unread_lines == 0 {
        check_caches(&req.settings.extra_args, &mut plan).await;
    }
    Ok(plan)
}

/// Reaches every substituter, then asks the reachable ones whether nix would accept the
/// paths to fetch from them (filling in `unreachable`, `untrusted` or `unchecked`).
async fn check_caches(extra_args: &[String], plan: &mut BuildPlan) {
    let trust = match settings(extra_args).await {
        Ok(trust) => trust,
        Err(why) => {
            // With nothing to fetch, nothing depends on it.
            if !plan.fetch.is_empty() {
                log::warn!("checking the signatures of the paths to fetch: {why}");
                plan.unchecked = Some(why);
            }
            return;
        }
    };
    let mut reachable = Vec::new();
    for sub in &trust.substituters {
        match caches::reach(&sub.url, trust.ssl_cert_file.as_deref()).await {
            Ok(()) => reachable.push(sub.clone()),
            Err(why) => {
                let url = caches::base_url(&sub.url);
                log::warn!("binary cache {url} cannot be reached: {why}");
                plan.unreachable.push(Unreachable { url, why });
            }
        }
    }
    if plan.fetch.is_empty() {
        return;
    }
    match untrusted(extra_args, &trust, &reachable, &plan.fetch).await {
        Ok(paths) => plan.untrusted = paths,
        Err(why) => {
            log::warn!("checking the signatures of the paths to fetch: {why}");
            plan.unchecked = Some(why);
        }
    }
}

/// nix's settings as the build sees them (`nix show-config --json` with its `--option`s).
async fn settings(extra_args: &[String]) -> Result<caches::NixTrust, String> {
    let mut args: Vec<String> = vec![
        "--extra-experimental-features".into(),
        "nix-command flakes".into(),
        "show-config".into(),
        "--json".into(),
    ];
    args.extend(options(extra_args));
    let config = match query(args).await {
        Ok(done) if done.status.success() => caches::parse_config(&done.stdout),
        Ok(done) => Err(done.stderr_tail),
        Err(e) => Err(e.to_string()),
    };
    let mut trust =
        config.map_err(|e| format!("reading nix's settings (`nix show-config --json`): {e}"))?;
    // nix 2.8 has no `ssl-cert-file` setting but reads the variable.
    if trust.ssl_cert_file.is_none() {
        trust.ssl_cert_file = std::env::var("NIX_SSL_CERT_FILE")
            .ok()
            .filter(|f| !f.is_empty());
    }
    trust.read_secret_keys();
    for problem in &trust.key_problems {
        log::warn!("nix's trusted keys: {problem}");
    }
    Ok(trust)
}

/// Runs a bounded `nix` query, its stdout captured.
async fn query(args: Vec<String>) -> Result<Finished, CmdError> {
    Cmd::new("nix")
        .args(args)
        .timeout(QUERY_TIMEOUT)
        .capture_stdout()
        .run()
        .await
}

/// How the dry run's output is read: stdout (the `--json` outputs) kept, and the last
/// [`MAX_PLAN_LINES`] lines of stderr, with a count of those before them.
fn reading(cmd: Cmd) -> Cmd {
    cmd.capture_stdout().keep_stderr_lines(MAX_PLAN_LINES)
}

/// The plan's lists from a finished dry run (before the signature check).
fn lists(done: &Finished) -> BuildPlan {
    let (build, fetch) = parse_dry_run(&done.stderr_tail);
    BuildPlan {
        build,
        fetch,
        untrusted: Vec::new(),
        unread_lines: done.stderr_lines_dropped,
        unchecked: None,
        unreachable: Vec::new(),
    }
}

/// `paths` in batches of at most `max_bytes` of arguments each (a path longer than that
/// alone in its batch).
fn batches(paths: &[String], max_bytes: usize) -> Vec<&[String]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, p) in paths.iter().enumerate() {
        // The string, its NUL, and its pointer in argv.
        let len = p.len() + 1 + std::mem::size_of::<usize>();
        if i > start && size + len > max_bytes {
            out.push(&paths[start..i]);
            (start, size) = (i, 0);
        }
        size += len;
    }
    if start < paths.len() {
        out.push(&paths[start..]);
    }
    out
}

/// The paths to fetch that no substituter in `subs` offers in a way nix accepts (see
/// [`super::sigs`]); an error (saying why) when nix or a substituter cannot be asked, as
/// then nothing can be told.
async fn untrusted(
    extra_args: &[String],
    trust: &caches::NixTrust,
    subs: &[caches::Substituter],
    fetch: &[String],
) -> Result<Vec<String>, String> {
    if !trust.require_sigs {
        return Ok(Vec::new());
    }
    let mut accepted = BTreeSet::new();
    for sub in subs {
        for batch in batches(fetch, MAX_QUERY_ARGS_BYTES) {
            let mut args: Vec<String> = vec![
                "--extra-experimental-features".into(),
                "nix-command flakes".into(),
                "path-info".into(),
                "--json".into(),
                "--store".into(),
                sub.url.clone(),
            ];
            args.extend(options(extra_args));
            args.extend(batch.iter().cloned());
            // A path the substituter lacks is `"valid": false` (2.8, 2.18) or null
            // (2.19+), not an error; an error is the substituter's (unreachable, not a
            // store), and then nothing can be told.
            let problem = match query(args).await {
                Ok(done) if done.status.success() => match sigs::path_infos(&done.stdout) {
                    Ok(infos) => {
                        accepted.extend(
                            infos
                                .into_iter()
                                .filter(|i| {
                                    i.accepted(&trust.keys, trust.require_sigs, sub.trusted)
                                })
                                .map(|i| i.path),
                        );
                        continue;
                    }
                    Err(e) => e,
                },
                Ok(done) => format!("{} ({})", done.stderr_tail.trim(), done.status),
                Err(e) => e.to_string(),
            };
            return Err(format!(
                "asking {} for the signatures of {} paths: {problem}",
                caches::base_url(&sub.url),
                batch.len()
            ));
        }
    }
    Ok(fetch
        .iter()
        .filter(|p| !accepted.contains(*p))
        .cloned()
        .collect())
}

/// What `status` shows of the last plan (`<state_dir>/build-plan.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Record<'a> {
    pub commit: &'a str,
    pub at: String,
    /// Derivations nix would build here.
    pub build: usize,
    /// Paths nix would fetch from a substituter.
    pub fetch: usize,
    /// Paths to fetch without a trusted signature (built here instead).
    pub untrusted: usize,
    /// `build + untrusted`: what `max_local_builds` is compared with.
    pub local_builds: usize,
    pub max_local_builds: Option<u32>,
    /// The build was refused for going over `max_local_builds`.
    pub refused: bool,
    /// Names of the first derivations to build / untrusted paths (at most 20 each).
    pub build_names: Vec<String>,
    pub untrusted_names: Vec<String>,
    /// Lines of the dry run not read (more than it reads): the counts are then only
    /// what was seen, and a limit refuses.
    pub unread_lines: usize,
    /// The substituters that could not be reached (`url`, `why`).
    pub unreachable_caches: &'a [Unreachable],
}

/// The file the last plan is recorded in.
pub const RECORD_FILE: &str = "build-plan.json";

/// Before a build: asks nix what it would do, says so in the journal, records it for
/// `status`, and refuses (an environment failure: not the commit's fault, retried with
/// a growing wait) when more than `limit` derivations would be compiled here.
pub async fn gate(
    req: &BuildRequest<'_>,
    state_dir: &std::path::Path,
) -> Result<BuildPlan, crate::failure::Failure> {
    let plan = preview(req).await.map_err(Failure::from)?;
    let limit = req.settings.max_local_builds;
    let refusal = limit.and_then(|l| plan.over_limit(l));
    let commit = &req.commit[..req.commit.len().min(8)];
    log::info!(commit = req.commit; "build plan for {commit}: {}", plan.summary());
    let short = |paths: &[String]| -> Vec<String> {
        paths
            .iter()
            .take(20)
            .map(|p| names(std::slice::from_ref(p), 1))
            .collect()
    };
    let record = Record {
        commit: req.commit,
        at: crate::state::now().to_string(),
        build: plan.build.len(),
        fetch: plan.fetch.len(),
        untrusted: plan.untrusted.len(),
        local_builds: plan.local_builds(),
        max_local_builds: limit,
        refused: refusal.is_some(),
        build_names: short(&plan.build),
        untrusted_names: short(&plan.untrusted),
        unread_lines: plan.unread_lines,
        unreachable_caches: &plan.unreachable,
    };
    if let Ok(bytes) = serde_json::to_vec_pretty(&record) {
        if let Err(e) = crate::state::write_atomic(&state_dir.join(RECORD_FILE), &bytes) {
            log::warn!("recording the build plan in {}: {e}", state_dir.display());
        }
    }
    match refusal {
        Some(refused) => Err(refused),
        None => Ok(plan),
    }
}

/// The last recorded plan, for `status` (`None` when there is none or it is unreadable).
pub fn read_record(state_dir: &std::path::Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(state_dir.join(RECORD_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "ay541y23z6zyqfx40izbiblx9scbpdb5";

    #[test]
    fn dry_run_lists_are_told_apart_by_the_paths_themselves() {
        let stderr = format!(
            "warning: Git tree '/x' is dirty\nthese 2 derivations will be built:\n  /nix/store/{H}-dep-1.drv\n  /nix/store/{H}-nixos-system-pi1.drv\n\
             these 3 paths will be fetched (0.01 MiB download, 0.02 MiB unpacked):\n  /nix/store/{H}-glibc-2.37\n  /nix/store/{H}-bash-5.2\n\
             trace: /nix/store/{H}-not-a-list-entry\n  /nix/store/short-x\n"
        );
        let (build, fetch) = parse_dry_run(&stderr);
        assert_eq!(
            build,
            [
                format!("/nix/store/{H}-dep-1.drv"),
                format!("/nix/store/{H}-nixos-system-pi1.drv")
            ]
        );
        assert_eq!(
            fetch,
            [
                format!("/nix/store/{H}-bash-5.2"),
                format!("/nix/store/{H}-glibc-2.37")
            ]
        );
        assert_eq!(parse_dry_run(""), (vec![], vec![]));
    }

    #[test]
    fn the_limit_refuses_with_what_and_how() {
        let plan = BuildPlan {
            build: vec![format!("/nix/store/{H}-nixos-system-pi1.drv")],
            fetch: vec![format!("/nix/store/{H}-bash-5.2")],
            untrusted: vec![format!("/nix/store/{H}-bash-5.2")],
            ..BuildPlan::default()
        };
        assert_eq!(plan.local_builds(), 2);
        assert_eq!(plan.over_limit(2), None);
        let text = plan.over_limit(1).unwrap().to_string();
        assert!(text.starts_with("refusing to compile 2 derivations on this machine ([build] max_local_builds = 1): nixos-system-pi1.drv"), "{text}");
        assert!(
            text.contains("not signed by a trusted key (none of their signatures verifies with a key in trusted-public-keys): bash-5.2"),
            "{text}"
        );
        assert!(text.contains("hint: "), "{text}");
        assert!(plan.summary().starts_with("1 to build here, 1 to fetch"));
        let many: Vec<String> = (0..12)
            .map(|i| format!("/nix/store/{H}-p{i}.drv"))
            .collect();
        assert!(names(&many, 8).ends_with("p7.drv, and 4 more"));
    }

    #[test]
    fn an_unreachable_cache_leads_the_refusal() {
        let cache = |n: u16| Unreachable {
            url: format!("http://127.0.0.1:{n}"),
            why: "connection refused".into(),
        };
        let mut plan = BuildPlan {
            build: vec![format!("/nix/store/{H}-nixos-system-pi1.drv")],
            untrusted: vec![format!("/nix/store/{H}-bash-5.2")],
            unreachable: vec![cache(1)],
            ..BuildPlan::default()
        };
        assert!(plan
            .summary()
            .contains("; binary cache not reached: http://127.0.0.1:1 (connection refused)"));
        assert_eq!(
            plan.over_limit(2),
            None,
            "within the limit, nothing to refuse"
        );
        let text = plan.over_limit(1).unwrap().to_string();
        assert_eq!(
            text,
            "refusing to compile 2 derivations on this machine ([build] max_local_builds = 1): the binary \
             cache http://127.0.0.1:1 could not be reached (connection refused); without it, nix would \
             build here: nixos-system-pi1.drv, bash-5.2\n\
             hint: check that http://127.0.0.1:1 is up and reachable from this machine \
             (`curl http://127.0.0.1:1/nix-cache-info`), then `sudo homelab-agent retry` (else the next try is \
             after the build backoff); the commit is not blamed"
        );
        plan.unreachable.push(cache(2));
        let text = plan.over_limit(0).unwrap().to_string();
        assert!(
            text.contains("): 2 binary caches could not be reached: http://127.0.0.1:1 (connection refused); http://127.0.0.1:2 (connection refused); without them, nix would build here: "),
            "{text}"
        );
        assert!(
            text.contains("hint: check that the caches are up"),
            "{text}"
        );
    }

    /// A dry run that prints more than is read: nix's list of derivations to build (it
    /// comes first) is lost, and what is left looks like a small build. It must count as
    /// over any limit, saying why, never as the few builds that were seen.
    #[tokio::test(flavor = "current_thread")]
    async fn an_oversized_dry_run_fails_closed() {
        let script = format!(
            "echo 'these 3 derivations will be built:' >&2
             for d in a b nixos-system-pi1; do echo \"  /nix/store/{H}-$d.drv\" >&2; done
             echo 'these {n} paths will be fetched (1 MiB download, 2 MiB unpacked):' >&2
             seq {n} | sed 's|.*|  /nix/store/{H}-p&|' >&2",
            n = MAX_PLAN_LINES + 10
        );
        let done = reading(Cmd::new("/bin/sh").args(["-c", &script]))
            .run_ok()
            .await
            .unwrap();
        let plan = lists(&done);
        assert_eq!(
            plan.build,
            Vec::<String>::new(),
            "the start was read after all"
        );
        assert_eq!(plan.fetch.len(), MAX_PLAN_LINES);
        assert_eq!(plan.unread_lines, 15);
        assert_eq!(plan.local_builds(), 0);
        for limit in [0, 3, 1000, u32::MAX] {
            let text = plan
                .over_limit(limit)
                .expect("an incomplete plan let through")
                .to_string();
            assert!(
                text.starts_with("refusing to build: cannot tell how many derivations"),
                "{text}"
            );
            assert!(
                text.contains(&format!("[build] max_local_builds = {limit}")),
                "{text}"
            );
            assert!(text.contains("printed 50015 lines"), "{text}");
            assert!(text.contains("hint: run `nix build --dry-run`"), "{text}");
        }
        assert!(plan.summary().contains("incomplete"), "{}", plan.summary());

        // Exactly as many lines as are read: complete, nothing refused for it.
        let script = format!("seq {MAX_PLAN_LINES} | sed 's|.*|  /nix/store/{H}-p&|' >&2");
        let done = reading(Cmd::new("/bin/sh").args(["-c", &script]))
            .run_ok()
            .await
            .unwrap();
        let plan = lists(&done);
        assert_eq!(plan.unread_lines, 0);
        assert_eq!(plan.over_limit(0), None);
    }

    #[test]
    fn paths_are_asked_about_in_bounded_batches() {
        let paths: Vec<String> = (0..10_000)
            .map(|i| format!("/nix/store/{H}-p{i}"))
            .collect();
        let got = batches(&paths, MAX_QUERY_ARGS_BYTES);
        assert!(got.len() > 1);
        assert_eq!(got.concat(), paths, "a path lost or reordered");
        for b in &got {
            let size: usize = b.iter().map(|p| p.len() + 1 + 8).sum();
            assert!(size <= MAX_QUERY_ARGS_BYTES, "{size}");
        }
        let huge = vec!["x".repeat(100), "y".into()];
        assert_eq!(batches(&huge, 10), [&huge[..1], &huge[1..]]);
        assert!(batches(&[], 10).is_empty());
    }

    fn signature_options(store: &str) -> Vec<String> {
        [
            "--option",
            "substituters",
            store,
            "--option",
            "trusted-public-keys",
            "k-1:g3dBb7o2hJxp4X/ZsIxP3ucMd0w+HxraL4DvAmfJjcA=",
            "--option",
            "require-sigs",
            "true",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// More paths than fit on one command line (about 2 MiB here), asked of a real nix
    /// and a real (empty) file cache: all are answered, so all count as unsigned.
    #[tokio::test(flavor = "current_thread")]
    async fn many_paths_are_all_checked_with_a_real_nix() {
        if !nix_here() {
            return;
        }
        let cache = tempfile::tempdir().unwrap();
        let store = format!("file://{}", cache.path().display());
        let fetch: Vec<String> = (0..50_000)
            .map(|i| format!("/nix/store/{H}-path-number-{i:06}"))
            .collect();
        assert!(fetch.iter().map(|p| p.len() + 1).sum::<usize>() > 2 << 20);
        let got = ask(&signature_options(&store), &fetch).await.unwrap();
        assert_eq!(got.len(), fetch.len());
    }

    /// A substituter that cannot be asked: the count is unknown, and a limit refuses
    /// (whatever it is), saying why and what to do; without a limit nothing is refused.
    #[tokio::test(flavor = "current_thread")]
    async fn an_unanswered_signature_check_fails_closed() {
        if !nix_here() {
            return;
        }
        let fetch = vec![format!("/nix/store/{H}-bash-5.2")];
        let why = ask(&signature_options("bogus://nowhere"), &fetch)
            .await
            .unwrap_err();
        assert!(
            why.starts_with("asking bogus://nowhere for the signatures of 1 paths: "),
            "{why}"
        );
        let plan = BuildPlan {
            fetch,
            unchecked: Some(why),
            ..BuildPlan::default()
        };
        assert_eq!(plan.local_builds(), 0);
        for limit in [0, 5, u32::MAX] {
            let text = plan
                .over_limit(limit)
                .expect("an unchecked plan let through")
                .to_string();
            assert!(
                text.starts_with(&format!(
                    "refusing to build: cannot tell how many derivations would be compiled on this machine \
                     ([build] max_local_builds = {limit}): 0 to build here, and whether the 1 paths to fetch"
                )),
                "{text}"
            );
            assert!(text.contains("asking bogus://nowhere"), "{text}");
            assert!(
                text.contains("hint: check that each substituter answers"),
                "{text}"
            );
        }
        assert!(plan
            .summary()
            .contains("signatures not checked: asking bogus://nowhere"));
    }

    /// [`untrusted`] as the plan asks it: nix's settings first, every substituter.
    async fn ask(options: &[String], fetch: &[String]) -> Result<Vec<String>, String> {
        let trust = settings(options).await?;
        assert!(trust.key_problems.is_empty(), "{:?}", trust.key_problems);
        untrusted(options, &trust, &trust.substituters, fetch).await
    }

    /// Whether `nix` can be run (HOMELAB_TEST_REQUIRE_ALL makes its absence a failure).
    fn nix_here() -> bool {
        let found = std::process::Command::new("nix")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(
                std::env::var_os("HOMELAB_TEST_REQUIRE_ALL").is_none(),
                "nix is required (HOMELAB_TEST_REQUIRE_ALL) but cannot be run"
            );
            eprintln!("SKIP: nix not found");
        }
        found
    }

    #[test]
    fn only_settings_are_passed_on() {
        let extra: Vec<String> = [
            "--option",
            "substituters",
            "http://x",
            "--keep-going",
            "--extra-substituters",
            "http://y?trusted=1",
            "--no-require-sigs",
            "--max-jobs",
            "2",
            "--option",
            "dangling",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            options(&extra),
            [
                "--option",
                "substituters",
                "http://x",
                "--extra-substituters",
                "http://y?trusted=1",
                "--no-require-sigs"
            ]
        );
        let dangling = ["--trusted-public-keys".to_string()];
        assert!(options(&dangling).is_empty());
    }

    /// The build's flags reach nix's settings as the build sees them (a real nix).
    #[tokio::test(flavor = "current_thread")]
    async fn settings_given_as_flags_are_the_builds() {
        if !nix_here() {
            return;
        }
        let extra: Vec<String> = [
            "--option",
            "substituters",
            "",
            "--extra-substituters",
            "file:///srv/c?trusted=1",
            "--no-require-sigs",
            "--max-jobs",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let trust = settings(&extra).await.unwrap();
        assert!(!trust.require_sigs);
        assert!(
            trust
                .substituters
                .iter()
                .any(|s| s.url == "file:///srv/c?trusted=1" && s.trusted),
            "{:?}",
            trust.substituters
        );
    }
}
