//! In-progress transactions the server streams before their commit (pgoutput `streaming`,
//! protocol 2+, PostgreSQL 14+).
//!
//! Once a transaction's changes outgrow the server's `logical_decoding_work_mem`, the
//! walsender sends them in blocks (Stream Start … Stream Stop) while the transaction runs,
//! instead of spilling them to its own disk and sending everything after the commit. Blocks of
//! several transactions may interleave with each other and with ordinary transactions; each
//! ends in a Stream Commit or a Stream Abort (of the whole transaction or of a
//! subtransaction).
//!
//! The event contract does not change: a host still sees a transaction only once it
//! committed, whole and in order, between `Begin` and `Commit`. So the messages of each open
//! transaction are kept here as the server sent them (raw pgoutput bytes, tagged with their
//! subtransaction's xid) and replayed through the ordinary decoding path at its Stream
//! Commit. All open transactions together keep at most a budget of bytes in memory; beyond
//! it the largest one moves to a temporary file in the spill directory, where the rest of it
//! is appended. The file is unlinked as soon as it is created (on Unix), so the space is
//! freed when the transaction commits or aborts, when the session ends, and when the
//! process dies: nothing is left to clean on restart. A crash loses nothing either: the slot
//! has not confirmed the transaction, so the server streams it again from its start.
//!
//! Records are `subxid: u32 BE, len: u32 BE, bytes`. A subtransaction abort cuts the
//! transaction's records back to the first record of that subtransaction, in memory or in the
//! file, as PostgreSQL's own subscriber does (`stream_abort_internal` in
//! `src/backend/replication/logical/worker.c`): while a subtransaction is open every change
//! belongs to it or to a subtransaction inside it, and a transactional logical message inside
//! it carries the top-level xid (`pgoutput_message`: `if (in_streaming) xid = txn->xid`), so
//! only the position can tell it was rolled back. (A message emitted in a subtransaction
//! before its first row change cannot be told apart and is kept.)
//!
//! A spill file that cannot be written or read is remembered: the next session asks for no
//! streaming (see [`StreamedTransactions::take_spill_failure`]), so the server sends large
//! transactions whole at commit instead of the same failure repeating on every retry.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use powersync_source_core::SourceError;

use crate::pgoutput::PgOutputMessage;

/// Write and read buffer of a spill file: large enough that the system calls are few.
const FILE_BUFFER: usize = 256 * 1024;

/// Record header: subtransaction xid and message length.
const HEADER: usize = 8;

/// Distinguishes the spill files of one process (several streams may share a directory).
static SPILL_SEQ: AtomicU64 = AtomicU64::new(0);

/// The open streamed transactions of one replication session.
pub(super) struct StreamedTransactions {
    open: HashMap<u32, Buffered>,
    /// Bytes of records held in memory, all transactions together.
    in_memory: usize,
    budget: usize,
    dir: PathBuf,
    /// Bytes written to spill files since the stream started (for logs and tests).
    spilled: u64,
    /// Set when a spill file failed (shared with replays, which read the files).
    spill_failed: Arc<AtomicBool>,
}

/// The messages of one open transaction.
#[derive(Default)]
struct Buffered {
    /// Records in memory; empty once the transaction spilled.
    mem: Vec<u8>,
    /// The spill file, once the transaction outgrew its share of the budget.
    file: Option<SpillFile>,
    /// Bytes of records kept (in `mem`, or in the file once spilled): offsets are the same
    /// in both, since the file starts with what was in memory.
    len: u64,
    /// Subtransactions in the order of their first record, with that record's offset.
    subs: Vec<(u32, u64)>,
}

struct SpillFile {
    writer: BufWriter<File>,
    /// Set where the file could not be unlinked while open (not Unix): removed on drop.
    path: Option<PathBuf>,
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl StreamedTransactions {
    /// No open transaction; `budget` bytes in memory at most, spill files in `dir`.
    pub(super) fn new(budget: u64, dir: PathBuf) -> Self {
        StreamedTransactions {
            open: HashMap::new(),
            in_memory: 0,
            budget: usize::try_from(budget).unwrap_or(usize::MAX),
            dir,
            spilled: 0,
            spill_failed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether a spill file failed since the last call (and forget it). The session then
    /// restarts without streaming: the server keeps large transactions until their commit.
    pub(super) fn take_spill_failure(&self) -> bool {
        self.spill_failed.swap(false, Ordering::Relaxed)
    }

    /// Bytes written to spill files so far.
    pub(super) fn spilled_bytes(&self) -> u64 {
        self.spilled
    }

    /// Forgets every open transaction (the session ended: the server streams them again).
    pub(super) fn clear(&mut self) {
        self.open.clear();
        self.in_memory = 0;
    }

    /// A Stream Start: the first block of `xid` opens it; a later block must find it open.
    pub(super) fn start_block(&mut self, xid: u32, first_segment: bool) -> Result<(), SourceError> {
        match (first_segment, self.open.contains_key(&xid)) {
            (true, false) => {
                self.open.insert(xid, Buffered::default());
                Ok(())
            }
            (false, true) => Ok(()),
            // Either would mean the server and this session disagree about what was sent:
            // replaying could lose or repeat changes, so restart the session instead.
            (true, true) => Err(SourceError::connection(format!(
                "the server started streamed transaction {xid} a second time"
            ))),
            (false, false) => Err(SourceError::connection(format!(
                "the server continued streamed transaction {xid}, whose start this session \
                 did not receive"
            ))),
        }
    }

    /// Keeps one message of the stream block of `top` (`sub`: the (sub)transaction it
    /// belongs to).
    pub(super) fn append(&mut self, top: u32, sub: u32, msg: &[u8]) -> Result<(), SourceError> {
        let len = u32::try_from(msg.len())
            .map_err(|_| SourceError::decode("streamed message longer than 4 GiB"))?;
        let txn = self.open.get_mut(&top).ok_or_else(|| {
            SourceError::connection(format!(
                "a change of streamed transaction {top} outside its stream"
            ))
        })?;
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(&sub.to_be_bytes());
        header[4..].copy_from_slice(&len.to_be_bytes());
        if sub != top && !txn.subs.iter().any(|(x, _)| *x == sub) {
            txn.subs.push((sub, txn.len));
        }
        txn.len += (HEADER + msg.len()) as u64;
        if let Some(file) = &mut txn.file {
            self.spilled += (HEADER + msg.len()) as u64;
            return file
                .writer
                .write_all(&header)
                .and_then(|()| file.writer.write_all(msg))
                .map_err(|e| spill_error(&self.dir, &self.spill_failed, e));
        }
        txn.mem.extend_from_slice(&header);
        txn.mem.extend_from_slice(msg);
        self.in_memory += HEADER + msg.len();
        while self.in_memory > self.budget {
            // The largest transaction in memory moves to a file: the fewest moves for the
            // most memory, and the small ones (most likely to commit soon) stay cheap.
            let Some((&xid, _)) = self
                .open
                .iter()
                .filter(|(_, t)| !t.mem.is_empty())
                .max_by_key(|(_, t)| t.mem.len())
            else {
                break;
            };
            self.spill(xid)?;
        }
        Ok(())
    }

    /// Moves the records of `xid` from memory to a new spill file.
    fn spill(&mut self, xid: u32) -> Result<(), SourceError> {
        let Some(txn) = self.open.get_mut(&xid) else {
            return Ok(());
        };
        let mut file = create_spill_file(&self.dir, xid)
            .map_err(|e| spill_error(&self.dir, &self.spill_failed, e))?;
        let mem = std::mem::take(&mut txn.mem);
        file.writer
            .write_all(&mem)
            .map_err(|e| spill_error(&self.dir, &self.spill_failed, e))?;
        tracing::debug!(
            target: "powersync_source_postgres",
            "streamed transaction {xid} outgrew the memory budget ({} bytes): spilled {} bytes to {}",
            self.budget,
            mem.len(),
            self.dir.display()
        );
        self.in_memory -= mem.len();
        self.spilled += mem.len() as u64;
        txn.file = Some(file);
        Ok(())
    }

    /// A Stream Abort: the whole transaction (`sub == top`) or one subtransaction, whose
    /// records (and those of every subtransaction that started after it) are cut off.
    pub(super) fn abort(&mut self, top: u32, sub: u32) -> Result<(), SourceError> {
        if top == sub {
            if let Some(txn) = self.open.remove(&top) {
                self.in_memory -= txn.mem.len();
            }
            return Ok(());
        }
        let Some(txn) = self.open.get_mut(&top) else {
            return Ok(());
        };
        // A subtransaction without records (it only held locks, or only a message before
        // its first change) leaves nothing to cut.
        let Some(i) = txn.subs.iter().position(|(x, _)| *x == sub) else {
            return Ok(());
        };
        let cut = txn.subs[i].1;
        txn.subs.truncate(i);
        txn.len = cut;
        match &mut txn.file {
            Some(file) => {
                let dir = &self.dir;
                let failed = &self.spill_failed;
                file.writer
                    .flush()
                    .and_then(|()| file.writer.get_ref().set_len(cut))
                    .and_then(|()| file.writer.get_mut().seek(SeekFrom::Start(cut)).map(drop))
                    .map_err(|e| spill_error(dir, failed, e))?;
            }
            None => {
                let cut = usize::try_from(cut)
                    .unwrap_or(usize::MAX)
                    .min(txn.mem.len());
                self.in_memory -= txn.mem.len() - cut;
                txn.mem.truncate(cut);
            }
        }
        Ok(())
    }

    /// A Stream Commit: the transaction's messages, in the order they arrived, without those
    /// of aborted subtransactions. A transaction never seen replays nothing (pgoutput sends a
    /// Stream Start for every streamed transaction, so this should not happen; the Commit
    /// still ends the transaction at its position).
    pub(super) fn commit(&mut self, xid: u32) -> Result<Replay, SourceError> {
        let Some(txn) = self.open.remove(&xid) else {
            return Ok(Replay::empty());
        };
        self.in_memory -= txn.mem.len();
        let source = match txn.file {
            None => Source::Memory {
                mem: txn.mem,
                at: 0,
            },
            Some(mut file) => {
                let dir = &self.dir;
                let failed = &self.spill_failed;
                file.writer
                    .flush()
                    .map_err(|e| spill_error(dir, failed, e))?;
                let mut f = file
                    .writer
                    .get_ref()
                    .try_clone()
                    .map_err(|e| spill_error(dir, failed, e))?;
                f.seek(SeekFrom::Start(0))
                    .map_err(|e| spill_error(dir, failed, e))?;
                Source::File {
                    reader: BufReader::with_capacity(FILE_BUFFER, f),
                    _file: file,
                    buf: Vec::new(),
                }
            }
        };
        Ok(Replay {
            source,
            dir: self.dir.clone(),
            spill_failed: Arc::clone(&self.spill_failed),
        })
    }
}

/// The messages of a committed streamed transaction, read back one at a time.
pub(super) struct Replay {
    source: Source,
    dir: PathBuf,
    spill_failed: Arc<AtomicBool>,
}

enum Source {
    Memory {
        mem: Vec<u8>,
        at: usize,
    },
    File {
        reader: BufReader<File>,
        /// Keeps the file (and its removal on drop where it could not be unlinked).
        _file: SpillFile,
        /// The current message.
        buf: Vec<u8>,
    },
}

impl Replay {
    fn empty() -> Self {
        Replay {
            source: Source::Memory {
                mem: Vec::new(),
                at: 0,
            },
            dir: PathBuf::new(),
            spill_failed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The next message (raw pgoutput bytes, as sent inside the stream block), or `None`
    /// after the last.
    pub(super) fn next_message(&mut self) -> Result<Option<&[u8]>, SourceError> {
        match &mut self.source {
            Source::Memory { mem, at } => {
                let Some(header) = mem.get(*at..*at + HEADER) else {
                    return Ok(None);
                };
                let (_, len) = parse_header(header);
                let start = *at + HEADER;
                *at = start + len;
                mem.get(start..start + len).map(Some).ok_or_else(|| {
                    SourceError::decode("streamed transaction buffer: truncated record")
                })
            }
            Source::File { reader, buf, .. } => {
                let mut header = [0u8; HEADER];
                match reader.read_exact(&mut header) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                    Err(e) => return Err(spill_error(&self.dir, &self.spill_failed, e)),
                }
                let (_, len) = parse_header(&header);
                buf.resize(len, 0);
                reader
                    .read_exact(buf)
                    .map_err(|e| spill_error(&self.dir, &self.spill_failed, e))?;
                Ok(Some(buf.as_slice()))
            }
        }
    }
}

fn parse_header(h: &[u8]) -> (u32, usize) {
    let sub = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
    (sub, len)
}

/// The (sub)transaction a message inside a stream block belongs to; `None` for messages
/// that carry no xid (Origin).
pub(super) fn message_xid(msg: &PgOutputMessage<'_>) -> Option<u32> {
    match msg {
        PgOutputMessage::Insert(m) => m.xid,
        PgOutputMessage::Update(m) => m.xid,
        PgOutputMessage::Delete(m) => m.xid,
        PgOutputMessage::Truncate(m) => m.xid,
        PgOutputMessage::Relation(m) => m.xid,
        PgOutputMessage::Type(m) => m.xid,
        PgOutputMessage::Message(m) => m.xid,
        _ => None,
    }
}

/// Creates a spill file for `xid` in `dir` and, where the system allows it, unlinks it at
/// once: the open handle keeps the data, and no file outlives the process.
fn create_spill_file(dir: &Path, xid: u32) -> std::io::Result<SpillFile> {
    let seq = SPILL_SEQ.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!(
        "powersync-pg-stream-{}-{seq}-{xid}.spill",
        std::process::id()
    ));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let path = if cfg!(unix) {
        std::fs::remove_file(&path)?;
        None
    } else {
        Some(path)
    };
    Ok(SpillFile {
        writer: BufWriter::with_capacity(FILE_BUFFER, file),
        path,
    })
}

fn spill_error(dir: &Path, failed: &AtomicBool, e: std::io::Error) -> SourceError {
    // Retryable, but not the same way again: the session restarts from the last boundary
    // without streaming (`take_spill_failure`), and the server sends the transaction whole at
    // its commit. Retrying with streaming would repeat the failure on every attempt, each
    // attempt counting as healthy once the first message arrived.
    failed.store(true, Ordering::Relaxed);
    SourceError::connection(format!(
        "spill file of a streamed transaction in {}: {e}; continuing without streaming \
         in-progress transactions",
        dir.display()
    ))
    .with_hint("set spill_dir to a writable directory with room for the largest transaction")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(mut r: Replay) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(m) = r.next_message().unwrap() {
            out.push(m.to_vec());
        }
        out
    }

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn streamed_in_memory_replays_in_order_without_aborted_subtransactions() {
        let d = dir();
        let mut s = StreamedTransactions::new(1 << 20, d.path().to_path_buf());
        s.start_block(7, true).unwrap();
        s.append(7, 7, b"a").unwrap();
        s.append(7, 8, b"b").unwrap();
        s.start_block(9, true).unwrap();
        s.append(9, 9, b"other").unwrap();
        // ROLLBACK TO SAVEPOINT: the abort of 8 comes before the top level writes again.
        s.abort(7, 8).unwrap();
        s.start_block(7, false).unwrap();
        s.append(7, 7, b"c").unwrap();
        s.abort(9, 9).unwrap();
        assert_eq!(drain(s.commit(7).unwrap()), [b"a".to_vec(), b"c".to_vec()]);
        assert!(drain(s.commit(9).unwrap()).is_empty(), "aborted whole");
        assert_eq!(s.in_memory, 0);
        assert_eq!(s.spilled_bytes(), 0);
    }

    #[test]
    fn streamed_over_budget_spills_the_largest_and_replays_from_the_file() {
        let d = dir();
        let mut s = StreamedTransactions::new(100, d.path().to_path_buf());
        s.start_block(1, true).unwrap();
        s.start_block(2, true).unwrap();
        s.append(2, 2, &[2u8; 10]).unwrap();
        let big: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 30]).collect();
        // Records 40.. belong to subtransaction 5, rolled back.
        for (i, m) in big.iter().enumerate() {
            s.append(1, if i >= 40 { 5 } else { 1 }, m).unwrap();
        }
        s.abort(1, 5).unwrap();
        assert!(s.spilled_bytes() > 0);
        assert!(s.in_memory <= 100, "{}", s.in_memory);
        assert!(s.open[&1].file.is_some() && s.open[&2].file.is_none());
        // Unlinked at creation: nothing is visible in the directory, even while open.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        // After the rollback the transaction goes on (appended where the cut was).
        s.append(1, 1, b"after").unwrap();
        let mut expect = big[..40].to_vec();
        expect.push(b"after".to_vec());
        assert_eq!(drain(s.commit(1).unwrap()), expect);
        assert_eq!(drain(s.commit(2).unwrap()), [vec![2u8; 10]]);
        assert_eq!(s.in_memory, 0);
    }

    #[test]
    fn streamed_zero_budget_spills_at_once() {
        let d = dir();
        let mut s = StreamedTransactions::new(0, d.path().to_path_buf());
        s.start_block(3, true).unwrap();
        s.append(3, 3, b"x").unwrap();
        s.append(3, 3, b"").unwrap();
        assert_eq!(s.spilled_bytes(), 17);
        assert_eq!(drain(s.commit(3).unwrap()), [b"x".to_vec(), Vec::new()]);
    }

    #[test]
    fn streamed_blocks_must_agree_with_what_was_received() {
        let d = dir();
        let mut s = StreamedTransactions::new(10, d.path().to_path_buf());
        assert!(s.start_block(4, false).is_err());
        s.start_block(4, true).unwrap();
        assert!(s.start_block(4, true).is_err());
        assert!(s.append(5, 5, b"x").is_err());
        s.clear();
        assert!(s.start_block(4, false).is_err(), "cleared with the session");
        assert!(
            drain(s.commit(42).unwrap()).is_empty(),
            "never seen: nothing"
        );
    }

    #[test]
    fn streamed_unwritable_dir_is_an_error_and_turns_streaming_off() {
        let mut s = StreamedTransactions::new(0, PathBuf::from("/nonexistent/powersync"));
        assert!(!s.take_spill_failure());
        s.start_block(1, true).unwrap();
        let e = s.append(1, 1, b"x").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/powersync"), "{e}");
        assert!(s.take_spill_failure(), "remembered for the next session");
        assert!(!s.take_spill_failure(), "once");
    }

    /// A transactional logical message inside a subtransaction carries the top-level xid
    /// (pgoutput.c, `pgoutput_message`); a rollback of the subtransaction must drop it too.
    #[test]
    fn streamed_subtransaction_abort_cuts_everything_after_its_first_record() {
        for budget in [1 << 20, 0] {
            let d = dir();
            let mut s = StreamedTransactions::new(budget, d.path().to_path_buf());
            s.start_block(10, true).unwrap();
            s.append(10, 10, b"top-1").unwrap();
            s.append(10, 11, b"sub-row").unwrap();
            s.append(10, 10, b"message-in-sub").unwrap();
            s.append(10, 12, b"nested-row").unwrap();
            s.abort(10, 12).unwrap();
            s.abort(10, 11).unwrap();
            // A subtransaction with no records: nothing to cut.
            s.abort(10, 99).unwrap();
            s.append(10, 13, b"later-sub").unwrap();
            s.append(10, 10, b"top-2").unwrap();
            assert_eq!(
                drain(s.commit(10).unwrap()),
                [b"top-1".to_vec(), b"later-sub".to_vec(), b"top-2".to_vec()],
                "budget {budget}"
            );
            assert_eq!(s.in_memory, 0, "budget {budget}");
        }
    }
}
