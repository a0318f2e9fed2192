//! `STATUS=` for `systemctl status homelab-agent`, when started by systemd, and the same
//! phase in the runtime directory for `homelab-agent status`. The only place sd-notify is
//! called.

use std::path::PathBuf;
use std::sync::Mutex;

/// Where the phase is also written: set by the commands that take the run lock.
static PROGRESS_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);
/// The phase last sent, which nix's progress is added to.
static PHASE: Mutex<String> = Mutex::new(String::new());

/// From now on, [`status`] also writes the phase to `dir` (the runtime directory).
pub fn progress_to(dir: &std::path::Path) {
    if let Ok(mut d) = PROGRESS_DIR.lock() {
        *d = Some(dir.to_path_buf());
    }
}

pub fn status(text: &str) {
    if let Ok(mut phase) = PHASE.lock() {
        phase.clear();
        phase.push_str(text);
    }
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(text)]);
    }
    let dir = PROGRESS_DIR.lock().ok().and_then(|d| d.clone());
    if let Some(dir) = dir {
        crate::runtime::write_progress(&dir, text);
    }
}

/// nix's progress during the phase (the caller sends it at most about once a second):
/// `STATUS=<phase>: <progress>`, `running.progress` in the runtime directory, and the
/// progress line on a terminal.
pub fn build_progress(progress: &crate::runtime::BuildProgress) {
    let summary = progress.summary();
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        let phase = PHASE.lock().map(|p| p.clone()).unwrap_or_default();
        let text = status_with_progress(&phase, &summary);
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&text)]);
    }
    let dir = PROGRESS_DIR.lock().ok().and_then(|d| d.clone());
    if let Some(dir) = dir {
        crate::runtime::write_build_progress(&dir, progress);
    }
    crate::logging::progress_line(Some(&summary));
}

/// The build is over: the progress line goes (what the next phase sends replaces the rest).
pub fn build_finished() {
    crate::logging::progress_line(None);
}

/// `STATUS=` during a build: the phase, then nix's progress.
fn status_with_progress(phase: &str, summary: &str) -> String {
    if phase.is_empty() {
        summary.to_string()
    } else {
        format!("{phase}: {summary}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_during_a_build_is_the_phase_and_the_progress() {
        let p = crate::runtime::BuildProgress {
            derivations_built: 3,
            derivations_total: 17,
            current: Some("linux-6.6".into()),
            ..Default::default()
        };
        assert_eq!(
            status_with_progress("building 3f2a9c1e for pi1", &p.summary()),
            "building 3f2a9c1e for pi1: building 3/17 derivations, now: linux-6.6"
        );
        assert_eq!(status_with_progress("", "evaluating"), "evaluating");
    }
}
