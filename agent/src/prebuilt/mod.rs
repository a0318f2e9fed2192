//! Prebuilt systems (issue 24): a workstation or CI evaluates and builds a commit's
//! systems, pushes them to a binary cache and publishes a signed manifest on a branch of
//! the repository; the agent fetches its host's system from the cache instead of
//! evaluating on the device, and builds natively when the manifest is missing, late,
//! untrusted, not for this deployment, or its system cannot be fetched.
//!
//! The trust checks of the head (downgrade floor, commit signature, bad-commit memory)
//! run before any of this, exactly as for a native build: a manifest can only change
//! *how* a commit the agent would deploy is obtained, never *which*.
//!
//! | file          | owns                                                              |
//! |---------------|-------------------------------------------------------------------|
//! | `manifest.rs` | the manifest format: parse with caps, canonical form, signature   |
//! | `check.rs`    | the decision for one deployment: use the system, or why not       |
//! | `realise.rs`  | `nix-store --realise` of the system from the substituters          |
//! | `wait.rs`     | `[prebuilt] wait`: since when a head waits for its manifest       |
//!
//! The door that puts this in front of the native build is doors/prebuilt.rs.

pub mod check;
pub mod manifest;
pub mod realise;
#[cfg(test)]
pub mod testing;
pub mod wait;
