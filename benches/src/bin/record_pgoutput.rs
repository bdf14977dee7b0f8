//! Records real pgoutput messages for the `pgoutput` criterion benchmark.
//!
//! Starts a throwaway PostgreSQL (testkit), runs a workload of inserts, updates (some changing
//! the key) and deletes on a table shaped like the throughput table, and reads the slot's
//! content with `pg_logical_slot_peek_binary_changes` twice: text tuples (`proto_version 1`)
//! and binary tuples (`binary true` with the protocol version the connector uses on that
//! server). Writes `benches/data/pgoutput-<desc>-{text,binary}.bin` (format:
//! [`benches::recording`]).
//!
//! ```text
//! cargo run --release -p benches --bin record-pgoutput [-- --out-dir DIR]
//! ```

#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use benches::{insert_rows_sql, recording, rows_table_ddl};
use powersync_source_testkit::PostgresServer;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut out_dir = benches::data_dir();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out-dir" => out_dir = PathBuf::from(args.next().ok_or("--out-dir needs a value")?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let server = PostgresServer::builder().start().await?;
    let major = server.major_version();
    let (client, conn) = tokio_postgres::connect(&server.url(), tokio_postgres::NoTls).await?;
    tokio::spawn(conn);

    // Separate statements: a slot cannot be created in a transaction that wrote.
    client.batch_execute(&rows_table_ddl("bench_rows")).await?;
    client
        .batch_execute("CREATE PUBLICATION bench_pub FOR TABLE bench_rows")
        .await?;
    client
        .batch_execute("SELECT pg_create_logical_replication_slot('bench_rec', 'pgoutput')")
        .await?;
    // Inserts: one transaction of 1000 rows, then 5 of 100.
    client
        .batch_execute(&insert_rows_sql("bench_rows", 1, 1000))
        .await?;
    for t in 0..5 {
        let from = 1001 + t * 100;
        client
            .batch_execute(&insert_rows_sql("bench_rows", from, from + 99))
            .await?;
    }
    // Updates of non-key columns (no old image), then key changes (old key image `K`).
    client
        .batch_execute("UPDATE bench_rows SET n = n + 1, s = md5(s), f = f * 2 WHERE id <= 700")
        .await?;
    client
        .batch_execute("UPDATE bench_rows SET id = id + 100000 WHERE id > 700 AND id <= 750")
        .await?;
    // Deletes (old key image).
    client
        .batch_execute("DELETE FROM bench_rows WHERE id > 1200 AND id <= 1500")
        .await?;

    let proto_binary = match major {
        m if m >= 16 => 4,
        15 => 3,
        _ => 2,
    };
    let variants: [(&str, Vec<(&str, String)>); 2] = [
        ("text", vec![("proto_version", "1".into())]),
        (
            "binary",
            vec![
                ("proto_version", proto_binary.to_string()),
                ("binary", "true".into()),
            ],
        ),
    ];
    std::fs::create_dir_all(&out_dir)?;
    for (name, opts) in variants {
        let mut sql = String::from(
            "SELECT data FROM pg_logical_slot_peek_binary_changes('bench_rec', NULL, NULL, \
             'publication_names', 'bench_pub'",
        );
        for (k, v) in &opts {
            sql.push_str(&format!(", '{k}', '{v}'"));
        }
        sql.push(')');
        let rows = client.query(sql.as_str(), &[]).await?;
        let messages: Vec<Vec<u8>> = rows.iter().map(|r| r.get::<_, Vec<u8>>(0)).collect();
        let file = recording::encode(messages.iter().map(|m| m.as_slice()));
        let path = out_dir.join(format!("pgoutput-pg{major}-{name}.bin"));
        std::fs::write(&path, &file)?;
        let mut kinds = std::collections::BTreeMap::new();
        for m in &messages {
            *kinds
                .entry(m.first().map(|&b| b as char).unwrap_or('?'))
                .or_insert(0u32) += 1;
        }
        println!(
            "{}: {} messages, {} bytes, by type {:?}",
            path.display(),
            messages.len(),
            file.len(),
            kinds
        );
    }
    Ok(())
}
