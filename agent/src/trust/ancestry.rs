//! No silent downgrade: a head must descend from every commit this machine is known to
//! run (the floors). A floor that is not in the head's history (the cache was fetched
//! with the head's whole history) means the branch was force-pushed or rewritten.

use git2::{ErrorCode, Oid, Repository};

use super::{short, Reason, Refusal, Verdict};
use crate::failure::{Failure, Kind};

/// A commit the head must descend from, and where it was learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Floor {
    pub commit: String,
    /// E.g. "the deployed commit (state file)", "the running system's configurationRevision".
    pub from: String,
}

/// Refuses `head` unless it is, or descends from, every floor.
pub fn check(repo: &Repository, head: Oid, floors: &[Floor]) -> Result<(), Verdict> {
    if floors.is_empty() {
        return Ok(());
    }
    if repo.is_shallow() {
        return Err(Verdict::Failed(
            Failure::new(
                Kind::Environment,
                format!(
                    "the git cache {} is shallow: the ancestry of the head cannot be checked",
                    repo.path().display()
                ),
            )
            .with_hint("delete that directory; the next run fetches the whole history"),
        ));
    }
    for floor in floors {
        let Ok(floor_oid) = Oid::from_str(&floor.commit) else {
            continue;
        };
        if floor_oid == head {
            continue;
        }
        let refuse = |how: String| {
            Verdict::Refused(Refusal {
                reason: Reason::Downgrade,
                message: format!(
                    "head {} {how}: refused (no silent downgrade)",
                    short(&head.to_string())
                ),
                expected: format!("a descendant of {} ({})", floor.commit, floor.from),
            })
        };
        match repo.find_commit(floor_oid) {
            Ok(_) => {}
            Err(e) if e.code() == ErrorCode::NotFound => {
                return Err(refuse(format!(
                "does not contain {} ({}) in its history: the branch was force-pushed or rewritten",
                short(&floor.commit),
                floor.from
            )))
            }
            Err(e) => return Err(git_failure(&floor.commit, e)),
        }
        let descends = repo
            .graph_descendant_of(head, floor_oid)
            .map_err(|e| git_failure(&floor.commit, e))?;
        if descends {
            continue;
        }
        let older = repo
            .graph_descendant_of(floor_oid, head)
            .map_err(|e| git_failure(&floor.commit, e))?;
        return Err(refuse(if older {
            format!(
                "is older than {} ({}): the branch was reset back",
                short(&floor.commit),
                floor.from
            )
        } else {
            format!(
                "does not descend from {} ({}): the branch was force-pushed to other history",
                short(&floor.commit),
                floor.from
            )
        }));
    }
    Ok(())
}

fn git_failure(floor: &str, e: git2::Error) -> Verdict {
    Verdict::Failed(
        Failure::new(
            Kind::Environment,
            format!(
                "checking the ancestry of the head against {}: {}",
                short(floor),
                e.message()
            ),
        )
        .with_hint("the git cache may be damaged; delete it and the next run fetches again"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(repo: &Repository, parents: &[Oid], msg: &str) -> Oid {
        let sig = git2::Signature::now("t", "t@t").unwrap();
        let tree = repo
            .find_tree(repo.treebuilder(None).unwrap().write().unwrap())
            .unwrap();
        let parents: Vec<_> = parents
            .iter()
            .map(|p| repo.find_commit(*p).unwrap())
            .collect();
        let refs: Vec<_> = parents.iter().collect();
        repo.commit(None, &sig, &sig, msg, &tree, &refs).unwrap()
    }

    fn floor(c: Oid) -> Floor {
        Floor {
            commit: c.to_string(),
            from: "the state file".into(),
        }
    }

    fn reason(r: Result<(), Verdict>) -> Option<(Reason, String)> {
        match r {
            Ok(()) => None,
            Err(Verdict::Refused(r)) => Some((r.reason, r.message)),
            Err(Verdict::Failed(f)) => panic!("failed: {f}"),
        }
    }

    #[test]
    fn descendants_pass_and_older_or_other_history_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let a = commit(&repo, &[], "a");
        let b = commit(&repo, &[a], "b");
        let c = commit(&repo, &[b], "c");
        let other = commit(&repo, &[a], "other");
        assert!(reason(check(&repo, c, &[floor(b)])).is_none());
        assert!(reason(check(&repo, b, &[floor(b)])).is_none());
        assert!(reason(check(&repo, c, &[])).is_none());
        let (r, m) = reason(check(&repo, a, &[floor(b)])).unwrap();
        assert_eq!(r, Reason::Downgrade);
        assert!(m.contains("reset back"), "{m}");
        let (_, m) = reason(check(&repo, other, &[floor(c)])).unwrap();
        assert!(m.contains("force-pushed"), "{m}");
        let missing = Floor {
            commit: "1111111111111111111111111111111111111111".into(),
            from: "the running system".into(),
        };
        let (_, m) = reason(check(&repo, c, &[floor(b), missing])).unwrap();
        assert!(m.contains("does not contain 11111111"), "{m}");
    }
}
