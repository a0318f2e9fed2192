//! A file of a fetched commit, read from the agent's cache (map mode's `machines.toml`):
//! bounded, a regular file only. Made in this process or, for the daemon, in its git
//! child (child.rs), as the Source door's implementation decides (doors/git.rs).

use std::path::Path;

use crate::failure::{Failure, Kind};
use crate::model::commit::short;

/// `file` at `commit` in the agent's cache, as text of at most `max` bytes; `None` when
/// the commit has no such file. A symlink, a directory, a larger file or one that is not
/// UTF-8 is the repository's configuration error; a cache that cannot be read, this
/// machine's.
pub fn read(cache: &Path, commit: &str, file: &str, max: usize) -> Result<Option<String>, Failure> {
    let env = |what: &str, e: git2::Error| {
        Failure::new(
            Kind::Environment,
            format!(
                "reading {file} at {} from {}: {what}: {}",
                short(commit),
                cache.display(),
                e.message()
            ),
        )
    };
    let config = |m: String| Failure::new(Kind::Configuration, m);
    let repo = git2::Repository::open_bare(cache).map_err(|e| env("opening the cache", e))?;
    let oid = git2::Oid::from_str(commit).map_err(|e| env("parsing the commit id", e))?;
    let tree = repo
        .find_commit(oid)
        .and_then(|c| c.tree())
        .map_err(|e| env("finding the commit", e))?;
    let entry = match tree.get_path(Path::new(file)) {
        Ok(entry) => entry,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(env("looking up the file", e)),
    };
    if entry.kind() != Some(git2::ObjectType::Blob) || entry.filemode() == 0o120000 {
        return Err(config(format!(
            "{file} at {} is not a regular file\nhint: make {file} a plain file in the repository",
            short(commit)
        )));
    }
    let object = entry
        .to_object(&repo)
        .map_err(|e| env("reading the file", e))?;
    let blob = object
        .as_blob()
        .ok_or_else(|| config(format!("{file} at {} is not a file", short(commit))))?;
    if blob.size() > max {
        return Err(config(format!(
            "{file} at {} is {} bytes: at most {} are read\nhint: one `identity = \"host\"` line per machine is a few bytes each",
            short(commit),
            blob.size(),
            max
        )));
    }
    String::from_utf8(blob.content().to_vec())
        .map(Some)
        .map_err(|_| config(format!("{file} at {} is not UTF-8 text", short(commit))))
}
