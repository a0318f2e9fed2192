//! Reading an HTTP response body with a size cap: every body the agent reads from the
//! network (a FleetLock refusal, a health check's page) goes through [`read_capped`], so a
//! server that answers with a huge body costs at most the cap in memory. Only the first
//! `cap` bytes are read; the rest is never received (the connection is dropped).

/// The first bytes of a body, and whether there was more.
#[derive(Debug, Default)]
pub struct Body {
    pub bytes: Vec<u8>,
    /// The server sent more than the cap (or announced more in Content-Length).
    pub truncated: bool,
}

impl Body {
    /// The bytes read, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Reads at most `cap` bytes of `response`'s body. The client's timeout still bounds the
/// time; an error while reading is returned as reqwest's.
pub async fn read_capped(mut response: reqwest::Response, cap: usize) -> reqwest::Result<Body> {
    let mut body = Body {
        bytes: Vec::with_capacity(cap.min(response.content_length().unwrap_or(0) as usize)),
        truncated: false,
    };
    while let Some(chunk) = response.chunk().await? {
        let room = cap - body.bytes.len();
        if chunk.len() > room {
            body.bytes.extend_from_slice(&chunk[..room]);
            body.truncated = true;
            break;
        }
        body.bytes.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A one-shot HTTP server on loopback answering `body_len` bytes of 'x'.
    fn serve(body_len: usize) -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = s.read(&mut request);
            let _ = write!(
                s,
                "HTTP/1.1 500 Oops\r\nContent-Length: {body_len}\r\nConnection: close\r\n\r\n"
            );
            let chunk = vec![b'x'; 64 << 10];
            let mut left = body_len;
            while left > 0 {
                let n = left.min(chunk.len());
                if s.write_all(&chunk[..n]).is_err() {
                    return; // the client stopped reading: what a cap does
                }
                left -= n;
            }
        });
        port
    }

    async fn get(port: u16, cap: usize) -> Body {
        let response = reqwest::get(format!("http://127.0.0.1:{port}/"))
            .await
            .unwrap();
        read_capped(response, cap).await.unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_body_is_read_up_to_the_cap_only() {
        let small = get(serve(10), 100).await;
        assert_eq!((small.bytes.len(), small.truncated), (10, false));
        let exact = get(serve(100), 100).await;
        assert_eq!((exact.bytes.len(), exact.truncated), (100, false));
        let huge = get(serve(64 << 20), 1000).await;
        assert_eq!((huge.bytes.len(), huge.truncated), (1000, true));
        assert!(huge.text().chars().all(|c| c == 'x'));
    }
}
