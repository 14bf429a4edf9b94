//! Helpers for the tests that run real processes (`tests/crash.rs`, `tests/cluster.rs`):
//! a free port, a bare HTTP/1.1 client, a clean environment.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

/// Clears the caller's `SHOPRANK_*` variables from `cmd`, so only what a test sets counts.
pub fn without_shoprank_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SHOPRANK_") {
            cmd.env_remove(key);
        }
    }
}

/// A port nobody listens on right now.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free local port")
}

/// One HTTP/1.1 request with `Connection: close`; returns the status code and the body.
/// Any I/O failure or an incomplete status line is an `Err` (the request is not known to
/// have been answered).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    http_with(addr, method, path, body, &[])
}

/// [`http`] with extra request headers.
pub fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, Vec<u8>)> {
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no complete response head"))?;
    let head = std::str::from_utf8(&response[..split]).map_err(|_| bad("head is not UTF-8"))?;
    let status_line = head.lines().next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let status = match (parts.next(), parts.next()) {
        (Some("HTTP/1.1"), Some(code)) => code.parse().map_err(|_| bad(status_line))?,
        _ => return Err(bad(status_line)),
    };
    Ok((status, response[split + 4..].to_vec()))
}
