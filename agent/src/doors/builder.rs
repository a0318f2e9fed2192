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
    /// Drops the candidate's GC root once the run is recorded.
    fn release(&self);
}
