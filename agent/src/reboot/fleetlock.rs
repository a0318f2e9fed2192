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

/// This machine's lock id: the configured one, else the machine id.
pub fn lock_id(settings: &FleetLockSettings, machine_id_file: &Path) -> Result<String, String> {
    if let Some(id) = &settings.id {
        return Ok(id.clone());
    }
    // The state's bounded reader: a FIFO or a device there never blocks the agent.
    use crate::state::{read_regular, Found, Links};
    let bytes = match read_regular(machine_id_file, 4096, Links::Follow, "a machine id has") {
        Ok(Found::File(bytes)) => bytes,
        Ok(Found::Missing) => {
            return Err(format!(
                "reading {}: no such file\nhint: set [reboot] id",
                machine_id_file.display()
            ))
        }
        Ok(Found::Wrong(why)) => {
            return Err(format!(
                "reading {}: {why}\nhint: set [reboot] id",
                machine_id_file.display()
            ))
        }
        Err(e) => {
            return Err(format!(
                "reading {}: {e}\nhint: set [reboot] id",
                machine_id_file.display()
            ))
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let id = text.trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "{} holds no machine id\nhint: set [reboot] id",
            machine_id_file.display()
        ));
    }
    Ok(id.to_string())
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

    /// `RecursiveLock`: take (or keep) this machine's reboot slot.
    pub async fn pre_reboot(&self) -> Result<(), LockError> {
        self.post("pre-reboot").await
    }

    /// `UnlockIfHeld`: release this machine's slot, if it holds one.
    pub async fn steady_state(&self) -> Result<(), LockError> {
        self.post("steady-state").await
    }

    async fn post(&self, endpoint: &'static str) -> Result<(), LockError> {
        let url = format!("{}/v1/{endpoint}", self.base);
        let sent = self
            .http
            .post(&url)
            .header("fleet-lock-protocol", "true")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body(&self.id, &self.group))
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
    fn the_id_defaults_to_the_machine_id() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("machine-id");
        let s = FleetLockSettings {
            url: "http://x".into(),
            group: "default".into(),
            id: None,
        };
        assert!(lock_id(&s, &file)
            .unwrap_err()
            .contains("hint: set [reboot] id"));
        std::fs::write(&file, "0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(
            lock_id(&s, &file).unwrap(),
            "0123456789abcdef0123456789abcdef"
        );
        std::fs::write(&file, "uninitialized\n").unwrap();
        assert!(lock_id(&s, &file).is_err());
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
