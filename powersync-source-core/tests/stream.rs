//! Acknowledgements, stats and start positions.

use futures::StreamExt;
use powersync_source_core::position::PgLsn;
use powersync_source_core::{
    AckHandle, ChangeBatch, ChangeStream, Checkpoint, Position, SnapshotResume, StartFrom,
    StreamStats, TableProgress, UnixMicros,
};

#[tokio::test]
async fn acks_move_forward_only_and_reject_other_sources() {
    let (handle, mut rx) = AckHandle::channel("postgres");
    let stream = ChangeStream::new(
        futures::stream::iter(vec![Ok(ChangeBatch::default())]),
        handle,
        StreamStats::default(),
    );
    let c5 = PgLsn(5).to_checkpoint();
    let c3 = PgLsn(3).to_checkpoint();
    stream.ack(&c5).unwrap();
    assert!(rx.changed().await);
    stream.ack(&c3).unwrap();
    assert_eq!(rx.latest(), Some(c5));
    let other = Checkpoint::parse("convex:v1:0000000000000000005").unwrap();
    assert!(stream.ack(&other).is_err());
    let mut stream = stream;
    assert!(stream.next().await.is_some());
    assert!(stream.next().await.is_none());
}

#[test]
fn stats_track_lag_and_counts() {
    let stats = StreamStats::default();
    stats.add_bytes(10);
    stats.add_rows(3);
    stats.record_commit(Some(UnixMicros(UnixMicros::now().0 - 2_000_000)));
    let s = stats.snapshot();
    assert_eq!((s.bytes_received, s.rows, s.transactions), (10, 3, 1));
    assert!(
        s.lag_seconds >= 1.9 && s.lag_seconds < 10.0,
        "{}",
        s.lag_seconds
    );
    stats.record_idle();
    assert_eq!(stats.snapshot().lag_seconds, 0.0);
}

#[test]
fn start_from_parses_checkpoints_and_snapshot_tokens() {
    let c = PgLsn(77).to_checkpoint();
    assert_eq!(
        StartFrom::parse(c.as_str()).unwrap(),
        StartFrom::Checkpoint(c.clone())
    );
    let mut tables = std::collections::BTreeMap::new();
    tables.insert("public.a".to_string(), TableProgress::Done { rows: 10 });
    tables.insert(
        "public.b".to_string(),
        TableProgress::Partial {
            after_key: "[5]".into(),
            rows: 5,
        },
    );
    let resume = SnapshotResume {
        stream_from: c,
        tables,
        source_state: None,
    };
    let token = resume.to_token();
    assert!(token.starts_with("snapshot:v1:{"));
    assert_eq!(
        StartFrom::parse(&token).unwrap(),
        StartFrom::Snapshot(resume)
    );
    assert!(StartFrom::parse("snapshot:v1:{nope").is_err());
}
