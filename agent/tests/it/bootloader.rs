//! `homelab-agent bootloader`: the real binary's exit codes and messages on bad input (the
//! U-Boot door itself is tested in agent/src/doors/uboot/tests.rs, and against the real
//! U-Boot in tests/qemu/run).

use std::process::Command;

use crate::support::BIN;

fn bootloader(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("bootloader")
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn bootloader_commands_refuse_a_machine_without_u_boot_environment() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fw_env.config");
    let config = config.to_str().unwrap();
    let (code, text) = bootloader(&["arm", "/nonexistent-system", "--fw-env-config", config]);
    assert_eq!(code, 71, "{text}");
    assert!(
        text.contains(&format!(
            "error: reading libubootenv's configuration {config}"
        )),
        "{text}"
    );
    assert!(
        text.contains("hint: enable services.homelab-agent.reboot.uboot"),
        "{text}"
    );

    let env = dir.path().join("uboot.env");
    std::fs::write(
        dir.path().join("fw_env.config"),
        format!("{} 0x0 0x4000\n", env.display()),
    )
    .unwrap();
    let (code, text) = bootloader(&["show", "--fw-env-config", config]);
    assert_eq!(code, 71, "{text}");
    assert!(
        text.contains("does not exist: U-Boot has never saved its environment there"),
        "{text}"
    );

    let (code, text) = bootloader(&[
        "setup",
        "--fw-env-config",
        config,
        "--sysboot-device",
        "mmc; reset",
    ]);
    assert_eq!(code, 78, "{text}");
    assert!(text.contains("--sysboot-device \"mmc; reset\""), "{text}");
}
