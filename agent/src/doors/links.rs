//! The Links door: what the machine's system links say, read by the reboot side
//! (`reboot/`): the booted system (`/run/booted-system`), the running one
//! (`/run/current-system`) and the system profile's generations (the boot default).
//! Readlinks, no process. The real one, [`SystemLinks`], reads the configured `[paths]`.

use std::path::{Path, PathBuf};

use crate::config::Paths;
use crate::system::{self, profile, profile::Generation};

pub trait Links {
    /// The system this boot booted, resolved.
    fn booted(&self) -> Option<PathBuf>;
    /// The system that runs now, resolved.
    fn current(&self) -> Option<PathBuf>;
    /// The profile's current generation: the boot default.
    fn default_generation(&self) -> Option<Generation>;
    /// The profile's generations, oldest first.
    fn generations(&self) -> Vec<Generation>;
    /// Whether running `system` needs a reboot from the booted one (kernel, initrd, …);
    /// `None` when either cannot be read.
    fn reboot_required(&self, system: &Path) -> Option<bool>;
}

/// The real links, at the configured paths.
pub struct SystemLinks {
    booted_system: PathBuf,
    current_system: PathBuf,
    profile: PathBuf,
}

impl SystemLinks {
    pub fn new(paths: &Paths) -> SystemLinks {
        SystemLinks {
            booted_system: paths.booted_system.clone(),
            current_system: paths.current_system.clone(),
            profile: paths.profile.clone(),
        }
    }
}

impl Links for SystemLinks {
    fn booted(&self) -> Option<PathBuf> {
        system::resolve(&self.booted_system)
    }
    fn current(&self) -> Option<PathBuf> {
        system::resolve(&self.current_system)
    }
    fn default_generation(&self) -> Option<Generation> {
        profile::current(&self.profile)
    }
    fn generations(&self) -> Vec<Generation> {
        profile::list(&self.profile)
    }
    fn reboot_required(&self, system: &Path) -> Option<bool> {
        system::reboot_required(&self.booted_system, system)
    }
}
