//! Change streams through NATS JetStream, for hosts that run connectors on several machines:
//! `publish` writes a source's changes into a stream, `consume` (or any JetStream consumer)
//! reads them elsewhere.
//!
//! # Delivery contract: killing `publish` at any point loses nothing and duplicates nothing
//!
//! **Units and markers.** The change stream is cut into units: a source transaction, a
//! snapshot chunk (rows up to a snapshot resume token), or a position advance without data.
//! Each unit's data messages (rows and truncates on `P.<schema>.<table>`, in `tail`'s JSON
//! shape, several rows of one table to a message: [`pack`]; schema messages on the same
//! subjects) are followed by a commit marker on `P._commit` ([`marker`]) carrying the
//! position to resume from after it — a checkpoint, or a snapshot resume token while the
//! snapshot runs — and the position of the marker before it. One marker message may close
//! several consecutive units (a batch).
//!
//! **Acknowledgement order.** Publishes are pipelined across units (a bounded number await
//! their ack at once, see [`publisher`]), but a marker is published only after JetStream acked
//! every data message published before its unit ended and the previous marker message
//! ([`pipeline`]), so a stored marker always closes complete units after an unbroken chain (a
//! publish lost on a dropped connection, or rejected by a full stream, can never hide behind
//! a later marker). Messages of later units may be stored before an earlier marker; they
//! belong to units that marker does not close. The source is acknowledged with a marker's
//! checkpoint after the marker's ack. So the source never forgets a change whose messages are
//! not stored.
//!
//! **Resume from the stream, no local state.** On start `publish` reads the last message on
//! `P._commit` (get last message by subject) and starts the source from its position. Every
//! unit before that marker is complete in the stream; units after it are re-read from the
//! source.
//!
//! **Ids from positions.** Every data item (row, truncate) has an index in its unit and the
//! id `<base>#<index>` ([`ids`]): `base` is the position of the previous marker. A message
//! of one row (line format version 1) has that id as its `Nats-Msg-Id`; a packed message
//! `<base>#<first>+<count>`. Re-reading a transaction from the same position yields the same
//! rows at the same indexes, and packing depends only on the rows and the limits, so the
//! messages an interrupted attempt already stored are dropped by JetStream's duplicate window
//! when they are republished. A transaction the source aborts and resends mid-stream gets the
//! same ids too. Markers have ids `<base of the first unit>><position of the last>`.
//!
//! **What consumers see.** A consumer applies a unit only at its marker ([`assembler`]), so
//! the partial unit a killed publisher left behind is either completed by the restarted
//! publisher (same base, missing messages added) and applied once, or ignored. It keeps
//! messages by base (later units interleave with earlier markers), splits packs into rows and
//! de-duplicates by row id, so a publisher restarted with other packing limits (whose packs
//! JetStream cannot recognise) still has each row applied once. A consumer that stops
//! remembers the oldest message still waiting for a marker and reads again from there.
//!
//! **After the duplicate window.** If the publisher restarts after the window expired (it was
//! down longer than `--duplicate-window`), the republished messages are stored again. The
//! consumer de-duplicates by the same ids: within a unit, a row id seen twice is applied
//! once, and messages of a base no marker closes (leftovers of an attempt that never reached
//! a marker) are dropped. Whole transactions are never republished: the publisher always resumes after
//! the last stored marker. So the consumer's view stays exactly-once; only the raw stream
//! holds the extra copies.
//!
//! **Schema messages** are state, not changes: a restarted source announces its tables again,
//! so the first transaction after a restart may carry a schema message that repeats the one
//! in force (applying it changes nothing). It is placed by the index of the data message it
//! precedes (the consumer sorts by index), so a re-announced schema never goes back to an
//! older table shape.
//!
//! **Snapshot.** Snapshot rows form units closed by `snapshot_chunk` markers holding the
//! resume token (at each chunk end the connector reports, and at each table end), and a
//! `snapshot_done` marker with the streaming checkpoint. A publisher killed mid-snapshot
//! resumes the snapshot from the last chunk marker's token. A re-read chunk may differ from
//! the first read (rows changed meanwhile), so snapshot row ids add a hash of the row
//! (`<base>#<index>#<hash of the line>`; a pack of snapshot rows hashes its whole payload in
//! its message id): identical rows are dropped as duplicates, changed ones are both
//! kept in stream order, the newer last, and every change after the snapshot's consistent
//! point (the token's `stream_from`, the same for both reads) is streamed afterwards anyway —
//! the same replay rule as `mirror`'s resumed snapshot. A publisher killed before the first
//! chunk marker starts a *new* snapshot from the beginning, with a new consistent point; so
//! the units before the first marker have the base `start:<random nonce>`
//! ([`ids::start_base`]), unique per attempt, and consumers drop a killed attempt's rows
//! instead of applying rows that may have been deleted before the new consistent point.
//!
//! **Backpressure and outages.** When the ack window is full the publisher stops reading the
//! source. The stream is created with discard-new, so a full stream rejects publishes rather
//! than dropping old messages; a rejected publish, a timeout or an unreachable server ends the
//! session and a new one starts after an exponential backoff, from the last stored marker.
//!
//! **Limits.** One publisher per stream (a second one breaks the marker chain, which
//! consumers detect and report). Stream limits (`max_age`, `max_msgs`) that remove messages
//! not yet consumed lose data for consumers that fall behind; consumers detect the gap.
//!
//! Modules: [`ids`] (subjects, ids, headers), [`marker`], [`pack`] (the packed line format),
//! [`framing`] (events → messages), [`connection`], [`pipeline`] (when markers may go),
//! [`publisher`], [`decode`] (lines → events), [`assembler`], [`consumer`].

pub mod assembler;
pub mod connection;
pub mod consumer;
pub mod decode;
pub mod framing;
pub mod ids;
pub mod marker;
pub mod pack;
pub mod pipeline;
pub mod publisher;
