//! `homelab-agent trigger`: deploy on push. Asks systemd to start the agent's unit now
//! (`systemctl start --no-block`) and returns at once: the run itself logs to the
//! journal as any timer-started run. Meant as the forced command of a restricted SSH key
//! (`command="homelab-agent trigger",restrict` in authorized_keys) that the repository's
//! post-receive hook uses (contrib/post-receive, README "Deploy on push").
//!
//! If the unit is already running, systemd merges the request into that run: a push
//! during a run is picked up by the next one (the timer's). A daemon (`run` without
//! `--once`) is not a unit start: send it SIGUSR1 to poll now.

use std::time::Duration;

use crate::config::Settings;
use crate::exit;
use crate::process::{Cmd, CmdError};

/// The unit the NixOS module installs.
pub const UNIT: &str = "homelab-agent.service";

/// systemctl with `--no-block` only queues a job; anything slower is a stuck systemd.
const TIMEOUT: Duration = Duration::from_secs(20);

pub async fn run(settings: &Settings, unit: &str) -> u8 {
    let systemctl = &settings.paths.systemctl;
    let cmd = Cmd::new(systemctl)
        .args(["start", "--no-block", unit])
        .timeout(TIMEOUT);
    match cmd.run_ok().await {
        Ok(_) => {
            println!(
                "homelab-agent: started {unit}: this machine polls now and deploys a new commit\nfollow it: journalctl -u {unit} -f   (or: homelab-agent status)"
            );
            exit::OK
        }
        Err(e @ CmdError::NotFound { .. }) => {
            eprintln!(
                "{}",
                crate::failure::with_hint_line(
                    format!("error: cannot start {unit}: {e}"),
                    "set [paths] systemctl to the systemctl of this machine"
                )
            );
            exit::ENVIRONMENT
        }
        Err(e) => {
            eprintln!(
                "{}", crate::failure::with_hint_line(format!("error: cannot start {unit}: {e}"), "is the unit installed (services.homelab-agent.enable) and is this root? the next timer run polls anyway"));
            exit::FAILED
        }
    }
}
