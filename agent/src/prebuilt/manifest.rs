//! The prebuilt manifest: which system a workstation or CI built for each host of one
//! commit, signed by its publisher. `homelab-agent publish` writes it; the agent reads it.
//!
//! It lives on a branch of the deployed repository (default [`DEFAULT_BRANCH`]) as
//! `prebuilt/<commit>.json` ([`path`]), with a detached signature next to it:
//! `prebuilt/<commit>.json.sig` (`ssh-keygen -Y sign -n homelab-prebuilt`) or
//! `prebuilt/<commit>.json.asc` (an armored OpenPGP signature). The content:
//!
//! ```json
//! {
//!   "format": 1,
//!   "commit": "<40 hex>",
//!   "built_at": "2026-12-07T15:00:00Z",
//!   "hosts": {
//!     "pi1": "/nix/store/<32 nix-base32>-nixos-system-pi1-24.11"
//!   }
//! }
//! ```
//!
//! Unknown keys are rejected, sizes are capped, every store path is checked for shape
//! before it reaches an argument vector. The signature is over the file's exact bytes;
//! [`Manifest::to_canonical`] is how `publish` writes them.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::config::trust::Verify;
use crate::failure::{Failure, Kind};
use crate::trust::signature::{self, Subject};
use crate::trust::{Reason, Refusal, Verdict};

/// The format this agent reads and `publish` writes.
pub const FORMAT: u64 = 1;
/// The branch manifests live on, unless `[prebuilt] branch` says otherwise.
pub const DEFAULT_BRANCH: &str = "homelab-prebuilt";
/// The ssh signature namespace (`ssh-keygen -Y sign -n homelab-prebuilt`): a commit
/// signature (namespace `git`) can never pass for a manifest's, nor the reverse.
pub const NAMESPACE: &str = "homelab-prebuilt";
/// The directory on the branch.
pub const DIR: &str = "prebuilt";
/// The most a manifest file may weigh (a thousand hosts fit in a tenth of it).
pub const MAX_BYTES: usize = 256 * 1024;
/// The most a signature file may weigh (an ssh signature is under 1 KiB, an OpenPGP one a
/// few KiB).
pub const MAX_SIGNATURE_BYTES: usize = 64 * 1024;
/// The most hosts one manifest may name.
pub const MAX_HOSTS: usize = 1000;
/// The longest store path name nix accepts (after the hash and its dash).
const MAX_NAME: usize = 211;
/// Nix's base32 alphabet (no e, o, u, t).
const BASE32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
const STORE_DIR: &str = "/nix/store/";

/// `prebuilt/<commit>.json`, the manifest's path on the branch.
pub fn path(commit: &str) -> String {
    format!("{DIR}/{commit}.json")
}

/// `prebuilt/<commit>.json.sig`, its ssh signature.
pub fn ssh_signature_path(commit: &str) -> String {
    format!("{DIR}/{commit}.json.sig")
}

/// `prebuilt/<commit>.json.asc`, its OpenPGP signature.
pub fn gpg_signature_path(commit: &str) -> String {
    format!("{DIR}/{commit}.json.asc")
}

/// A store path whose shape was checked: `/nix/store/<32 nix-base32>-<name>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StorePath(String);

impl StorePath {
    pub fn parse(text: &str) -> Result<StorePath, String> {
        let shown = crate::text::quote(text);
        let Some(rest) = text.strip_prefix(STORE_DIR) else {
            return Err(format!("{shown} is not in /nix/store/"));
        };
        let (hash, name) = match rest.split_once('-') {
            Some(pair) => pair,
            None => (rest, ""),
        };
        if hash.len() != 32 || !hash.bytes().all(|b| BASE32.contains(&b)) {
            return Err(format!(
                "{shown} is not a store path: the hash must be 32 characters of nix base32 (0-9 and a-z without e, o, u, t)"
            ));
        }
        let name_ok = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b));
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(format!(
                "{shown} is not a store path: the name after the hash must be 1 to {MAX_NAME} characters"
            ));
        }
        if !name_ok || name.starts_with('.') || name.contains("..") {
            return Err(format!(
                "{shown} is not a store path: the name may contain only letters, digits and + - . _ ? =, must not start with '.' nor contain '..' or '/'"
            ));
        }
        Ok(StorePath(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed, checked manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The commit the systems were built from (40 lowercase hex).
    pub commit: String,
    pub built_at: jiff::Timestamp,
    /// nixosConfigurations attribute → its toplevel.
    pub hosts: BTreeMap<String, StorePath>,
}

/// A manifest file that cannot be read as one: what is wrong, precisely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// A good manifest that is not for this deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// It names another commit than the head (a manifest replayed onto another file).
    OtherCommit { found: String },
    /// It has no entry for this host.
    NoHost { host: String, hosts: Vec<String> },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::OtherCommit { found } => write!(
                f,
                "it is for commit {}, not this one",
                crate::text::quote(found)
            ),
            Mismatch::NoHost { host, hosts } => {
                let mut listed: Vec<&str> = hosts.iter().take(10).map(String::as_str).collect();
                if hosts.len() > 10 {
                    listed.push("…");
                }
                write!(
                    f,
                    "it has no system for host {host:?} (it lists: {})",
                    if listed.is_empty() {
                        "none".to_string()
                    } else {
                        listed.join(", ")
                    }
                )
            }
        }
    }
}

/// The file as written, every field required, nothing else allowed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    format: u64,
    commit: String,
    built_at: String,
    #[serde(deserialize_with = "unique_map")]
    hosts: Vec<(String, String)>,
}

/// Only `format`, read leniently, to say "format 2" rather than "unknown field".
#[derive(Deserialize)]
struct Peek {
    format: serde_json::Value,
}

/// The canonical form: fields in this order, hosts sorted.
#[derive(Serialize)]
struct Canonical<'a> {
    format: u64,
    commit: &'a str,
    built_at: String,
    hosts: &'a BTreeMap<String, StorePath>,
}

/// A JSON object read as pairs, with a key given twice an error (serde's maps keep the
/// last one silently: a signed file must mean one thing).
fn unique_map<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    struct Pairs;
    impl<'de> Visitor<'de> for Pairs {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of host → store path")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out: Vec<(String, String)> = Vec::new();
            while let Some((k, v)) = map.next_entry::<String, String>()? {
                if out.len() >= MAX_HOSTS {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_HOSTS} hosts"
                    )));
                }
                if out.iter().any(|(seen, _)| *seen == k) {
                    return Err(serde::de::Error::custom(format!(
                        "host {} is given twice",
                        crate::text::quote(&k)
                    )));
                }
                out.push((k, v));
            }
            Ok(out)
        }
    }
    d.deserialize_map(Pairs)
}

impl Manifest {
    /// A manifest for `publish`: checks what [`Manifest::parse`] checks.
    pub fn new(
        commit: &str,
        built_at: jiff::Timestamp,
        hosts: BTreeMap<String, StorePath>,
    ) -> Result<Manifest, Invalid> {
        check_commit(commit)?;
        if hosts.len() > MAX_HOSTS {
            return Err(Invalid(format!("more than {MAX_HOSTS} hosts")));
        }
        for host in hosts.keys() {
            check_host(host)?;
        }
        Ok(Manifest {
            commit: commit.to_string(),
            built_at,
            hosts,
        })
    }

    /// Reads a manifest file (its bytes as found on the branch).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, Invalid> {
        if bytes.len() > MAX_BYTES {
            return Err(Invalid(format!(
                "{} bytes, more than the {MAX_BYTES} a manifest may have",
                bytes.len()
            )));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| Invalid(format!("not UTF-8 (at byte {})", e.valid_up_to())))?;
        let raw: Raw = match serde_json::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                if let Ok(Peek { format }) = serde_json::from_str::<Peek>(text) {
                    if format.as_u64() != Some(FORMAT) {
                        return Err(unsupported(&format));
                    }
                }
                return Err(Invalid(format!("not a manifest: {e}")));
            }
        };
        if raw.format != FORMAT {
            return Err(unsupported(&raw.format.into()));
        }
        check_commit(&raw.commit)?;
        let built_at = parse_time(&raw.built_at)?;
        let mut hosts = BTreeMap::new();
        for (host, path) in raw.hosts {
            check_host(&host)?;
            let path =
                StorePath::parse(&path).map_err(|e| Invalid(format!("hosts.{host}: {e}")))?;
            hosts.insert(host, path);
        }
        Ok(Manifest {
            commit: raw.commit,
            built_at,
            hosts,
        })
    }

    /// The bytes `publish` writes and signs: pretty JSON, fields in a fixed order, hosts
    /// sorted, a final newline. `parse(to_canonical(m)) == m`.
    pub fn to_canonical(&self) -> Vec<u8> {
        let c = Canonical {
            format: FORMAT,
            commit: &self.commit,
            built_at: format_time(self.built_at),
            hosts: &self.hosts,
        };
        let mut out = serde_json::to_vec_pretty(&c).expect("strings and integers serialise");
        out.push(b'\n');
        out
    }

    /// This deployment's system: the manifest must be for `commit` and name `host`.
    pub fn system_for(&self, commit: &str, host: &str) -> Result<&StorePath, Mismatch> {
        if self.commit != commit {
            return Err(Mismatch::OtherCommit {
                found: self.commit.clone(),
            });
        }
        self.hosts.get(host).ok_or_else(|| Mismatch::NoHost {
            host: host.to_string(),
            hosts: self.hosts.keys().cloned().collect(),
        })
    }
}

fn unsupported(format: &serde_json::Value) -> Invalid {
    let shown = match format {
        serde_json::Value::Number(n) => n.to_string(),
        other => crate::text::quote(&other.to_string()),
    };
    Invalid(format!(
        "format {shown} is not one this agent reads (it reads format {FORMAT})\nhint: update the agent, or publish with the same version as the agents"
    ))
}

fn check_commit(commit: &str) -> Result<(), Invalid> {
    if commit.len() == 40
        && commit
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err(Invalid(format!(
            "commit {} is not a full commit id (40 lowercase hex digits)",
            crate::text::quote(commit)
        )))
    }
}

fn check_host(host: &str) -> Result<(), Invalid> {
    crate::config::validate_host(host).map_err(|e| Invalid(format!("hosts: {e}")))
}

/// RFC 3339 in UTC (`Z`), as `publish` writes it.
fn parse_time(text: &str) -> Result<jiff::Timestamp, Invalid> {
    let bad = || {
        Invalid(format!(
            "built_at {} is not an RFC 3339 time in UTC (like 2026-12-07T15:00:00Z)",
            crate::text::quote(text)
        ))
    };
    if !text.ends_with('Z') {
        return Err(bad());
    }
    text.parse::<jiff::Timestamp>().map_err(|_| bad())
}

fn format_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A manifest's signature as found on the branch: which file, its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureFile {
    /// `prebuilt/<commit>.json.sig`.
    Ssh(Vec<u8>),
    /// `prebuilt/<commit>.json.asc`.
    Gpg(Vec<u8>),
}

/// Checks `bytes` (the manifest file of `commit`) against its signature with the
/// `[prebuilt]` key (`key`: ssh allowed signers or a gpg keyring), in the
/// [`NAMESPACE`] namespace. Returns who signed. The same verifiers as commit
/// signatures (crate::trust::ssh, crate::trust::gpg).
pub async fn verify(
    key: &Verify,
    commit: &str,
    bytes: &[u8],
    signature: Option<&SignatureFile>,
) -> Result<String, Verdict> {
    let subject = Subject::Manifest;
    let refused = |reason, message: String| {
        Verdict::Refused(Refusal {
            reason,
            message,
            expected: signature::expected(key),
        })
    };
    let (sig, wanted) = match (key, signature) {
        (Verify::None, _) => {
            return Err(Verdict::Failed(Failure::new(
                Kind::Configuration,
                "[prebuilt] has no key to verify manifests with\nhint: set [prebuilt] allowed_signers_file or keyring_file".to_string(),
            )))
        }
        (_, None) => {
            return Err(refused(
                Reason::Unsigned,
                format!(
                    "{} is not signed (neither {} nor {} is on the branch)",
                    subject.describe(commit),
                    ssh_signature_path(commit),
                    gpg_signature_path(commit)
                ),
            ))
        }
        (Verify::Ssh { .. }, Some(SignatureFile::Ssh(s))) => (s, None),
        (Verify::Gpg { .. }, Some(SignatureFile::Gpg(s))) => (s, None),
        (Verify::Ssh { .. }, Some(SignatureFile::Gpg(s))) => (s, Some("an ssh signature")),
        (Verify::Gpg { .. }, Some(SignatureFile::Ssh(s))) => (s, Some("an OpenPGP signature")),
    };
    if let Some(wanted) = wanted {
        return Err(refused(
            Reason::UntrustedKey,
            format!(
                "{} carries a signature in the other format, where {wanted} is expected ([prebuilt] uses {})",
                subject.describe(commit),
                key.as_str()
            ),
        ));
    }
    if sig.len() > MAX_SIGNATURE_BYTES {
        return Err(refused(
            Reason::BadSignature,
            format!(
                "the signature of {} is {} bytes, more than the {MAX_SIGNATURE_BYTES} allowed",
                subject.describe(commit),
                sig.len()
            ),
        ));
    }
    let files = signature::to_files(commit, subject, sig, bytes)?;
    match key {
        Verify::Ssh {
            allowed_signers_file,
        } => crate::trust::ssh::verify(allowed_signers_file, &files).await,
        Verify::Gpg { keyring } => crate::trust::gpg::verify(keyring, &files).await,
        Verify::None => unreachable!("refused above"),
    }
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
