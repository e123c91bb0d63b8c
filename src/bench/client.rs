//! The benchmark's load generator: one keep-alive HTTP/1.1 connection per client, each request
//! written as bytes made before the clock starts, each reply's head parsed with `httparse` and
//! its body read by `Content-Length`.
//!
//! Why not the general-purpose client (reqwest) the rest of the benchmark uses: the clients share
//! the machine's two cores with the service and its database, so whatever they spend is taken
//! from what is measured. Per `perf`, reqwest's request building, URL parsing, pool and
//! connection tasks were on about a quarter of this process's samples during a timed phase (the
//! socket work inside them stays); this client costs 7% less CPU per confirmation (212 against
//! 228 µs on SQLite, docs/callback-benchmark.md, machine (l)), as a load generator like `wrk` would.
//!
//! Invariants: a connection carries one request at a time and is used again only after its whole
//! reply was read; a reply that cannot be framed (no `Content-Length`, chunked, malformed, the
//! peer closing) drops the connection and the next request opens a new one; nothing here is
//! timed — the caller measures around [`Connection::get`].

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest reply head or body read (an IPN answer is under 100 bytes).
const MAX_REPLY: usize = 64 * 1024;
/// Headers parsed per reply head.
const MAX_HEADERS: usize = 32;

/// `GET <path_and_query>` to `host`, as the bytes sent on the wire.
pub fn get_request(host: SocketAddr, path_and_query: &str) -> Vec<u8> {
    format!("GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n\r\n").into_bytes()
}

/// A reply: status code and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One client's keep-alive connection to the service.
pub struct Connection {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
}

impl Connection {
    /// A connection to `addr`, opened now (so that timed requests do not pay for handshakes).
    pub async fn open(addr: SocketAddr) -> Connection {
        let mut c = Connection { addr, stream: None, buf: Vec::with_capacity(1024) };
        // A failure shows on the first request, which tries again.
        let _ = c.stream().await;
        c
    }

    async fn stream(&mut self) -> std::io::Result<()> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.buf.clear();
            self.stream = Some(stream);
        }
        Ok(())
    }

    /// Sends `request` (from [`get_request`]) and reads its reply. On any error the connection is
    /// dropped; the next call reconnects.
    pub async fn get(&mut self, request: &[u8]) -> Result<Reply, String> {
        let result = self.exchange(request).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, request: &[u8]) -> Result<Reply, String> {
        self.stream().await.map_err(|e| format!("connecting: {e}"))?;
        let Connection { stream: Some(stream), buf, .. } = self else {
            return Err("not connected".into());
        };
        stream.write_all(request).await.map_err(|e| format!("sending: {e}"))?;
        let (status, head_len, body_len) = loop {
            if let Some(head) = parse_head(buf)? {
                break head;
            }
            if buf.len() >= MAX_REPLY {
                return Err(format!("reply head over {MAX_REPLY} bytes"));
            }
            read_more(stream, buf).await?;
        };
        if body_len > MAX_REPLY {
            return Err(format!("reply body of {body_len} bytes"));
        }
        while buf.len() < head_len + body_len {
            read_more(stream, buf).await?;
        }
        let body = buf[head_len..head_len + body_len].to_vec();
        buf.drain(..head_len + body_len);
        Ok(Reply { status, body })
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    buf.reserve(4096);
    match stream.read_buf(buf).await {
        Ok(0) => Err("the service closed the connection".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("reading: {e}")),
    }
}

/// `(status, head length, body length)` once `buf` holds a whole reply head; `None` while it
/// does not yet.
fn parse_head(buf: &[u8]) -> Result<Option<(u16, usize, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut reply = httparse::Response::new(&mut headers);
    let head_len = match reply.parse(buf).map_err(|e| format!("malformed reply head: {e}"))? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = reply.code.ok_or("reply without a status")?;
    let mut body_len = None;
    for h in reply.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked replies are not read by the benchmark's client".into());
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let len = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<usize>().ok());
            body_len = Some(len.ok_or("unreadable Content-Length")?);
        }
    }
    let body_len = body_len.ok_or("reply without Content-Length")?;
    Ok(Some((status, head_len, body_len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_head_is_framed_by_its_content_length() {
        let reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 33\r\n\r\n{\"RspCode\":\"00\",\"Message\":\"ok\"}";
        let head_len = reply.len() - 31;
        assert_eq!(parse_head(reply), Ok(Some((200, head_len, 33))));
        assert_eq!(parse_head(&reply[..20]), Ok(None));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").unwrap_err().contains("Content-Length"));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").unwrap_err().contains("chunked"));
        assert!(parse_head(b"nonsense\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn requests_go_over_one_connection_and_a_dropped_one_is_reopened() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut accepted = 0;
            // First connection: two requests, then closed; second: one request.
            for requests in [2, 1] {
                let (mut s, _) = listener.accept().await.unwrap();
                accepted += 1;
                let mut buf = Vec::new();
                for i in 0..requests {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        s.read_buf(&mut buf).await.unwrap();
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    let body = format!("reply {i}");
                    let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                    s.write_all(reply.as_bytes()).await.unwrap();
                }
            }
            accepted
        });
        let mut c = Connection::open(addr).await;
        let req = get_request(addr, "/callbacks/vnpay?a=1");
        assert!(req.starts_with(b"GET /callbacks/vnpay?a=1 HTTP/1.1\r\nHost: 127.0.0.1:"));
        assert_eq!(c.get(&req).await, Ok(Reply { status: 200, body: b"reply 0".to_vec() }));
        assert_eq!(c.get(&req).await, Ok(Reply { status: 200, body: b"reply 1".to_vec() }));
        // The server closed the first connection: this request fails, the next one reconnects.
        assert!(c.get(&req).await.is_err());
        assert_eq!(c.get(&req).await, Ok(Reply { status: 200, body: b"reply 0".to_vec() }));
        assert_eq!(server.await.unwrap(), 2);
    }
}
