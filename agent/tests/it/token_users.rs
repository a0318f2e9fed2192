//! The user name sent with an https token from `[source] token_file` (issue 23, item 3):
//! the name in the URL (`https://gitlab+deploy-token-7@host/…`, Bitbucket's
//! `x-token-auth`), else `homelab-agent`. Real nginx whose Basic auth knows only the
//! forge's user name.

use crate::support::servers::{closed_port, served};
use crate::tls::{agent, tools_available, Nginx, Pki, Site};

const TOKEN: &str = "deploy-token-secret-99";

#[test]
fn a_user_name_in_the_url_goes_with_the_token_file() {
    if !tools_available() {
        return;
    }
    let (mut h, _bare) = served();
    let pki = Pki::new(h.path("pki"));
    let port = closed_port();
    let site = Site {
        ip: "127.0.0.1",
        port,
        tls: Some(pki.server("git", "IP:127.0.0.1")),
        first: String::new(),
        auth: true,
    };
    let nginx = Nginx::start_sites(
        &h.path("nginx"),
        &h.path("srv"),
        &[site],
        &[("gitlab+deploy-token-7", TOKEN)],
    );
    std::fs::write(h.path("token"), format!("{TOKEN}\n")).unwrap();
    h.source_extra = format!(
        "token_file = \"{}\"\nca_file = \"{}\"\n",
        h.path("token").display(),
        pki.ca().display()
    );
    // Without the name, the server refuses `homelab-agent`: an authentication error.
    h.url = format!("https://127.0.0.1:{port}/homelab.git");
    let run = agent(&h, &["run", "--once"]);
    run.expect(78);
    assert!(
        run.stderr().contains("authentication to"),
        "{}",
        run.stderr()
    );
    // With it (percent-encoded `+` too, as some forges show it), the token is accepted.
    for user in ["gitlab+deploy-token-7", "gitlab%2Bdeploy-token-7"] {
        h.url = format!("https://{user}@127.0.0.1:{port}/homelab.git");
        agent(&h, &["run", "--once"]).expect(0);
    }
    assert_eq!(h.profile_generation(), Some(1));
    let log = nginx.access_log();
    assert!(log.contains("user=gitlab+deploy-token-7 "), "{log}");
    // The name is not shown (a lone userinfo may be a token): status redacts it.
    let status = agent(&h, &["status", "--json"]).stdout();
    assert!(
        !status.contains(TOKEN) && !status.contains("deploy-token-7"),
        "{status}"
    );
}
