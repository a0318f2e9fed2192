//! The machine's side: the system profile and its generations ([`profile`]), and
//! switching the running system with `switch-to-configuration` ([`switch`]).

pub mod profile;
pub mod reach;
pub mod switch;

use std::path::{Path, PathBuf};

/// Where a link such as /run/current-system points, fully resolved; `None` if absent.
pub fn resolve(link: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(link).ok()
}

/// Kernel, initrd or kernel modules differ between the booted and the current system, as
/// NixOS's own auto-upgrade compares them. `None` when either system is unknown.
pub fn reboot_required(booted: &Path, current: &Path) -> Option<bool> {
    let (booted, current) = (resolve(booted)?, resolve(current)?);
    if booted == current {
        return Some(false);
    }
    let part = |root: &Path, name: &str| std::fs::canonicalize(root.join(name)).ok();
    Some(["kernel", "initrd", "kernel-modules"].iter().any(|name| {
        let (b, c) = (part(&booted, name), part(&current, name));
        // Compare contents when paths differ: a fake system keeps them as plain files.
        b != c
            && b.zip(c)
                .is_none_or(|(b, c)| std::fs::read(b).ok() != std::fs::read(c).ok())
    }))
}
