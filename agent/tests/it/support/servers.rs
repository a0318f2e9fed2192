//! Real servers on 127.0.0.1 for the integration tests: `git daemon`, smart HTTP through
//! `git http-backend` (with an optional Basic-auth token), OpenSSH's `sshd`, and a
//! scripted HTTP server for health checks. Each stops when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until_listening(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(e) = child.stderr.as_mut() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("{what} exited ({status}) before listening on {port}: {err}");
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on port {port} within 20 s");
}

/// Kills a child's whole process group (`git daemon` and `sshd` fork).
fn stop(child: &mut Child) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = child.wait();
}

// ---- git daemon -------------------------------------------------------------------------

pub struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    pub fn start(base_path: &Path) -> GitDaemon {
        GitDaemon::spawn(base_path, None)
    }

    /// Logs every connection and request (`--verbose`) to the file `log`: one line
    /// "Request upload-pack for ..." per listing of refs or fetch.
    pub fn start_logged(base_path: &Path, log: &Path) -> GitDaemon {
        GitDaemon::spawn(base_path, Some(log))
    }

    fn spawn(base_path: &Path, log: Option<&Path>) -> GitDaemon {
        let port = closed_port();
        let mut command = Command::new("git");
        command.args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
        ]);
        match log {
            Some(log) => command
                .arg("--verbose")
                .stderr(std::fs::File::create(log).expect("git daemon log")),
            None => command.stderr(Stdio::piped()),
        };
        let mut child = command
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base_path.display()))
            .arg(base_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("git daemon");
        wait_until_listening(port, &mut child, "git daemon");
        GitDaemon { child, port }
    }

    pub fn url(&self, repo_rel: &str) -> String {
        format!("git://127.0.0.1:{}/{repo_rel}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

// ---- a tiny HTTP/1.1 server (one thread per connection, Connection: close) --------------

struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut request = Request {
        method,
        path: String::new(),
        query: String::new(),
        headers,
        body: Vec::new(),
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    request.path = path.to_string();
    request.query = query.to_string();
    if request
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            request.body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(len) = request
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        request.body = vec![0; len];
        reader.read_exact(&mut request.body).ok()?;
    }
    Some(request)
}

fn respond(mut stream: &TcpStream, status: &str, headers: &[(String, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        if !k.eq_ignore_ascii_case("content-length") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

/// Accepts connections on a thread until `stop` is set; `handle` runs per connection.
fn serve(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = stopped.clone();
    let handle = Arc::new(handle);
    thread::spawn(move || {
        for stream in listener.incoming() {
            if flag.load(Ordering::SeqCst) {
                break;
            }
            if let Ok(stream) = stream {
                let handle = handle.clone();
                thread::spawn(move || handle(stream));
            }
        }
    });
    (port, stopped)
}

fn shutdown(port: u16, stopped: &AtomicBool) {
    stopped.store(true, Ordering::SeqCst);
    let _ = TcpStream::connect(("127.0.0.1", port)); // wake the accept loop
}

// ---- smart HTTP git ---------------------------------------------------------------------

pub struct GitHttp {
    port: u16,
    stopped: Arc<AtomicBool>,
}

impl GitHttp {
    /// Serves the repositories under `root`; with a token, HTTP Basic auth whose password
    /// is the token is required (any user name).
    pub fn start(root: &Path, token: Option<&str>) -> GitHttp {
        let root = root.to_path_buf();
        let token = token.map(str::to_string);
        let (port, stopped) = serve(move |stream| {
            let Some(request) = read_request(&stream) else {
                return;
            };
            if let Some(token) = &token {
                if !authorized(&request, token) {
                    let h = vec![(
                        "WWW-Authenticate".to_string(),
                        "Basic realm=\"git\"".to_string(),
                    )];
                    return respond(
                        &stream,
                        "401 Unauthorized",
                        &h,
                        b"authentication required\n",
                    );
                }
            }
            let (status, headers, body) = http_backend(&root, &request);
            respond(&stream, &status, &headers, &body);
        });
        GitHttp { port, stopped }
    }

    pub fn url(&self, repo_rel: &str) -> String {
        format!("http://127.0.0.1:{}/{repo_rel}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        shutdown(self.port, &self.stopped);
    }
}

fn authorized(request: &Request, token: &str) -> bool {
    let Some(value) = request
        .header("authorization")
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(value.trim()) else {
        return false;
    };
    let text = String::from_utf8_lossy(&decoded);
    text.split_once(':')
        .is_some_and(|(_, password)| password == token)
}

/// Runs `git http-backend` as a CGI program for one request.
fn http_backend(root: &Path, request: &Request) -> (String, Vec<(String, String)>, Vec<u8>) {
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &request.method)
        .env("PATH_INFO", &request.path)
        .env("QUERY_STRING", &request.query)
        .env("CONTENT_LENGTH", request.body.len().to_string())
        .env("REMOTE_USER", "test")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(t) = request.header("content-type") {
        cmd.env("CONTENT_TYPE", t);
    }
    if let Some(e) = request.header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", e);
    }
    if let Some(p) = request.header("git-protocol") {
        cmd.env("GIT_PROTOCOL", p);
    }
    let mut child = cmd.spawn().expect("git http-backend");
    let mut stdin = child.stdin.take().unwrap();
    let body = request.body.clone();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let output = child.wait_with_output().expect("git http-backend output");
    let _ = writer.join();
    let out = output.stdout;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let Some((end, sep)) = split else {
        return ("500 Internal Server Error".into(), Vec::new(), out);
    };
    let mut status = "200 OK".to_string();
    let mut headers = Vec::new();
    for line in String::from_utf8_lossy(&out[..end]).lines() {
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("status") {
                status = v.trim().to_string();
            } else {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    (status, headers, out[end + sep..].to_vec())
}

// ---- scripted health endpoint -----------------------------------------------------------

pub struct HealthServer {
    port: u16,
    stopped: Arc<AtomicBool>,
    script: Arc<Mutex<Vec<String>>>,
    requests: Arc<AtomicUsize>,
}

impl HealthServer {
    /// `script`: comma-separated answers, one per request, the last repeating: `200`,
    /// `500`, `hang` (never answers), `body:200:text`.
    pub fn start(script: &str) -> HealthServer {
        let entries = Arc::new(Mutex::new(parse_script(script)));
        let requests = Arc::new(AtomicUsize::new(0));
        let (entries2, requests2) = (entries.clone(), requests.clone());
        let (port, stopped) = serve(move |stream| {
            if read_request(&stream).is_none() {
                return;
            }
            let n = requests2.fetch_add(1, Ordering::SeqCst);
            let entry = {
                let script = entries2.lock().unwrap();
                script[n.min(script.len() - 1)].clone()
            };
            answer(&stream, &entry);
        });
        HealthServer {
            port,
            stopped,
            script: entries,
            requests,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Replaces the script; the request count is kept (entries are indexed by it).
    pub fn set_script(&self, script: &str) {
        *self.script.lock().unwrap() = parse_script(script);
        self.requests.store(0, Ordering::SeqCst);
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        shutdown(self.port, &self.stopped);
    }
}

fn parse_script(script: &str) -> Vec<String> {
    let entries: Vec<String> = script
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    assert!(!entries.is_empty(), "empty health server script");
    entries
}

fn answer(stream: &TcpStream, entry: &str) {
    if entry == "hang" {
        // Never answer; wait (bounded) for the client to give up and close.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        let _ = (&*stream).read(&mut [0u8; 1]);
        return;
    }
    let (code, body) = match entry.strip_prefix("body:") {
        Some(rest) => rest.split_once(':').unwrap_or((rest, "")),
        None => (entry, "ok"),
    };
    let status = match code {
        "200" => "200 OK",
        "500" => "500 Internal Server Error",
        "503" => "503 Service Unavailable",
        "404" => "404 Not Found",
        other => panic!("unknown health script entry {other:?}"),
    };
    respond(
        stream,
        status,
        &[("Content-Type".into(), "text/plain".into())],
        body.as_bytes(),
    );
}

// ---- sshd -------------------------------------------------------------------------------

pub fn sshd_available() -> bool {
    // ssh-keygen has no --version: that it starts at all is the test.
    Path::new("/usr/sbin/sshd").exists() && Command::new("ssh-keygen").arg("-?").output().is_ok()
}

/// An ed25519 key without passphrase at `path`; returns the public key line.
pub fn ssh_keygen(path: &Path) -> String {
    let status = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "homelab-agent-test",
            "-f",
        ])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

pub struct Sshd {
    child: Child,
    port: u16,
    host_pub: String,
}

impl Sshd {
    /// sshd on 127.0.0.1 accepting `authorized_pubkey` for the current user.
    pub fn start(dir: &Path, authorized_pubkey: &str) -> Sshd {
        std::fs::create_dir_all(dir).unwrap();
        let host_key = dir.join("host_ed25519");
        let host_pub = ssh_keygen(&host_key);
        std::fs::write(
            dir.join("authorized_keys"),
            format!("{authorized_pubkey}\n"),
        )
        .unwrap();
        let port = closed_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 PermitRootLogin prohibit-password\nLogLevel VERBOSE\n",
                host_key.display(),
                dir.join("sshd.pid").display(),
                dir.join("authorized_keys").display()
            ),
        )
        .unwrap();
        let _ = std::fs::create_dir_all("/run/sshd"); // privilege separation directory
        let mut child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("sshd");
        wait_until_listening(port, &mut child, "sshd");
        // Drain sshd's log so it never blocks on a full pipe.
        let mut stderr = child.stderr.take().unwrap();
        thread::spawn(move || {
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        });
        Sshd {
            child,
            port,
            host_pub,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `[127.0.0.1]:PORT ssh-ed25519 AAAA…`, for a known_hosts file.
    pub fn known_hosts_line(&self) -> String {
        let mut fields = self.host_pub.split_whitespace();
        let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
        format!("[127.0.0.1]:{} {kind} {key}", self.port)
    }

    pub fn url(&self, abs_repo_path: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            current_user(),
            self.port,
            abs_repo_path.display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .ok()
        .flatten()
        .map_or("root".into(), |u| u.name)
}

/// A harness with pi1 at "v1" committed, its repository also served as a bare
/// `srv/homelab.git` (returned).
pub fn served() -> (super::Harness, PathBuf) {
    let mut h = super::Harness::new();
    h.host("pi1").content = "v1".into();
    h.commit("first");
    let srv = h.path("srv");
    std::fs::create_dir_all(&srv).unwrap();
    let bare = bare_clone(&h.repo, &srv, "homelab.git");
    (h, bare)
}

/// A bare clone of `repo` at `root/name`, for the servers to serve.
pub fn bare_clone(repo: &Path, root: &Path, name: &str) -> PathBuf {
    let target = root.join(name);
    let status = Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(repo)
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success());
    target
}

/// Pushes `repo`'s main branch to the bare repository `bare`.
pub fn push(repo: &Path, bare: &Path) {
    let status = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["push", "-q", "-f"])
        .arg(bare)
        .arg("main:main")
        .status()
        .unwrap();
    assert!(status.success());
}
