//! The door against libubootenv's real tools on a real environment file (fw_env.config
//! naming a plain file), and fake tools for what the real ones cannot be made to do.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::layout::{Sysboot, TRIAL_CONF, TRIAL_DIR};
use super::*;

const SIZE: usize = 0x4000;
const INITIAL: &str = "bootcmd=run distro_bootcmd\ndistro_bootcmd=echo scanning\nbootdelay=2\n";

/// libubootenv's tools, or None (a failure under HOMELAB_TEST_REQUIRE_ALL).
fn real_tools() -> Option<(PathBuf, PathBuf)> {
    let p = find_program(Path::new("fw_printenv"));
    let s = find_program(Path::new("fw_setenv"));
    match (p, s) {
        (Some(p), Some(s)) => Some((p, s)),
        _ => {
            assert!(
                std::env::var_os("HOMELAB_TEST_REQUIRE_ALL").is_none(),
                "fw_printenv and fw_setenv are required (HOMELAB_TEST_REQUIRE_ALL; tests/setup installs libubootenv-tool)"
            );
            eprintln!("skip: no fw_printenv/fw_setenv (libubootenv-tool)");
            None
        }
    }
}

struct Machine {
    dir: tempfile::TempDir,
    door: UBoot,
}

impl Machine {
    fn new(printenv: &Path, setenv: &Path) -> Machine {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("boot/extlinux")).unwrap();
        std::fs::write(
            d.join("boot/extlinux/extlinux.conf"),
            "DEFAULT nixos-default\n",
        )
        .unwrap();
        std::fs::write(
            d.join("fw_env.config"),
            format!("# test\n{} 0x0 0x4000\n", d.join("uboot.env").display()),
        )
        .unwrap();
        std::fs::write(d.join("initial-env"), INITIAL).unwrap();
        let door = UBoot::new(UBootSettings {
            fw_env_config: d.join("fw_env.config"),
            fw_printenv: printenv.to_path_buf(),
            fw_setenv: setenv.to_path_buf(),
            boot_dir: d.join("boot"),
            panic_seconds: 7,
        });
        Machine { dir, door }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn env_bytes(&self) -> Vec<u8> {
        std::fs::read(self.path("uboot.env")).unwrap()
    }
    /// A NixOS-shaped toplevel: kernel and initrd links into a "store", dtbs, params.
    fn system(&self) -> PathBuf {
        let store = self.path("store");
        std::fs::create_dir_all(store.join("k-linux/dtbs/broadcom")).unwrap();
        std::fs::write(store.join("k-linux/Image"), b"kernel bytes").unwrap();
        std::fs::write(
            store.join("k-linux/dtbs/broadcom/bcm2711-rpi-4-b.dtb"),
            b"dtb",
        )
        .unwrap();
        std::fs::create_dir_all(store.join("i-initrd")).unwrap();
        std::fs::write(store.join("i-initrd/initrd"), b"initrd bytes").unwrap();
        let sys = store.join("s-nixos-system");
        std::fs::create_dir_all(&sys).unwrap();
        std::os::unix::fs::symlink(store.join("k-linux/Image"), sys.join("kernel")).unwrap();
        std::os::unix::fs::symlink(store.join("i-initrd/initrd"), sys.join("initrd")).unwrap();
        std::os::unix::fs::symlink(store.join("k-linux/dtbs"), sys.join("dtbs")).unwrap();
        std::fs::write(sys.join("kernel-params"), "console=ttyS0\n  quiet\n").unwrap();
        std::fs::write(sys.join("init"), "#!/bin/sh\n").unwrap();
        sys
    }
    async fn setup(&self) -> Result<String, Failure> {
        let sysboot = Sysboot {
            device: "mmc".into(),
            partition: "0:2".into(),
            prefix: "/boot/".into(),
        };
        self.door
            .setup(&sysboot, "saveenv", Some(&self.path("initial-env")))
            .await
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn real_tools_provision_arm_and_disarm_a_trial() {
    let Some((p, s)) = real_tools() else { return };
    rt().block_on(async {
        let m = Machine::new(&p, &s);
        // No uboot.env yet (a Pi that never ran saveenv): not ready, arm refused.
        let e = m.door.ready().await.unwrap_err();
        assert_eq!(e.kind, Kind::Environment);
        assert!(
            e.message.contains("uboot.env (named by") && e.message.contains("does not exist"),
            "{e}"
        );
        assert!(
            e.message
                .contains("hint: run `homelab-agent bootloader setup --initial-env"),
            "{e}"
        );
        let sys = m.system();
        assert!(m.door.arm(&sys).await.is_err());
        assert!(!m.path("boot").join(TRIAL_DIR).exists());

        let done = m.setup().await.unwrap();
        assert!(done.contains("replaced from --initial-env"), "{done}");
        assert_eq!(
            m.env_bytes().len(),
            SIZE,
            "created as fw_env.config sizes it"
        );
        m.door.ready().await.unwrap();
        let Env::Valid(vars) = m.door.tools.read().await.unwrap() else {
            panic!("invalid after setup")
        };
        assert_eq!(vars["bootcmd"], "run homelab_boot");
        assert_eq!(vars["homelab_default_bootcmd"], "run distro_bootcmd");
        assert_eq!(
            vars["distro_bootcmd"], "echo scanning",
            "U-Boot's defaults kept"
        );
        assert_eq!(vars["homelab_save"], "saveenv");
        // Setup again: harmless, U-Boot's own boot command still known.
        m.setup().await.unwrap();
        let Env::Valid(again) = m.door.tools.read().await.unwrap() else {
            panic!()
        };
        assert_eq!(again, vars);

        assert!(!m.door.armed().await.unwrap());
        m.door.arm(&sys).await.unwrap();
        assert!(m.door.armed().await.unwrap());
        let conf = std::fs::read_to_string(m.path("boot").join(TRIAL_CONF)).unwrap();
        let sys_real = std::fs::canonicalize(&sys).unwrap();
        assert!(
            conf.contains(&format!(
                "  APPEND init={}/init console=ttyS0 quiet panic=7 oops=panic softlockup_panic=1\n",
                sys_real.display()
            )),
            "{conf}"
        );
        let kernel = clean_name_of(&m.path("store/k-linux/Image"));
        assert!(
            conf.contains(&format!("  LINUX ../homelab-trial/{kernel}\n")),
            "{conf}"
        );
        let trial = m.path("boot").join(TRIAL_DIR);
        assert_eq!(std::fs::read(trial.join(&kernel)).unwrap(), b"kernel bytes");
        let dtbs = clean_name_of(&m.path("store/k-linux/dtbs"));
        assert!(
            conf.contains(&format!("  FDTDIR ../homelab-trial/{dtbs}\n")),
            "{conf}"
        );
        assert_eq!(
            std::fs::read(trial.join(&dtbs).join("broadcom/bcm2711-rpi-4-b.dtb")).unwrap(),
            b"dtb"
        );
        // Armed again (another trial): the old one replaced, still armed once.
        m.door.arm(&sys).await.unwrap();
        assert!(m.door.armed().await.unwrap());

        m.door.disarm().await.unwrap();
        assert!(!m.door.armed().await.unwrap());
        assert!(!trial.exists() && !m.path("boot").join(TRIAL_CONF).exists());
        m.door.disarm().await.unwrap();
        let show = m.door.show().await.unwrap();
        assert!(
            show.contains("provisioned: yes") && show.contains("trial entry: none"),
            "{show}"
        );
    });
}

fn clean_name_of(p: &Path) -> String {
    super::layout::clean_name(&std::fs::canonicalize(p).unwrap())
}

#[test]
fn real_tools_never_replace_a_damaged_environment() {
    let Some((p, s)) = real_tools() else { return };
    rt().block_on(async {
        let m = Machine::new(&p, &s);
        m.setup().await.unwrap();
        // A torn write: the CRC no longer matches.
        let mut bytes = m.env_bytes();
        bytes[100] ^= 0xff;
        std::fs::write(m.path("uboot.env"), &bytes).unwrap();
        // Even with a default-environment file where libubootenv looks for one.
        let e = m.door.arm(&m.system()).await.unwrap_err();
        assert_eq!(e.kind, Kind::Environment);
        assert!(e.message.contains("missing or damaged (bad CRC)"), "{e}");
        assert!(
            e.message
                .contains("hint: run `homelab-agent bootloader setup`"),
            "{e}"
        );
        assert_eq!(m.env_bytes(), bytes, "not written");
        assert!(!m.path("boot").join(TRIAL_DIR).exists());
        // setup without --initial-env refuses too; disarm has nothing to clear.
        let sysboot = Sysboot {
            device: "mmc".into(),
            partition: "0:2".into(),
            prefix: "/boot/".into(),
        };
        let e = m.door.setup(&sysboot, "saveenv", None).await.unwrap_err();
        assert!(e.message.contains("missing or damaged"), "{e}");
        assert_eq!(m.env_bytes(), bytes);
        assert!(!m.door.armed().await.unwrap());
        m.door.disarm().await.unwrap();
        assert_eq!(m.env_bytes(), bytes);
    });
}

#[test]
fn real_tools_an_environment_without_our_boot_command_is_not_ready() {
    let Some((p, s)) = real_tools() else { return };
    rt().block_on(async {
        let m = Machine::new(&p, &s);
        std::fs::write(m.path("uboot.env"), vec![0u8; SIZE]).unwrap();
        // U-Boot's own saveenv, as it were: a valid environment, not provisioned.
        let cmd = m
            .door
            .tools
            .setenv_script_cmd(Path::new("/dev/null"), Some(&m.path("initial-env")));
        m.door.tools.write(&cmd).await.unwrap();
        let e = m.door.ready().await.unwrap_err();
        assert_eq!(e.kind, Kind::Environment);
        assert!(
            e.message.contains("is not provisioned for one-shot trials"),
            "{e}"
        );
        assert!(e.message.contains("bootcmd=\"run distro_bootcmd\""), "{e}");
        assert!(m.door.arm(&m.system()).await.is_err());
        assert!(!m.door.armed().await.unwrap());
    });
}

#[test]
fn setup_refuses_an_initial_environment_that_boots_nothing() {
    let Some((p, s)) = real_tools() else { return };
    rt().block_on(async {
        let m = Machine::new(&p, &s);
        std::fs::write(m.path("initial-env"), "bootdelay=2\n").unwrap();
        let e = m.setup().await.unwrap_err();
        assert_eq!(e.kind, Kind::Configuration);
        assert!(e.message.contains("has no bootcmd"), "{e}");
        let bad = Sysboot {
            device: "mmc;reset".into(),
            partition: "0:2".into(),
            prefix: "/boot/".into(),
        };
        let e = m.door.setup(&bad, "saveenv", None).await.unwrap_err();
        assert_eq!(e.kind, Kind::Configuration);
    });
}

/// A fake tool: a shell script.
fn fake(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn missing_tools_and_config_are_refused_with_what_to_do() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let m = Machine::new(
            &dir.path().join("no-fw_printenv"),
            &dir.path().join("no-fw_setenv"),
        );
        std::fs::write(m.path("uboot.env"), vec![0u8; SIZE]).unwrap();
        let e = m.door.ready().await.unwrap_err();
        assert_eq!(e.kind, Kind::Environment);
        assert!(
            e.message.contains("no-fw_printenv not found")
                && e.message.contains("libubootenv-tool"),
            "{e}"
        );

        std::fs::remove_file(m.path("fw_env.config")).unwrap();
        let e = m.door.arm(Path::new("/nonexistent")).await.unwrap_err();
        assert!(
            e.message.starts_with("reading libubootenv's configuration"),
            "{e}"
        );
        assert!(
            e.message
                .contains("hint: enable services.homelab-agent.reboot.uboot"),
            "{e}"
        );
        std::fs::write(m.path("fw_env.config"), "# nothing\n").unwrap();
        let e = m.door.ready().await.unwrap_err();
        assert!(e.message.contains("names no environment"), "{e}");
    });
}

#[test]
fn a_config_the_tools_reject_and_a_flag_that_does_not_stick_are_errors() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        // fw_printenv as libubootenv exits on a wrong fw_env.config: -EINVAL.
        let p = fake(dir.path(), "fw_printenv", "echo 'Configuration file wrong or corrupted' >&2; exit 234");
        let s = fake(dir.path(), "fw_setenv", "exit 0");
        let m = Machine::new(&p, &s);
        std::fs::write(m.path("uboot.env"), vec![0u8; SIZE]).unwrap();
        let e = m.door.ready().await.unwrap_err();
        assert!(e.message.contains("could not use") && e.message.contains("exit status: 234"), "{e}");

        // A provisioned environment, and a fw_setenv that says yes and writes nothing.
        let p = fake(
            dir.path(),
            "fw_printenv2",
            "printf 'bootcmd=run homelab_boot\\nhomelab_boot=if test -n \"${homelab_trial}\"; then x; fi\\nhomelab_save=saveenv\\nhomelab_default_bootcmd=run distro_bootcmd\\n'",
        );
        let m = Machine::new(&p, &s);
        std::fs::write(m.path("uboot.env"), vec![0u8; SIZE]).unwrap();
        m.door.ready().await.unwrap();
        let e = m.door.arm(&m.system()).await.unwrap_err();
        assert!(e.message.contains("does not show it"), "{e}");
    });
}

#[test]
fn a_system_without_a_kernel_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("boot");
    std::fs::create_dir_all(&boot).unwrap();
    let e = files::lay_out(&boot, dir.path()).unwrap_err();
    assert!(
        e.message.contains("has no kernel") && e.message.contains("hint: give a NixOS toplevel"),
        "{e}"
    );
    assert!(!boot.join(TRIAL_DIR).exists());
}

#[test]
fn reads_the_environment_device_from_fw_env_config() {
    assert_eq!(
        first_device("# c\n\n/boot/firmware/uboot.env 0x0 0x4000\n"),
        Some((PathBuf::from("/boot/firmware/uboot.env"), 0x4000))
    );
    assert_eq!(
        first_device("/dev/mtd1 4096 16384"),
        Some((PathBuf::from("/dev/mtd1"), 20480))
    );
    assert_eq!(first_device("/dev/mtd1 zero"), None);
    assert_eq!(first_device("# only\n"), None);
}

#[test]
fn disarm_without_an_environment_file_removes_the_trial() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let m = Machine::new(
            &dir.path().join("no-fw_printenv"),
            &dir.path().join("no-fw_setenv"),
        );
        std::fs::create_dir_all(m.path("boot").join(TRIAL_DIR)).unwrap();
        std::fs::write(m.path("boot").join(TRIAL_CONF), "LABEL homelab-trial\n").unwrap();
        // No uboot.env (and no tools): nothing can hold a flag; the files go.
        m.door.disarm().await.unwrap();
        assert!(!m.path("boot").join(TRIAL_DIR).exists());
        assert!(!m.path("boot").join(TRIAL_CONF).exists());
        // With an environment file but no tools, the flag cannot be checked: an error.
        std::fs::write(m.path("uboot.env"), vec![0u8; SIZE]).unwrap();
        let e = m.door.disarm().await.unwrap_err();
        assert!(e.message.contains("not found"), "{e}");
    });
}

/// A boot partition mounted for the test (a small tmpfs), unmounted on drop.
struct SmallBoot(PathBuf);
impl Drop for SmallBoot {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// /boot never fills (issue 20): a trial whose kernel, initrd and device trees would not
/// fit twice (the trial's copy, then its boot entry's) on a small real tmpfs /boot is
/// refused before anything is written, saying how much is free and needed; one that fits
/// is armed.
#[test]
fn a_trial_that_would_fill_the_boot_partition_is_refused_before_writing() {
    let Some((p, s)) = real_tools() else { return };
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        assert!(
            std::env::var_os("HOMELAB_TEST_REQUIRE_ALL").is_none(),
            "mounting a small /boot needs root (HOMELAB_TEST_REQUIRE_ALL)"
        );
        eprintln!("skip: not root, cannot mount a tmpfs /boot");
        return;
    }
    rt().block_on(async {
        let m = Machine::new(&p, &s);
        let boot = m.path("boot");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(&boot)
            .status()
            .unwrap();
        assert!(mounted.success(), "mount a tmpfs at {}", boot.display());
        let _boot = SmallBoot(boot.clone());
        std::fs::create_dir_all(boot.join("extlinux")).unwrap();
        std::fs::write(
            boot.join("extlinux/extlinux.conf"),
            "DEFAULT nixos-default\n",
        )
        .unwrap();
        m.setup().await.unwrap();
        let sys = m.system();

        // 3 MiB of kernel: 2 × 3 MiB + 4 MiB spare do not fit in 8 MiB.
        std::fs::write(m.path("store/k-linux/Image"), vec![7u8; 3 << 20]).unwrap();
        let e = m.door.arm(&sys).await.unwrap_err();
        assert_eq!(e.kind, Kind::Environment, "{e}");
        assert!(
            e.message.contains(&format!(
                "not enough space on {} for this kernel: ",
                boot.display()
            )) && e.message.contains("needed")
                && e.message.contains("nothing was written"),
            "{e}"
        );
        assert!(e.message.contains("hint: free the boot partition"), "{e}");
        assert!(!boot.join(TRIAL_DIR).exists(), "trial files written");
        assert!(!boot.join(TRIAL_CONF).exists(), "trial entry written");
        assert!(!m.door.armed().await.unwrap(), "the flag was set");

        // 1 MiB of kernel: fits, and is armed.
        std::fs::write(m.path("store/k-linux/Image"), vec![7u8; 1 << 20]).unwrap();
        m.door.arm(&sys).await.unwrap();
        assert!(m.door.armed().await.unwrap());
        m.door.disarm().await.unwrap();
    });
}
