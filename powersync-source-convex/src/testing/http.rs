//! A small HTTP/1.1 responder (keep-alive, `Content-Length` bodies): enough for `reqwest` to
//! talk to the fake deployment, without a server framework in the dependency tree.

use std::collections::BTreeMap;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A parsed request.
pub(crate) struct Request {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub authorization: Option<String>,
    pub body: Vec<u8>,
}

const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Serves requests on one connection (each answer after the delay the handler gives) until the peer closes it or sends garbage.
pub(crate) async fn serve<F>(stream: TcpStream, mut handle: F)
where
    F: FnMut(Request) -> (u16, Vec<u8>, std::time::Duration),
{
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let Some((request, close)) = read_request(&mut reader).await else {
            return;
        };
        let (status, body, delay) = handle(request);
        // The server's work on the request, without holding the store.
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            429 => "Too Many Requests",
            500 => "Internal Server Error",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            _ => "Status",
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if write.write_all(head.as_bytes()).await.is_err()
            || write.write_all(&body).await.is_err()
            || write.flush().await.is_err()
            || close
        {
            return;
        }
    }
}

async fn read_request<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> Option<(Request, bool)> {
    let mut head = Vec::new();
    loop {
        let n = reader.read_until(b'\n', &mut head).await.ok()?;
        if n == 0 || head.len() > MAX_HEAD {
            return None;
        }
        if head.ends_with(b"\r\n\r\n") || head == b"\r\n" {
            if head == b"\r\n" {
                head.clear();
                continue;
            }
            break;
        }
    }
    let text = std::str::from_utf8(&head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let mut length = 0usize;
    let mut authorization = None;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().ok()?,
            "authorization" => authorization = Some(value.to_string()),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    if length > MAX_BODY {
        return None;
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    let url = url::Url::parse(&format!("http://fake{target}")).ok()?;
    let query = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    Some((
        Request {
            method,
            path: url.path().to_string(),
            query,
            authorization,
            body,
        },
        close,
    ))
}
