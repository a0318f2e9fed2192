//! The prebuilt manifest branch in the agent's cache (issue 24): fetched with the head
//! (one fetch, two refspecs) into [`PREBUILT_REF`], and the fetched commit's manifest and
//! signature files read from it, each with a size cap, before anything else sees them.
//! What they mean is the prebuilt module's business; here they are bytes at paths.

use std::path::Path;

use git2::{ObjectType, Repository};
use serde::{Deserialize, Serialize};

/// The ref in the cache that holds the manifest branch (kept by [`super::cache::prune`]).
pub const PREBUILT_REF: &str = "refs/heads/homelab-agent/prebuilt";
/// The directory on the branch.
pub const DIR: &str = "prebuilt";
/// The most a manifest file may weigh (a thousand hosts fit in a tenth of it).
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;
/// The most a signature file may weigh (an ssh signature is under 1 KiB, an OpenPGP one a
/// few KiB).
pub const MAX_SIGNATURE_BYTES: usize = 64 * 1024;

/// `prebuilt/<commit>.json`, the manifest's path on the branch.
pub fn manifest_path(commit: &str) -> String {
    format!("{DIR}/{commit}.json")
}

/// `prebuilt/<commit>.json.sig`, its ssh signature.
pub fn ssh_signature_path(commit: &str) -> String {
    format!("{DIR}/{commit}.json.sig")
}

/// `prebuilt/<commit>.json.asc`, its OpenPGP signature.
pub fn gpg_signature_path(commit: &str) -> String {
    format!("{DIR}/{commit}.json.asc")
}

/// What the manifest branch holds for one commit, as the fetch found it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PrebuiltFiles {
    /// The commit the files are for.
    pub commit: String,
    /// The manifest branch's tip; `None`: the remote has no such branch.
    pub branch_tip: Option<String>,
    pub manifest: Option<String>,
    pub ssh_signature: Option<String>,
    pub gpg_signature: Option<String>,
    /// A file that is there but cannot be used (too large, not text, not a file).
    pub problem: Option<String>,
}

/// Reads `commit`'s files from [`PREBUILT_REF`] in `repo` (no ref: the branch is not on
/// the remote, and nothing is found).
pub fn read(repo: &Repository, commit: &str) -> PrebuiltFiles {
    let mut files = PrebuiltFiles {
        commit: commit.to_string(),
        ..PrebuiltFiles::default()
    };
    let Ok(tip) = repo.refname_to_id(PREBUILT_REF) else {
        return files;
    };
    files.branch_tip = Some(tip.to_string());
    let tree = match repo.find_commit(tip).and_then(|c| c.tree()) {
        Ok(tree) => tree,
        Err(e) => {
            files.problem = Some(format!(
                "the manifest branch's tip {tip} is not a readable commit: {}",
                e.message()
            ));
            return files;
        }
    };
    let mut read_one = |path: String, max: usize| -> Option<String> {
        let entry = tree.get_path(Path::new(&path)).ok()?;
        let problem = match blob_text(repo, &entry, max) {
            Ok(text) => return Some(text),
            Err(problem) => problem,
        };
        files.problem.get_or_insert(format!("{path}: {problem}"));
        None
    };
    let manifest = read_one(manifest_path(commit), MAX_MANIFEST_BYTES);
    let ssh = read_one(ssh_signature_path(commit), MAX_SIGNATURE_BYTES);
    let gpg = read_one(gpg_signature_path(commit), MAX_SIGNATURE_BYTES);
    files.manifest = manifest;
    files.ssh_signature = ssh;
    files.gpg_signature = gpg;
    files
}

/// A blob's text, its size read from the object's header first: a huge file is never
/// loaded.
fn blob_text(repo: &Repository, entry: &git2::TreeEntry, max: usize) -> Result<String, String> {
    if entry.kind() != Some(ObjectType::Blob) {
        return Err("not a file".into());
    }
    let odb = repo.odb().map_err(|e| e.message().to_string())?;
    let (size, _) = odb
        .read_header(entry.id())
        .map_err(|e| e.message().to_string())?;
    if size > max {
        return Err(format!("{size} bytes, more than the {max} allowed"));
    }
    let blob = repo
        .find_blob(entry.id())
        .map_err(|e| e.message().to_string())?;
    String::from_utf8(blob.content().to_vec())
        .map_err(|e| format!("not UTF-8 text (at byte {})", e.utf8_error().valid_up_to()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "3f2a9c1e0b8d7a6f5e4d3c2b1a0f9e8d7c6b5a49";

    /// A bare repository whose [`PREBUILT_REF`] holds `prebuilt/` with `files` (name,
    /// bytes; `None`: a directory).
    fn repo_with(files: &[(String, Option<Vec<u8>>)]) -> (tempfile::TempDir, Repository) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        build(&repo, files);
        (dir, repo)
    }

    fn build(repo: &Repository, files: &[(String, Option<Vec<u8>>)]) {
        let mut sub = repo.treebuilder(None).unwrap();
        for (name, bytes) in files {
            match bytes {
                Some(b) => {
                    let blob = repo.blob(b).unwrap();
                    sub.insert(name, blob, 0o100644).unwrap();
                }
                None => {
                    let mut inner = repo.treebuilder(None).unwrap();
                    inner
                        .insert("x", repo.blob(b"x").unwrap(), 0o100644)
                        .unwrap();
                    sub.insert(name, inner.write().unwrap(), 0o040000).unwrap();
                }
            }
        }
        let sub = sub.write().unwrap();
        let mut root = repo.treebuilder(None).unwrap();
        root.insert(DIR, sub, 0o040000).unwrap();
        let tree = repo.find_tree(root.write().unwrap()).unwrap();
        let sig = git2::Signature::now("ci", "ci@example.org").unwrap();
        repo.commit(Some(PREBUILT_REF), &sig, &sig, "manifests", &tree, &[])
            .unwrap();
    }

    #[test]
    fn the_commits_files_are_read_with_caps() {
        let (_d, repo) = repo_with(&[
            (format!("{C}.json"), Some(b"{\"format\": 1}\n".to_vec())),
            (
                format!("{C}.json.sig"),
                Some(b"-----BEGIN SSH SIGNATURE-----\n".to_vec()),
            ),
            ("other.json".into(), Some(b"{}".to_vec())),
        ]);
        let f = read(&repo, C);
        assert_eq!(f.commit, C);
        assert!(f.branch_tip.is_some());
        assert_eq!(f.manifest.as_deref(), Some("{\"format\": 1}\n"));
        assert_eq!(
            f.ssh_signature.as_deref(),
            Some("-----BEGIN SSH SIGNATURE-----\n")
        );
        assert_eq!(f.gpg_signature, None);
        assert_eq!(f.problem, None);
        // Another commit: the branch is there, its files are not.
        let other = read(&repo, &"0".repeat(40));
        assert!(other.branch_tip.is_some() && other.manifest.is_none() && other.problem.is_none());
    }

    #[test]
    fn files_too_large_binary_or_not_files_are_problems_not_content() {
        let (_d, repo) = repo_with(&[
            (
                format!("{C}.json"),
                Some(vec![b' '; MAX_MANIFEST_BYTES + 1]),
            ),
            (format!("{C}.json.sig"), Some(vec![0xff, 0xfe])),
            (format!("{C}.json.asc"), None),
        ]);
        let f = read(&repo, C);
        assert_eq!(f.manifest, None);
        assert_eq!(f.ssh_signature, None);
        assert_eq!(f.gpg_signature, None);
        // The first problem is kept, naming the file.
        assert_eq!(
            f.problem.as_deref(),
            Some(format!("prebuilt/{C}.json: 262145 bytes, more than the 262144 allowed").as_str())
        );
        let (_d, repo) = repo_with(&[(format!("{C}.json.sig"), Some(vec![b'a', 0xff]))]);
        assert_eq!(
            read(&repo, C).problem.as_deref(),
            Some(format!("prebuilt/{C}.json.sig: not UTF-8 text (at byte 1)").as_str())
        );
        let (_d, repo) = repo_with(&[(format!("{C}.json.asc"), None)]);
        assert_eq!(
            read(&repo, C).problem.as_deref(),
            Some(format!("prebuilt/{C}.json.asc: not a file").as_str())
        );
    }

    #[test]
    fn no_branch_is_nothing_found() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        assert_eq!(
            read(&repo, C),
            PrebuiltFiles {
                commit: C.into(),
                ..PrebuiltFiles::default()
            }
        );
    }
}
