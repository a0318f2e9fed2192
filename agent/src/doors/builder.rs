//! The Builder door: `nix build` of a host's toplevel (the real one: [`super::Real`]
//! over agent/src/nix).

use std::path::PathBuf;

use crate::failure::Failure;

use super::Fut;

/// `nix build` of a host's toplevel (the flake `attribute`), rooted against garbage
/// collection.
pub trait Builder {
    fn build<'a>(
        &'a self,
        commit: &'a str,
        attribute: &'a str,
    ) -> Fut<'a, Result<PathBuf, Failure>>;
    /// How the last build's system was obtained, when the door knows more than "built
    /// here" (the prebuilt door: fetched, or built here and why). The default: nothing
    /// more to say.
    fn obtained(&self) -> Option<crate::state::obtained::Obtained> {
        None
    }
    /// Drops the candidate's GC root once the run is recorded.
    fn release(&self);
    /// Whether the build of `commit` should wait (a prebuilt manifest that may still
    /// come, `[prebuilt] wait`): `Some(what to say)` to wait. The default: never.
    fn hold(&self, commit: &str) -> Option<String> {
        let _ = commit;
        None
    }
    /// Before fetching `head`: whether the last fetch already found it waiting and the
    /// listing shows the manifest branch where that fetch saw it (`manifest_tip`), so a
    /// fetch would bring nothing new: `Some(what to say)` to keep waiting without one.
    /// The default: fetch.
    fn hold_unfetched(&self, head: &str, manifest_tip: Option<&str>) -> Option<String> {
        let _ = (head, manifest_tip);
        None
    }
}
