//! The bootloader's one-shot trial (issue 19): the next boot, and only that one, boots a
//! generation that has not yet booted and verified on this machine; any reset after that
//! boot started (a panic with `panic=N`, a watchdog, a power cut, a person) boots the
//! bootloader's default again, which only ever is the last verified generation.
//!
//! [`TrialBoot`] is the door; `uboot.rs` is the real one for U-Boot + extlinux (the Pi
//! image), configured by [`UBootSettings`]. The reboot side (`mod.rs`, `verify.rs`) arms a
//! trial instead of making an unverified generation the boot default, and promotes the
//! generation (profile + `switch-to-configuration boot`) only once `verify-boot` passed in
//! the trial boot.

use std::path::Path;

use crate::doors::Fut;
use crate::failure::Failure;

/// A bootloader's one-shot "boot this once" mechanism.
pub trait TrialBoot {
    /// What it is, for messages and status (e.g. the environment file it writes).
    fn describe(&self) -> String;
    /// Whether a trial can be armed on this machine now. `Err` says why not (a missing or
    /// damaged environment, no `fw_env.config`, `fw_setenv` absent or failing, the boot
    /// command not provisioned): then no reboot is tried and the deployment stays pending.
    fn ready(&self) -> Fut<'_, Result<(), Failure>>;
    /// Lays out a one-entry trial for `system` (a NixOS toplevel: `kernel`, `initrd`,
    /// `kernel-params`, `init`, `dtbs`) and arms the flag, in that order.
    fn arm<'a>(&'a self, system: &'a Path) -> Fut<'a, Result<(), Failure>>;
    /// Whether the flag is still set: no boot has consumed it yet.
    fn armed(&self) -> Fut<'_, Result<bool, Failure>>;
    /// Clears the flag, then removes the trial files. Idempotent.
    fn disarm(&self) -> Fut<'_, Result<(), Failure>>;
}

pub use crate::config::UBootSettings;
