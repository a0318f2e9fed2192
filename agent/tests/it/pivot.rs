//! Map mode (the generic image), with the real binary, git and nix: a machine with no
//! host of its own finds it in `machines.toml` by its serial number, deploys it through
//! the normal protocol and follows it; an unknown machine is told the line to add.

use crate::support::{base, nix_available, Harness};

const SERIAL: &str = "10000000abcdef01";

/// A generic machine: map mode, its identity files in the temp dir, hosts pi1 and pi2.
fn generic(serial: &str, map: &str) -> Harness {
    let mut h = Harness::new();
    let id = h.path("identity");
    std::fs::create_dir_all(id.join("net/eth0/device")).unwrap();
    std::fs::write(id.join("serial-number"), format!("{serial}\0")).unwrap();
    std::fs::write(id.join("net/eth0/address"), "dc:a6:32:01:02:03\n").unwrap();
    h.host_table = "map = \"machines.toml\"".into();
    h.paths_extra = format!(
        "serial_number = \"{d}/serial-number\"\ncpuinfo = \"{d}/cpuinfo\"\nnet_class = \"{d}/net\"\nhost_file = \"{d}/homelab-host\"",
        d = id.display()
    );
    h.host("pi1").content = "v1".into();
    h.host("pi2").content = "v1".into();
    std::fs::write(h.repo.join("machines.toml"), map).unwrap();
    h
}

const MAP: &str = "# which machine is which host\nserial-00000000deadbeef = \"pi1\"\nserial-10000000ABCDEF01 = \"pi2\"\n";

#[test]
fn generic_machine_pivots_to_pi2_and_follows_it() {
    if !nix_available() {
        return;
    }
    let mut h = generic(SERIAL, MAP);
    let c1 = h.commit("two pis");
    let run = h.run_once();
    run.expect(0);
    assert!(
        run.stderr()
            .contains(&format!("this machine is pi2 (serial-{SERIAL}")),
        "{}",
        run.stderr()
    );
    let system = h.current_system().expect("pi2 was not deployed");
    assert!(base(&system).contains("pi2"), "{}", system.display());
    assert_eq!(h.profile_generation(), Some(1));
    let s = h.status();
    assert_eq!(s["host"], "pi2");
    assert_eq!(s["pivot"]["map"], "machines.toml");
    assert_eq!(s["pivot"]["host"], "pi2");
    assert_eq!(s["pivot"]["by"], format!("serial-{SERIAL}"));
    assert_eq!(s["pivot"]["add"], serde_json::Value::Null);
    assert_eq!(s["deployed"]["commit"], c1.as_str());

    // Only pi1 changes: pi2's system is the same, nothing is switched.
    h.host("pi1").content = "v2".into();
    h.commit("pi1 only");
    h.clear_stc_log();
    h.run_once().expect(0);
    assert_eq!(h.status()["last_run"]["outcome"], "unchanged");
    assert!(h.stc_log().is_empty(), "{:?}", h.stc_log());
    assert_eq!(h.current_system(), Some(system.clone()));

    // pi2 changes: deployed through the protocol, a new generation.
    h.host("pi2").content = "v2".into();
    let c3 = h.commit("pi2 v2");
    h.run_once().expect(0);
    let s = h.status();
    assert_eq!(s["last_run"]["outcome"], "deployed");
    assert_eq!(s["deployed"]["commit"], c3.as_str());
    assert_eq!(h.profile_generation(), Some(2));
    let now = h.current_system().unwrap();
    assert_ne!(now, system);
    assert!(base(&now).contains("pi2"), "{}", now.display());
    assert_eq!(
        h.stc_log(),
        [(base(&now), "test".into()), (base(&now), "boot".into())]
    );
}

#[test]
fn unknown_machine_says_what_to_add_and_blames_nothing() {
    if !nix_available() {
        return;
    }
    let h = generic("10000000cafe0001", MAP);
    let c1 = h.commit("two pis");
    let run = h.run_once();
    run.expect(78);
    let line = "add to machines.toml: serial-10000000cafe0001 = \"<host>\"";
    assert!(run.stderr().contains(&format!(
        "machines.toml at {} has no line for this machine (serial-10000000cafe0001, mac-dc-a6-32-01-02-03); it stays on the provisioning system and keeps polling",
        &c1[..8]
    )), "{}", run.stderr());
    assert!(
        run.stderr().contains(&format!("hint: {line}")),
        "{}",
        run.stderr()
    );
    assert_eq!(h.nix_builds(), 0, "an unmapped machine must build nothing");
    assert_eq!(h.current_system(), None);

    let s = h.status();
    assert_eq!(s["last_run"]["outcome"], "failed");
    assert_eq!(s["last_run"]["phase"], "verify");
    assert_eq!(s["bad_commit"], serde_json::Value::Null);
    assert_eq!(s["pivot"]["host"], serde_json::Value::Null);
    assert_eq!(s["pivot"]["add"], line);
    assert_eq!(
        s["pivot"]["identities"],
        serde_json::json!(["serial-10000000cafe0001", "mac-dc-a6-32-01-02-03"])
    );
    let human = h.agent(&["status"]);
    assert!(human.stdout().contains(line), "{}", human.stdout());

    // It keeps polling the same head (nothing marked bad, nothing handled) ...
    h.run_once().expect(78);
    assert_eq!(h.nix_builds(), 0);

    // ... and adding the Pi is one commit.
    let mut map = MAP.to_string();
    map.push_str("serial-10000000cafe0001 = \"pi1\"\n");
    std::fs::write(h.repo.join("machines.toml"), map).unwrap();
    h.commit("add the third pi as pi1");
    h.run_once().expect(0);
    let s = h.status();
    assert_eq!(s["host"], "pi1");
    assert_eq!(s["last_run"]["outcome"], "deployed");
    assert!(base(&h.current_system().unwrap()).contains("pi1"));
}

#[test]
fn a_bad_map_is_a_clear_configuration_error() {
    if !nix_available() {
        return;
    }
    let h = generic(
        SERIAL,
        "serial-00000000deadbeef = \"pi1\"\nuuid-1234 = \"pi2\"\n",
    );
    let c1 = h.commit("bad map");
    let run = h.run_once();
    run.expect(78);
    assert!(
        run.stderr().contains(&format!(
            "reading machines.toml at {}: line 2: unknown identity kind \"uuid\" in \"uuid-1234\": keys start with \"serial-\" or \"mac-\"",
            &c1[..8]
        )),
        "{}",
        run.stderr()
    );
    assert_eq!(h.nix_builds(), 0);
    assert_eq!(h.status()["bad_commit"], serde_json::Value::Null);
}

#[test]
fn a_host_file_on_the_boot_partition_names_the_host() {
    if !nix_available() {
        return;
    }
    let h = generic("10000000cafe0001", "");
    std::fs::write(h.path("identity/homelab-host"), "pi2\n").unwrap();
    h.commit("empty map");
    h.run_once().expect(0);
    assert_eq!(h.status()["host"], "pi2");
    assert!(base(&h.current_system().unwrap()).contains("pi2"));
}

/// A testing-branch commit's map is read to build its test (here it names the machine
/// pi1), but never remembered: only main's commits decide which host the machine
/// follows, so the next main commit deploys pi2 again.
#[test]
fn a_testing_commits_map_is_resolved_but_never_remembered() {
    if !nix_available() {
        return;
    }
    let mut h = generic(SERIAL, MAP);
    h.source_extra = "testing_branch = \"testing/generic\"\n".into();
    let c1 = h.commit("two pis");
    h.run_once().expect(0);
    assert_eq!(h.status()["pivot"]["host"], "pi2");

    let git = |args: &[&str]| crate::support::git(&h.repo, args);
    git(&["checkout", "-q", "-b", "testing/generic"]);
    std::fs::write(
        h.repo.join("machines.toml"),
        MAP.replace(
            "serial-10000000ABCDEF01 = \"pi2\"",
            "serial-10000000ABCDEF01 = \"pi1\"",
        ),
    )
    .unwrap();
    let t1 = h.commit("try this machine as pi1");
    git(&["checkout", "-q", "main"]);
    h.clear_stc_log();
    let run = h.run_once();
    run.expect(0);
    let tested = h.current_system().unwrap();
    assert!(base(&tested).contains("pi1"), "{}", run.stderr());
    assert_eq!(h.stc_log(), [(base(&tested), "test".into())]);
    let s = h.status();
    assert_eq!(s["testing"]["commit"], t1.as_str(), "{s:#}");
    assert_eq!(s["testing"]["outcome"], "tested", "{s:#}");
    assert_eq!(s["host"], "pi2", "{s:#}");
    assert_eq!(s["pivot"]["host"], "pi2", "{s:#}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.path("state/state.json")).unwrap()).unwrap();
    assert_eq!(state["pivot"]["commit"], c1.as_str(), "{state:#}");

    // Main moves: pi2 is deployed, as main's map says.
    h.host("pi2").content = "v2".into();
    let c2 = h.commit("pi2 v2");
    h.run_once().expect(0);
    let s = h.status();
    assert_eq!(s["deployed"]["commit"], c2.as_str());
    assert!(base(&h.current_system().unwrap()).contains("pi2"));
    assert_eq!(s["pivot"]["host"], "pi2");
}

/// Runs `cmd`, killing it after `limit`: (exit code, stderr, stdout); `None` code if killed.
fn within(
    mut cmd: std::process::Command,
    limit: std::time::Duration,
) -> (Option<i32>, String, String) {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (code, err, out)
}

/// Issue 23 item 13: a FIFO (nobody writing) at any identity path never hangs `run` or
/// `status`: each ends at once with an error naming the path.
#[test]
fn a_fifo_at_an_identity_path_never_hangs_and_is_named() {
    if !nix_available() {
        return;
    }
    for file in ["homelab-host", "serial-number", "net/eth0/address"] {
        let h = generic(SERIAL, MAP);
        h.commit("first");
        let path = h.path("identity").join(file);
        let _ = std::fs::remove_file(&path);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        if file == "net/eth0/address" {
            // The MAC files are read whatever the serial says; no serial, to be sure.
            std::fs::remove_file(h.path("identity/serial-number")).unwrap();
        }
        let limit = std::time::Duration::from_secs(60);
        let (code, err, _) = within(h.command(&["run", "--once"]), limit);
        let said = format!(
            "reading this machine's identity from {}: a FIFO, not a regular file",
            path.display()
        );
        assert!(code.is_some(), "{file}: run --once hung on a FIFO:\n{err}");
        assert_ne!(code, Some(0), "{file}: {err}");
        assert!(err.contains(&said), "{file}: {err}");
        assert!(err.contains("hint: "), "{file}: {err}");
        assert_eq!(h.nix_builds(), 0, "{file}");

        let (code, _, out) = within(h.command(&["status", "--json"]), limit);
        assert!(code.is_some(), "{file}: status hung on a FIFO");
        let s: serde_json::Value = serde_json::from_str(&out).unwrap();
        let problem = s["pivot"]["problem"].as_str().unwrap_or_default();
        assert!(problem.contains(&said), "{file}: {s}");
    }
}

/// The daemon reads the map through its git child (the Source door it is composed with):
/// an unknown machine is told the line to add, as under `run --once`.
#[test]
fn a_daemon_reads_the_map_through_its_git_child() {
    let mut h = generic("10000000cafe0001", MAP);
    let c1 = h.commit("two pis");
    let daemon = crate::daemon_git::start_daemon(&mut h);
    crate::daemon_git::cycle_after(&h.path("runtime/last-poll.json"), None);
    let err = crate::daemon_git::stop(daemon);
    assert!(err.contains(&format!(
        "machines.toml at {} has no line for this machine (serial-10000000cafe0001, mac-dc-a6-32-01-02-03)",
        &c1[..8]
    )), "{err}");
    let s = h.status();
    assert_eq!(s["last_run"]["phase"], "verify", "{s}");
    assert_eq!(s["bad_commit"], serde_json::Value::Null, "{s}");
    assert_eq!(h.nix_builds(), 0, "{err}");
}
