//! The Source door: the user's repository (the real ones, git in this process or in
//! the daemon's git child: `git.rs`, over agent/src/source).

use crate::failure::{Failure, Kind};
use crate::source::{self, Fetched};

use super::Fut;

/// The user's repository.
pub trait Source {
    /// The branch head on the remote: one round trip, nothing written.
    fn head(&self) -> Fut<'_, Result<String, Failure>>;
    /// The branch head and, in the same round trip, the testing branch's when one is
    /// watched ([`source::Heads`]): the poll. The default (test doors) lists no testing
    /// branch, so the cycle asks [`Source::testing_head`] for it.
    fn heads(&self) -> Fut<'_, Result<source::Heads, Failure>> {
        Box::pin(async move {
            Ok(source::Heads {
                main: self.head().await?,
                testing: None,
                prebuilt: None,
            })
        })
    }
    /// Fetches the branch into the agent's cache; what was fetched is what gets built.
    fn fetch(&self) -> Fut<'_, Result<Fetched, Failure>>;
    /// The trust checks on a fetched commit (signature, descent from `floors`); see
    /// agent/src/trust. The default (test doors) trusts everything.
    fn verify<'a>(
        &'a self,
        commit: &'a str,
        floors: &'a [crate::trust::Floor],
    ) -> Fut<'a, Result<crate::trust::Checked, crate::trust::Verdict>> {
        let _ = (commit, floors);
        Box::pin(async { Ok(crate::trust::Checked::default()) })
    }
    /// The head of the testing branch (`[source] testing_branch`), `None` when none is
    /// watched or the remote has no such branch: a second round trip, only when
    /// [`Source::heads`] did not list it.
    fn testing_head(&self) -> Fut<'_, Result<Option<String>, Failure>> {
        Box::pin(async { Ok(None) })
    }
    /// `file` at a fetched `commit`, read from the agent's cache, at most `max` bytes;
    /// `None` when the commit has no such file (map mode's map: pivot/).
    fn read_file<'a>(
        &'a self,
        commit: &'a str,
        file: &'a str,
        max: usize,
    ) -> Fut<'a, Result<Option<String>, Failure>>;
    /// Fetches the testing branch into the agent's cache, like [`Source::fetch`].
    fn fetch_testing(&self) -> Fut<'_, Result<Fetched, Failure>> {
        Box::pin(async {
            Err(Failure::new(
                Kind::Configuration,
                "no [source] testing_branch is configured",
            ))
        })
    }
}

/// Map mode reads its map through the Source door.
impl<T: Source + ?Sized> crate::pivot::MapReader for T {
    fn read_file<'a>(
        &'a self,
        commit: &'a str,
        file: &'a str,
        max: usize,
    ) -> Fut<'a, Result<Option<String>, Failure>> {
        Source::read_file(self, commit, file, max)
    }
}
