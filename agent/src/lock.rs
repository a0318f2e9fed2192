//! One run at a time: an exclusive `flock` on a file in the runtime directory. The kernel
//! releases it when the holder dies, even by SIGKILL, so a crash never leaves it stuck.

use std::fs::OpenOptions;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

pub const FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another homelab-agent run holds {} (pid {})", path.display(), holder.map_or("unknown".to_string(), |p| p.to_string()))]
    Held { path: PathBuf, holder: Option<u32> },
    /// Not root (or not the agent's user): the message says to use sudo, not an errno.
    #[error("cannot open lock file {}: permission denied", path.display())]
    Permission { path: PathBuf },
    #[error("cannot open lock file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl LockError {
    /// What to do about it (shown on its own line after the message).
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            LockError::Held { .. } => {
                Some("wait for it to finish; `homelab-agent status` shows what it is doing")
            }
            LockError::Permission { .. } => Some("needs root: run with sudo"),
            LockError::Io { .. } => None,
        }
    }
}

/// Held for as long as it lives.
pub struct RunLock {
    _lock: Flock<std::fs::File>,
}

pub fn acquire(dir: &Path) -> Result<RunLock, LockError> {
    let path = dir.join(FILE);
    let io = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::PermissionDenied => LockError::Permission { path: path.clone() },
        _ => LockError::Io {
            path: path.clone(),
            source,
        },
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            // The holder's pid, for the message a second run prints and for `status`.
            // Overwritten in place at a fixed width, never truncated first: a reader that
            // probes between the lock and the write sees the last holder's pid or this
            // one, never an empty file (`status` said running with no pid).
            let _ = lock.rewind();
            let _ = writeln!(lock, "{:<20}", std::process::id());
            Ok(RunLock { _lock: lock })
        }
        Err((mut file, _)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            Err(LockError::Held {
                path,
                holder: text.trim().parse().ok(),
            })
        }
    }
}

impl LockError {
    /// The exit code a command ends with when it cannot take the lock: only a lock held
    /// by another run is [`crate::exit::LOCKED`]; permissions are this machine's problem.
    pub fn exit_code(&self) -> u8 {
        match self {
            LockError::Held { .. } => crate::exit::LOCKED,
            LockError::Permission { .. } | LockError::Io { .. } => crate::exit::ENVIRONMENT,
        }
    }
}

/// Whether a run holds the lock, asked without taking it for long and without creating
/// anything (so any user can ask: `status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// No run holds it (or no run ever took it).
    Free,
    /// A run is in progress: its pid, if it wrote one.
    Held(Option<u32>),
    /// Could not tell (the lock file is unreadable).
    Unknown,
}

pub fn probe(dir: &Path) -> Probe {
    let path = dir.join(FILE);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Probe::Free,
        Err(_) => return Probe::Unknown,
    };
    // A shared lock on a read-only descriptor: refused while a run holds it exclusively.
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_released_on_drop) => Probe::Free,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            // The holder writes its pid just after it took the lock: a pid that names no
            // process (the last holder's) or none yet is read again, for up to 50 ms.
            let mut pid = None;
            for _ in 0..5 {
                let mut text = String::new();
                let _ = file.rewind();
                let _ = (&mut file).take(64).read_to_string(&mut text);
                pid = text.trim().parse::<u32>().ok();
                if pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists()) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Probe::Held(pid)
        }
        Err(_) => Probe::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path()).unwrap();
        let err = acquire(dir.path()).err().expect("second lock must fail");
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        assert!(acquire(dir.path()).is_ok());
    }

    #[test]
    fn probe_tells_a_running_agent_from_a_dead_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(probe(dir.path()), Probe::Free, "no lock file yet");
        assert!(
            !dir.path().join(FILE).exists(),
            "probing created the lock file"
        );
        let held = acquire(dir.path()).unwrap();
        assert_eq!(probe(dir.path()), Probe::Held(Some(std::process::id())));
        // Probing does not take the lock from its holder.
        assert!(acquire(dir.path()).is_err());
        drop(held);
        assert_eq!(probe(dir.path()), Probe::Free);
    }

    #[test]
    fn permission_denied_says_sudo_and_is_not_lock_held() {
        let e = LockError::Permission {
            path: PathBuf::from("/run/homelab-agent/lock"),
        };
        assert!(e.hint().is_some_and(|h| h.contains("run with sudo")), "{e}");
        assert!(!e.to_string().contains("os error"), "{e}");
        assert!(!e.to_string().contains("hint:"), "{e}");
        assert_ne!(e.exit_code(), crate::exit::LOCKED);
    }
}
