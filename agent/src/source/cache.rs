//! The agent's own bare git cache (`<state_dir>/cache.git`): opened or (re)created,
//! checked for a writable disk with typed OS errors, and kept bounded.
//!
//! Bound: after every fetch only [`CANDIDATE_REF`] is kept (and [`PREBUILT_REF`], the
//! prebuilt manifest branch, when fetched); when the cache holds more
//! than [`MAX_PACKS`] pack files or [`MAX_LOOSE`] loose objects, everything reachable from
//! those refs is written into one new pack and every other pack and loose object is
//! deleted. So the cache holds at most the branch's history plus [`MAX_PACKS`] small
//! packs, however many commits it has seen (each fetch adds about one pack).

use std::io::Write;
use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

use super::git::CANDIDATE_REF;
use super::prebuilt::PREBUILT_REF;

/// More pack files than this triggers a repack.
pub const MAX_PACKS: usize = 32;
/// More loose objects than this triggers a repack.
pub const MAX_LOOSE: usize = 2000;
/// Less free space than this on the cache's filesystem is "disk full" before we start.
pub const MIN_FREE_BYTES: u64 = 1 << 20;

/// Opens the bare cache, creating it on first use, and recreating it when it is not a
/// usable repository (it only ever holds copies of remote data).
pub fn open(path: &Path) -> Result<Repository, CacheError> {
    std::fs::create_dir_all(path).map_err(|e| CacheError::Io("creating", e))?;
    private(path).map_err(|e| CacheError::Io("making private", e))?;
    if let Ok(repo) = Repository::open_bare(path) {
        return Ok(repo);
    }
    clear(path).map_err(|e| CacheError::Io("resetting", e))?;
    Repository::init_bare(path).map_err(CacheError::Git)
}

/// The cache is a copy of a repository that may be private: root only (0700), while the
/// state directory around it is readable by every user, for `status`. Changed only when
/// it differs, so an unchanged cache is not written to.
fn private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    if mode != 0o700 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

#[derive(Debug)]
pub enum CacheError {
    Io(&'static str, std::io::Error),
    Git(git2::Error),
}

/// Whether the cache's filesystem can take a write: read-only and (nearly) full disks
/// from `statvfs`, permissions and the rest from a real small write. The error carries
/// the OS error code, so [`crate::failure::io_kind`] classifies it.
pub fn probe(path: &Path) -> Result<(), std::io::Error> {
    let dir = if path.is_dir() {
        path
    } else {
        path.parent().unwrap_or(Path::new("/"))
    };
    if let Some(e) = crate::free_space::check(dir, MIN_FREE_BYTES)? {
        return Err(e.into());
    }
    let probe = dir.join(".homelab-agent-probe");
    let result = (|| {
        let mut f = std::fs::File::create(&probe)?;
        f.write_all(&[0u8; 4096])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&probe);
    result
}

/// Removes everything inside `dir` (the directory itself may be a mount point).
fn clear(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if std::fs::symlink_metadata(&path)?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Removes the lock files (`*.lock`: refs, `packed-refs`, `config`, `HEAD`) a killed
/// fetch left in the cache, and says how many. Only ever called under the agent's run
/// lock, the one writer of this cache, so every lock file found is stale; left there,
/// libgit2 refuses every later fetch ("failed to lock file ... for writing").
pub fn clear_stale_locks(cache: &Path) -> usize {
    fn walk(dir: &Path, depth: usize, removed: &mut usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                // objects/ holds no lock files, and is the large part of the cache.
                if depth < 8 && entry.file_name() != "objects" {
                    walk(&path, depth + 1, removed);
                }
            } else if path.extension().is_some_and(|e| e == "lock")
                && std::fs::remove_file(&path).is_ok()
            {
                *removed += 1;
            }
        }
    }
    let mut removed = 0;
    walk(cache, 0, &mut removed);
    removed
}

/// What [`prune`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub refs_deleted: usize,
    pub repacked: bool,
}

/// Keeps the cache bounded: drops every ref but ours, and repacks when packs or loose
/// objects pass their bound. Errors leave the cache usable (the new pack is complete
/// before anything old is deleted).
pub fn prune(repo: &Repository) -> Result<Pruned, git2::Error> {
    let mut pruned = Pruned::default();
    let names: Vec<String> = repo
        .references()?
        .filter_map(|r| r.ok()?.name().map(str::to_string))
        .filter(|n| n != CANDIDATE_REF && n != PREBUILT_REF)
        .collect();
    for name in names {
        if let Ok(mut r) = repo.find_reference(&name) {
            r.delete()?;
            pruned.refs_deleted += 1;
        }
    }
    let objects = repo.path().join("objects");
    let (packs, loose) = count_objects(&objects);
    if packs > MAX_PACKS || loose > MAX_LOOSE {
        let mut tips = vec![repo.refname_to_id(CANDIDATE_REF)?];
        tips.extend(repo.refname_to_id(PREBUILT_REF).ok());
        repack(repo, &tips, &objects)?;
        pruned.repacked = true;
    }
    Ok(pruned)
}

/// Pack files and loose objects under `objects/`.
pub fn count_objects(objects: &Path) -> (usize, usize) {
    let packs = std::fs::read_dir(objects.join("pack"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
                .count()
        })
        .unwrap_or(0);
    let loose = loose_dirs(objects)
        .iter()
        .map(|d| std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0))
        .sum();
    (packs, loose)
}

fn loose_dirs(objects: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(objects)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.len() == 2 && n.chars().all(|c| c.is_ascii_hexdigit()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Everything reachable from `head` into one new pack, then every other pack and loose
/// object deleted.
fn repack(repo: &Repository, tips: &[Oid], objects: &Path) -> Result<(), git2::Error> {
    let mut walk = repo.revwalk()?;
    for tip in tips {
        walk.push(*tip)?;
    }
    let mut builder = repo.packbuilder()?;
    builder.insert_walk(&mut walk)?;
    let pack_dir = objects.join("pack");
    builder.write(&pack_dir, 0o444)?;
    let keep = builder
        .name()
        .map(|n| format!("pack-{n}"))
        .ok_or_else(|| git2::Error::from_str("the new pack has no name"))?;
    if !pack_dir.join(format!("{keep}.pack")).is_file()
        || !pack_dir.join(format!("{keep}.idx")).is_file()
    {
        return Err(git2::Error::from_str("the new pack was not written"));
    }
    for entry in std::fs::read_dir(&pack_dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if stem.starts_with("pack-") && stem != keep {
            let _ = std::fs::remove_file(&path);
        }
    }
    for dir in loose_dirs(objects) {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn stale_lock_files_of_a_killed_fetch_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache.git");
        open(&cache).unwrap();
        let refs = cache.join("refs/heads/homelab-agent");
        std::fs::create_dir_all(&refs).unwrap();
        std::fs::write(refs.join("candidate.lock"), "").unwrap();
        std::fs::write(cache.join("packed-refs.lock"), "").unwrap();
        std::fs::write(cache.join("objects/keep.lock"), "").unwrap();
        assert_eq!(clear_stale_locks(&cache), 2);
        assert!(!refs.join("candidate.lock").exists());
        assert!(!cache.join("packed-refs.lock").exists());
        // objects/ is not walked (no lock files there; the big part of the cache).
        assert!(cache.join("objects/keep.lock").exists());
        assert!(Repository::open_bare(&cache).is_ok());
        assert_eq!(clear_stale_locks(&cache), 0);
    }

    fn git(dir: &Path, args: &[&str]) {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    }

    #[test]
    fn a_damaged_cache_is_recreated_and_an_empty_dir_initialised() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache.git");
        std::fs::create_dir_all(&cache).unwrap();
        open(&cache).unwrap();
        std::fs::write(cache.join("HEAD"), "garbage").unwrap();
        std::fs::remove_dir_all(cache.join("objects")).unwrap();
        let repo = open(&cache).unwrap();
        assert!(repo.is_bare());
    }

    #[test]
    fn probe_passes_on_a_writable_dir_and_fails_on_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        probe(dir.path()).unwrap();
        assert!(!dir.path().join(".homelab-agent-probe").exists());
        let err = probe(&dir.path().join("no/such")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }

    /// Thousands of commits, simulated by fetching after each of many commits: the
    /// cache's pack count and loose objects stay under their bounds, only our ref is left,
    /// and the whole history is still there.
    #[test]
    fn the_cache_stays_bounded_over_many_fetches() {
        if Command::new("git").arg("--version").output().is_err() {
            panic!("git is required for this test");
        }
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        let cache = dir.path().join("cache.git");
        let url = format!("file://{}", work.display());
        let commits = MAX_PACKS * 2 + 5;
        let mut repacks = 0;
        for i in 0..commits {
            std::fs::write(work.join("f"), format!("{i}\n")).unwrap();
            git(&work, &["add", "f"]);
            git(&work, &["commit", "-q", "-m", &format!("c{i}")]);
            // Other refs the server has must not accumulate in the cache.
            git(&work, &["tag", "-f", &format!("t{i}")]);
            let repo = open(&cache).unwrap();
            let mut remote = repo.remote_anonymous(&url).unwrap();
            remote
                .fetch(
                    &[
                        &format!("+refs/heads/main:{CANDIDATE_REF}"),
                        "+refs/tags/*:refs/tags/*",
                    ],
                    None,
                    None,
                )
                .unwrap();
            drop(remote);
            let pruned = prune(&repo).unwrap();
            assert!(pruned.refs_deleted >= 1, "{pruned:?}");
            repacks += pruned.repacked as usize;
            let (packs, loose) = count_objects(&cache.join("objects"));
            assert!(packs <= MAX_PACKS + 1, "{packs} packs after {i} fetches");
            assert!(loose <= MAX_LOOSE, "{loose} loose objects");
        }
        assert!(repacks >= 1, "never repacked");
        let repo = open(&cache).unwrap();
        let refs: Vec<String> = repo
            .references()
            .unwrap()
            .flatten()
            .filter_map(|r| r.name().map(str::to_string))
            .collect();
        assert_eq!(refs, vec![CANDIDATE_REF.to_string()]);
        let mut walk = repo.revwalk().unwrap();
        walk.push(repo.refname_to_id(CANDIDATE_REF).unwrap())
            .unwrap();
        let mut n = 0;
        for oid in walk {
            let commit = repo.find_commit(oid.unwrap()).unwrap();
            commit.tree().unwrap().get_name("f").unwrap();
            n += 1;
        }
        assert_eq!(n, commits, "history lost by the repack");
        assert_sound(&cache);
    }

    /// git itself (what nix uses to read the cache) finds the cache sound.
    fn assert_sound(cache: &Path) {
        let fsck = Command::new("git")
            .arg("--git-dir")
            .arg(cache)
            .args(["fsck", "--strict", "--no-dangling"])
            .output()
            .unwrap();
        assert!(fsck.status.success(), "git fsck: {fsck:?}");
    }

    /// The prebuilt manifest branch (issue 24) is kept like the head: its ref survives the
    /// pruning and its objects the repack, so the next fetch sends only what is new.
    #[test]
    fn the_manifest_branch_survives_pruning_and_repacks() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", "m"]);
        git(&work, &["checkout", "-q", "--orphan", "homelab-prebuilt"]);
        std::fs::write(work.join("manifest"), "m\n").unwrap();
        git(&work, &["add", "manifest"]);
        git(&work, &["commit", "-q", "-m", "p"]);
        let cache = dir.path().join("cache.git");
        let url = format!("file://{}", work.display());
        let mut repacked = false;
        for i in 0..(MAX_PACKS + 3) {
            std::fs::write(work.join("manifest"), format!("{i}\n")).unwrap();
            git(&work, &["commit", "-q", "-am", &format!("p{i}")]);
            let repo = open(&cache).unwrap();
            let mut remote = repo.remote_anonymous(&url).unwrap();
            remote
                .fetch(
                    &[
                        &format!("+refs/heads/main:{CANDIDATE_REF}"),
                        &format!("+refs/heads/homelab-prebuilt:{PREBUILT_REF}"),
                    ],
                    None,
                    None,
                )
                .unwrap();
            drop(remote);
            repacked |= prune(&repo).unwrap().repacked;
        }
        assert!(repacked, "never repacked");
        let repo = open(&cache).unwrap();
        let tip = repo.refname_to_id(PREBUILT_REF).unwrap();
        let blob = repo
            .find_commit(tip)
            .unwrap()
            .tree()
            .unwrap()
            .get_name("manifest")
            .unwrap()
            .id();
        assert_eq!(
            repo.find_blob(blob).unwrap().content(),
            format!("{}\n", MAX_PACKS + 2).as_bytes()
        );
        assert_sound(&cache);
    }

    #[test]
    fn the_cache_is_root_only_in_a_readable_state_dir() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache.git");
        std::fs::create_dir(&cache).unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
        open(&cache).unwrap();
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{mode:o}");
        // Already private: not changed (no write to an unchanged cache).
        let before = std::fs::metadata(&cache).unwrap();
        open(&cache).unwrap();
        let after = std::fs::metadata(&cache).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(before.ctime_nsec(), after.ctime_nsec());
    }
}
