//! One integration-test binary: the real `homelab-agent` against real git and real nix.
//! See support/mod.rs for the harness.

mod cache_trust;
mod cli;
mod config_bounds;
mod daemon_git;
mod deploy;
mod http_checks;
mod killpoints;
mod memory;
mod metrics;
mod notifications;
mod orphans;
mod pause;
mod pivot;
mod plan;
mod progress;
mod push_trigger;
mod reboots;
mod safety;
mod state_damage;
mod status;
mod substitute;
mod support;
mod testing_branch;
mod tls;
mod transports;
mod trust;
