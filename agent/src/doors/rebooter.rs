//! The Rebooter door: reboots the machine. The real one is `systemctl reboot
//! --message=<reason>` (systemd logs the reason; systemd 252, Debian 12's, accepts the
//! option).

use std::path::PathBuf;
use std::time::Duration;

use crate::doors::Fut;
use crate::process::Cmd;

/// Reboots the machine (returns once the reboot is queued).
pub trait Rebooter {
    fn reboot<'a>(&'a self, reason: &'a str) -> Fut<'a, Result<(), String>>;
}

/// `systemctl reboot --message=<reason>`.
pub struct Systemctl {
    pub program: PathBuf,
}

/// The argument vector of the reboot (pure, tested).
pub fn reboot_argv(reason: &str) -> Vec<String> {
    // One line, bounded: it lands in the journal and in wall messages.
    let reason: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    vec!["reboot".into(), format!("--message={reason}")]
}

impl Rebooter for Systemctl {
    fn reboot<'a>(&'a self, reason: &'a str) -> Fut<'a, Result<(), String>> {
        Box::pin(async move {
            Cmd::new(&self.program)
                .args(reboot_argv(reason))
                .timeout(Duration::from_secs(60))
                .run_ok()
                .await
                .map(|_| ())
                .map_err(|e| format!("{e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_one_bounded_line_in_one_argument() {
        assert_eq!(
            reboot_argv("kernel changed\nin gen 4; rm -rf /"),
            ["reboot", "--message=kernel changed in gen 4; rm -rf /"]
        );
        assert_eq!(
            reboot_argv(&"x".repeat(500))[1].len(),
            "--message=".len() + 200
        );
    }
}
