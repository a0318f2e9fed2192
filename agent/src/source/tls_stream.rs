//! TLS for libgit2's `https://`, set up only by a run that speaks it (issue 13).
//!
//! libgit2 built with its own OpenSSL stream initialises OpenSSL and builds a TLS
//! context the moment it is initialised: about 3 ms of CPU on every poll (a Pi's ten
//! times that), even when the remote is `git://` or `ssh://`. So libgit2 is built
//! without it (git2 without its `https` feature) and given this stream instead, through
//! libgit2's stream registry (`git_stream_register`, include/git2/sys/stream.h). Its
//! TLS context is made at the first `https://` connection of the process, so a poll
//! over `git://` or `ssh://` never touches TLS.
//!
//! The stream does what libgit2's own OpenSSL stream did: a TCP connection with the
//! agent's socket timeouts, a TLS handshake with the server name, verification against
//! the system's trust store (OpenSSL's default paths, `SSL_CERT_FILE`/`SSL_CERT_DIR`)
//! plus `[source] ca_file`, and the host name checked against the certificate. A refused
//! certificate is reported as `GIT_ECERTIFICATE` and the certificate is handed to
//! libgit2, which passes it to the certificate callback (source/git.rs keeps it and
//! [`super::tls::diagnose`] says why). Until the server is verified nothing is read or
//! written. No HTTP CONNECT proxy (the agent never configures one).
//!
//! It is also the last point before bytes leave: a request carrying credentials to
//! another server than `[source] url`'s is refused here, and response heads are looked at
//! for a redirect to plain http (source/origin.rs).
//!
//! Every callback runs inside [`guarded`]: a panic never unwinds into C (that is
//! undefined behaviour); it becomes libgit2's error code with the reason recorded. Every
//! pointer libgit2 hands over is checked for null before use. The mirror of libgit2's
//! structs is checked against the header libgit2-sys vendors (tests.rs), and
//! agent/Cargo.toml pins libgit2-sys exactly, so the layout cannot drift unseen.

// The crate denies unsafe code; this module is libgit2's stream interface (raw pointers
// and `extern "C"` callbacks), which cannot be written without it.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Once;

use libgit2_sys as raw;
use openssl::ssl::SslStream;
use openssl::x509::X509VerifyResult;

use super::git::{CONNECT_TIMEOUT, IO_TIMEOUT};
use super::origin;

mod net;
pub use net::{ca_file, trust_ca_file};
use net::{connector, handshake_reason, handshake_timed_out, tcp_connect};

// The bit-field `encrypted : 1, proxy_support : 1` below is laid out for little-endian
// targets (x86_64, aarch64: what the agent is built for).
#[cfg(not(target_endian = "little"))]
compile_error!("source/tls_stream.rs lays out git_stream's bit-field for little-endian targets");

/// `git_stream` (include/git2/sys/stream.h, `GIT_STREAM_VERSION` 1).
#[repr(C)]
struct RawStream {
    version: c_int,
    /// Bit 0: `encrypted`; bit 1: `proxy_support`.
    flags: c_uint,
    timeout: c_int,
    connect_timeout: c_int,
    connect: unsafe extern "C" fn(*mut RawStream) -> c_int,
    certificate: unsafe extern "C" fn(*mut *mut raw::git_cert, *mut RawStream) -> c_int,
    set_proxy: Option<unsafe extern "C" fn(*mut RawStream, *const c_void) -> c_int>,
    read: unsafe extern "C" fn(*mut RawStream, *mut c_void, usize) -> isize,
    write: unsafe extern "C" fn(*mut RawStream, *const c_char, usize, c_int) -> isize,
    close: unsafe extern "C" fn(*mut RawStream) -> c_int,
    free: unsafe extern "C" fn(*mut RawStream),
}

/// `git_stream_registration`.
#[repr(C)]
struct Registration {
    version: c_int,
    init: unsafe extern "C" fn(*mut *mut RawStream, *const c_char, *const c_char) -> c_int,
    wrap: Option<unsafe extern "C" fn(*mut *mut RawStream, *mut RawStream, *const c_char) -> c_int>,
}

const STREAM_VERSION: c_int = 1;
const ENCRYPTED: c_uint = 1;
/// `GIT_STREAM_TLS`.
const STREAM_TLS: c_int = 2;

extern "C" {
    fn git_stream_register(kind: c_int, registration: *mut Registration) -> c_int;
}

/// One connection. `raw` comes first: libgit2 holds a pointer to it.
#[repr(C)]
struct Stream {
    raw: RawStream,
    host: String,
    port: String,
    tls: Option<SslStream<TcpStream>>,
    /// The server's certificate (DER) and libgit2's view of it.
    der: Vec<u8>,
    cert: raw::git_cert_x509,
    verified: bool,
    /// The head of the response to the last request written, while it arrives: read
    /// for a redirect to plain http ([`origin::saw_response_head`]).
    head: Option<Vec<u8>>,
}

/// The most of a response head kept to look for its `Location`.
const HEAD_CAP: usize = 16 * 1024;

/// Initialises libgit2 with the agent's socket timeouts and registers this stream for
/// `https://`. Cheap, once per process; no TLS is set up here.
pub fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        super::git::init_timeouts();
        let registration = Box::leak(Box::new(Registration {
            version: STREAM_VERSION,
            init: stream_init,
            wrap: None,
        }));
        // SAFETY: libgit2 is initialised (above); it copies the registration, which
        // also lives for the process.
        let rc = unsafe { git_stream_register(STREAM_TLS, registration) };
        if rc != 0 {
            // Only an allocation failure can get here; https then fails with libgit2's
            // "there is no TLS stream available", which is reported as usual.
            log::warn!("registering the TLS stream with libgit2 failed ({rc})");
        }
    });
}

unsafe extern "C" fn stream_init(
    out: *mut *mut RawStream,
    host: *const c_char,
    port: *const c_char,
) -> c_int {
    guarded(-1, || unsafe { init(out, host, port) })
}

/// # Safety
/// `out` is null or writable; `host` and `port` are null or NUL-terminated.
unsafe fn init(out: *mut *mut RawStream, host: *const c_char, port: *const c_char) -> c_int {
    if out.is_null() || host.is_null() || port.is_null() {
        return fail(
            raw::GIT_ERROR_INVALID as c_int,
            "TLS stream: missing host or port",
        );
    }
    // SAFETY: libgit2 passes NUL-terminated strings it owns for this call.
    let (host, port) = unsafe {
        (
            CStr::from_ptr(host).to_string_lossy().into_owned(),
            CStr::from_ptr(port).to_string_lossy().into_owned(),
        )
    };
    let stream = Box::new(Stream {
        raw: RawStream {
            version: STREAM_VERSION,
            flags: ENCRYPTED,
            timeout: IO_TIMEOUT.as_millis() as c_int,
            connect_timeout: CONNECT_TIMEOUT.as_millis() as c_int,
            connect: stream_connect,
            certificate: stream_certificate,
            set_proxy: None,
            read: stream_read,
            write: stream_write,
            close: stream_close,
            free: stream_free,
        },
        host,
        port,
        tls: None,
        der: Vec::new(),
        cert: raw::git_cert_x509 {
            parent: raw::git_cert {
                cert_type: raw::GIT_CERT_X509,
            },
            data: std::ptr::null_mut(),
            len: 0,
        },
        verified: false,
        head: None,
    });
    // SAFETY: `out` is libgit2's pointer to fill; it frees the stream with `free`.
    unsafe { *out = Box::into_raw(stream).cast() };
    0
}

/// The stream behind libgit2's pointer; `None` (with libgit2's error set) for null.
///
/// # Safety
/// `raw` must be null or come from [`stream_init`] and not be freed yet.
unsafe fn stream<'a>(raw: *mut RawStream) -> Option<&'a mut Stream> {
    if raw.is_null() {
        fail(raw::GIT_ERROR_INVALID as c_int, "TLS stream: no stream");
        return None;
    }
    // SAFETY: `Stream` is `repr(C)` with `raw` first, so the pointers are the same.
    Some(unsafe { &mut *raw.cast::<Stream>() })
}

/// Runs a callback's body. A panic must not unwind into libgit2's C frames (undefined
/// behaviour): it is logged, set as libgit2's error (so the fetch fails saying why) and
/// the callback returns `failed`.
fn guarded<T>(failed: T, body: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(done) => done,
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("no message");
            let message = format!(
                "TLS stream: internal error (panic: {why}); this is a bug in homelab-agent, please report it"
            );
            log::error!("{message}");
            // Caught again: a panic while recording must not unwind either.
            let _ = std::panic::catch_unwind(|| fail(raw::GIT_ERROR_CALLBACK as c_int, &message));
            failed
        }
    }
}

unsafe extern "C" fn stream_connect(raw: *mut RawStream) -> c_int {
    guarded(-1, || unsafe { connect(raw) })
}

/// # Safety
/// `raw` is null or the stream libgit2 got from [`stream_init`].
unsafe fn connect(raw: *mut RawStream) -> c_int {
    // SAFETY: libgit2 calls with the stream it got from `stream_init`.
    let Some(s) = (unsafe { stream(raw) }) else {
        return -1;
    };
    let tcp = match tcp_connect(&s.host, &s.port) {
        Ok(tcp) => tcp,
        Err(message) => return fail(raw::GIT_ERROR_NET as c_int, &message),
    };
    let connector = match connector() {
        Ok(c) => c,
        Err(message) => return fail(raw::GIT_ERROR_SSL as c_int, &message),
    };
    let config = match connector.configure() {
        Ok(c) => c,
        Err(e) => return fail(raw::GIT_ERROR_SSL as c_int, &format!("setting up TLS: {e}")),
    };
    let tls = match config.connect(&s.host, tcp) {
        Ok(tls) => tls,
        Err(e) if handshake_timed_out(&e) => {
            let message = format!(
                "TLS handshake with {}:{} timed out after {}s (the server accepted the connection but never answered)",
                s.host,
                s.port,
                IO_TIMEOUT.as_secs()
            );
            return fail_code(
                raw::GIT_ERROR_NET as c_int,
                &message,
                raw::GIT_TIMEOUT as c_int,
            );
        }
        Err(e) => {
            let message = format!(
                "TLS handshake with {}:{} failed: {}",
                s.host,
                s.port,
                handshake_reason(&e)
            );
            return fail(raw::GIT_ERROR_SSL as c_int, &message);
        }
    };
    if let Some(cert) = tls.ssl().peer_certificate() {
        s.der = cert.to_der().unwrap_or_default();
    }
    s.cert.data = s.der.as_mut_ptr().cast();
    s.cert.len = s.der.len();
    let verdict = tls.ssl().verify_result();
    s.tls = Some(tls);
    if s.der.is_empty() {
        return fail_code(
            raw::GIT_ERROR_SSL as c_int,
            "the server presented no certificate",
            raw::GIT_ECERTIFICATE as c_int,
        );
    }
    if verdict != X509VerifyResult::OK {
        let message = format!("the SSL certificate is invalid: {}", verdict.error_string());
        return fail_code(
            raw::GIT_ERROR_SSL as c_int,
            &message,
            raw::GIT_ECERTIFICATE as c_int,
        );
    }
    s.verified = true;
    0
}

unsafe extern "C" fn stream_certificate(
    out: *mut *mut raw::git_cert,
    raw: *mut RawStream,
) -> c_int {
    guarded(-1, || unsafe { certificate(out, raw) })
}

/// # Safety
/// `out` is null or writable; `raw` as in [`connect`].
unsafe fn certificate(out: *mut *mut raw::git_cert, raw: *mut RawStream) -> c_int {
    if out.is_null() {
        return fail(
            raw::GIT_ERROR_INVALID as c_int,
            "TLS stream: no certificate pointer",
        );
    }
    // SAFETY: as in `connect`.
    let Some(s) = (unsafe { stream(raw) }) else {
        return -1;
    };
    if s.der.is_empty() {
        return fail(
            raw::GIT_ERROR_SSL as c_int,
            "the server presented no certificate",
        );
    }
    // SAFETY: `out` is libgit2's to fill; the certificate lives as long as the stream.
    unsafe { *out = (&mut s.cert as *mut raw::git_cert_x509).cast() };
    0
}

unsafe extern "C" fn stream_read(raw: *mut RawStream, data: *mut c_void, len: usize) -> isize {
    guarded(-1, || unsafe { read(raw, data, len) })
}

/// # Safety
/// `raw` as in [`connect`]; `data` is null or has room for `len` bytes.
unsafe fn read(raw: *mut RawStream, data: *mut c_void, len: usize) -> isize {
    if data.is_null() {
        return fail(
            raw::GIT_ERROR_INVALID as c_int,
            "TLS stream: no buffer to read into",
        ) as isize;
    }
    // SAFETY: as in `connect`; `data` (not null) has room for `len` bytes.
    let (Some(s), buf) = (unsafe {
        (
            stream(raw),
            std::slice::from_raw_parts_mut(data.cast::<u8>(), len),
        )
    }) else {
        return -1;
    };
    let Some(tls) = s.tls.as_mut().filter(|_| s.verified) else {
        return fail(raw::GIT_ERROR_SSL as c_int, "TLS stream: not connected") as isize;
    };
    match tls.read(buf) {
        Ok(n) => {
            if let Some(head) = s.head.as_mut() {
                let room = HEAD_CAP.saturating_sub(head.len());
                head.extend_from_slice(&buf[..n.min(room)]);
                if n == 0 || head.len() >= HEAD_CAP || origin::find(head, b"\r\n\r\n").is_some() {
                    origin::saw_response_head(&s.host, &s.port, head);
                    s.head = None;
                }
            }
            n as isize
        }
        Err(e) => io_failure("read", &e),
    }
}

unsafe extern "C" fn stream_write(
    raw: *mut RawStream,
    data: *const c_char,
    len: usize,
    _flags: c_int,
) -> isize {
    guarded(-1, || unsafe { write(raw, data, len) })
}

/// # Safety
/// `raw` as in [`connect`]; `data` is null or holds `len` bytes.
unsafe fn write(raw: *mut RawStream, data: *const c_char, len: usize) -> isize {
    if data.is_null() {
        return fail(
            raw::GIT_ERROR_INVALID as c_int,
            "TLS stream: no buffer to write",
        ) as isize;
    }
    // SAFETY: as in `connect`; `data` (not null) holds `len` bytes.
    let (Some(s), buf) = (unsafe {
        (
            stream(raw),
            std::slice::from_raw_parts(data.cast::<u8>(), len),
        )
    }) else {
        return -1;
    };
    let Some(tls) = s.tls.as_mut().filter(|_| s.verified) else {
        return fail(raw::GIT_ERROR_SSL as c_int, "TLS stream: not connected") as isize;
    };
    // Credentials go to the configured server only (source/origin.rs), whatever libgit2
    // decided after a redirect.
    if !origin::allows_request(&s.host, &s.port, buf) {
        let message = format!(
            "refusing to send credentials to {}:{}: it is not the server of [source] url",
            s.host, s.port
        );
        return fail(raw::GIT_ERROR_HTTP as c_int, &message) as isize;
    }
    if origin::is_request_head(buf) {
        s.head = Some(Vec::new());
    }
    match tls.write(buf) {
        Ok(n) => n as isize,
        Err(e) => io_failure("write", &e),
    }
}

fn io_failure(doing: &str, e: &std::io::Error) -> isize {
    use std::io::ErrorKind::{TimedOut, WouldBlock};
    if matches!(e.kind(), TimedOut | WouldBlock) {
        return fail_code(
            raw::GIT_ERROR_NET as c_int,
            &format!("{doing} timed out"),
            raw::GIT_TIMEOUT as c_int,
        ) as isize;
    }
    fail(
        raw::GIT_ERROR_NET as c_int,
        &format!("TLS {doing} failed: {e}"),
    ) as isize
}

unsafe extern "C" fn stream_close(raw: *mut RawStream) -> c_int {
    guarded(-1, || {
        // SAFETY: as in `connect`.
        let Some(s) = (unsafe { stream(raw) }) else {
            return -1;
        };
        if let Some(mut tls) = s.tls.take() {
            let _ = tls.shutdown();
        }
        0
    })
}

unsafe extern "C" fn stream_free(raw: *mut RawStream) {
    guarded((), || {
        if !raw.is_null() {
            // SAFETY: made by `Box::into_raw` in `stream_init`; libgit2 frees it once.
            drop(unsafe { Box::from_raw(raw.cast::<Stream>()) });
        }
    })
}

/// Sets libgit2's error for this thread and returns -1.
fn fail(class: c_int, message: &str) -> c_int {
    fail_code(class, message, -1)
}

fn fail_code(class: c_int, message: &str, code: c_int) -> c_int {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: libgit2 copies the message.
    unsafe { raw::git_error_set_str(class, text.as_ptr()) };
    code
}

#[cfg(test)]
mod tests;
