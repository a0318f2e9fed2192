//! Whether nix would accept a store path from a binary cache, by nix's own rule (its
//! substitution goal): accepted when signatures are not required (`require-sigs =
//! false`), when the substituter is marked trusted (`?trusted=1` on its URL), or when one
//! of the path's signatures is by a key nix trusts *and verifies*: ed25519 over the
//! path's fingerprint
//!
//! ```text
//! 1;<store path>;<narHash as sha256:nix-base32>;<narSize>;<references as store paths, sorted, comma-separated>
//! ```
//!
//! Keys are looked up by name, as nix does (a signature names its key; nix keeps one key
//! per name, the first given), then the signature itself is checked with
//! `ed25519-dalek`: a name alone proves nothing.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};

/// Where nix's store is (the fingerprint names references by their full paths).
const STORE_DIR: &str = "/nix/store";

/// The public keys nix trusts, by name.
#[derive(Debug, Clone, Default)]
pub struct Keys(BTreeMap<String, VerifyingKey>);

impl Keys {
    /// Adds a `trusted-public-keys` entry (`name:base64 of 32 bytes`); the first key of a
    /// name wins, as in nix. A malformed entry is an error saying which.
    pub(super) fn add_public(&mut self, entry: &str) -> Result<(), String> {
        let (name, bytes) = split_key(entry)?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!("trusted public key {name:?} is {} bytes, not 32", b.len())
        })?;
        let key = VerifyingKey::from_bytes(&key)
            .map_err(|e| format!("trusted public key {name:?} is not an ed25519 key: {e}"))?;
        self.0.entry(name.to_string()).or_insert(key);
        Ok(())
    }

    /// Adds the public half of a `secret-key-files` key (`name:base64 of 64 bytes`, the
    /// seed then the public key): nix trusts its own signing keys too.
    pub(super) fn add_secret(&mut self, text: &str) -> Result<(), String> {
        let (name, bytes) = split_key(text.trim())?;
        if bytes.len() != 64 {
            return Err(format!(
                "secret key {name:?} is {} bytes, not 64",
                bytes.len()
            ));
        }
        let public: [u8; 32] = bytes[32..].try_into().expect("32 bytes");
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|e| format!("secret key {name:?} has no valid public half: {e}"))?;
        self.0.entry(name.to_string()).or_insert(key);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `signature` (`name:base64`) is by a trusted key and verifies over
    /// `fingerprint`.
    pub fn verifies(&self, fingerprint: &str, signature: &str) -> bool {
        let Some((name, sig)) = signature.split_once(':') else {
            return false;
        };
        let Some(key) = self.0.get(name) else {
            return false;
        };
        let Ok(sig) = BASE64.decode(sig) else {
            return false;
        };
        let Ok(sig) = Signature::from_slice(&sig) else {
            return false;
        };
        key.verify(fingerprint.as_bytes(), &sig).is_ok()
    }
}

/// `name:base64` → (name, bytes).
fn split_key(entry: &str) -> Result<(&str, Vec<u8>), String> {
    let (name, data) = entry
        .split_once(':')
        .filter(|(name, _)| !name.is_empty())
        // Not quoted: it could be a secret key put in the wrong place.
        .ok_or_else(|| "a key is not NAME:BASE64".to_string())?;
    let bytes = BASE64
        .decode(data)
        .map_err(|e| format!("key {name:?} is not base64: {e}"))?;
    Ok((name, bytes))
}

/// Text from outside (a setting, a cache's answer) for a message: at most 200
/// characters, quoted, control characters escaped.
pub(super) fn shown(text: &str) -> String {
    let cut: String = text.chars().take(200).collect();
    match cut.len() < text.len() {
        true => format!("{cut:?}…"),
        false => format!("{cut:?}"),
    }
}

/// What a binary cache says of one path (`nix path-info --json --store URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub path: String,
    /// `sha256:<nix-base32>`, as the fingerprint has it (`None`: absent or unreadable).
    pub nar_hash: Option<String>,
    pub nar_size: u64,
    /// Full store paths.
    pub references: Vec<String>,
    pub signatures: Vec<String>,
}

impl PathInfo {
    /// The text nix signs; `None` when the cache did not say enough to make it.
    pub fn fingerprint(&self) -> Option<String> {
        let hash = self.nar_hash.as_ref()?;
        if self.nar_size == 0 {
            return None;
        }
        let mut refs = self.references.clone();
        refs.sort();
        Some(format!(
            "1;{};{hash};{};{}",
            self.path,
            self.nar_size,
            refs.join(",")
        ))
    }

    /// Whether nix would take this path from a substituter (`trusted`: the substituter
    /// is marked `?trusted=1`).
    pub fn accepted(&self, keys: &Keys, require_sigs: bool, trusted: bool) -> bool {
        if !require_sigs || trusted {
            return true;
        }
        let Some(fingerprint) = self.fingerprint() else {
            return false;
        };
        self.signatures
            .iter()
            .any(|s| keys.verifies(&fingerprint, s))
    }
}

/// The paths a cache has, from `nix path-info --json`: an array of `{path, …}` (2.8 to
/// 2.18) or an object keyed by path (2.19+); paths it lacks (`"valid": false`, null) are
/// left out.
pub(super) fn path_infos(json: &str) -> Result<Vec<PathInfo>, String> {
    let value: serde_json::Value =
        serde_json::from_str(json.trim()).map_err(|e| format!("`nix path-info --json`: {e}"))?;
    let entries: Vec<(String, &serde_json::Value)> = match &value {
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|e| Some((e.get("path")?.as_str()?.to_string(), e)))
            .collect(),
        serde_json::Value::Object(o) => o.iter().map(|(k, v)| (k.clone(), v)).collect(),
        _ => return Err("`nix path-info --json`: neither an array nor an object".into()),
    };
    Ok(entries
        .into_iter()
        .filter(|(_, info)| info.is_object() && info.get("valid") != Some(&false.into()))
        .map(|(path, info)| {
            let strings = |key: &str| -> Vec<String> {
                info.get(key)
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            PathInfo {
                path,
                nar_hash: info.get("narHash").and_then(nar_hash),
                nar_size: info.get("narSize").and_then(|n| n.as_u64()).unwrap_or(0),
                references: strings("references")
                    .into_iter()
                    .map(|r| match r.starts_with('/') {
                        true => r,
                        false => format!("{STORE_DIR}/{r}"),
                    })
                    .collect(),
                signatures: strings("signatures"),
            }
        })
        .collect())
}

/// `narHash` as a string (nix up to 2.32) or structured (newer nix:
/// `{"algorithm": "sha256", "format": "base16" | "base64" | "nix32", "hash": …}`).
fn nar_hash(value: &serde_json::Value) -> Option<String> {
    if let Some(text) = value.as_str() {
        return sha256_base32(text);
    }
    if value.get("algorithm")?.as_str()? != "sha256" {
        return None;
    }
    let hash = value.get("hash")?.as_str()?;
    match value.get("format")?.as_str()? {
        "base16" | "nix32" | "base32" => sha256_base32(&format!("sha256:{hash}")),
        "base64" => sha256_base32(&format!("sha256-{hash}")),
        "sri" => sha256_base32(hash),
        _ => None,
    }
}

/// A SHA-256 in any of nix's forms (`sha256-<base64>` as nix 2.8+ prints in JSON,
/// `sha256:<nix-base32 | hex | base64>`) as `sha256:<nix-base32>`.
pub fn sha256_base32(hash: &str) -> Option<String> {
    let bytes = if let Some(b64) = hash.strip_prefix("sha256-") {
        BASE64.decode(b64).ok()?
    } else {
        let digits = hash.strip_prefix("sha256:")?;
        match digits.len() {
            52 if digits.bytes().all(|b| BASE32_CHARS.contains(&b)) => {
                return Some(hash.to_string())
            }
            64 => hex(digits)?,
            44 => BASE64.decode(digits).ok()?,
            _ => return None,
        }
    };
    (bytes.len() == 32).then(|| format!("sha256:{}", nix_base32(&bytes)))
}

fn hex(digits: &str) -> Option<Vec<u8>> {
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(digits.get(i..i + 2)?, 16).ok())
        .collect()
}

const BASE32_CHARS: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Nix's base-32 (its own alphabet, least significant bits last).
pub fn nix_base32(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return String::new();
    }
    let len = (bytes.len() * 8 - 1) / 5 + 1;
    (0..len)
        .rev()
        .map(|n| {
            let (i, j) = (n * 5 / 8, n * 5 % 8);
            let low = bytes[i] >> j;
            let high = match bytes.get(i + 1) {
                Some(&b) if j > 0 => ((b as u16) << (8 - j)) as u8,
                _ => 0,
            };
            BASE32_CHARS[((low | high) & 0x1f) as usize] as char
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with nix 2.8: `nix key generate-secret --key-name test-1`, `nix store add-file`,
    // `nix copy --to file://…`, `nix store sign --key-file`, then `nix path-info --json`.
    const PUBLIC: &str = "test-1:g3dBb7o2hJxp4X/ZsIxP3ucMd0w+HxraL4DvAmfJjcA=";
    const INFO: &str = r#"[{"path":"/nix/store/hfbi5ng3wadcz7bsvklhml2yf7j3vb0s-f","narHash":"sha256-OK56oKrWX0wSzCbGX6S4Szv7ROec619mBelApysBFyc=","narSize":128,"references":[],"ca":"fixed:sha256:0f9rzb25mcylqvvxrk5j491j46bb6ayr81ykpgj9a8fr3vj66bc3","signatures":["test-1:+L6u8dWaq15Qg+I8piveb20AqOsdnQkyv7vZgW5RGp8bOFJjw4TXG7QwGOELaxSrIot72h7P4KAkQ4A3/WtlCg=="]}]"#;

    fn keys(entries: &[&str]) -> Keys {
        let mut keys = Keys::default();
        for e in entries {
            keys.add_public(e).unwrap();
        }
        keys
    }

    #[test]
    fn nar_hashes_in_every_form_become_the_fingerprints_base32() {
        // The same hash as the narinfo's `NarHash:` line.
        let want = "sha256:09qp04msfh790mk5zswwwx2gnfsbp2j5zii6rh94qpynmah7mbiq";
        assert_eq!(
            sha256_base32("sha256-OK56oKrWX0wSzCbGX6S4Szv7ROec619mBelApysBFyc=").as_deref(),
            Some(want)
        );
        assert_eq!(sha256_base32(want).as_deref(), Some(want));
        assert_eq!(
            sha256_base32(
                "sha256:38ae7aa0aad65f4c12cc26c65fa4b84b3bfb44e79ceb5f6605e940a72b011727"
            )
            .as_deref(),
            Some(want)
        );
        for bad in ["md5-AAAA", "sha256:xyz", "sha256-AAAA", "", "sha256:"] {
            assert_eq!(sha256_base32(bad), None, "{bad}");
        }
        assert_eq!(nix_base32(&[]), "");
        assert_eq!(nix_base32(&[0xff]), "7z");
    }

    #[test]
    fn a_real_nix_signature_verifies_and_a_forged_one_does_not() {
        let infos = path_infos(INFO).unwrap();
        let info = &infos[0];
        assert_eq!(
            info.fingerprint().unwrap(),
            "1;/nix/store/hfbi5ng3wadcz7bsvklhml2yf7j3vb0s-f;sha256:09qp04msfh790mk5zswwwx2gnfsbp2j5zii6rh94qpynmah7mbiq;128;"
        );
        let trusted = keys(&[PUBLIC]);
        assert!(info.accepted(&trusted, true, false));

        // The same name, another key: the name matches, the signature does not verify.
        let impostor = keys(&["test-1:dg7RYBkzlWtgCLzqD4fPirDIrxrMly9n68hmGUFYTrk="]);
        assert!(!info.accepted(&impostor, true, false));
        // No key of that name.
        assert!(!info.accepted(
            &keys(&["other-1:g3dBb7o2hJxp4X/ZsIxP3ucMd0w+HxraL4DvAmfJjcA="]),
            true,
            false
        ));
        // A changed size (or hash, or reference) breaks the signature.
        let mut changed = info.clone();
        changed.nar_size = 129;
        assert!(!changed.accepted(&trusted, true, false));
        changed = info.clone();
        changed.references = vec!["/nix/store/hfbi5ng3wadcz7bsvklhml2yf7j3vb0s-f".into()];
        assert!(!changed.accepted(&trusted, true, false));
        // A signature that is not base64 or not 64 bytes is no signature.
        changed = info.clone();
        changed.signatures = vec!["test-1:!!".into(), "test-1:AAAA".into(), "test-1".into()];
        assert!(!changed.accepted(&trusted, true, false));

        // Unsigned: only `require-sigs = false` or a trusted substituter take it.
        let mut unsigned = info.clone();
        unsigned.signatures.clear();
        assert!(!unsigned.accepted(&trusted, true, false));
        assert!(unsigned.accepted(&trusted, false, false));
        assert!(unsigned.accepted(&Keys::default(), true, true));
    }

    #[test]
    fn the_first_key_of_a_name_wins_as_in_nix() {
        let k = keys(&[
            PUBLIC,
            "test-1:dg7RYBkzlWtgCLzqD4fPirDIrxrMly9n68hmGUFYTrk=",
        ]);
        assert!(path_infos(INFO).unwrap()[0].accepted(&k, true, false));
        let k = keys(&[
            "test-1:dg7RYBkzlWtgCLzqD4fPirDIrxrMly9n68hmGUFYTrk=",
            PUBLIC,
        ]);
        assert!(!path_infos(INFO).unwrap()[0].accepted(&k, true, false));
    }

    #[test]
    fn bad_keys_say_which_and_why() {
        let mut k = Keys::default();
        assert!(k
            .add_public("nocolon")
            .unwrap_err()
            .contains("is not NAME:BASE64"));
        assert!(k
            .add_public("a:!!!")
            .unwrap_err()
            .contains("key \"a\" is not base64"));
        assert!(k
            .add_public("a:AAAA")
            .unwrap_err()
            .contains("is 3 bytes, not 32"));
        assert!(k
            .add_secret("a:AAAA")
            .unwrap_err()
            .contains("is 3 bytes, not 64"));
        assert!(k.is_empty());
    }

    #[test]
    fn both_json_shapes_and_missing_paths() {
        let object = r#"{"/nix/store/a-x":{"narHash":"sha256-OK56oKrWX0wSzCbGX6S4Szv7ROec619mBelApysBFyc=","narSize":5,"references":["b-y"],"signatures":["k:s"]},"/nix/store/b-y":null}"#;
        let got = path_infos(object).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].references, ["/nix/store/b-y"]);
        assert_eq!(got[0].signatures, ["k:s"]);
        // Newer nix's structured hashes, each form of the same hash.
        let want = "sha256:09qp04msfh790mk5zswwwx2gnfsbp2j5zii6rh94qpynmah7mbiq";
        for (format, hash) in [
            ("base64", "OK56oKrWX0wSzCbGX6S4Szv7ROec619mBelApysBFyc="),
            (
                "base16",
                "38ae7aa0aad65f4c12cc26c65fa4b84b3bfb44e79ceb5f6605e940a72b011727",
            ),
            (
                "nix32",
                "09qp04msfh790mk5zswwwx2gnfsbp2j5zii6rh94qpynmah7mbiq",
            ),
        ] {
            let v = serde_json::json!({"algorithm": "sha256", "format": format, "hash": hash});
            assert_eq!(nar_hash(&v).as_deref(), Some(want), "{format}");
        }
        let md5 = serde_json::json!({"algorithm": "md5", "format": "base16", "hash": "00"});
        assert_eq!(nar_hash(&md5), None);
        let array = r#"[{"path":"/nix/store/c-z","valid":false}]"#;
        assert!(path_infos(array).unwrap().is_empty());
        assert!(path_infos("nope")
            .unwrap_err()
            .starts_with("`nix path-info --json`"));
    }
}
