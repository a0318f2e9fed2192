//! `resolve` against a real (libgit2) cache repository and a fake `/sys` in a temp dir.

use std::path::Path;

use super::identity::tests::FakeMachine;
use super::*;

struct World {
    state_dir: tempfile::TempDir,
    machine: FakeMachine,
}

impl World {
    fn new() -> World {
        let state_dir = tempfile::tempdir().unwrap();
        git2::Repository::init_bare(state_dir.path().join("cache.git")).unwrap();
        World {
            state_dir,
            machine: FakeMachine::new(),
        }
    }

    fn settings(&self, host: &str) -> Settings {
        let p = self.machine.paths();
        let text = format!(
            "[source]\nurl = \"/r\"\n[host]\n{host}\n[paths]\nstate_dir = {:?}\nserial_number = {:?}\ncpuinfo = {:?}\nnet_class = {:?}\nhost_file = {:?}\n",
            self.state_dir.path(),
            p.serial_number,
            p.cpuinfo,
            p.net_class,
            p.host_file
        );
        crate::config::parse(Path::new("/etc/test.toml"), &text).unwrap()
    }

    fn map_mode(&self) -> Settings {
        self.settings("map = \"machines.toml\"")
    }

    /// A commit in the cache whose tree holds `files`.
    fn commit(&self, files: &[(&str, &[u8])]) -> String {
        let repo = git2::Repository::open_bare(self.state_dir.path().join("cache.git")).unwrap();
        let mut tree = repo.treebuilder(None).unwrap();
        for (name, content) in files {
            let blob = repo.blob(content).unwrap();
            tree.insert(name, blob, 0o100644).unwrap();
        }
        let tree = repo.find_tree(tree.write().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.org").unwrap();
        repo.commit(None, &sig, &sig, "c", &tree, &[])
            .unwrap()
            .to_string()
    }
}

/// [`super::resolve`], its map read from the cache in this process (as the Source door's
/// in-process implementation reads it: source/blob.rs).
fn resolve(
    settings: &Settings,
    remembered: Option<&Resolved>,
    commit: &str,
) -> Result<Target, Failure> {
    struct Cache(std::path::PathBuf);
    impl MapReader for Cache {
        fn read_file<'a>(
            &'a self,
            commit: &'a str,
            file: &'a str,
            max: usize,
        ) -> Pin<Box<dyn Future<Output = Result<Option<String>, Failure>> + 'a>> {
            Box::pin(async move { crate::source::blob::read(&self.0, commit, file, max) })
        }
    }
    let cache = Cache(settings.paths.state_dir.join("cache.git"));
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(super::resolve(settings, remembered, commit, &cache))
}

const SERIAL: &str = "10000000abcdef01";

fn err(r: Result<Target, Failure>) -> Failure {
    let f = r.expect_err("no target expected");
    assert_eq!(f.kind, Kind::Configuration, "{}", f.message);
    f
}

#[test]
fn outside_map_mode_the_configured_host_is_built() {
    let w = World::new();
    let t = resolve(&w.settings("name = \"pi1\""), None, "0000").unwrap();
    assert_eq!(t.host, "pi1");
    assert_eq!(t.by, None);
}

#[test]
fn serial_maps_to_its_host() {
    let w = World::new();
    w.machine
        .write("serial-number", &format!("{SERIAL}\0"))
        .nic("eth0", "b8:27:eb:00:00:01", true);
    let c = w.commit(&[(
        "machines.toml",
        b"serial-00000000deadbeef = \"pi1\"\nserial-10000000ABCDEF01 = \"pi2\"\n",
    )]);
    let t = resolve(&w.map_mode(), None, &c).unwrap();
    assert_eq!(t.host, "pi2");
    assert_eq!(
        t.attribute,
        "nixosConfigurations.\"pi2\".config.system.build.toplevel"
    );
    assert_eq!(t.by.as_deref(), Some("serial-10000000abcdef01"));

    let c = w.commit(&[("machines.toml", b"mac-b8-27-eb-00-00-01 = \"pi1\"\n")]);
    assert_eq!(resolve(&w.map_mode(), None, &c).unwrap().host, "pi1");
}

#[test]
fn host_file_names_the_host_without_a_map() {
    let w = World::new();
    w.machine.write("homelab-host", "pi2\n");
    let c = w.commit(&[("flake.nix", b"{}")]);
    let t = resolve(&w.map_mode(), None, &c).unwrap();
    assert_eq!(t.host, "pi2");
    assert!(t.by.unwrap().starts_with("host file "));
}

#[test]
fn unknown_machine_is_told_the_line_to_add() {
    let w = World::new();
    w.machine
        .write("cpuinfo", &format!("Serial\t\t: {SERIAL}\n"));
    let c = w.commit(&[("machines.toml", b"serial-00000000deadbeef = \"pi1\"\n")]);
    let f = err(resolve(&w.map_mode(), None, &c));
    assert!(
        f.message.starts_with(&format!(
            "machines.toml at {} has no line for this machine (serial-{SERIAL}); it stays on the provisioning system",
            &c[..8]
        )),
        "{}",
        f.message
    );
    assert!(
        f.hint.as_deref().is_some_and(|h| h.starts_with(&format!(
            "add to machines.toml: serial-{SERIAL} = \"<host>\""
        ))),
        "{f:?}"
    );
    let c = w.commit(&[("flake.nix", b"{}")]);
    let f = err(resolve(&w.map_mode(), None, &c));
    assert!(
        f.message.starts_with("machines.toml does not exist at"),
        "{}",
        f.message
    );
}

#[test]
fn a_resolved_machine_keeps_following_its_host() {
    let w = World::new();
    w.machine
        .write("cpuinfo", &format!("Serial\t\t: {SERIAL}\n"));
    let c = w.commit(&[("machines.toml", b"")]);
    let before = Resolved {
        host: "pi2".into(),
        by: format!("serial-{SERIAL}"),
        commit: "1234".into(),
        at: "2026-11-25T00:00:00Z".into(),
    };
    assert_eq!(
        resolve(&w.map_mode(), Some(&before), &c).unwrap().host,
        "pi2"
    );
}

#[test]
fn bad_map_names_file_commit_and_line() {
    let w = World::new();
    w.machine
        .write("cpuinfo", &format!("Serial\t\t: {SERIAL}\n"));
    let c = w.commit(&[(
        "machines.toml",
        b"serial-00000000deadbeef = \"pi1\"\nuuid-1234 = \"pi2\"\n",
    )]);
    let f = err(resolve(&w.map_mode(), None, &c));
    assert!(
        f.message.starts_with(&format!(
            "reading machines.toml at {}: line 2: unknown identity kind \"uuid\"",
            &c[..8]
        )),
        "{}",
        f.message
    );
    assert!(
        f.hint
            .as_deref()
            .is_some_and(|h| h.starts_with("fix that line")),
        "{f:?}"
    );

    let big = vec![b'#'; map::MAX_BYTES + 1];
    let c = w.commit(&[("machines.toml", &big)]);
    let f = err(resolve(&w.map_mode(), None, &c));
    assert!(
        f.message.contains("at most 65536 are read"),
        "{}",
        f.message
    );

    let c = w.commit(&[("machines.toml", b"\xff\xfe")]);
    let f = err(resolve(&w.map_mode(), None, &c));
    assert!(f.message.contains("is not UTF-8 text"), "{}", f.message);
}

#[test]
fn a_machine_with_no_identity_is_told_to_write_the_host_file() {
    let w = World::new();
    let c = w.commit(&[("machines.toml", b"")]);
    let f = err(resolve(&w.map_mode(), None, &c));
    assert!(
        f.message.starts_with("cannot identify this machine"),
        "{}",
        f.message
    );
    assert!(
        f.hint
            .as_deref()
            .is_some_and(|h| h.contains("homelab-host on the boot partition")),
        "{f:?}"
    );
}

#[test]
fn a_bad_host_file_is_a_configuration_error() {
    let w = World::new();
    w.machine.write("homelab-host", "../etc\n");
    let c = w.commit(&[("machines.toml", b"")]);
    let f = err(resolve(&w.map_mode(), None, &c));
    assert!(
        f.message.contains("homelab-host: invalid host name"),
        "{}",
        f.message
    );
}

#[test]
fn a_missing_cache_is_this_machines_problem() {
    let w = World::new();
    w.machine
        .write("cpuinfo", &format!("Serial\t\t: {SERIAL}\n"));
    std::fs::remove_dir_all(w.state_dir.path().join("cache.git")).unwrap();
    let f = resolve(
        &w.map_mode(),
        None,
        "0123456789012345678901234567890123456789",
    )
    .unwrap_err();
    assert_eq!(f.kind, Kind::Environment, "{}", f.message);
}

/// Status, metrics and notifications call the machine by the host the map resolved; a
/// configured host outside map mode is never replaced by a stale resolution.
#[test]
fn the_host_is_the_resolved_one_in_map_mode_only() {
    let w = World::new();
    let mut state = crate::state::State::default();
    let map = w.map_mode();
    assert_eq!(host(&map, &state), map.host);
    state.pivot = Some(Resolved {
        host: "pi2".into(),
        by: "serial".into(),
        commit: "c".into(),
        at: "2026-11-25T00:00:00Z".into(),
    });
    assert_eq!(host(&map, &state), "pi2");
    let named = w.settings("name = \"pi7\"");
    assert_eq!(host(&named, &state), "pi7");
}

/// An error that quotes input is a line, not the input (issue 23, item 18): a 60 KB map
/// line, a 1 MB host file, a huge key or host name.
#[test]
fn errors_quote_at_most_a_line_of_the_input() {
    let cap = crate::text::QUOTE_MAX + 200;
    let long = "x".repeat(60_000);
    for text in [
        long.clone(),
        format!("serial-{long} = \"pi1\""),
        format!("mac-{long} = \"pi1\""),
        format!("\"{long}\" = \"pi1\""),
        format!("serial-00000001 = \"{long}\""),
        format!("serial-00000001 = {long}"),
        format!("{long} = \"pi1\""),
    ] {
        let e = map::parse(&text).unwrap_err();
        assert!(
            e.message.len() < cap,
            "{} bytes: {}",
            e.message.len(),
            &e.message[..300]
        );
        assert!(e.message.contains("bytes in all)"), "{}", e.message);
    }
    // A host file within the identity reader's cap (64 KiB): its name quoted, capped.
    let m = FakeMachine::new();
    m.write("homelab-host", &"y".repeat(60_000));
    let e = identity::read(&m.paths()).unwrap_err().message;
    assert!(e.len() < cap + 300, "{} bytes", e.len());
    assert!(e.contains("invalid host name \"yyyy"), "{e}");
    // Over it: refused by its size, never read whole.
    m.write("homelab-host", &"y".repeat(1 << 20));
    let e = identity::read(&m.paths()).unwrap_err().message;
    assert!(e.len() < cap + 300, "{} bytes", e.len());
    assert!(e.contains("1048576 bytes, more than the 65536 read"), "{e}");
}
