//! Bad input: each case checks the exit code and that the message names what is wrong
//! and where. Plus the lock and an unreachable remote.

use std::process::Command;

use crate::support::{config_check_output, nix_available, Harness, BIN};

fn config_check(text: &str) -> (i32, String) {
    let (out, file) = config_check_output(text, &[]);
    let stderr =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        stderr.contains(&file),
        "message does not name the file: {stderr}"
    );
    (out.status.code().unwrap_or(-1), stderr)
}

const BASE: &str =
    "[source]\nurl = \"https://git.example.org/me/homelab.git\"\n[host]\nname = \"pi1\"\n";

#[test]
fn bad_configs_are_refused_with_file_key_and_reason() {
    let cases: &[(&str, &[&str])] = &[
        ("[source]\nurl = \"/r\"\nurll = \"x\"\n[host]\nname = \"pi1\"\n", &["source.urll", "unknown field `urll`", "line 3", "(did you mean `url`?)"]),
        (&format!("{BASE}[build]\ntimeout = 5\n"), &["build.timeout", "invalid type"]),
        (&format!("{BASE}[build]\ntimeout = \"soon\"\n"), &["build.timeout", "invalid duration \"soon\""]),
        ("[source]\nurl = \"ext::sh -c touch% /tmp/pwned\"\n[host]\nname = \"pi1\"\n", &["source.url", "spaces"]),
        ("[source]\nurl = \"ftp://host/x.git\"\n[host]\nname = \"pi1\"\n", &["source.url", "unsupported transport \"ftp\""]),
        ("[source]\nurl = \"ssh://-oProxyCommand=touch/x\"\n[host]\nname = \"pi1\"\n", &["source.url", "starts with '-'"]),
        ("[source]\nurl = \"/r\"\nbranch = \"x&rev=0000000000000000000000000000000000000000\"\n[host]\nname = \"pi1\"\n", &["source.branch", "invalid branch name"]),
        ("[source]\nurl = \"/r\"\nbranch = \"--upload-pack=touch\"\n[host]\nname = \"pi1\"\n", &["source.branch", "invalid branch name"]),
        ("[source]\nurl = \"/r\"\nbranch = \"--upload-pack\"\n[host]\nname = \"pi1\"\n", &["source.branch", "must not start with '-'"]),
        ("[source]\nurl = \"/r\"\n[host]\nname = \"a.b\"\n", &["host.name", "invalid host name \"a.b\""]),
        ("[source]\nurl = \"/r\"\n[host]\nname = \"${x}\"\n", &["host.name", "invalid host name"]),
        (&format!("{BASE}[[health.checks]]\ntype = \"command\"\ncommand = []\n"), &["health.checks[0].command", "non-empty argument vector"]),
        (&format!("{BASE}[[health.checks]]\ntype = \"http\"\nurl = \"localhost:80\"\n"), &["health.checks[0].url", "not an http:// or https:// URL"]),
        (&format!("{BASE}[[health.checks]]\ntype = \"systemd\"\n"), &["health.checks[0].units", "at least one unit"]),
        (&format!("{BASE}[[health.checks]]\ntype = \"dns\"\n"), &["health.checks", "unknown variant `dns`"]),
        ("[host]\nname = \"pi1\"\n", &["source.url", "missing"]),
    ];
    for (text, needles) in cases {
        let (code, stderr) = config_check(text);
        assert_eq!(
            code, 78,
            "config {text:?} should be refused with 78: {stderr}"
        );
        for n in *needles {
            assert!(
                stderr.contains(n),
                "for {text:?}: message lacks {n:?}: {stderr}"
            );
        }
    }
}

/// `config check` on the machine: every file the config names must be there and readable.
#[test]
fn config_check_names_every_missing_file_with_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("deploy_key");
    std::fs::write(&key, "not really a key").unwrap();
    let text = format!(
        "[source]\nurl = \"ssh://git@git.example.org/me/homelab.git\"\nssh_key_file = \"{}\"\nknown_hosts_file = \"{}\"\n[host]\nname = \"pi1\"\n[[health.checks]]\ntype = \"command\"\ncommand = [\"/no/such/check\"]\n",
        key.display(),
        dir.path().join("known_hosts").display()
    );
    let (code, stderr) = config_check(&text);
    assert_eq!(code, 78, "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].contains(": source.known_hosts_file: ")
            && lines[0].contains("known_hosts does not exist (line 4)"),
        "{stderr}"
    );
    assert!(
        lines[1].contains(": health.checks[0].command: /no/such/check does not exist (line 9)"),
        "{stderr}"
    );
    // With the files in place, and with the file checks off, it is valid.
    std::fs::write(dir.path().join("known_hosts"), "").unwrap();
    let fixed = text.replace("/no/such/check", "/bin/true");
    let (code, stderr) = config_check(&fixed);
    assert_eq!(code, 0, "{stderr}");
    let file = dir.path().join("off.toml");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .args(["config", "check", "--no-file-checks"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn missing_config_file_says_how_to_point_at_one() {
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/agent.toml", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/agent.toml")
            && stderr.contains("cannot read")
            && stderr.contains("--config"),
        "{stderr}"
    );
}

#[test]
fn config_from_environment_variable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, BASE).unwrap();
    let out = Command::new(BIN)
        .env("HOMELAB_AGENT_CONFIG", &file)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(": OK") && stdout.contains("host: pi1"),
        "{stdout}"
    );
}

#[test]
fn hostile_branch_never_reaches_git_or_nix() {
    if !nix_available() {
        return;
    }
    let h = Harness::new();
    let canary = h.path("pwned");
    let config = h.config_text().replace(
        "branch = \"main\"",
        &format!("branch = \"--upload-pack=touch {}\"", canary.display()),
    );
    std::fs::write(h.path("config.toml"), config).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(h.path("config.toml"))
        .args(["run", "--once"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(78),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!canary.exists());
    assert_eq!(h.nix_calls(), 0);
}

#[test]
fn unreachable_remote_is_transient_and_touches_nothing() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.bootstrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    h.url = format!("git://127.0.0.1:{port}/homelab.git");
    let calls = h.nix_calls();
    let before = h.state_snapshot();
    let run = h.run_once();
    run.expect(75);
    assert!(
        run.stderr()
            .contains(&format!("cannot reach git://127.0.0.1:{port}/homelab.git")),
        "{}",
        run.stderr()
    );
    assert!(run.stderr().contains("hint:"), "{}", run.stderr());
    assert_eq!(h.nix_calls(), calls);
    assert!(h.stc_log().is_empty());
    assert_eq!(
        h.state_snapshot(),
        before,
        "a failed poll must not write to the state dir"
    );
    let s = h.status();
    assert_eq!(s["last_run"]["outcome"], "failed");
    assert_eq!(s["last_run"]["phase"], "fetch");
}

#[test]
fn missing_branch_is_a_clear_error() {
    if !nix_available() {
        return;
    }
    let h = Harness::new();
    h.commit("first");
    let config = h
        .config_text()
        .replace("branch = \"main\"", "branch = \"production\"");
    std::fs::write(h.path("config.toml"), config).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(h.path("config.toml"))
        .args(["run", "--once"])
        .env("NIX_CONFIG", crate::support::NIX_CONFIG)
        .output()
        .unwrap();
    // A branch the remote lacks is the configuration's problem (exit 78), not the network's.
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("branch 'production' not found")
            && stderr.contains("hint: check [source] branch"),
        "{stderr}"
    );
}

#[test]
fn a_second_run_is_refused_while_the_lock_is_held() {
    if !nix_available() {
        return;
    }
    let h = Harness::new();
    h.commit("first");
    let held = homelab_agent::lock::acquire(&h.path("runtime")).unwrap();
    let run = h.run_once();
    run.expect(4);
    assert!(
        run.stderr().contains("another homelab-agent run holds"),
        "{}",
        run.stderr()
    );
    assert!(
        run.stderr()
            .contains(&format!("pid {}", std::process::id())),
        "{}",
        run.stderr()
    );
    assert_eq!(h.nix_calls(), 0);
    drop(held);
    h.run_once().expect(0);
}

#[test]
fn concurrent_runs_one_proceeds() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.host("pi1").build = "build-sleep:2".into();
    h.commit("slowish");
    let spawn = || h.command(&["run", "--once"]).spawn().unwrap();
    let mut children: Vec<_> = (0..4).map(|_| spawn()).collect();
    let codes: Vec<i32> = children
        .iter_mut()
        .map(|c| c.wait().unwrap().code().unwrap_or(-1))
        .collect();
    assert_eq!(
        codes.iter().filter(|c| **c == 0).count(),
        1,
        "exactly one run proceeds: {codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| **c == 4).count(),
        3,
        "the others are refused: {codes:?}"
    );
    assert_eq!(h.nix_builds(), 1);
}

/// `status | head -1`, `history | head`, `man | head`: a reader that goes away ends the
/// command quietly (SIGPIPE's default, as Unix tools), never `error: Broken pipe` or a
/// panic. The pipe's read end is closed before the command writes at all.
#[test]
fn a_closed_pipe_ends_printing_commands_quietly() {
    use std::os::unix::process::ExitStatusExt;
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.deploy("v1", "first");
    let cases: Vec<Vec<&str>> = vec![
        vec!["status"],
        vec!["status", "--json"],
        vec!["history"],
        vec!["history", "--json"],
        vec!["config", "check"],
    ];
    let run = |mut cmd: Command| {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = cmd
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for args in cases {
        let (status, stderr) = run(h.command(&args));
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(
            status.signal(),
            Some(13),
            "{args:?} not ended by SIGPIPE: {status:?} {stderr}"
        );
    }
    let mut man = Command::new(BIN);
    man.arg("man");
    let (status, stderr) = run(man);
    assert_eq!(status.signal(), Some(13), "man: {status:?} {stderr}");
    assert!(stderr.is_empty(), "man: {stderr}");
}

/// `config check --json`: snake_case keys, typed values, null for what is not set, and the
/// errors as objects beside their text.
#[test]
fn config_check_json_is_typed() {
    let (out, file) = config_check_output(
        &format!("{BASE}[[health.checks]]\ntype = \"tcp\"\naddress = \"127.0.0.1:22\"\n"),
        &["--json", "--no-file-checks"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["file"], file.as_str());
    let s = &v["summary"];
    assert_eq!(s["health_checks"], 1, "{s}");
    assert_eq!(s["host"], "pi1");
    assert_eq!(s["source"]["branch"], "main");
    assert!(
        s["host_map"].is_null() && s["source"]["testing_branch"].is_null(),
        "{s}"
    );
    assert_eq!(s["reboot"]["policy"], "never");
    for key in s.as_object().unwrap().keys() {
        assert!(!key.contains(' '), "a key with a space: {key:?}");
    }
    assert_eq!(v["problems"], serde_json::json!([]));

    let (out, _) = config_check_output(&format!("{BASE}[build]\ntimout = \"1h\"\n"), &["--json"]);
    assert_eq!(out.status.code(), Some(78));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["summary"].is_null(), "{v}");
    let p = &v["problems"][0];
    assert_eq!(p["key"], "build.timout", "{v}");
    assert_eq!(p["line"], 6, "{v}");
    assert!(
        p["message"]
            .as_str()
            .unwrap()
            .ends_with("(did you mean `timeout`?)"),
        "{v}"
    );
}

/// The man page has EXAMPLES, FILES and SEE ALSO, and every page of the manual it names
/// exists (it named README sections that had moved).
#[test]
fn the_man_page_has_examples_files_and_pages_that_exist() {
    let out = Command::new(BIN).arg("man").output().unwrap();
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    for section in [".SH EXAMPLES", ".SH FILES", ".SH SEE ALSO"] {
        assert!(page.contains(section), "no {section}");
    }
    assert!(
        !page.contains("README"),
        "the man page points into the README"
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let named: Vec<String> = page
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '(' | ')' | ';'))
        .filter(|w| w.starts_with("docs/") && w.ends_with(".md"))
        .map(|w| w.replace("\\-", "-")) // roff's escaped hyphen
        .collect();
    assert!(named.len() >= 4, "{named:?}");
    for doc in named {
        assert!(
            root.join(&doc).is_file(),
            "the man page names {doc}, which does not exist"
        );
    }
}

/// The demo says when it did not go as it should, and exits 1 (it printed "done" and
/// exited 0 after seven failed steps): a nix that fails every build, and a user who
/// cannot use nix at all (not root, no daemon).
#[test]
fn a_demo_whose_steps_fail_says_so_and_exits_1() {
    use std::os::unix::process::CommandExt;
    if !nix_available() {
        return;
    }
    let shim = tempfile::tempdir().unwrap();
    let nix = shim.path().join("nix");
    std::fs::write(
        &nix,
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'nix (Nix) 2.8.0'; exit 0; }\necho 'error: broken on purpose' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&nix, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        shim.path().display(),
        std::env::var("PATH").unwrap()
    );
    let out = Command::new(BIN)
        .arg("demo")
        .env("PATH", &path)
        .env_remove("HOMELAB_AGENT_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the demo did not go as it should: step 1 exited"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("done; the sandbox"));
    if let Some(kept) = stderr.split("the sandbox is kept at ").nth(1) {
        let _ = std::fs::remove_dir_all(kept.lines().next().unwrap().trim());
    }

    // Not root, and no nix-daemon: said before anything runs.
    if nix::unistd::Uid::effective().is_root()
        && !std::path::Path::new("/nix/var/nix/daemon-socket/socket").exists()
    {
        let out = Command::new(BIN)
            .arg("demo")
            .env("HOME", "/tmp")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("nix cannot build for this user: not root, and no nix-daemon"),
            "{stderr}"
        );
    }
}

/// `status --color` and the terminal's width (issue 21): colour only when asked for (or on
/// a terminal without NO_COLOR), lines wrapped at COLUMNS on word boundaries.
#[test]
fn status_colour_and_width_follow_the_flags_and_the_environment() {
    if !nix_available() {
        return;
    }
    let mut h = Harness::new();
    h.deploy(
        "v1",
        "a first deployment with a subject long enough to need wrapping at eighty columns",
    );
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = h.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // A pipe: no colour, whole lines.
    let plain = run(&["status"], &[]);
    assert!(!plain.contains('\u{1b}'), "{plain:?}");
    assert!(plain.lines().any(|l| l.chars().count() > 80), "{plain}");
    // Asked for, at 80 columns: colour, and no line over 80 once the codes are left out.
    let coloured = run(&["status", "--color", "always"], &[("COLUMNS", "80")]);
    assert!(coloured.contains("\u{1b}[32midle\u{1b}[0m"), "{coloured:?}");
    let visible = coloured.replace("\u{1b}[32m", "").replace("\u{1b}[0m", "");
    assert!(
        visible.lines().all(|l| l.chars().count() <= 80),
        "{visible}"
    );
    // never wins over a terminal-like setting; NO_COLOR only matters for auto.
    let never = run(&["status", "--color", "never"], &[("COLUMNS", "80")]);
    assert!(!never.contains('\u{1b}'));
    let history = run(&["history", "--color", "always"], &[("NO_COLOR", "1")]);
    assert!(!history.is_empty());
    // A bad value is refused by name.
    let out = h
        .command(&["status", "--color", "sometimes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'sometimes'"));
}
