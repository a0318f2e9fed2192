//! `[source] testing_branch`: the per-host testing branch. Off unless set; the usual value
//! is `"testing/{host}"`, where `{host}` becomes this machine's `[host] name`.

use super::names::validate_branch;

/// The branch name with `{host}` replaced, checked like `[source] branch` and distinct
/// from it.
pub(super) fn resolve(
    raw: Option<String>,
    host: &str,
    branch: &str,
) -> Result<Option<String>, String> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let name = raw.replace("{host}", host);
    validate_branch(&name)?;
    if name == branch {
        return Err(format!(
            "{name:?} is also [source] branch: the testing branch must be another branch (e.g. \"testing/{{host}}\")"
        ));
    }
    Ok(Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_filled_in_and_the_name_checked() {
        assert_eq!(resolve(None, "pi1", "main"), Ok(None));
        assert_eq!(
            resolve(Some("testing/{host}".into()), "pi1", "main"),
            Ok(Some("testing/pi1".into()))
        );
        assert!(resolve(Some("main".into()), "pi1", "main")
            .unwrap_err()
            .contains("also [source] branch"));
        assert!(resolve(Some("x&rev=1".into()), "pi1", "main").is_err());
        assert!(resolve(Some("{host}..x".into()), "pi1", "main").is_err());
    }
}
