//! Impossible values: the real CLI's `config check` refuses each with exit 78 and one
//! error line that names the file, the key path and the line; the complete good config
//! (every key set) passes. No nix or git needed.

use crate::support::config_check_output;

/// Every key set, each on its own line, so a case can replace exactly one.
const GOOD: &str = r#"[source]
url = "https://git.example.org/me/homelab.git"
branch = "main"
timeout = "5m"

[host]
name = "pi1"

[paths]
state_dir = "/var/lib/homelab-agent"
profile = "/nix/var/nix/profiles/system"
current_system = "/run/current-system"
booted_system = "/run/booted-system"
runtime_dir = "/run/homelab-agent"
systemctl = "systemctl"
systemd_run = "systemd-run"

[build]
timeout = "2h"
max_jobs = 1
cores = 0
extra_args = ["--option", "substituters", ""]

[activation]
mode = "direct"
timeout = "15m"

[health]
settle = "10s"
timeout = "5m"
interval = "5s"
consecutive = 1

[[health.checks]]
type = "systemd"
units = ["sshd.service"]
timeout = "10s"

[[health.checks]]
type = "http"
url = "http://127.0.0.1:8080/health"
expect_status = 200
body_contains = "ok"
timeout = "11s"

[[health.checks]]
type = "tcp"
address = "127.0.0.1:22"
timeout = "12s"

[[health.checks]]
type = "command"
command = ["/run/current-system/sw/bin/true"]
timeout = "13s"

[[health.checks]]
type = "remote"
timeout = "14s"

[run]
interval = "5m"
jitter = "30s"
"#;

/// Runs `config check` on `text`: exit code, stdout, stderr. The values are what is
/// tested here, not the files they name (`cli.rs` tests those): `--no-file-checks`.
fn check(text: &str) -> (i32, String, String, String) {
    let (out, file) = config_check_output(text, &["--no-file-checks"]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        file,
    )
}

/// `GOOD` with the line `old` replaced by `new` (exactly one occurrence), and the
/// 1-based number of that line.
fn with(old: &str, new: &str) -> (String, usize) {
    let lines: Vec<&str> = GOOD.lines().collect();
    let hits: Vec<usize> = (0..lines.len()).filter(|&i| lines[i] == old).collect();
    assert_eq!(hits.len(), 1, "{old:?} must be one line of GOOD");
    let mut text = String::new();
    for (i, l) in lines.iter().enumerate() {
        text.push_str(if i == hits[0] { new } else { l });
        text.push('\n');
    }
    (text, hits[0] + 1)
}

#[test]
fn the_complete_good_config_passes() {
    let (code, stdout, stderr, _) = check(GOOD);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(": OK"), "{stdout}");
    assert!(stdout.contains("health checks: 5"), "{stdout}");
    // The edges of each range are allowed.
    for (old, new) in [
        ("settle = \"10s\"", "settle = \"0s\""),
        ("settle = \"10s\"", "settle = \"1h\""),
        ("timeout = \"15m\"", "timeout = \"1s\""),
        ("timeout = \"15m\"", "timeout = \"24h\""),
        ("interval = \"5m\"", "interval = \"10s\""),
        ("timeout = \"2h\"", "timeout = \"7days\""),
        ("timeout = \"5m\"\n", "timeout = \"1h\""),
        ("expect_status = 200", "expect_status = 599"),
        ("address = \"127.0.0.1:22\"", "address = \"[::1]:65535\""),
        (
            "url = \"https://git.example.org/me/homelab.git\"",
            "url = \"http://me:tok@127.0.0.1:8080/homelab.git\"",
        ),
    ] {
        let old = old.trim_end_matches('\n');
        let text = if old == "timeout = \"5m\"" {
            // [source] timeout: the first of the two `timeout = "5m"` lines.
            GOOD.replacen(old, new, 1)
        } else {
            with(old, new).0
        };
        let (code, _, stderr, _) = check(&text);
        assert_eq!(code, 0, "{new:?} should pass: {stderr}");
    }
}

#[test]
fn impossible_values_are_refused_naming_file_key_and_line() {
    // (line to replace, replacement, key path the error must name)
    let cases: &[(&str, &str, &str)] = &[
        // durations: zero, negative, absurd, garbage
        (
            "settle = \"10s\"",
            "settle = \"100000000y\"",
            "health.settle",
        ),
        ("settle = \"10s\"", "settle = \"2h\"", "health.settle"),
        ("settle = \"10s\"", "settle = \"-1s\"", "health.settle"),
        ("settle = \"10s\"", "settle = \"soon\"", "health.settle"),
        ("settle = \"10s\"", "settle = 10", "health.settle"),
        ("interval = \"5s\"", "interval = \"0s\"", "health.interval"),
        ("interval = \"5s\"", "interval = \"2h\"", "health.interval"),
        (
            "timeout = \"15m\"",
            "timeout = \"0s\"",
            "activation.timeout",
        ),
        (
            "timeout = \"15m\"",
            "timeout = \"100000000y\"",
            "activation.timeout",
        ),
        (
            "timeout = \"15m\"",
            "timeout = \"25h\"",
            "activation.timeout",
        ),
        ("timeout = \"2h\"", "timeout = \"0s\"", "build.timeout"),
        ("timeout = \"2h\"", "timeout = \"8days\"", "build.timeout"),
        ("timeout = \"2h\"", "timeout = \"-2h\"", "build.timeout"),
        ("interval = \"5m\"", "interval = \"0s\"", "run.interval"),
        ("interval = \"5m\"", "interval = \"5s\"", "run.interval"),
        ("interval = \"5m\"", "interval = \"30days\"", "run.interval"),
        ("jitter = \"30s\"", "jitter = \"2h\"", "run.jitter"),
        (
            "timeout = \"10s\"",
            "timeout = \"0s\"",
            "health.checks[0].timeout",
        ),
        (
            "timeout = \"11s\"",
            "timeout = \"2h\"",
            "health.checks[1].timeout",
        ),
        (
            "timeout = \"12s\"",
            "timeout = \"-5s\"",
            "health.checks[2].timeout",
        ),
        (
            "timeout = \"13s\"",
            "timeout = \"50ms\"",
            "health.checks[3].timeout",
        ),
        (
            "timeout = \"14s\"",
            "timeout = \"100000000y\"",
            "health.checks[4].timeout",
        ),
        // numbers
        ("consecutive = 1", "consecutive = 0", "health.consecutive"),
        ("consecutive = 1", "consecutive = -1", "health.consecutive"),
        (
            "consecutive = 1",
            "consecutive = 1000",
            "health.consecutive",
        ),
        ("max_jobs = 1", "max_jobs = 0", "build.max_jobs"),
        ("max_jobs = 1", "max_jobs = -3", "build.max_jobs"),
        ("max_jobs = 1", "max_jobs = 100000", "build.max_jobs"),
        ("cores = 0", "cores = 5000", "build.cores"),
        ("cores = 0", "cores = -1", "build.cores"),
        (
            "expect_status = 200",
            "expect_status = 99",
            "health.checks[1].expect_status",
        ),
        (
            "expect_status = 200",
            "expect_status = 600",
            "health.checks[1].expect_status",
        ),
        (
            "expect_status = 200",
            "expect_status = 70000",
            "health.checks[1].expect_status",
        ),
        (
            "expect_status = 200",
            "expect_status = -200",
            "health.checks[1].expect_status",
        ),
        // ports
        (
            "address = \"127.0.0.1:22\"",
            "address = \"127.0.0.1:0\"",
            "health.checks[2].address",
        ),
        (
            "address = \"127.0.0.1:22\"",
            "address = \"127.0.0.1:70000\"",
            "health.checks[2].address",
        ),
        (
            "address = \"127.0.0.1:22\"",
            "address = \"nohost\"",
            "health.checks[2].address",
        ),
        (
            "address = \"127.0.0.1:22\"",
            "address = \":22\"",
            "health.checks[2].address",
        ),
        (
            "url = \"http://127.0.0.1:8080/health\"",
            "url = \"http://127.0.0.1:0/health\"",
            "health.checks[1].url",
        ),
        (
            "url = \"http://127.0.0.1:8080/health\"",
            "url = \"ftp://127.0.0.1/health\"",
            "health.checks[1].url",
        ),
        (
            "url = \"https://git.example.org/me/homelab.git\"",
            "url = \"git://git.example.org:0/homelab.git\"",
            "source.url",
        ),
        (
            "url = \"https://git.example.org/me/homelab.git\"",
            "url = \"https://git.example.org:99999/homelab.git\"",
            "source.url",
        ),
        // empty or unusable vectors and strings
        (
            "units = [\"sshd.service\"]",
            "units = []",
            "health.checks[0].units",
        ),
        (
            "units = [\"sshd.service\"]",
            "units = [\"sshd service\"]",
            "health.checks[0].units",
        ),
        (
            "command = [\"/run/current-system/sw/bin/true\"]",
            "command = []",
            "health.checks[3].command",
        ),
        (
            "command = [\"/run/current-system/sw/bin/true\"]",
            "command = [\"\"]",
            "health.checks[3].command",
        ),
        (
            "command = [\"/run/current-system/sw/bin/true\"]",
            "command = [\"/bin/true\", \"a\\u0000b\"]",
            "health.checks[3].command",
        ),
        (
            "body_contains = \"ok\"",
            "body_contains = \"\"",
            "health.checks[1].body_contains",
        ),
        (
            "extra_args = [\"--option\", \"substituters\", \"\"]",
            "extra_args = [\"x\\u0000\"]",
            "build.extra_args",
        ),
        (
            "systemctl = \"systemctl\"",
            "systemctl = \"\"",
            "paths.systemctl",
        ),
        (
            "state_dir = \"/var/lib/homelab-agent\"",
            "state_dir = \"var/lib\"",
            "paths.state_dir",
        ),
        // a token in clear over http to another host
        (
            "url = \"https://git.example.org/me/homelab.git\"",
            "url = \"http://me:tok@git.example.org/me/homelab.git\"",
            "source.url",
        ),
        (
            "url = \"https://git.example.org/me/homelab.git\"",
            "url = \"http://TOKEN@git.example.org/me/homelab.git\"",
            "source.url",
        ),
        // names and choices
        (
            "mode = \"direct\"",
            "mode = \"sometimes\"",
            "activation.mode",
        ),
        (
            "branch = \"main\"",
            "branch = \"--upload-pack=touch\"",
            "source.branch",
        ),
        ("name = \"pi1\"", "name = \"a.b\"", "host.name"),
    ];
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for (old, new, key) in cases {
        let (text, line) = with(old, new);
        let (code, _, stderr, file) = check(&text);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let problem = if code != 78 {
            Some(format!("exit {code}"))
        } else if lines.len() != 1 {
            Some(format!("{} lines", lines.len()))
        } else if !lines[0].contains(&format!("{file}: {key}: ")) {
            Some("the line does not name file and key".into())
        } else if !lines[0].ends_with(&format!("(line {line})")) {
            Some(format!("the line does not name line {line}"))
        } else {
            None
        };
        if let Some(p) = problem {
            failures.push(format!("{new:?} ({key}): {p}: {stderr}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_token_file_over_plain_http_to_another_host_is_refused() {
    let text = with(
        "url = \"https://git.example.org/me/homelab.git\"",
        "url = \"http://git.example.org/me/homelab.git\"\ntoken_file = \"/run/keys/t\"",
    )
    .0;
    let (code, _, stderr, _) = check(&text);
    assert_eq!(code, 78, "{stderr}");
    assert!(
        stderr.contains("source.token_file") && stderr.contains("in clear"),
        "{stderr}"
    );
    // To loopback (tests, a local mirror) it is allowed.
    let text = with(
        "url = \"https://git.example.org/me/homelab.git\"",
        "url = \"http://127.0.0.1:8080/homelab.git\"\ntoken_file = \"/run/keys/t\"",
    )
    .0;
    let (code, _, stderr, _) = check(&text);
    assert_eq!(code, 0, "{stderr}");
}
