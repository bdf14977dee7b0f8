//! Property: whatever the transactions, window size, page size and restart points, the
//! stream (restarted from its last commit checkpoint again and again) delivers every
//! transaction exactly once, in commit order, each row in statement order with paired
//! update images.

use std::collections::BTreeMap;

use powersync_source_core::{ChangeEvent, ChangeSource, StartFrom};
use proptest::prelude::*;

use crate::fake::FakeServer;
use crate::support::*;
use crate::workload::fake_source;

fn run_case(seed: u64, batch: u32, page: u32, restart_every: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let server = FakeServer::new();
        let tables = [simple_table(&server, "a"), simple_table(&server, "b")];
        let source = fake_source(
            &server,
            tables.to_vec(),
            &format!("&polling_batch_size={batch}&page_rows={page}"),
        );
        let mut stream = source.start(StartFrom::Beginning).await.unwrap();
        read_until(&mut stream, snapshot_done).await.unwrap();

        // Deterministic pseudo-random transactions, mirrored to compute the expected events.
        let mut rng = seed | 1;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut state: [BTreeMap<i64, String>; 2] = [BTreeMap::new(), BTreeMap::new()];
        let mut expected = Vec::new();
        let mut next_id = 0i64;
        server.set_capture_paused(true);
        let txns = 12;
        for _ in 0..txns {
            let mut ops = Vec::new();
            expected.push("begin".to_string());
            for _ in 0..=next(4) {
                let ti = next(2) as usize;
                let t = &tables[ti];
                let existing: Vec<i64> = state[ti].keys().copied().collect();
                match (next(3), existing.is_empty()) {
                    (1, false) => {
                        let id = existing[next(existing.len() as u64) as usize];
                        let v = format!("u{}", next(1000));
                        let old = state[ti].insert(id, v.clone()).unwrap();
                        if old == v {
                            // v is nvarchar(max): CDC leaves an unchanged value NULL in both
                            // images, which the connector reports as Unchanged.
                            expected.push(format!(
                                "update {} ({id},unchanged) -> ({id},unchanged)",
                                t.name
                            ));
                        } else {
                            expected.push(format!("update {} ({id},{old}) -> ({id},{v})", t.name));
                        }
                        ops.push(upd(t, id, &v));
                    }
                    (2, false) => {
                        let id = existing[next(existing.len() as u64) as usize];
                        let old = state[ti].remove(&id).unwrap();
                        expected.push(format!("delete {} ({id},{old}) -> ()", t.name));
                        ops.push(del(t, id));
                    }
                    _ => {
                        next_id += 1;
                        let v = format!("i{next_id}");
                        state[ti].insert(next_id, v.clone());
                        expected.push(format!("insert {} () -> ({next_id},{v})", t.name));
                        ops.push(ins(t, next_id, &v));
                    }
                }
            }
            expected.push("commit".to_string());
            server.transaction(&ops);
        }
        server.set_capture_paused(false);

        let mut got = Vec::new();
        let mut done = 0;
        while done < txns {
            let want = restart_every.min(txns - done);
            let events = read_until(&mut stream, |e| commits(e) >= want)
                .await
                .unwrap();
            // Keep everything up to the last commit read; restart from it.
            let last = events
                .iter()
                .rposition(|e| matches!(e, ChangeEvent::Commit(_)))
                .unwrap();
            let checkpoint = match &events[last] {
                ChangeEvent::Commit(c) => c.checkpoint.clone(),
                _ => unreachable!(),
            };
            got.extend(
                summarize(&events[..=last])
                    .into_iter()
                    .filter(|s| !s.starts_with("schema")),
            );
            done += commits(&events[..=last]);
            drop(stream);
            stream = source
                .start(StartFrom::Checkpoint(checkpoint))
                .await
                .unwrap();
        }
        assert_eq!(
            got, expected,
            "seed {seed} batch {batch} page {page} restart {restart_every}"
        );
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn exactly_once_in_commit_order(seed in any::<u64>(), batch in 1u32..5, page in 1u32..5, restart_every in 1usize..6) {
        run_case(seed, batch, page, restart_every);
    }
}
