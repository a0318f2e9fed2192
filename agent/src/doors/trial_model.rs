//! A **test model** of the one-shot trial door, for the project's own harnesses only
//! (`[reboot] bootloader = "test-model"`): no bootloader reads these files. The real door
//! is U-Boot's (`uboot.rs`); the QEMU tier proves it against real U-Boot and a real kernel
//! (trial_panics, power_cut_during_trial, trial_verifies, trial_hangs_watchdog).
//!
//! In `[reboot.uboot] boot_dir`: `trial-model.system` names the trial's system, and
//! `trial-model.flag` is the one-shot flag. The model bootloader of a harness (the
//! integration tests' `model_boot`, tests/systemd's reboot harness) boots the trial system
//! once when the flag is set, clearing the flag first, and the default otherwise. A file
//! `model-broken` in the directory makes [`TrialBoot::ready`] fail, as a damaged
//! `uboot.env` makes the real one fail.

use std::path::{Path, PathBuf};

use crate::doors::Fut;
use crate::failure::{Failure, Kind};

use super::trial::TrialBoot;

pub const FLAG: &str = "trial-model.flag";
pub const SYSTEM: &str = "trial-model.system";
pub const BROKEN: &str = "model-broken";

pub struct TestModelDoor {
    dir: PathBuf,
}

impl TestModelDoor {
    pub fn new(dir: &Path) -> TestModelDoor {
        TestModelDoor {
            dir: dir.to_path_buf(),
        }
    }

    fn failure(&self, what: &str, e: std::io::Error) -> Failure {
        Failure::new(
            Kind::Environment,
            format!(
                "{what} in the test model bootloader's {}: {e}",
                self.dir.display()
            ),
        )
    }
}

impl TrialBoot for TestModelDoor {
    fn describe(&self) -> String {
        format!("the test model bootloader in {}", self.dir.display())
    }

    fn ready(&self) -> Fut<'_, Result<(), Failure>> {
        let r = if !self.dir.is_dir() {
            Err(Failure::new(
                Kind::Environment,
                format!("{} is not a directory", self.dir.display()),
            ))
        } else if self.dir.join(BROKEN).exists() {
            Err(Failure::new(
                Kind::Environment,
                format!(
                    "{} is damaged (the model's damaged environment)",
                    self.dir.display()
                ),
            ))
        } else {
            Ok(())
        };
        Box::pin(async move { r })
    }

    fn arm<'a>(&'a self, system: &'a Path) -> Fut<'a, Result<(), Failure>> {
        let r = crate::state::write_atomic(
            &self.dir.join(SYSTEM),
            system.display().to_string().as_bytes(),
        )
        .and_then(|()| crate::state::write_atomic(&self.dir.join(FLAG), b"1\n"))
        .map_err(|e| self.failure("arming the trial", e));
        Box::pin(async move { r })
    }

    fn armed(&self) -> Fut<'_, Result<bool, Failure>> {
        let r = Ok(self.dir.join(FLAG).exists());
        Box::pin(async move { r })
    }

    fn disarm(&self) -> Fut<'_, Result<(), Failure>> {
        let remove = |name: &str| match std::fs::remove_file(self.dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
        let r = remove(FLAG)
            .and_then(|()| remove(SYSTEM))
            .map_err(|e| self.failure("disarming the trial", e));
        Box::pin(async move { r })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn arms_once_disarms_idempotently_and_a_damaged_model_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let door = TestModelDoor::new(dir.path());
        door.ready().await.unwrap();
        assert!(!door.armed().await.unwrap());
        door.arm(Path::new("/nix/store/x-system")).await.unwrap();
        assert!(door.armed().await.unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.path().join(SYSTEM)).unwrap(),
            "/nix/store/x-system"
        );
        door.disarm().await.unwrap();
        door.disarm().await.unwrap();
        assert!(!door.armed().await.unwrap() && !dir.path().join(SYSTEM).exists());
        std::fs::write(dir.path().join(BROKEN), "").unwrap();
        let e = door.ready().await.unwrap_err();
        assert!(e.message.contains("damaged"), "{e}");
        let gone = TestModelDoor::new(&dir.path().join("absent"));
        assert!(gone
            .ready()
            .await
            .unwrap_err()
            .message
            .contains("not a directory"));
    }
}
