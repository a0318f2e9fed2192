//! A FleetLock client (the protocol Zincati uses; README "Reboots"): `POST
//! <base>/v1/pre-reboot` takes a reboot slot for this machine's id in its group,
//! `POST <base>/v1/steady-state` releases it. The body is
//! `{"client_params":{"id":…,"group":…}}`, every request carries `fleet-lock-protocol:
//! true`, and only a 200 is a yes. Anything else (a refusal with the protocol's
//! `{"kind","value"}` error, another status, no answer at all) is a no: the machine waits,
//! it never reboots without the slot.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::FleetLockSettings;

/// One request's deadline: a lock server that hangs is one that is down.
const TIMEOUT: Duration = Duration::from_secs(30);
pub const MACHINE_ID: &str = "/etc/machine-id";
/// The most of an error answer's body that is read (the protocol's is a small JSON).
pub const MAX_ERROR_BODY: usize = 64 << 10;

/// Why the server did not say yes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// It answered, and not with 200.
    #[error("FleetLock {endpoint} at {url} refused (HTTP {status}, {kind}): {value}")]
    Refused {
        endpoint: &'static str,
        url: String,
        status: u16,
        kind: String,
        value: String,
    },
    /// No answer: down, unreachable, timed out.
    #[error("FleetLock {endpoint} at {url}: no answer: {message}")]
    Unreachable {
        endpoint: &'static str,
        url: String,
        message: String,
    },
}

#[derive(Serialize)]
struct Body<'a> {
    client_params: Params<'a>,
}

#[derive(Serialize)]
struct Params<'a> {
    id: &'a str,
    group: &'a str,
}

#[derive(Deserialize)]
struct Rejection {
    kind: String,
    value: String,
}

/// The request body for `id` in `group` (exactly the protocol's schema).
pub fn body(id: &str, group: &str) -> String {
    serde_json::json!(Body {
        client_params: Params { id, group }
    })
    .to_string()
}

/// The application id of homelab-agent's FleetLock id (`8b3d6c4c-ef3c-4cfb-ac50-b7ac2c89617e`,
/// random, fixed for ever: changing it would strand every held slot).
pub const APP_ID: [u8; 16] = [
    0x8b, 0x3d, 0x6c, 0x4c, 0xef, 0x3c, 0x4c, 0xfb, 0xac, 0x50, 0xb7, 0xac, 0x2c, 0x89, 0x61, 0x7e,
];

/// This machine's lock id: the configured one, else the app-specific id derived from the
/// machine id ([`app_specific`]), as Zincati sends: the raw machine id stays on the
/// machine (machine-id(5): "should be considered confidential").
pub fn lock_id(settings: &FleetLockSettings, machine_id_file: &Path) -> Result<String, String> {
    if let Some(id) = &settings.id {
        return Ok(id.clone());
    }
    let machine = machine_id(machine_id_file)?;
    Ok(hex(&app_specific(&machine, &APP_ID)))
}

/// The id a slot was taken with before ids were app-specific: the raw machine id (or the
/// configured one). Released with it, so an upgrade never strands a slot.
pub fn legacy_lock_id(settings: &FleetLockSettings, machine_id_file: &Path) -> Option<String> {
    if let Some(id) = &settings.id {
        return Some(id.clone());
    }
    machine_id(machine_id_file).ok().map(|m| hex(&m))
}

/// `/etc/machine-id`: 32 hex digits.
pub fn machine_id(file: &Path) -> Result<[u8; 16], String> {
    let bad = || {
        format!(
            "{} holds no machine id\nhint: set [reboot] id, or create one (`systemd-machine-id-setup`)",
            file.display()
        )
    };
    // The state's bounded reader: a FIFO or a device there never blocks the agent; a
    // symlink is followed (some systems link it to /var/lib/dbus/machine-id).
    use crate::state::{read_regular, Found, Links};
    let bytes = match read_regular(file, 4096, Links::Follow, "a machine id has") {
        Ok(Found::File(bytes)) => bytes,
        Ok(Found::Missing) => {
            return Err(format!(
                "reading {}: it does not exist\nhint: set [reboot] id",
                file.display()
            ))
        }
        Ok(Found::Wrong(why)) => {
            return Err(format!(
                "reading {}: {why}\nhint: set [reboot] id",
                file.display()
            ))
        }
        Err(e) => {
            return Err(format!(
                "reading {}: {e}\nhint: set [reboot] id",
                file.display()
            ))
        }
    };
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let text = text.trim();
    if text.len() != 32 || !text.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(id)
}

/// systemd's `sd_id128_get_machine_app_specific`: HMAC-SHA256 keyed by the machine id
/// over the application id, the first 16 bytes, made a version 4 UUID.
pub fn app_specific(machine: &[u8; 16], app: &[u8; 16]) -> [u8; 16] {
    use hmac::{Mac, SimpleHmac};
    let mut mac = <SimpleHmac<sha2::Sha256> as Mac>::new_from_slice(machine)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(app);
    let digest = mac.finalize().into_bytes();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

/// Lowercase hex without dashes (Zincati's `lower_hex`, the machine id's own form).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub struct Client {
    base: String,
    group: String,
    id: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, group: &str, id: &str) -> Result<Client, String> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            // A redirect could send the lock request somewhere unintended: the header is
            // the protocol's guard against exactly that; not following is ours.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("building the FleetLock HTTP client: {e}"))?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            group: group.to_string(),
            id: id.to_string(),
            http,
        })
    }

    pub fn describe(&self) -> String {
        format!("{} (group {}, id {})", self.base, self.group, self.id)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// `RecursiveLock`: take (or keep) this machine's reboot slot.
    pub async fn pre_reboot(&self) -> Result<(), LockError> {
        self.post("pre-reboot", &self.id).await
    }

    /// `UnlockIfHeld`: release this machine's slot, if it holds one.
    pub async fn steady_state(&self) -> Result<(), LockError> {
        self.post("steady-state", &self.id).await
    }

    /// `UnlockIfHeld` for a slot taken with another id (an older derivation's).
    pub async fn steady_state_as(&self, id: &str) -> Result<(), LockError> {
        self.post("steady-state", id).await
    }

    async fn post(&self, endpoint: &'static str, id: &str) -> Result<(), LockError> {
        let url = format!("{}/v1/{endpoint}", self.base);
        let sent = self
            .http
            .post(&url)
            .header("fleet-lock-protocol", "true")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body(id, &self.group))
            .send()
            .await;
        let response = sent.map_err(|e| LockError::Unreachable {
            endpoint,
            url: url.clone(),
            message: error_chain(&e),
        })?;
        let status = response.status().as_u16();
        if status == 200 {
            return Ok(());
        }
        // A refusal is a small JSON object: a server that sends more is not read further
        // (a 512 MiB answer once cost the agent 1 GiB of memory).
        let body = crate::http_body::read_capped(response, MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        let (kind, value) = match serde_json::from_slice::<Rejection>(&body.bytes) {
            Ok(r) if !r.kind.is_empty() => (r.kind, r.value),
            _ if body.truncated => (
                format!("generic_http_{status}"),
                format!(
                    "(no FleetLock error in the answer: its body is over {} KiB, the rest was not read)",
                    MAX_ERROR_BODY >> 10
                ),
            ),
            _ => (
                format!("generic_http_{status}"),
                "(no FleetLock error in the answer)".into(),
            ),
        };
        Err(LockError::Refused {
            endpoint,
            url,
            status,
            kind,
            value: value.chars().take(300).collect(),
        })
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.dedup();
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_protocol_schema() {
        let v: serde_json::Value = serde_json::from_str(&body("abc", "pis")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"client_params": {"id": "abc", "group": "pis"}})
        );
    }

    #[test]
    fn the_id_is_the_app_specific_hash_of_the_machine_id() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("machine-id");
        let s = FleetLockSettings {
            url: "http://x".into(),
            group: "default".into(),
            id: None,
        };
        let e = lock_id(&s, &file).unwrap_err();
        assert!(
            e.contains("does not exist") && e.contains("hint: set [reboot] id"),
            "{e}"
        );
        std::fs::write(&file, "3d1219c7c4c5404aaa1f6d2a48adfda4\n").unwrap();
        // What `systemd-id128 machine-id --app-specific=8b3d6c4cef3c4cfbac50b7ac2c89617e`
        // printed on a machine with this machine id (systemd 252).
        assert_eq!(
            lock_id(&s, &file).unwrap(),
            "7d46091d5cfa4676b30b362f2bedd4d1"
        );
        // The raw machine id is what an older agent took its slot with.
        assert_eq!(
            legacy_lock_id(&s, &file).as_deref(),
            Some("3d1219c7c4c5404aaa1f6d2a48adfda4")
        );
        for bad in [
            "uninitialized\n",
            "0123\n",
            "zz1219c7c4c5404aaa1f6d2a48adfda4\n",
        ] {
            std::fs::write(&file, bad).unwrap();
            let e = lock_id(&s, &file).unwrap_err();
            assert!(e.contains("holds no machine id"), "{bad:?}: {e}");
        }
        // A FIFO there: refused at once, never a blocked open.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = lock_id(&s, &fifo).unwrap_err();
        assert!(
            e.contains("a FIFO, not a regular file\nhint: set [reboot] id"),
            "{e}"
        );
        let named = FleetLockSettings {
            id: Some("pi1".into()),
            ..s
        };
        assert_eq!(lock_id(&named, &file).unwrap(), "pi1");
        assert_eq!(legacy_lock_id(&named, &file).as_deref(), Some("pi1"));
    }

    /// The derivation against systemd's own tool, on this machine's id, when both exist.
    #[test]
    fn the_derivation_matches_systemd_id128() {
        let tool = std::path::Path::new("/usr/bin/systemd-id128");
        let file = std::path::Path::new("/etc/machine-id");
        let Ok(machine) = machine_id(file) else {
            assert!(
                std::env::var_os("HOMELAB_TEST_REQUIRE_ALL").is_none(),
                "no /etc/machine-id here"
            );
            return;
        };
        if !tool.exists() {
            assert!(
                std::env::var_os("HOMELAB_TEST_REQUIRE_ALL").is_none(),
                "systemd-id128 is missing (Debian: systemd)"
            );
            return;
        }
        let out = std::process::Command::new(tool)
            .args(["machine-id", "--app-specific", &hex(&APP_ID)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            hex(&app_specific(&machine, &APP_ID))
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_server_that_is_down_is_unreachable_not_a_yes() {
        // A port nobody listens on: bind, learn the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Client::new(&format!("http://127.0.0.1:{port}"), "default", "a").unwrap();
        match c.pre_reboot().await {
            Err(LockError::Unreachable { endpoint, .. }) => assert_eq!(endpoint, "pre-reboot"),
            other => panic!("{other:?}"),
        }
    }
}
