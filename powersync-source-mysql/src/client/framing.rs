//! Packet framing of the client/server protocol: a 3-byte little-endian payload length and a
//! sequence id before every payload; a payload of 0xFFFFFF bytes or more is split, each part
//! but the last exactly 0xFFFFFF bytes long
//! (<https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_packets.html>).
//!
//! Reads go into one buffer that is refilled with large socket reads; a packet that fits in
//! one part is handed out as a slice of that buffer, so reading a result set copies nothing.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest payload of one packet part.
const MAX_PART: usize = 0xFF_FFFF;
/// Bytes asked of the socket per read: many rows per system call.
const READ_SIZE: usize = 64 * 1024;

/// A byte stream the protocol runs on: TCP, or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One connection's framed reader and writer.
pub(crate) struct Framed {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    /// Unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// A payload that arrived in several parts, joined.
    joined: Vec<u8>,
    seq: u8,
}

impl Framed {
    pub(crate) fn new(io: Box<dyn Io>) -> Self {
        Framed {
            io,
            buf: vec![0; READ_SIZE * 2],
            start: 0,
            end: 0,
            joined: Vec::new(),
            seq: 0,
        }
    }

    /// Takes the underlying stream (for the TLS handshake, which is async).
    pub(crate) fn take_io(&mut self) -> io::Result<Box<dyn Io>> {
        if self.start != self.end {
            return Err(invalid("the server sent data before the TLS handshake"));
        }
        // A closed placeholder until the TLS stream is put back.
        let placeholder: Box<dyn Io> = Box::new(tokio::io::duplex(1).0);
        Ok(std::mem::replace(&mut self.io, placeholder))
    }

    /// Puts a stream back after [`Framed::take_io`].
    pub(crate) fn set_io(&mut self, io: Box<dyn Io>) {
        self.io = io;
    }

    /// Starts a new command: the client's first packet has sequence id 0.
    pub(crate) fn reset_seq(&mut self) {
        self.seq = 0;
    }

    /// Writes `payload` as one packet (split into parts when it is that long).
    pub(crate) async fn write_packet(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 4 * (payload.len() / MAX_PART + 1));
        let mut rest = payload;
        loop {
            let n = rest.len().min(MAX_PART);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
            out.push(self.seq);
            self.seq = self.seq.wrapping_add(1);
            out.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if n < MAX_PART {
                break;
            }
        }
        self.io.write_all(&out).await?;
        self.io.flush().await
    }

    /// Reads the next packet's payload.
    pub(crate) async fn read_packet(&mut self) -> io::Result<&[u8]> {
        let len = self.read_part_header().await?;
        if len < MAX_PART {
            self.fill(len).await?;
            let at = self.start;
            self.start += len;
            return Ok(&self.buf[at..at + len]);
        }
        // A long payload: parts of MAX_PART bytes, ended by a shorter one (maybe empty).
        self.joined.clear();
        let mut len = len;
        loop {
            self.fill(len).await?;
            self.joined
                .extend_from_slice(&self.buf[self.start..self.start + len]);
            self.start += len;
            if len < MAX_PART {
                break;
            }
            len = self.read_part_header().await?;
        }
        Ok(&self.joined)
    }

    /// Reads a part header, checks its sequence id and returns the part's length.
    async fn read_part_header(&mut self) -> io::Result<usize> {
        self.fill(4).await?;
        let h = &self.buf[self.start..self.start + 4];
        let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        let seq = h[3];
        self.start += 4;
        if seq != self.seq {
            return Err(invalid(&format!(
                "packet out of order: sequence id {seq}, expected {}",
                self.seq
            )));
        }
        self.seq = self.seq.wrapping_add(1);
        Ok(len)
    }

    /// Makes `n` unread bytes available at `buf[start..]`.
    async fn fill(&mut self, n: usize) -> io::Result<()> {
        if self.end - self.start >= n {
            return Ok(());
        }
        if self.buf.len() - self.start < n.max(READ_SIZE) {
            // Move the unread tail to the front, growing the buffer for a long part.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() < n.max(READ_SIZE) {
                self.buf.resize(n.max(READ_SIZE), 0);
            }
        }
        while self.end - self.start < n {
            let read = self.io.read(&mut self.buf[self.end..]).await?;
            if read == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            self.end += read;
        }
        Ok(())
    }
}

pub(crate) fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(bytes: Vec<u8>) -> Framed {
        let (mut a, b) = tokio::io::duplex(1 << 26);
        tokio::spawn(async move {
            a.write_all(&bytes).await.unwrap();
            // Keep the peer open until the reader is done.
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        });
        Framed::new(Box::new(b))
    }

    fn part(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        v.push(seq);
        v.extend_from_slice(payload);
        v
    }

    #[tokio::test]
    async fn reads_short_and_split_packets() {
        let long = vec![7u8; MAX_PART + 10];
        let mut bytes = part(0, b"abc");
        bytes.extend(part(1, &long[..MAX_PART]));
        bytes.extend(part(2, &long[MAX_PART..]));
        bytes.extend(part(3, b""));
        let mut f = framed(bytes);
        assert_eq!(f.read_packet().await.unwrap(), b"abc");
        assert_eq!(f.read_packet().await.unwrap(), &long[..]);
        assert_eq!(f.read_packet().await.unwrap(), b"");
    }

    #[tokio::test]
    async fn rejects_out_of_order_and_truncated_packets() {
        let mut f = framed(part(5, b"x"));
        let e = f.read_packet().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);

        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&[10, 0, 0, 0, 1, 2]).await.unwrap();
        drop(a);
        let mut f = Framed::new(Box::new(b));
        let e = f.read_packet().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
