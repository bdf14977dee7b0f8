//! The publisher's ack bookkeeping: how many publishes await their ack, and when a commit
//! marker may go out.
//!
//! Data messages are published as fast as the window allows ([`Window`]), across unit
//! boundaries. A unit's marker is queued when the unit ends and sent once
//!
//! 1. every data message published before the unit ended (its own and all earlier units') was
//!    acknowledged by JetStream, and
//! 2. the previous marker message was acknowledged,
//!
//! so a stored marker never follows a gap: every unit it closes, and every unit before, is
//! complete in the stream. (1) is why a publish that fails — a full stream rejecting one
//! message and taking a smaller next one, or a publish lost on a dropped connection — can never
//! hide behind a later marker. (2) keeps the marker chain whole for the same reason: a marker
//! rejected while its successor is stored would break it. Data of *later* units may be
//! published before an earlier unit's marker and land before it in the stream; they are not
//! covered by that marker, so losing one of them is harmless (a restart resumes after the
//! marker and republishes the unit, with the same ids).
//!
//! Because of (2) one marker message is in flight at a time, so the markers of the units that
//! became ready meanwhile go out together as one batch ([`super::marker::payload`]): a marker
//! round trip closes any number of units instead of one.
//!
//! Acks arrive in publish order (the publisher polls them in order), which is what makes a
//! counter of acknowledged data messages enough to decide (1).

use std::collections::VecDeque;

use super::marker::Marker;

/// Limits of the publish window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Publishes awaiting their ack at most.
    pub messages: usize,
    /// Payload bytes awaiting their ack at most (one message is always allowed).
    pub bytes: usize,
    /// Markers waiting to be sent at most (units with no data, e.g. empty transactions,
    /// would otherwise queue without bound while a marker is in flight).
    pub queued_markers: usize,
}

/// Most unit markers in one batch message.
pub const MAX_BATCH_UNITS: usize = 1000;
/// Most estimated bytes of one batch message (far below NATS's default 1 MiB `max_payload`).
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// A queued marker and the number of data messages published before its unit ended.
#[derive(Debug)]
struct Queued {
    marker: Marker,
    after_data: u64,
}

/// The ack state of one publisher session (see the module docs).
#[derive(Debug, Default)]
pub struct Pipeline {
    /// Data messages published.
    sent: u64,
    /// Data messages acknowledged (in publish order).
    acked: u64,
    /// Publishes (data and markers) awaiting their ack, and their payload bytes.
    in_flight: usize,
    in_flight_bytes: usize,
    queued: VecDeque<Queued>,
    marker_in_flight: bool,
}

impl Pipeline {
    /// A new session: nothing published.
    pub fn new() -> Pipeline {
        Pipeline::default()
    }

    /// Whether a data message may be published now.
    pub fn has_room(&self, window: &Window) -> bool {
        self.in_flight == 0
            || (self.in_flight < window.messages && self.in_flight_bytes < window.bytes)
    }

    /// Whether another unit may end now (its marker is queued).
    pub fn can_queue_marker(&self, window: &Window) -> bool {
        self.queued.len() < window.queued_markers.max(1)
    }

    /// Records a data message published with `bytes` of payload.
    pub fn data_sent(&mut self, bytes: usize) {
        self.sent += 1;
        self.in_flight += 1;
        self.in_flight_bytes += bytes;
    }

    /// Records the ack of the oldest data message in flight.
    pub fn data_acked(&mut self, bytes: usize) {
        self.acked += 1;
        self.in_flight = self.in_flight.saturating_sub(1);
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(bytes);
    }

    /// Queues the marker of a unit that just ended (after all its data messages were
    /// published).
    pub fn queue_marker(&mut self, marker: Marker) {
        self.queued.push_back(Queued {
            marker,
            after_data: self.sent,
        });
    }

    /// The markers that may be sent now, as one message (`None` if none may): the queued
    /// markers whose data is all acknowledged, when no marker message is in flight. Call
    /// [`Pipeline::markers_sent`] once they are published.
    pub fn ready_markers(&mut self) -> Option<Vec<Marker>> {
        if self.marker_in_flight {
            return None;
        }
        let mut ready = Vec::new();
        let mut bytes = 0;
        while let Some(front) = self.queued.front() {
            if front.after_data > self.acked || ready.len() >= MAX_BATCH_UNITS {
                break;
            }
            let size = estimated_size(&front.marker);
            if !ready.is_empty() && bytes + size > MAX_BATCH_BYTES {
                break;
            }
            bytes += size;
            if let Some(q) = self.queued.pop_front() {
                ready.push(q.marker);
            }
        }
        (!ready.is_empty()).then_some(ready)
    }

    /// Records a marker message published with `bytes` of payload.
    pub fn markers_sent(&mut self, bytes: usize) {
        self.marker_in_flight = true;
        self.in_flight += 1;
        self.in_flight_bytes += bytes;
    }

    /// Records the ack of the marker message in flight.
    pub fn markers_acked(&mut self, bytes: usize) {
        self.marker_in_flight = false;
        self.in_flight = self.in_flight.saturating_sub(1);
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(bytes);
    }

    /// Publishes awaiting their ack.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether everything published was acknowledged and no marker waits.
    pub fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.queued.is_empty()
    }
}

/// A marker's JSON size, roughly (its strings plus the keys).
fn estimated_size(m: &Marker) -> usize {
    160 + m.position.len()
        + m.base.len()
        + m.checkpoint.as_ref().map_or(0, String::len)
        + m.commit_time.as_ref().map_or(0, String::len)
}

#[cfg(test)]
mod tests {
    use super::super::marker::MarkerKind;
    use super::*;

    fn marker(n: u32) -> Marker {
        Marker {
            kind: MarkerKind::Commit,
            checkpoint: None,
            commit_time: None,
            position: format!("p{n}"),
            base: format!("p{}", n - 1),
            messages: 1,
        }
    }

    fn positions(ms: &[Marker]) -> Vec<&str> {
        ms.iter().map(|m| m.position.as_str()).collect()
    }

    #[test]
    fn a_marker_waits_for_every_earlier_data_ack_and_for_the_previous_marker() {
        let mut p = Pipeline::new();
        // Unit 1: two messages, then unit 2: one message; both end before any ack.
        p.data_sent(10);
        p.data_sent(10);
        p.queue_marker(marker(1));
        p.data_sent(10);
        p.queue_marker(marker(2));
        // Data of unit 3 goes out while the markers wait.
        p.data_sent(10);
        assert!(p.ready_markers().is_none(), "nothing acked yet");
        p.data_acked(10);
        assert!(p.ready_markers().is_none(), "unit 1 half acked");
        p.data_acked(10);
        let first = p.ready_markers().unwrap();
        assert_eq!(positions(&first), vec!["p1"]);
        p.markers_sent(100);
        p.data_acked(10);
        assert!(
            p.ready_markers().is_none(),
            "unit 2 is complete but marker 1 is in flight"
        );
        p.queue_marker(marker(3));
        p.markers_acked(100);
        // Unit 3's message (the 4th) is acked too: markers 2 and 3 go as one batch.
        p.data_acked(10);
        let batch = p.ready_markers().unwrap();
        assert_eq!(positions(&batch), vec!["p2", "p3"]);
        p.markers_sent(200);
        assert!(!p.is_idle());
        p.markers_acked(200);
        assert!(p.is_idle());
    }

    #[test]
    fn the_window_counts_messages_and_bytes() {
        let w = Window {
            messages: 3,
            bytes: 100,
            queued_markers: 2,
        };
        let mut p = Pipeline::new();
        p.data_sent(1000);
        assert!(!p.has_room(&w), "over the byte limit");
        p.data_acked(1000);
        assert!(p.has_room(&w), "one message is always allowed");
        for _ in 0..3 {
            p.data_sent(1);
        }
        assert!(!p.has_room(&w));
        assert_eq!(p.in_flight(), 3);
        p.queue_marker(marker(1));
        assert!(p.can_queue_marker(&w));
        p.queue_marker(marker(2));
        assert!(!p.can_queue_marker(&w));
    }

    #[test]
    fn batches_are_bounded() {
        let mut p = Pipeline::new();
        for n in 1..=(MAX_BATCH_UNITS as u32 + 5) {
            p.queue_marker(marker(n));
        }
        assert_eq!(p.ready_markers().unwrap().len(), MAX_BATCH_UNITS);
        p.markers_sent(1);
        p.markers_acked(1);
        assert_eq!(p.ready_markers().unwrap().len(), 5);
    }
}
