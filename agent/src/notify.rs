//! `STATUS=` for `systemctl status homelab-agent`, when started by systemd, and the same
//! phase in the runtime directory for `homelab-agent status`. The only place sd-notify is
//! called.

use std::path::PathBuf;
use std::sync::Mutex;

/// Where the phase is also written: set by the commands that take the run lock.
static PROGRESS_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// From now on, [`status`] also writes the phase to `dir` (the runtime directory).
pub fn progress_to(dir: &std::path::Path) {
    if let Ok(mut d) = PROGRESS_DIR.lock() {
        *d = Some(dir.to_path_buf());
    }
}

pub fn status(text: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(text)]);
    }
    let dir = PROGRESS_DIR.lock().ok().and_then(|d| d.clone());
    if let Some(dir) = dir {
        crate::runtime::write_progress(&dir, text);
    }
}
