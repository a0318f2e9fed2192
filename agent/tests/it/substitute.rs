//! Substitute before compiling, with a real signed binary cache on loopback: the fake
//! system is built here once, `nix copy`-ed into a file cache signed with a key made by
//! `nix-store --generate-binary-cache-key`, deleted from the store, and the cache served
//! by `python3 -m http.server`. Then the agent fetches it instead of building it; with an
//! untrusted key, or no cache at all, `[build] max_local_builds = 0` refuses the build
//! and says why.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::servers::closed_port;
use crate::support::{nix_available, require, Harness, NIX_CONFIG};

const ATTR: &str = "nixosConfigurations.\"pi1\".config.system.build.toplevel";

pub(crate) fn nix(args: &[&str]) -> String {
    let out = Command::new("nix")
        .args(["--extra-experimental-features", "nix-command flakes"])
        .args(args)
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .expect("nix");
    assert!(
        out.status.success(),
        "nix {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A signing key pair: (secret file, public key text).
pub(crate) fn key(dir: &Path, name: &str) -> (PathBuf, String) {
    let (sk, pk) = (
        dir.join(format!("{name}.sk")),
        dir.join(format!("{name}.pk")),
    );
    let status = Command::new("nix-store")
        .arg("--generate-binary-cache-key")
        .arg(name)
        .arg(&sk)
        .arg(&pk)
        .env("NIX_CONFIG", NIX_CONFIG)
        .status()
        .expect("nix-store");
    assert!(status.success());
    (sk, std::fs::read_to_string(pk).unwrap().trim().to_string())
}

/// Builds the head of the harness's repository here, copies it into the file cache
/// `cache` signed with `secret`, then deletes it from the store. Returns its path.
fn publish(h: &Harness, cache: &Path, secret: &Path) -> String {
    publish_to(
        h,
        &format!("file://{}?secret-key={}", cache.display(), secret.display()),
    )
}

/// As [`publish`], into the store at `url` (unsigned unless it says `?secret-key=`).
pub(crate) fn publish_to(h: &Harness, url: &str) -> String {
    let link = h.path("published");
    let flake = format!("git+file://{}#{ATTR}", h.repo.display());
    let json = nix(&[
        "build",
        "--json",
        "--no-write-lock-file",
        "--out-link",
        link.to_str().unwrap(),
        &flake,
    ]);
    let built: Value = serde_json::from_str(&json).unwrap();
    let out = built[0]["outputs"]["out"].as_str().unwrap().to_string();
    nix(&["copy", "--to", url, &out]);
    std::fs::remove_file(&link).unwrap();
    let del = Command::new("nix-store")
        .args(["--delete", &out])
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .unwrap();
    assert!(
        del.status.success(),
        "deleting {out}: {}",
        String::from_utf8_lossy(&del.stderr)
    );
    assert!(!Path::new(&out).exists());
    out
}

pub(crate) struct HttpServer {
    child: Child,
    pub(crate) port: u16,
}

impl HttpServer {
    pub(crate) fn start(dir: &Path) -> HttpServer {
        let port = closed_port();
        let mut child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(child.try_wait().unwrap().is_none(), "http.server exited");
            assert!(Instant::now() < deadline, "http.server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn trust(h: &mut Harness, port: u16, public_key: &str) {
    h.env = vec![(
        "NIX_CONFIG".into(),
        format!(
            "{NIX_CONFIG}substituters = http://127.0.0.1:{port}\ntrusted-public-keys = {public_key}\n"
        ),
    )];
}

pub(crate) fn plan(h: &Harness) -> Value {
    h.status()["build_plan"].clone()
}

#[test]
fn a_signed_cache_is_used_and_an_unsigned_or_missing_one_refused() {
    if !nix_available() || !require("python3") || !require("nix-store") {
        return;
    }
    let mut h = Harness::new();
    // [build] max_local_builds = 0: nothing may be compiled here.
    h.build_timeout = "60s\"\nmax_local_builds = 0\n# \"".into();
    h.host("pi1").content = format!("substituted {}", h.path("").display());
    h.commit("first");
    let cache = h.path("cache");
    let keys = h.path("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (good_sk, good_pk) = key(&keys, "homelab-test-cache-1");
    let (evil_sk, _) = key(&keys, "someone-else-1");
    let system = publish(&h, &cache, &good_sk);
    let server = HttpServer::start(&cache);
    trust(&mut h, server.port, &good_pk);

    // 1. Signed by the trusted key: fetched, not built.
    h.run_once().expect(0);
    assert_eq!(
        h.profile_system().map(|p| p.display().to_string()),
        Some(system.clone())
    );
    let p = plan(&h);
    assert_eq!(p["build"], 0, "{p}");
    assert!(p["fetch"].as_u64().unwrap() >= 1, "{p}");
    assert_eq!(p["refused"], false, "{p}");
    // A substituted path carries the cache's signature; a local build would carry none.
    let info = nix(&["path-info", "--json", &system]);
    assert!(info.contains("homelab-test-cache-1:"), "{info}");

    // 2. A new commit signed by a key this machine does not trust: refused, said why,
    //    nothing built, the commit not blamed.
    h.host("pi1").content = format!("untrusted {}", h.path("").display());
    let commit = h.commit("second");
    let second = publish(&h, &cache, &evil_sk);
    let builds = h.real_nix_builds();
    let run = h.run_once();
    run.expect(71);
    let status = h.status();
    let error = status["last_run"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(
            "refusing to compile 1 derivation on this machine ([build] max_local_builds = 0)"
        ) && error.contains("not signed by a trusted key"),
        "{error}"
    );
    assert_eq!(status["last_run"]["phase"], "build", "{status}");
    assert_eq!(status["build_plan"]["untrusted"], 1, "{status}");
    assert_eq!(status["build_plan"]["refused"], true, "{status}");
    assert_eq!(status["build_plan"]["commit"], commit.as_str());
    assert!(
        status["bad_commit"].is_null(),
        "blamed the commit: {status}"
    );
    assert_eq!(h.real_nix_builds(), builds, "built after all");
    assert!(
        !Path::new(&second).exists(),
        "{second} was built or fetched"
    );
    assert_eq!(h.profile_generation(), Some(1));
    assert!(
        run.stderr()
            .contains("hint: push the outputs to a binary cache"),
        "{}",
        run.stderr()
    );

    // 3. A head nobody published: a cache miss, refused before compiling.
    h.host("pi1").content = format!("unpublished {}", h.path("").display());
    h.commit("third");
    // The previous refusal waits (backoff) for that commit only; this is a new one.
    let run = h.run_once();
    run.expect(71);
    let p = plan(&h);
    assert_eq!(p["build"], 1, "{p}");
    assert_eq!(p["untrusted"], 0, "{p}");
    let names = p["build_names"].to_string();
    assert!(
        names.contains("nixos-system-pi1") || names.contains(".drv"),
        "{p}"
    );
    assert_eq!(h.profile_generation(), Some(1));

    // Without a limit the same head is built (and the plan said so); `retry` ends the
    // wait the refusal started.
    h.build_timeout = "60s".into();
    h.agent(&["retry"]).expect(0);
    h.run_once().expect(0);
    assert_eq!(h.profile_generation(), Some(2));
    assert_eq!(plan(&h)["build"], 1);
    assert_eq!(plan(&h)["max_local_builds"], Value::Null);
}
