//! SSH host key pinning: a host key is accepted only when the configured known_hosts file
//! lists it for this host (plain names, `[host]:port`, or hashed `|1|salt|hash` entries).
//! Unknown and changed keys are refused: never trust on first use on a deploy path.

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
pub fn check(file: &Path, name: &str, key_type: &str, key: &[u8]) -> Result<Verdict, String> {
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
    let mut matched = false;
    for p in patterns.split(',') {
        if let Some(negated) = p.strip_prefix('!') {
            if negated.eq_ignore_ascii_case(name) {
                return false;
            }
        } else if p.eq_ignore_ascii_case(name) {
            matched = true;
        }
    }
    matched
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
    mac.update(name.as_bytes());
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
