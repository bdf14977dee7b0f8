//! The snapshot reader's own connection: the client/server protocol, just as much of it as
//! the snapshot needs, so rows go from the socket buffer into the connector's values with
//! nothing in between.
//!
//! # Why not the driver
//! Everything else in the connector talks through mysql_async. Its result-set path costs
//! about as much client CPU per row as all of the connector's conversion: every row packet is
//! parsed first as an OK packet and then as an ERR packet (two `io::Error`s allocated and
//! dropped per row), copied into a pooled buffer, and turned into a `Row` (a vector of
//! optional values and an `Arc` of the columns) that the connector then takes apart. The
//! snapshot of a large table is where the connector spends most of its CPU, and on a
//! two-core host the reader is the bottleneck (`mysql-throughput` prints both readers'
//! figures). This client reads packets from one buffer filled by 64 KiB socket reads, tells
//! rows from the terminator by their first byte, and hands each binary-protocol row over as
//! a slice that is decoded value by value straight into the connector's row.
//!
//! # What it speaks
//! Protocol 4.1 over TCP with `CLIENT_DEPRECATE_EOF` when the server offers it (EOF packets
//! are read otherwise); TLS with the connector's `ssl-mode` and `ssl-ca`; authentication with
//! `mysql_native_password` and `caching_sha2_password` (fast path, or the full exchange:
//! password in clear over TLS, else RSA-encrypted with the server's public key), and one
//! authentication switch, as mysql_async does; `mysql_clear_password` is refused (it would
//! send the password unencrypted). Commands: `COM_QUERY` (text results, read whole: they are
//! small), `COM_STMT_PREPARE` / `COM_STMT_EXECUTE` (binary results, streamed) and
//! `COM_STMT_CLOSE`. Errors are mysql_async errors (`Error::Server` with the server's code and
//! SQLSTATE, `Error::Io`), so [`crate::connection::sql_error`] classifies both connections'
//! failures one way.

mod auth;
mod framing;
mod tls;

use std::io;

use mysql_async::{Error, ServerError, Value as My};
use mysql_common::constants::{CapabilityFlags, ColumnFlags, ColumnType};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{Column, ComStmtExecuteRequestBuilder, ErrPacket, StmtPacket};
use mysql_common::proto::MySerialize;
use mysql_common::value::{BinValue, ValueDeserializer};
use powersync_source_core::SourceError;

use crate::config::MySqlConfig;
use crate::connection::sql_error;
use framing::{invalid, Framed};
pub(crate) use tls::TlsSetupError;

const COM_QUERY: u8 = 0x03;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_CLOSE: u8 = 0x19;

/// A connection of the snapshot reader (see the module docs).
pub(crate) struct Client {
    framed: Framed,
    caps: CapabilityFlags,
    /// A result set whose rows were not all read: drained before the next command.
    pending: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

/// A prepared statement.
pub(crate) struct Statement {
    id: u32,
    params: u16,
}

/// The column types of a binary result set, as its rows are decoded.
pub(crate) struct Columns {
    types: Vec<(ColumnType, ColumnFlags)>,
}

impl Columns {
    /// How many columns each row has.
    pub(crate) fn len(&self) -> usize {
        self.types.len()
    }
}

impl Client {
    /// Connects, authenticates and sets the session up as the driver's connections are
    /// (`utf8mb4`, UTC), within `connect_timeout`.
    pub(crate) async fn connect(config: &MySqlConfig) -> Result<Client, SourceError> {
        let context = format!("connecting to {} (snapshot reader)", config.endpoint());
        let connecting = async {
            let framed = auth::open(config).await?;
            let (framed, caps) = framed;
            let mut client = Client {
                framed,
                caps,
                pending: false,
            };
            client.query_drop("SET NAMES utf8mb4").await?;
            client.query_drop("SET time_zone = '+00:00'").await?;
            Ok::<_, Error>(client)
        };
        match tokio::time::timeout(config.connect_timeout, connecting).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(sql_error(e, &context)),
            Err(_) => Err(SourceError::connection(format!(
                "{context} timed out after {:?}",
                config.connect_timeout
            ))),
        }
    }

    /// Runs `sql`, discarding any rows.
    pub(crate) async fn query_drop(&mut self, sql: &str) -> Result<(), Error> {
        self.query_text(sql).await.map(drop)
    }

    /// Runs `sql` and returns its rows as text (`None` for NULL). For small results.
    pub(crate) async fn query_text(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<Vec<u8>>>>, Error> {
        self.command(COM_QUERY, sql.as_bytes()).await?;
        let Some(columns) = self.result_header().await? else {
            return Ok(Vec::new());
        };
        self.skip_definitions(columns).await?;
        self.pending = true;
        let mut rows = Vec::new();
        loop {
            let packet = self.framed.read_packet().await?;
            if let Some(end) = end_of_rows(packet, self.caps) {
                self.pending = false;
                end?;
                return Ok(rows);
            }
            let mut buf = ParseBuf(packet);
            let mut row = Vec::with_capacity(columns);
            for _ in 0..columns {
                if buf.0.first() == Some(&0xFB) {
                    buf.skip(1);
                    row.push(None);
                } else {
                    let bytes = buf
                        .checked_eat_lenenc_str()
                        .ok_or_else(|| invalid("text row shorter than its values"))?;
                    row.push(Some(bytes.to_vec()));
                }
            }
            rows.push(row);
        }
    }

    /// Prepares `sql`.
    pub(crate) async fn prepare(&mut self, sql: &str) -> Result<Statement, Error> {
        self.command(COM_STMT_PREPARE, sql.as_bytes()).await?;
        let packet = self.framed.read_packet().await?;
        if packet.first() == Some(&0xFF) {
            return Err(server_error(packet, self.caps));
        }
        let ok: StmtPacket = ParseBuf(packet).parse(())?;
        let stmt = Statement {
            id: ok.statement_id(),
            params: ok.num_params(),
        };
        // Parameter and column definitions follow, each list ended by an EOF packet unless
        // CLIENT_DEPRECATE_EOF is on.
        for n in [ok.num_params(), ok.num_columns()] {
            for _ in 0..n {
                self.framed.read_packet().await?;
            }
            if n > 0 && !self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF) {
                self.framed.read_packet().await?;
            }
        }
        Ok(stmt)
    }

    /// Closes `stmt` (the server sends no reply).
    pub(crate) async fn close(&mut self, stmt: Statement) -> Result<(), Error> {
        self.command(COM_STMT_CLOSE, &stmt.id.to_le_bytes()).await
    }

    /// Executes `stmt` with `params` and reads the result set's column definitions; the rows
    /// follow through [`Client::next_row`] until it returns `None`.
    pub(crate) async fn execute(
        &mut self,
        stmt: &Statement,
        params: &[My],
    ) -> Result<Option<Columns>, Error> {
        if params.len() != usize::from(stmt.params) {
            return Err(invalid("wrong number of statement parameters").into());
        }
        let (request, long_data) = ComStmtExecuteRequestBuilder::new(stmt.id).build(params);
        if long_data {
            return Err(invalid("statement parameters longer than one packet").into());
        }
        let mut body = Vec::new();
        request.serialize(&mut body);
        self.drain().await?;
        self.framed.reset_seq();
        self.framed.write_packet(&body).await?;
        let Some(n) = self.result_header().await? else {
            return Ok(None);
        };
        let mut types = Vec::with_capacity(n);
        for _ in 0..n {
            let packet = self.framed.read_packet().await?;
            let column: Column = ParseBuf(packet).parse(())?;
            types.push((column.column_type(), column.flags()));
        }
        if !self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF) {
            self.framed.read_packet().await?;
        }
        self.pending = true;
        Ok(Some(Columns { types }))
    }

    /// The next row of the binary result set [`Client::execute`] opened, or `None` after its
    /// last row.
    pub(crate) async fn next_row<'a>(
        &'a mut self,
        columns: &'a Columns,
    ) -> Result<Option<BinaryRow<'a>>, Error> {
        if !self.pending {
            return Ok(None);
        }
        let packet = self.framed.read_packet().await?;
        if let Some(end) = end_of_rows(packet, self.caps) {
            self.pending = false;
            end?;
            return Ok(None);
        }
        BinaryRow::new(packet, columns)
            .map(Some)
            .map_err(Error::from)
    }

    /// Sends a command packet (after reading what is left of an earlier result set).
    async fn command(&mut self, command: u8, body: &[u8]) -> Result<(), Error> {
        self.drain().await?;
        let mut payload = Vec::with_capacity(body.len() + 1);
        payload.push(command);
        payload.extend_from_slice(body);
        self.framed.reset_seq();
        self.framed.write_packet(&payload).await?;
        Ok(())
    }

    /// Reads the rows of a result set the caller stopped reading.
    async fn drain(&mut self) -> Result<(), Error> {
        while self.pending {
            let packet = self.framed.read_packet().await?;
            if let Some(end) = end_of_rows(packet, self.caps) {
                self.pending = false;
                end?;
            }
        }
        Ok(())
    }

    /// Reads a command's first reply: `None` for an OK packet, else the column count of the
    /// result set whose column definitions follow.
    async fn result_header(&mut self) -> Result<Option<usize>, Error> {
        let packet = self.framed.read_packet().await?;
        match packet.first() {
            Some(0x00) => Ok(None),
            Some(0xFF) => Err(server_error(packet, self.caps)),
            Some(0xFB) => Err(invalid("the server asked for a local file").into()),
            _ => {
                let n = ParseBuf(packet)
                    .checked_eat_lenenc_int()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| invalid("malformed column count"))?;
                Ok(Some(n))
            }
        }
    }

    /// Text results: skips the column definitions [`Client::result_header`] announced.
    async fn skip_definitions(&mut self, n: usize) -> Result<(), Error> {
        for _ in 0..n {
            self.framed.read_packet().await?;
        }
        if !self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF) {
            self.framed.read_packet().await?;
        }
        Ok(())
    }
}

/// One row of a binary result set, decoded column by column.
pub(crate) struct BinaryRow<'a> {
    buf: ParseBuf<'a>,
    nulls: &'a [u8],
    columns: &'a Columns,
    next: usize,
}

impl<'a> BinaryRow<'a> {
    fn new(packet: &'a [u8], columns: &'a Columns) -> io::Result<Self> {
        // 0x00, then a NULL bitmap whose first two bits are unused.
        let bitmap = (columns.len() + 7 + 2) / 8;
        if packet.first() != Some(&0x00) || packet.len() < 1 + bitmap {
            return Err(invalid("malformed binary row"));
        }
        Ok(BinaryRow {
            buf: ParseBuf(&packet[1 + bitmap..]),
            nulls: &packet[1..1 + bitmap],
            columns,
            next: 0,
        })
    }

    /// The next column's value, `None` past the last column.
    pub(crate) fn next_value(&mut self) -> io::Result<Option<My>> {
        let i = self.next;
        let Some(&(ty, flags)) = self.columns.types.get(i) else {
            return Ok(None);
        };
        self.next += 1;
        let bit = i + 2;
        if self.nulls[bit / 8] & (1 << (bit % 8)) != 0 {
            return Ok(Some(My::NULL));
        }
        let v: ValueDeserializer<BinValue> = self.buf.parse((ty, flags))?;
        Ok(Some(v.0))
    }
}

/// `Some` when `packet` ends a result set: `Ok` for the EOF/OK terminator (first byte 0xFE,
/// shorter than a packet part: a row starting with 0xFE is a 16 MiB+ value), `Err` for an
/// ERR packet (a row never starts with 0xFF).
fn end_of_rows(packet: &[u8], caps: CapabilityFlags) -> Option<Result<(), Error>> {
    match packet.first() {
        Some(0xFE) if packet.len() < 0xFF_FFFF => Some(Ok(())),
        Some(0xFF) => Some(Err(server_error(packet, caps))),
        None => Some(Err(invalid("empty packet in a result set").into())),
        _ => None,
    }
}

/// An ERR packet as the driver's error type.
fn server_error(packet: &[u8], caps: CapabilityFlags) -> Error {
    match ParseBuf(packet).parse::<ErrPacket<'_>>(caps) {
        Ok(ErrPacket::Error(e)) => Error::Server(ServerError {
            code: e.error_code(),
            message: e.message_str().into_owned(),
            state: e
                .sql_state_ref()
                .map(|s| s.as_str().into_owned())
                .unwrap_or_default(),
        }),
        Ok(ErrPacket::Progress(_)) => invalid("unexpected progress report").into(),
        Err(e) => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TYPES: [ColumnType; 14] = [
        ColumnType::MYSQL_TYPE_TINY,
        ColumnType::MYSQL_TYPE_SHORT,
        ColumnType::MYSQL_TYPE_LONG,
        ColumnType::MYSQL_TYPE_INT24,
        ColumnType::MYSQL_TYPE_LONGLONG,
        ColumnType::MYSQL_TYPE_FLOAT,
        ColumnType::MYSQL_TYPE_DOUBLE,
        ColumnType::MYSQL_TYPE_YEAR,
        ColumnType::MYSQL_TYPE_DATE,
        ColumnType::MYSQL_TYPE_DATETIME,
        ColumnType::MYSQL_TYPE_TIMESTAMP,
        ColumnType::MYSQL_TYPE_TIME,
        ColumnType::MYSQL_TYPE_NEWDECIMAL,
        ColumnType::MYSQL_TYPE_VAR_STRING,
    ];

    fn columns(types: &[usize]) -> Columns {
        Columns {
            types: types
                .iter()
                .map(|&i| (TYPES[i % TYPES.len()], ColumnFlags::empty()))
                .collect(),
        }
    }

    #[test]
    fn decodes_a_binary_row() {
        let cols = columns(&[4, 13, 9, 6]);
        // 0x00, NULL bitmap (4 columns + 2 → 1 byte; column 3 NULL = bit 5), then values.
        let mut p = vec![0x00, 1 << 5];
        p.extend_from_slice(&(-7i64).to_le_bytes());
        p.extend_from_slice(&[3, b'a', b'b', b'c']);
        p.extend_from_slice(&[7, 0xE8, 0x07, 2, 29, 13, 14, 15]);
        let mut row = BinaryRow::new(&p, &cols).unwrap();
        assert_eq!(row.next_value().unwrap(), Some(My::Int(-7)));
        assert_eq!(row.next_value().unwrap(), Some(My::Bytes(b"abc".to_vec())));
        assert_eq!(
            row.next_value().unwrap(),
            Some(My::Date(2024, 2, 29, 13, 14, 15, 0))
        );
        assert_eq!(row.next_value().unwrap(), Some(My::NULL));
        assert_eq!(row.next_value().unwrap(), None);
    }

    #[test]
    fn tells_rows_from_terminators_and_errors() {
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41;
        assert!(matches!(
            end_of_rows(&[0xFE, 0, 0, 2, 0], caps),
            Some(Ok(()))
        ));
        assert!(end_of_rows(&[0x00, 0], caps).is_none());
        let mut err = vec![0xFF, 0x25, 0x05, b'#'];
        err.extend_from_slice(b"70100Query execution was interrupted");
        match end_of_rows(&err, caps) {
            Some(Err(Error::Server(e))) => {
                assert_eq!(e.code, 1317);
                assert_eq!(e.state, "70100");
                assert_eq!(e.message, "Query execution was interrupted");
            }
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        /// Whatever bytes arrive as a row, decoding returns values or an error.
        #[test]
        fn row_decoding_never_panics(
            types in proptest::collection::vec(0usize..64, 0..12),
            packet in proptest::collection::vec(any::<u8>(), 0..96),
        ) {
            let cols = columns(&types);
            if let Ok(mut row) = BinaryRow::new(&packet, &cols) {
                while let Ok(Some(_)) = row.next_value() {}
            }
            let _ = end_of_rows(&packet, CapabilityFlags::CLIENT_PROTOCOL_41);
        }
    }
}
