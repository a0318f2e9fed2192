//! The integration-test harness: a temp "machine" (fake root, profile, state and runtime
//! dirs), a real git repository holding the fake-NixOS flake, and the real
//! `homelab-agent` binary run against them with the real `nix`. A `nix` shim first on
//! PATH logs every invocation (then execs the real one) so tests can count builds.

#![allow(dead_code)]

pub mod servers;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use homelab_agent::fake_system::Host;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_homelab-agent");

/// Runs `config check` plus `args` on `text`, written to a fresh `agent.toml`; returns
/// the output and that file's path (for messages that must name it).
pub fn config_check_output(text: &str, args: &[&str]) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .args(["config", "check"])
        .args(args)
        .output()
        .unwrap();
    (out, file.display().to_string())
}

/// Every Nix setting the tests rely on, so that none comes from the machine
/// (`/etc/nix/nix.conf`, a `nixbld` group): flakes on; the fake system's `/bin/sh`
/// builder needs no sandbox; root builds without build users (Debian's nix-bin creates no
/// `nixbld` group; through a daemon the setting is the daemon's and ignored); no
/// substituter (no network here). `tests/run` points NIX_CONF_DIR at an empty directory.
pub const NIX_CONFIG: &str = "experimental-features = nix-command flakes\nsandbox = false\n\
     build-users-group =\nsubstituters =\n";

/// True when the real `nix` can run. With HOMELAB_TEST_REQUIRE_ALL=1 (the project's test
/// command sets it) a missing prerequisite fails the test instead of skipping it.
pub fn require(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    require_that(tool, ok)
}

/// Skips (returns false) when a prerequisite is missing, or fails the test when
/// HOMELAB_TEST_REQUIRE_ALL=1.
pub fn require_that(what: &str, ok: bool) -> bool {
    if !ok {
        if std::env::var("HOMELAB_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
            panic!("{what} is required (HOMELAB_TEST_REQUIRE_ALL=1) but not available");
        }
        eprintln!("SKIPPED: {what} not available");
    }
    ok
}

pub fn nix_available() -> bool {
    require("nix") && require("git")
}

fn which(tool: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .expect("sh");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

pub struct Harness {
    pub dir: tempfile::TempDir,
    /// The git work tree the tests commit to (the agent's remote unless `url` is changed).
    pub repo: PathBuf,
    pub fake: PathBuf,
    pub hosts: Vec<Host>,
    /// The `[source] url` written to the config.
    pub url: String,
    /// Extra TOML appended to the config (after the [health] table: add tables only).
    pub extra: String,
    /// Replaces the default health checks.
    pub checks: Option<String>,
    pub env: Vec<(String, String)>,
    pub build_timeout: String,
    pub activation_timeout: String,
    /// Extra lines in the [activation] table.
    pub activation_extra: String,
    pub health_timeout: String,
    /// Extra lines in the [health] table (e.g. `consecutive = 2`).
    pub health_extra: String,
    /// Extra lines inside the [source] table (token_file, ssh_key_file, ...).
    pub source_extra: String,
    /// `[paths] systemctl`, for the systemd check shim.
    pub systemctl: Option<PathBuf>,
    /// The body of the [host] table (map mode: `map = "machines.toml"`).
    pub host_table: String,
    /// Extra lines inside the [paths] table (the identity files of map mode).
    pub paths_extra: String,
}

impl Harness {
    /// A machine with an empty repository whose flake has host `pi1`.
    pub fn new() -> Harness {
        let dir = tempfile::Builder::new()
            .prefix("hla-it-")
            .tempdir()
            .expect("tempdir");
        let repo = dir.path().join("homelab");
        let fake = dir.path().join("machine");
        for d in [
            &repo,
            &fake.join("run"),
            &fake.join("faults"),
            &dir.path().join("profiles"),
            &dir.path().join("shim"),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        let shim = dir.path().join("shim/nix");
        std::fs::write(
            &shim,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\nexec {} \"$@\"\n",
                dir.path().join("nix-calls.log").display(),
                which("nix").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        let url = repo.display().to_string();
        Harness {
            dir,
            repo,
            fake,
            hosts: vec![Host::new("pi1")],
            url,
            extra: String::new(),
            checks: None,
            env: Vec::new(),
            build_timeout: "60s".into(),
            activation_timeout: "20s".into(),
            activation_extra: String::new(),
            health_timeout: "3s".into(),
            health_extra: String::new(),
            systemctl: None,
            source_extra: String::new(),
            host_table: "name = \"pi1\"".into(),
            paths_extra: String::new(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn host(&mut self, name: &str) -> &mut Host {
        if !self.hosts.iter().any(|h| h.name == name) {
            self.hosts.push(Host::new(name));
        }
        self.hosts.iter_mut().find(|h| h.name == name).unwrap()
    }

    /// Sets pi1's content, commits it and deploys it with `run --once`, which must
    /// succeed; returns the commit id.
    pub fn deploy(&mut self, content: &str, message: &str) -> String {
        self.host("pi1").content = content.into();
        let commit = self.commit(message);
        self.run_once().expect(0);
        commit
    }

    /// Writes the flake for the current hosts and commits; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        homelab_agent::fake_system::write(&self.repo, &self.fake, &self.hosts).unwrap();
        git(&self.repo, &["add", "-A"]);
        git(
            &self.repo,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.org",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                message,
            ],
        );
        git_out(&self.repo, &["rev-parse", "HEAD"])
    }

    pub fn current_system_link(&self) -> PathBuf {
        self.fake.join("run/current-system")
    }

    pub fn config_text(&self) -> String {
        let d = self.dir.path().display();
        let checks = self.checks.clone().unwrap_or_else(|| {
            format!(
                "[[health.checks]]\nname = \"marker\"\ntype = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"test -e {}/healthy\"]\ntimeout = \"5s\"\n",
                self.current_system_link().display()
            )
        });
        format!(
            "[source]\nurl = \"{url}\"\nbranch = \"main\"\n{se}\n[host]\n{ht_}\n\n[paths]\n{pe}\nstate_dir = \"{d}/state\"\nruntime_dir = \"{d}/runtime\"\nprofile = \"{d}/profiles/system\"\ncurrent_system = \"{cur}\"\nbooted_system = \"{fake}/run/booted-system\"\n{sc}\n[build]\ntimeout = \"{bt}\"\n\n[activation]\nmode = \"direct\"\ntimeout = \"{at}\"\n{ae}\n[health]\nsettle = \"0s\"\ntimeout = \"{ht}\"\ninterval = \"200ms\"\n{he}\n{checks}\n{extra}",
            url = self.url,
            cur = self.current_system_link().display(),
            fake = self.fake.display(),
            extra = self.extra,
            bt = self.build_timeout,
            at = self.activation_timeout,
            ae = self.activation_extra,
            ht = self.health_timeout,
            he = self.health_extra,
            se = self.source_extra,
            ht_ = self.host_table,
            pe = self.paths_extra,
            sc = self.systemctl.as_ref().map(|p| format!("systemctl = \"{}\"\n", p.display())).unwrap_or_default(),
        )
    }

    /// Writes the config from the fields. Atomically: agents started a moment earlier may
    /// be reading it (the concurrency tests), and must never see half a file.
    pub fn config_path(&self) -> PathBuf {
        let path = self.path("config.toml");
        homelab_agent::state::write_atomic(&path, self.config_text().as_bytes()).unwrap();
        path
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config").arg(self.config_path()).args(args);
        let path = format!(
            "{}:{}",
            self.path("shim").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("PATH", path)
            .env("NIX_CONFIG", NIX_CONFIG)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("HOMELAB_AGENT_FAILPOINTS")
            .env("HOMELAB_AGENT_LOG", "info")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn agent(&self, args: &[&str]) -> Run {
        let started = Instant::now();
        let output = self.command(args).output().expect("run homelab-agent");
        Run {
            output,
            elapsed: started.elapsed(),
        }
    }

    pub fn run_once(&self) -> Run {
        self.agent(&["run", "--once"])
    }

    pub fn status(&self) -> Value {
        let run = self.agent(&["status", "--json"]);
        // 3: needs attention, 71: state unreadable (README); the JSON is printed in all.
        assert!(
            [0, 3, 71].contains(&run.code()),
            "status failed ({}): {}",
            run.code(),
            run.stderr()
        );
        serde_json::from_str(&run.stdout())
            .unwrap_or_else(|e| panic!("status --json: {e}\n{}", run.stdout()))
    }

    pub fn history(&self) -> Vec<Value> {
        let run = self.agent(&["history", "--json", "--limit", "100"]);
        assert_eq!(run.code(), 0, "history failed: {}", run.stderr());
        serde_json::from_str(&run.stdout()).unwrap()
    }

    /// (store path basename, action) of every switch-to-configuration call, in order.
    pub fn stc_log(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.fake.join("stc.log")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let out = v["out"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_string();
                (out, v["action"].as_str().unwrap().to_string())
            })
            .collect()
    }

    pub fn clear_stc_log(&self) {
        let _ = std::fs::remove_file(self.fake.join("stc.log"));
    }

    pub fn current_system(&self) -> Option<PathBuf> {
        std::fs::canonicalize(self.current_system_link()).ok()
    }

    pub fn profile_system(&self) -> Option<PathBuf> {
        std::fs::canonicalize(self.path("profiles/system")).ok()
    }

    pub fn profile_generation(&self) -> Option<u32> {
        let link = std::fs::read_link(self.path("profiles/system")).ok()?;
        link.to_str()?
            .strip_prefix("system-")?
            .strip_suffix("-link")?
            .parse()
            .ok()
    }

    pub fn boot_default(&self) -> Option<String> {
        std::fs::read_to_string(self.fake.join("boot-default"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// How many build attempts the shim saw: each begins with one `nix build --dry-run`
    /// (the build plan), which also finds an evaluation error before any build.
    pub fn nix_builds(&self) -> usize {
        self.nix_call_count(|l| l.contains(" build ") && l.contains("--dry-run"))
    }

    /// How many real `nix build` calls (not dry runs) the shim saw.
    pub fn real_nix_builds(&self) -> usize {
        self.nix_call_count(|l| l.contains(" build ") && !l.contains("--dry-run"))
    }

    fn nix_call_count(&self, wanted: impl Fn(&str) -> bool) -> usize {
        std::fs::read_to_string(self.path("nix-calls.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| wanted(l))
            .count()
    }

    pub fn nix_calls(&self) -> usize {
        std::fs::read_to_string(self.path("nix-calls.log"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// Sets a runtime fault for every system's switch-to-configuration (see the fixture).
    pub fn fault_all(&self, mode: Option<&str>) {
        let path = self.fake.join("faults/all");
        match mode {
            Some(m) => std::fs::write(path, m).unwrap(),
            None => {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Deploys a first healthy system (generation 1) so later tests have something to
    /// roll back to. Returns (commit, system store path).
    pub fn bootstrap(&mut self) -> (String, PathBuf) {
        self.host("pi1").content = "base".into();
        let commit = self.commit("base system");
        let run = self.run_once();
        assert_eq!(run.code(), 0, "bootstrap deploy failed:\n{}", run.stderr());
        let system = self
            .current_system()
            .expect("bootstrap left no current system");
        assert_eq!(self.profile_generation(), Some(1));
        self.clear_stc_log();
        (commit, system)
    }

    /// Every file under the state dir with its size and modification time.
    pub fn state_snapshot(&self) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
        let mut out = Vec::new();
        walk(&self.path("state"), &mut out);
        out.sort();
        out
    }
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64, std::time::SystemTime)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        if meta.is_dir() {
            walk(&e.path(), out);
        }
        out.push((e.path(), meta.len(), meta.modified().unwrap()));
    }
}

pub struct Run {
    pub output: Output,
    pub elapsed: Duration,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    /// Asserts the exit code, showing stderr when it is wrong.
    pub fn expect(&self, code: i32) -> &Run {
        assert_eq!(
            self.code(),
            code,
            "unexpected exit code; stderr:\n{}\nstdout:\n{}",
            self.stderr(),
            self.stdout()
        );
        self
    }
}

pub fn git(dir: &Path, args: &[&str]) {
    git_out(dir, args);
}

pub fn git_out(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Store path basename, for comparing with [`Harness::stc_log`].
pub fn base(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// Asserts that no process whose command line contains `needle` is left (after a short
/// grace for the kernel to reap what was just killed).
pub fn assert_no_process(needle: &str, what: &str) {
    std::thread::sleep(Duration::from_millis(200));
    let left = processes_matching(needle);
    assert!(left.is_empty(), "{what} left running: {left:?}");
}

/// Processes whose command line contains `needle` (orphan detection).
pub fn processes_matching(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.parse::<u32>().is_ok())
        {
            if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if cmd.contains(needle) {
                    found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
                }
            }
        }
    }
    found
}
