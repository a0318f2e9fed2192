//! The doors: every side effect the deploy cycle and the reboot path have goes through
//! one of these traits, so the cycles run against fakes (unit tests) and against the
//! real git, nix, profile, `switch-to-configuration`, FleetLock, `systemctl reboot` and
//! the bootloader (the real implementations, here too).
//!
//! | file             | door                                                           |
//! |------------------|----------------------------------------------------------------|
//! | `source.rs`      | [`Source`]: the user's repository                              |
//! | `git.rs`         | the real [`Source`]s: git in this process, or in a child       |
//! | `builder.rs`     | [`Builder`]: `nix build` of a host's toplevel                  |
//! | `machine.rs`     | [`Machine`]: the live system, the profile, the switch          |
//! | `health.rs`      | [`Health`]: the health checks                                  |
//! | `real.rs`        | [`Real`]: builder, machine, health; [`Doors`]: the bundle       |
//! | `reboot.rs`      | [`reboot::Effects`]: the reboot side's bundle                  |
//! | `slot.rs`        | [`slot::Slot`]: a FleetLock reboot slot                        |
//! | `fleetlock.rs`   | the FleetLock client (the real [`slot::Slot`])                 |
//! | `rebooter.rs`    | [`rebooter::Rebooter`]: `systemctl reboot`                     |
//! | `links.rs`       | [`links::Links`]: booted and running system, profile           |
//! | `trial.rs`       | [`trial::TrialBoot`]: the bootloader's one-shot trial          |
//! | `uboot.rs`       | U-Boot's trial (the real [`trial::TrialBoot`]) and its CLI     |
//! | `trial_model.rs` | a *test model* of the trial door (flag + trial file)           |
//!
//! Every door answers with a classified [`Failure`](crate::failure::Failure): the cycle
//! decides what to do from its kind, never from its words.

use std::future::Future;
use std::pin::Pin;

mod builder;
pub mod fleetlock;
pub mod git;
mod health;
pub mod links;
mod machine;
mod real;
pub mod reboot;
pub mod rebooter;
pub mod slot;
mod source;
pub mod trial;
pub mod trial_model;
pub mod uboot;

pub use builder::Builder;
pub use health::Health;
pub use machine::Machine;
pub use real::{Doors, Real};
pub use source::Source;

/// A future borrowed from its door (the agent runs on one thread: no `Send` needed).
pub type Fut<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;
