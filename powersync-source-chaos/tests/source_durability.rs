//! The campaign's sources keep what they acknowledged across a SIGKILL.
//!
//! Every checker assumes the source never forgets an acknowledged commit: a source that does
//! rewinds its history under the stream, and the copy is then "wrong" whatever the connector
//! does. SecantusDB by default acknowledges before its journal record is written out (the
//! first SecantusDB campaign with seed 20261205 failed on exactly that: a row that left the
//! copy came back and another never arrived), so the campaign starts it with
//! `--sync-on-commit`; this test fails without that flag.

use std::sync::Arc;
use std::time::Duration;

use powersync_source_chaos::bank::{BankSettings, Op, Outcome};
use powersync_source_chaos::source::{SourceKind, SourceServer};

/// Opens accounts one transaction at a time while the server is SIGKILLed, restarts it, and
/// checks that every account whose commit was acknowledged is there.
async fn acknowledged_commits_survive_a_kill(kind: SourceKind) {
    let server = Arc::new(SourceServer::start(kind).await.expect("server"));
    let settings = BankSettings {
        accounts: 2,
        big_value: (10, 20),
    };
    let mut bank = server.bank().await.expect("bank");
    bank.create(&settings).await.expect("create");

    let killer = {
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            server.kill().await
        })
    };
    let mut acknowledged = Vec::new();
    for id in 1_000.. {
        match tokio::time::timeout(Duration::from_secs(5), bank.apply(&Op::Open { id })).await {
            Ok(Ok(Outcome::Committed)) => acknowledged.push(id),
            _ => break,
        }
    }
    killer.await.expect("killer task").expect("kill");
    assert!(
        acknowledged.len() > 20,
        "only {} commits before the kill",
        acknowledged.len()
    );
    server.restart().await.expect("restart");

    let mut bank = server.bank().await.expect("bank after restart");
    let present: std::collections::BTreeSet<i64> = bank
        .rows()
        .await
        .expect("rows")
        .iter()
        .map(|r| r.id)
        .collect();
    let lost: Vec<i64> = acknowledged
        .iter()
        .copied()
        .filter(|id| !present.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{}: {} of {} acknowledged commits gone after SIGKILL: {:?}",
        kind.name(),
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(20)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secantus_keeps_acknowledged_commits() {
    acknowledged_commits_survive_a_kill(SourceKind::Secantus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_acknowledged_commits() {
    acknowledged_commits_survive_a_kill(SourceKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_keeps_acknowledged_commits() {
    acknowledged_commits_survive_a_kill(SourceKind::MariaDb).await;
}
