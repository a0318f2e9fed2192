//! HTTP health checks through real deployments, against a scripted server on loopback:
//! a passing check lets a deployment through, a failing one rolls it back.

use std::time::Duration;

use crate::support::servers::HealthServer;
use crate::support::{nix_available, Harness};

fn http_check(url: &str, extra: &str) -> String {
    format!("[[health.checks]]\ntype = \"http\"\nurl = \"{url}\"\ntimeout = \"1s\"\n{extra}")
}

/// Bootstraps with a passing server (`first`), then deploys a new commit against `script`.
/// Returns the harness, the run and whether the new system stayed.
fn deploy_against(
    first: &str,
    script: &str,
    extra: &str,
    tune: impl FnOnce(&mut Harness),
) -> (Harness, crate::support::Run, bool) {
    let server = HealthServer::start(first);
    let mut h = Harness::new();
    h.checks = Some(http_check(&server.url("/health"), extra));
    let (_, old) = h.bootstrap();
    tune(&mut h);
    server.set_script(script);
    h.host("pi1").content = "next".into();
    h.commit("next");
    let run = h.run_once();
    let stayed = h.current_system().as_deref() != Some(old.as_path());
    assert_eq!(
        h.current_system(),
        h.profile_system(),
        "live system must be the profile's generation"
    );
    (h, run, stayed)
}

#[test]
fn ok_status_passes() {
    if !nix_available() {
        return;
    }
    let (h, run, stayed) = deploy_against("200", "200", "", |_| {});
    run.expect(0);
    assert!(stayed);
    assert_eq!(h.profile_generation(), Some(2));
}

#[test]
fn server_error_rolls_back() {
    if !nix_available() {
        return;
    }
    let (h, run, stayed) = deploy_against("200", "500", "", |_| {});
    run.expect(1);
    assert!(!stayed);
    let s = h.status();
    assert!(
        s["last_run"]["failed_check"]
            .as_str()
            .unwrap()
            .contains("got HTTP 500, expected 2xx"),
        "{s}"
    );
    let human = h.agent(&["status"]).stdout();
    assert!(
        human.contains("failing check: http http://127.0.0.1:") && human.contains("rolled back"),
        "{human}"
    );
}

#[test]
fn hanging_endpoint_fails_within_the_health_timeout() {
    if !nix_available() {
        return;
    }
    let (h, run, stayed) = deploy_against("200", "hang", "", |_| {});
    run.expect(1);
    assert!(!stayed);
    assert!(
        run.elapsed < Duration::from_secs(20),
        "took {:?}",
        run.elapsed
    );
    assert!(h.status()["last_run"]["failed_check"]
        .as_str()
        .unwrap()
        .contains("no answer within 1s"));
}

#[test]
fn slow_start_passes_within_the_deadline() {
    if !nix_available() {
        return;
    }
    let (_, run, stayed) =
        deploy_against("200", "500,500,200", "", |h| h.health_timeout = "5s".into());
    run.expect(0);
    assert!(
        stayed,
        "a service that comes up within the deadline is healthy"
    );
}

#[test]
fn flapping_fails_with_consecutive_passes_required() {
    if !nix_available() {
        return;
    }
    let (h, run, stayed) = deploy_against("200", "200,500", "", |h| {
        h.health_extra = "consecutive = 2".into();
        h.health_timeout = "2s".into();
    });
    run.expect(1);
    assert!(!stayed, "an alternating endpoint must not pass by luck");
    assert_eq!(h.status()["last_run"]["phase"], "health");
}

#[test]
fn body_must_contain_the_expected_text() {
    if !nix_available() {
        return;
    }
    let (h, run, stayed) = deploy_against(
        "body:200:all good",
        "body:200:degraded",
        "body_contains = \"all good\"\n",
        |_| {},
    );
    run.expect(1);
    assert!(!stayed);
    let failed = h.status()["last_run"]["failed_check"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(failed.contains("does not contain \"all good\""), "{failed}");
}

#[test]
fn check_command_prints_each_verdict() {
    let up = HealthServer::start("200");
    let down = HealthServer::start("500");
    let mut h = Harness::new();
    h.checks = Some(format!(
        "{}{}",
        http_check(&up.url("/a"), "name = \"api\"\n"),
        http_check(&down.url("/b"), "name = \"web\"\n")
    ));
    let run = h.agent(&["check"]);
    run.expect(1);
    let out = run.stdout();
    assert!(
        out.contains("healthy") && out.contains("api: HTTP 200"),
        "{out}"
    );
    assert!(
        out.contains("UNHEALTHY") && out.contains("web: got HTTP 500, expected 2xx"),
        "{out}"
    );
    down.set_script("200");
    h.agent(&["check"]).expect(0);
    assert!(up.requests() >= 2);
    h.checks = None;
}
