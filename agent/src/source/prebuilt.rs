//! The prebuilt manifest branch in the agent's cache (issue 24): fetched with the head
//! (one fetch, two refspecs) into [`PREBUILT_REF`], and the fetched commit's manifest and
//! signature files read from it, each with a size cap, before anything else sees them.
//! What they mean is [`crate::prebuilt`]'s business; here they are bytes at paths.

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
