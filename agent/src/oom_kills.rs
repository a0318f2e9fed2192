//! Whether the kernel's OOM killer struck while a build ran: its count of OOM kills in
//! this process's memory cgroup (the agent's systemd service, whose `MemoryMax` the NixOS
//! module sets), read before and after. A count, not words in a message: a builder killed
//! for memory makes nix report an ordinary build failure, which must not blame the
//! commit (`nix::failure`).
//!
//! cgroup v2: `oom_kill` in `memory.events` of the `0::/path` line's directory; cgroup v1:
//! `oom_kill` in `memory.oom_control` of the `memory` controller's directory (kernel 4.13
//! and later). Neither readable (no memory controller, another layout): `None`, and the
//! build's failure is classified as before.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Where cgroup file systems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// More than any of these files holds.
const MAX_FILE: u64 = 64 * 1024;

/// OOM kills so far in this process's memory cgroup, if the kernel tells.
pub fn count() -> Option<u64> {
    let membership = read_small(Path::new("/proc/self/cgroup"))?;
    counters(Path::new(CGROUP_ROOT), &membership)
        .into_iter()
        .find_map(|file| oom_kill_field(&read_small(&file)?))
}

/// Kills between two readings (`None` when either could not be read).
pub fn since(before: Option<u64>) -> Option<u64> {
    Some(count()?.saturating_sub(before?))
}

/// The counter files for a `/proc/self/cgroup` text, most specific first.
fn counters(root: &Path, membership: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for line in membership.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            // v2, alone (mounted at the root) or beside v1 (the hybrid's `unified`).
            files.push(root.join(rel).join("memory.events"));
            files.push(root.join("unified").join(rel).join("memory.events"));
        } else if controllers.split(',').any(|c| c == "memory") {
            files.push(root.join("memory").join(rel).join("memory.oom_control"));
        }
    }
    files
}

/// `oom_kill N` in a flat-keyed cgroup file.
fn oom_kill_field(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// A small kernel file, whole; `None` if it cannot be read.
fn read_small(path: &Path) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_FILE)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_v1_and_hybrid_memberships_name_their_counters() {
        let root = Path::new("/cg");
        assert_eq!(
            counters(root, "0::/system.slice/homelab-agent.service\n"),
            [
                PathBuf::from("/cg/system.slice/homelab-agent.service/memory.events"),
                PathBuf::from("/cg/unified/system.slice/homelab-agent.service/memory.events"),
            ]
        );
        assert_eq!(
            counters(
                root,
                "9:name=systemd:/x\n4:memory:/a/b\n1:cpu,cpuacct:/\n0::/\n"
            ),
            [
                PathBuf::from("/cg/memory/a/b/memory.oom_control"),
                PathBuf::from("/cg/memory.events"),
                PathBuf::from("/cg/unified/memory.events"),
            ]
        );
    }

    #[test]
    fn the_oom_kill_field_of_either_file() {
        let v2 = "low 0\nhigh 12\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(oom_kill_field(v2), Some(2));
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n";
        assert_eq!(oom_kill_field(v1), Some(7));
        assert_eq!(oom_kill_field("oom 1\n"), None);
    }
}
