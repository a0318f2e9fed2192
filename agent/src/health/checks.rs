//! The check kinds. Each returns a [`Verdict`] within its own timeout.

use std::time::Duration;

use super::{Context, Verdict};
use crate::config::{Check, CheckKind};
use crate::process::{Cmd, CmdError};

/// The most of an http check's body that is read for `body_contains`.
pub const MAX_HTTP_BODY: usize = 1 << 20;

pub async fn run(check: &Check, ctx: &Context<'_>) -> Verdict {
    match &check.kind {
        CheckKind::Command { command } => command_check(command, check.timeout).await,
        CheckKind::Tcp { address } => tcp_check(address, check.timeout).await,
        CheckKind::Http {
            url,
            expect_status,
            body_contains,
            insecure_tls,
        } => {
            http_check(
                url,
                *expect_status,
                body_contains.as_deref(),
                *insecure_tls,
                check.timeout,
            )
            .await
        }
        CheckKind::Systemd {
            units,
            no_failed_units,
        } => {
            systemd_check(
                &ctx.settings.paths.systemctl,
                units,
                *no_failed_units,
                check.timeout,
            )
            .await
        }
        CheckKind::Remote => remote_check(ctx, check.timeout).await,
    }
}

async fn command_check(argv: &[String], timeout: Duration) -> Verdict {
    let cmd = Cmd::new(&argv[0]).args(&argv[1..]).timeout(timeout);
    match cmd.run().await {
        Ok(done) if done.status.success() => Verdict::Healthy("exit 0".into()),
        Ok(done) => Verdict::Unhealthy(format!("{}{}", done.status, last_line(&done.stderr_tail))),
        Err(CmdError::TimedOut { after, .. }) => Verdict::Unhealthy(format!(
            "no answer within {}",
            crate::duration::format_duration(after)
        )),
        Err(e) => Verdict::CannotRun(e.to_string()),
    }
}

async fn tcp_check(address: &str, timeout: Duration) -> Verdict {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => Verdict::Healthy(format!("connected to {address}")),
        Ok(Err(e)) => Verdict::Unhealthy(format!("cannot connect to {address}: {e}")),
        Err(_) => Verdict::Unhealthy(format!(
            "no connection to {address} within {}",
            crate::duration::format_duration(timeout)
        )),
    }
}

async fn http_check(
    url: &str,
    expect: Option<u16>,
    body_contains: Option<&str>,
    insecure: bool,
    timeout: Duration,
) -> Verdict {
    let client = match reqwest::Client::builder()
        .timeout(timeout)
        .danger_accept_invalid_certs(insecure)
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => return Verdict::CannotRun(format!("cannot build an HTTP client: {e}")),
    };
    let response = match client.get(url).send().await {
        Ok(r) => r,
        Err(e) if e.is_builder() => return Verdict::CannotRun(format!("unusable URL {url}: {e}")),
        Err(e) if e.is_timeout() => {
            return Verdict::Unhealthy(format!(
                "no answer within {}",
                crate::duration::format_duration(timeout)
            ))
        }
        Err(e) => return Verdict::Unhealthy(format!("request failed: {}", error_chain(&e))),
    };
    let status = response.status().as_u16();
    let status_ok = match expect {
        Some(want) => status == want,
        None => (200..300).contains(&status),
    };
    if !status_ok {
        let want = expect.map_or("2xx".to_string(), |w| w.to_string());
        return Verdict::Unhealthy(format!("got HTTP {status}, expected {want}"));
    }
    let Some(needle) = body_contains else {
        return Verdict::Healthy(format!("HTTP {status}"));
    };
    // A health page is small: only its first MAX_HTTP_BODY bytes are read and searched.
    match crate::http_body::read_capped(response, MAX_HTTP_BODY).await {
        Ok(body) if body.text().contains(needle) => {
            Verdict::Healthy(format!("HTTP {status}, body contains {needle:?}"))
        }
        Ok(body) if body.truncated => Verdict::Unhealthy(format!(
            "HTTP {status}, but the body's first {} KiB do not contain {needle:?} (the rest is not read)",
            MAX_HTTP_BODY >> 10
        )),
        Ok(_) => Verdict::Unhealthy(format!(
            "HTTP {status}, but the body does not contain {needle:?}"
        )),
        Err(e) => Verdict::Unhealthy(format!("HTTP {status}, body unreadable: {e}")),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn systemd_check(
    systemctl: &std::path::Path,
    units: &[String],
    no_failed: bool,
    timeout: Duration,
) -> Verdict {
    if !units.is_empty() {
        // One `is-active` call answers for all units, one state per line, in order.
        let cmd = Cmd::new(systemctl)
            .arg("is-active")
            .arg("--")
            .args(units)
            .timeout(timeout)
            .capture_stdout();
        let done = match cmd.run().await {
            Ok(done) => done,
            Err(CmdError::TimedOut { .. }) => {
                return Verdict::Unhealthy("systemctl did not answer in time".into())
            }
            Err(e) => return Verdict::CannotRun(e.to_string()),
        };
        let states: Vec<&str> = done.stdout.lines().collect();
        let bad: Vec<String> = units
            .iter()
            .enumerate()
            .filter(|(i, _)| states.get(*i).copied() != Some("active"))
            .map(|(i, u)| format!("{u} is {}", states.get(i).copied().unwrap_or("unknown")))
            .collect();
        if !bad.is_empty() {
            return Verdict::Unhealthy(bad.join(", "));
        }
    }
    if no_failed {
        let cmd = Cmd::new(systemctl)
            .args([
                "list-units",
                "--state=failed",
                "--no-legend",
                "--plain",
                "--full",
            ])
            .timeout(timeout)
            .capture_stdout();
        match cmd.run_ok().await {
            Ok(done) => {
                let failed: Vec<&str> = done
                    .stdout
                    .lines()
                    .filter_map(|l| l.split_whitespace().next())
                    .collect();
                if !failed.is_empty() {
                    return Verdict::Unhealthy(format!("failed units: {}", failed.join(", ")));
                }
            }
            Err(CmdError::NotFound { program }) => {
                return Verdict::CannotRun(format!("{program} not found"))
            }
            Err(e) => return Verdict::Unhealthy(e.to_string()),
        }
    }
    Verdict::Healthy(format!(
        "{} active{}",
        units.join(", "),
        if no_failed { ", no failed units" } else { "" }
    ))
}

async fn remote_check(ctx: &Context<'_>, timeout: Duration) -> Verdict {
    let source = &ctx.settings.source;
    match ctx.remote.head(timeout).await {
        Ok(_) => Verdict::Healthy(format!("{} reachable", source.url.redacted())),
        Err(e) => Verdict::Unhealthy(e.lines().next().unwrap_or("unreachable").to_string()),
    }
}

fn last_line(text: &str) -> String {
    match text.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(l) => format!(": {}", l.chars().take(300).collect::<String>()),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A one-shot HTTP server on loopback: 200 with `len` bytes of 'x', then `tail`.
    fn serve(len: usize, tail: &'static str) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let _ = s.read(&mut [0u8; 1024]);
            let total = len + tail.len();
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n");
            let chunk = vec![b'x'; 64 << 10];
            let mut left = len;
            while left > 0 {
                let n = left.min(chunk.len());
                if s.write_all(&chunk[..n]).is_err() {
                    return;
                }
                left -= n;
            }
            let _ = s.write_all(tail.as_bytes());
        });
        format!("http://127.0.0.1:{port}/")
    }

    /// Issue 23 item 14: a health page is read up to MAX_HTTP_BODY, never whole.
    #[tokio::test(flavor = "current_thread")]
    async fn an_http_check_reads_at_most_the_cap_of_a_body() {
        let t = Duration::from_secs(20);
        let near = serve(1000, "all good");
        let v = http_check(&near, None, Some("all good"), false, t).await;
        assert!(matches!(v, Verdict::Healthy(_)), "{v:?}");
        let far = serve(64 << 20, "all good");
        match http_check(&far, None, Some("all good"), false, t).await {
            Verdict::Unhealthy(m) => assert!(
                m.contains("first 1024 KiB do not contain \"all good\" (the rest is not read)"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }
}
