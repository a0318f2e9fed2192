//! homelab-agent: a pull-based upgrade agent for NixOS machines.
//!
//! Where things live:
//!
//! | module          | owns                                                              |
//! |-----------------|-------------------------------------------------------------------|
//! | [`model`]       | the shared vocabulary at the bottom (checks, pause, pivot, trust, URL) |
//! | [`config`]      | the TOML file → validated [`config::Settings`]                    |
//! | [`source`]      | the git remote: cheap poll, fetch into a bare cache, ssh and TLS trust |
//! | [`nix`]         | `nix build` of this host's toplevel, and its plan (built vs fetched) |
//! | [`pivot`]       | map mode: which host a generic-image machine is (serial, MAC, file) |
//! | [`system`]      | the system profile, `switch-to-configuration`, reboot-required    |
//! | [`trust`]       | signed heads and no silent downgrade, before anything is built    |
//! | [`prebuilt`]    | signed manifests of systems built elsewhere, fetched not evaluated |
//! | [`health`]      | health checks and the wait-until-healthy policy                   |
//! | [`doors`]       | every side effect behind a trait, and the real implementations    |
//! | [`deploy`]      | **the deploy cycle**, rollback, crash recovery, the testing branch |
//! | [`reboot`]      | reboot policy, FleetLock, boot verification and fallback          |
//! | [`failure`]     | the failure taxonomy: transient, environment, configuration, commit |
//! | [`ledger`]      | the one writer of runs, deployments, pending rollbacks, bad commits |
//! | [`state`]       | the durable state file: intent, history, bad commits              |
//! | [`runtime`]     | volatile facts (last poll) kept off the SD card                   |
//! | [`metrics`]     | Prometheus textfile metrics, written only when a value changed    |
//! | [`pause`]       | the operator's maintenance pause (`pause`, `resume`)              |
//! | [`plan`]        | `plan [COMMIT]`: what a commit would do here, without touching it |
//! | [`publish`]     | `publish`: a workstation's prebuilt systems and their signed manifest |
//! | [`status`]      | `status` / `history` view model and rendering                     |
//! | [`commands`]    | one function per CLI command, returning an exit code              |
//! | [`lock`], [`process`], [`logging`], [`notify`] | plumbing                              |
//! | [`duration`]    | durations as people write and read them (`5m`, `1h 30m`)         |
//! | [`text`]        | outside text as shown: control characters escaped, quotes capped  |
//! | [`http_body`]   | every HTTP body read from the network, with a size cap            |
//! | [`free_space`]  | read-only or full filesystem, by `statvfs` (cache and build)      |
//! | [`oom_kills`]   | the kernel's OOM kills in the agent's memory cgroup (build)       |
//! | `demo`, `fake_system` | the sandboxed walkthrough and the fake NixOS it uses (the `demo` feature) |

pub mod announce;
pub mod commands;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod deploy;
pub mod doors;
pub mod duration;
pub mod failure;
#[cfg(feature = "demo")]
pub mod fake_system;
pub mod free_space;
pub mod health;
pub mod http_body;
pub mod ledger;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod nix;
pub mod notify;
pub mod oom_kills;
pub mod pause;
pub mod pivot;
pub mod plan;
pub mod prebuilt;
pub mod process;
pub mod publish;
pub mod reboot;
pub mod runtime;
pub mod source;
pub mod state;
pub mod status;
pub mod system;
pub mod text;
pub mod trigger;
pub mod trust;

/// Exit codes (README "Exit codes").
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    /// A bad command line (as clap exits).
    pub const USAGE: u8 = 2;
    pub const ROLLBACK_FAILED: u8 = 3;
    pub const LOCKED: u8 = 4;
    /// This machine is the problem (nix missing, disk full, permissions): not the commit.
    pub const ENVIRONMENT: u8 = 71;
    pub const TRANSIENT: u8 = 75;
    pub const CONFIG: u8 = 78;
}

/// Test-only kill points. Built with the `failpoints` feature, the agent SIGKILLs itself
/// at a point named in `HOMELAB_AGENT_FAILPOINTS` (comma-separated), so the tests can
/// check recovery from a kill at exactly that step. Without the feature: nothing.
pub fn failpoint(name: &str) {
    #[cfg(feature = "failpoints")]
    if let Ok(list) = std::env::var("HOMELAB_AGENT_FAILPOINTS") {
        if list.split(',').any(|n| n.trim() == name) {
            eprintln!("failpoint {name}: killing myself");
            let _ = ::nix::sys::signal::kill(
                ::nix::unistd::getpid(),
                ::nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
