//! One run at a time: an exclusive `flock` on a file in the runtime directory. The kernel
//! releases it when the holder dies, even by SIGKILL, so a crash never leaves it stuck.

use std::fs::OpenOptions;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

pub const FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another homelab-agent run holds {} (pid {})\nhint: wait for it to finish; `homelab-agent status` shows what it is doing", path.display(), holder.map_or("unknown".to_string(), |p| p.to_string()))]
    Held { path: PathBuf, holder: Option<u32> },
    #[error("cannot open lock file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held for as long as it lives.
pub struct RunLock {
    _lock: Flock<std::fs::File>,
}

pub fn acquire(dir: &Path) -> Result<RunLock, LockError> {
    let path = dir.join(FILE);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
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
            // The holder's pid, for the message a second run prints.
            let _ = lock.set_len(0);
            let _ = lock.rewind();
            let _ = write!(lock, "{}", std::process::id());
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
}
