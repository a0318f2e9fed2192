//! The system profile (`/nix/var/nix/profiles/system`): its generations are what the boot
//! loader offers, so only a verified system is ever added here. Read from the symlinks
//! themselves (`system-42-link`), never from `nix-env --list-generations` text.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::Cmd;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub number: u32,
    /// The store path of the system.
    pub system: PathBuf,
}

/// The generation the profile points at now, if the profile exists.
pub fn current(profile: &Path) -> Option<Generation> {
    let target = std::fs::read_link(profile).ok()?;
    let number = generation_number(profile, &target)?;
    let system = std::fs::canonicalize(profile).ok()?;
    Some(Generation { number, system })
}

/// `[retention] keep`: the generations to delete so that at most `keep` remain, oldest
/// first; never one whose system is in `protect` (the default and the booted system).
/// The newest `keep` are kept, and the protected ones whatever their age.
pub fn beyond_retention(generations: &[Generation], keep: u32, protect: &[PathBuf]) -> Vec<u32> {
    let mut newest_first: Vec<&Generation> = generations.iter().collect();
    newest_first.sort_by_key(|g| std::cmp::Reverse(g.number));
    let mut kept = 0u32;
    let mut delete = Vec::new();
    for g in newest_first {
        if protect.contains(&g.system) || kept < keep {
            kept += 1;
        } else {
            delete.push(g.number);
        }
    }
    delete.sort_unstable();
    delete
}

/// Deletes these generations of `profile` (`nix-env --delete-generations`); the next
/// `switch-to-configuration boot` drops their boot entries and their kernels from /boot.
pub async fn delete(profile: &Path, numbers: &[u32]) -> anyhow::Result<()> {
    if numbers.is_empty() {
        return Ok(());
    }
    Cmd::new("nix-env")
        .arg("-p")
        .arg(profile)
        .arg("--delete-generations")
        .args(numbers.iter().map(u32::to_string))
        .timeout(Duration::from_secs(300))
        .run_ok()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "deleting generations {numbers:?} of {}: {e}",
                profile.display()
            )
        })?;
    Ok(())
}

/// All generations, oldest first.
pub fn list(profile: &Path) -> Vec<Generation> {
    let (Some(dir), Some(_)) = (profile.parent(), profile.file_name()) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut gens: Vec<Generation> = entries
        .flatten()
        .filter_map(|e| {
            let number = generation_number(profile, Path::new(&e.file_name()))?;
            let system = std::fs::canonicalize(e.path()).ok()?;
            Some(Generation { number, system })
        })
        .collect();
    gens.sort_by_key(|g| g.number);
    gens
}

/// The newest generation older than the current one (what `rollback` goes back to).
pub fn previous(profile: &Path) -> Option<Generation> {
    let now = current(profile)?;
    list(profile)
        .into_iter()
        .rev()
        .find(|g| g.number < now.number && g.system != now.system)
}

/// `system-42-link` → 42, for a profile named `system`.
fn generation_number(profile: &Path, link: &Path) -> Option<u32> {
    let name = profile.file_name()?.to_str()?;
    let file = link.file_name()?.to_str()?;
    file.strip_prefix(name)?
        .strip_prefix('-')?
        .strip_suffix("-link")?
        .parse()
        .ok()
}

/// Points the profile at `system` (a new generation unless it already is the current one).
pub async fn set(profile: &Path, system: &Path) -> anyhow::Result<Generation> {
    Cmd::new("nix-env")
        .arg("-p")
        .arg(profile)
        .arg("--set")
        .arg(system)
        .timeout(Duration::from_secs(300))
        .run_ok()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "setting profile {} to {}: {e}",
                profile.display(),
                system.display()
            )
        })?;
    match current(profile) {
        Some(g) if g.system == system => Ok(g),
        other => anyhow::bail!(
            "profile {} points at {} after nix-env --set {}",
            profile.display(),
            other.map_or("no system".to_string(), |g| g.system.display().to_string()),
            system.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_numbers_from_link_names() {
        let p = Path::new("/nix/var/nix/profiles/system");
        assert_eq!(generation_number(p, Path::new("system-42-link")), Some(42));
        assert_eq!(generation_number(p, Path::new("/x/system-7-link")), Some(7));
        assert_eq!(generation_number(p, Path::new("system-profiles")), None);
        assert_eq!(generation_number(p, Path::new("system-x-link")), None);
        assert_eq!(generation_number(p, Path::new("other-1-link")), None);
    }

    #[test]
    fn reads_generations_from_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("sys-a"), dir.path().join("sys-b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let profile = dir.path().join("system");
        std::os::unix::fs::symlink(&a, dir.path().join("system-1-link")).unwrap();
        std::os::unix::fs::symlink(&b, dir.path().join("system-2-link")).unwrap();
        std::os::unix::fs::symlink("system-2-link", &profile).unwrap();
        assert_eq!(
            current(&profile),
            Some(Generation {
                number: 2,
                system: b.clone()
            })
        );
        assert_eq!(list(&profile).len(), 2);
        assert_eq!(
            previous(&profile),
            Some(Generation {
                number: 1,
                system: a
            })
        );
        assert_eq!(current(&dir.path().join("nope")), None);
    }
}

#[cfg(test)]
mod retention_tests {
    use super::*;

    fn gens(n: u32) -> Vec<Generation> {
        (1..=n)
            .map(|number| Generation {
                number,
                system: PathBuf::from(format!("/nix/store/s{number}")),
            })
            .collect()
    }

    #[test]
    fn the_newest_are_kept_and_the_protected_never_deleted() {
        assert_eq!(beyond_retention(&gens(5), 2, &[]), [1, 2, 3]);
        assert_eq!(beyond_retention(&gens(2), 3, &[]), Vec::<u32>::new());
        // The booted system is generation 1 (a machine not rebooted for a while): kept
        // beside the newest two.
        let booted = PathBuf::from("/nix/store/s1");
        assert_eq!(
            beyond_retention(&gens(5), 2, std::slice::from_ref(&booted)),
            [2, 3]
        );
        // keep = 1 keeps the newest and the protected ones only.
        let default = PathBuf::from("/nix/store/s5");
        assert_eq!(beyond_retention(&gens(5), 1, &[default, booted]), [2, 3, 4]);
        // Two generations of one system (a rollback's): both protected.
        let mut g = gens(3);
        g.push(Generation {
            number: 4,
            system: PathBuf::from("/nix/store/s1"),
        });
        assert_eq!(
            beyond_retention(&g, 1, &[PathBuf::from("/nix/store/s1")]),
            [2, 3]
        );
    }
}
