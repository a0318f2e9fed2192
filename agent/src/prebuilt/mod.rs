//! Prebuilt systems (issue 24): a workstation or CI evaluates and builds a commit's
//! systems, pushes them to a binary cache and publishes a signed manifest; the agent
//! fetches its host's system from the cache instead of evaluating on the device, and
//! builds natively when the manifest is missing, late, untrusted or not fetchable.
//!
//! | file          | owns                                                          |
//! |---------------|---------------------------------------------------------------|
//! | `manifest.rs` | the manifest format: parse with caps, canonical form, signature |

pub mod manifest;
