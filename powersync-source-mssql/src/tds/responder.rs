//! A scripted TDS responder: the server side of MS-TDS just far enough to put the real
//! tiberius client, and the backend on top of it, in front of hand-built token streams.
//!
//! It answers PRELOGIN with "encryption not supported" (the client runs with `encrypt=none`),
//! acknowledges LOGIN7 with a DONE token, then answers each request (SQL batch or RPC) with the
//! next scripted reply and records the request's payload. Token layouts follow MS-TDS 7.4:
//! COLMETADATA (2.2.7.4), ROW (2.2.7.19), DONE (2.2.7.6), ERROR (2.2.7.10), TYPE_INFO
//! (2.2.5.6) with PLP values (2.2.5.2.3) for `(max)` types. No server-side logic: the tests
//! check that each query's columns decode as the backend expects and that what the backend
//! asks for is what a server must be asked.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::MssqlConfig;

/// The collation bytes (LCID + flags, sort id) of `SQL_Latin1_General_CP1_CI_AS`.
pub const SQL_LATIN1: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];

/// A column of a result set.
#[derive(Debug, Clone)]
pub enum Col {
    /// `binary(n)` (BIGBINARY).
    Binary(u16),
    /// `varbinary(n)` (BIGVARBINARY).
    VarBinary(u16),
    /// `int` (INTN, 4).
    Int,
    /// `bigint` (INTN, 8).
    BigInt,
    /// `nvarchar(n)` (NVARCHAR, n characters).
    NVarChar(u16),
    /// `nvarchar(max)` (NVARCHAR, PLP).
    NVarCharMax,
    /// `varchar(n)` under a collation (BIGVARCHAR).
    VarChar(u16, [u8; 5]),
    /// A CLR user-defined type (UDT, 0xF0).
    Udt,
}

/// A value of a row, in its column's type.
#[derive(Debug, Clone)]
pub enum Val {
    Null,
    Bytes(Vec<u8>),
    Int(i32),
    BigInt(i64),
    Str(String),
}

fn b_varchar(out: &mut Vec<u8>, s: &str) {
    let units: Vec<u16> = s.encode_utf16().collect();
    out.push(units.len() as u8);
    units.iter().for_each(|u| out.extend(u.to_le_bytes()));
}

fn us_varchar(out: &mut Vec<u8>, s: &str) {
    let units: Vec<u16> = s.encode_utf16().collect();
    out.extend((units.len() as u16).to_le_bytes());
    units.iter().for_each(|u| out.extend(u.to_le_bytes()));
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// COLMETADATA for `cols`.
pub fn colmetadata(cols: &[(&str, Col)]) -> Vec<u8> {
    let mut out = vec![0x81];
    out.extend((cols.len() as u16).to_le_bytes());
    for (name, col) in cols {
        out.extend(0u32.to_le_bytes()); // UserType
        out.extend(0x0001u16.to_le_bytes()); // Flags: nullable
        match col {
            Col::Binary(n) => {
                out.push(0xAD);
                out.extend(n.to_le_bytes());
            }
            Col::VarBinary(n) => {
                out.push(0xA5);
                out.extend(n.to_le_bytes());
            }
            Col::Int => out.extend([0x26, 4]),
            Col::BigInt => out.extend([0x26, 8]),
            Col::NVarChar(n) => {
                out.push(0xE7);
                out.extend((n * 2).to_le_bytes());
                out.extend(SQL_LATIN1);
            }
            Col::NVarCharMax => {
                out.push(0xE7);
                out.extend(0xFFFFu16.to_le_bytes());
                out.extend(SQL_LATIN1);
            }
            Col::VarChar(n, collation) => {
                out.push(0xA7);
                out.extend(n.to_le_bytes());
                out.extend(collation);
            }
            Col::Udt => {
                out.push(0xF0);
                out.extend(8000u16.to_le_bytes());
                b_varchar(&mut out, "shop");
                b_varchar(&mut out, "dbo");
                b_varchar(&mut out, "Point");
                us_varchar(&mut out, "Geo.Point, Geo, Version=1.0.0.0");
            }
        }
        b_varchar(&mut out, name);
    }
    out
}

/// A ROW of `vals` in the types of `cols`.
pub fn row(cols: &[(&str, Col)], vals: &[Val]) -> Vec<u8> {
    assert_eq!(cols.len(), vals.len(), "one value per column");
    let mut out = vec![0xD1];
    for ((_, col), val) in cols.iter().zip(vals) {
        match (col, val) {
            (Col::Int | Col::BigInt, Val::Null) => out.push(0),
            (Col::Int, Val::Int(i)) => {
                out.push(4);
                out.extend(i.to_le_bytes());
            }
            (Col::BigInt, Val::BigInt(i)) => {
                out.push(8);
                out.extend(i.to_le_bytes());
            }
            (Col::NVarCharMax, Val::Null) => out.extend(u64::MAX.to_le_bytes()),
            (Col::NVarCharMax, Val::Str(s)) => {
                // PLP: total length, then chunks, then a zero-length terminator; split in
                // two chunks to exercise reassembly.
                let b = utf16(s);
                out.extend((b.len() as u64).to_le_bytes());
                let (first, second) = b.split_at(b.len() / 2 / 2 * 2);
                for chunk in [first, second] {
                    if !chunk.is_empty() {
                        out.extend((chunk.len() as u32).to_le_bytes());
                        out.extend(chunk);
                    }
                }
                out.extend(0u32.to_le_bytes());
            }
            (_, Val::Null) => out.extend(0xFFFFu16.to_le_bytes()),
            (Col::NVarChar(_), Val::Str(s)) => {
                let b = utf16(s);
                out.extend((b.len() as u16).to_le_bytes());
                out.extend(b);
            }
            (Col::Binary(_) | Col::VarBinary(_) | Col::VarChar(..), Val::Bytes(b)) => {
                out.extend((b.len() as u16).to_le_bytes());
                out.extend(b);
            }
            (c, v) => panic!("no encoding of {v:?} as {c:?}"),
        }
    }
    out
}

/// The final DONE of a reply (with a row count).
pub fn done(rows: u64) -> Vec<u8> {
    let mut out = vec![0xFD];
    out.extend(0x0010u16.to_le_bytes()); // DONE_COUNT
    out.extend(0u16.to_le_bytes());
    out.extend(rows.to_le_bytes());
    out
}

/// An ERROR token with `number` and severity `class`, then the final DONE (DONE_ERROR).
pub fn error(number: u32, class: u8, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(number.to_le_bytes());
    body.push(1); // state
    body.push(class);
    us_varchar(&mut body, message);
    b_varchar(&mut body, "responder");
    b_varchar(&mut body, "");
    body.extend(1u32.to_le_bytes()); // line
    let mut out = vec![0xAA];
    out.extend((body.len() as u16).to_le_bytes());
    out.extend(body);
    out.push(0xFD);
    out.extend(0x0002u16.to_le_bytes()); // DONE_ERROR
    out.extend(0u16.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    out
}

/// A result set: COLMETADATA, the rows, DONE.
pub fn result(cols: &[(&str, Col)], rows: &[Vec<Val>]) -> Vec<u8> {
    let mut out = colmetadata(cols);
    for r in rows {
        out.extend(row(cols, r));
    }
    out.extend(done(rows.len() as u64));
    out
}

/// The requests a responder received (their payloads, after login).
#[derive(Debug, Clone, Default)]
pub struct Requests(Arc<Mutex<Vec<Vec<u8>>>>);

impl Requests {
    /// The text of request `i` (the SQL of a batch or of `sp_executesql`), read as UTF-16LE at
    /// both alignments: good enough to search for statement fragments.
    pub fn text(&self, i: usize) -> String {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let payload = &all[i];
        let mut text = String::new();
        for skip in 0..2 {
            let units: Vec<u16> = payload[skip..]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            text.push_str(&String::from_utf16_lossy(&units));
            text.push('\n');
        }
        text
    }

    /// How many requests arrived.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Starts a responder for one connection answering the requests with `replies`, in order.
/// Returns a config that connects to it and the request log.
pub async fn start(replies: Vec<Vec<u8>>) -> (MssqlConfig, Requests) {
    let (config, mut logs) = start_many(vec![replies]).await;
    (config, logs.remove(0))
}

/// Like [`start`] for several connections, accepted in order: connection `i` gets
/// `scripts[i]` and logs to the `i`th [`Requests`].
pub async fn start_many(scripts: Vec<Vec<Vec<u8>>>) -> (MssqlConfig, Vec<Requests>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let logs: Vec<Requests> = scripts.iter().map(|_| Requests::default()).collect();
    let served = logs.clone();
    tokio::spawn(async move {
        for (replies, log) in scripts.into_iter().zip(served) {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = serve(&mut sock, replies, log).await;
            });
        }
    });
    let url = format!("sqlserver://tester:pw@127.0.0.1:{port}/shop?encrypt=none");
    (MssqlConfig::parse(&url).expect("config"), logs)
}

async fn read_message(sock: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; 8];
        sock.read_exact(&mut header).await?;
        let len = u16::from_be_bytes([header[2], header[3]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(8)];
        sock.read_exact(&mut body).await?;
        payload.extend(body);
        if header[1] & 0x01 != 0 {
            return Ok((header[0], payload));
        }
    }
}

/// Sends `payload` as a tabular result (type 4) in packets of at most 4096 bytes.
async fn send(sock: &mut TcpStream, payload: &[u8]) -> std::io::Result<()> {
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![&[]]
    } else {
        payload.chunks(4096 - 8).collect()
    };
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let mut packet = vec![0x04, u8::from(last)];
        packet.extend(((chunk.len() + 8) as u16).to_be_bytes());
        packet.extend([0, 0, (i + 1) as u8, 0]);
        packet.extend(*chunk);
        sock.write_all(&packet).await?;
    }
    Ok(())
}

async fn serve(sock: &mut TcpStream, replies: Vec<Vec<u8>>, log: Requests) -> std::io::Result<()> {
    // PRELOGIN: VERSION and ENCRYPTION = NOT_SUP (2).
    let (ty, _) = read_message(sock).await?;
    assert_eq!(ty, 0x12, "PRELOGIN first");
    let mut prelogin = vec![0x00, 0, 11, 0, 6, 0x01, 0, 17, 0, 1, 0xFF];
    prelogin.extend([16, 0, 0, 0, 0, 0]);
    prelogin.push(2);
    send(sock, &prelogin).await?;
    // LOGIN7: acknowledged by the final DONE.
    let (ty, _) = read_message(sock).await?;
    assert_eq!(ty, 0x10, "LOGIN7 second");
    let mut ack = done(0);
    ack[1] = 0; // DONE_FINAL
    send(sock, &ack).await?;
    for reply in replies {
        let (_, payload) = read_message(sock).await?;
        log.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(payload);
        send(sock, &reply).await?;
    }
    // Hold the connection until the client closes it.
    let mut rest = [0u8; 1024];
    while sock.read(&mut rest).await? > 0 {}
    Ok(())
}
