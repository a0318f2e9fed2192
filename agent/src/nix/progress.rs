//! nix's progress, read from `--log-format internal-json` as it comes: derivations built
//! of the total, paths fetched of the total and their bytes, the derivation being built.
//!
//! Each stderr line of nix is either plain text or `@nix {json}`, one of (Nix 2.8 and
//! 2.18+ alike, `src/libutil/logging.cc`'s `JSONLogger`):
//! - `{"action":"start","id":N,"type":T,"text":…,"fields":[…],"level":L}`: an activity
//!   of type T begins ([`act`]);
//! - `{"action":"stop","id":N}`;
//! - `{"action":"result","id":N,"type":R,"fields":[…]}`: a result of activity N
//!   ([`res`]): progress `[done, expected, running, failed]`, an expected count of
//!   another activity type `[type, expected]`, a builder's log line `[line]`;
//! - `{"action":"msg","level":L,"msg":…}`: a message; nix's errors are level 0.
//!
//! Counted as nix's own progress bar counts (`progress-bar.cc`): per activity type, what
//! stopped activities did plus what the live ones report, against the larger of that and
//! the expected totals announced by their parents.
//!
//! [`Tracker::line`] also turns each line back into the text nix would have printed
//! without internal-json (messages without colour codes, `name> line` for a builder's
//! log, an activity's own text), so the failure classification keeps reading text
//! ([`super::failure`]). Bounded: at most [`MAX_ACTIVITIES`] live activities are
//! tracked (nix starts one per path; more are counted only through their parents).

use std::collections::HashMap;

use serde_json::Value;

use crate::runtime::BuildProgress;

/// Activity types (`ActivityType` in nix's `logging.hh`).
pub mod act {
    pub const COPY_PATH: u64 = 100;
    pub const FILE_TRANSFER: u64 = 101;
    pub const COPY_PATHS: u64 = 103;
    pub const BUILDS: u64 = 104;
    pub const BUILD: u64 = 105;
    pub const SUBSTITUTE: u64 = 108;
}

/// Result types (`ResultType` in nix's `logging.hh`).
pub mod res {
    pub const BUILD_LOG_LINE: u64 = 101;
    pub const SET_PHASE: u64 = 104;
    pub const PROGRESS: u64 = 105;
    pub const SET_EXPECTED: u64 = 106;
    pub const POST_BUILD_LOG_LINE: u64 = 107;
}

/// Live activities tracked at most; nix keeps a few per path being built or fetched.
pub const MAX_ACTIVITIES: usize = 4096;
/// The longest name kept for the current derivation.
const MAX_NAME: usize = 120;
/// nix's level for ordinary messages (`lvlInfo`): what it prints by default.
const LEVEL_INFO: u64 = 3;

#[derive(Debug, Default)]
struct Activity {
    kind: u64,
    done: u64,
    expected: u64,
    failed: u64,
    /// Expected counts of other types this activity announced (`setExpected`).
    expected_of: Vec<(u64, u64)>,
    /// The derivation's or path's name (builds and substitutions).
    name: Option<String>,
}

/// Per activity type: what its stopped activities did, and what parents expect of it.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    done: u64,
    failed: u64,
    expected: u64,
}

#[derive(Debug, Default)]
pub struct Tracker {
    live: HashMap<String, Activity>,
    totals: HashMap<u64, Totals>,
    /// Builds and substitutions in the order they started (ids), for "now:".
    started: Vec<String>,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// Takes one line of nix's stderr; returns its text as nix would have printed it, if
    /// it prints anything (progress results print nothing).
    pub fn line(&mut self, line: &str) -> Option<String> {
        let Some(json) = line.strip_prefix("@nix ") else {
            return Some(line.to_string());
        };
        let Ok(v) = serde_json::from_str::<Value>(json) else {
            // Cut by the line cap, or not nix's: kept as text, never dropped.
            return Some(line.to_string());
        };
        // A number in Nix 2.8 and 2.18+; kept as its JSON text, so another form of id
        // (a remote daemon's activities are namespaced in newer versions) still matches.
        let id = v.get("id").map(Value::to_string).unwrap_or_default();
        let kind = v.get("type").and_then(Value::as_u64).unwrap_or(0);
        let fields = v.get("fields").and_then(Value::as_array);
        let field_u64 = |i: usize| fields.and_then(|f| f.get(i)).and_then(Value::as_u64);
        let field_str = |i: usize| fields.and_then(|f| f.get(i)).and_then(Value::as_str);
        match v.get("action").and_then(Value::as_str) {
            Some("msg") => v.get("msg").and_then(Value::as_str).map(plain),
            Some("start") => {
                let name = match kind {
                    act::BUILD | act::SUBSTITUTE => field_str(0).map(store_name),
                    _ => None,
                };
                if self.live.len() < MAX_ACTIVITIES {
                    if name.is_some() {
                        self.started.push(id.clone());
                    }
                    self.live.insert(
                        id,
                        Activity {
                            kind,
                            name,
                            ..Activity::default()
                        },
                    );
                }
                let level = v.get("level").and_then(Value::as_u64).unwrap_or(0);
                let text = v.get("text").and_then(Value::as_str).unwrap_or("");
                (level <= LEVEL_INFO && !text.is_empty()).then(|| plain(text))
            }
            Some("stop") => {
                self.stop(&id);
                None
            }
            Some("result") => match kind {
                res::BUILD_LOG_LINE | res::POST_BUILD_LOG_LINE => {
                    let text = plain(field_str(0).unwrap_or(""));
                    Some(match self.live.get(&id).and_then(|a| a.name.as_deref()) {
                        Some(name) => format!("{name}> {text}"),
                        None => text,
                    })
                }
                res::PROGRESS => {
                    if let Some(a) = self.live.get_mut(&id) {
                        a.done = field_u64(0).unwrap_or(0);
                        a.expected = field_u64(1).unwrap_or(0);
                        a.failed = field_u64(3).unwrap_or(0);
                    }
                    None
                }
                res::SET_EXPECTED => {
                    let (Some(of), Some(n)) = (field_u64(0), field_u64(1)) else {
                        return None;
                    };
                    let a = self.live.get_mut(&id)?;
                    let before = match a.expected_of.iter_mut().find(|(t, _)| *t == of) {
                        Some(e) => std::mem::replace(&mut e.1, n),
                        None => {
                            a.expected_of.push((of, n));
                            0
                        }
                    };
                    let t = self.totals.entry(of).or_default();
                    t.expected = t.expected.saturating_sub(before).saturating_add(n);
                    None
                }
                res::SET_PHASE => None,
                _ => None,
            },
            _ => None,
        }
    }

    fn stop(&mut self, id: &str) {
        let Some(a) = self.live.remove(id) else {
            return;
        };
        let t = self.totals.entry(a.kind).or_default();
        t.done = t.done.saturating_add(a.done);
        t.failed = t.failed.saturating_add(a.failed);
        for (of, n) in a.expected_of {
            let t = self.totals.entry(of).or_default();
            t.expected = t.expected.saturating_sub(n);
        }
        self.started.retain(|s| s != id);
    }

    /// (done, expected) of one activity type, as nix's progress bar counts it.
    fn stats(&self, kind: u64) -> (u64, u64) {
        let t = self.totals.get(&kind).copied().unwrap_or_default();
        let (mut done, mut expected) = (t.done, t.done);
        for a in self.live.values().filter(|a| a.kind == kind) {
            done = done.saturating_add(a.done);
            expected = expected.saturating_add(a.expected);
        }
        (done, expected.max(t.expected))
    }

    pub fn snapshot(&self) -> BuildProgress {
        let (derivations_built, derivations_total) = self.stats(act::BUILDS);
        let (paths_fetched, paths_total) = self.stats(act::COPY_PATHS);
        let (bytes_fetched, bytes_total) = self.stats(act::COPY_PATH);
        // The newest build, else the newest substitution.
        let newest = |kind: u64| {
            self.started
                .iter()
                .rev()
                .filter_map(|id| self.live.get(id))
                .find(|a| a.kind == kind)
                .and_then(|a| a.name.clone())
        };
        BuildProgress {
            derivations_built,
            derivations_total,
            paths_fetched,
            paths_total,
            bytes_fetched,
            bytes_total,
            current: newest(act::BUILD).or_else(|| newest(act::SUBSTITUTE)),
            at: Some(crate::state::now()),
        }
    }
}

/// `/nix/store/<hash>-linux-6.6.drv` → `linux-6.6` (control characters escaped, length
/// capped: it is shown in `status`).
fn store_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.strip_suffix(".drv").unwrap_or(base);
    let name = match base.split_once('-') {
        Some((hash, rest)) if hash.len() == 32 => rest,
        _ => base,
    };
    name.chars()
        .take(MAX_NAME)
        .flat_map(char::escape_default)
        .collect::<String>()
        .replace("\\'", "'")
        .replace("\\\"", "\"")
}

/// nix's text without its colour codes (`ESC [ … letter`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = include_str!("fixtures/internal-json-ok.txt");
    const FAIL: &str = include_str!("fixtures/internal-json-fail.txt");
    const EVAL: &str = include_str!("fixtures/internal-json-eval.txt");
    const SUBST: &str = include_str!("fixtures/internal-json-subst.txt");

    fn feed(capture: &str) -> (Tracker, Vec<String>) {
        let mut t = Tracker::new();
        let text = capture.lines().filter_map(|l| t.line(l)).collect();
        (t, text)
    }

    /// A real build (Nix 2.8) of the fake system (agent/fixtures/fake-system) with three
    /// packages: four derivations.
    #[test]
    fn counts_a_real_build_as_it_goes() {
        let mut t = Tracker::new();
        let mut seen_current = Vec::new();
        let mut max_total = 0;
        for line in OK.lines() {
            t.line(line);
            let s = t.snapshot();
            assert!(s.derivations_built <= s.derivations_total.max(4), "{s:?}");
            max_total = max_total.max(s.derivations_total);
            if let Some(c) = s.current {
                if seen_current.last() != Some(&c) {
                    seen_current.push(c);
                }
            }
        }
        let s = t.snapshot();
        assert_eq!((s.derivations_built, s.derivations_total), (4, 4), "{s:?}");
        assert_eq!(max_total, 4);
        assert_eq!(
            seen_current,
            [
                "grafana-10.1",
                "linux-6.6",
                "openssl-3.0.13",
                "nixos-system-pi1"
            ],
            "the derivation being built, in order"
        );
        assert_eq!(s.current, None, "nothing is being built at the end");
        assert_eq!((s.paths_fetched, s.paths_total), (0, 0));
    }

    #[test]
    fn a_build_part_way_through() {
        let mut t = Tracker::new();
        // Up to the start of the second package's build.
        for line in OK.lines() {
            t.line(line);
            if line.contains("linux-6.6.drv\",\"\",1,1]") {
                break;
            }
        }
        let s = t.snapshot();
        assert_eq!((s.derivations_built, s.derivations_total), (1, 4), "{s:?}");
        assert_eq!(s.current.as_deref(), Some("linux-6.6"));
        assert_eq!(
            s.summary(),
            "building 1/4 derivations, now: linux-6.6",
            "{s:?}"
        );
    }

    /// A real substitution from a file:// binary cache: four paths, and the bytes nix
    /// announced (it reports no byte progress for paths this small, so none are counted
    /// as fetched: as nix's own progress bar shows them).
    #[test]
    fn counts_paths_fetched_and_their_bytes() {
        let mut t = Tracker::new();
        let mut most_expected = 0;
        let mut names = Vec::new();
        for line in SUBST.lines() {
            t.line(line);
            let s = t.snapshot();
            assert!(s.paths_fetched <= s.paths_total, "{s:?}");
            assert!(s.bytes_fetched <= s.bytes_total, "{s:?}");
            most_expected = most_expected.max(s.bytes_total);
            if let Some(c) = s.current {
                if names.last() != Some(&c) {
                    names.push(c);
                }
            }
        }
        let s = t.snapshot();
        assert_eq!((s.paths_fetched, s.paths_total), (4, 4), "{s:?}");
        assert_eq!((s.derivations_built, s.derivations_total), (0, 0), "{s:?}");
        assert_eq!(most_expected, 792, "the NAR sizes nix announced");
        assert_eq!(names, ["dep-a", "dep-b", "dep-c", "nixos-system-pi1"]);
        assert_eq!(s.summary(), "fetched 4/4 paths (0.0 MiB)");
    }

    #[test]
    fn bytes_copied_are_counted_from_their_progress() {
        let mut t = Tracker::new();
        for line in [
            r#"@nix {"action":"start","id":1,"type":102,"text":""}"#,
            r#"@nix {"action":"result","id":1,"type":106,"fields":[100,3145728]}"#,
            r#"@nix {"action":"start","id":2,"type":100,"fields":["/nix/store/00000000000000000000000000000000-linux-6.6","https://cache","local"]}"#,
            r#"@nix {"action":"result","id":2,"type":105,"fields":[1048576,2097152,0,0]}"#,
        ] {
            t.line(line);
        }
        let s = t.snapshot();
        assert_eq!(
            (s.bytes_fetched, s.bytes_total),
            (1 << 20, 3 << 20),
            "{s:?}"
        );
        t.line(r#"@nix {"action":"result","id":2,"type":105,"fields":[2097152,2097152,0,0]}"#);
        t.line(r#"@nix {"action":"stop","id":2}"#);
        let s = t.snapshot();
        assert_eq!(
            (s.bytes_fetched, s.bytes_total),
            (2 << 20, 3 << 20),
            "{s:?}"
        );
    }

    /// The text nix would have printed: the error, without colour codes, and the
    /// builder's log lines prefixed with its name, as `--print-build-logs` prints them.
    #[test]
    fn a_failed_build_keeps_the_error_and_the_builders_log_as_text() {
        let (_, text) = feed(FAIL);
        let text = text.join("\n");
        assert!(
            text.contains(
                "error: builder for '/nix/store/q0vgi9vz4dm6yziyr87qj5cn93yss3pd-nixos-system-pi2.drv' failed with exit code 3"
            ),
            "{text}"
        );
        assert!(text.contains("nixos-system-pi2> boom"), "{text}");
        assert!(
            text.contains(
                "building '/nix/store/q0vgi9vz4dm6yziyr87qj5cn93yss3pd-nixos-system-pi2.drv'"
            ),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'), "colour codes left: {text:?}");
        assert!(!text.contains("@nix"), "{text}");
        // The failure classification reads it as before.
        assert!(super::super::failure::from_text(&text, String::new())
            .to_string()
            .starts_with("build failed"));
    }

    #[test]
    fn an_evaluation_error_is_text_again() {
        let (t, text) = feed(EVAL);
        assert_eq!(
            text,
            [
                "warning: Git tree '/tmp/capture/flake' is dirty",
                "error: deliberate eval error in pi1"
            ]
        );
        assert_eq!(t.snapshot().summary(), "evaluating");
        assert!(
            super::super::failure::from_text(&text.join("\n"), String::new())
                .to_string()
                .starts_with("evaluation failed")
        );
    }

    #[test]
    fn odd_lines_never_panic_and_stay_text() {
        let mut t = Tracker::new();
        for line in [
            "@nix {",
            "@nix []",
            "@nix {\"action\":\"result\",\"id\":1,\"type\":106,\"fields\":[\"x\"]}",
            "@nix {\"action\":\"start\",\"id\":1,\"type\":105,\"fields\":[7]}",
            "@nix {\"action\":\"result\",\"id\":1,\"type\":105,\"fields\":[18446744073709551615,1]}",
            "@nix {\"action\":\"stop\",\"id\":99}",
            "plain text",
        ] {
            t.line(line);
        }
        assert_eq!(t.line("@nix {").as_deref(), Some("@nix {"));
        assert_eq!(t.line("plain").as_deref(), Some("plain"));
        let _ = t.snapshot().summary();
    }

    #[test]
    fn an_id_that_is_not_a_number_still_matches() {
        let mut t = Tracker::new();
        t.line(r#"@nix {"action":"start","id":"ssh-ng://pi:7","type":105,"fields":["/nix/store/00000000000000000000000000000000-linux-6.6.drv"]}"#);
        assert_eq!(t.snapshot().current.as_deref(), Some("linux-6.6"));
        t.line(r#"@nix {"action":"stop","id":"ssh-ng://pi:7"}"#);
        assert_eq!(t.snapshot().current, None);
    }

    #[test]
    fn live_activities_are_bounded() {
        let mut t = Tracker::new();
        for id in 0..(MAX_ACTIVITIES as u64 + 100) {
            t.line(&format!(
                "@nix {{\"action\":\"start\",\"id\":{id},\"type\":105,\"fields\":[\"/nix/store/{}-x.drv\"]}}",
                "a".repeat(32)
            ));
        }
        assert_eq!(t.live.len(), MAX_ACTIVITIES);
        assert_eq!(t.started.len(), MAX_ACTIVITIES);
    }

    #[test]
    fn names_lose_hash_and_control_characters() {
        assert_eq!(
            store_name("/nix/store/6049mz9jgsiyjb608zl08mz9csr2n5yl-linux-6.6.drv"),
            "linux-6.6"
        );
        assert_eq!(
            store_name("/nix/store/short-x\u{1b}[31m"),
            "short-x\\u{1b}[31m"
        );
        assert_eq!(plain("\u{1b}[31;1merror:\u{1b}[0m x"), "error: x");
    }
}
