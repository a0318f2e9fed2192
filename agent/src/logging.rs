//! The journal when connected to it (structured fields, MESSAGE_ID), stderr otherwise.
//! Level: `HOMELAB_AGENT_LOG` = error | warn | info (default) | debug.

use log::{Level, LevelFilter, Log, Metadata, Record};

/// MESSAGE_IDs for the events people alert on (`journalctl MESSAGE_ID=…`).
pub mod message_id {
    pub const DEPLOYED: &str = "5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b31";
    pub const FAILED: &str = "5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b32";
    pub const ROLLED_BACK: &str = "5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b33";
    pub const ROLLBACK_FAILED: &str = "5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b34";
    /// Reboots (agent/src/reboot/): a reboot is pending, is being issued, a boot was seen,
    /// verified, or fell back to the previous generation.
    pub const REBOOT_PENDING: &str = "5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b41";
    pub const REBOOTING: &str = "5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b42";
    pub const BOOTED: &str = "5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b43";
    pub const BOOT_VERIFIED: &str = "5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b44";
    pub const FELL_BACK: &str = "5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b45";
}

/// Installs the logger; returns a problem to print when `HOMELAB_AGENT_LOG` has a value
/// it does not know (then the level is info).
pub fn init() -> Option<String> {
    let value = std::env::var("HOMELAB_AGENT_LOG").ok();
    let (level, problem) = level(value.as_deref());
    install(level);
    problem
}

/// The level `HOMELAB_AGENT_LOG` names, and what is wrong with it.
pub fn level(value: Option<&str>) -> (LevelFilter, Option<String>) {
    let level = match value.map(str::trim) {
        None | Some("") | Some("info") => LevelFilter::Info,
        Some("error") => LevelFilter::Error,
        Some("warn") => LevelFilter::Warn,
        Some("debug") => LevelFilter::Debug,
        Some("trace") => LevelFilter::Trace,
        Some(other) => {
            return (
                LevelFilter::Info,
                Some(format!(
                    "HOMELAB_AGENT_LOG={other:?} is not a log level; using info\nhint: one of error, warn, info, debug, trace"
                )),
            )
        }
    };
    (level, None)
}

fn install(level: LevelFilter) {
    let journal = systemd_journal_logger::connected_to_journal()
        .then(|| systemd_journal_logger::JournalLog::new().ok())
        .flatten();
    let installed = match journal {
        Some(j) => j
            .with_syslog_identifier("homelab-agent".into())
            .install()
            .is_ok(),
        None => log::set_boxed_logger(Box::new(Stderr)).is_ok(),
    };
    if installed {
        log::set_max_level(level);
    }
}

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }
    fn log(&self, record: &Record) {
        let prefix = match record.level() {
            Level::Error => "error: ",
            Level::Warn => "warning: ",
            Level::Info => "",
            Level::Debug | Level::Trace => "debug: ",
        };
        let text = record.args().to_string();
        eprintln!("{prefix}{}", crate::text::escape_controls(&text, true));
    }
    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_level_is_reported_not_silently_info() {
        let (level, problem) = level(Some("verbose"));
        assert_eq!(level, LevelFilter::Info);
        let problem = problem.expect("verbose must be reported");
        assert!(
            problem.contains("\"verbose\" is not a log level"),
            "{problem}"
        );
        assert_eq!(super::level(Some("debug")), (LevelFilter::Debug, None));
        assert_eq!(super::level(None), (LevelFilter::Info, None));
    }
}
