//! Why a head was refused by the trust checks (stored with a refused head).

use serde::{Deserialize, Serialize};

/// Why a head was refused (status `refused.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The tip commit carries no signature.
    Unsigned,
    /// Signed, but by no allowed key (or in the other format).
    UntrustedKey,
    /// An allowed key's signature that does not verify (altered commit, wrong namespace,
    /// outside the key's validity window).
    BadSignature,
    /// Signed by an allowed OpenPGP key that has expired, or by an ssh key outside its
    /// `valid-after`/`valid-before` window in the allowed-signers file.
    ExpiredKey,
    /// Signed by an allowed OpenPGP key that has been revoked.
    RevokedKey,
    /// The head does not descend from the deployed commit (reset or force-push).
    Downgrade,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unsigned => "unsigned",
            Reason::UntrustedKey => "untrusted-key",
            Reason::BadSignature => "bad-signature",
            Reason::ExpiredKey => "expired-key",
            Reason::RevokedKey => "revoked-key",
            Reason::Downgrade => "downgrade",
        }
    }
}
