//! The machine map committed in the homelab repository (`machines.toml` by default):
//! which `nixosConfigurations` entry each machine is, keyed by a stable hardware
//! identity. One entry per line, `#` comments:
//!
//! ```toml
//! serial-10000000abcdef01 = "pi1"   # the Pi's serial number
//! mac-dc-a6-32-01-02-03 = "pi2"     # a network interface's MAC address
//! ```
//!
//! A strict subset of TOML, read line by line so every error names its line: a bare (or
//! double-quoted) key, `=`, a double-quoted host name without escapes. No tables.

use std::collections::BTreeMap;
use std::fmt;

use crate::config::validate_host;
use crate::text::quote;

/// The largest map read from a commit (a map for hundreds of machines is a few KiB).
pub const MAX_BYTES: usize = 64 * 1024;

/// A hardware identity, normalised: `serial-<lowercase hex>` or `mac-aa-bb-cc-dd-ee-ff`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Identity {
    Serial(String),
    Mac(String),
}

impl Identity {
    /// Parses a map key or a value read from the machine; `Err` says why not.
    fn parse(key: &str) -> Result<Identity, String> {
        let lower = key.to_ascii_lowercase();
        if let Some(serial) = lower.strip_prefix("serial-") {
            return serial_number(serial).map(Identity::Serial).ok_or_else(|| {
                format!(
                    "invalid serial number {}: 1 to 32 hexadecimal digits",
                    quote(serial)
                )
            });
        }
        if let Some(mac) = lower.strip_prefix("mac-") {
            return mac_address(mac).map(Identity::Mac).ok_or_else(|| {
                format!(
                    "invalid MAC address {}: six hexadecimal pairs, as in mac-dc-a6-32-01-02-03",
                    quote(mac)
                )
            });
        }
        let kind = lower.split('-').next().unwrap_or_default();
        Err(format!(
            "unknown identity kind {} in {}: keys start with \"serial-\" or \"mac-\"",
            quote(kind),
            quote(key)
        ))
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Serial(s) => write!(f, "serial-{s}"),
            Identity::Mac(m) => write!(f, "mac-{m}"),
        }
    }
}

/// A serial number as lowercase hex, or `None`.
pub fn serial_number(text: &str) -> Option<String> {
    let s = text.trim().to_ascii_lowercase();
    let ok = !s.is_empty() && s.len() <= 32 && s.chars().all(|c| c.is_ascii_hexdigit());
    ok.then_some(s)
}

/// A MAC address (`:` or `-` separated) as `aa-bb-cc-dd-ee-ff`, or `None`.
pub fn mac_address(text: &str) -> Option<String> {
    let lower = text.trim().to_ascii_lowercase();
    let pairs: Vec<&str> = lower.split([':', '-']).collect();
    let ok = pairs.len() == 6
        && pairs
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    ok.then(|| pairs.join("-"))
}

/// A parsed map: identity → (host, line).
#[derive(Debug, Default, PartialEq)]
pub struct Map {
    entries: BTreeMap<Identity, (String, usize)>,
}

impl Map {
    /// The host of the first identity (in the order given) that the map lists.
    pub fn find<'a>(&'a self, ids: &'a [Identity]) -> Option<(&'a Identity, &'a str)> {
        ids.iter()
            .find_map(|id| self.entries.get(id).map(|(h, _)| (id, h.as_str())))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// An error in the map: its line (1-based) and what is wrong there.
#[derive(Debug, PartialEq, Eq)]
pub struct MapError {
    pub line: usize,
    pub message: String,
}

/// Parses the map text strictly; the first error wins.
pub fn parse(text: &str) -> Result<Map, MapError> {
    let mut map = Map::default();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let fail = |message: String| MapError { line, message };
        let content = strip_comment(raw).map_err(fail)?.trim();
        if content.is_empty() {
            continue;
        }
        if content.starts_with('[') {
            return Err(fail(
                "tables are not supported: write one `identity = \"host\"` per line".into(),
            ));
        }
        let (key, value) = content.split_once('=').ok_or_else(|| {
            fail(format!(
                "expected `identity = \"host\"`, found {}",
                quote(content)
            ))
        })?;
        let key = unquote(key.trim(), true).map_err(fail)?;
        let host = unquote(value.trim(), false).map_err(fail)?;
        let id = Identity::parse(&key).map_err(fail)?;
        validate_host(&host).map_err(|m| fail(format!("{}: {m}", quote(&key))))?;
        if let Some((_, first)) = map.entries.get(&id) {
            return Err(fail(format!(
                "{id} is listed twice (first on line {first})"
            )));
        }
        map.entries.insert(id, (host, line));
    }
    Ok(map)
}

/// The line without its `#` comment; a `#` inside a double-quoted string is kept.
fn strip_comment(line: &str) -> Result<&str, String> {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return Ok(&line[..i]),
            _ => {}
        }
    }
    if quoted {
        return Err("unterminated string".into());
    }
    Ok(line)
}

/// A key (bare or double-quoted) or a value (double-quoted only), without escapes.
fn unquote(text: &str, bare_ok: bool) -> Result<String, String> {
    if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        if inner.contains(['"', '\\']) || inner.chars().any(char::is_control) {
            return Err(format!(
                "{}: quotes, backslashes and control characters are not allowed",
                quote(text)
            ));
        }
        return Ok(inner.to_string());
    }
    let bare = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    match (bare_ok, bare) {
        (true, true) => Ok(text.to_string()),
        (true, false) => Err(format!(
            "invalid key {}: letters, digits, '-' and '_', or a double-quoted string",
            quote(text)
        )),
        (false, _) => Err(format!(
            "the host must be a double-quoted name, as in \"pi1\"; found {}",
            quote(text)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Identity {
        Identity::parse(s).unwrap()
    }

    #[test]
    fn parses_entries_comments_and_quoted_keys() {
        let map = parse(
            "# machines\n\nserial-10000000ABCDEF01 = \"pi1\"  # kitchen\n\"mac-DC:A6:32:01:02:03\" = \"pi2\"\n",
        )
        .unwrap();
        assert_eq!(map.len(), 2);
        let ids = [id("serial-10000000abcdef01")];
        assert_eq!(map.find(&ids).map(|(_, h)| h), Some("pi1"));
        let ids = [id("serial-ff"), id("mac-dc-a6-32-01-02-03")];
        assert_eq!(
            map.find(&ids).map(|(i, h)| (i.to_string(), h)),
            Some(("mac-dc-a6-32-01-02-03".into(), "pi2"))
        );
        assert_eq!(map.find(&[id("serial-ff")]), None);
    }

    #[test]
    fn errors_name_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("uuid-1234 = \"pi1\"\n", 1, "unknown identity kind \"uuid\""),
            ("\nserial-xyz = \"pi1\"\n", 2, "invalid serial number"),
            ("mac-dc-a6 = \"pi1\"\n", 1, "invalid MAC address"),
            ("serial-01 = \"a.b\"\n", 1, "invalid host name \"a.b\""),
            ("serial-01 = pi1\n", 1, "double-quoted"),
            ("serial-01 \"pi1\"\n", 1, "expected `identity = \"host\"`"),
            ("[machines]\n", 1, "tables are not supported"),
            (
                "serial-01 = \"pi1\"\nserial-01 = \"pi2\"\n",
                2,
                "listed twice (first on line 1)",
            ),
            ("serial-01 = \"pi1\n", 1, "unterminated string"),
            ("serial-01 = \"p\\i\"\n", 1, "backslashes"),
            ("ser ial = \"pi1\"\n", 1, "invalid key"),
        ];
        for (text, line, needle) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e.line, *line, "{text:?}: {e:?}");
            assert!(e.message.contains(needle), "{text:?}: {}", e.message);
        }
    }

    #[test]
    fn identities_normalise() {
        assert_eq!(
            mac_address("DC:A6:32:01:02:03").as_deref(),
            Some("dc-a6-32-01-02-03")
        );
        assert_eq!(mac_address("dc-a6-32-01-02"), None);
        assert_eq!(
            serial_number(" 10000000ABCDEF01\n").as_deref(),
            Some("10000000abcdef01")
        );
        assert_eq!(serial_number(""), None);
        assert_eq!(
            id("MAC-dc-a6-32-01-02-03").to_string(),
            "mac-dc-a6-32-01-02-03"
        );
    }

    #[test]
    fn never_panics_on_odd_text() {
        for text in [
            "=",
            "\"",
            "\"\" = \"\"",
            "# only",
            "a=\"b\"=\"c\"",
            "é = \"x\"",
            "serial-=\"x\"",
        ] {
            let _ = parse(text);
        }
    }
}
