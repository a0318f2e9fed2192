//! The journal when connected to it (structured fields, MESSAGE_ID), stderr otherwise.
//! Level: `HOMELAB_AGENT_LOG` = error | warn | info (default) | debug.

use log::{Level, LevelFilter, Log, Metadata, Record};

/// MESSAGE_IDs for the events people alert on (`journalctl MESSAGE_ID=…`).
pub mod message_id {
    pub const DEPLOYED: &str = "5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b31";
    pub const FAILED: &str = "5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b32";
    pub const ROLLED_BACK: &str = "5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b33";
    pub const ROLLBACK_FAILED: &str = "5b0f3a4c9d8e4f1a8c2b7e6d1f0a9b34";
}

pub fn init() {
    let level = match std::env::var("HOMELAB_AGENT_LOG").as_deref() {
        Ok("error") => LevelFilter::Error,
        Ok("warn") => LevelFilter::Warn,
        Ok("debug") => LevelFilter::Debug,
        Ok("trace") => LevelFilter::Trace,
        _ => LevelFilter::Info,
    };
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
        eprintln!("{prefix}{}", record.args());
    }
    fn flush(&self) {}
}
