//! The build plan predicts nix's substitution decision from all its inputs, against real
//! caches on loopback (issue 23, items 19–22): a `file://` cache marked `?trusted=1`
//! serving unsigned paths, an http cache (`python3 -m http.server`) whose path carries a
//! signature by a key with a trusted key's *name* but other key material (`nix key
//! generate-secret`, `nix store sign --key-file`), and a cache that cannot be reached.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::substitute::{nix, plan, publish_to, HttpServer};
use crate::support::servers::closed_port;
use crate::support::{nix_available, require, Harness, NIX_CONFIG};

/// A key pair made by `nix key generate-secret` / `convert-secret-to-public`:
/// (secret file, public key text).
pub(crate) fn nix_key(dir: &Path, file: &str, name: &str) -> (PathBuf, String) {
    std::fs::create_dir_all(dir).unwrap();
    let secret = nix(&["key", "generate-secret", "--key-name", name]);
    let sk = dir.join(file);
    std::fs::write(&sk, &secret).unwrap();
    let out = Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "key",
            "convert-secret-to-public",
        ])
        .env("NIX_CONFIG", NIX_CONFIG)
        .stdin(std::fs::File::open(&sk).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    (
        sk,
        String::from_utf8(out.stdout).unwrap().trim().to_string(),
    )
}

/// nix's settings for the agent's runs (and so its dry run, build and queries).
fn settings(h: &mut Harness, lines: &str) {
    h.env = vec![("NIX_CONFIG".into(), format!("{NIX_CONFIG}{lines}"))];
}

/// `path` came from a cache: nix marks what it built here itself "ultimate".
fn assert_fetched(path: &str) {
    let info = nix(&["path-info", "--json", path]);
    assert!(!info.contains("\"ultimate\":true"), "compiled here: {info}");
}

/// `nix path-info --json` of unsigned paths: Nix 2.8 leaves `signatures` out (an array of
/// objects), 2.19+ gives it empty (an object keyed by path).
fn unsigned(info: &str) -> bool {
    let v: serde_json::Value = serde_json::from_str(info.trim()).expect("path-info --json");
    let entries: Vec<&serde_json::Value> = match &v {
        serde_json::Value::Array(a) => a.iter().collect(),
        serde_json::Value::Object(o) => o.values().collect(),
        _ => Vec::new(),
    };
    !entries.is_empty()
        && entries.iter().all(|e| {
            e.get("signatures")
                .and_then(|s| s.as_array())
                .is_none_or(|s| s.is_empty())
        })
}

fn limit_zero(h: &mut Harness) {
    h.build_timeout = "60s\"\nmax_local_builds = 0\n# \"".into();
}

/// 19: a substituter marked `?trusted=1` serves unsigned paths, which nix fetches: the
/// plan counts them fetched, and `max_local_builds = 0` lets the commit through; so does
/// `require-sigs = false` for any cache.
#[test]
fn a_trusted_substituter_serves_unsigned_paths() {
    if !nix_available() || !require("python3") {
        return;
    }
    let mut h = Harness::new();
    limit_zero(&mut h);
    let (_, trusted_pk) = nix_key(&h.path("keys"), "real.sk", "homelab-test-cache-1");
    // Unsigned, in a file cache marked trusted; trusted-public-keys knows no key of it.
    h.host("pi1").content = format!("trusted-cache {}", h.path("").display());
    h.commit("first");
    let file_cache = h.path("file-cache");
    let system = publish_to(&h, &format!("file://{}", file_cache.display()));
    let info = nix(&[
        "path-info",
        "--json",
        "--store",
        &format!("file://{}", file_cache.display()),
        &system,
    ]);
    assert!(unsigned(&info), "published signed: {info}");
    settings(
        &mut h,
        &format!(
            "substituters = file://{}?trusted=1\ntrusted-public-keys = {trusted_pk}\n",
            file_cache.display()
        ),
    );
    h.run_once().expect(0);
    assert_eq!(
        h.profile_system().map(|p| p.display().to_string()),
        Some(system.clone())
    );
    let p = plan(&h);
    assert_eq!(p["build"], 0, "{p}");
    assert_eq!(p["untrusted"], 0, "{p}");
    assert_eq!(p["refused"], false, "{p}");
    assert_fetched(&system);

    // `require-sigs = false`: unsigned paths from an ordinary http cache are fetched too.
    h.host("pi1").content = format!("no-sigs {}", h.path("").display());
    h.commit("second");
    let http_cache = h.path("http-cache");
    let second = publish_to(&h, &format!("file://{}", http_cache.display()));
    let server = HttpServer::start(&http_cache);
    settings(
        &mut h,
        &format!(
            "substituters = http://127.0.0.1:{}\ntrusted-public-keys = {trusted_pk}\nrequire-sigs = false\n",
            server.port
        ),
    );
    h.run_once().expect(0);
    assert_eq!(
        h.profile_system().map(|p| p.display().to_string()),
        Some(second.clone())
    );
    assert_eq!(plan(&h)["build"], 0);
    assert_eq!(plan(&h)["untrusted"], 0);
    assert_fetched(&second);
}

/// 22: a signature by a key whose name is trusted but which does not verify counts as a
/// local build (nix would compile it here), whatever the name says; the refusal's hint
/// names `retry` (21).
#[test]
fn a_forged_signature_under_a_trusted_name_is_a_local_build() {
    if !nix_available() || !require("python3") {
        return;
    }
    let mut h = Harness::new();
    limit_zero(&mut h);
    let keys = h.path("keys");
    let (_, trusted_pk) = nix_key(&keys, "real.sk", "homelab-test-cache-1");
    let (impostor_sk, impostor_pk) = nix_key(&keys, "impostor.sk", "homelab-test-cache-1");
    assert_ne!(trusted_pk, impostor_pk);

    // An http cache (not trusted); the path signed with the impostor's key, whose name
    // is the trusted key's.
    h.host("pi1").content = format!("forged {}", h.path("").display());
    let commit = h.commit("second");
    let http_cache = h.path("http-cache");
    let url = format!("file://{}", http_cache.display());
    let second = publish_to(&h, &url);
    nix(&[
        "store",
        "sign",
        "--store",
        &url,
        "--key-file",
        impostor_sk.to_str().unwrap(),
        &second,
    ]);
    let info = nix(&["path-info", "--json", "--store", &url, &second]);
    assert!(
        info.contains("\"homelab-test-cache-1:"),
        "not signed: {info}"
    );
    let server = HttpServer::start(&http_cache);
    settings(
        &mut h,
        &format!(
            "substituters = http://127.0.0.1:{}\ntrusted-public-keys = {trusted_pk}\n",
            server.port
        ),
    );
    let builds = h.real_nix_builds();
    let run = h.run_once();
    run.expect(71);
    let status = h.status();
    let error = status["last_run"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(
            "refusing to compile 1 derivation on this machine ([build] max_local_builds = 0)"
        ) && error.contains("not signed by a trusted key (none of their signatures verifies"),
        "{error}"
    );
    // The hint says how to check again before the backoff ends (21).
    let hint = status["last_run"]["hint"].as_str().unwrap_or_default();
    assert!(
        hint.contains("then `sudo homelab-agent retry` checks again at once"),
        "{status}"
    );
    assert_eq!(status["build_plan"]["untrusted"], 1, "{status}");
    assert_eq!(status["build_plan"]["commit"], commit.as_str());
    assert!(
        status["bad_commit"].is_null(),
        "blamed the commit: {status}"
    );
    assert_eq!(h.real_nix_builds(), builds, "built after all");
    assert!(
        !Path::new(&second).exists(),
        "{second} was fetched or built"
    );

    // The same cache with the real key trusted as well: nix keeps the first key of a
    // name, so the order decides, as it does for nix.
    settings(
        &mut h,
        &format!(
            "substituters = http://127.0.0.1:{}\ntrusted-public-keys = {impostor_pk} {trusted_pk}\n",
            server.port
        ),
    );
    h.agent(&["retry"]).expect(0);
    h.run_once().expect(0);
    assert_eq!(
        h.profile_system().map(|p| p.display().to_string()),
        Some(second.clone())
    );
    assert_eq!(plan(&h)["untrusted"], 0);
    assert_fetched(&second);
}

/// 20: the only cache cannot be reached: the plan and the refusal say so (not "push the
/// outputs to a cache"), as the network's failure (exit 75), the commit not blamed.
/// 21: raising the limit does not end the build backoff by itself; `retry` does, as the
/// hint says.
#[test]
fn an_unreachable_cache_is_its_own_cause() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    limit_zero(&mut h);
    let port = closed_port();
    settings(
        &mut h,
        &format!("substituters = http://127.0.0.1:{port}?trusted=1\n"),
    );
    h.host("pi1").content = format!("unreachable {}", h.path("").display());
    let commit = h.commit("first");
    let run = h.run_once();
    run.expect(75);
    let status = h.status();
    let error = status["last_run"]["error"].as_str().unwrap_or_default();
    let cache = format!("http://127.0.0.1:{port}");
    assert!(
        error.contains(&format!(
            "refusing to compile 1 derivation on this machine ([build] max_local_builds = 0): \
             the binary cache {cache} could not be reached ("
        )),
        "{error}"
    );
    let hint = status["last_run"]["hint"].as_str().unwrap_or_default();
    assert!(
        hint.starts_with(&format!("check that {cache} is up and reachable")),
        "{status}"
    );
    assert!(hint.contains("`sudo homelab-agent retry`"), "{hint}");
    assert!(!hint.contains("push the outputs"), "{hint}");
    let p = &status["build_plan"];
    assert_eq!(p["commit"], commit.as_str());
    assert_eq!(p["refused"], true, "{p}");
    assert_eq!(p["unreachable_caches"][0]["url"], cache.as_str(), "{p}");
    assert!(
        status["bad_commit"].is_null(),
        "blamed the commit: {status}"
    );
    assert!(
        run.stderr().contains("binary cache not reached: "),
        "{}",
        run.stderr()
    );
    assert_eq!(h.profile_generation(), None);

    // The limit removed: the wait goes on (the hint said `retry`)...
    h.build_timeout = "60s".into();
    let run = h.run_once();
    run.expect(75);
    assert!(run.stderr().contains("next try in"), "{}", run.stderr());
    assert_eq!(h.profile_generation(), None);
    // ... until `retry`: then it is built here, and the plan still names the cache.
    h.agent(&["retry"]).expect(0);
    h.run_once().expect(0);
    assert_eq!(h.profile_generation(), Some(1));
    let p = plan(&h);
    assert_eq!(p["build"], 1, "{p}");
    assert_eq!(p["unreachable_caches"][0]["url"], cache.as_str(), "{p}");
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA and a certificate it signed for 127.0.0.1: (ca, certificate, key).
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let subject = |cn: &str| format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            &subject("cache test CA"),
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "cache.key",
            "-out",
            "cache.csr",
            "-subj",
            &subject("cache"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "cache.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cache.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
    (
        dir.join("ca.pem"),
        dir.join("cache.pem"),
        dir.join("cache.key"),
    )
}

/// nginx serving `root` as a static https binary cache on loopback.
struct StaticNginx {
    child: std::process::Child,
    port: u16,
}

impl StaticNginx {
    fn start(dir: &Path, root: &Path, cert: &Path, key: &Path) -> StaticNginx {
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let port = closed_port();
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\nevents {{ worker_connections 64; }}\nhttp {{\n \
             access_log {d}/access.log;\n client_body_temp_path {d}/tmp/body;\n \
             fastcgi_temp_path {d}/tmp/fastcgi;\n proxy_temp_path {d}/tmp/proxy;\n \
             uwsgi_temp_path {d}/tmp/uwsgi;\n scgi_temp_path {d}/tmp/scgi;\n \
             server {{\n  listen 127.0.0.1:{port} ssl;\n  ssl_certificate {};\n  \
             ssl_certificate_key {};\n  root {};\n }}\n}}\n",
            cert.display(),
            key.display(),
            root.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let nginx = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|p| !p.starts_with('/') || Path::new(p).exists())
            .unwrap();
        let mut child = Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-e", "stderr"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nginx");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "nginx exited ({status}): {}",
                    std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                );
            }
            assert!(std::time::Instant::now() < deadline, "nginx did not listen");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        StaticNginx { child, port }
    }
}

impl Drop for StaticNginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An https cache behind a private CA is reached with the CA nix uses
/// (`NIX_SSL_CERT_FILE`), not only the system's: trusted there, it is used; without it,
/// nix cannot fetch from it either, and the plan says the cache could not be reached.
#[test]
fn an_https_cache_is_reached_with_the_authorities_nix_uses() {
    if !nix_available() || !require_openssl() || !require_nginx() {
        return;
    }
    let mut h = Harness::new();
    limit_zero(&mut h);
    let (sk, pk) = nix_key(&h.path("keys"), "cache.sk", "homelab-test-cache-1");
    h.host("pi1").content = format!("https-cache {}", h.path("").display());
    h.commit("first");
    let cache = h.path("https-cache");
    let system = publish_to(
        &h,
        &format!("file://{}?secret-key={}", cache.display(), sk.display()),
    );
    let (ca, cert, key) = private_ca(&h.path("pki"));
    let nginx = StaticNginx::start(&h.path("nginx"), &cache, &cert, &key);
    let nix_config = format!(
        "{NIX_CONFIG}substituters = https://127.0.0.1:{}\ntrusted-public-keys = {pk}\n",
        nginx.port
    );

    // Without the CA: neither nix nor the check can use the cache.
    h.env = vec![("NIX_CONFIG".into(), nix_config.clone())];
    h.run_once().expect(75);
    let status = h.status();
    let p = &status["build_plan"];
    assert_eq!(
        p["unreachable_caches"][0]["url"],
        format!("https://127.0.0.1:{}", nginx.port),
        "{p}"
    );
    let why = p["unreachable_caches"][0]["why"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("certificate"), "{why}");

    // With nix's CA: reached, fetched, deployed.
    h.env = vec![
        ("NIX_CONFIG".into(), nix_config),
        ("NIX_SSL_CERT_FILE".into(), ca.display().to_string()),
    ];
    h.agent(&["retry"]).expect(0);
    h.run_once().expect(0);
    assert_eq!(
        h.profile_system().map(|p| p.display().to_string()),
        Some(system.clone())
    );
    let p = plan(&h);
    assert_eq!(p["unreachable_caches"], serde_json::json!([]), "{p}");
    assert_eq!(p["build"], 0, "{p}");
    assert_fetched(&system);
}

fn require_openssl() -> bool {
    crate::support::require_that(
        "openssl (Debian openssl)",
        Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success()),
    )
}

fn require_nginx() -> bool {
    crate::support::require_that(
        "nginx (Debian nginx-light)",
        Path::new("/usr/sbin/nginx").exists(),
    )
}
