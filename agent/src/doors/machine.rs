//! The Machine door: the live system, the profile and `switch-to-configuration` (the
//! real one: [`super::Real`] over agent/src/system).

use std::path::{Path, PathBuf};

use crate::failure::Failure;
use crate::system::{self, profile::Generation, switch::Action};

use super::Fut;

/// The machine: its live system, its profile, and `switch-to-configuration`.
pub trait Machine {
    /// What runs now (`/run/current-system`), resolved. A readlink, no process.
    fn current_system(&self) -> Option<PathBuf>;
    /// The profile's current generation (the boot default). Readlinks, no process.
    fn profile(&self) -> Option<Generation>;
    /// The newest generation before the current one (what an operator rollback targets).
    fn previous_generation(&self) -> Option<Generation>;
    /// What a candidate system would lose of the agent and sshd (the orphan guard,
    /// system/reach.rs): read from the toplevel's files (existence only, no process).
    fn lost(&self, system: &Path) -> Vec<system::reach::Lost> {
        system::reach::lost(system)
    }
    /// Makes `system` the profile's current generation; returns its number.
    fn set_profile<'a>(&'a self, system: &'a Path) -> Fut<'a, Result<u32, Failure>>;
    /// `system/bin/switch-to-configuration action`, tagged with `activation` so that a
    /// later run can find it if this one is killed while it runs.
    fn switch<'a>(
        &'a self,
        system: &'a Path,
        action: Action,
        activation: &'a str,
    ) -> Fut<'a, Result<(), Failure>>;
    /// An activation tagged `activation` that may have outlived a killed run: waits for it
    /// to end (up to a grace period), then stops it. Returns once none is running.
    fn settle_activation<'a>(&'a self, activation: &'a str) -> Fut<'a, Result<(), Failure>>;
}
