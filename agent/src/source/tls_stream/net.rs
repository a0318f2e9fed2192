//! The TLS stream's network side, in safe Rust: the TLS context (made at the first
//! `https://` connection of the process), the TCP connection with the agent's socket
//! timeouts, and a failed handshake in words.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Mutex;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};

use super::super::git::{CONNECT_TIMEOUT, IO_TIMEOUT};

/// The `[source] ca_file` trusted beside the system's store, set before a connection.
static CA_FILE: Mutex<Option<PathBuf>> = Mutex::new(None);
/// The TLS context, made at the first connection and kept for the process, with the
/// CA file it was made for.
static CONNECTOR: Mutex<Option<(Option<PathBuf>, SslConnector)>> = Mutex::new(None);

/// Trusts `path` (PEM, checked by the caller) beside the system's store for `https://`.
pub fn trust_ca_file(path: PathBuf) {
    *CA_FILE.lock().unwrap_or_else(|p| p.into_inner()) = Some(path);
}

/// The CA file trusted beside the system's store, if any.
pub fn ca_file() -> Option<PathBuf> {
    CA_FILE.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

pub(super) fn connector() -> Result<SslConnector, String> {
    let ca_file = ca_file();
    let mut made = CONNECTOR.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((for_file, connector)) = made.as_ref() {
        if *for_file == ca_file {
            return Ok(connector.clone());
        }
    }
    // The builder starts from OpenSSL's default trust paths (and its configuration,
    // e.g. Debian's minimum protocol and security level).
    let mut builder = SslConnector::builder(SslMethod::tls_client())
        .map_err(|e| format!("setting up TLS: {e}"))?;
    if let Some(path) = &ca_file {
        builder
            .set_ca_file(path)
            .map_err(|e| format!("reading [source] ca_file {}: {e}", path.display()))?;
    }
    // Verified after the handshake (see `connect`), so a refused certificate still
    // reaches libgit2's certificate callback, as with libgit2's own stream.
    builder.set_verify(SslVerifyMode::NONE);
    let connector = builder.build();
    *made = Some((ca_file, connector.clone()));
    Ok(connector)
}

/// The socket's read or write timeout ended the handshake.
pub(super) fn handshake_timed_out(e: &openssl::ssl::HandshakeError<TcpStream>) -> bool {
    use std::io::ErrorKind::{TimedOut, WouldBlock};
    match e {
        openssl::ssl::HandshakeError::Failure(mid)
        | openssl::ssl::HandshakeError::WouldBlock(mid) => mid
            .error()
            .io_error()
            .is_some_and(|io| matches!(io.kind(), TimedOut | WouldBlock)),
        openssl::ssl::HandshakeError::SetupFailure(_) => false,
    }
}

/// What went wrong in a handshake, in OpenSSL's reason words (e.g. "wrong version
/// number": the server does not speak TLS on that port) or the socket's error.
pub(super) fn handshake_reason(e: &openssl::ssl::HandshakeError<TcpStream>) -> String {
    use openssl::ssl::HandshakeError;
    let HandshakeError::Failure(mid) = e else {
        return e.to_string();
    };
    let error = mid.error();
    if let Some(io) = error.io_error() {
        return io.to_string();
    }
    let reasons: Vec<&str> = error
        .ssl_error()
        .map(|stack| stack.errors().iter().filter_map(|e| e.reason()).collect())
        .unwrap_or_default();
    if reasons.is_empty() {
        "the connection closed during the handshake".to_string()
    } else {
        reasons.join("; ")
    }
}

pub(super) fn tcp_connect(host: &str, port: &str) -> Result<TcpStream, String> {
    let port: u16 = port
        .parse()
        .map_err(|_| format!("TLS stream: port {port:?} is not a number"))?;
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("failed to resolve address for {host}: {e}"))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(tcp) => {
                let _ = tcp.set_read_timeout(Some(IO_TIMEOUT));
                let _ = tcp.set_write_timeout(Some(IO_TIMEOUT));
                return Ok(tcp);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => format!("failed to connect to {host}:{port}: {e}"),
        None => format!("failed to resolve address for {host}: no address"),
    })
}
