//! A build that runs out of memory, under a real kernel memory limit (a memory cgroup of
//! its own, as the NixOS module's `MemoryMax` gives the agent's service): the OOM killer
//! stops the evaluator or a builder, and the run blames this machine, never the commit
//! (issue 20). The real-systemd tier does the same through the module's unit.

use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use crate::support::{nix_available, require_that, Harness};

/// A memory cgroup of its own with a limit, removed on drop (cgroup v2, or v1's memory
/// controller as on a hybrid host).
struct Limited {
    dir: PathBuf,
}

impl Limited {
    fn new(name: &str, bytes: u64) -> Option<Limited> {
        let v2 = PathBuf::from("/sys/fs/cgroup");
        let v2_has_memory = std::fs::read_to_string(v2.join("cgroup.subtree_control"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
        let (dir, limit) = if v2_has_memory {
            (v2.join(name), "memory.max")
        } else {
            (v2.join("memory").join(name), "memory.limit_in_bytes")
        };
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).ok()?;
        let l = Limited { dir };
        std::fs::write(l.dir.join(limit), bytes.to_string()).ok()?;
        // No swap to spill into, where the kernel lets us say so.
        let _ = std::fs::write(l.dir.join("memory.swap.max"), "0");
        let _ = std::fs::write(l.dir.join("memory.memsw.limit_in_bytes"), bytes.to_string());
        Some(l)
    }

    /// Runs `cmd` inside the cgroup: the child moves itself in before it execs.
    fn run(&self, mut cmd: std::process::Command) -> std::process::Output {
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))
            .expect("cgroup.procs");
        // Unsafe: `pre_exec` moves the child into the cgroup between fork and exec.
        #[allow(unsafe_code)]
        // SAFETY: between fork and exec the child only calls write(2) on an fd opened
        // before the fork: async-signal-safe, no allocation.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::write(procs.as_fd(), b"0")?;
                Ok(())
            });
        }
        cmd.output().expect("run homelab-agent")
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

fn out_of_memory_is_not_the_commits_fault(build: &str) {
    if !nix_available() {
        return;
    }
    let Some(cgroup) = Limited::new(
        &format!("hla-oom-{}-{build}", std::process::id()),
        256 << 20,
    ) else {
        require_that(
            "a memory cgroup of our own (root, cgroup v1 or v2 memory controller)",
            false,
        );
        return;
    };
    let mut h = Harness::new();
    h.build_timeout = "5m".into();
    let c1 = h.deploy("v1", "first");
    h.host("pi1").build = build.into();
    let c2 = h.commit("wants gigabytes");

    let out = cgroup.run(h.command(&["run", "--once"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(71), "{stderr}");
    assert!(
        stderr.contains("out of memory while building: the kernel killed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: this machine needs more memory for this build: add swap or zram"),
        "{stderr}"
    );
    let s = h.status();
    assert_eq!(
        s["deployed"]["commit"],
        c1.as_str(),
        "the deployed system changed"
    );
    assert_eq!(s["head"]["commit"], c2.as_str());
    assert_ne!(
        s["head"]["status"], "bad",
        "the commit was blamed: {}",
        s["head"]
    );
    assert!(s["bad_commit"].is_null(), "the commit was blamed: {s}");
}

#[test]
fn an_evaluation_killed_for_memory_blames_this_machine() {
    out_of_memory_is_not_the_commits_fault("eval-oom");
}

#[test]
fn a_builder_killed_for_memory_blames_this_machine_not_the_commit() {
    out_of_memory_is_not_the_commits_fault("build-oom");
}
