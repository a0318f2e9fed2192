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

/// What a boot loads from a NixOS toplevel: a difference in any of these needs a reboot
/// (NixOS's auto-upgrade compares the first three; the kernel command line and the device
/// tree are read by the bootloader too).
pub const BOOT_PARTS: [&str; 5] = [
    "kernel",
    "initrd",
    "kernel-modules",
    "kernel-params",
    "dtbs",
];

/// Whether `current` boots differently from `booted` ([`BOOT_PARTS`]). `None` when either
/// system is unknown.
pub fn reboot_required(booted: &Path, current: &Path) -> Option<bool> {
    let (booted, current) = (resolve(booted)?, resolve(current)?);
    if booted == current {
        return Some(false);
    }
    Some(
        BOOT_PARTS
            .iter()
            .any(|name| part_differs(&booted, &current, name)),
    )
}

fn part_differs(booted: &Path, current: &Path, name: &str) -> bool {
    let part = |root: &Path| std::fs::canonicalize(root.join(name)).ok();
    let (b, c) = (part(booted), part(current));
    if b == c {
        return false;
    }
    let (Some(b), Some(c)) = (b, c) else {
        // Present in one only (a device tree added or removed): different.
        return true;
    };
    // Compare contents when paths differ: a fake system keeps them as plain files, and
    // `kernel-params` is a small file whose store path changes with its system. A bounded
    // read: a kernel or an initrd is compared by path identity first, then by content.
    match (b.is_dir(), c.is_dir()) {
        (false, false) => read_capped(&b) != read_capped(&c),
        // Two directories (dtbs, kernel-modules) at different paths: their trees, by
        // name, kind, size and link target (a NixOS kernel-modules is a tree of links into
        // the store); too large to list is different.
        (true, true) => listing(&b).is_none_or(|l| Some(l) != listing(&c)),
        _ => true,
    }
}

/// Entries listed at most before two trees count as different.
const MAX_ENTRIES: usize = 20_000;

fn listing(root: &Path) -> Option<Vec<(PathBuf, String)>> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).ok()? {
            let entry = entry.ok()?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).ok()?;
            let what = if meta.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&path).ok()?.display())
            } else if meta.is_dir() {
                todo.push(path.clone());
                "dir".to_string()
            } else {
                format!("file {}", meta.len())
            };
            out.push((path.strip_prefix(root).ok()?.to_path_buf(), what));
            if out.len() > MAX_ENTRIES {
                return None;
            }
        }
    }
    out.sort();
    Some(out)
}

fn read_capped(file: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .ok()?
        .take(256 * 1024 * 1024)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system(root: &Path, name: &str, parts: &[(&str, &str)]) -> std::path::PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (part, text) in parts {
            std::fs::write(dir.join(part), text).unwrap();
        }
        dir
    }

    #[test]
    fn every_part_a_boot_loads_counts() {
        let root = tempfile::tempdir().unwrap();
        let base = [
            ("kernel", "k1"),
            ("initrd", "i1"),
            ("kernel-modules", "m1"),
            ("kernel-params", "init=/x quiet"),
            ("dtbs", "d1"),
        ];
        let booted = system(root.path(), "booted", &base);
        let same = system(root.path(), "same", &base);
        assert_eq!(reboot_required(&booted, &same), Some(false));
        for (i, (part, _)) in base.iter().enumerate() {
            let mut parts = base;
            parts[i].1 = "changed";
            let other = system(root.path(), &format!("other-{part}"), &parts);
            assert_eq!(reboot_required(&booted, &other), Some(true), "{part}");
        }
        // Module trees at different paths: compared by what they hold.
        for (name, module) in [
            ("same-mods-1", "a.ko"),
            ("same-mods-2", "a.ko"),
            ("other-mods", "b.ko"),
        ] {
            let dir = system(root.path(), name, &base);
            std::fs::remove_file(dir.join("kernel-modules")).unwrap();
            std::fs::create_dir_all(dir.join("kernel-modules/lib")).unwrap();
            std::fs::write(dir.join("kernel-modules/lib").join(module), "ko").unwrap();
        }
        let (m1, m2, m3) = (
            root.path().join("same-mods-1"),
            root.path().join("same-mods-2"),
            root.path().join("other-mods"),
        );
        assert_eq!(reboot_required(&m1, &m2), Some(false));
        assert_eq!(reboot_required(&m1, &m3), Some(true));
        // A device tree that appears (or goes away) is a change too.
        let without: Vec<_> = base.iter().copied().filter(|(p, _)| *p != "dtbs").collect();
        let no_dtbs = system(root.path(), "no-dtbs", &without);
        assert_eq!(reboot_required(&booted, &no_dtbs), Some(true));
        assert_eq!(reboot_required(&booted, &root.path().join("absent")), None);
    }
}
