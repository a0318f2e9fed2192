//! `[[notify.webhooks]]`: one POST per event, `ntfy` (plain text, ntfy's headers) or
//! `json` ([`super::Event`] as the body). Secrets (`token_file`, `headers_file`) are read
//! at send time and never logged; errors name the receiver by index and host only.

use std::path::Path;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};

use crate::config::announce::{Format, Webhook};

use super::Event;

pub async fn deliver(index: usize, hook: &Webhook, event: &Event) {
    let who = format!("notify.webhooks[{index}] ({})", host_of(&hook.url));
    match post(hook, event).await {
        Ok(status) if status.is_success() => {
            log::info!("{who} told: {}", event.outcome)
        }
        Ok(status) => {
            let hint = "the run is recorded all the same; check the receiver's URL and credentials";
            log::warn!(hint = hint; "{}", crate::failure::with_hint_line(format!("{who} answered HTTP {status}"), hint))
        }
        Err(e) => {
            let hint =
                "the run is recorded all the same; the receiver is down, slow or misconfigured";
            log::warn!(hint = hint; "{}", crate::failure::with_hint_line(format!("{who} not reached: {e}"), hint))
        }
    }
}

async fn post(hook: &Webhook, event: &Event) -> Result<reqwest::StatusCode, String> {
    let mut headers = secret_headers(hook)?;
    let body = match hook.format {
        Format::Ntfy => {
            headers.extend(ntfy_headers(event));
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            event.message.clone()
        }
        Format::Json => {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            serde_json::to_string(event).map_err(|e| e.to_string())?
        }
    };
    let client = reqwest::Client::builder()
        .timeout(hook.timeout)
        .connect_timeout(hook.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let response = client
        .post(&hook.url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .map_err(|e| match e.is_timeout() {
            true => format!(
                "no answer within {}",
                crate::duration::format_duration(hook.timeout)
            ),
            false => chain(&e.without_url()),
        })?;
    Ok(response.status())
}

/// ntfy's publish headers: the host and outcome as the title, an emoji tag, and a
/// priority that rises with what a person must do.
pub fn ntfy_headers(event: &Event) -> HeaderMap {
    let (tag, priority) = match (event.outcome, event.needs_attention) {
        (_, true) => ("rotating_light", "urgent"),
        ("deployed", _) => ("white_check_mark", "default"),
        ("unchanged", _) => ("zzz", "low"),
        ("rolled-back", _) => ("rewind", "default"),
        _ => ("warning", "high"),
    };
    let mut h = HeaderMap::new();
    let title = format!("homelab-agent: {} {}", event.host, event.outcome);
    // Host names and outcomes are ASCII by validation; never fail a post over a title.
    if let Ok(v) = HeaderValue::from_str(&title) {
        h.insert(HeaderName::from_static("title"), v);
    }
    h.insert(
        HeaderName::from_static("tags"),
        HeaderValue::from_static(tag),
    );
    h.insert(
        HeaderName::from_static("priority"),
        HeaderValue::from_static(priority),
    );
    h
}

/// `Authorization: Bearer` from `token_file`, then each `Name: value` line of
/// `headers_file` (blank lines and `#` comments skipped). Errors name the file and line,
/// never a value.
fn secret_headers(hook: &Webhook) -> Result<HeaderMap, String> {
    let mut h = HeaderMap::new();
    if let Some(path) = &hook.token_file {
        // The same reader as the git token: trimmed, an empty file refused.
        let token = crate::source::git::read_secret(path)
            .map_err(|e| format!("cannot read token_file {}: {e}", path.display()))?;
        let token = token.as_str();
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            format!(
                "token_file {}: not usable in an HTTP header (one line of printable ASCII)",
                path.display()
            )
        })?;
        value.set_sensitive(true);
        h.insert(AUTHORIZATION, value);
    }
    if let Some(path) = &hook.headers_file {
        let text = read(path, "headers_file")?;
        for (name, value) in parse_headers(&text).map_err(|line| {
            format!(
                "headers_file {} line {line}: not a `Name: value` header",
                path.display()
            )
        })? {
            h.append(name, value);
        }
    }
    Ok(h)
}

/// The headers of a `headers_file`, or the number of the first bad line.
pub fn parse_headers(text: &str) -> Result<Vec<(HeaderName, HeaderValue)>, usize> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line.split_once(':').ok_or(i + 1)?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| i + 1)?;
        let mut value = HeaderValue::from_str(value.trim()).map_err(|_| i + 1)?;
        value.set_sensitive(true);
        out.push((name, value));
    }
    Ok(out)
}

fn read(path: &Path, key: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {key} {}: {e}", path.display()))
}

/// The host (and port) of a URL: a webhook's path may itself be a secret (an ntfy topic).
pub fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or_default()
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let line = s.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(token_file: &Path) -> Webhook {
        Webhook {
            url: "https://ntfy.example.org/topic".into(),
            format: Format::Ntfy,
            on: vec!["deployed".into()],
            token_file: Some(token_file.to_path_buf()),
            headers_file: None,
            timeout: std::time::Duration::from_secs(5),
        }
    }

    #[test]
    fn an_empty_token_file_is_said_not_sent_as_an_empty_bearer() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "\n").unwrap();
        let err = secret_headers(&hook(&file)).unwrap_err();
        assert!(err.contains("the file is empty"), "{err}");
        std::fs::write(&file, "s3cret\n").unwrap();
        let headers = secret_headers(&hook(&file)).unwrap();
        assert_eq!(headers[AUTHORIZATION], "Bearer s3cret");
    }
}
