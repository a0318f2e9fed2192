//! How a run's system was obtained (issue 24): fetched prebuilt from a binary cache, or
//! built here (every native build, `[prebuilt]` on or off); and when `[prebuilt]` is on
//! but the system was built here, why. Kept with
//! the run in history (`history[].obtained`), shown by `status`, exported as metrics.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum How {
    /// Realised from the substituters, as a signed manifest named it: nothing evaluated.
    Prebuilt,
    /// Evaluated and built on this machine.
    BuiltHere,
}

impl How {
    pub const ALL: [How; 2] = [How::Prebuilt, How::BuiltHere];

    pub fn as_str(self) -> &'static str {
        match self {
            How::Prebuilt => "prebuilt",
            How::BuiltHere => "built-here",
        }
    }

    /// For people: "prebuilt" / "built here".
    pub fn words(self) -> &'static str {
        match self {
            How::Prebuilt => "prebuilt",
            How::BuiltHere => "built here",
        }
    }
}

/// Why a prebuilt system was not used. None of these blames the commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fallback {
    /// No manifest for the commit on the manifest branch (`[prebuilt] wait` is zero).
    Missing,
    /// No manifest when `[prebuilt] wait` ran out.
    Late,
    /// A manifest without a signature file.
    Unsigned,
    /// Signed by no key of `[prebuilt]` (or in the other format).
    UntrustedKey,
    /// A signature by an allowed key that does not verify (altered, another namespace).
    BadSignature,
    ExpiredKey,
    RevokedKey,
    /// Not a manifest this agent reads (malformed, another format, too large).
    Invalid,
    /// A manifest for another commit (replayed under this commit's name).
    OtherCommit,
    /// A manifest without this host.
    NoHost,
    /// The system could not be realised from the substituters (the cache lost it, its
    /// signature is not trusted by nix, the cache is unreachable) or is not a system.
    NotFetched,
    /// The check itself could not run (the key file unreadable, a verifier missing).
    CheckFailed,
}

impl Fallback {
    pub const ALL: [Fallback; 12] = [
        Fallback::Missing,
        Fallback::Late,
        Fallback::Unsigned,
        Fallback::UntrustedKey,
        Fallback::BadSignature,
        Fallback::ExpiredKey,
        Fallback::RevokedKey,
        Fallback::Invalid,
        Fallback::OtherCommit,
        Fallback::NoHost,
        Fallback::NotFetched,
        Fallback::CheckFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::Missing => "missing",
            Fallback::Late => "late",
            Fallback::Unsigned => "unsigned",
            Fallback::UntrustedKey => "untrusted-key",
            Fallback::BadSignature => "bad-signature",
            Fallback::ExpiredKey => "expired-key",
            Fallback::RevokedKey => "revoked-key",
            Fallback::Invalid => "invalid",
            Fallback::OtherCommit => "other-commit",
            Fallback::NoHost => "no-host",
            Fallback::NotFetched => "not-fetched",
            Fallback::CheckFailed => "check-failed",
        }
    }
}

/// How one run's system was obtained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Obtained {
    pub how: How,
    /// Time spent on the prebuilt path: reading and checking the manifest and realising
    /// the system from the cache (for a fallback: until it was given up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch_ms: Option<u64>,
    /// Who signed the manifest that was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// Built here although `[prebuilt]` is on: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
    /// The fallback in words (what was wrong with the manifest or the fetch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// A system built here, nothing else said: what every native build is, `[prebuilt]` on
/// or off (the prebuilt door notes its own, with why it fell back).
pub fn built_here() -> Obtained {
    Obtained {
        how: How::BuiltHere,
        fetch_ms: None,
        signer: None,
        fallback: None,
        why: None,
    }
}
