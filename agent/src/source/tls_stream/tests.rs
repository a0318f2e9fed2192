//! Tests of the TLS stream: its mirror of libgit2's structs against libgit2's own header,
//! and its callbacks' guards (null pointers, panics).

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};

use openssl::ssl::{SslConnector, SslMethod};

use super::*;

/// What a C compiler says of libgit2's structs, compiled against the headers libgit2-sys
/// built libgit2 from (build.rs finds them): sizes, field offsets, where each bit of the
/// bit-field lands (byte and value) and the constants the mirror copies.
const LAYOUT_C: &str = r#"
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <git2.h>
#include <git2/sys/stream.h>

#define SIZE(t) printf("%s.size %zu\n", #t, sizeof(t))
#define FIELD(t, f) printf("%s.%s %zu\n", #t, #f, offsetof(t, f))

static void bit(const char *name, git_stream *s) {
    const unsigned char *b = (const unsigned char *)s;
    for (size_t i = 0; i < sizeof *s; i++)
        if (b[i]) printf("git_stream.%s bit at byte %zu value %u\n", name, i, b[i]);
}

int main(void) {
    git_stream s;
    SIZE(git_stream);
    FIELD(git_stream, version);
    FIELD(git_stream, timeout);
    FIELD(git_stream, connect_timeout);
    FIELD(git_stream, connect);
    FIELD(git_stream, certificate);
    FIELD(git_stream, set_proxy);
    FIELD(git_stream, read);
    FIELD(git_stream, write);
    FIELD(git_stream, close);
    FIELD(git_stream, free);
    memset(&s, 0, sizeof s); s.encrypted = 1; bit("encrypted", &s);
    memset(&s, 0, sizeof s); s.proxy_support = 1; bit("proxy_support", &s);
    SIZE(git_stream_registration);
    FIELD(git_stream_registration, version);
    FIELD(git_stream_registration, init);
    FIELD(git_stream_registration, wrap);
    SIZE(git_cert_x509);
    FIELD(git_cert_x509, parent);
    FIELD(git_cert_x509, data);
    FIELD(git_cert_x509, len);
    printf("GIT_STREAM_VERSION %d\n", GIT_STREAM_VERSION);
    printf("GIT_STREAM_TLS %d\n", GIT_STREAM_TLS);
    printf("GIT_CERT_X509 %d\n", (int)GIT_CERT_X509);
    return 0;
}
"#;

/// The same facts of the Rust mirror (super::RawStream, super::Registration) and of
/// libgit2-sys's `git_cert_x509`, which the stream hands to libgit2.
fn rust_layout() -> BTreeMap<String, String> {
    let mut facts = BTreeMap::new();
    let mut put = |k: &str, v: String| facts.insert(k.to_string(), v);
    put("git_stream.size", size_of::<RawStream>().to_string());
    put(
        "git_stream.version",
        offset_of!(RawStream, version).to_string(),
    );
    put(
        "git_stream.timeout",
        offset_of!(RawStream, timeout).to_string(),
    );
    put(
        "git_stream.connect_timeout",
        offset_of!(RawStream, connect_timeout).to_string(),
    );
    put(
        "git_stream.connect",
        offset_of!(RawStream, connect).to_string(),
    );
    put(
        "git_stream.certificate",
        offset_of!(RawStream, certificate).to_string(),
    );
    put(
        "git_stream.set_proxy",
        offset_of!(RawStream, set_proxy).to_string(),
    );
    put("git_stream.read", offset_of!(RawStream, read).to_string());
    put("git_stream.write", offset_of!(RawStream, write).to_string());
    put("git_stream.close", offset_of!(RawStream, close).to_string());
    put("git_stream.free", offset_of!(RawStream, free).to_string());
    // The mirror's `flags`: bit 0 `encrypted`, bit 1 `proxy_support`.
    for (name, mask) in [("encrypted", ENCRYPTED), ("proxy_support", 1 << 1)] {
        for (i, byte) in mask.to_ne_bytes().into_iter().enumerate() {
            if byte != 0 {
                let at = offset_of!(RawStream, flags) + i;
                put(
                    &format!("git_stream.{name} bit at byte {at} value"),
                    byte.to_string(),
                );
            }
        }
    }
    put(
        "git_stream_registration.size",
        size_of::<Registration>().to_string(),
    );
    put(
        "git_stream_registration.version",
        offset_of!(Registration, version).to_string(),
    );
    put(
        "git_stream_registration.init",
        offset_of!(Registration, init).to_string(),
    );
    put(
        "git_stream_registration.wrap",
        offset_of!(Registration, wrap).to_string(),
    );
    put(
        "git_cert_x509.size",
        size_of::<raw::git_cert_x509>().to_string(),
    );
    put(
        "git_cert_x509.parent",
        offset_of!(raw::git_cert_x509, parent).to_string(),
    );
    put(
        "git_cert_x509.data",
        offset_of!(raw::git_cert_x509, data).to_string(),
    );
    put(
        "git_cert_x509.len",
        offset_of!(raw::git_cert_x509, len).to_string(),
    );
    put("GIT_STREAM_VERSION", STREAM_VERSION.to_string());
    put("GIT_STREAM_TLS", STREAM_TLS.to_string());
    put("GIT_CERT_X509", (raw::GIT_CERT_X509 as c_int).to_string());
    facts
}

/// Compiles and runs [`LAYOUT_C`] with the system's C compiler (`$CC`, else `cc`;
/// tests/setup installs it) and reads its facts.
fn c_layout() -> BTreeMap<String, String> {
    // Set by build.rs from libgit2-sys's DEP_GIT2_ROOT.
    let include = env!("HOMELAB_LIBGIT2_INCLUDE");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("layout.c");
    let exe = dir.path().join("layout");
    std::fs::write(&src, LAYOUT_C).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let out = std::process::Command::new(&cc)
        .arg("-I")
        .arg(include)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("running the C compiler {cc:?}: {e} (bash tests/setup installs it: build-essential)"));
    assert!(
        out.status.success(),
        "compiling the layout probe against {include} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = std::process::Command::new(&exe).output().unwrap();
    assert!(out.status.success(), "the layout probe failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (k, v) = line.rsplit_once(' ').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The mirror of `git_stream` (and the registration, the certificate and the constants)
/// is what libgit2's header says, field by field: a field moved, resized, added or
/// removed upstream (or here) fails this test rather than corrupting memory.
#[test]
fn the_mirror_matches_libgit2s_header() {
    let c = c_layout();
    let rust = rust_layout();
    let differ: Vec<String> = c
        .keys()
        .chain(rust.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| c.get(*k) != rust.get(*k))
        .map(|k| format!("{k}: header {:?}, mirror {:?}", c.get(k), rust.get(k)))
        .collect();
    assert!(
        differ.is_empty(),
        "source/tls_stream.rs's mirror of libgit2's structs differs from {}:\n{}",
        env!("HOMELAB_LIBGIT2_INCLUDE"),
        differ.join("\n")
    );
    // The probe said something about every field.
    assert!(c.len() >= 24, "{c:?}");
}

/// libgit2's message for this thread, as the fetch would report it.
fn last_error() -> String {
    git2::Error::last_error(-1).message().to_string()
}

/// Null pointers from libgit2 are refused with its error set, never dereferenced.
#[test]
fn null_pointers_are_refused() {
    raw::init();
    let mut buf = [0u8; 8];
    // SAFETY: each call has a null pointer the callback must check before use.
    unsafe {
        assert_eq!(stream_connect(std::ptr::null_mut()), -1);
        assert_eq!(last_error(), "TLS stream: no stream");
        assert_eq!(
            stream_read(std::ptr::null_mut(), buf.as_mut_ptr().cast(), 8),
            -1
        );
        assert_eq!(last_error(), "TLS stream: no stream");
        assert_eq!(
            stream_write(std::ptr::null_mut(), buf.as_ptr().cast(), 8, 0),
            -1
        );
        assert_eq!(stream_close(std::ptr::null_mut()), -1);
        assert_eq!(
            stream_certificate(std::ptr::null_mut(), std::ptr::null_mut()),
            -1
        );
        assert_eq!(last_error(), "TLS stream: no certificate pointer");
        stream_free(std::ptr::null_mut());
        let host = CString::new("localhost").unwrap();
        assert_eq!(
            stream_init(std::ptr::null_mut(), host.as_ptr(), host.as_ptr()),
            -1
        );
        let mut out = std::ptr::null_mut();
        assert_eq!(stream_init(&mut out, std::ptr::null(), host.as_ptr()), -1);
        assert_eq!(last_error(), "TLS stream: missing host or port");
        // A real stream, with null buffers.
        assert_eq!(stream_init(&mut out, host.as_ptr(), host.as_ptr()), 0);
        assert_eq!(stream_read(out, std::ptr::null_mut(), 8), -1);
        assert_eq!(last_error(), "TLS stream: no buffer to read into");
        assert_eq!(stream_write(out, std::ptr::null(), 8, 0), -1);
        assert_eq!(last_error(), "TLS stream: no buffer to write");
        // Not connected yet: refused, not read.
        assert_eq!(stream_read(out, buf.as_mut_ptr().cast(), 8), -1);
        assert_eq!(last_error(), "TLS stream: not connected");
        stream_free(out);
    }
}

/// A panic inside a callback does not unwind into C: the callback returns libgit2's
/// error code, and libgit2's error says why.
#[test]
fn a_panic_in_a_callback_becomes_libgit2s_error() {
    raw::init();
    let code: c_int = guarded(-1, || panic!("the bytes were odd"));
    assert_eq!(code, -1);
    assert_eq!(
        last_error(),
        "TLS stream: internal error (panic: the bytes were odd); this is a bug in homelab-agent, please report it"
    );
    let n: isize = guarded(-1, || panic!("{} left", 3));
    assert_eq!(n, -1);
    assert!(last_error().contains("(panic: 3 left)"), "{}", last_error());
    // No panic: the body's own answer.
    assert_eq!(guarded(-1, || 7), 7);
}

/// A server that accepts and never answers: the socket's timeout ends the handshake,
/// and it is told as a timeout (GIT_TIMEOUT), not as the OS's "Resource temporarily
/// unavailable".
#[test]
fn a_silent_server_ends_the_handshake_as_a_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _held = std::thread::spawn(move || {
        let conn = listener.accept();
        std::thread::sleep(std::time::Duration::from_secs(5));
        drop(conn);
    });
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let connector = SslConnector::builder(SslMethod::tls_client())
        .unwrap()
        .build();
    let e = connector.connect("localhost", tcp).unwrap_err();
    assert!(handshake_timed_out(&e), "{e}");
    // A server that closes at once is no timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || drop(listener.accept()));
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let e = connector.connect("localhost", tcp).unwrap_err();
    assert!(!handshake_timed_out(&e), "{e}");
}
