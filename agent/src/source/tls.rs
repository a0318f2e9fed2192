//! https: trusting a private certificate authority (`[source] ca_file`), and saying why a
//! server certificate was refused.
//!
//! The TLS stream (source/tls_stream.rs) verifies the server (OpenSSL, the system's trust
//! store plus `ca_file`) and reports every refusal with one code, [`git2::ErrorCode::Certificate`]
//! (class `Ssl`). The certificate it refused is handed to our certificate callback, so
//! the reason is read from the certificate's own fields (its validity dates and its
//! names), never from libgit2's words: a clock behind the certificate (a Pi without a
//! real-time clock, before NTP) is transient; a name that does not match the URL, an
//! expired certificate, or an issuer this machine does not trust is for the operator.

use std::path::Path;

use openssl::asn1::Asn1Time;
use openssl::nid::Nid;
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509StoreContext, X509};

use crate::failure::Kind;

/// Adds the certificates in `path` (PEM) to those trusted for https (source/tls_stream.rs),
/// checked once per process. The system's trust store stays trusted too (OpenSSL adds,
/// never replaces).
pub(super) fn trust_ca_file(path: &Path) -> Result<(), String> {
    if super::tls_stream::ca_file().as_deref() == Some(path) {
        return Ok(());
    }
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let certs = X509::stack_from_pem(&pem).map_err(|_| "not a PEM certificate file".to_string())?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    super::tls_stream::trust_ca_file(path.to_path_buf());
    Ok(())
}

/// Why a certificate was refused, read from the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not valid yet: this machine's clock is probably behind.
    NotYetValid {
        not_before: String,
    },
    Expired {
        not_after: String,
    },
    /// Issued for other names than the URL's host.
    WrongHost {
        names: Vec<String>,
    },
    /// Dates and name fit: the chain does not lead to a CA this machine trusts.
    UntrustedIssuer {
        issuer: String,
    },
}

impl Refusal {
    pub fn kind(&self) -> Kind {
        match self {
            Refusal::NotYetValid { .. } => Kind::Transient,
            Refusal::Expired { .. } => Kind::Environment,
            Refusal::WrongHost { .. } | Refusal::UntrustedIssuer { .. } => Kind::Configuration,
        }
    }

    /// The sentence after "the TLS certificate of HOST ", and the hint.
    pub fn explain(&self, host: &str) -> (String, &'static str) {
        match self {
            Refusal::NotYetValid { not_before } => (
                format!("is not valid before {not_before}, and this machine's clock is earlier"),
                "this machine's clock is probably wrong (no real-time clock, NTP not synced yet); the next run retries",
            ),
            Refusal::Expired { not_after } => (
                format!("expired on {not_after}"),
                "the server's certificate must be renewed (or this machine's clock is ahead)",
            ),
            Refusal::WrongHost { names } => (
                format!(
                    "does not match the host name {host}: it is issued for {}",
                    if names.is_empty() { "no host name".to_string() } else { names.join(", ") }
                ),
                "use a host name the certificate is issued for in [source] url",
            ),
            Refusal::UntrustedIssuer { issuer } => (
                format!("is not signed by a certificate authority this machine trusts (issuer: {issuer})"),
                "if the server uses a private CA, set [source] ca_file to the CA's certificate (PEM)",
            ),
        }
    }
}

/// Whether this machine trusts `cert` itself (the system's store, `SSL_CERT_FILE`, and
/// `ca_file`). Only the server's own certificate is at hand (libgit2 passes no chain), so
/// a server that relies on sending an intermediate looks untrusted here.
fn trusted(cert: &X509, ca_file: Option<&Path>) -> bool {
    let verify = || -> Result<bool, openssl::error::ErrorStack> {
        let mut store = X509StoreBuilder::new()?;
        store.set_default_paths()?;
        if let Some(pem) = ca_file.and_then(|p| std::fs::read(p).ok()) {
            for ca in X509::stack_from_pem(&pem)? {
                store.add_cert(ca)?;
            }
        }
        let store = store.build();
        let chain = Stack::new()?;
        let mut ctx = X509StoreContext::new()?;
        ctx.init(&store, cert, &chain, |c| c.verify_cert())
    };
    verify().unwrap_or(false)
}

/// Why libgit2 refused the server certificate (DER), read from the certificate, `now`
/// being this machine's clock; `None` when the certificate itself is fine (the TLS error
/// was something else) or cannot be read.
pub fn diagnose(der: &[u8], host: &str, ca_file: Option<&Path>, now: &Asn1Time) -> Option<Refusal> {
    let cert = X509::from_der(der).ok()?;
    if cert.not_before() > now {
        return Some(Refusal::NotYetValid {
            not_before: cert.not_before().to_string(),
        });
    }
    if cert.not_after() < now {
        return Some(Refusal::Expired {
            not_after: cert.not_after().to_string(),
        });
    }
    let names = names(&cert);
    if !names.iter().any(|n| matches_host(n, host)) {
        return Some(Refusal::WrongHost { names });
    }
    if trusted(&cert, ca_file) {
        return None;
    }
    let issuer = cert
        .issuer_name()
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_default();
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ");
    Some(Refusal::UntrustedIssuer { issuer })
}

/// The names a certificate is for: its subject alternative names (DNS and IP), or its
/// common name when it has none.
fn names(cert: &X509) -> Vec<String> {
    if let Some(alt) = cert.subject_alt_names() {
        let names: Vec<String> = alt
            .iter()
            .filter_map(|n| {
                n.dnsname().map(str::to_string).or_else(|| {
                    n.ipaddress().and_then(|ip| match ip.len() {
                        4 => Some(std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string()),
                        16 => <[u8; 16]>::try_from(ip)
                            .ok()
                            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
                        _ => None,
                    })
                })
            })
            .collect();
        if !names.is_empty() {
            return names;
        }
    }
    cert.subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .filter_map(|e| e.data().to_string().ok())
        .collect()
}

/// RFC 6125 matching: case-insensitive, a wildcard only as the whole left-most label.
fn matches_host(name: &str, host: &str) -> bool {
    let (name, host) = (name.to_ascii_lowercase(), host.to_ascii_lowercase());
    match name.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
        None => name == host,
    }
}

/// A self-signed certificate (DER) for `dns`, valid from `from_days` to `to_days` from now.
#[cfg(test)]
pub(crate) fn test_cert(dns: &[&str], from_days: u32, to_days: u32) -> Vec<u8> {
    tests::cert(dns, from_days, to_days)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::{X509Builder, X509NameBuilder};

    pub(super) fn cert(dns: &[&str], from_days: u32, to_days: u32) -> Vec<u8> {
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_nid(Nid::COMMONNAME, "Test CA")
            .unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(from_days).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(to_days).unwrap())
            .unwrap();
        if !dns.is_empty() {
            let mut san = SubjectAlternativeName::new();
            for d in dns {
                san.dns(d);
            }
            let ext = san.build(&b.x509v3_context(None, None)).unwrap();
            b.append_extension(ext).unwrap();
        }
        b.sign(&key, MessageDigest::sha256()).unwrap();
        b.build().to_der().unwrap()
    }

    #[test]
    fn the_reason_comes_from_the_certificate() {
        let now = Asn1Time::days_from_now(1).unwrap();
        let good = cert(&["git.example.org"], 0, 30);
        assert!(matches!(
            diagnose(&good, "git.example.org", None, &now),
            Some(Refusal::UntrustedIssuer { issuer }) if issuer == "CN=Test CA"
        ));
        assert_eq!(
            diagnose(&good, "other.example.org", None, &now),
            Some(Refusal::WrongHost {
                names: vec!["git.example.org".into()]
            })
        );
        let future = cert(&["git.example.org"], 10, 30);
        let r = diagnose(&future, "git.example.org", None, &now).unwrap();
        assert!(matches!(r, Refusal::NotYetValid { .. }), "{r:?}");
        assert_eq!(r.kind(), Kind::Transient);
        let later = Asn1Time::days_from_now(60).unwrap();
        let r = diagnose(&good, "git.example.org", None, &later).unwrap();
        assert!(matches!(r, Refusal::Expired { .. }), "{r:?}");
        assert_eq!(r.kind(), Kind::Environment);
        assert_eq!(diagnose(b"not der", "h", None, &now), None);
    }

    #[test]
    fn host_names_match_like_rfc_6125() {
        assert!(matches_host("Git.Example.org", "git.example.ORG"));
        assert!(matches_host("*.example.org", "git.example.org"));
        assert!(!matches_host("*.example.org", "example.org"));
        assert!(!matches_host("*.example.org", "a.b.example.org"));
        assert!(!matches_host("git.example.org", "evil.org"));
    }

    #[test]
    fn every_refusal_says_what_to_do() {
        for r in [
            Refusal::NotYetValid {
                not_before: "x".into(),
            },
            Refusal::Expired {
                not_after: "x".into(),
            },
            Refusal::WrongHost { names: vec![] },
            Refusal::UntrustedIssuer { issuer: "x".into() },
        ] {
            let (what, hint) = r.explain("h");
            assert!(!what.is_empty() && !hint.is_empty());
            assert_ne!(r.kind(), Kind::Commit);
        }
        let (what, hint) = Refusal::UntrustedIssuer { issuer: "x".into() }.explain("h");
        assert!(what.contains("not signed by a certificate authority"));
        assert!(hint.contains("[source] ca_file"));
    }

    #[test]
    fn a_ca_file_that_is_no_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "hello").unwrap();
        assert!(trust_ca_file(&f).unwrap_err().contains("PEM"));
        assert!(trust_ca_file(&dir.path().join("none")).is_err());
    }
}
