//! A minimal HTTP/1.1 client for the admin API and alloc tests: one exchange per connection,
//! plain or over a TLS stream the test opened.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::WAIT;

/// Writes `request` (whole, as given) on a fresh connection and returns everything the
/// server answers until it closes, within [`WAIT`].
pub async fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("no complete response in time")
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// One exchange on a fresh connection with extra header lines: (status, body).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let s = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connected within WAIT")
        .unwrap();
    exchange_over(s, &addr.to_string(), method, path, headers, body).await
}

/// One exchange over an open `stream` (plain or TLS) to `host`: (status, body).
pub async fn exchange_over<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    tokio::time::timeout(WAIT, async {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        // A refused oversized body may be cut off by the server: the answer still counts.
        let _ = s.write_all(body).await;
        let _ = s.flush().await;
        let mut raw = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = s.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status code");
        (status, body.to_string())
    })
    .await
    .expect("HTTP answer within WAIT")
}

/// The value of the Prometheus sample `name` whose labels include every `labels` pair
/// (0 when the metric was never recorded).
pub fn sample(scrape: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match key.split_once('{') {
                Some((m, r)) => (m, r),
                None => (key, ""),
            };
            if metric != name {
                return None;
            }
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}
