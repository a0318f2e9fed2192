//! The difference between two systems' closures: packages added, removed, and whose
//! versions changed, and the size difference.
//!
//! From `nix path-info --json --recursive PATH` of each system (JSON, not the text of
//! `nix store diff-closures`): Nix 2.8 prints an array of `{"path", "narSize", …}`,
//! Nix 2.19+ an object keyed by the path (`{"/nix/store/…": {"narSize", …}}`); both are
//! read. Packages are told apart as nix's `diff-closures` does: a store path's name is
//! split at the first `-` followed by a digit into a package name and a version.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::process::Cmd;

/// The most JSON read for one closure (a NixOS closure is a few thousand paths of a few
/// hundred bytes each, their references included).
const MAX_JSON: u64 = 64 << 20;
/// How long one `nix path-info` may take.
const TIMEOUT: Duration = Duration::from_secs(300);
/// The most paths read from one closure.
const MAX_PATHS: usize = 200_000;

/// One store path of a closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub path: String,
    pub nar_size: u64,
}

/// A package's versions before and after (an empty version: the name has none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub name: String,
    pub before: Vec<String>,
    pub after: Vec<String>,
    /// Size after minus size before, in bytes.
    pub size_delta: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClosureDiff {
    /// Packages only in the new closure, with their versions.
    pub added: Vec<Change>,
    /// Packages only in the live closure.
    pub removed: Vec<Change>,
    /// Packages in both whose versions differ.
    pub changed: Vec<Change>,
    /// Paths in each closure.
    pub paths_before: usize,
    pub paths_after: usize,
    /// NAR sizes in bytes of each whole closure, and the difference.
    pub size_before: u64,
    pub size_after: u64,
    pub size_delta: i64,
}

/// `/nix/store/<hash>-openssl-3.0.13` → (`openssl`, `3.0.13`); a name without a version
/// (`etc`, `nixos-system-pi1`… with no digit after a `-`) has `""`.
pub fn split_name(path: &str) -> (String, String) {
    let base = path.rsplit('/').next().unwrap_or(path);
    let name = match base.split_once('-') {
        Some((hash, rest)) if hash.len() == 32 => rest,
        _ => base,
    };
    let bytes = name.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'-' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
            return (name[..i].to_string(), name[i + 1..].to_string());
        }
    }
    (name.to_string(), String::new())
}

/// Parses `nix path-info --json` of either shape (see the module doc).
fn parse_path_info(json: &str) -> Result<Vec<PathInfo>, String> {
    let value: Value = serde_json::from_str(json.trim())
        .map_err(|e| format!("cannot parse `nix path-info --json` output: {e}"))?;
    let size = |v: &Value| v.get("narSize").and_then(Value::as_u64).unwrap_or(0);
    let infos: Vec<PathInfo> = match &value {
        Value::Array(items) => items
            .iter()
            .filter_map(|v| {
                Some(PathInfo {
                    path: v.get("path")?.as_str()?.to_string(),
                    nar_size: size(v),
                })
            })
            .collect(),
        Value::Object(map) => map
            .iter()
            // A path that is not valid is `null` in the newer shape.
            .filter(|(_, v)| v.is_object())
            .map(|(path, v)| PathInfo {
                path: path.clone(),
                nar_size: size(v),
            })
            .collect(),
        _ => return Err("`nix path-info --json` printed neither an array nor an object".into()),
    };
    if infos.len() > MAX_PATHS {
        return Err(format!(
            "the closure has {} paths, more than the {MAX_PATHS} read",
            infos.len()
        ));
    }
    Ok(infos)
}

/// The closure of `system` (which must be in the store), from nix.
pub(super) async fn closure(system: &Path) -> Result<Vec<PathInfo>, String> {
    let done = Cmd::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "path-info",
            "--json",
            "--recursive",
        ])
        .arg(system)
        .timeout(TIMEOUT)
        .capture_stdout()
        .max_stdout(MAX_JSON)
        .run_ok()
        .await
        .map_err(|e| format!("reading the closure of {}: {e}", system.display()))?;
    if done.stdout_truncated {
        return Err(format!(
            "reading the closure of {}: more than {} MiB of JSON",
            system.display(),
            MAX_JSON >> 20
        ));
    }
    parse_path_info(&done.stdout).map_err(|e| format!("{}: {e}", system.display()))
}

/// Per package name: its versions and its size.
fn packages(closure: &[PathInfo]) -> BTreeMap<String, (BTreeSet<String>, u64)> {
    let mut out: BTreeMap<String, (BTreeSet<String>, u64)> = BTreeMap::new();
    for p in closure {
        let (name, version) = split_name(&p.path);
        let entry = out.entry(name).or_default();
        entry.0.insert(version);
        entry.1 = entry.1.saturating_add(p.nar_size);
    }
    out
}

/// What changes from the `before` closure (the live system) to `after` (the commit's).
pub fn diff(before: &[PathInfo], after: &[PathInfo]) -> ClosureDiff {
    let (old, new) = (packages(before), packages(after));
    let delta =
        |a: u64, b: u64| (b as i128 - a as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>();
    let mut d = ClosureDiff::default();
    for (name, (versions, size)) in &new {
        match old.get(name) {
            None => d.added.push(Change {
                name: name.clone(),
                before: vec![],
                after: list(versions),
                size_delta: delta(0, *size),
            }),
            Some((was, was_size)) if was != versions => d.changed.push(Change {
                name: name.clone(),
                before: list(was),
                after: list(versions),
                size_delta: delta(*was_size, *size),
            }),
            Some(_) => {}
        }
    }
    for (name, (versions, size)) in &old {
        if !new.contains_key(name) {
            d.removed.push(Change {
                name: name.clone(),
                before: list(versions),
                after: vec![],
                size_delta: delta(*size, 0),
            });
        }
    }
    let total = |c: &[PathInfo]| c.iter().fold(0u64, |s, p| s.saturating_add(p.nar_size));
    d.paths_before = before.len();
    d.paths_after = after.len();
    d.size_before = total(before);
    d.size_after = total(after);
    d.size_delta = delta(d.size_before, d.size_after);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, size: u64) -> PathInfo {
        PathInfo {
            path: format!("/nix/store/{}-{name}", "a".repeat(32)),
            nar_size: size,
        }
    }

    #[test]
    fn names_split_at_the_first_dash_before_a_digit() {
        let cases = [
            (
                "/nix/store/00000000000000000000000000000000-openssl-3.0.13",
                ("openssl", "3.0.13"),
            ),
            (
                "/nix/store/00000000000000000000000000000000-linux-6.6.1-modules",
                ("linux", "6.6.1-modules"),
            ),
            (
                "/nix/store/00000000000000000000000000000000-nixos-system-pi1-24.05",
                ("nixos-system-pi1", "24.05"),
            ),
            (
                "/nix/store/00000000000000000000000000000000-etc",
                ("etc", ""),
            ),
            (
                "/nix/store/00000000000000000000000000000000-python3.11-foo-1.2",
                ("python3.11-foo", "1.2"),
            ),
        ];
        for (path, (name, version)) in cases {
            assert_eq!(
                split_name(path),
                (name.to_string(), version.to_string()),
                "{path}"
            );
        }
    }

    #[test]
    fn added_removed_changed_and_size() {
        let before = [p("openssl-3.0.13", 100), p("grafana-10.1", 50), p("etc", 5)];
        let after = [
            p("openssl-3.0.14", 110),
            p("prometheus-2.50", 70),
            p("etc", 5),
        ];
        let d = diff(&before, &after);
        assert_eq!(d.added.len(), 1);
        assert_eq!(d.added[0].name, "prometheus");
        assert_eq!(d.added[0].after, ["2.50"]);
        assert_eq!(d.removed[0].name, "grafana");
        assert_eq!(d.removed[0].size_delta, -50);
        assert_eq!(d.changed.len(), 1, "etc is the same: {d:?}");
        assert_eq!(
            (
                d.changed[0].before.as_slice(),
                d.changed[0].after.as_slice()
            ),
            (
                ["3.0.13".to_string()].as_slice(),
                ["3.0.14".to_string()].as_slice()
            )
        );
        assert_eq!((d.size_before, d.size_after, d.size_delta), (155, 185, 30));
        assert_eq!(
            diff(&after, &after),
            ClosureDiff {
                paths_before: 3,
                paths_after: 3,
                size_before: 185,
                size_after: 185,
                ..ClosureDiff::default()
            }
        );
    }

    /// Nix 2.8's array and Nix 2.19+'s object.
    #[test]
    fn parses_both_path_info_shapes() {
        let old = r#"[{"path":"/nix/store/x-a-1","narSize":10,"references":[]},{"path":"/nix/store/y-b","narSize":5}]"#;
        let new = r#"{"/nix/store/x-a-1":{"narSize":10,"references":[]},"/nix/store/y-b":{"narSize":5},"/nix/store/z-c":null}"#;
        let mut a = parse_path_info(old).unwrap();
        let mut b = parse_path_info(new).unwrap();
        a.sort_by(|x, y| x.path.cmp(&y.path));
        b.sort_by(|x, y| x.path.cmp(&y.path));
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
        let e = parse_path_info("warning: x").unwrap_err();
        assert!(
            e.contains("cannot parse `nix path-info --json` output"),
            "{e}"
        );
        let e = parse_path_info("42").unwrap_err();
        assert!(e.contains("neither an array nor an object"), "{e}");
    }
}
