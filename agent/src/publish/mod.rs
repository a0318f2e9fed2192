//! `homelab-agent publish`: on a workstation or in CI, build the hosts' systems for one
//! commit, copy their closures to a binary cache, and publish a signed manifest
//! (`{commit, host → store path, built_at}`) on the repository's `homelab-prebuilt`
//! branch, where every agent finds it by commit and fetches instead of evaluating
//! (docs/prebuilt.md).
//!
//! The steps, top to bottom: resolve the commit; evaluate and build every host in ONE
//! `nix build` (nix/flake evaluation once); `nix copy --to` the cache; write and sign the
//! manifest; commit it onto the branch's tip and push (a push that lost a race with
//! another publisher fetches the new tip and commits again, at most three times).

pub mod branch;
pub mod build;
pub mod error;
pub mod sign;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use error::PublishError;

use crate::prebuilt::manifest::{Manifest, StorePath};

/// The branch the manifests live on unless `--branch` says otherwise (the agent's
/// `[prebuilt] branch` default).
pub use crate::prebuilt::manifest::DEFAULT_BRANCH;
/// How often a push that lost a race is tried again, each time on the new tip.
const PUSH_ATTEMPTS: usize = 3;

/// Who signs the manifest.
#[derive(Debug, Clone)]
pub enum Signer {
    /// `ssh-keygen -Y sign -f KEY` (a private key, or a public key whose private half is
    /// in ssh-agent): the agents check it against `[prebuilt] allowed_signers_file`.
    Ssh { key: PathBuf },
    /// `gpg --detach-sign --local-user ID`: the agents check it with `gpgv` against
    /// `[prebuilt] keyring_file`.
    Gpg { key_id: String },
}

/// What `publish` was asked to do.
#[derive(Debug, Clone)]
pub struct Request {
    /// A git work tree or bare repository holding the commit.
    pub repo: PathBuf,
    /// A revision (`HEAD`, a branch, a commit id); default `HEAD`.
    pub commit: Option<String>,
    /// Hosts (`nixosConfigurations` names); empty: all of them.
    pub hosts: Vec<String>,
    /// The binary cache, any store URL nix accepts (`file:///srv/cache?secret-key=…`,
    /// `s3://…`, `ssh://…`).
    pub to: String,
    pub signer: Signer,
    pub branch: String,
    /// The remote to push the branch to (a name or URL); `None`: only the local branch.
    pub remote: Option<String>,
    /// Deadline of the evaluation and build together, and again of the copy.
    pub timeout: Duration,
}

/// What was published.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Published {
    pub commit: String,
    pub hosts: BTreeMap<String, String>,
    /// The cache, shown without credentials or options.
    pub cache: String,
    pub branch: String,
    /// The branch's new commit.
    pub branch_commit: String,
    /// Where the branch was pushed (`None`: `--no-push`).
    pub pushed_to: Option<String>,
}

/// `--timeout`: held to `[build] timeout`'s range (1 s to 7 days), the same words.
pub fn parse_timeout(text: &str) -> Result<Duration, crate::failure::Invalid> {
    crate::config::bounds::parse_duration(&crate::config::bounds::BUILD_TIMEOUT, text)
}

/// Publishes one commit's systems. Nothing is pushed unless every host built and was
/// copied: a manifest never names a path the cache does not have.
pub async fn publish(req: &Request) -> Result<Published, PublishError> {
    if build::has_password(&req.to) {
        return Err(PublishError::SecretInUrl { flag: "--to" });
    }
    let remote_secret = req.remote.as_deref().and_then(|r| {
        crate::model::url::RemoteUrl::parse(r)
            .ok()
            .filter(|u| u.embedded_secret().is_some())
    });
    if remote_secret.is_some() {
        return Err(PublishError::SecretInUrl { flag: "--remote" });
    }
    let commit = branch::resolve(&req.repo, req.commit.as_deref())?;
    sign::check(&req.signer).await?;
    let flake = build::flake(&branch::directory(&req.repo)?, &commit);
    let hosts = if req.hosts.is_empty() {
        build::host_names(&flake, req.timeout).await?
    } else {
        req.hosts.clone()
    };
    let built = build::build(&flake, &hosts, req.timeout).await?;
    let paths: Vec<&str> = built.values().map(String::as_str).collect();
    build::copy(&req.to, &paths, req.timeout).await?;

    let mut systems = BTreeMap::new();
    for (host, path) in &built {
        let path = StorePath::parse(path).map_err(|detail| PublishError::Output {
            what: "nix build --json",
            detail: format!("{host}: {detail}"),
        })?;
        systems.insert(host.clone(), path);
    }
    let manifest = Manifest::new(&commit, jiff::Timestamp::now(), systems).map_err(|e| {
        PublishError::Output {
            what: "the manifest",
            detail: e.to_string(),
        }
    })?;
    let text = String::from_utf8(manifest.to_canonical()).expect("JSON is UTF-8");
    let signature = sign::sign(&req.signer, &text).await?;

    let mut attempt = 0;
    let (branch_commit, pushed_to) = loop {
        attempt += 1;
        let tip = match &req.remote {
            Some(remote) => branch::fetch_tip(&req.repo, remote, &req.branch, req.timeout).await?,
            None => branch::local_tip(&req.repo, &req.branch)?,
        };
        let new = branch::commit_manifest(&req.repo, tip.as_deref(), &commit, &text, &signature)?;
        branch::set_local(&req.repo, &req.branch, &new)?;
        let Some(remote) = &req.remote else {
            break (new, None);
        };
        match branch::push(&req.repo, remote, &new, &req.branch, req.timeout).await {
            Ok(()) => break (new, Some(remote.clone())),
            Err(PublishError::PushRejected { .. }) if attempt < PUSH_ATTEMPTS => continue,
            Err(e) => return Err(e),
        }
    };
    Ok(Published {
        commit,
        hosts: built,
        cache: build::shown_url(&req.to),
        branch: req.branch.clone(),
        branch_commit,
        pushed_to,
    })
}

/// The human summary `publish` prints.
pub fn summary(p: &Published) -> String {
    let mut out = format!(
        "published {} for {} host{}:\n",
        &p.commit[..12.min(p.commit.len())],
        p.hosts.len(),
        if p.hosts.len() == 1 { "" } else { "s" }
    );
    let width = p.hosts.keys().map(String::len).max().unwrap_or(0);
    for (host, path) in &p.hosts {
        out.push_str(&format!("  {host:<width$}  {path}\n"));
    }
    out.push_str(&format!("cache:    {}\n", p.cache));
    let short = &p.branch_commit[..12.min(p.branch_commit.len())];
    match &p.pushed_to {
        Some(remote) => out.push_str(&format!(
            "manifest: on branch {} ({short}), pushed to {}\n",
            p.branch,
            crate::text::escape_controls(remote, false)
        )),
        None => out.push_str(&format!(
            "manifest: on the local branch {} ({short}); not pushed (--no-push): `git push <remote> {}` publishes it\n",
            p.branch, p.branch
        )),
    }
    out
}
