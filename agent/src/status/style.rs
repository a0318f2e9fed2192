//! How `status` and `history` look on a terminal (issue 21): lines wrapped at the
//! terminal's width on word boundaries (never "rolled bac" / "k"), continuation lines
//! indented under their value, and colour where it helps a person at 2 a.m. (what needs
//! attention, failures, hints). Applied to the finished text, after outside text was
//! escaped (text.rs), so a commit subject can never bring escape codes of its own.
//!
//! Colour: `--color auto` (the default) when stdout is a terminal, `NO_COLOR` is unset and
//! `TERM` is not `dumb`; `always`; `never`. Width: `COLUMNS`, else the terminal's, else
//! none (a pipe or a file gets the lines whole).

use std::io::IsTerminal;

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

/// What the output may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
    pub width: Option<usize>,
}

impl Style {
    /// Plain whole lines: a pipe, a file, JSON's neighbours.
    pub const PLAIN: Style = Style {
        color: false,
        width: None,
    };

    /// For stdout, as the environment and `--color` say.
    pub fn for_stdout(choice: ColorChoice) -> Style {
        let tty = std::io::stdout().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        let color = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => tty && !no_color && !dumb,
        };
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.trim().parse::<usize>().ok())
            .or_else(|| tty.then(terminal_width).flatten())
            .filter(|w| *w >= 40);
        Style { color, width }
    }

    /// `text` (whole lines) as this style shows it.
    pub fn apply(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 64);
        for line in text.split_inclusive('\n') {
            let (body, newline) = match line.strip_suffix('\n') {
                Some(b) => (b, "\n"),
                None => (line, ""),
            };
            let wrapped = match self.width {
                Some(w) => wrap(body, w),
                None => vec![body.to_string()],
            };
            let last = wrapped.len() - 1;
            for (i, part) in wrapped.iter().enumerate() {
                match self.color {
                    true => out.push_str(&paint(part, i == 0)),
                    false => out.push_str(part),
                }
                out.push_str(if i < last { "\n" } else { newline });
            }
        }
        out
    }
}

/// The terminal's width, from stdout (TIOCGWINSZ).
fn terminal_width() -> Option<usize> {
    use std::os::fd::AsRawFd;
    let mut size = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we pass and nothing else.
    // Unsafe: ioctl(2) for the terminal's width (nix has no safe wrapper for it).
    #[allow(unsafe_code)]
    let ok = unsafe {
        nix::libc::ioctl(
            std::io::stdout().as_raw_fd(),
            nix::libc::TIOCGWINSZ,
            &mut size,
        )
    } == 0;
    (ok && size.ws_col > 0).then_some(size.ws_col as usize)
}

/// A line cut at spaces into parts of at most `width` characters; the parts after the
/// first are indented under the line's value (the column after a `label:` padded to 12,
/// else the line's own indentation plus 2). A word longer than the width stands alone.
pub fn wrap(line: &str, width: usize) -> Vec<String> {
    if line.chars().count() <= width {
        return vec![line.to_string()];
    }
    let own = line.len() - line.trim_start().len();
    let indent = match value_column(line) {
        Some(col) if col + 20 <= width => col,
        // A hint's text continues under its first word.
        _ if line.trim_start().starts_with("hint: ") => (own + 6).min(width / 2),
        _ => (own + 2).min(width / 2),
    };
    let pad = " ".repeat(indent);
    let mut parts = Vec::new();
    // The line's own indentation stays; its words are cut at single spaces.
    let mut current = line[..own].to_string();
    for word in line[own..].split(' ') {
        let candidate = if current.trim().is_empty() {
            format!("{current}{word}")
        } else {
            format!("{current} {word}")
        };
        if candidate.chars().count() > width && !current.trim().is_empty() {
            parts.push(current);
            current = format!("{pad}{word}");
        } else {
            current = candidate;
        }
    }
    parts.push(current);
    parts
}

/// Where a `label:` line's value starts: the labels are padded to 12 columns.
fn value_column(line: &str) -> Option<usize> {
    let head: String = line.chars().take(12).collect();
    let label = head.trim_end();
    let value_starts = line.chars().nth(12).is_some_and(|c| c != ' ');
    (head.chars().count() == 12
        && label.ends_with(':')
        && !label.starts_with(' ')
        && label.len() < 12
        && value_starts)
        .then_some(12)
}

const RED: &str = "\u{1b}[1;31m";
const YELLOW: &str = "\u{1b}[1;33m";
const GREEN: &str = "\u{1b}[32m";
const CYAN: &str = "\u{1b}[36m";
const RESET: &str = "\u{1b}[0m";

/// Colour for what matters: the attention labels, a failed or unknown state, an unhealthy
/// check, errors, hints, a healthy idle state. Only whole known words are painted.
fn paint(part: &str, first: bool) -> String {
    let label = |l: &str, colour: &str| -> Option<String> {
        part.strip_prefix(l)
            .map(|rest| format!("{colour}{l}{RESET}{rest}"))
    };
    if first {
        for (l, c) in [
            ("ATTENTION:", RED),
            ("PINNED:", YELLOW),
            ("PAUSED:", YELLOW),
            ("error:", RED),
        ] {
            if let Some(s) = label(l, c) {
                return s;
            }
        }
        for (l, c) in [
            ("state:      failed", RED),
            ("state:      needs-attention", RED),
            ("state:      unknown", RED),
            ("state:      idle", GREEN),
        ] {
            if let Some(rest) = part.strip_prefix(l) {
                let (name, value) = l.split_at(12);
                return format!("{name}{c}{value}{RESET}{rest}");
            }
        }
    }
    let trimmed = part.trim_start();
    if let Some(rest) = trimmed.strip_prefix("hint:") {
        let at = part.len() - trimmed.len();
        return format!("{}{CYAN}hint:{RESET}{rest}", &part[..at]);
    }
    let mut s = part.to_string();
    for (word, colour) in [
        ("UNHEALTHY", RED),
        (" failed ", RED),
        ("rolled back", YELLOW),
    ] {
        if s.contains(word) {
            s = s.replacen(word, &format!("{colour}{word}{RESET}"), 1);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_wrap_on_words_under_their_value() {
        let line = "last run:   failed 22222222 (health, rolled back): health check failed: http http://127.0.0.1:8080/health: got HTTP 500";
        let parts = wrap(line, 80);
        assert!(parts.iter().all(|p| p.chars().count() <= 80), "{parts:#?}");
        assert!(parts[1].starts_with("            "), "{parts:#?}");
        assert!(!parts.iter().any(|p| p.ends_with("bac")), "{parts:#?}");
        assert_eq!(
            parts.join(" ").split_whitespace().collect::<Vec<_>>(),
            line.split_whitespace().collect::<Vec<_>>()
        );
        // Short lines and a width that fits are untouched.
        assert_eq!(wrap("host:       pi1", 80), ["host:       pi1"]);
        // A word longer than the width stands alone, never cut.
        let long = format!("system:     /nix/store/{}", "a".repeat(100));
        assert!(wrap(&long, 80).iter().any(|p| p.contains(&"a".repeat(100))));
    }

    #[test]
    fn colour_only_when_asked_and_only_on_what_matters() {
        let text = "ATTENTION:  drift: x\n  hint: do y\nstate:      failed: z\nhost:       pi1\n";
        assert_eq!(Style::PLAIN.apply(text), text);
        let coloured = Style {
            color: true,
            width: None,
        }
        .apply(text);
        assert!(
            coloured.starts_with("\u{1b}[1;31mATTENTION:\u{1b}[0m  drift: x\n"),
            "{coloured:?}"
        );
        assert!(
            coloured.contains("  \u{1b}[36mhint:\u{1b}[0m do y\n"),
            "{coloured:?}"
        );
        assert!(
            coloured.contains("state:      \u{1b}[1;31mfailed\u{1b}[0m: z\n"),
            "{coloured:?}"
        );
        assert!(coloured.contains("host:       pi1\n"), "{coloured:?}");
    }
}
