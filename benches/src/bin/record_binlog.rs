//! Records real MariaDB binlog row events for the `mysql_rows` criterion benchmark.
//!
//! Starts a throwaway MariaDB (testkit) and writes, each into a binlog file of its own:
//!
//! - `narrow`: the throughput runner's 6-column table (BIGINT key, INT, VARCHAR(64), DOUBLE
//!   with some NULLs, DATETIME(6), DECIMAL(12,2)): 5 transactions of 1000 inserts, 1000
//!   updates (full before and after images), 500 deletes;
//! - `wide`: a 12-column table with JSON, DECIMAL(20,6), DATETIME(6), TIMESTAMP(6), utf8mb4
//!   VARCHAR and TEXT, INT, DOUBLE, DATE, ENUM and TINYINT(1): 2 transactions of 1000 inserts.
//!
//! Output in `benches/data` (or `--out-dir`): `mariadb-binlog-{narrow,wide}.bin` (the server's
//! binlog files as they are on disk: magic, format description, then the events) and
//! `mariadb-binlog-tables.tsv` (the tables' columns from `information_schema`, which the
//! decoder needs as the connector reads them).
//!
//! ```text
//! cargo run --release -p benches --features mysql --bin record-binlog [-- --out-dir DIR]
//! ```

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};

use powersync_source_testkit::MariaDbServer;

type Error = Box<dyn std::error::Error + Send + Sync>;

const NARROW_DDL: &str = "CREATE TABLE test.narrow_rows (id BIGINT PRIMARY KEY, n INT NOT NULL, \
    s VARCHAR(64) NOT NULL, f DOUBLE NULL, ts DATETIME(6) NOT NULL, amount DECIMAL(12,2) NOT NULL)";

const WIDE_DDL: &str = "CREATE TABLE test.wide_rows (id BIGINT PRIMARY KEY, doc JSON NOT NULL, \
    amount DECIMAL(20,6) NOT NULL, created DATETIME(6) NOT NULL, updated TIMESTAMP(6) NULL, \
    name VARCHAR(100) CHARACTER SET utf8mb4 NOT NULL, note TEXT CHARACTER SET utf8mb4, \
    qty INT NOT NULL, price DOUBLE, day DATE, status ENUM('new','paid','shipped') NOT NULL, \
    flag TINYINT(1) NOT NULL)";

fn narrow_insert(from: u64, to: u64) -> String {
    format!(
        "INSERT INTO test.narrow_rows SELECT seq, seq % 100000, MD5(seq), \
         IF(seq % 50 = 0, NULL, seq * 1.25), TIMESTAMP('2024-01-01') + INTERVAL seq SECOND, \
         seq / 100 FROM test.seq_{from}_to_{to}"
    )
}

fn wide_insert(from: u64, to: u64) -> String {
    format!(
        "INSERT INTO test.wide_rows SELECT seq, \
         JSON_OBJECT('id', seq, 'tags', JSON_ARRAY('a', seq % 7), 'ok', seq % 2 = 0, 'price', seq * 0.25), \
         seq * 1.000001, TIMESTAMP('2024-01-01') + INTERVAL seq SECOND + INTERVAL seq MICROSECOND, \
         FROM_UNIXTIME(1700000000 + seq), CONCAT('name ', seq, ' é'), REPEAT(MD5(seq), 3), \
         seq % 1000, seq / 3, DATE('2024-01-01') + INTERVAL (seq % 365) DAY, \
         ELT(1 + seq % 3, 'new', 'paid', 'shipped'), seq % 2 FROM test.seq_{from}_to_{to}"
    )
}

/// Runs `statements` into a binlog file of their own and copies it to `out`.
async fn record(server: &MariaDbServer, statements: &[String], out: &Path) -> Result<(), Error> {
    server.sql("FLUSH BINARY LOGS").await?;
    let status = server.sql("SHOW MASTER STATUS").await?;
    let file = status
        .split('\t')
        .next()
        .filter(|f| !f.is_empty())
        .ok_or("SHOW MASTER STATUS: no binlog file")?
        .trim()
        .to_owned();
    for s in statements {
        server.sql(s).await?;
    }
    server.sql("FLUSH BINARY LOGS").await?;
    let base = server.sql("SELECT @@log_bin_basename").await?;
    let dir = Path::new(base.trim())
        .parent()
        .ok_or("log_bin_basename has no directory")?;
    let bytes = std::fs::read(dir.join(&file))?;
    std::fs::write(out, &bytes)?;
    println!("{}: {} bytes", out.display(), bytes.len());
    Ok(())
}

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
    let server = MariaDbServer::start().await?;
    server
        .sql(&format!(
            "SET GLOBAL time_zone = '+00:00'; {NARROW_DDL}; {WIDE_DDL}"
        ))
        .await?;

    let mut narrow: Vec<String> = (0..5)
        .map(|t| narrow_insert(1 + t * 1000, (t + 1) * 1000))
        .collect();
    narrow.push(
        "UPDATE test.narrow_rows SET n = n + 1, s = MD5(s), f = f * 2 WHERE id <= 1000".into(),
    );
    narrow.push("DELETE FROM test.narrow_rows WHERE id > 4500".into());
    record(&server, &narrow, &out_dir.join("mariadb-binlog-narrow.bin")).await?;

    let wide: Vec<String> = (0..2)
        .map(|t| wide_insert(1 + t * 1000, (t + 1) * 1000))
        .collect();
    record(&server, &wide, &out_dir.join("mariadb-binlog-wide.bin")).await?;

    // The columns as the connector's catalog reads them (MariaDB JSON: LONGTEXT + json_valid).
    let columns = server
        .sql(
            "SELECT c.TABLE_NAME, c.COLUMN_NAME, c.DATA_TYPE, c.COLUMN_TYPE, \
             IFNULL(c.DATETIME_PRECISION, ''), IFNULL(c.CHARACTER_SET_NAME, ''), \
             EXISTS(SELECT 1 FROM information_schema.CHECK_CONSTRAINTS k \
                    WHERE k.CONSTRAINT_SCHEMA = c.TABLE_SCHEMA AND k.TABLE_NAME = c.TABLE_NAME \
                    AND k.CHECK_CLAUSE LIKE CONCAT('%json_valid(`', c.COLUMN_NAME, '`)%')) \
             FROM information_schema.COLUMNS c WHERE c.TABLE_SCHEMA = 'test' \
             AND c.TABLE_NAME IN ('narrow_rows', 'wide_rows') \
             ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION",
        )
        .await?;
    let out = out_dir.join("mariadb-binlog-tables.tsv");
    std::fs::write(&out, columns)?;
    println!("{}", out.display());
    Ok(())
}
