//! SSH host key pinning: a host key is accepted only when the configured known_hosts file
//! lists it for this host. Unknown and changed keys are refused: never trust on first use
//! on a deploy path.
//!
//! The format is OpenSSH's (sshd(8), "SSH_KNOWN_HOSTS FILE FORMAT"): an optional marker
//! (`@revoked`; `@cert-authority` lines are skipped, certificates are not supported), a
//! comma-separated list of patterns, the key type, the base64 key, a comment. A pattern
//! is a name with `*` (any run of characters) and `?` (any one character) as wildcards,
//! matched case-insensitively against the whole host name (`host`, or `[host]:port` off
//! port 22); `!pattern` is a negation: a host matching it is not matched by the line even
//! when another pattern matches. A hashed name (`|1|base64(salt)|base64(HMAC-SHA1)`, as
//! `ssh-keygen -H` writes) stands alone and takes no wildcards nor negation.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};

/// What the known_hosts file says about a key a server presented.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Trusted,
    /// The host is listed, but with other keys: possibly an attack.
    Changed,
    Unknown,
    Revoked,
}

/// The name known_hosts uses for a host: `host`, or `[host]:port` off port 22.
pub fn host_name(host: &str, port: Option<u16>) -> String {
    match port {
        Some(p) if p != 22 => format!("[{host}]:{p}"),
        _ => host.to_string(),
    }
}

/// Checks `key` (the raw SSH wire blob) of type `key_type` (e.g. `ssh-ed25519`) for `name`.
pub(super) fn check(
    file: &Path,
    name: &str,
    key_type: &str,
    key: &[u8],
) -> Result<Verdict, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read known_hosts file {}: {e}", file.display()))?;
    Ok(check_text(&text, name, key_type, key))
}

pub fn check_text(text: &str, name: &str, key_type: &str, key: &[u8]) -> Verdict {
    let mut host_listed = false;
    // A revocation anywhere in the file wins over a line that lists the key (as in
    // OpenSSH): every line is read before the key is trusted.
    let mut trusted = false;
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let mut fields = line.split_whitespace();
        let (marker, patterns) = match fields.next() {
            Some(m) if m.starts_with('@') => (Some(m), fields.next()),
            other => (None, other),
        };
        let (Some(patterns), Some(ktype), Some(kdata)) = (patterns, fields.next(), fields.next())
        else {
            continue;
        };
        if marker == Some("@cert-authority") || !patterns_match(patterns, name) {
            continue;
        }
        let same_key = ktype == key_type && STANDARD.decode(kdata).is_ok_and(|k| k == key);
        match (marker, same_key) {
            (Some("@revoked"), true) => return Verdict::Revoked,
            (Some(_), _) => {}
            (None, true) => trusted = true,
            (None, false) => host_listed = true,
        }
    }
    if trusted {
        Verdict::Trusted
    } else if host_listed {
        Verdict::Changed
    } else {
        Verdict::Unknown
    }
}

fn patterns_match(patterns: &str, name: &str) -> bool {
    if let Some(hashed) = patterns.strip_prefix("|1|") {
        return hashed_match(hashed, name);
    }
    if patterns.starts_with('|') {
        // Another hashing scheme: nothing OpenSSH writes; never a match.
        return false;
    }
    let mut matched = false;
    for p in patterns.split(',').filter(|p| !p.is_empty()) {
        if let Some(negated) = p.strip_prefix('!') {
            if wildcard_match(negated, name) {
                return false;
            }
        } else if wildcard_match(p, name) {
            matched = true;
        }
    }
    matched
}

/// `pattern` (`*`: any run of characters, `?`: any one) against the whole of `name`,
/// ignoring ASCII case.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().map(|c| c.to_ascii_lowercase()).collect();
    let n: Vec<char> = name.chars().map(|c| c.to_ascii_lowercase()).collect();
    let (mut i, mut j) = (0, 0);
    // Where the last `*` was, and where in `name` it is being tried up to.
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || (p[i] != '*' && p[i] == n[j])) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            // Let that `*` take one more character.
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`, as `ssh-keygen -H` writes.
fn hashed_match(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    // ssh hashes the name lowercased, as it matches plain names.
    mac.update(name.to_ascii_lowercase().as_bytes());
    mac.verify_slice(&hash).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_B64: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIKZ0nZl1GcdGBXrQkz3hZpTqKfI0v7u7gXqkcb1qk4dG";

    fn key() -> Vec<u8> {
        STANDARD.decode(KEY_B64).unwrap()
    }

    #[test]
    fn plain_and_port_entries() {
        let text = format!("git.example.org,10.0.0.1 ssh-ed25519 {KEY_B64}\n[127.0.0.1]:2222 ssh-ed25519 {KEY_B64} c\n");
        assert_eq!(
            check_text(&text, "git.example.org", "ssh-ed25519", &key()),
            Verdict::Trusted
        );
        assert_eq!(
            check_text(
                &text,
                &host_name("127.0.0.1", Some(2222)),
                "ssh-ed25519",
                &key()
            ),
            Verdict::Trusted
        );
        assert_eq!(
            check_text(&text, "127.0.0.1", "ssh-ed25519", &key()),
            Verdict::Unknown
        );
        assert_eq!(
            check_text(&text, "git.example.org", "ssh-ed25519", b"other"),
            Verdict::Changed
        );
        assert_eq!(
            check_text(&text, "git.example.org", "ssh-rsa", &key()),
            Verdict::Changed
        );
    }

    #[test]
    fn hashed_entries() {
        // HMAC-SHA1 computed with the salt below for "git.example.org".
        let salt = b"0123456789abcdefghij";
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(salt).unwrap();
        mac.update(b"git.example.org");
        let hash = mac.finalize().into_bytes();
        let line = format!(
            "|1|{}|{} ssh-ed25519 {KEY_B64}",
            STANDARD.encode(salt),
            STANDARD.encode(hash)
        );
        assert_eq!(
            check_text(&line, "git.example.org", "ssh-ed25519", &key()),
            Verdict::Trusted
        );
        assert_eq!(
            check_text(&line, "evil.example.org", "ssh-ed25519", &key()),
            Verdict::Unknown
        );
    }

    #[test]
    fn wildcards() {
        for (pattern, name, expected) in [
            ("*", "git.example.org", true),
            ("*.example.org", "git.example.org", true),
            ("*.example.org", "example.org", false),
            ("*.EXAMPLE.org", "Git.example.ORG", true),
            ("git?.example.org", "git1.example.org", true),
            ("git?.example.org", "git.example.org", false),
            ("git?.example.org", "git12.example.org", false),
            ("10.0.0.*", "10.0.0.17", true),
            ("10.0.0.*", "10.0.1.17", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("**", "", true),
            ("?", "", false),
            ("[*.example.org]:2222", "[git.example.org]:2222", true),
            ("[*.example.org]:2222", "[git.example.org]:22", false),
            ("[*.example.org]:*", "git.example.org", false),
            ("git.example.org", "git.example.org.evil", false),
        ] {
            assert_eq!(
                wildcard_match(pattern, name),
                expected,
                "{pattern} against {name}"
            );
        }
        let text = format!("*.example.org,[10.0.0.?]:2222 ssh-ed25519 {KEY_B64}\n");
        for (name, verdict) in [
            ("git.example.org", Verdict::Trusted),
            ("[10.0.0.7]:2222", Verdict::Trusted),
            ("10.0.0.7", Verdict::Unknown),
            ("example.org", Verdict::Unknown),
        ] {
            assert_eq!(
                check_text(&text, name, "ssh-ed25519", &key()),
                verdict,
                "{name}"
            );
        }
        assert_eq!(
            check_text(&text, "git.example.org", "ssh-ed25519", b"other"),
            Verdict::Changed
        );
    }

    #[test]
    fn negation_wins_over_any_other_pattern_on_its_line() {
        let text = format!(
            "*.example.org,!evil*.example.org ssh-ed25519 {KEY_B64}\n\
             !git.example.org,*.example.org ssh-rsa AAAA\n"
        );
        assert_eq!(
            check_text(&text, "git.example.org", "ssh-ed25519", &key()),
            Verdict::Trusted,
            "a negation on another line applies to that line only"
        );
        assert_eq!(
            check_text(&text, "evil1.example.org", "ssh-ed25519", &key()),
            Verdict::Changed,
            "only the ssh-rsa line lists evil1"
        );
        let text = format!("!evil.example.org,* ssh-ed25519 {KEY_B64}\n");
        assert_eq!(
            check_text(&text, "evil.example.org", "ssh-ed25519", &key()),
            Verdict::Unknown
        );
        assert_eq!(
            check_text(&text, "good.example.org", "ssh-ed25519", &key()),
            Verdict::Trusted
        );
        // A line with only a negation matches nothing.
        let text = format!("!evil.example.org ssh-ed25519 {KEY_B64}\n");
        assert_eq!(
            check_text(&text, "good.example.org", "ssh-ed25519", &key()),
            Verdict::Unknown
        );
    }

    #[test]
    fn a_revocation_by_wildcard_wins_and_markers_are_told_apart() {
        let text =
            format!("git.example.org ssh-ed25519 {KEY_B64}\n@revoked * ssh-ed25519 {KEY_B64}\n");
        assert_eq!(
            check_text(&text, "git.example.org", "ssh-ed25519", &key()),
            Verdict::Revoked
        );
        // Revoked for other hosts only.
        let text = format!(
            "git.example.org ssh-ed25519 {KEY_B64}\n@revoked *,!git.example.org ssh-ed25519 {KEY_B64}\n"
        );
        assert_eq!(
            check_text(&text, "git.example.org", "ssh-ed25519", &key()),
            Verdict::Trusted
        );
        // A CA line is not a host key.
        let text = format!("@cert-authority * ssh-ed25519 {KEY_B64}\n");
        assert_eq!(
            check_text(&text, "git.example.org", "ssh-ed25519", &key()),
            Verdict::Unknown
        );
    }

    /// Entries hashed by the real `ssh-keygen -H` (plain and `[host]:port` names) are
    /// matched by their names only.
    #[test]
    fn hashed_entries_written_by_ssh_keygen() {
        let have = std::process::Command::new("ssh-keygen")
            .arg("-?")
            .output()
            .is_ok();
        if !have {
            assert!(
                std::env::var_os("HOMELAB_TEST_REQUIRE_ALL").is_none(),
                "ssh-keygen is required (HOMELAB_TEST_REQUIRE_ALL; tests/setup installs openssh-client)"
            );
            eprintln!("SKIP: ssh-keygen not found");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(
            &file,
            format!(
                "git.example.org ssh-ed25519 {KEY_B64}\n[10.0.0.1]:2222 ssh-ed25519 {KEY_B64}\n"
            ),
        )
        .unwrap();
        let out = std::process::Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hashed = std::fs::read_to_string(&file).unwrap();
        assert_eq!(hashed.lines().count(), 2, "{hashed}");
        assert!(
            hashed.lines().all(|l| l.starts_with("|1|")),
            "not hashed: {hashed}"
        );
        assert!(!hashed.contains("example.org"), "{hashed}");
        for (name, verdict) in [
            ("git.example.org", Verdict::Trusted),
            ("GIT.example.org", Verdict::Trusted),
            ("[10.0.0.1]:2222", Verdict::Trusted),
            (host_name("10.0.0.1", Some(2222)).as_str(), Verdict::Trusted),
            ("10.0.0.1", Verdict::Unknown),
            ("other.example.org", Verdict::Unknown),
        ] {
            assert_eq!(
                check(&file, name, "ssh-ed25519", &key()).unwrap(),
                verdict,
                "{name} in {hashed}"
            );
        }
        assert_eq!(
            check(&file, "git.example.org", "ssh-ed25519", b"other").unwrap(),
            Verdict::Changed
        );
        let err = check(&dir.path().join("missing"), "x", "ssh-ed25519", &key()).unwrap_err();
        assert!(err.starts_with("cannot read known_hosts file "), "{err}");
    }

    #[test]
    fn revoked_and_negated_and_garbage() {
        let text = format!("@revoked * ssh-ed25519 {KEY_B64}\n@revoked git.example.org ssh-ed25519 {KEY_B64}\nnot a line\n");
        assert_eq!(
            check_text(&text, "git.example.org", "ssh-ed25519", &key()),
            Verdict::Revoked
        );
        // Listed first, revoked after: still revoked.
        let text = format!(
            "git.example.org ssh-ed25519 {KEY_B64}\n@revoked git.example.org ssh-ed25519 {KEY_B64}\n"
        );
        assert_eq!(
            check_text(&text, "git.example.org", "ssh-ed25519", &key()),
            Verdict::Revoked
        );
        let neg = format!("!git.example.org,git.example.org ssh-ed25519 {KEY_B64}");
        assert_eq!(
            check_text(&neg, "git.example.org", "ssh-ed25519", &key()),
            Verdict::Unknown
        );
    }
}
