//! pgoutput logical replication messages, protocol versions 1 to 4
//! (<https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>).
//!
//! Decoding borrows from the message: strings are `&str`, values and contents `&[u8]`, row
//! images [`TupleData`]. Every field is bounds-checked; a message must be consumed exactly
//! (bytes left over are an error, which catches framing mistakes early).

use std::fmt;
use std::iter::FusedIterator;

use powersync_source_core::position::PgLsn;

use super::error::{DecodeError, DecodeErrorKind};
use super::reader::{Fail, Reader};
use super::relation::Relation;
use super::tuple_data::TupleData;
use super::PgTimestamp;

/// A decoded pgoutput message, borrowing from the bytes it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgOutputMessage<'a> {
    /// `B`: a transaction starts.
    Begin(Begin),
    /// `M`: a logical decoding message (`pg_logical_emit_message`, needs `messages 'true'`).
    Message(LogicalDecodingMessage<'a>),
    /// `C`: a transaction committed.
    Commit(Commit),
    /// `O`: the transaction came from another origin (replication chains).
    Origin(Origin<'a>),
    /// `R`: a table's description.
    Relation(Relation<'a>),
    /// `Y`: a data type's name (sent for non-builtin types before a Relation uses them).
    Type(Type<'a>),
    /// `I`: a row was inserted.
    Insert(Insert<'a>),
    /// `U`: a row was updated.
    Update(Update<'a>),
    /// `D`: a row was deleted.
    Delete(Delete<'a>),
    /// `T`: tables were truncated.
    Truncate(Truncate<'a>),
    /// `S`: a block of a streamed (in-progress) transaction starts (protocol ≥ 2).
    StreamStart(StreamStart),
    /// `E`: the current stream block ends (protocol ≥ 2).
    StreamStop,
    /// `c`: a streamed transaction committed (protocol ≥ 2).
    StreamCommit(StreamCommit),
    /// `A`: a streamed (sub)transaction aborted (protocol ≥ 2).
    StreamAbort(StreamAbort),
    /// `b`: a two-phase transaction's prepare starts (protocol ≥ 3).
    BeginPrepare(BeginPrepare<'a>),
    /// `P`: a two-phase transaction was prepared (protocol ≥ 3).
    Prepare(Prepare<'a>),
    /// `K`: a prepared transaction was committed (protocol ≥ 3).
    CommitPrepared(CommitPrepared<'a>),
    /// `r`: a prepared transaction was rolled back (protocol ≥ 3).
    RollbackPrepared(RollbackPrepared<'a>),
    /// `p`: a streamed transaction was prepared (protocol ≥ 3); same layout as Prepare.
    StreamPrepare(Prepare<'a>),
}

/// `B`: start of a (non-streamed) transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Begin {
    /// The final LSN of the transaction (its commit record).
    pub final_lsn: PgLsn,
    /// Commit timestamp.
    pub commit_time: PgTimestamp,
    /// Transaction id.
    pub xid: u32,
}

/// `M`: a logical decoding message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogicalDecodingMessage<'a> {
    /// Xid of the streamed (sub)transaction; present only inside a stream block (protocol ≥ 2).
    pub xid: Option<u32>,
    /// True when the message was emitted transactionally (flags bit 1).
    pub transactional: bool,
    /// LSN of the message.
    pub lsn: PgLsn,
    /// The message prefix.
    pub prefix: &'a str,
    /// The message content.
    pub content: &'a [u8],
}

/// `C`: commit of a (non-streamed) transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Commit {
    /// Flags (currently unused, 0).
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: PgLsn,
    /// End LSN of the transaction: the position to confirm once it is durable downstream.
    pub end_lsn: PgLsn,
    /// Commit timestamp.
    pub commit_time: PgTimestamp,
}

/// `O`: origin of the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin<'a> {
    /// LSN of the commit on the origin server.
    pub origin_lsn: PgLsn,
    /// Name of the origin.
    pub name: &'a str,
}

/// `Y`: a data type's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Type<'a> {
    /// Xid of the streamed (sub)transaction; present only inside a stream block (protocol ≥ 2).
    pub xid: Option<u32>,
    /// OID of the type.
    pub oid: u32,
    /// Schema name (empty string for `pg_catalog`).
    pub namespace: &'a str,
    /// Type name.
    pub name: &'a str,
}

/// `I`: an inserted row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Insert<'a> {
    /// Xid of the streamed (sub)transaction; present only inside a stream block (protocol ≥ 2).
    pub xid: Option<u32>,
    /// OID of the relation (see [`Relation::oid`]).
    pub relation_oid: u32,
    /// The new row.
    pub new: TupleData<'a>,
}

/// The old row image of an Update or Delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OldTuple<'a> {
    /// `K`: only the replica identity (key) columns are meaningful; the others are null.
    Key(TupleData<'a>),
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full(TupleData<'a>),
}

impl<'a> OldTuple<'a> {
    /// The row image, whichever kind.
    #[inline]
    pub fn tuple(&self) -> TupleData<'a> {
        match *self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }

    /// True for [`OldTuple::Key`].
    #[inline]
    pub fn is_key(&self) -> bool {
        matches!(self, OldTuple::Key(_))
    }
}

/// `U`: an updated row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Update<'a> {
    /// Xid of the streamed (sub)transaction; present only inside a stream block (protocol ≥ 2).
    pub xid: Option<u32>,
    /// OID of the relation.
    pub relation_oid: u32,
    /// The old row: key columns when the key changed (`K`), or the whole row with
    /// `REPLICA IDENTITY FULL` (`O`); absent otherwise.
    pub old: Option<OldTuple<'a>>,
    /// The new row; TOASTed columns that did not change are [`ColumnValue::UnchangedToast`].
    ///
    /// [`ColumnValue::UnchangedToast`]: super::ColumnValue::UnchangedToast
    pub new: TupleData<'a>,
}

/// `D`: a deleted row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delete<'a> {
    /// Xid of the streamed (sub)transaction; present only inside a stream block (protocol ≥ 2).
    pub xid: Option<u32>,
    /// OID of the relation.
    pub relation_oid: u32,
    /// The old row: key columns (`K`) or the whole row (`O`).
    pub old: OldTuple<'a>,
}

/// `T`: truncated tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Truncate<'a> {
    /// Xid of the streamed (sub)transaction; present only inside a stream block (protocol ≥ 2).
    pub xid: Option<u32>,
    /// Option bits: [`Truncate::CASCADE`], [`Truncate::RESTART_IDENTITY`].
    pub options: u8,
    /// OIDs of the truncated relations.
    pub relation_oids: OidList<'a>,
}

impl Truncate<'_> {
    /// Option bit: `TRUNCATE ... CASCADE`.
    pub const CASCADE: u8 = 1;
    /// Option bit: `TRUNCATE ... RESTART IDENTITY`.
    pub const RESTART_IDENTITY: u8 = 2;

    /// True for `TRUNCATE ... CASCADE`.
    #[inline]
    pub fn cascade(&self) -> bool {
        self.options & Self::CASCADE != 0
    }

    /// True for `TRUNCATE ... RESTART IDENTITY`.
    #[inline]
    pub fn restart_identity(&self) -> bool {
        self.options & Self::RESTART_IDENTITY != 0
    }
}

/// A validated list of `Int32` OIDs, borrowed from the message.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OidList<'a> {
    data: &'a [u8],
}

impl<'a> OidList<'a> {
    /// Number of OIDs.
    #[inline]
    pub fn len(&self) -> usize {
        self.data.len() / 4
    }

    /// True when the list is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.data.len() < 4
    }

    /// The `i`-th OID.
    #[inline]
    pub fn get(&self, i: usize) -> Option<u32> {
        let start = i.checked_mul(4)?;
        let chunk = self.data.get(start..start.checked_add(4)?)?;
        chunk.try_into().ok().map(u32::from_be_bytes)
    }

    /// The OIDs in order.
    #[inline]
    pub fn iter(&self) -> OidIter<'a> {
        OidIter {
            chunks: self.data.chunks_exact(4),
        }
    }
}

impl fmt::Debug for OidList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for OidList<'a> {
    type Item = u32;
    type IntoIter = OidIter<'a>;
    #[inline]
    fn into_iter(self) -> OidIter<'a> {
        self.iter()
    }
}

/// Iterator over an [`OidList`].
#[derive(Debug, Clone)]
pub struct OidIter<'a> {
    chunks: std::slice::ChunksExact<'a, u8>,
}

impl Iterator for OidIter<'_> {
    type Item = u32;

    #[inline]
    fn next(&mut self) -> Option<u32> {
        let c = self.chunks.next()?;
        Some(u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl ExactSizeIterator for OidIter<'_> {}
impl FusedIterator for OidIter<'_> {}

/// `S`: start of a block of a streamed transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamStart {
    /// Xid of the streamed transaction.
    pub xid: u32,
    /// True for the first block of this transaction.
    pub first_segment: bool,
}

/// `c`: commit of a streamed transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamCommit {
    /// Xid of the transaction.
    pub xid: u32,
    /// Flags (currently unused, 0).
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: PgLsn,
    /// End LSN of the transaction.
    pub end_lsn: PgLsn,
    /// Commit timestamp.
    pub commit_time: PgTimestamp,
}

/// `A`: abort of a streamed transaction or of one of its subtransactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamAbort {
    /// Xid of the (top-level) transaction.
    pub xid: u32,
    /// Xid of the aborted subtransaction (equal to `xid` for the top-level transaction).
    pub subxact_xid: u32,
    /// LSN of the abort; present from protocol 4 with `streaming 'parallel'`.
    pub abort_lsn: Option<PgLsn>,
    /// Abort timestamp; present together with `abort_lsn`.
    pub abort_time: Option<PgTimestamp>,
}

/// `b`: start of a prepared (two-phase) transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BeginPrepare<'a> {
    /// LSN of the prepare.
    pub prepare_lsn: PgLsn,
    /// End LSN of the prepared transaction.
    pub end_lsn: PgLsn,
    /// Prepare timestamp.
    pub prepare_time: PgTimestamp,
    /// Transaction id.
    pub xid: u32,
    /// The user-defined GID of the prepared transaction.
    pub gid: &'a str,
}

/// `P` (Prepare) and `p` (Stream Prepare).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prepare<'a> {
    /// Flags (currently unused, 0).
    pub flags: u8,
    /// LSN of the prepare.
    pub prepare_lsn: PgLsn,
    /// End LSN of the prepared transaction.
    pub end_lsn: PgLsn,
    /// Prepare timestamp.
    pub prepare_time: PgTimestamp,
    /// Transaction id.
    pub xid: u32,
    /// The user-defined GID of the prepared transaction.
    pub gid: &'a str,
}

/// `K`: commit of a prepared transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommitPrepared<'a> {
    /// Flags (currently unused, 0).
    pub flags: u8,
    /// LSN of the commit of the prepared transaction.
    pub commit_lsn: PgLsn,
    /// End LSN of the commit of the prepared transaction.
    pub end_lsn: PgLsn,
    /// Commit timestamp.
    pub commit_time: PgTimestamp,
    /// Transaction id.
    pub xid: u32,
    /// The user-defined GID of the prepared transaction.
    pub gid: &'a str,
}

/// `r`: rollback of a prepared transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RollbackPrepared<'a> {
    /// Flags (currently unused, 0).
    pub flags: u8,
    /// End LSN of the prepared transaction.
    pub prepare_end_lsn: PgLsn,
    /// End LSN of the rollback of the prepared transaction.
    pub rollback_end_lsn: PgLsn,
    /// Prepare timestamp.
    pub prepare_time: PgTimestamp,
    /// Rollback timestamp.
    pub rollback_time: PgTimestamp,
    /// Transaction id.
    pub xid: u32,
    /// The user-defined GID of the prepared transaction.
    pub gid: &'a str,
}

impl<'a> PgOutputMessage<'a> {
    /// Decodes one pgoutput message (the bytes of [`XLogData::data`](super::XLogData::data), or
    /// one row of `pg_logical_slot_get_binary_changes`).
    ///
    /// `in_stream` must be true between a Stream Start and a Stream Stop (protocol ≥ 2): there,
    /// Relation, Type, Insert, Update, Delete, Truncate and Message carry the streamed
    /// (sub)transaction's xid right after the type byte. [`PgOutputDecoder`] tracks this itself.
    #[inline]
    pub fn decode(buf: &'a [u8], in_stream: bool) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf, "pgoutput");
        Self::read(&mut r, in_stream).map_err(|Fail| r.into_error())
    }

    #[inline(always)]
    fn read(r: &mut Reader<'a>, in_stream: bool) -> Result<Self, Fail> {
        let tag = r.u8()?;
        let msg = match tag {
            b'I' => {
                r.context = "Insert";
                let xid = stream_xid(r, in_stream)?;
                let relation_oid = r.u32()?;
                expect_new_marker(r)?;
                PgOutputMessage::Insert(Insert {
                    xid,
                    relation_oid,
                    new: TupleData::read(r)?,
                })
            }
            b'U' => {
                r.context = "Update";
                let xid = stream_xid(r, in_stream)?;
                let relation_oid = r.u32()?;
                let old = match r.u8()? {
                    b'N' => None,
                    b'K' => Some(OldTuple::Key(TupleData::read(r)?)),
                    b'O' => Some(OldTuple::Full(TupleData::read(r)?)),
                    m => return Err(unexpected_marker(r, m)),
                };
                if old.is_some() {
                    expect_new_marker(r)?;
                }
                PgOutputMessage::Update(Update {
                    xid,
                    relation_oid,
                    old,
                    new: TupleData::read(r)?,
                })
            }
            b'D' => {
                r.context = "Delete";
                let xid = stream_xid(r, in_stream)?;
                let relation_oid = r.u32()?;
                let old = match r.u8()? {
                    b'K' => OldTuple::Key(TupleData::read(r)?),
                    b'O' => OldTuple::Full(TupleData::read(r)?),
                    m => return Err(unexpected_marker(r, m)),
                };
                PgOutputMessage::Delete(Delete {
                    xid,
                    relation_oid,
                    old,
                })
            }
            b'B' => {
                r.context = "Begin";
                PgOutputMessage::Begin(Begin {
                    final_lsn: r.lsn()?,
                    commit_time: r.timestamp()?,
                    xid: r.u32()?,
                })
            }
            b'C' => {
                r.context = "Commit";
                PgOutputMessage::Commit(Commit {
                    flags: r.u8()?,
                    commit_lsn: r.lsn()?,
                    end_lsn: r.lsn()?,
                    commit_time: r.timestamp()?,
                })
            }
            b'M' => {
                r.context = "Message";
                let xid = stream_xid(r, in_stream)?;
                PgOutputMessage::Message(LogicalDecodingMessage {
                    xid,
                    transactional: r.u8()? & 1 != 0,
                    lsn: r.lsn()?,
                    prefix: r.cstr("prefix")?,
                    content: r.len_prefixed("content")?,
                })
            }
            b'O' => {
                r.context = "Origin";
                PgOutputMessage::Origin(Origin {
                    origin_lsn: r.lsn()?,
                    name: r.cstr("origin name")?,
                })
            }
            b'R' => {
                r.context = "Relation";
                let xid = stream_xid(r, in_stream)?;
                PgOutputMessage::Relation(Relation::read(r, xid)?)
            }
            b'Y' => {
                r.context = "Type";
                PgOutputMessage::Type(Type {
                    xid: stream_xid(r, in_stream)?,
                    oid: r.u32()?,
                    namespace: r.cstr("namespace")?,
                    name: r.cstr("type name")?,
                })
            }
            b'T' => {
                r.context = "Truncate";
                let xid = stream_xid(r, in_stream)?;
                let n = r.u32()?;
                let options = r.u8()?;
                // Bounded by the message: checked against the remaining bytes, nothing reserved.
                let len = (n as usize).checked_mul(4).ok_or(Fail)?;
                PgOutputMessage::Truncate(Truncate {
                    xid,
                    options,
                    relation_oids: OidList {
                        data: r.bytes(len)?,
                    },
                })
            }
            b'S' => {
                r.context = "Stream Start";
                PgOutputMessage::StreamStart(StreamStart {
                    xid: r.u32()?,
                    first_segment: r.u8()? != 0,
                })
            }
            b'E' => {
                r.context = "Stream Stop";
                PgOutputMessage::StreamStop
            }
            b'c' => {
                r.context = "Stream Commit";
                PgOutputMessage::StreamCommit(StreamCommit {
                    xid: r.u32()?,
                    flags: r.u8()?,
                    commit_lsn: r.lsn()?,
                    end_lsn: r.lsn()?,
                    commit_time: r.timestamp()?,
                })
            }
            b'A' => {
                r.context = "Stream Abort";
                let xid = r.u32()?;
                let subxact_xid = r.u32()?;
                // Protocol 4 with parallel streaming appends the abort LSN and time; the message
                // length tells which form this is.
                let (abort_lsn, abort_time) = if r.rest().is_empty() {
                    (None, None)
                } else {
                    (Some(r.lsn()?), Some(r.timestamp()?))
                };
                PgOutputMessage::StreamAbort(StreamAbort {
                    xid,
                    subxact_xid,
                    abort_lsn,
                    abort_time,
                })
            }
            b'b' => {
                r.context = "Begin Prepare";
                PgOutputMessage::BeginPrepare(BeginPrepare {
                    prepare_lsn: r.lsn()?,
                    end_lsn: r.lsn()?,
                    prepare_time: r.timestamp()?,
                    xid: r.u32()?,
                    gid: r.cstr("gid")?,
                })
            }
            b'P' => {
                r.context = "Prepare";
                PgOutputMessage::Prepare(read_prepare(r)?)
            }
            b'p' => {
                r.context = "Stream Prepare";
                PgOutputMessage::StreamPrepare(read_prepare(r)?)
            }
            b'K' => {
                r.context = "Commit Prepared";
                PgOutputMessage::CommitPrepared(CommitPrepared {
                    flags: r.u8()?,
                    commit_lsn: r.lsn()?,
                    end_lsn: r.lsn()?,
                    commit_time: r.timestamp()?,
                    xid: r.u32()?,
                    gid: r.cstr("gid")?,
                })
            }
            b'r' => {
                r.context = "Rollback Prepared";
                PgOutputMessage::RollbackPrepared(RollbackPrepared {
                    flags: r.u8()?,
                    prepare_end_lsn: r.lsn()?,
                    rollback_end_lsn: r.lsn()?,
                    prepare_time: r.timestamp()?,
                    rollback_time: r.timestamp()?,
                    xid: r.u32()?,
                    gid: r.cstr("gid")?,
                })
            }
            other => return Err(r.fail_at(DecodeErrorKind::UnknownMessageType(other), 0)),
        };
        r.finish()?;
        Ok(msg)
    }

    /// The message's type byte (`b'I'`, `b'U'`, ...).
    pub fn type_byte(&self) -> u8 {
        match self {
            PgOutputMessage::Begin(_) => b'B',
            PgOutputMessage::Message(_) => b'M',
            PgOutputMessage::Commit(_) => b'C',
            PgOutputMessage::Origin(_) => b'O',
            PgOutputMessage::Relation(_) => b'R',
            PgOutputMessage::Type(_) => b'Y',
            PgOutputMessage::Insert(_) => b'I',
            PgOutputMessage::Update(_) => b'U',
            PgOutputMessage::Delete(_) => b'D',
            PgOutputMessage::Truncate(_) => b'T',
            PgOutputMessage::StreamStart(_) => b'S',
            PgOutputMessage::StreamStop => b'E',
            PgOutputMessage::StreamCommit(_) => b'c',
            PgOutputMessage::StreamAbort(_) => b'A',
            PgOutputMessage::BeginPrepare(_) => b'b',
            PgOutputMessage::Prepare(_) => b'P',
            PgOutputMessage::CommitPrepared(_) => b'K',
            PgOutputMessage::RollbackPrepared(_) => b'r',
            PgOutputMessage::StreamPrepare(_) => b'p',
        }
    }
}

#[inline]
fn stream_xid(r: &mut Reader<'_>, in_stream: bool) -> Result<Option<u32>, Fail> {
    if in_stream {
        r.u32().map(Some)
    } else {
        Ok(None)
    }
}

#[inline]
fn expect_new_marker(r: &mut Reader<'_>) -> Result<(), Fail> {
    match r.u8()? {
        b'N' => Ok(()),
        m => Err(unexpected_marker(r, m)),
    }
}

/// The tuple marker `m` just read was not the expected one.
#[cold]
fn unexpected_marker(r: &mut Reader<'_>, m: u8) -> Fail {
    let at = r.offset() - 1;
    r.fail_at(DecodeErrorKind::UnexpectedTupleMarker(m), at)
}

#[inline]
fn read_prepare<'a>(r: &mut Reader<'a>) -> Result<Prepare<'a>, Fail> {
    Ok(Prepare {
        flags: r.u8()?,
        prepare_lsn: r.lsn()?,
        end_lsn: r.lsn()?,
        prepare_time: r.timestamp()?,
        xid: r.u32()?,
        gid: r.cstr("gid")?,
    })
}

/// Decodes a sequence of pgoutput messages, tracking whether it is inside a stream block
/// (between Stream Start and Stream Stop) so that streamed messages' xids are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PgOutputDecoder {
    in_stream: bool,
}

impl PgOutputDecoder {
    /// A decoder outside any stream block.
    pub fn new() -> Self {
        Self::default()
    }

    /// True between a Stream Start and the matching Stream Stop.
    #[inline]
    pub fn in_stream(&self) -> bool {
        self.in_stream
    }

    /// Decodes the next message with [`PgOutputMessage::decode`] and updates the stream state.
    /// A message that fails to decode leaves the state unchanged.
    #[inline]
    pub fn decode<'a>(&mut self, buf: &'a [u8]) -> Result<PgOutputMessage<'a>, DecodeError> {
        let msg = PgOutputMessage::decode(buf, self.in_stream)?;
        match msg {
            PgOutputMessage::StreamStart(_) => self.in_stream = true,
            PgOutputMessage::StreamStop => self.in_stream = false,
            _ => {}
        }
        Ok(msg)
    }
}
