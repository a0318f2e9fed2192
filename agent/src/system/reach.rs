//! The orphan guard (issue 20): before a system is activated, check that it still runs
//! this agent and still has a way in. A commit that drops either would leave a machine
//! that never updates again, or that nobody can log in to, and nothing the agent does
//! afterwards could fix it: comin and system.autoUpgrade deploy such a commit happily.
//!
//! Read from the candidate toplevel alone, as NixOS lays it out (`etc` → the etc tree,
//! `etc/systemd/system` → the unit files with their `*.wants` links):
//!
//! - the agent: `homelab-agent.service`, started by `homelab-agent.timer` (wanted by
//!   `timers.target`) or itself wanted by `multi-user.target` (the daemon), and its
//!   configuration `etc/homelab-agent/config.toml`;
//! - a way in: `sshd.service` wanted by `multi-user.target`, or `sshd.socket` wanted by
//!   `sockets.target` (`services.openssh.startWhenNeeded`).
//!
//! Only existence is looked at (no file is read), so a FIFO or a huge file there costs
//! nothing.

use std::path::Path;

/// What a candidate system would lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// The agent's unit, its start (timer or daemon) or its configuration is missing.
    Agent,
    /// sshd is not enabled.
    Ssh,
}

impl Lost {
    /// What it means for the machine, in a few words.
    pub fn consequence(self) -> &'static str {
        match self {
            Lost::Agent => "it would never update again",
            Lost::Ssh => "nobody could log in to fix it",
        }
    }
    pub fn what(self) -> &'static str {
        match self {
            Lost::Agent => "remove homelab-agent from",
            Lost::Ssh => "disable sshd on",
        }
    }
}

/// What `system` (a NixOS toplevel) lacks of the agent and sshd; empty when it keeps both.
pub fn lost(system: &Path) -> Vec<Lost> {
    let units = system.join("etc/systemd/system");
    let has = |rel: &str| units.join(rel).exists();
    let agent = has("homelab-agent.service")
        && (has("timers.target.wants/homelab-agent.timer")
            || has("multi-user.target.wants/homelab-agent.service"))
        && system.join("etc/homelab-agent/config.toml").exists();
    let ssh =
        has("multi-user.target.wants/sshd.service") || has("sockets.target.wants/sshd.socket");
    let mut lost = Vec::new();
    if !agent {
        lost.push(Lost::Agent);
    }
    if !ssh {
        lost.push(Lost::Ssh);
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn system(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let path = dir.path().join(f);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "").unwrap();
        }
        dir
    }

    const AGENT: [&str; 3] = [
        "etc/systemd/system/homelab-agent.service",
        "etc/systemd/system/timers.target.wants/homelab-agent.timer",
        "etc/homelab-agent/config.toml",
    ];
    const SSHD: &str = "etc/systemd/system/multi-user.target.wants/sshd.service";

    #[test]
    fn a_system_with_the_agent_and_sshd_loses_nothing() {
        let s = system(&[AGENT[0], AGENT[1], AGENT[2], SSHD]);
        assert_eq!(lost(s.path()), vec![]);
    }

    #[test]
    fn the_daemon_and_a_socket_activated_sshd_count() {
        let s = system(&[
            AGENT[0],
            "etc/systemd/system/multi-user.target.wants/homelab-agent.service",
            AGENT[2],
            "etc/systemd/system/sockets.target.wants/sshd.socket",
        ]);
        assert_eq!(lost(s.path()), vec![]);
    }

    #[test]
    fn each_missing_part_of_the_agent_is_a_lost_agent() {
        for missing in AGENT {
            let mut files: Vec<&str> = AGENT.iter().copied().filter(|f| *f != missing).collect();
            files.push(SSHD);
            let s = system(&files);
            assert_eq!(lost(s.path()), vec![Lost::Agent], "without {missing}");
        }
    }

    #[test]
    fn a_unit_file_without_its_enabling_link_is_not_enabled() {
        let s = system(&[
            AGENT[0],
            AGENT[1],
            AGENT[2],
            "etc/systemd/system/sshd.service",
        ]);
        assert_eq!(lost(s.path()), vec![Lost::Ssh]);
    }

    #[test]
    fn an_empty_system_loses_both() {
        let s = system(&[]);
        assert_eq!(lost(s.path()), vec![Lost::Agent, Lost::Ssh]);
    }
}
