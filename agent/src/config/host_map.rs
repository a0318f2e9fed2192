//! `[host] map`: map mode, for the generic image. The value is a path inside the
//! repository (read from the fetched commit by `pivot`), so it must stay inside it.

use super::raw::RawHost;
use super::validate::KeyError;

pub(super) fn validate(raw: &RawHost) -> Result<Option<String>, KeyError> {
    let Some(map) = &raw.map else {
        return Ok(None);
    };
    let err = |message: String| KeyError {
        key: "host.map".into(),
        message,
    };
    for (key, set) in [
        ("name", raw.name.is_some()),
        ("attribute", raw.attribute.is_some()),
    ] {
        if set {
            return Err(err(format!(
                "set either [host] map or [host] {key}, not both: in map mode the host is found per machine from the map"
            )));
        }
    }
    let chars_ok = map
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    let parts_ok = map
        .split('/')
        .all(|part| !part.is_empty() && part != "." && part != "..");
    if map.is_empty() || map.len() > 200 || !chars_ok || !parts_ok {
        return Err(err(format!(
            "invalid map path {map:?}: a path inside the repository such as \"machines.toml\" (letters, digits, '.', '_', '-', '/'; no leading '/', no '..')"
        )));
    }
    Ok(Some(map.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: Option<&str>, attribute: Option<&str>, map: Option<&str>) -> RawHost {
        RawHost {
            name: name.map(Into::into),
            attribute: attribute.map(Into::into),
            map: map.map(Into::into),
        }
    }

    #[test]
    fn map_paths() {
        for good in ["machines.toml", "hosts/machines.toml", "a_b-c.toml"] {
            assert_eq!(
                validate(&host(None, None, Some(good)))
                    .ok()
                    .flatten()
                    .as_deref(),
                Some(good)
            );
        }
        for bad in [
            "",
            "/etc/machines.toml",
            "../x.toml",
            "a//b",
            "a/./b",
            "a b",
            "a/",
            "x\0",
        ] {
            let e = validate(&host(None, None, Some(bad))).expect_err(bad);
            assert!(
                e.message.contains("invalid map path"),
                "{bad}: {}",
                e.message
            );
        }
        assert!(matches!(validate(&host(Some("pi1"), None, None)), Ok(None)));
    }

    #[test]
    fn map_excludes_name_and_attribute() {
        let e = validate(&host(Some("pi1"), None, Some("machines.toml")))
            .err()
            .unwrap();
        assert!(
            e.message.contains("either [host] map or [host] name"),
            "{}",
            e.message
        );
        let e = validate(&host(None, Some("x"), Some("machines.toml")))
            .err()
            .unwrap();
        assert!(e.message.contains("[host] attribute"), "{}", e.message);
    }

    #[test]
    fn config_errors_name_key_and_line() {
        let path = std::path::Path::new("/etc/test.toml");
        let cases: &[(&str, &str, usize)] = &[
            (
                "[host]\nname = \"pi1\"\nmap = \"machines.toml\"\n",
                "host.map",
                3,
            ),
            ("[host]\nmap = \"../machines.toml\"\n", "host.map", 2),
            (
                "[host]\nmap = \"m.toml\"\n[paths]\nhost_file = \"homelab-host\"\n",
                "paths.host_file",
                4,
            ),
            (
                "[host]\nmap = \"m.toml\"\n[paths]\nserial_numbr = \"/x\"\n",
                "paths.serial_numbr",
                4,
            ),
        ];
        for (tail, key, line) in cases {
            let text = format!("[source]\nurl = \"/r\"\n{tail}");
            let e = super::super::parse(path, &text).expect_err(tail);
            assert_eq!(&e.key, key, "{e}");
            assert_eq!(e.line, Some(line + 2), "{e}");
        }
        let s = super::super::parse(
            path,
            "[source]\nurl = \"/r\"\n[host]\nmap = \"machines.toml\"\n",
        )
        .unwrap();
        assert_eq!(s.host_map.as_deref(), Some("machines.toml"));
        assert_eq!(
            s.paths.identity.host_file,
            std::path::PathBuf::from("/boot/firmware/homelab-host")
        );
    }
}
