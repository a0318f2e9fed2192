//! `[notify]`: Debian's `webhook` server on loopback receives the ntfy and JSON posts
//! (one of its hooks writes the body and headers it got to files), a hook command gets
//! the outcome in its environment, and a receiver that is down or slow never fails or
//! holds up a deploy.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::servers::closed_port;
use crate::support::{nix_available, require, Harness};

/// `webhook` (adnanh/webhook, Debian package `webhook`) with two hooks: `got`, whose
/// command writes the raw body and the headers (JSON) to `<dir>/<name>.body|.headers`
/// (the name comes from the query string), and `slow`, which answers after 30 s.
/// (Also reboots.rs's receiver.)
pub(crate) struct WebhookServer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl WebhookServer {
    pub(crate) fn start(dir: &Path) -> WebhookServer {
        std::fs::create_dir_all(dir).unwrap();
        let record = dir.join("record");
        std::fs::write(
            &record,
            "#!/bin/sh\nprintf '%s' \"$3\" > \"$1/$2.headers\"\nprintf '%s' \"$4\" > \"$1/$2.body\"\necho recorded\n",
        )
        .unwrap();
        let slow = dir.join("slow");
        std::fs::write(&slow, "#!/bin/sh\nsleep 30\n").unwrap();
        for f in [&record, &slow] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let hooks = serde_json::json!([
            {
                "id": "got",
                "execute-command": record,
                "include-command-output-in-response": true,
                "pass-arguments-to-command": [
                    {"source": "string", "name": dir},
                    {"source": "url", "name": "name"},
                    {"source": "entire-headers"},
                    {"source": "raw-request-body"}
                ]
            },
            {
                "id": "slow",
                "execute-command": slow,
                "include-command-output-in-response": true
            }
        ]);
        let file = dir.join("hooks.json");
        std::fs::write(&file, hooks.to_string()).unwrap();
        let port = closed_port();
        let child = Command::new("webhook")
            .args(["-ip", "127.0.0.1", "-port", &port.to_string(), "-hooks"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("webhook");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "webhook did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        WebhookServer {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    pub(crate) fn url(&self, hook: &str, name: &str) -> String {
        format!("http://127.0.0.1:{}/hooks/{hook}?name={name}", self.port)
    }

    pub(crate) fn body(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.body")))
            .unwrap_or_else(|e| panic!("the receiver got no {name} post: {e}"))
    }

    fn headers(&self, name: &str) -> Value {
        let text = std::fs::read_to_string(self.dir.join(format!("{name}.headers"))).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn got(&self, name: &str) -> bool {
        self.dir.join(format!("{name}.body")).exists()
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

fn ready() -> bool {
    nix_available() && require("webhook")
}

#[test]
fn ntfy_and_json_posts_and_a_hook_command_hear_of_a_deployment() {
    if !ready() {
        return;
    }
    let mut h = Harness::new();
    let server = WebhookServer::start(&h.path("webhook"));
    let secrets = h.path("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("token"), "tk_s3cret\n").unwrap();
    std::fs::write(
        secrets.join("headers"),
        "# extra headers\nX-Receiver-Key: hdr_s3cret\n",
    )
    .unwrap();
    let env_out = h.path("hook-env");
    h.extra = format!(
        "[[notify.webhooks]]\nurl = \"{ntfy}\"\nformat = \"ntfy\"\ntoken_file = \"{s}/token\"\n\
         [[notify.webhooks]]\nurl = \"{json}\"\nformat = \"json\"\nheaders_file = \"{s}/headers\"\non = [\"deployed\", \"failed\"]\n\
         [[notify.webhooks]]\nurl = \"{never}\"\non = [\"failed\"]\n\
         [[notify.commands]]\ncommand = [\"/bin/sh\", \"-c\", \"env | grep ^HOMELAB_AGENT_ | sort > \\\"$0\\\"\", \"{env}\"]\n",
        ntfy = server.url("got", "ntfy"),
        json = server.url("got", "json"),
        never = server.url("got", "never"),
        s = secrets.display(),
        env = env_out.display(),
    );
    h.host("pi1").content = "v1".into();
    let commit = h.commit("first deploy");
    let run = h.run_once();
    run.expect(0);

    // ntfy: the message as plain text, the title, tags and priority as headers.
    let body = server.body("ntfy");
    assert!(
        body.starts_with(&format!(
            "pi1: deployed {} (first deploy) as generation 1",
            &commit[..12]
        )),
        "{body}"
    );
    let headers = server.headers("ntfy");
    assert_eq!(headers["Title"], "homelab-agent: pi1 deployed");
    assert_eq!(headers["Tags"], "white_check_mark");
    assert_eq!(headers["Priority"], "default");
    assert_eq!(headers["Authorization"], "Bearer tk_s3cret");
    assert!(headers["Content-Type"]
        .as_str()
        .unwrap()
        .starts_with("text/plain"));

    // json: the versioned document, headers from the file.
    let doc: Value = serde_json::from_str(&server.body("json")).unwrap();
    assert_eq!(doc["schema"], "homelab-agent.notification");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["outcome"], "deployed");
    assert_eq!(doc["host"], "pi1");
    assert_eq!(doc["commit"], commit.as_str());
    assert_eq!(doc["generation"], 1);
    assert_eq!(doc["needs_attention"], false);
    let headers = server.headers("json");
    assert_eq!(headers["X-Receiver-Key"], "hdr_s3cret");
    assert_eq!(headers["Content-Type"], "application/json");

    // Only receivers listening for the outcome hear of it.
    assert!(!server.got("never"));

    // The hook command: the outcome in its environment.
    let env = std::fs::read_to_string(&env_out).expect("the hook command did not run");
    for line in [
        "HOMELAB_AGENT_OUTCOME=deployed".to_string(),
        format!("HOMELAB_AGENT_COMMIT={commit}"),
        "HOMELAB_AGENT_HOST=pi1".into(),
        "HOMELAB_AGENT_GENERATION=1".into(),
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing in:\n{env}");
    }
    assert!(env.contains("HOMELAB_AGENT_MESSAGE=pi1: deployed"), "{env}");

    // Secrets are never logged, nor in state or status.
    let status = h.status().to_string();
    for secret in ["tk_s3cret", "hdr_s3cret"] {
        assert!(!run.stderr().contains(secret), "{}", run.stderr());
        assert!(!status.contains(secret));
    }

    // A poll that finds nothing new tells nobody.
    std::fs::remove_file(h.path("webhook/ntfy.body")).unwrap();
    h.run_once().expect(0);
    assert!(!server.got("ntfy"));
}

#[test]
fn a_receiver_that_is_down_or_slow_never_fails_or_holds_up_a_deploy() {
    if !ready() {
        return;
    }
    let mut h = Harness::new();
    let server = WebhookServer::start(&h.path("webhook"));
    h.extra = format!(
        "[[notify.webhooks]]\nurl = \"http://127.0.0.1:{down}/x\"\non = [\"deployed\", \"failed\"]\n\
         [[notify.webhooks]]\nurl = \"{slow}\"\ntimeout = \"1s\"\non = [\"deployed\", \"failed\"]\n\
         [[notify.commands]]\ncommand = [\"/bin/sleep\", \"60\"]\ntimeout = \"1s\"\non = [\"deployed\", \"failed\"]\n\
         [[notify.webhooks]]\nurl = \"{json}\"\nformat = \"json\"\non = [\"failed\"]\n",
        down = closed_port(),
        slow = server.url("slow", "slow"),
        json = server.url("got", "json"),
    );
    h.bootstrap();
    let started = Instant::now();
    h.host("pi1").content = "next".into();
    h.host("pi1").healthy = false;
    h.commit("breaks health");
    let run = h.run_once();
    let took = started.elapsed();
    // A failed deployment that was rolled back: exit 1, as without receivers.
    run.expect(1);
    let err = run.stderr();
    assert!(err.contains("notify.webhooks[0] (127.0.0.1:"), "{err}");
    assert!(err.contains("not reached"), "{err}");
    assert!(
        err.contains("notify.webhooks[1] (127.0.0.1:") && err.contains("no answer within 1s"),
        "{err}"
    );
    assert!(err.contains("notify.commands[0] failed: "), "{err}");
    assert!(err.contains("timed out after 1s"), "{err}");
    // The slow receivers cost their 1 s timeout (at once, not one after the other), not 30 s.
    assert!(took < Duration::from_secs(25), "took {took:?}");
    let doc: Value = serde_json::from_str(&server.body("json")).unwrap();
    assert_eq!(doc["outcome"], "failed");
    assert_eq!(doc["rolled_back"], true);
    assert_eq!(doc["phase"], "health");
    // The run was recorded before anyone was told.
    assert_eq!(h.status()["last_run"]["outcome"], "failed");
}

#[test]
fn a_bad_notify_key_is_a_configuration_error_naming_it() {
    let mut h = Harness::new();
    h.extra = "[[notify.webhooks]]\nurl = \"https://ntfy.sh/t\"\non = [\"deploy\"]\n".into();
    h.host("pi1").content = "v1".into();
    let run = h.run_once();
    run.expect(78);
    assert!(
        run.stderr().contains("notify.webhooks[0].on")
            && run.stderr().contains("unknown outcome \"deploy\""),
        "{}",
        run.stderr()
    );
}
