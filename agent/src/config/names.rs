//! Allow-lists for the names that reach git refspecs, flake attribute paths and argument
//! vectors: far narrower than what git or nix accept.

use crate::failure::Invalid;

/// `nixosConfigurations."<host>".config.system.build.toplevel`, the attribute quoted so a
/// dotted name can never be read as a path.
pub fn default_attribute(host: &str) -> String {
    format!("nixosConfigurations.\"{host}\".config.system.build.toplevel")
}

/// Branch names end up in git refspecs and argument vectors: a strict allow-list, far
/// narrower than what git accepts (git accepts `x&rev=…` and `--upload-pack=…`).
pub fn validate_branch(branch: &str) -> Result<(), Invalid> {
    validate_branch_words(branch).map_err(Invalid)
}

/// [`validate_branch`], its problem in words.
fn validate_branch_words(branch: &str) -> Result<(), String> {
    let ok_chars = branch
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'));
    let reason = if branch.is_empty() || branch.len() > 100 {
        Some("must be 1 to 100 characters")
    } else if !ok_chars {
        Some("may contain only letters, digits, '.', '_', '/' and '-'")
    } else if branch.starts_with(['-', '/', '.']) || branch.ends_with(['/', '.']) {
        Some("must not start with '-', '/' or '.', nor end with '/' or '.'")
    } else if branch.contains("..") || branch.contains("//") || branch.ends_with(".lock") {
        Some("must not contain '..' or '//', nor end with '.lock'")
    } else {
        None
    };
    match reason {
        Some(r) => Err(format!("invalid branch name {branch:?}: {r}")),
        None => Ok(()),
    }
}

/// Host names end up in a flake attribute path: letters, digits, '-' and '_' only.
pub fn validate_host(host: &str) -> Result<(), Invalid> {
    validate_host_words(host).map_err(Invalid)
}

/// [`validate_host`], its problem in words.
fn validate_host_words(host: &str) -> Result<(), String> {
    let mut chars = host.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if first_ok && rest_ok && host.len() <= 63 {
        Ok(())
    } else if host.is_empty() {
        Err("empty: set [host] name (the machine's hostname could not be read)".into())
    } else {
        Err(format!(
            "invalid host name {}: 1 to 63 letters, digits, '-' or '_', starting with a letter or digit",
            crate::text::quote(host)
        ))
    }
}

pub fn validate_attribute(attr: &str) -> Result<(), Invalid> {
    validate_attribute_words(attr).map_err(Invalid)
}

/// [`validate_attribute`], its problem in words.
fn validate_attribute_words(attr: &str) -> Result<(), String> {
    if attr.is_empty()
        || attr
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '#' || c == '?')
    {
        Err(format!(
            "invalid flake attribute {}: no spaces, '#' or '?'",
            crate::text::quote(attr)
        ))
    } else {
        Ok(())
    }
}

pub fn valid_unit_name(unit: &str) -> bool {
    !unit.is_empty()
        && !unit.starts_with('-')
        && unit.len() <= 256
        && unit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '\\' | '@'))
}
