//! The binary caches a build would use and how nix trusts them, read from nix itself
//! (`nix show-config --json`, given the build's own `--option`s, so `NIX_CONFIG`,
//! `nix.conf` and the agent's `[build] extra_args` all count), and whether each cache can
//! be reached right now.
//!
//! Every input of nix's decision to take a path from a cache is read: `substituters`
//! (each URL's `?trusted=1`), `require-sigs`, `trusted-public-keys`, and the public half
//! of `secret-key-files` (nix trusts its own signing keys).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use super::sigs::Keys;

/// How long reaching one cache may take (connect, answer and body).
pub const REACH_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a `nix-cache-info` read (it is three short lines).
const MAX_CACHE_INFO: u64 = 64 * 1024;
/// The most of a secret key file read (a key is about 100 bytes).
const MAX_KEY_FILE: u64 = 4 * 1024;
/// The most of a certificate bundle read (Debian's is about 200 KiB).
const MAX_CA_FILE: u64 = 4 << 20;
/// Where nix's store is; a cache for another store directory is useless to it.
const STORE_DIR: &str = "/nix/store";

/// One entry of `substituters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Substituter {
    pub url: String,
    /// `?trusted=1` (or `true`, `yes`): nix takes its paths without checking signatures.
    pub trusted: bool,
}

/// What nix's substitution decision depends on.
#[derive(Debug, Clone, Default)]
pub struct NixTrust {
    pub substituters: Vec<Substituter>,
    pub keys: Keys,
    pub require_sigs: bool,
    /// `secret-key-files`: their public halves are trusted too (read by [`NixTrust::read_secret_keys`]).
    pub secret_key_files: Vec<String>,
    /// Entries of `trusted-public-keys` that are not keys (nix cannot use them either).
    pub key_problems: Vec<String>,
    /// `ssl-cert-file`: the only certificate authorities nix trusts for an https cache
    /// (empty: the system's).
    pub ssl_cert_file: Option<String>,
}

/// A setting's value from `nix show-config --json`: `{"name": {"value": …}}` (2.8 and
/// later), or `{"name": …}` (older).
fn setting<'a>(config: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    let v = config.get(name)?;
    Some(v.get("value").unwrap_or(v))
}

/// The settings from `nix show-config --json`.
pub(super) fn parse_config(json: &str) -> Result<NixTrust, String> {
    let config: serde_json::Value =
        serde_json::from_str(json.trim()).map_err(|e| format!("`nix show-config --json`: {e}"))?;
    let list = |name: &str| -> Vec<String> {
        match setting(&config, name) {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(serde_json::Value::String(s)) => {
                s.split_whitespace().map(str::to_string).collect()
            }
            _ => Vec::new(),
        }
    };
    let mut trust = NixTrust {
        substituters: list("substituters")
            .into_iter()
            .map(|url| Substituter {
                trusted: trusted_flag(&url),
                url,
            })
            .collect(),
        require_sigs: setting(&config, "require-sigs")
            .and_then(|v| v.as_bool())
            .unwrap_or(true),
        secret_key_files: list("secret-key-files"),
        ssl_cert_file: setting(&config, "ssl-cert-file")
            .and_then(|v| v.as_str())
            .filter(|f| !f.is_empty())
            .map(str::to_string),
        ..NixTrust::default()
    };
    for entry in list("trusted-public-keys") {
        if let Err(e) = trust.keys.add_public(&entry) {
            trust.key_problems.push(e);
        }
    }
    Ok(trust)
}

impl NixTrust {
    /// Adds the public halves of `secret-key-files`, as nix does; a file that cannot be
    /// read is skipped, as nix skips it.
    pub fn read_secret_keys(&mut self) {
        for file in self.secret_key_files.clone() {
            match read_small(Path::new(&file), MAX_KEY_FILE) {
                Ok(text) => {
                    if let Err(e) = self.keys.add_secret(&text) {
                        self.key_problems.push(format!("{file}: {e}"));
                    }
                }
                Err(e) => log::debug!("secret key file {file}: {e}"),
            }
        }
    }
}

/// Whether a substituter URL carries `trusted=1` (nix's boolean store setting: `1`,
/// `true` or `yes`).
pub fn trusted_flag(url: &str) -> bool {
    let Some((_, query)) = url.split_once('?') else {
        return false;
    };
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .any(|(k, v)| k == "trusted" && matches!(v, "1" | "true" | "yes"))
}

/// The URL without its `?settings` (what nix fetches from) and without a user or password.
pub fn base_url(url: &str) -> String {
    let base = url.split_once('?').map_or(url, |(b, _)| b);
    let base = base.trim_end_matches('/');
    match reqwest::Url::parse(base) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.as_str().trim_end_matches('/').to_string()
        }
        _ => base.to_string(),
    }
}

/// Whether the cache at `url` answers as nix needs: an http(s) cache serves
/// `nix-cache-info` for this store directory; a `file://` cache is a directory that can be
/// read. Other kinds of store (s3, ssh, …) are not checked here (`Ok`): nix itself
/// answers for them when the paths are asked about. An https cache is checked with the
/// certificate authorities nix uses (`ca_file`: its `ssl-cert-file`). Bounded:
/// [`REACH_TIMEOUT`] in all.
pub(super) async fn reach(url: &str, ca_file: Option<&str>) -> Result<(), String> {
    let base = url.split_once('?').map_or(url, |(b, _)| b);
    let reached = if base.starts_with("http://") || base.starts_with("https://") {
        tokio::time::timeout(REACH_TIMEOUT, http_cache_info(base, ca_file)).await
    } else if let Some(dir) = base.strip_prefix("file://") {
        let dir = dir.to_string();
        let listing = tokio::task::spawn_blocking(move || file_cache(Path::new(&dir)));
        match tokio::time::timeout(REACH_TIMEOUT, listing).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Ok(Err(format!("checking the directory: {e}"))),
            Err(e) => Err(e),
        }
    } else {
        return Ok(());
    };
    match reached {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer within {}",
            crate::duration::format_duration(REACH_TIMEOUT)
        )),
    }
}

async fn http_cache_info(base: &str, ca_file: Option<&str>) -> Result<(), String> {
    let mut client = reqwest::Client::builder()
        .connect_timeout(REACH_TIMEOUT)
        .timeout(REACH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(5));
    if let Some(file) = ca_file.filter(|_| base.starts_with("https://")) {
        // nix trusts that file alone; one that cannot be read leaves the system's.
        match read_small(Path::new(file), MAX_CA_FILE)
            .map_err(|e| e.to_string())
            .and_then(|pem| {
                reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| e.to_string())
            }) {
            Ok(certs) => {
                client = client.tls_built_in_root_certs(false);
                for cert in certs {
                    client = client.add_root_certificate(cert);
                }
            }
            Err(e) => log::debug!("nix's ssl-cert-file {file}: {e}"),
        }
    }
    let client = client
        .build()
        .map_err(|e| format!("setting up an HTTP client: {e}"))?;
    let url = format!("{}/nix-cache-info", base.trim_end_matches('/'));
    let mut response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| describe(&e.without_url()))?;
    let status = response.status();
    match status.as_u16() {
        200..=299 => {}
        // It answers; nix may log in (its netrc-file), which this check cannot.
        401 | 403 => return Ok(()),
        404 => {
            return Err(
                "it does not appear to be a binary cache (HTTP 404 for nix-cache-info)".into(),
            )
        }
        _ => return Err(format!("HTTP {status} for nix-cache-info")),
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| describe(&e.without_url()))?
    {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > MAX_CACHE_INFO {
            return Err(format!(
                "its nix-cache-info is larger than {MAX_CACHE_INFO} bytes: not a binary cache"
            ));
        }
    }
    store_dir_matches(&String::from_utf8_lossy(&body))
}

/// A reqwest error with its causes (the cause says "connection refused").
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        // OpenSSL's error is often repeated by the layer above it.
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(&format!(": {part}"));
        }
        source = s.source();
    }
    text
}

/// nix refuses a cache whose `StoreDir` is another store's.
fn store_dir_matches(info: &str) -> Result<(), String> {
    for line in info.lines() {
        if let Some(dir) = line.strip_prefix("StoreDir:") {
            let dir = dir.trim();
            if dir != STORE_DIR {
                return Err(format!(
                    "it is a cache for the store {}, not {STORE_DIR}",
                    super::sigs::shown(dir)
                ));
            }
        }
    }
    Ok(())
}

/// A `file://` cache: its directory exists and can be read (nix takes a missing one for
/// an empty cache, an unmounted disk for instance).
fn file_cache(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a directory", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "the directory {} does not exist (not mounted?): nix sees an empty cache",
                dir.display()
            ))
        }
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    }
    std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    match read_small(&dir.join("nix-cache-info"), MAX_CACHE_INFO) {
        Ok(info) => store_dir_matches(&info),
        // nix writes it on first use.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("reading {}/nix-cache-info: {e}", dir.display())),
    }
}

/// At most `max` bytes of a regular file, never blocking on a FIFO.
fn read_small(path: &Path, max: u64) -> std::io::Result<String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    file.take(max).read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_of_nixs_decision_is_read() {
        let v28 = r#"{"substituters":{"value":["http://127.0.0.1:1","file:///srv/c?trusted=1&priority=10"]},"trusted-public-keys":{"value":["k-1:g3dBb7o2hJxp4X/ZsIxP3ucMd0w+HxraL4DvAmfJjcA=","broken"]},"require-sigs":{"value":false},"secret-key-files":{"value":["/etc/nix/k.sk"]}}"#;
        let t = parse_config(v28).unwrap();
        assert_eq!(
            t.substituters,
            [
                Substituter {
                    url: "http://127.0.0.1:1".into(),
                    trusted: false
                },
                Substituter {
                    url: "file:///srv/c?trusted=1&priority=10".into(),
                    trusted: true
                }
            ]
        );
        assert!(!t.require_sigs);
        assert!(!t.keys.is_empty());
        assert_eq!(t.key_problems.len(), 1, "{:?}", t.key_problems);
        assert_eq!(t.secret_key_files, ["/etc/nix/k.sk"]);
        // Absent: nix's default, signatures required.
        assert!(parse_config("{}").unwrap().require_sigs);
        assert!(parse_config("nope").is_err());
    }

    #[test]
    fn the_trusted_flag_is_nixs_boolean() {
        for url in [
            "http://c?trusted=1",
            "http://c?priority=1&trusted=true",
            "s3://b?trusted=yes",
        ] {
            assert!(trusted_flag(url), "{url}");
        }
        for url in [
            "http://c",
            "http://c?trusted=0",
            "http://c?untrusted=1",
            "http://c/trusted=1",
        ] {
            assert!(!trusted_flag(url), "{url}");
        }
        assert_eq!(base_url("http://u:p@c:8/x/?trusted=1"), "http://c:8/x");
        assert_eq!(base_url("file:///srv/c?trusted=1"), "file:///srv/c");
    }

    #[test]
    fn secret_key_files_count_as_trusted_keys() {
        let dir = tempfile::tempdir().unwrap();
        // The secret key of sigs.rs's test-1 (`nix key generate-secret`, nix 2.8), renamed.
        let sk = dir.path().join("own.sk");
        std::fs::write(&sk, "own-1:IHWcHT7jDHfIQM9jpZfLRlovDFJ9quCFnuhbKf+vup2Dd0FvujaEnGnhf9mwjE/e5wx3TD4fGtovgO8CZ8mNwA==\n").unwrap();
        let fifo = dir.path().join("fifo.sk");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let mut t = NixTrust {
            secret_key_files: vec![
                sk.display().to_string(),
                fifo.display().to_string(),
                "/no/such/key".into(),
            ],
            ..NixTrust::default()
        };
        t.read_secret_keys();
        assert!(t.key_problems.is_empty(), "{:?}", t.key_problems);
        let info = &super::super::sigs::path_infos(r#"[{"path":"/nix/store/hfbi5ng3wadcz7bsvklhml2yf7j3vb0s-f","narHash":"sha256-OK56oKrWX0wSzCbGX6S4Szv7ROec619mBelApysBFyc=","narSize":128,"references":[],"signatures":["own-1:+L6u8dWaq15Qg+I8piveb20AqOsdnQkyv7vZgW5RGp8bOFJjw4TXG7QwGOELaxSrIot72h7P4KAkQ4A3/WtlCg=="]}]"#).unwrap()[0];
        assert!(info.accepted(&t.keys, true, false));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_unreachable_or_wrong_cache_says_why() {
        // A closed port: refused at once.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let why = reach(&format!("http://127.0.0.1:{closed}?trusted=1"), None)
            .await
            .unwrap_err();
        assert!(why.contains("onnect"), "{why}");

        // A missing file cache, and one for another store.
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("unmounted");
        let why = reach(&format!("file://{}", missing.display()), None)
            .await
            .unwrap_err();
        assert!(why.contains("does not exist (not mounted?)"), "{why}");
        assert_eq!(
            reach(&format!("file://{}", dir.path().display()), None).await,
            Ok(())
        );
        std::fs::write(dir.path().join("nix-cache-info"), "StoreDir: /gnu/store\n").unwrap();
        let why = reach(&format!("file://{}", dir.path().display()), None)
            .await
            .unwrap_err();
        assert!(
            why.contains("a cache for the store \"/gnu/store\""),
            "{why}"
        );

        // Kinds of store not checked here.
        assert_eq!(reach("s3://bucket?region=x", None).await, Ok(()));
    }

    /// A loopback HTTP server that answers every request with `response`.
    async fn answering(response: &'static str) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(response.as_bytes()).await;
            }
        });
        port
    }

    #[tokio::test(flavor = "current_thread")]
    async fn http_answers_are_told_apart() {
        let ok = answering("HTTP/1.1 200 OK\r\nContent-Length: 22\r\nConnection: close\r\n\r\nStoreDir: /nix/store\n\n").await;
        assert_eq!(
            reach(&format!("http://127.0.0.1:{ok}/"), None).await,
            Ok(())
        );
        let other = answering("HTTP/1.1 200 OK\r\nContent-Length: 20\r\nConnection: close\r\n\r\nStoreDir: /gnu/store\n").await;
        let why = reach(&format!("http://127.0.0.1:{other}"), None)
            .await
            .unwrap_err();
        assert!(
            why.contains("a cache for the store \"/gnu/store\""),
            "{why}"
        );
        let missing =
            answering("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
        let why = reach(&format!("http://127.0.0.1:{missing}"), None)
            .await
            .unwrap_err();
        assert!(
            why.contains("does not appear to be a binary cache (HTTP 404"),
            "{why}"
        );
        let broken =
            answering("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
        let why = reach(&format!("http://127.0.0.1:{broken}"), None)
            .await
            .unwrap_err();
        assert_eq!(why, "HTTP 502 Bad Gateway for nix-cache-info");
        // nix may log in with its netrc: answered is enough.
        let login = answering(
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(
            reach(&format!("http://127.0.0.1:{login}"), None).await,
            Ok(())
        );
        // A huge body is cut off, not read whole.
        let body = "x".repeat(1 << 20);
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let huge = answering(Box::leak(response.into_boxed_str())).await;
        let why = reach(&format!("http://127.0.0.1:{huge}"), None)
            .await
            .unwrap_err();
        assert_eq!(
            why,
            "its nix-cache-info is larger than 65536 bytes: not a binary cache"
        );
    }

    /// A server that accepts and never answers: the check ends at its deadline.
    #[tokio::test(flavor = "current_thread")]
    async fn a_silent_cache_is_given_up_on_at_the_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((c, _)) = listener.accept().await {
                conns.push(c);
            }
        });
        let started = std::time::Instant::now();
        let why = reach(&format!("http://127.0.0.1:{port}"), None)
            .await
            .unwrap_err();
        assert!(started.elapsed() < REACH_TIMEOUT + Duration::from_secs(5));
        assert!(
            why.contains("timed out") || why.contains("no answer within"),
            "{why}"
        );
    }
}
