//! The journal when connected to it (structured fields, MESSAGE_ID), stderr otherwise.
//! Level: `HOMELAB_AGENT_LOG` = error | warn | info (default) | debug.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Whether the log goes to the journal (set once, by [`init`]).
static TO_JOURNAL: AtomicBool = AtomicBool::new(false);
/// The progress line now shown on the terminal, if any (stderr is a terminal).
static PROGRESS_LINE: Mutex<Option<String>> = Mutex::new(None);

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
                Some(crate::failure::with_hint_line(
                    format!("HOMELAB_AGENT_LOG={other:?} is not a log level; using info"),
                    "one of error, warn, info, debug, trace",
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
    TO_JOURNAL.store(journal.is_some(), Ordering::Relaxed);
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
        // The journal has its own time; here each line carries one. Outside text is shown
        // with its control characters escaped.
        let raw = record.args().to_string();
        let text = crate::text::escape_controls(&raw, true);
        let line = format!("{} {prefix}{text}", timestamp());
        with_progress_line_lifted(|err| writeln!(err, "{line}"));
    }
    fn flush(&self) {}
}

/// Local time to the second, as log lines on stderr start.
fn timestamp() -> String {
    jiff::Zoned::now().strftime("%Y-%m-%d %H:%M:%S").to_string()
}

/// Writes to stderr with the progress line (if shown) taken away first and put back after.
fn with_progress_line_lifted(write: impl FnOnce(&mut std::io::StderrLock) -> std::io::Result<()>) {
    let shown = PROGRESS_LINE.lock().ok().and_then(|l| l.clone());
    let mut err = std::io::stderr().lock();
    if shown.is_some() {
        let _ = write!(err, "\r\x1b[K");
    }
    let _ = write(&mut err);
    if let Some(line) = shown {
        let _ = write!(err, "{line}");
    }
    let _ = err.flush();
}

/// Shows `text` as the single updating line at the bottom of a terminal (a manual run), or
/// takes it away (`None`). Nothing when stderr is not a terminal or the log is the journal.
pub fn progress_line(text: Option<&str>) {
    if TO_JOURNAL.load(Ordering::Relaxed) || !std::io::stderr().is_terminal() {
        return;
    }
    let Ok(mut shown) = PROGRESS_LINE.lock() else {
        return;
    };
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[K");
    *shown = text.map(|t| fit(t, terminal_width()));
    if let Some(line) = shown.as_deref() {
        let _ = write!(err, "{line}");
    }
    let _ = err.flush();
}

/// `COLUMNS` when the shell exports it, else 80.
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|w| *w >= 20)
        .unwrap_or(80)
}

/// At most `width - 1` characters (a full-width line would wrap and `\r` would then
/// return to its second row), control characters dropped.
fn fit(text: &str, width: usize) -> String {
    let clean: Vec<char> = text.chars().filter(|c| !c.is_control()).collect();
    if clean.len() < width {
        return clean.into_iter().collect();
    }
    let mut out: String = clean[..width.saturating_sub(2)].iter().collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_line_fits_the_terminal() {
        assert_eq!(fit("short", 80), "short");
        let long = "x".repeat(100);
        let fitted = fit(&long, 80);
        assert_eq!(fitted.chars().count(), 79);
        assert!(fitted.ends_with('…'));
        assert_eq!(fit("a\x1b[31mb", 80), "a[31mb");
    }

    #[test]
    fn log_lines_carry_the_time() {
        let t = timestamp();
        assert_eq!(t.len(), "2026-12-07 12:31:02".len(), "{t}");
        assert!(t.as_bytes()[4] == b'-' && t.as_bytes()[13] == b':', "{t}");
    }

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
