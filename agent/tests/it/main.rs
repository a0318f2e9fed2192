//! One integration-test binary: the real `homelab-agent` against real git and real nix.
//! See support/mod.rs for the harness.

// The harness writes the fake system (homelab_agent::fake_system), which only a build with
// the `demo` feature has: say so rather than fail on a missing module.
#[cfg(not(feature = "demo"))]
compile_error!(
    "the integration tests run on the fake system of the `demo` feature: cargo test --all-features (or --features demo)"
);

mod bootloader;
mod cache_trust;
mod cli;
mod config_bounds;
mod daemon_git;
mod deploy;
mod http_checks;
mod killpoints;
mod layers;
mod locked_inputs;
mod memory;
mod metrics;
mod notifications;
mod orphans;
mod pause;
mod pivot;
mod plan;
mod prebuilt;
mod progress;
mod publish;
mod push_trigger;
mod reboots;
mod redirects;
mod safety;
mod shown_text;
mod state_damage;
mod status;
mod substitute;
mod support;
mod tag_heads;
mod testing_branch;
mod tls;
mod token_users;
mod transports;
mod trust;
