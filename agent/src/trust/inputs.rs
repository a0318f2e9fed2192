//! With signatures verified, the flake's inputs must be locked by the signed commit
//! itself (issue 23, item 2). A signature vouches for the commit's tree; an input that
//! the commit does not pin (no committed `flake.lock`, or a lock entry without a content
//! hash) is fetched as whatever its repository holds at build time, so an unsigned push
//! to an input repository would be deployed by the next signed commit, silently. Such a
//! head is refused, not warned about: a warning in a log nobody reads would deploy the
//! unsigned code all the same (docs/security.md).
//!
//! `flake.lock` is read from the fetched commit's tree in the agent's cache (git2, at
//! most [`MAX_LOCK`] bytes), never from a work tree, and every input in it must carry its
//! content hash (and a revision, for repositories). Then the lock nix itself resolves for
//! the commit (`nix flake metadata`, nothing written) must be that one: an input that
//! `flake.nix` declares but the lock lacks, or whose URL changed since it was locked,
//! would otherwise be resolved by nix at build time, unpinned. (`--no-update-lock-file`
//! cannot say so: nix checks it only where it would write the lock file, which it never
//! does for the agent's pinned `git+file://…?rev=` flake.)

use git2::{ObjectType, Oid, Repository};

use super::{short, Verdict};
use crate::failure::{Failure, Kind};

/// The largest `flake.lock` read (a large system's is some tens of KiB).
pub const MAX_LOCK: usize = 1 << 20;

/// Input types whose lock must also name a revision (a commit of a repository).
const REVISIONED: [&str; 6] = ["git", "github", "gitlab", "sourcehut", "hg", "mercurial"];

/// Whether every input of the flake at `oid` is locked by the commit's own `flake.lock`;
/// returns that lock.
pub fn check(repo: &Repository, oid: Oid) -> Result<serde_json::Value, Verdict> {
    let commit = oid.to_string();
    let refuse = |what: String| refusal(&commit, &what);
    let internal = |e: git2::Error| {
        Verdict::Failed(
            Failure::new(
                Kind::Environment,
                format!(
                    "reading flake.lock of {} in the git cache: {}",
                    short(&commit),
                    e.message()
                ),
            )
            .with_hint("the next run fetches again"),
        )
    };
    let tree = repo
        .find_commit(oid)
        .and_then(|c| c.tree())
        .map_err(internal)?;
    let Some(entry) = tree.get_name("flake.lock") else {
        return Err(refuse("has no flake.lock".into()));
    };
    if entry.kind() != Some(ObjectType::Blob) {
        return Err(refuse("has a flake.lock that is not a file".into()));
    }
    let blob = repo.find_blob(entry.id()).map_err(internal)?;
    if blob.size() > MAX_LOCK {
        return Err(refuse(format!(
            "has a flake.lock of {} bytes (more than {MAX_LOCK} are not read)",
            blob.size()
        )));
    }
    let text = String::from_utf8_lossy(blob.content());
    unlocked(&text).map_err(|why| refuse(format!("has a flake.lock that {why}")))
}

/// The refusal of `commit` for `what` (configuration: nothing is blamed on the commit).
fn refusal(commit: &str, what: &str) -> Verdict {
    Verdict::Failed(
        Failure::new(
            Kind::Configuration,
            format!(
                "commit {} {what}: with [source] verify on, every flake input must be locked by \
             the signed commit (an unlocked input deploys whatever its repository holds, signed \
             or not)",
                short(commit)
            ),
        )
        .with_hint(
            "run `nix flake lock` (or `nix flake update`), commit flake.lock \
             signed, and push",
        ),
    )
}

/// The committed lock against the one nix resolves for the commit ([`resolved`]): every
/// input nix uses must be in the committed lock with the same content hash. An input
/// `flake.nix` declares but the lock lacks (or whose URL changed since it was locked) is
/// one nix resolves by itself, unpinned.
pub fn matches_resolved(
    commit: &str,
    committed: &serde_json::Value,
    resolved: &serde_json::Value,
) -> Result<(), Verdict> {
    let nar = |lock: &serde_json::Value, name: &str| {
        lock.get("nodes")?
            .get(name)?
            .get("locked")?
            .get("narHash")?
            .as_str()
            .map(str::to_string)
    };
    let root = resolved
        .get("root")
        .and_then(|r| r.as_str())
        .unwrap_or("root");
    let Some(nodes) = resolved.get("nodes").and_then(|n| n.as_object()) else {
        return Ok(());
    };
    for name in nodes.keys().filter(|n| n.as_str() != root) {
        if nar(committed, name).is_none() || nar(committed, name) != nar(resolved, name) {
            return Err(refusal(
                commit,
                &format!(
                    "has a flake.lock that does not pin the input {} that flake.nix uses (nix \
                     would resolve it itself: the lock lacks it, or flake.nix changed it since)",
                    crate::text::quote(name)
                ),
            ));
        }
    }
    Ok(())
}

/// `nix flake metadata`'s lock of the commit ([`crate::nix::metadata`]); a failure
/// refuses nothing for good but lets nothing through: transient, checked again.
pub async fn resolved(cache: &std::path::Path, commit: &str) -> Result<serde_json::Value, Verdict> {
    crate::nix::metadata::resolved_lock(cache, commit)
        .await
        .map_err(|e| {
            Verdict::Failed(
                Failure::new(
                    Kind::Transient,
                    format!(
                        "checking that the inputs of {} are locked: {e}",
                        short(commit)
                    ),
                )
                .with_hint(
                    "the next run checks \
                     again; if flake.nix itself is broken, push a fix",
                ),
            )
        })
}

/// The lock, or why it is unusable; `Err` naming the first input it does not pin.
fn unlocked(text: &str) -> Result<serde_json::Value, String> {
    let lock: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("is not valid JSON ({e})"))?;
    let nodes = lock
        .get("nodes")
        .and_then(|n| n.as_object())
        .ok_or("has no \"nodes\"")?;
    let root = lock.get("root").and_then(|r| r.as_str()).unwrap_or("root");
    for (name, node) in nodes.iter().filter(|(name, _)| name.as_str() != root) {
        let shown = crate::text::quote(name);
        let Some(locked) = node.get("locked").and_then(|l| l.as_object()) else {
            return Err(format!(
                "does not lock the input {shown} (no \"locked\" entry)"
            ));
        };
        let field = |key: &str| {
            locked
                .get(key)
                .and_then(|v| v.as_str())
                .is_some_and(|v| !v.is_empty())
        };
        if !field("narHash") {
            return Err(format!(
                "does not lock the input {shown} (no \"narHash\" in its \"locked\" entry)"
            ));
        }
        let kind = locked.get("type").and_then(|t| t.as_str()).unwrap_or("");
        if REVISIONED.contains(&kind) && !field("rev") {
            return Err(format!(
                "does not lock the input {shown} (a {kind} input without \"rev\")"
            ));
        }
    }
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAR: &str = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    fn lock(node: &str) -> String {
        format!(
            "{{\"nodes\":{{\"nixpkgs\":{node},\"root\":{{\"inputs\":{{\"nixpkgs\":\"nixpkgs\"}}}}}},\"root\":\"root\",\"version\":7}}"
        )
    }

    #[test]
    fn every_input_must_carry_its_content_hash_and_revision() {
        let cases = [
            ("{\"nodes\":{\"root\":{}},\"root\":\"root\",\"version\":7}".to_string(), None),
            (
                lock(&format!("{{\"locked\":{{\"type\":\"github\",\"owner\":\"NixOS\",\"repo\":\"nixpkgs\",\"rev\":\"0123456789abcdef0123456789abcdef01234567\",\"narHash\":\"{NAR}\",\"lastModified\":1}},\"original\":{{\"type\":\"indirect\",\"id\":\"nixpkgs\"}}}}")),
                None,
            ),
            (
                lock(&format!("{{\"locked\":{{\"type\":\"path\",\"path\":\"/srv/x\",\"narHash\":\"{NAR}\"}}}}")),
                None,
            ),
            (
                lock("{\"original\":{\"type\":\"indirect\",\"id\":\"nixpkgs\"}}"),
                Some("does not lock the input \"nixpkgs\" (no \"locked\" entry)"),
            ),
            (
                lock("{\"locked\":{\"type\":\"git\",\"url\":\"file:///srv/in\",\"rev\":\"0123456789abcdef0123456789abcdef01234567\"}}"),
                Some("(no \"narHash\" in its \"locked\" entry)"),
            ),
            (
                lock(&format!("{{\"locked\":{{\"type\":\"git\",\"url\":\"file:///srv/in\",\"narHash\":\"{NAR}\"}}}}")),
                Some("(a git input without \"rev\")"),
            ),
            ("not json".to_string(), Some("is not valid JSON")),
            ("{\"version\":7}".to_string(), Some("has no \"nodes\"")),
        ];
        for (text, expected) in cases {
            match (unlocked(&text), expected) {
                (Ok(_), None) => {}
                (Err(e), Some(needle)) => assert!(e.contains(needle), "{text}: {e}"),
                (got, _) => panic!("{text}: {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn the_resolved_lock_must_be_the_committed_one() {
        let with = |nar: &str| -> serde_json::Value {
            serde_json::from_str(&lock(&format!(
                "{{\"locked\":{{\"type\":\"path\",\"path\":\"/x\",\"narHash\":\"{nar}\"}}}}"
            )))
            .unwrap()
        };
        let trivial: serde_json::Value =
            serde_json::from_str("{\"nodes\":{\"root\":{}},\"root\":\"root\",\"version\":7}")
                .unwrap();
        assert!(matches_resolved("c", &with(NAR), &with(NAR)).is_ok());
        assert!(matches_resolved("c", &trivial, &trivial).is_ok());
        // nix added an input the lock lacks, or resolved another content.
        for (committed, resolved) in [(&trivial, &with(NAR)), (&with(NAR), &with("sha256-B="))] {
            let Err(Verdict::Failed(f)) = matches_resolved("c", committed, resolved) else {
                panic!("passed: {committed} vs {resolved}")
            };
            assert_eq!(f.kind, Kind::Configuration);
            assert!(
                f.message
                    .contains("does not pin the input \"nixpkgs\" that flake.nix uses"),
                "{}",
                f.message
            );
        }
    }

    /// A real repository: the lock is read from the commit's tree, not a work tree.
    #[test]
    fn the_lock_is_read_from_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let sig = git2::Signature::now("t", "t@t").unwrap();
        let commit = |files: &[(&str, &str)]| {
            let mut b = repo.treebuilder(None).unwrap();
            for (name, text) in files {
                let blob = repo.blob(text.as_bytes()).unwrap();
                b.insert(name, blob, 0o100644).unwrap();
            }
            let tree = repo.find_tree(b.write().unwrap()).unwrap();
            repo.commit(None, &sig, &sig, "m", &tree, &[]).unwrap()
        };
        let bare = commit(&[("flake.nix", "{ outputs = _: {}; }")]);
        let e = check(&repo, bare).unwrap_err();
        let Verdict::Failed(f) = e else {
            panic!("not a failure")
        };
        assert_eq!(f.kind, Kind::Configuration);
        assert!(f.message.contains("has no flake.lock"), "{}", f.message);
        assert!(
            f.to_string().contains("hint: run `nix flake lock`"),
            "{}",
            f.message
        );
        let good = commit(&[(
            "flake.lock",
            "{\"nodes\":{\"root\":{}},\"root\":\"root\",\"version\":7}",
        )]);
        assert!(check(&repo, good).is_ok());
        let huge = "x".repeat(MAX_LOCK + 1);
        let big = commit(&[("flake.lock", &huge)]);
        let Err(Verdict::Failed(f)) = check(&repo, big) else {
            panic!("a huge lock passed")
        };
        assert!(
            f.message.contains("more than 1048576 are not read"),
            "{}",
            f.message
        );
    }
}
