//! Realising a prebuilt system from the substituters: `nix-store --realise <path>
//! --add-root <root>` (both flags as Nix 2.8 and 2.18+ accept them; the root is indirect,
//! so a garbage collection cannot take the system before it is activated). Nix fetches
//! the closure from the binary caches it trusts and checks their signatures itself; a
//! store path is never built here (nix has no derivation for it), so nothing is
//! evaluated on the device.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::{Cmd, CmdError};

use super::manifest::StorePath;

/// The argument vector (without the program).
pub fn args(system: &StorePath, root: &Path) -> Vec<String> {
    vec![
        "--realise".into(),
        system.as_str().into(),
        "--add-root".into(),
        root.display().to_string(),
    ]
}

/// Realises `system`, rooted at `root`; the error says why in words (a fallback reason,
/// never a verdict on the commit). A `pause` asked for meanwhile stops it, with all it
/// started (as it stops a build: the caller then sees the request).
pub async fn realise(
    system: &StorePath,
    root: &Path,
    timeout: Duration,
    runtime_dir: &Path,
) -> Result<PathBuf, String> {
    if let Some(dir) = root.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let (cancel, cancelled) = tokio::sync::watch::channel(false);
    let runtime_dir = runtime_dir.to_path_buf();
    let watcher = tokio::spawn(async move {
        loop {
            if crate::pause::requested(&runtime_dir) {
                let _ = cancel.send(true);
                // Keep the sender: a dropped one reads as a stop too.
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let done = Cmd::new("nix-store")
        .args(args(system, root))
        .timeout(timeout)
        .capture_stdout()
        .max_stdout(64 * 1024)
        .cancel_on(cancelled)
        .run_ok()
        .await;
    watcher.abort();
    match done {
        Ok(_) => {}
        Err(CmdError::Failed { stderr_tail, .. }) => {
            return Err(format!(
                "nix-store --realise {system} failed (no substituter has it, or none nix trusts signed it):{}",
                tail(&stderr_tail)
            ))
        }
        Err(e) => return Err(format!("realising {system}: {e}")),
    }
    let path = PathBuf::from(system.as_str());
    // Only a NixOS system can be activated: found before anything is touched.
    if !path.join("bin/switch-to-configuration").exists() {
        return Err(format!(
            "{system} has no bin/switch-to-configuration: not a NixOS system"
        ));
    }
    Ok(path)
}

fn tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.trim_end().lines().rev().take(5).collect();
    let shown: Vec<String> = lines
        .into_iter()
        .rev()
        .map(|l| format!("\n    {}", crate::text::escape_controls(l, false)))
        .collect();
    shown.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_argument_vector_names_the_path_and_its_root() {
        let p = StorePath::parse("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-pi1")
            .unwrap();
        assert_eq!(
            args(&p, Path::new("/var/lib/homelab-agent/gcroots/candidate")),
            [
                "--realise",
                "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-pi1",
                "--add-root",
                "/var/lib/homelab-agent/gcroots/candidate"
            ]
        );
    }
}
