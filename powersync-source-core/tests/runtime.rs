//! The shared stream runtime: panics reach the host, the retry budget is per outage, open
//! transactions are aborted on reconnect, snapshot bookkeeping round-trips.

use std::time::Duration;

use futures::StreamExt;
use powersync_source_core::position::PgLsn;
use powersync_source_core::runtime::{spawn_stream, Reconnect, SnapshotBook, Stop, TableStart};
use powersync_source_core::{
    Begin, ChangeEvent, Commit, ErrorKind, Position, RetryPolicy, SnapshotProgress, SourceError,
    StartFrom, StreamOptions, TableName,
};

fn begin() -> ChangeEvent {
    ChangeEvent::Begin(Begin {
        xid: None,
        commit_time: None,
    })
}

fn commit(n: u64) -> ChangeEvent {
    ChangeEvent::Commit(Commit {
        checkpoint: PgLsn(n).to_checkpoint(),
        commit_time: None,
    })
}

#[tokio::test]
async fn a_panic_in_the_stream_task_reaches_the_host_as_an_internal_error() {
    let mut stream = spawn_stream(
        "postgres",
        &StreamOptions::default(),
        |mut out, _acks| async move {
            out.push(begin()).await?;
            out.push(commit(1)).await?;
            out.flush().await?;
            panic!("boom");
        },
    );
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.events.len(), 2);
    let err = stream.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal);
    assert!(err.message().contains("boom"), "{err}");
    assert!(!err.is_retryable());
    assert!(stream.next().await.is_none());
    assert_eq!(stream.stats().snapshot().transactions, 1);
}

#[tokio::test]
async fn a_failed_task_sends_its_pending_events_then_the_error() {
    let mut stream = spawn_stream(
        "postgres",
        &StreamOptions::default(),
        |mut out, _acks| async move {
            out.push(begin()).await?;
            Err(Stop::Failed(
                SourceError::schema("table changed").with_code("42P01"),
            ))
        },
    );
    assert_eq!(stream.next().await.unwrap().unwrap().events.len(), 1);
    let err = stream.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Schema);
    assert_eq!(err.code(), Some("42P01"));
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn the_panic_failpoint_fires_after_the_given_rows() {
    let schema = std::sync::Arc::new(powersync_source_core::TableSchema {
        name: TableName::new("public", "t"),
        source_id: None,
        columns: vec![],
        identity: powersync_source_core::RowIdentity::Nothing,
    });
    let options = StreamOptions::default()
        .with_batch_events(1)
        .with_panic_after_rows(2);
    let mut stream = spawn_stream("postgres", &options, move |mut out, _acks| async move {
        for _ in 0..10 {
            out.push(ChangeEvent::Row(powersync_source_core::RowChange {
                op: powersync_source_core::Op::Insert,
                table: schema.clone(),
                old_image: powersync_source_core::OldImage::None,
                old: None,
                new: Some(powersync_source_core::Row::new(vec![])),
                snapshot: false,
            }))
            .await?;
        }
        Ok(())
    });
    let mut rows = 0;
    let err = loop {
        match stream.next().await {
            Some(Ok(batch)) => rows += batch.events.len(),
            Some(Err(e)) => break e,
            None => panic!("the stream ended without an error"),
        }
    };
    assert_eq!(rows, 2);
    assert_eq!(err.kind(), ErrorKind::Internal);
}

#[tokio::test]
async fn the_retry_budget_is_per_outage() {
    let policy = RetryPolicy {
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        jitter: 0.0,
        max_attempts: Some(2),
        give_up_after: Some(Duration::from_millis(50)),
        ..RetryPolicy::default()
    };
    let options = StreamOptions::default().with_retry(policy.clone());
    let mut stream = spawn_stream("postgres", &options, move |mut out, _acks| async move {
        let mut reconnect = Reconnect::new(policy);
        let blip = || SourceError::connection("connection reset");
        // A stream healthy for longer than `give_up_after`, then an outage of two failures:
        // the budget counts from the outage, not from the start of the stream.
        tokio::time::sleep(Duration::from_millis(80)).await;
        for _ in 0..3 {
            reconnect.after_failure(blip(), &mut out).await?;
            reconnect.after_failure(blip(), &mut out).await?;
            assert!(reconnect.in_outage());
            reconnect.healthy();
            assert!(!reconnect.in_outage());
        }
        // A third consecutive failure spends the budget of `max_attempts: 2`.
        reconnect.after_failure(blip(), &mut out).await?;
        reconnect.after_failure(blip(), &mut out).await?;
        match reconnect.after_failure(blip(), &mut out).await {
            Err(Stop::Failed(e)) => Err(Stop::Failed(e.context("budget spent"))),
            other => panic!("expected the outage to give up, got {other:?}"),
        }
    });
    let err = stream.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection);
    assert!(err.message().starts_with("budget spent"), "{err}");
    assert_eq!(stream.stats().snapshot().reconnects, 8);
}

#[tokio::test]
async fn a_reconnect_inside_a_transaction_tells_the_host_to_discard_it() {
    let options = StreamOptions::default();
    let mut stream = spawn_stream("postgres", &options, |mut out, _acks| async move {
        let mut reconnect = Reconnect::new(RetryPolicy {
            initial_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        });
        out.push(commit(1)).await?;
        out.push(begin()).await?;
        reconnect
            .after_failure(SourceError::connection("reset"), &mut out)
            .await?;
        // Outside a transaction nothing is added.
        reconnect
            .after_failure(SourceError::connection("reset"), &mut out)
            .await?;
        // Not retryable: final at once.
        reconnect
            .after_failure(SourceError::auth("password rejected"), &mut out)
            .await
    });
    let events: Vec<ChangeEvent> = stream.next().await.unwrap().unwrap().events;
    assert!(matches!(
        events.as_slice(),
        [
            ChangeEvent::Commit(_),
            ChangeEvent::Begin(_),
            ChangeEvent::Abort
        ]
    ));
    assert_eq!(
        stream.next().await.unwrap().unwrap_err().kind(),
        ErrorKind::Auth
    );
}

#[test]
fn the_snapshot_book_resumes_where_the_token_says() {
    let a = TableName::new("public", "a");
    let b = TableName::new("public", "b");
    let mut book = SnapshotBook::new(PgLsn(7).to_checkpoint());
    assert_eq!(book.start(&a), TableStart::Fresh);
    let ChangeEvent::Snapshot(SnapshotProgress::ChunkDone { rows_done, .. }) =
        book.chunk_done(&a, "[10]".into(), 10, Some(30))
    else {
        panic!("not a chunk event")
    };
    assert_eq!(rows_done, 10);
    let ChangeEvent::Snapshot(SnapshotProgress::TableDone { rows, .. }) = book.table_done(&a, 30)
    else {
        panic!("not a table event")
    };
    assert_eq!(rows, 30);
    book.chunk_done(&b, "[5]".into(), 5, None);
    // The token a host stores parses back into the same book.
    let token = book.token().to_token();
    let StartFrom::Snapshot(resume) = StartFrom::parse(&token).unwrap() else {
        panic!("not a snapshot token")
    };
    let again = SnapshotBook::resume(&resume);
    assert_eq!(again.start(&a), TableStart::Skip);
    assert_eq!(
        again.start(&b),
        TableStart::Resume {
            after_key: "[5]".into(),
            rows: 5
        }
    );
    assert!(!again.all_done([&a, &b].into_iter()));
    let ChangeEvent::Snapshot(SnapshotProgress::Done { checkpoint }) = again.done() else {
        panic!("not a done event")
    };
    assert_eq!(checkpoint, PgLsn(7).to_checkpoint());
}
