//! Reboots with the real binary, real git and nix, and the FleetLock test server
//! (tests/fleetlock/server.py) on loopback. `systemctl` is a shim that logs its argv: the
//! reboot itself is tested under real systemd in the container harness.
//!
//! The bootloader is a *model* (`[reboot] bootloader = "test-model"`, [`model_boot`]): a
//! flag file boots the trial system once. What a real bootloader does is proved by the
//! QEMU tier against real U-Boot and a real kernel (trial_verifies, trial_panics,
//! power_cut_during_trial, trial_hangs_watchdog).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{nix_available, require, servers::closed_port, Harness};

/// The FleetLock server of the tests, killed on drop.
struct FleetLock {
    child: Child,
    port: u16,
    events: PathBuf,
}

impl FleetLock {
    fn start(dir: &Path, slots: u32) -> FleetLock {
        FleetLock::start_with(dir, &["--slots", &slots.to_string()])
    }

    fn start_with(dir: &Path, args: &[&str]) -> FleetLock {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fleetlock/server.py");
        let port_file = dir.join("fleetlock.port");
        let events = dir.join("fleetlock.events");
        let child = Command::new("python3")
            .arg(&script)
            .args(args)
            .arg("--port-file")
            .arg(&port_file)
            .arg("--events")
            .arg(&events)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the FleetLock server");
        let started = Instant::now();
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                break p;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "FleetLock server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        FleetLock {
            child,
            port,
            events,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every lock request the server saw, in order.
    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for FleetLock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn prerequisites() -> bool {
    nix_available() && require("python3")
}

/// A machine whose `systemctl` logs its argv, with `[reboot]` as given.
fn machine(reboot: &str) -> Harness {
    let mut h = Harness::new();
    let shim = h.path("shim/systemctl");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\n",
            h.path("systemctl.log").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    h.systemctl = Some(shim);
    let model = h.path("model-boot");
    std::fs::create_dir_all(&model).unwrap();
    h.extra = format!(
        "[reboot]\nbootloader = \"test-model\"\n{reboot}\n[reboot.uboot]\nboot_dir = \"{}\"\n",
        model.display()
    );
    h
}

/// The model bootloader boots: the trial system once when the flag is set (clearing the
/// flag first, as the U-Boot boot command does), else the profile's default. Returns
/// what booted.
fn model_boot(h: &Harness) -> PathBuf {
    let flag = h.path("model-boot/trial-model.flag");
    let system = if flag.exists() {
        std::fs::remove_file(&flag).unwrap();
        PathBuf::from(std::fs::read_to_string(h.path("model-boot/trial-model.system")).unwrap())
    } else {
        h.profile_system().unwrap()
    };
    boot(h, &system);
    system
}

fn reboots(h: &Harness) -> Vec<String> {
    std::fs::read_to_string(h.path("systemctl.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("reboot"))
        .map(str::to_string)
        .collect()
}

/// The machine boots `system`: the booted link moves, the runtime dir (a tmpfs) empties.
fn boot(h: &Harness, system: &Path) {
    let link = h.fake.join("run/booted-system");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(system, &link).unwrap();
    let cur = h.current_system_link();
    let _ = std::fs::remove_file(&cur);
    std::os::unix::fs::symlink(system, &cur).unwrap();
    let _ = std::fs::remove_dir_all(h.path("runtime"));
}

/// Bootstrapped and booted into generation 1, then a commit with another kernel deployed
/// (generation 2). Returns (generation 1's system, generation 2's system).
fn kernel_deployed(h: &mut Harness) -> (PathBuf, PathBuf) {
    let (_, first) = h.bootstrap();
    boot(h, &first);
    h.host("pi1").kernel = "k2".into();
    h.commit("new kernel");
    let run = h.run_once();
    assert_eq!(run.code(), 0, "deploy failed:\n{}", run.stderr());
    // Live, and not the boot default: that stays the last verified generation.
    let second = std::fs::canonicalize(h.current_system_link()).unwrap();
    assert_ne!(first, second);
    assert_eq!(h.profile_system().as_deref(), Some(first.as_path()));
    (first, second)
}

#[test]
fn two_machines_in_one_group_with_one_slot_never_reboot_together() {
    if !prerequisites() {
        return;
    }
    let lockdir = tempfile::tempdir().unwrap();
    let server = FleetLock::start(lockdir.path(), 1);
    let config = |id: &str| {
        format!(
            "policy = \"when-required\"\nfleetlock_url = \"{}\"\ngroup = \"pis\"\nid = \"{id}\"",
            server.url()
        )
    };
    let mut pi1 = machine(&config("pi1"));
    let mut pi2 = machine(&config("pi2"));
    let (_, pi1_new) = kernel_deployed(&mut pi1);
    assert_eq!(reboots(&pi1).len(), 1, "pi1 reboots with the slot");
    assert!(
        reboots(&pi1)[0].contains("--message=homelab-agent: rebooting once into /nix/store/")
            && reboots(&pi1)[0].contains(" as a trial"),
        "{:?}",
        reboots(&pi1)
    );
    let s1 = pi1.status();
    assert_eq!(s1["reboot"]["fleetlock"]["slot_held"], true, "{s1}");
    assert!(s1["reboot"]["rebooting"]["system"].is_string(), "{s1}");

    let (_, pi2_new) = kernel_deployed(&mut pi2);
    assert!(reboots(&pi2).is_empty(), "pi2 must wait for the slot");
    let s2 = pi2.status();
    let pending = &s2["reboot"]["pending"];
    assert_eq!(pending["waiting_for"], "lock", "{s2}");
    assert!(
        pending["detail"]
            .as_str()
            .unwrap()
            .contains("failed_lock_semaphore_full"),
        "{s2}"
    );
    assert!(
        pending["generation"].is_null(),
        "live, no generation yet: {s2}"
    );
    // Another run: still waiting, still no reboot.
    pi2.run_once();
    assert!(reboots(&pi2).is_empty());

    // pi1 comes back in its trial; verify-boot confirms it and frees the slot.
    assert_eq!(model_boot(&pi1), pi1_new);
    let v = pi1.agent(&["verify-boot"]);
    assert_eq!(v.code(), 0, "{}\n{}", v.stdout(), v.stderr());
    assert!(v.stdout().contains("boot verified"), "{}", v.stdout());
    let s1 = pi1.status();
    assert_eq!(s1["reboot"]["booted"]["verified"], true, "{s1}");
    assert_eq!(s1["reboot"]["fleetlock"]["slot_held"], false, "{s1}");
    assert!(
        s1["reboot"]["pending"].is_null() && s1["reboot"]["rebooting"].is_null(),
        "{s1}"
    );

    // Now pi2 gets the slot.
    let run = pi2.run_once();
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(
        reboots(&pi2).len(),
        1,
        "pi2 reboots once pi1 released the slot"
    );
    assert_eq!(model_boot(&pi2), pi2_new);
    assert_eq!(pi2.agent(&["verify-boot"]).code(), 0);
    assert_eq!(
        pi2.profile_system(),
        Some(pi2_new),
        "verified: now the boot default"
    );

    // The server's own log: never two holders at once, and each took and released.
    let events = server.events();
    assert!(
        events
            .iter()
            .all(|e| e["holders"]["pis"].as_array().map_or(0, Vec::len) <= 1),
        "{events:?}"
    );
    for id in ["pi1", "pi2"] {
        let granted = |ep: &str| {
            events
                .iter()
                .any(|e| e["id"] == id && e["endpoint"] == ep && e["status"] == 200)
        };
        assert!(
            granted("v1/pre-reboot") && granted("v1/steady-state"),
            "{id}: {events:?}"
        );
    }
    assert!(
        events
            .iter()
            .any(|e| e["id"] == "pi2" && e["status"] == 409),
        "{events:?}"
    );
}

#[test]
fn a_fleetlock_server_that_is_down_means_wait_never_reboot() {
    if !prerequisites() {
        return;
    }
    let mut h = machine(&format!(
        "policy = \"when-required\"\nfleetlock_url = \"http://127.0.0.1:{}\"\nid = \"pi1\"",
        closed_port()
    ));
    kernel_deployed(&mut h);
    assert!(reboots(&h).is_empty());
    let s = h.status();
    let pending = &s["reboot"]["pending"];
    assert_eq!(pending["waiting_for"], "lock", "{s}");
    assert!(
        pending["detail"].as_str().unwrap().contains("no answer"),
        "{s}"
    );
    let human = h.agent(&["status"]);
    assert!(
        human
            .stdout()
            .contains("(live): waiting for the FleetLock slot"),
        "{}",
        human.stdout()
    );
}

#[test]
fn a_boot_that_fails_its_checks_falls_back_reboots_once_and_never_loops() {
    if !prerequisites() {
        return;
    }
    let mut h = machine("policy = \"when-required\"");
    // Healthy unless the "broken after boot" marker exists.
    h.checks = Some(format!(
        "[[health.checks]]\nname = \"after-boot\"\ntype = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"test ! -e {}\"]\ntimeout = \"5s\"\n",
        h.path("broken").display()
    ));
    let (first, second) = kernel_deployed(&mut h);
    assert_eq!(reboots(&h).len(), 1);
    let deployed_commit = h.status()["deployed"]["commit"]
        .as_str()
        .unwrap()
        .to_string();

    // The trial boots the new kernel, and something is broken.
    std::fs::write(h.path("broken"), "").unwrap();
    assert_eq!(model_boot(&h), second);
    let v = h.agent(&["verify-boot"]);
    assert_eq!(v.code(), 1, "{}\n{}", v.stdout(), v.stderr());
    assert!(
        v.stderr().contains("boot verification failed"),
        "{}",
        v.stderr()
    );
    assert_eq!(reboots(&h).len(), 2, "one reboot back");
    // The boot default never moved: nothing was switched to make it so.
    assert_eq!(h.profile_system().as_deref(), Some(first.as_path()));
    assert!(
        !h.stc_log().iter().any(|(_, action)| action == "boot"),
        "{:?}",
        h.stc_log()
    );
    let s = h.status();
    assert_eq!(s["reboot"]["fell_back"]["kind"], "trial-failed", "{s}");
    assert_eq!(s["reboot"]["booted"]["verified"], false, "{s}");
    let history = h.history();
    assert_eq!(history[0]["outcome"], "failed");
    assert_eq!(history[0]["commit"], deployed_commit.as_str());

    // The bootloader boots the bad system again anyway: no second reboot.
    boot(&h, &second);
    let v = h.agent(&["verify-boot"]);
    assert_eq!(v.code(), 1, "{}", v.stderr());
    assert!(v.stderr().contains("not rebooting again"), "{}", v.stderr());
    assert_eq!(reboots(&h).len(), 2);
    // Nor does the next run (issue 23 item 15).
    let run = h.run_once();
    assert_eq!(reboots(&h).len(), 2, "{}", run.stderr());
    assert_eq!(h.status()["reboot"]["pending"]["waiting_for"], "attention");

    // The model bootloader boots its default (the breakage was the new kernel's): it
    // verifies, nothing to reboot for.
    std::fs::remove_file(h.path("broken")).unwrap();
    assert_eq!(model_boot(&h), first);
    let v = h.agent(&["verify-boot"]);
    assert_eq!(v.code(), 0, "{}\n{}", v.stdout(), v.stderr());
    let run = h.run_once();
    assert_eq!(run.code(), 0, "{}", run.stderr());
    assert_eq!(reboots(&h).len(), 2);
    // The commit is bad: not redeployed.
    assert_eq!(h.profile_system().as_deref(), Some(first.as_path()));
    assert_eq!(
        std::fs::canonicalize(h.current_system_link()).unwrap(),
        first
    );
}

/// A failed boot verification is a recorded failure like any other: the receivers hear
/// of it (once), and before the fallback reboot that ends the unit. Here `systemctl`
/// notes, when asked to reboot, whether the receiver already has the post.
#[test]
fn a_failed_boot_verification_is_notified_before_the_fallback_reboot() {
    if !prerequisites() || !require("webhook") {
        return;
    }
    let mut h = machine("policy = \"when-required\"");
    let server = crate::notifications::WebhookServer::start(&h.path("webhook"));
    let body = h.path("webhook/boot.body");
    std::fs::write(
        h.path("shim/systemctl"),
        format!(
            "#!/bin/sh\necho \"$*\" >> {log}\n\
             if [ \"$1\" = reboot ]; then\n\
             \tif [ -e {body} ]; then echo told >> {order}; else echo untold >> {order}; fi\n\
             fi\n",
            log = h.path("systemctl.log").display(),
            body = body.display(),
            order = h.path("order").display(),
        ),
    )
    .unwrap();
    let told = h.path("told");
    h.extra.push_str(&format!(
        "[[notify.webhooks]]\nurl = \"{json}\"\nformat = \"json\"\non = [\"failed\"]\n\
         [[notify.commands]]\ncommand = [\"/bin/sh\", \"-c\", \"echo \\\"$HOMELAB_AGENT_OUTCOME\\\" >> \\\"$0\\\"\", \"{told}\"]\non = [\"failed\"]\n",
        json = server.url("got", "boot"),
        told = told.display(),
    ));
    h.checks = Some(format!(
        "[[health.checks]]\nname = \"after-boot\"\ntype = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"test ! -e {}\"]\ntimeout = \"5s\"\n",
        h.path("broken").display()
    ));
    let (_first, second) = kernel_deployed(&mut h);
    assert!(!body.exists(), "a deployment is not a failure");
    let deployed_commit = h.status()["deployed"]["commit"]
        .as_str()
        .unwrap()
        .to_string();

    std::fs::write(h.path("broken"), "").unwrap();
    assert_eq!(model_boot(&h), second);
    let v = h.agent(&["verify-boot"]);
    assert_eq!(v.code(), 1, "{}\n{}", v.stdout(), v.stderr());
    assert_eq!(reboots(&h).len(), 2, "one fallback reboot");
    // The first reboot (into the new kernel) came before any failure; at the second
    // (the fallback) the receiver must already have the failure.
    assert_eq!(
        std::fs::read_to_string(h.path("order")).unwrap_or_default(),
        "untold\ntold\n",
        "the receiver did not have the failure before the fallback reboot"
    );
    let doc: Value = serde_json::from_str(&server.body("boot")).unwrap();
    assert_eq!(doc["schema"], "homelab-agent.notification");
    assert_eq!(doc["outcome"], "failed", "{doc}");
    assert_eq!(doc["host"], "pi1");
    assert_eq!(doc["commit"], deployed_commit.as_str(), "{doc}");
    assert_eq!(doc["system"], second.display().to_string(), "{doc}");
    assert_eq!(doc["phase"], "health", "{doc}");
    assert!(
        doc["generation"].is_null(),
        "a trial is no generation: {doc}"
    );
    assert_eq!(doc["rolled_back"], true, "{doc}");
    assert!(
        doc["error"].as_str().is_some_and(|e| e.contains(&format!(
            "the trial boot of {} failed its health checks: after-boot",
            second.display()
        ))),
        "{doc}"
    );
    // Told once: verify-boot sends the events of what it recorded, once, before the reboot.
    assert_eq!(std::fs::read_to_string(&told).unwrap(), "failed\n");
}

#[test]
fn outside_the_window_no_reboot_and_status_says_until_when() {
    if !prerequisites() {
        return;
    }
    // A window that opens in two hours (UTC) and lasts one.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let hhmm = |secs: u64| format!("{:02}:{:02}", secs / 3600 % 24, secs / 60 % 60);
    let (start, end) = (hhmm(now + 2 * 3600), hhmm(now + 3 * 3600));
    let mut h = machine(&format!(
        "policy = \"when-required\"\n[reboot.window]\nstart = \"{start}\"\nend = \"{end}\"\ntimezone = \"UTC\""
    ));
    kernel_deployed(&mut h);
    assert!(reboots(&h).is_empty(), "{:?}", reboots(&h));
    let s = h.status();
    let pending = &s["reboot"]["pending"];
    assert_eq!(pending["waiting_for"], "window", "{s}");
    let until = pending["until"].as_str().unwrap();
    assert!(
        until.contains(&format!("T{start}:00Z")),
        "{until} vs {start}: {s}"
    );
    assert!(
        pending["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("daily {start}-{end} UTC")),
        "{s}"
    );
}

/// The agent's client against the test server: the protocol, both ways.
#[test]
fn the_client_and_the_test_server_speak_the_protocol() {
    use homelab_agent::doors::fleetlock::{Client, LockError};
    if !require("python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = FleetLock::start_with(dir.path(), &["--base", "/lock", "--group-slots", "two=2"]);
    let base = format!("{}/lock/", server.url());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let a = Client::new(&base, "default", "a").unwrap();
        let b = Client::new(&base, "default", "b").unwrap();
        a.pre_reboot().await.expect("a takes the slot");
        a.pre_reboot().await.expect("recursive: a holds it already");
        match b.pre_reboot().await {
            Err(LockError::Refused {
                status,
                kind,
                value,
                ..
            }) => {
                assert_eq!((status, kind.as_str()), (409, "failed_lock_semaphore_full"));
                assert!(value.contains("held by a"), "{value}");
            }
            other => panic!("b must be refused: {other:?}"),
        }
        b.steady_state()
            .await
            .expect("unlock if held: b holds nothing, still 200");
        // Groups are separate semaphores, with their own sizes.
        for id in ["x", "y"] {
            Client::new(&base, "two", id)
                .unwrap()
                .pre_reboot()
                .await
                .unwrap();
        }
        assert!(Client::new(&base, "two", "z")
            .unwrap()
            .pre_reboot()
            .await
            .is_err());
        a.steady_state().await.unwrap();
        b.pre_reboot().await.expect("released by a: b gets it");

        // Without the protocol header, or with a group outside its alphabet: refused.
        let http = reqwest::Client::new();
        let answer = http
            .post(format!("{base}v1/pre-reboot"))
            .body(r#"{"client_params":{"id":"c","group":"default"}}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 400);
        let v: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
        assert_eq!(v["kind"], "missing_fleet_lock_header");
        match Client::new(&base, "no group!", "c")
            .unwrap()
            .pre_reboot()
            .await
        {
            Err(LockError::Refused {
                status: 400, kind, ..
            }) => assert_eq!(kind, "invalid_group"),
            other => panic!("{other:?}"),
        }
    });
    let holders: Vec<(String, String)> = server
        .events()
        .iter()
        .filter(|e| e["status"] == 200 && e["endpoint"] == "v1/pre-reboot")
        .map(|e| {
            (
                e["group"].as_str().unwrap().into(),
                e["id"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(holders.len(), 5, "{holders:?}");
}

/// Kill points of the trial (the `failpoints` feature): the agent killed right after
/// arming the trial, and verify-boot killed right after promoting it. Each leaves a
/// consistent machine: the boot default is always a verified generation, and the next
/// boot or run finishes the job.
#[cfg(feature = "failpoints")]
#[test]
fn a_kill_while_arming_or_promoting_a_trial_leaves_a_verified_default() {
    if !prerequisites() {
        return;
    }
    let mut h = machine("policy = \"when-required\"");
    let (_, first) = h.bootstrap();
    boot(&h, &first);
    h.host("pi1").kernel = "k2".into();
    h.commit("new kernel");
    let mut cmd = h.command(&["run", "--once"]);
    cmd.env("HOMELAB_AGENT_FAILPOINTS", "after_trial_arm");
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        None,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(reboots(&h).is_empty(), "killed before the reboot");
    // The default never moved; the trial is armed: whoever reboots next boots it once.
    assert_eq!(h.profile_system().as_deref(), Some(first.as_path()));
    let second = std::fs::canonicalize(h.current_system_link()).unwrap();
    assert_eq!(model_boot(&h), second);

    // verify-boot is killed right after the profile and the boot entry moved.
    let mut cmd = h.command(&["verify-boot"]);
    cmd.env("HOMELAB_AGENT_FAILPOINTS", "after_trial_promote");
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        None,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        h.profile_system().as_deref(),
        Some(second.as_path()),
        "verified: the default"
    );
    // The next boot (of the new default) finishes the record; nothing is rebooted.
    assert_eq!(model_boot(&h), second);
    let v = h.agent(&["verify-boot"]);
    assert_eq!(v.code(), 0, "{}\n{}", v.stdout(), v.stderr());
    let s = h.status();
    assert_eq!(s["reboot"]["booted"]["verified"], true, "{s}");
    assert!(s["reboot"]["pending"].is_null(), "{s}");
    assert!(reboots(&h).is_empty());
    assert_eq!(h.profile_system().as_deref(), Some(second.as_path()));
}

/// Runs `cmd` under python3 and returns its exit code, stderr and the largest resident
/// set (KiB) of it and its descendants (getrusage of the children, which only it has).
fn with_max_rss(cmd: &Command) -> (Option<i32>, String, u64) {
    const SCRIPT: &str = "import resource, subprocess, sys\n\
        p = subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n\
        sys.stderr.write(p.stderr.decode(errors='replace'))\n\
        sys.stderr.write('\\nmaxrss_kib=%d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n\
        sys.exit(p.returncode)\n";
    let mut py = Command::new("python3");
    py.arg("-c")
        .arg(SCRIPT)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => py.env(k, v),
            None => py.env_remove(k),
        };
    }
    let out = py.output().expect("python3");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let rss = err
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("maxrss_kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no maxrss in:\n{err}"));
    (out.status.code(), err, rss)
}

/// Issue 23 item 14: a FleetLock server answering 500 with a 256 MiB body. The agent reads
/// at most 64 KiB of it (memory stays far below the body), says what happened, and waits.
#[test]
fn a_huge_fleetlock_error_body_is_not_read_whole() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = FleetLock::start_with(dir.path(), &["--huge-error", "256"]);
    let mut h = machine(&format!(
        "policy = \"when-required\"\nfleetlock_url = \"{}\"\nid = \"pi1\"",
        server.url()
    ));
    kernel_deployed(&mut h);
    let asked = server.events().len();
    assert!(asked >= 1, "the deployment did not ask for the slot");

    // The next run asks again: measured alone (no build in it).
    let (code, err, rss_kib) = with_max_rss(&h.command(&["run", "--once"]));
    assert!(
        server.events().len() > asked,
        "the measured run did not ask for the slot ({code:?}):\n{err}"
    );
    assert!(
        rss_kib < 100 * 1024,
        "the agent's memory grew to {} MiB on a 256 MiB error body:\n{err}",
        rss_kib / 1024
    );
    assert!(reboots(&h).is_empty(), "rebooted without the slot");
    let s = h.status();
    let detail = s["reboot"]["pending"]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(detail.contains("HTTP 500"), "{s}");
    assert!(
        detail.contains("its body is over 64 KiB, the rest was not read"),
        "{s}"
    );
}
