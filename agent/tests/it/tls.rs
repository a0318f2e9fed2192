//! Real TLS on loopback: nginx serving `git http-backend` through fcgiwrap, with a
//! private CA made by the openssl CLI here. A trusted CA (`[source] ca_file`) passes; an
//! unknown CA and a wrong host name are refused with errors that say so (configuration,
//! not the commit's fault); the token arrives at the server only over TLS.
//!
//! `GIT_SSL_CAINFO`, `SSL_CERT_FILE`, `SSL_CERT_DIR`, `NIX_SSL_CERT_FILE` and
//! `CURL_CA_BUNDLE` may be set where the tests run: every agent started here runs without
//! them, so only the system store and `ca_file` decide.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::servers::{closed_port, push, served};
use crate::support::{nix_available, require_that, Harness, Run};

const TLS_ENV: [&str; 5] = [
    "GIT_SSL_CAINFO",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NIX_SSL_CERT_FILE",
    "CURL_CA_BUNDLE",
];
const NGINX: &str = "/usr/sbin/nginx";
const FCGIWRAP: &str = "/usr/sbin/fcgiwrap";

pub(crate) fn tools_available() -> bool {
    nix_available()
        && require_that(
            "nginx (Debian nginx-light)",
            Path::new(NGINX).exists() || which("nginx").is_some(),
        )
        && require_that(
            "fcgiwrap (Debian fcgiwrap)",
            Path::new(FCGIWRAP).exists() || which("fcgiwrap").is_some(),
        )
        && require_that("openssl (Debian openssl)", which("openssl").is_some())
}

fn which(tool: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!p.is_empty()).then(|| PathBuf::from(p))
}

fn program(fixed: &str, name: &str) -> PathBuf {
    if Path::new(fixed).exists() {
        fixed.into()
    } else {
        which(name).unwrap_or_else(|| name.into())
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA, and a server certificate signed by it for `names` (`DNS:x,IP:y`).
pub(crate) struct Pki {
    dir: PathBuf,
}

impl Pki {
    pub(crate) fn new(dir: PathBuf) -> Pki {
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=homelab test CA",
            ],
        );
        Pki { dir }
    }

    pub(crate) fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Returns (certificate, key).
    pub(crate) fn server(&self, name: &str, san: &str) -> (PathBuf, PathBuf) {
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(&ext, format!("subjectAltName={san}\n")).unwrap();
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=homelab git",
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
            ]
            .into_iter()
            .chain([ext.to_str().unwrap()])
            .collect::<Vec<_>>(),
        );
        (self.dir.join(pem), self.dir.join(key))
    }

    /// A certificate for localhost and 127.0.0.1, signed by the CA, that becomes valid
    /// only tomorrow: what a Pi whose clock is a day behind sees (openssl 3.0's CLI cannot
    /// set a start date, so it is made with the openssl crate). Returns (certificate, key).
    fn server_valid_from_tomorrow(&self, name: &str) -> (PathBuf, PathBuf) {
        use openssl::asn1::Asn1Time;
        use openssl::bn::BigNum;
        use openssl::hash::MessageDigest;
        use openssl::pkey::PKey;
        use openssl::rsa::Rsa;
        use openssl::x509::extension::SubjectAlternativeName;
        use openssl::x509::{X509NameBuilder, X509};
        let ca = X509::from_pem(&std::fs::read(self.ca()).unwrap()).unwrap();
        let ca_key =
            PKey::private_key_from_pem(&std::fs::read(self.dir.join("ca.key")).unwrap()).unwrap();
        let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
        let mut subject = X509NameBuilder::new().unwrap();
        subject.append_entry_by_text("CN", "homelab git").unwrap();
        let subject = subject.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        let serial = BigNum::from_u32(4242).unwrap().to_asn1_integer().unwrap();
        b.set_serial_number(&serial).unwrap();
        b.set_subject_name(&subject).unwrap();
        b.set_issuer_name(ca.subject_name()).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
            .unwrap();
        let san = SubjectAlternativeName::new()
            .dns("localhost")
            .ip("127.0.0.1")
            .build(&b.x509v3_context(Some(&ca), None))
            .unwrap();
        b.append_extension(san).unwrap();
        b.sign(&ca_key, MessageDigest::sha256()).unwrap();
        let (pem, key_file) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&pem, b.build().to_pem().unwrap()).unwrap();
        std::fs::write(&key_file, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        (pem, key_file)
    }
}

/// nginx (one process, as root) with one TLS server per certificate, all serving the
/// repositories under `root` through `git http-backend`, Basic auth required.
pub(crate) struct Nginx {
    nginx: Child,
    fcgi: Child,
    ports: Vec<u16>,
    log: PathBuf,
}

/// One nginx `server`: where it listens, its certificate and key (`None`: plain http),
/// and what its `location /` does first (e.g. `return 301 …;`: nginx's rewrite phase
/// runs before its Basic auth). `auth`: Basic auth is required to reach git.
pub(crate) struct Site {
    pub ip: &'static str,
    pub port: u16,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub first: String,
    pub auth: bool,
}

impl Nginx {
    fn start(dir: &Path, root: &Path, certs: &[(PathBuf, PathBuf)], token: &str) -> Nginx {
        let sites: Vec<Site> = certs
            .iter()
            .map(|cert| Site {
                ip: "127.0.0.1",
                port: closed_port(),
                tls: Some(cert.clone()),
                first: String::new(),
                auth: true,
            })
            .collect();
        Nginx::start_sites(dir, root, &sites, &[("homelab-agent", token)])
    }

    /// `users`: (name, password) pairs Basic auth accepts.
    pub(crate) fn start_sites(
        dir: &Path,
        root: &Path,
        sites: &[Site],
        users: &[(&str, &str)],
    ) -> Nginx {
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let socket = dir.join("fcgi.sock");
        let fcgi = Command::new(program(FCGIWRAP, "fcgiwrap"))
            .arg("-s")
            .arg(format!("unix:{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("fcgiwrap");
        let mut htpasswd = String::new();
        for (user, password) in users {
            let hash = Command::new("openssl")
                .args(["passwd", "-apr1", password])
                .output()
                .expect("openssl passwd");
            htpasswd.push_str(&format!(
                "{user}:{}\n",
                String::from_utf8_lossy(&hash.stdout).trim()
            ));
        }
        std::fs::write(dir.join("htpasswd"), htpasswd).unwrap();
        let backend = format!(
            "{}/git-http-backend",
            crate::support::git_out(root, &["--exec-path"])
        );
        let d = dir.display();
        let mut servers = String::new();
        let mut ports = Vec::new();
        for site in sites {
            let port = site.port;
            ports.push(port);
            let tls = match &site.tls {
                Some((cert, key)) => format!(
                    " ssl;\n ssl_certificate {};\n ssl_certificate_key {};\n",
                    cert.display(),
                    key.display()
                ),
                None => ";\n".to_string(),
            };
            let auth = if site.auth {
                format!("auth_basic \"git\";\n  auth_basic_user_file {d}/htpasswd;\n  ")
            } else {
                String::new()
            };
            servers.push_str(&format!(
                "server {{\n listen {}:{port}{tls} \
                 location / {{\n  {}\n  {auth}\
                 fastcgi_pass unix:{};\n  fastcgi_param SCRIPT_FILENAME {backend};\n  \
                 fastcgi_param GIT_PROJECT_ROOT {};\n  fastcgi_param GIT_HTTP_EXPORT_ALL \"\";\n  \
                 fastcgi_param PATH_INFO $uri;\n  fastcgi_param QUERY_STRING $query_string;\n  \
                 fastcgi_param REQUEST_METHOD $request_method;\n  fastcgi_param CONTENT_TYPE $content_type;\n  \
                 fastcgi_param CONTENT_LENGTH $content_length;\n  fastcgi_param REMOTE_USER $remote_user;\n }}\n}}\n",
                site.ip,
                site.first,
                socket.display(),
                root.display(),
            ));
        }
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 64; }}\nhttp {{\n \
             log_format tls '$server_addr:$server_port $scheme $ssl_protocol user=$remote_user auth=$http_authorization status=$status $request_method $uri';\n \
             access_log {d}/access.log tls;\n client_body_temp_path {d}/tmp/body;\n fastcgi_temp_path {d}/tmp/fastcgi;\n \
             proxy_temp_path {d}/tmp/proxy;\n uwsgi_temp_path {d}/tmp/uwsgi;\n scgi_temp_path {d}/tmp/scgi;\n{servers}}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let mut nginx = Command::new(program(NGINX, "nginx"))
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-e", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("nginx");
        let deadline = Instant::now() + Duration::from_secs(20);
        for site in sites {
            let port = &site.port;
            while std::net::TcpStream::connect((site.ip, *port)).is_err() {
                if let Ok(Some(status)) = nginx.try_wait() {
                    panic!(
                        "nginx exited ({status}): {}",
                        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                    );
                }
                assert!(Instant::now() < deadline, "nginx did not listen on {port}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Nginx {
            nginx,
            fcgi,
            ports,
            log: dir.join("access.log"),
        }
    }

    pub(crate) fn access_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        for child in [&mut self.nginx, &mut self.fcgi] {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
        }
    }
}

/// Runs the agent without any of the TLS environment variables.
pub(crate) fn agent(h: &Harness, args: &[&str]) -> Run {
    let mut cmd = h.command(args);
    for var in TLS_ENV {
        cmd.env_remove(var);
    }
    let started = Instant::now();
    let output = cmd.output().expect("run homelab-agent");
    Run {
        output,
        elapsed: started.elapsed(),
    }
}

struct Setup {
    h: Harness,
    bare: PathBuf,
    pki: Pki,
    nginx: Nginx,
}

const TOKEN: &str = "tls-token-0123";

fn setup() -> Setup {
    let (h, bare) = served();
    let srv = h.path("srv");
    let pki = Pki::new(h.path("pki"));
    let good = pki.server("good", "DNS:localhost,IP:127.0.0.1");
    let other = pki.server("other", "DNS:git.other.example");
    let nginx = Nginx::start(&h.path("nginx"), &srv, &[good, other], TOKEN);
    std::fs::write(h.path("token"), format!("{TOKEN}\n")).unwrap();
    Setup {
        h,
        bare,
        pki,
        nginx,
    }
}

fn source_extra(s: &Setup, ca: bool) -> String {
    let mut extra = format!("token_file = \"{}\"\n", s.h.path("token").display());
    if ca {
        extra.push_str(&format!("ca_file = \"{}\"\n", s.pki.ca().display()));
    }
    extra
}

/// `run --once` against `url` is refused as a configuration error (78) at the TLS
/// handshake, so no request carried the token; returns the run and the recorded error.
fn refused_at_handshake(s: &mut Setup, url: String, ca: bool) -> (Run, String) {
    s.h.url = url;
    s.h.source_extra = source_extra(s, ca);
    let run = agent(&s.h, &["run", "--once"]);
    run.expect(78);
    let log = s.nginx.access_log();
    assert!(!log.contains("user=homelab-agent"), "{log}");
    let error = s.h.status()["last_run"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (run, error)
}

#[test]
fn a_private_ca_in_ca_file_is_trusted_and_the_token_travels_over_tls() {
    if !tools_available() {
        return;
    }
    let mut s = setup();
    s.h.url = format!("https://127.0.0.1:{}/homelab.git", s.nginx.ports[0]);
    s.h.source_extra = source_extra(&s, true);
    agent(&s.h, &["run", "--once"]).expect(0);
    assert_eq!(s.h.profile_generation(), Some(1));
    s.h.host("pi1").content = "v2".into();
    s.h.commit("second");
    push(&s.h.repo, &s.bare);
    agent(&s.h, &["run", "--once"]).expect(0);
    assert_eq!(s.h.profile_generation(), Some(2));

    // The server saw the token (Basic auth, user homelab-agent) on TLS connections only.
    let log = s.nginx.access_log();
    let authed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("user=homelab-agent"))
        .collect();
    assert!(!authed.is_empty(), "no authenticated request:\n{log}");
    for line in &authed {
        assert!(
            line.contains(" https TLSv1.") && line.contains("auth=Basic "),
            "token not over TLS: {line}"
        );
    }
    // And the agent never wrote it anywhere.
    let status = agent(&s.h, &["status", "--json"]).stdout();
    assert!(!status.contains(TOKEN));
}

#[test]
fn an_unknown_ca_is_refused_and_says_so() {
    if !tools_available() {
        return;
    }
    let mut s = setup();
    let url = format!("https://127.0.0.1:{}/homelab.git", s.nginx.ports[0]);
    let (run, error) = refused_at_handshake(&mut s, url, false);
    assert!(
        error.contains("is not signed by a certificate authority this machine trusts")
            && error.contains("homelab test CA"),
        "{error}"
    );
    assert!(
        run.stderr()
            .contains("hint: if the server uses a private CA, set [source] ca_file"),
        "{}",
        run.stderr()
    );
    assert_eq!(s.h.profile_generation(), None);
}

#[test]
fn a_wrong_host_name_is_refused_and_says_so() {
    if !tools_available() {
        return;
    }
    let mut s = setup();
    // A host name the certificate is not for. This relies on `localhost` resolving, as
    // on every Debian install (/etc/hosts); say so rather than fail as a network error.
    use std::net::ToSocketAddrs;
    assert!(
        ("localhost", 1).to_socket_addrs().is_ok(),
        "this test needs `localhost` to resolve: add `127.0.0.1 localhost` to /etc/hosts"
    );
    let url = format!("https://localhost:{}/homelab.git", s.nginx.ports[1]);
    let (_, error) = refused_at_handshake(&mut s, url, true);
    assert!(
        error.contains("does not match the host name localhost")
            && error.contains("git.other.example"),
        "{error}"
    );
}

/// Without `ca_file`, the system's trust store decides: OpenSSL's default paths, which
/// `SSL_CERT_FILE` replaces when set (README "HTTPS and private CAs"). Pointed at the test
/// CA, the same server is trusted; the default store (the unknown-CA test) refuses it.
#[test]
fn the_system_trust_store_decides_without_ca_file() {
    if !tools_available() {
        return;
    }
    let mut s = setup();
    s.h.url = format!("https://127.0.0.1:{}/homelab.git", s.nginx.ports[0]);
    s.h.source_extra = source_extra(&s, false);
    let mut cmd = s.h.command(&["run", "--once"]);
    for var in TLS_ENV {
        cmd.env_remove(var);
    }
    let output = cmd.env("SSL_CERT_FILE", s.pki.ca()).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(s.h.profile_generation(), Some(1));
}

/// An IP address the certificate does not name (it names only git.other.example): refused
/// as a wrong name, like a host name, before any token is sent.
#[test]
fn an_ip_address_the_certificate_does_not_name_is_refused_and_says_so() {
    if !tools_available() {
        return;
    }
    let mut s = setup();
    s.h.url = format!("https://127.0.0.1:{}/homelab.git", s.nginx.ports[1]);
    s.h.source_extra = source_extra(&s, true);
    let run = agent(&s.h, &["run", "--once"]);
    run.expect(78);
    let error = s.h.status()["last_run"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("does not match the host name 127.0.0.1")
            && error.contains("git.other.example"),
        "{error}"
    );
    assert!(!s.nginx.access_log().contains("user=homelab-agent"));
}

#[test]
fn a_token_is_never_sent_over_plain_http_to_another_host() {
    let mut h = Harness::new();
    h.url = "http://git.example.org/homelab.git".into();
    std::fs::write(h.path("token"), "t\n").unwrap();
    h.source_extra = format!("token_file = \"{}\"\n", h.path("token").display());
    let run = agent(&h, &["config", "check"]);
    run.expect(78);
    let err = run.stderr() + &run.stdout();
    assert!(
        err.contains("source.token_file")
            && err.contains("refusing to send a token over plain http://"),
        "{err}"
    );
    // A CA file means nothing without https.
    h.source_extra = "ca_file = \"/etc/ssl/ca.pem\"\n".into();
    let run = agent(&h, &["config", "check"]);
    run.expect(78);
    assert!((run.stderr() + &run.stdout()).contains("source.ca_file"));
}

/// A server on the https port that answers in plain text (a misconfigured proxy, the
/// wrong port): the TLS handshake fails, which is the network's or the server's
/// problem, never the commit's; the error names the handshake and the server.
#[test]
fn an_https_remote_that_does_not_speak_tls_is_unreachable_and_blames_nothing() {
    let mut h = Harness::new();
    h.host("pi1").content = "v1".into();
    h.commit("first");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let _ = std::io::Write::write_all(
                &mut conn,
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
            );
        }
    });
    h.url = format!("https://127.0.0.1:{port}/homelab.git");
    let run = agent(&h, &["run", "--once"]);
    run.expect(75);
    let status = h.status();
    let error = status["last_run"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "TLS handshake with 127.0.0.1:{port} failed: wrong version number"
        )),
        "{error}"
    );
    assert!(status["bad_commit"].is_null(), "{status}");
}

/// Nothing listens on the https port: a network failure naming the address.
#[test]
fn a_closed_https_port_is_unreachable_and_says_where() {
    let mut h = Harness::new();
    h.host("pi1").content = "v1".into();
    h.commit("first");
    let port = closed_port();
    h.url = format!("https://127.0.0.1:{port}/homelab.git");
    let run = agent(&h, &["run", "--once"]);
    run.expect(75);
    let error = h.status()["last_run"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains(&format!("failed to connect to 127.0.0.1:{port}")),
        "{error}"
    );
}

/// A certificate that is not valid yet (the clock of a Pi without a real-time clock,
/// before NTP): transient, retried, never the commit's fault; the error says so from the
/// certificate's own dates, through the real TLS stream and a real server.
#[test]
fn a_certificate_not_valid_yet_is_a_clock_problem_and_retried() {
    if !tools_available() {
        return;
    }
    let (mut h, _bare) = served();
    let pki = Pki::new(h.path("pki"));
    let future = pki.server_valid_from_tomorrow("future");
    let nginx = Nginx::start(&h.path("nginx"), &h.path("srv"), &[future], TOKEN);
    h.url = format!("https://127.0.0.1:{}/homelab.git", nginx.ports[0]);
    h.source_extra = format!("ca_file = \"{}\"\n", pki.ca().display());
    let run = agent(&h, &["run", "--once"]);
    run.expect(75);
    let status = h.status();
    let error = status["last_run"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("is not valid before") && error.contains("this machine's clock is earlier"),
        "{error}"
    );
    assert!(
        run.stderr()
            .contains("hint: this machine's clock is probably wrong"),
        "{}",
        run.stderr()
    );
    assert!(status["bad_commit"].is_null(), "{status}");
    assert_eq!(h.profile_generation(), None);
}
