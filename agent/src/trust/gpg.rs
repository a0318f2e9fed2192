//! OpenPGP signatures with `gpgv`: every key in the keyring is trusted, nothing else is.
//! gpgv exits 0 for a good signature even by an expired or revoked key, so the verdict
//! is read from its machine-readable status lines (`--status-fd`, GnuPG's doc/DETAILS):
//! `GOODSIG` and `VALIDSIG`, and none of `EXPKEYSIG`, `REVKEYSIG`, `EXPSIG`, `BADSIG`,
//! `ERRSIG`; never from its human-readable text.

use std::path::Path;

use super::signature::{expected, Extracted};
use super::{key_file_failure, run_verifier, Reason, Refusal, Verdict};
use crate::config::trust::Verify;
use crate::process::Cmd;

/// What the status lines say about one signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Good, by a valid key: its fingerprint.
    Good(String),
    Expired(String),
    Revoked(String),
    /// The signature expired (`EXPSIG`).
    SignatureExpired(String),
    Bad(String),
    /// No key in the keyring made it: the key id it names.
    UnknownKey(String),
    /// Not one OpenPGP signature (none, several, or unreadable).
    Unusable(String),
}

/// Parses `[GNUPG:] KEYWORD args...` lines. `rc` is gpgv's exit code.
pub fn parse_status(stdout: &str, rc: Option<i32>) -> Status {
    let mut newsig = 0;
    let (mut good, mut valid, mut exp, mut rev, mut expsig, mut bad, mut err) =
        (None, None, None, None, None, None, None);
    let mut nodata = false;
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("[GNUPG:] ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let keyword = words.next().unwrap_or("");
        let arg = words.next().unwrap_or("").to_string();
        match keyword {
            "NEWSIG" => newsig += 1,
            "GOODSIG" => good = Some(arg),
            "VALIDSIG" => valid = Some(arg),
            "EXPKEYSIG" => exp = Some(arg),
            "REVKEYSIG" => rev = Some(arg),
            "EXPSIG" => expsig = Some(arg),
            "BADSIG" => bad = Some(arg),
            "ERRSIG" | "NO_PUBKEY" => err = err.or(Some(arg)),
            "NODATA" => nodata = true,
            _ => {}
        }
    }
    let key = |k: Option<String>| k.unwrap_or_else(|| "?".into());
    if newsig > 1 {
        return Status::Unusable(format!("{newsig} signatures where one is expected"));
    }
    if rev.is_some() {
        return Status::Revoked(key(valid.or(rev)));
    }
    if exp.is_some() {
        return Status::Expired(key(valid.or(exp)));
    }
    if expsig.is_some() {
        return Status::SignatureExpired(key(valid.or(expsig)));
    }
    if let Some(k) = bad {
        return Status::Bad(k);
    }
    if let Some(k) = err {
        return Status::UnknownKey(k);
    }
    match (rc, good, valid) {
        (Some(0), Some(_), Some(fpr)) if newsig == 1 => Status::Good(fpr),
        _ if nodata => Status::Unusable("no OpenPGP signature data".into()),
        _ => Status::Unusable(format!(
            "gpgv reported no good signature (exit {})",
            rc.map_or("by signal".into(), |c| c.to_string())
        )),
    }
}

/// Verifies; returns the signing key's fingerprint.
pub async fn verify(keyring: &Path, x: &Extracted) -> Result<String, Verdict> {
    std::fs::File::open(keyring)
        .map_err(|e| key_file_failure(x.subject.section(), "keyring_file", keyring, &e))?;
    let home = x.signature.parent().unwrap_or(Path::new("/nonexistent"));
    let done = run_verifier(
        Cmd::new("gpgv")
            // gpgv reads nothing from a home but the keyrings named here; the temporary
            // directory keeps it off root's ~/.gnupg.
            .arg("--homedir")
            .arg(home)
            .args(["--status-fd", "1", "--keyring"])
            .arg(keyring)
            .arg("--")
            .arg(&x.signature)
            .arg(&x.payload),
        "gpgv",
        "gpgv (gnupg)",
    )
    .await?;
    let verify = Verify::Gpg {
        keyring: keyring.to_path_buf(),
    };
    let c = x.subject.describe(&x.commit);
    let thing = x.subject.thing();
    let (reason, message) = match parse_status(&done.stdout, done.status.code()) {
        Status::Good(fpr) => return Ok(fpr),
        Status::Expired(k) => (
            Reason::ExpiredKey,
            format!("{c} is signed by key {k}, which has expired: refused"),
        ),
        Status::SignatureExpired(k) => (
            Reason::ExpiredKey,
            format!("{c} carries an expired signature by key {k}: refused"),
        ),
        Status::Revoked(k) => (
            Reason::RevokedKey,
            format!("{c} is signed by key {k}, which has been revoked: refused"),
        ),
        Status::Bad(k) => (
            Reason::BadSignature,
            format!("the signature of {c} by key {k} does not verify (the {thing} was altered): refused"),
        ),
        Status::UnknownKey(k) => (
            Reason::UntrustedKey,
            format!(
                "{c} is signed by key {k}, which is not in {}: refused",
                keyring.display()
            ),
        ),
        Status::Unusable(why) => (
            Reason::BadSignature,
            format!("the signature of {c} cannot be verified ({why}): refused"),
        ),
    };
    Err(Verdict::Refused(Refusal {
        reason,
        message,
        expected: expected(&verify),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "[GNUPG:] NEWSIG a@x\n[GNUPG:] KEY_CONSIDERED D003 0\n[GNUPG:] GOODSIG CE97 Good <a@x>\n[GNUPG:] VALIDSIG D003C3E6 2026-11-25 1795609397 0 4 0 22 8 00 D003C3E6\n";

    #[test]
    fn good_needs_goodsig_validsig_and_exit_zero() {
        assert_eq!(parse_status(GOOD, Some(0)), Status::Good("D003C3E6".into()));
        assert!(matches!(parse_status(GOOD, Some(1)), Status::Unusable(_)));
        let no_valid = GOOD.replace("VALIDSIG", "X");
        assert!(matches!(
            parse_status(&no_valid, Some(0)),
            Status::Unusable(_)
        ));
    }

    #[test]
    fn expired_and_revoked_keys_are_not_good_even_with_exit_zero() {
        let exp = "[GNUPG:] NEWSIG\n[GNUPG:] KEYEXPIRED 1577923200\n[GNUPG:] EXPKEYSIG C1CB Old <o@x>\n[GNUPG:] VALIDSIG A8A8 2020-01-01\n";
        assert_eq!(parse_status(exp, Some(0)), Status::Expired("A8A8".into()));
        let rev =
            "[GNUPG:] NEWSIG\n[GNUPG:] REVKEYSIG 2F73 Rev <r@x>\n[GNUPG:] VALIDSIG 05BA 2026\n";
        assert_eq!(parse_status(rev, Some(0)), Status::Revoked("05BA".into()));
    }

    #[test]
    fn unknown_bad_and_several_signatures_are_refused() {
        let unknown = "[GNUPG:] NEWSIG\n[GNUPG:] ERRSIG 2F73 22 8 00 1795609397 9 05BA\n[GNUPG:] NO_PUBKEY 2F73\n";
        assert_eq!(
            parse_status(unknown, Some(2)),
            Status::UnknownKey("2F73".into())
        );
        let bad = "[GNUPG:] NEWSIG\n[GNUPG:] BADSIG CE97 Good <a@x>\n";
        assert_eq!(parse_status(bad, Some(1)), Status::Bad("CE97".into()));
        let two = format!("{GOOD}{GOOD}");
        assert!(matches!(parse_status(&two, Some(0)), Status::Unusable(_)));
        // Human text is never read.
        assert!(matches!(
            parse_status("gpgv: Good signature from \"a@x\"\n", Some(0)),
            Status::Unusable(_)
        ));
    }
}
