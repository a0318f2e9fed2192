//! The commit the running system says it was built from: `system.configurationRevision`,
//! read from files inside the system itself (no process): first the file our version
//! module writes (`<system>/etc/homelab-agent/configuration-revision`, see
//! modules/version.nix), then the JSON that NixOS bakes into `nixos-version --json`
//! (`<system>/sw/bin/nixos-version`). Only a full commit id counts: a dirty tree's
//! `<rev>-dirty` or a missing stamp gives no floor.
//!
//! The script is read, never run, and only one form in it counts (docs/security.md):
//! a line that, trimmed, is a whole JSON object (NixOS writes `builtins.toJSON` of the
//! version info on one line, in the `--json)` case's here-document) with a string
//! `configurationRevision` of 40 hex digits. Lines are looked at in order, within the
//! first 64 KiB; the first such line wins. Nothing else is read: not the
//! `--configurationRevision)` case's `echo`, not a JSON object spread over lines.

use std::path::{Path, PathBuf};

/// Where our version module puts the stamp, relative to the system.
pub const STAMP: &str = "etc/homelab-agent/configuration-revision";
/// NixOS's `nixos-version` script, whose `--json` answer is baked into it.
pub const NIXOS_VERSION: &str = "sw/bin/nixos-version";

/// The stamped commit of `system` (e.g. `/run/current-system`) and the file it came from.
pub fn read(system: &Path) -> Option<(String, PathBuf)> {
    let stamp = system.join(STAMP);
    if let Ok(bytes) = super::read_small(&stamp, 4096) {
        let text = String::from_utf8_lossy(&bytes);
        return full_commit(text.trim()).map(|c| (c, stamp));
    }
    let script = system.join(NIXOS_VERSION);
    let bytes = super::read_small(&script, 64 << 10).ok()?;
    from_nixos_version(&String::from_utf8_lossy(&bytes)).map(|c| (c, script))
}

/// `configurationRevision` from the one-line JSON object in a `nixos-version` script.
pub fn from_nixos_version(script: &str) -> Option<String> {
    script
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| {
            v.get("configurationRevision")
                .and_then(|r| r.as_str())
                .and_then(full_commit)
        })
}

fn full_commit(s: &str) -> Option<String> {
    (s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REV: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn our_stamp_first_then_nixos_version() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        assert_eq!(read(sys), None);
        std::fs::create_dir_all(sys.join("sw/bin")).unwrap();
        std::fs::write(
            sys.join(NIXOS_VERSION),
            format!("#! /bin/sh\ncase \"$1\" in\n  --json)\n    cat <<EOF\n{{\"configurationRevision\":\"{REV}\",\"nixosVersion\":\"24.11\"}}\nEOF\n    ;;\nesac\n"),
        )
        .unwrap();
        assert_eq!(
            read(sys).unwrap(),
            (REV.to_string(), sys.join(NIXOS_VERSION))
        );
        std::fs::create_dir_all(sys.join("etc/homelab-agent")).unwrap();
        let other = "fedcba9876543210fedcba9876543210fedcba98";
        std::fs::write(sys.join(STAMP), format!("{other}\n")).unwrap();
        assert_eq!(read(sys).unwrap().0, other);
    }

    /// NixOS's own script (nixos/modules/installer/tools/nixos-version.sh, substituted),
    /// with `json` as the here-document's line and `rev` in the `echo` case.
    fn nixos_script(json: &str, rev: &str) -> String {
        format!(
            "#! /nix/store/x-bash/bin/sh\n\nif [ $# -eq 0 ]; then\n    echo \"24.11.20241201.abcdef0 (Vicuna)\"\n    exit 0\nfi\n\n\
             case \"$1\" in\n  --configurationRevision)\n    if ! [[ {rev} =~ ^[0-9a-f]+$ ]]; then\n      echo \"$0: configuration commit hash is unknown\" >&2\n      exit 1\n    fi\n    echo \"{rev}\"\n    ;;\n  \
             --json)\n    cat <<EOF\n{json}\nEOF\n    ;;\nesac\n"
        )
    }

    #[test]
    fn exactly_the_documented_form_of_nixos_version_is_read() {
        let upper = REV.to_ascii_uppercase();
        let line = |rev: &str| {
            format!("{{\"codeName\":\"Vicuna\",\"configurationRevision\":\"{rev}\",\"nixosVersion\":\"24.11\"}}")
        };
        let read_as: Vec<(String, Option<&str>)> = vec![
            // The form NixOS writes.
            (nixos_script(&line(REV), REV), Some(REV)),
            // Indented, upper-case hex (lower-cased), other keys in any order.
            (
                nixos_script(&format!("   {}  ", line(&upper)), REV),
                Some(REV),
            ),
            // Refused: a dirty tree, a short id, no revision, not a string.
            (nixos_script(&line(&format!("{REV}-dirty")), ""), None),
            (nixos_script(&line("0123456"), ""), None),
            (nixos_script("{\"nixosVersion\":\"24.11\"}", ""), None),
            (nixos_script("{\"configurationRevision\":null}", ""), None),
            // Refused: the revision only in the `echo` case, or the JSON over lines.
            (nixos_script("{\"nixosVersion\":\"24.11\"}", REV), None),
            (
                nixos_script(
                    &format!("{{\n  \"configurationRevision\": \"{REV}\"\n}}"),
                    "",
                ),
                None,
            ),
            // Refused: not a whole object on its line.
            (nixos_script(&format!("x {}", line(REV)), ""), None),
        ];
        for (script, expected) in read_as {
            assert_eq!(from_nixos_version(&script).as_deref(), expected, "{script}");
        }
    }

    #[test]
    fn the_json_line_must_be_within_the_first_64_kib() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        std::fs::create_dir_all(sys.join("sw/bin")).unwrap();
        let line = format!("{{\"configurationRevision\":\"{REV}\"}}");
        let padded = format!("#!/bin/sh\n#{}\n{line}\n", "x".repeat(64 << 10));
        std::fs::write(sys.join(NIXOS_VERSION), padded).unwrap();
        assert_eq!(read(sys), None);
        std::fs::write(sys.join(NIXOS_VERSION), format!("#!/bin/sh\n{line}\n")).unwrap();
        assert_eq!(read(sys).map(|(c, _)| c).as_deref(), Some(REV));
    }

    #[test]
    fn only_full_commit_ids_count() {
        assert_eq!(full_commit(&format!("{REV}-dirty")), None);
        assert_eq!(full_commit("abc"), None);
        assert_eq!(from_nixos_version("{\"nixosVersion\":\"24.11\"}\n"), None);
    }
}
