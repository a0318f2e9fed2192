//! Map mode in the cycle, with the fake doors: the mapped host's attribute is built, an
//! unknown machine builds nothing and blames nothing, and the resolved host is kept.

use super::*;
use crate::pivot::identity::tests::FakeMachine;

const MAP: &str = "serial-00000000deadbeef = \"pi1\"\nserial-10000000abcdef01 = \"pi2\"\n";

/// A commit holding `machines.toml` in the agent's cache (what a fetch leaves there).
fn cached_commit(b: &Bench, map: &str) -> String {
    let cache = b.dir.path().join("state/cache.git");
    let repo = git2::Repository::open_bare(&cache)
        .or_else(|_| git2::Repository::init_bare(&cache))
        .unwrap();
    let mut tree = repo.treebuilder(None).unwrap();
    tree.insert(
        "machines.toml",
        repo.blob(map.as_bytes()).unwrap(),
        0o100644,
    )
    .unwrap();
    let tree = repo.find_tree(tree.write().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.org").unwrap();
    repo.commit(None, &sig, &sig, "map", &tree, &[])
        .unwrap()
        .to_string()
}

async fn run_map_mode(b: &Bench, machine: &FakeMachine) -> Option<Exit> {
    let p = machine.paths();
    let paths = format!(
        "serial_number = {:?}\ncpuinfo = {:?}\nnet_class = {:?}\nhost_file = {:?}",
        p.serial_number, p.cpuinfo, p.net_class, p.host_file
    );
    let agent = b.agent_with("map = \"machines.toml\"", &paths);
    tokio::select! {
        exit = agent.run_once() => Some(exit.unwrap()),
        _ = b.fake.died.notified() => None,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_mapped_host_is_built_and_remembered() {
    let b = Bench::new();
    let machine = FakeMachine::new();
    machine.write("serial-number", "10000000abcdef01\0");
    let c1 = cached_commit(&b, MAP);
    b.push(&c1, Ok(sys("pi2-a")));
    assert_eq!(run_map_mode(&b, &machine).await, Some(Exit::Ok));
    assert_eq!(
        b.w().attributes,
        ["nixosConfigurations.\"pi2\".config.system.build.toplevel"]
    );
    assert_eq!(b.switches(), ["test /sys/pi2-a", "boot /sys/pi2-a"]);
    b.assert_consistent();
    let pivot = b.state().pivot.expect("the resolved host is kept");
    assert_eq!(
        (pivot.host.as_str(), pivot.by.as_str()),
        ("pi2", "serial-10000000abcdef01")
    );
    assert_eq!(pivot.commit, c1);

    // The map loses the line: the machine keeps following pi2.
    let c2 = cached_commit(&b, "serial-00000000deadbeef = \"pi1\"\n");
    b.push(&c2, Ok(sys("pi2-b")));
    assert_eq!(run_map_mode(&b, &machine).await, Some(Exit::Ok));
    let pi2 = "nixosConfigurations.\"pi2\".config.system.build.toplevel";
    assert_eq!(b.w().attributes, [pi2, pi2]);
    assert_eq!(b.w().current, Some(sys("pi2-b")));
}

#[tokio::test(flavor = "current_thread")]
async fn an_unknown_machine_builds_nothing_and_blames_nothing() {
    let b = Bench::new();
    let machine = FakeMachine::new();
    machine.write("serial-number", "10000000cafe0001\0");
    let c1 = cached_commit(&b, MAP);
    b.push(&c1, Ok(sys("never")));
    for _ in 0..2 {
        assert_eq!(
            run_map_mode(&b, &machine).await,
            Some(Exit::Failed(Kind::Configuration))
        );
    }
    // Polled and fetched each time (the head is looked at again), the map read through
    // the Source door, never built.
    let read = "read machines.toml";
    assert_eq!(b.w().calls, ["head", "fetch", read, "head", "fetch", read]);
    assert!(b.w().attributes.is_empty());
    let state = b.state();
    assert!(
        state.bad(&c1).is_none(),
        "an unmapped machine blamed the commit"
    );
    assert!(state.last_handled.is_none());
    assert!(state.pivot.is_none());
    b.assert_consistent();
}

/// Issue 23 item 17: a build error in map mode names the mapped host (pi2), never the
/// machine's hostname (what `[host] name` defaults to), both when it blames the commit
/// and when it does not.
#[tokio::test(flavor = "current_thread")]
async fn a_build_error_names_the_mapped_host() {
    for kind in [Kind::Commit, Kind::Environment] {
        let b = Bench::new();
        let machine = FakeMachine::new();
        machine.write("serial-number", "10000000abcdef01\0");
        let c1 = cached_commit(&b, MAP);
        b.push(&c1, Err(Failure::new(kind, "builder exploded")));
        assert_eq!(run_map_mode(&b, &machine).await, Some(Exit::Failed(kind)));
        let poll = crate::runtime::read(&b.dir.path().join("run")).unwrap();
        let error = poll.error.unwrap_or_default();
        assert!(
            error.starts_with(&format!("building {} for pi2: ", crate::deploy::short(&c1))),
            "{kind:?}: {error}"
        );
        let settings = b
            .agent_with("map = \"machines.toml\"", "")
            .settings
            .host
            .clone();
        assert!(
            !error.contains(&format!(" for {settings}:")),
            "{kind:?}: names the hostname {settings}: {error}"
        );
    }
}
