//! `[source] verify` with its key files, and `[source] allow_downgrade`: who may sign a
//! head that gets deployed, and whether the branch may go backwards. Checked here, used
//! by `trust`.

use std::path::{Path, PathBuf};

use super::raw::RawSource;
use super::validate::{absolute, err, KeyError};

/// How a head's tip commit must be signed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Verify {
    /// No signature needed (the default).
    #[default]
    None,
    /// An ssh signature (`gpg.format = ssh`) by a key in the allowed-signers file
    /// (`ssh-keygen -Y verify`, the format of `man ssh-keygen` "ALLOWED SIGNERS").
    Ssh { allowed_signers_file: PathBuf },
    /// An OpenPGP signature by a key in this keyring (`gpgv --keyring`).
    Gpg { keyring: PathBuf },
}

impl Verify {
    /// The word in the config and in status.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verify::None => "none",
            Verify::Ssh { .. } => "ssh",
            Verify::Gpg { .. } => "gpg",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustSettings {
    pub verify: Verify,
    /// A head that does not descend from the deployed commit is deployed anyway.
    pub allow_downgrade: bool,
}

/// The trust keys of `[source]`.
pub(super) fn settings(raw: &RawSource) -> Result<TrustSettings, KeyError> {
    let given = |key: &'static str, set: bool| set.then_some(key);
    let ssh_keys = [given(
        "allowed_signers_file",
        raw.allowed_signers_file.is_some(),
    )];
    let gpg_keys = [
        given("keyring_file", raw.keyring_file.is_some()),
        given("gpg_home", raw.gpg_home.is_some()),
    ];
    let stray = |keys: &[Option<&'static str>], mode: &str| -> Result<(), KeyError> {
        match keys.iter().flatten().next() {
            Some(key) => Err(err(
                &format!("source.{key}"),
                format!("is not used with verify = {mode:?}; remove it or set verify"),
            )),
            None => Ok(()),
        }
    };
    let file = |key: &str, p: &Path| -> Result<PathBuf, KeyError> {
        absolute(&format!("source.{key}"), p)?;
        Ok(p.to_path_buf())
    };
    let verify = match raw.verify.as_deref().unwrap_or("none") {
        "none" => {
            stray(&ssh_keys, "none")?;
            stray(&gpg_keys, "none")?;
            Verify::None
        }
        "ssh" => {
            stray(&gpg_keys, "ssh")?;
            let p = raw.allowed_signers_file.as_deref().ok_or_else(|| {
                err(
                    "source.allowed_signers_file",
                    "missing: verify = \"ssh\" needs the allowed signers file (lines of `<principal> <key type> <public key>`, see `man ssh-keygen`)",
                )
            })?;
            Verify::Ssh {
                allowed_signers_file: file("allowed_signers_file", p)?,
            }
        }
        "gpg" => {
            stray(&ssh_keys, "gpg")?;
            let keyring = match (&raw.keyring_file, &raw.gpg_home) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        "source.gpg_home",
                        "set keyring_file or gpg_home, not both",
                    ))
                }
                (Some(k), None) => file("keyring_file", k)?,
                (None, Some(home)) => gpg_home_keyring(&file("gpg_home", home)?),
                (None, None) => {
                    return Err(err(
                        "source.keyring_file",
                        "missing: verify = \"gpg\" needs keyring_file (e.g. `gpg --export KEYID > keyring.gpg`) or gpg_home",
                    ))
                }
            };
            Verify::Gpg { keyring }
        }
        other => {
            return Err(err(
                "source.verify",
                format!("unknown value {other:?}: one of \"none\", \"ssh\", \"gpg\""),
            ))
        }
    };
    Ok(TrustSettings {
        verify,
        allow_downgrade: raw.allow_downgrade.unwrap_or(false),
    })
}

/// The key file `config check` must find on the machine, with its key path.
pub(super) fn key_file(t: &TrustSettings) -> Option<(String, &Path)> {
    match &t.verify {
        Verify::None => None,
        Verify::Ssh {
            allowed_signers_file,
        } => Some(("source.allowed_signers_file".into(), allowed_signers_file)),
        Verify::Gpg { keyring } => Some(("source.keyring_file".into(), keyring)),
    }
}

/// The public keyring of a GnuPG home: `pubring.kbx` (GnuPG 2.1+), else `pubring.gpg`.
fn gpg_home_keyring(home: &Path) -> PathBuf {
    let kbx = home.join("pubring.kbx");
    let legacy = home.join("pubring.gpg");
    if !kbx.exists() && legacy.exists() {
        legacy
    } else {
        kbx
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use std::path::Path;

    fn parse_source(extra: &str) -> Result<super::TrustSettings, crate::config::ConfigError> {
        let text = format!("[source]\nurl = \"/r\"\n{extra}\n[host]\nname = \"pi1\"\n");
        parse(Path::new("/etc/t.toml"), &text).map(|s| s.source.trust)
    }

    #[test]
    fn defaults_verify_nothing_and_refuse_downgrades() {
        let t = parse_source("").unwrap();
        assert_eq!(t.verify, super::Verify::None);
        assert!(!t.allow_downgrade);
        assert!(
            parse_source("allow_downgrade = true")
                .unwrap()
                .allow_downgrade
        );
    }

    #[test]
    fn each_mode_takes_its_own_files() {
        let t = parse_source("verify = \"ssh\"\nallowed_signers_file = \"/etc/a\"").unwrap();
        assert_eq!(t.verify.as_str(), "ssh");
        let t = parse_source("verify = \"gpg\"\nkeyring_file = \"/etc/k.gpg\"").unwrap();
        assert_eq!(
            t.verify,
            super::Verify::Gpg {
                keyring: "/etc/k.gpg".into()
            }
        );
        let t = parse_source("verify = \"gpg\"\ngpg_home = \"/no/such/home\"").unwrap();
        assert_eq!(
            t.verify,
            super::Verify::Gpg {
                keyring: "/no/such/home/pubring.kbx".into()
            }
        );
    }

    #[test]
    fn bad_combinations_name_the_key() {
        let cases = [
            ("verify = \"pgp\"", "source.verify", "unknown value"),
            ("verify = \"ssh\"", "source.allowed_signers_file", "missing"),
            ("verify = \"gpg\"", "source.keyring_file", "missing"),
            (
                "verify = \"ssh\"\nallowed_signers_file = \"rel\"",
                "source.allowed_signers_file",
                "absolute",
            ),
            (
                "allowed_signers_file = \"/a\"",
                "source.allowed_signers_file",
                "not used with verify = \"none\"",
            ),
            (
                "verify = \"ssh\"\nallowed_signers_file = \"/a\"\nkeyring_file = \"/k\"",
                "source.keyring_file",
                "not used",
            ),
            (
                "verify = \"gpg\"\nkeyring_file = \"/k\"\ngpg_home = \"/h\"",
                "source.gpg_home",
                "not both",
            ),
        ];
        for (extra, key, needle) in cases {
            let e = parse_source(extra).expect_err(extra);
            assert_eq!(e.key, key, "{extra}: {e}");
            assert!(e.to_string().contains(needle), "{extra}: {e}");
        }
    }
}
