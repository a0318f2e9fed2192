//! The git half of `publish`: the commit to publish, and the manifest branch. The branch
//! holds one manifest per published commit (`prebuilt/<commit>.json`) with its detached
//! signature beside it (`.sig` or `.asc`); each publish adds one commit on the remote's
//! tip, so nothing another publisher pushed is lost. Objects are written with libgit2;
//! fetch and push use the `git` command, so the publisher's own remotes, credential
//! helpers and ssh configuration apply.

use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::{ObjectType, Oid, Repository};

use super::sign::Signature;
use super::PublishError;
use crate::process::Cmd;

use crate::prebuilt::manifest::DIR;
/// Where the remote's tip is fetched to (never a branch the publisher uses).
const TIP_REF: &str = "refs/homelab-agent/publish-tip";
/// A listing of one ref is small; a push's porcelain report too.
const MAX_OUTPUT: u64 = 64 << 10;
/// fetch, push and ls-remote each get at most this long.
const GIT_TIMEOUT: Duration = Duration::from_secs(600);

fn open(repo: &Path) -> Result<Repository, PublishError> {
    Repository::open(repo).map_err(|source| PublishError::Revision {
        repo: repo.display().to_string(),
        rev: String::new(),
        source,
    })
}

fn git_failed(what: impl Into<String>, detail: impl std::fmt::Display) -> PublishError {
    PublishError::Git {
        what: what.into(),
        detail: detail.to_string(),
    }
}

/// The repository's absolute directory (its work tree, or the bare repository itself):
/// what the flake reference names, wherever publish was started.
pub fn directory(repo: &Path) -> Result<PathBuf, PublishError> {
    let r = open(repo)?;
    let dir = r.workdir().unwrap_or_else(|| r.path());
    std::fs::canonicalize(dir).map_err(|e| git_failed(format!("reading {}", dir.display()), e))
}

/// The full id of the commit `rev` names (default `HEAD`).
pub fn resolve(repo: &Path, rev: Option<&str>) -> Result<String, PublishError> {
    let rev = rev.unwrap_or("HEAD");
    let r = open(repo)?;
    let commit = r
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|source| PublishError::Revision {
            repo: repo.display().to_string(),
            rev: rev.to_string(),
            source,
        })?;
    Ok(commit.id().to_string())
}

/// A branch name, a remote name or URL: never something git would read as an option.
fn checked<'a>(what: &str, value: &'a str) -> Result<&'a str, PublishError> {
    if value.is_empty() || value.starts_with('-') || value.chars().any(char::is_control) {
        return Err(git_failed(
            format!("using the {what} {}", crate::text::quote(value)),
            "it is empty, starts with '-' or holds control characters",
        ));
    }
    Ok(value)
}

/// The local branch's tip (`--no-push`: the manifest goes on top of it).
pub fn local_tip(repo: &Path, branch: &str) -> Result<Option<String>, PublishError> {
    let r = open(repo)?;
    let found = match r.find_reference(&format!("refs/heads/{branch}")) {
        Ok(reference) => Ok(reference.target().map(|o| o.to_string())),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(git_failed(format!("reading the branch {branch}"), e)),
    };
    found
}

fn git(repo: &Path, timeout: Duration) -> Cmd {
    Cmd::new("git")
        .arg("-C")
        .arg(repo)
        .timeout(timeout.min(GIT_TIMEOUT))
        .capture_stdout()
        .max_stdout(MAX_OUTPUT)
        .keep_stderr_lines(20)
}

/// The remote branch's tip, fetched into the repository (`None`: no such branch yet).
pub async fn fetch_tip(
    repo: &Path,
    remote: &str,
    branch: &str,
    timeout: Duration,
) -> Result<Option<String>, PublishError> {
    let remote = checked("remote", remote)?;
    crate::config::validate_branch(branch).map_err(|m| git_failed("using the branch name", m))?;
    let wanted = format!("refs/heads/{branch}");
    let listed = git(repo, timeout)
        .args(["ls-remote", "--heads", remote, &wanted])
        .run_ok()
        .await
        .map_err(|e| git_failed(format!("listing {wanted} on {remote}"), e))?;
    let tip = listed.stdout.lines().find_map(|line| {
        let (oid, name) = line.split_once('\t')?;
        (name == wanted).then(|| oid.to_string())
    });
    let Some(tip) = tip else {
        return Ok(None);
    };
    git(repo, timeout)
        .args(["fetch", "--quiet", "--no-tags", remote])
        .arg(format!("+{wanted}:{TIP_REF}"))
        .run_ok()
        .await
        .map_err(|e| git_failed(format!("fetching {wanted} from {remote}"), e))?;
    Ok(Some(tip))
}

/// Commits the manifest and its signature onto `tip` (or as the branch's first commit);
/// returns the new commit's id. A signature of the other kind for the same commit is
/// removed, so the agent never checks a stale one.
pub fn commit_manifest(
    repo: &Path,
    tip: Option<&str>,
    commit: &str,
    manifest: &str,
    signature: &Signature,
) -> Result<String, PublishError> {
    let r = open(repo)?;
    let fail = |e: git2::Error| git_failed("writing the manifest commit", e);
    let parent = tip
        .map(|t| Oid::from_str(t).and_then(|o| r.find_commit(o)))
        .transpose()
        .map_err(fail)?;
    let root = parent
        .as_ref()
        .map(|p| p.tree())
        .transpose()
        .map_err(fail)?;
    let existing_dir = match &root {
        Some(tree) => match tree.get_name(DIR) {
            Some(entry) if entry.kind() == Some(ObjectType::Tree) => {
                Some(r.find_tree(entry.id()).map_err(fail)?)
            }
            _ => None,
        },
        None => None,
    };
    let mut dir = r.treebuilder(existing_dir.as_ref()).map_err(fail)?;
    let name = format!("{commit}.json");
    dir.insert(&name, r.blob(manifest.as_bytes()).map_err(fail)?, 0o100644)
        .map_err(fail)?;
    for ext in ["sig", "asc"] {
        let sig_name = format!("{name}.{ext}");
        if ext == signature.extension {
            let blob = r.blob(signature.text.as_bytes()).map_err(fail)?;
            dir.insert(&sig_name, blob, 0o100644).map_err(fail)?;
        } else if dir.get(&sig_name).map_err(fail)?.is_some() {
            dir.remove(&sig_name).map_err(fail)?;
        }
    }
    let dir_id = dir.write().map_err(fail)?;
    let mut top = r.treebuilder(root.as_ref()).map_err(fail)?;
    top.insert(DIR, dir_id, 0o040000).map_err(fail)?;
    let tree = r.find_tree(top.write().map_err(fail)?).map_err(fail)?;
    let who = r
        .signature()
        .or_else(|_| git2::Signature::now("homelab-agent publish", "publish@homelab-agent.invalid"))
        .map_err(fail)?;
    let message = format!("prebuilt systems for {commit}\n");
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let id = r
        .commit(None, &who, &who, &message, &tree, &parents)
        .map_err(fail)?;
    Ok(id.to_string())
}

/// Points the local branch at `new`. Refused when the branch is checked out (its work
/// tree would no longer match it).
pub fn set_local(repo: &Path, branch: &str, new: &str) -> Result<(), PublishError> {
    crate::config::validate_branch(branch).map_err(|m| git_failed("using the branch name", m))?;
    let r = open(repo)?;
    let name = format!("refs/heads/{branch}");
    if r.head()
        .ok()
        .and_then(|h| h.name().map(str::to_string))
        .as_deref()
        == Some(&name)
    {
        return Err(git_failed(
            format!("updating the branch {branch}"),
            "it is checked out here: switch to another branch first (publish never touches a work tree)",
        ));
    }
    let oid = Oid::from_str(new).map_err(|e| git_failed("updating the branch", e))?;
    r.reference(&name, oid, true, "homelab-agent publish")
        .map_err(|e| git_failed(format!("updating the branch {branch}"), e))?;
    Ok(())
}

/// Pushes `new` to the remote branch, never forced: a remote that moved meanwhile is
/// [`PublishError::PushRejected`] (the caller commits again on the new tip).
pub async fn push(
    repo: &Path,
    remote: &str,
    new: &str,
    branch: &str,
    timeout: Duration,
) -> Result<(), PublishError> {
    let remote = checked("remote", remote)?;
    let done = git(repo, timeout)
        .args(["push", "--porcelain", remote])
        .arg(format!("{new}:refs/heads/{branch}"))
        .run()
        .await
        .map_err(|e| git_failed(format!("pushing {branch} to {remote}"), e))?;
    if done.status.success() {
        return Ok(());
    }
    if let Some(reason) = rejected(&done.stdout) {
        return Err(PublishError::PushRejected {
            branch: branch.to_string(),
            remote: remote.to_string(),
            reason,
        });
    }
    Err(git_failed(
        format!("pushing {branch} to {remote}"),
        format!(
            "git push failed ({}):\n{}",
            done.status,
            done.stderr_tail.trim_end()
        ),
    ))
}

/// A ref the remote rejected, from `git push --porcelain` (flag `!`): its reason.
pub fn rejected(porcelain: &str) -> Option<String> {
    porcelain.lines().find_map(|line| {
        let mut fields = line.splitn(3, '\t');
        let flag = fields.next()?;
        let _refs = fields.next()?;
        (flag == "!").then(|| fields.next().unwrap_or("rejected").trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_with_commit(dir: &Path) -> (Repository, String) {
        let r = Repository::init(dir).unwrap();
        let sig = git2::Signature::now("t", "t@example.org").unwrap();
        let tree = r
            .find_tree(r.treebuilder(None).unwrap().write().unwrap())
            .unwrap();
        let id = r
            .commit(Some("HEAD"), &sig, &sig, "one", &tree, &[])
            .unwrap();
        drop(tree);
        (r, id.to_string())
    }

    fn files(r: &Repository, commit: &str) -> Vec<String> {
        let c = r.find_commit(Oid::from_str(commit).unwrap()).unwrap();
        let dir = c.tree().unwrap().get_path(Path::new(DIR)).unwrap();
        let tree = r.find_tree(dir.id()).unwrap();
        tree.iter().map(|e| e.name().unwrap().to_string()).collect()
    }

    #[test]
    fn manifests_accumulate_and_a_republish_replaces_the_signature_kind() {
        let t = tempfile::tempdir().unwrap();
        let (r, c1) = repo_with_commit(t.path());
        assert_eq!(resolve(t.path(), None).unwrap(), c1);
        let dir = directory(&t.path().join(".git")).unwrap();
        assert_eq!(
            dir,
            t.path().canonicalize().unwrap(),
            "the work tree, absolute"
        );
        let ssh = Signature {
            text: "ssh sig".into(),
            extension: "sig",
        };
        let gpg = Signature {
            text: "gpg sig".into(),
            extension: "asc",
        };
        let b1 = commit_manifest(t.path(), None, &c1, "{}", &ssh).unwrap();
        assert_eq!(
            files(&r, &b1),
            [format!("{c1}.json"), format!("{c1}.json.sig")]
        );
        let other = "0".repeat(40);
        let b2 = commit_manifest(t.path(), Some(&b1), &other, "{}", &ssh).unwrap();
        assert_eq!(files(&r, &b2).len(), 4, "the first manifest is kept");
        let b3 = commit_manifest(t.path(), Some(&b2), &c1, "{\"x\":1}", &gpg).unwrap();
        let names = files(&r, &b3);
        assert!(names.contains(&format!("{c1}.json.asc")), "{names:?}");
        assert!(
            !names.contains(&format!("{c1}.json.sig")),
            "stale ssh signature kept: {names:?}"
        );
        let parent = r
            .find_commit(Oid::from_str(&b3).unwrap())
            .unwrap()
            .parent_id(0)
            .unwrap();
        assert_eq!(parent.to_string(), b2);
    }

    #[test]
    fn the_checked_out_branch_is_never_moved() {
        let t = tempfile::tempdir().unwrap();
        let (r, c1) = repo_with_commit(t.path());
        let head = r.head().unwrap().shorthand().unwrap().to_string();
        let sig = Signature {
            text: "s".into(),
            extension: "sig",
        };
        let b1 = commit_manifest(t.path(), None, &c1, "{}", &sig).unwrap();
        let e = set_local(t.path(), &head, &b1).unwrap_err().to_string();
        assert!(e.contains("checked out here"), "{e}");
        set_local(t.path(), "homelab-prebuilt", &b1).unwrap();
        assert_eq!(
            local_tip(t.path(), "homelab-prebuilt").unwrap().as_deref(),
            Some(b1.as_str())
        );
        assert_eq!(local_tip(t.path(), "nothing-here").unwrap(), None);
    }

    #[test]
    fn an_unknown_revision_says_which_and_where() {
        let t = tempfile::tempdir().unwrap();
        repo_with_commit(t.path());
        let e = resolve(t.path(), Some("no-such-rev")).unwrap_err();
        assert!(e.to_string().contains("\"no-such-rev\""), "{e}");
        assert_eq!(e.kind(), crate::failure::Kind::Configuration);
    }

    #[test]
    fn porcelain_rejections_are_read_by_their_flag() {
        let out = "To /srv/git/homelab.git\n!\tabc:refs/heads/homelab-prebuilt\t[rejected] (fetch first)\nDone\n";
        assert_eq!(rejected(out).as_deref(), Some("[rejected] (fetch first)"));
        let ok =
            "To /srv/git/homelab.git\n*\tabc:refs/heads/homelab-prebuilt\t[new branch]\nDone\n";
        assert_eq!(rejected(ok), None);
    }

    #[tokio::test]
    async fn an_option_is_never_taken_for_a_remote() {
        let t = tempfile::tempdir().unwrap();
        repo_with_commit(t.path());
        let e = fetch_tip(
            t.path(),
            "--upload-pack=touch /tmp/x",
            "homelab-prebuilt",
            GIT_TIMEOUT,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("starts with '-'"), "{e}");
    }
}
