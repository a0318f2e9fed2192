//! One integration-test binary: the real `homelab-agent` against real git and real nix.
//! See support/mod.rs for the harness.

mod cli;
mod config_bounds;
mod deploy;
mod http_checks;
mod killpoints;
mod orphans;
mod reboots;
mod safety;
mod state_damage;
mod status;
mod support;
mod transports;
